//! CLIP: contrastive image–text training on image streams with captions (a caption column, or
//! captions built from class names), zero-shot accuracy per experience and on held-out sets.

use super::Architecture;
use crate::image_sources::{self, Geometry, image_stream, probe_settings};
use crate::model_source::RunCheckpoint;
use crate::plan::Plan;
use crate::run::{RunEnd, RunJob, Stream};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use cpt_core::{AdapterModel, RunConfig, TrainBackend};
use cpt_data::{CaptionTokenizer, Tokenizer};
use cpt_eval::ZeroShotEvaluator;
use cpt_models::{ClipConfig, ClipModel, clip, hf_clip, resize};
use std::path::Path;
use std::sync::Arc;

/// The CLIP architecture (`model.architecture = "clip"`).
pub struct Clip;

impl Architecture for Clip {
    const NAME: &'static str = "clip";
    const READS_TEXT: bool = true;

    fn lora_targets() -> Vec<&'static str> {
        clip::CLIP_LORA_TARGETS.to_vec()
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
        let tokenizer = saved.run.tokenizer_path();
        hf_clip::save_clip(&model, &config, Some(&tokenizer), out)?;
        Ok(())
    }

    fn plan<B: Backend>(run: &RunConfig, device: &B::Device) -> Result<Plan> {
        Ok(crate::plan::counted(&model_config(run)?.init::<B>(device)))
    }
}

/// The CLIP config of a run: `[model.config]`, or the config.json of `model.from`.
fn model_config(run: &RunConfig) -> Result<ClipConfig> {
    let c: ClipConfig = match &run.model.from {
        Some(dir) => hf_clip::read_config(dir)?,
        None => image_sources::model_config(run)?,
    };
    c.validate().map_err(|(field, message)| {
        anyhow::anyhow!("config key `model.config.{field}`: {message}")
    })?;
    let mut c = c;
    if run.model.resize_vocab.is_some() {
        let tokenizer = Tokenizer::from_file(run.tokenizer_path())?;
        let text = &mut c.text_config;
        text.vocab_size = crate::vocab_resize::resized_vocab(run, &tokenizer, text.vocab_size);
    }
    if let Some(r) = &run.model.resize_text_positions {
        c.text_config.max_position_embeddings = r.max_position_embeddings;
    }
    Ok(c)
}

/// `model` (of `config`, as `model.from` holds it) after the run's `[model.resize_vocab]` and
/// `[model.resize_text_positions]`; without them, checked to cover the tokenizer.
fn resized<B: Backend>(
    run: &RunConfig,
    tokenizer: &Tokenizer,
    config: ClipConfig,
    model: ClipModel<B>,
) -> Result<(ClipConfig, ClipModel<B>)> {
    let text = &config.text_config;
    let growth = crate::vocab_resize::plan_growth(
        run,
        tokenizer,
        text.vocab_size,
        "model.config.text_config.vocab_size",
        0.02 * config.initializer_factor,
    )?;
    let (config, model) = match growth {
        Some(g) => resize::resize_clip_vocab(model, &config, g.new_vocab, &g.init)?,
        None => (config, model),
    };
    Ok(match &run.model.resize_text_positions {
        Some(r) => resize::resize_clip_text_positions(
            model,
            &config,
            r.max_position_embeddings,
            r.init,
            r.keep_positions,
        )
        .context("config key `model.resize_text_positions`")?,
        None => (config, model),
    })
}

/// Model, image streams and evaluator of a run, on `device`.
fn stream<B: TrainBackend>(
    config: &RunConfig,
    device: &B::Device,
) -> Result<Stream<B, ClipModel<B>>> {
    let (model_config, model) = super::starting_model(
        config,
        |dir| Ok(hf_clip::load_clip::<B>(dir, device)?),
        model_config,
        |c, seed| c.init_seeded(seed, device),
    )?;
    let tokenizer = Arc::new(Tokenizer::from_file(config.tokenizer_path())?);
    let (model_config, model) = resized(config, &tokenizer, model_config, model)?;
    let text = &model_config.text_config;
    let text_len = config.data.image.text_len;
    if text_len > text.max_position_embeddings {
        bail!(
            "config key `data.image.text_len`: {text_len} exceeds the text model's max_position_embeddings ({})",
            text.max_position_embeddings
        );
    }
    let captions = CaptionTokenizer::new(tokenizer, text_len)?;
    if captions.eos != text.eos_token_id {
        tracing::warn!(
            "the tokenizer's end-of-text id {} differs from text_config.eos_token_id {}: pooling uses the config's",
            captions.eos,
            text.eos_token_id
        );
    }
    let vision = &model_config.vision_config;
    let geometry = Geometry {
        size: vision.image_size,
        channels: vision.num_channels,
    };
    image_stream(
        config,
        model,
        geometry,
        Some(&captions),
        Clip::lora_targets(),
        |sets| {
            Ok(Box::new(ZeroShotEvaluator::<
                B::InnerBackend,
                ClipModel<B::InnerBackend>,
            >::new(sets, probe_settings(config))?))
        },
    )
}
