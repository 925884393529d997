//! ViT for image classification: class-incremental or domain-incremental image streams, head
//! accuracy per experience (and the frozen-feature probes when `eval.support_images` > 0).

use super::Architecture;
use crate::image_sources::{self, Geometry, image_stream, probe_settings};
use crate::model_source::RunCheckpoint;
use crate::plan::Plan;
use crate::run::{RunEnd, RunJob, Stream};
use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use cpt_core::{AdapterModel, RunConfig, TrainBackend};
use cpt_eval::ClassificationEvaluator;
use cpt_models::{ViTConfig, ViTForImageClassification, hf_vit, vit};
use std::path::Path;

/// The ViT classifier architecture (`model.architecture = "vit"`).
pub struct ViT;

impl Architecture for ViT {
    const NAME: &'static str = "vit";
    const READS_TEXT: bool = false;

    /// The encoder's projections and the classification head (the head must learn new classes).
    fn lora_targets() -> Vec<&'static str> {
        [vit::VIT_LORA_TARGETS, &[vit::CLASSIFIER_TARGET]].concat()
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
        hf_vit::save_vit(&model, &config, out)?;
        Ok(())
    }

    fn plan<B: Backend>(run: &RunConfig, device: &B::Device) -> Result<Plan> {
        Ok(crate::plan::counted(&model_config(run)?.init::<B>(device)))
    }
}

/// The ViT config a run trains: its starting model's, grown as `[model.grow]` says.
fn model_config(run: &RunConfig) -> Result<ViTConfig> {
    let original = original_config(run)?;
    match super::grow_spec(run)? {
        Some(spec) => Ok(spec.vit_config(&original)?),
        None => Ok(original),
    }
}

/// The starting model's config: `[model.config]`, or the config.json of `model.from`.
fn original_config(run: &RunConfig) -> Result<ViTConfig> {
    let c: ViTConfig = match &run.model.from {
        Some(dir) => match hf_vit::read_config(dir)? {
            hf_vit::VisionConfig::ViT(c) => c,
            hf_vit::VisionConfig::ViTMAE(_) => {
                bail!("{}: a ViT-MAE folder, not a ViT classifier", dir.display())
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
) -> Result<Stream<B, ViTForImageClassification<B>>> {
    let (model_config, model) = super::starting_model(
        config,
        |dir| Ok(hf_vit::load_vit::<B>(dir, device)?),
        original_config,
        |c, seed| c.init_seeded(seed, device),
    )?;
    let layers = model_config.num_hidden_layers;
    let (model_config, model) = super::grown(config, model_config, model, |spec, c, m| {
        spec.grow_vit(c, m, config.seed, device)
    })?;
    for (i, e) in config.experiences.iter().enumerate() {
        if let Some(bad) = e
            .classes
            .iter()
            .find(|&&c| c < 0 || c >= model_config.num_labels as i64)
        {
            bail!(
                "config key `experiences[{i}].classes`: class {bad} is outside the classifier's {} labels (model num_labels)",
                model_config.num_labels
            );
        }
    }
    let geometry = Geometry {
        size: model_config.image_size,
        channels: model_config.num_channels,
    };
    let mut stream = image_stream(config, model, geometry, None, ViT::lora_targets(), |sets| {
        Ok(Box::new(ClassificationEvaluator::<
            B::InnerBackend,
            ViTForImageClassification<B::InnerBackend>,
        >::new(sets, probe_settings(config))))
    })?;
    if let Some(spec) = super::grow_spec(config)? {
        stream.trainable = spec.vit_trainable(layers)?;
    }
    Ok(stream)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Module;

    /// `cpt plan`'s parameter count is the trained model's, on the bundled examples.
    #[test]
    fn plan_counts_the_parameters_of_the_built_model() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vit_class_incremental.toml");
        let run = crate::model_source::load_run_config(&path, &[]).unwrap();
        let device = Default::default();
        let plan = ViT::plan::<Flex>(&run, &device).unwrap();
        let model = model_config(&run)
            .unwrap()
            .init_seeded::<Flex>(run.seed, &device);
        assert_eq!(plan.parameters() as usize, model.num_params());
    }
}
