//! ViT-MAE: masked-autoencoder pre-training on image streams, held-out reconstruction loss per
//! experience (and the frozen-feature probes when `eval.support_images` > 0).

use super::Architecture;
use crate::image_sources::{self, Geometry, image_stream, probe_settings};
use crate::model_source::RunCheckpoint;
use crate::plan::Plan;
use crate::run::{RunEnd, RunJob, Stream};
use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use cpt_core::rng::domain;
use cpt_core::{AdapterModel, RunConfig, SplitMix64, TrainBackend};
use cpt_eval::ReconstructionEvaluator;
use cpt_models::{ViTMAEConfig, ViTMAEForPreTraining, hf_vit, vit};
use std::path::Path;

/// The ViT-MAE architecture (`model.architecture = "vit_mae"`).
pub struct ViTMAE;

impl Architecture for ViTMAE {
    const NAME: &'static str = "vit_mae";
    const READS_TEXT: bool = false;

    fn lora_targets() -> Vec<&'static str> {
        vit::VIT_LORA_TARGETS.to_vec()
    }

    fn validate(run: &RunConfig) -> Result<()> {
        image_sources::validate(run)
    }

    fn train<B: TrainBackend>(job: RunJob) -> Result<RunEnd> {
        let config = job.config.clone();
        job.execute(|device| stream::<B>(&config, device))
    }

    fn export<B: Backend>(saved: &RunCheckpoint, out: &Path, device: &B::Device) -> Result<()> {
        let config = model_config(&saved.run)?;
        let model = saved
            .load_into(config.init::<B>(device), &Self::lora_targets())?
            .merge_adapters();
        hf_vit::save_vit_mae(&model, &config, out)?;
        Ok(())
    }

    fn plan<B: Backend>(run: &RunConfig, device: &B::Device) -> Result<Plan> {
        Ok(crate::plan::counted(&model_config(run)?.init::<B>(device)))
    }
}

/// The ViT-MAE config of a run: `[model.config]`, or the config.json of `model.from`.
fn model_config(run: &RunConfig) -> Result<ViTMAEConfig> {
    let c: ViTMAEConfig = match &run.model.from {
        Some(dir) => match hf_vit::read_config(dir)? {
            hf_vit::VisionConfig::ViTMAE(c) => c,
            hf_vit::VisionConfig::ViT(_) => {
                bail!("{}: a ViT classifier folder, not ViT-MAE", dir.display())
            }
        },
        None => image_sources::model_config(run)?,
    };
    c.validate()
        .map_err(|m| anyhow::anyhow!("config key `model.config`: {m}"))?;
    Ok(c)
}

/// Model, image streams and evaluator of a run, on `device`.
fn stream<B: TrainBackend>(
    config: &RunConfig,
    device: &B::Device,
) -> Result<Stream<B, ViTMAEForPreTraining<B>>> {
    let (model_config, model) = super::starting_model(
        config,
        |dir| Ok(hf_vit::load_vit_mae::<B>(dir, device)?),
        model_config,
        |c, seed| c.init_seeded(seed, device),
    )?;
    let geometry = Geometry {
        size: model_config.image_size,
        channels: model_config.num_channels,
    };
    // The evaluation's patch masks are fixed by the run seed, so every evaluation of a run
    // scores the same reconstruction problem.
    let seed = SplitMix64::derive(config.seed, &[domain::MAE_EVAL_MASKS]).next_u64();
    image_stream(
        config,
        model,
        geometry,
        None,
        ViTMAE::lora_targets(),
        |sets| {
            Ok(Box::new(ReconstructionEvaluator::<
                B::InnerBackend,
                ViTMAEForPreTraining<B::InnerBackend>,
            >::new(
                sets, probe_settings(config), seed
            )))
        },
    )
}
