//! LLaMA: causal language modelling on packed Parquet text, perplexity per experience. Also the
//! model the language commands (`cpt eval`, `score`, `generate`, `export peft`) load.

use super::Architecture;
use crate::model_source::{RunCheckpoint, model_table};
use crate::run::{RunEnd, RunJob, Stream};
use crate::sources::{eval_batches, reference_source, training_source};
use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::Backend;
use cpt_continual::Experience;
use cpt_continual::strategies::DistillSettings;
use cpt_core::{AdapterModel, RunConfig, TrainBackend};
use cpt_data::Tokenizer;
use cpt_eval::{EvalSet, PerplexityEvaluator};
use cpt_models::{LlamaConfig, LlamaForCausalLM, hf_llama};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The LLaMA architecture (`model.architecture = "llama"`).
pub struct Llama;

/// Projections of LLaMA that `lora.target_modules` may name.
pub const LORA_TARGETS: &[&str] = &["q", "k", "v", "o", "gate", "up", "down"];

impl Architecture for Llama {
    const NAME: &'static str = "llama";
    const READS_TEXT: bool = true;

    fn lora_targets() -> Vec<&'static str> {
        LORA_TARGETS.to_vec()
    }

    fn validate(run: &RunConfig) -> Result<()> {
        if run.data.seq_len < 2 {
            bail!("config key `data.seq_len`: must be at least 2");
        }
        for (i, e) in run.experiences.iter().enumerate() {
            if !(e.classes.is_empty() && e.class_names.is_empty()) {
                bail!(
                    "config key `experiences[{i}].classes`: class filters apply to image streams only"
                );
            }
        }
        if !run.eval.held_out.is_empty() {
            bail!("config key `eval.held_out`: held-out sets are for image streams");
        }
        Ok(())
    }

    fn train<B: TrainBackend>(job: RunJob) -> Result<RunEnd> {
        let config = job.config.clone();
        job.execute(|device| stream::<B>(&config, device))
    }

    fn export<B: Backend>(saved: &RunCheckpoint, out: &Path, device: &B::Device) -> Result<()> {
        let loaded = from_checkpoint::<B>(saved, device)?;
        save_hf(&loaded, out)
    }
}

/// The model config a run describes: `[model.config]`, or the config.json of `model.from`.
fn model_config(run: &RunConfig) -> Result<LlamaConfig> {
    let model = match (&run.model.config, &run.model.from) {
        (Some(table), _) => model_table::<LlamaConfig>(table)?,
        (None, Some(dir)) => hf_llama::read_config(dir)?,
        (None, None) => unreachable!("RunConfig::validate requires one"),
    };
    model
        .validate()
        .map_err(|m| anyhow!("config key `model.config`: {m}"))?;
    Ok(model)
}

/// The model a run starts from: its Hugging Face folder, or a fresh initialisation seeded by the
/// run's seed. The model must cover the tokenizer's vocabulary.
fn initial_model<B: Backend>(
    run: &RunConfig,
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<LlamaForCausalLM<B>> {
    let (config, model) = match &run.model.from {
        Some(dir) => hf_llama::load_llama::<B>(dir, device)?,
        None => {
            let config = model_config(run)?;
            let model = config.init_seeded(run.seed, device);
            (config, model)
        }
    };
    if config.vocab_size < tokenizer.vocab_size() {
        bail!(
            "config key `model.config.vocab_size`: {} is smaller than the tokenizer's vocabulary ({})",
            config.vocab_size,
            tokenizer.vocab_size()
        );
    }
    Ok(model)
}

/// Model, packed token streams and perplexity evaluation of a run.
fn stream<B: TrainBackend>(
    run: &RunConfig,
    device: &B::Device,
) -> Result<Stream<B, LlamaForCausalLM<B>>> {
    let tokenizer = Arc::new(Tokenizer::from_file(run.tokenizer_path())?);
    // Checks the model config (or folder) before anything is written.
    let model = initial_model::<B>(run, &tokenizer, device)?;
    let mut experiences = Vec::new();
    let mut eval_sets = Vec::new();
    for (i, (e, steps)) in run
        .experiences
        .iter()
        .zip(run.experience_steps())
        .enumerate()
    {
        let source = training_source(run, i, &tokenizer)
            .with_context(|| format!("training data of experience `{}`", e.name))?;
        experiences.push(Experience {
            name: e.name.clone(),
            steps,
            source,
        });
        eval_sets.push(EvalSet {
            name: e.name.clone(),
            batches: eval_batches(run, i, &tokenizer)?,
        });
    }
    let distill: DistillSettings = cpt_continual::settings(run)?;
    let reference = match distill.reference.is_empty() {
        true => None,
        false => Some(reference_source(run, &distill.reference, &tokenizer)?),
    };
    Ok(Stream {
        model,
        experiences,
        evaluator: Box::new(PerplexityEvaluator::<
            B::InnerBackend,
            LlamaForCausalLM<B::InnerBackend>,
        >::new(eval_sets)),
        reference,
        lora_targets: LORA_TARGETS.to_vec(),
        held_out: Vec::new(),
        tasks: Vec::new(),
        unit: "tokens",
    })
}

/// A language model ready to use, with the tokenizer that goes with it.
pub struct LoadedModel<B: Backend> {
    /// Its hyperparameters.
    pub config: LlamaConfig,
    /// The weights.
    pub model: LlamaForCausalLM<B>,
    /// Its `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Where the weights were read from, for messages.
    pub source: PathBuf,
}

/// Load `path`: a Hugging Face folder (`config.json`), a run directory (its newest complete
/// checkpoint) or a checkpoint directory (`manifest.json`).
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    if path.join("config.json").exists() {
        let (config, model) = hf_llama::load_llama::<B>(path, device)?;
        return Ok(LoadedModel {
            config,
            model,
            tokenizer: path.join("tokenizer.json"),
            source: path.into(),
        });
    }
    from_checkpoint(&RunCheckpoint::open(path)?, device)
}

fn from_checkpoint<B: Backend>(
    saved: &RunCheckpoint,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    if saved.run.model.architecture != Llama::NAME {
        bail!(
            "config key `model.architecture`: unknown architecture `{}` (known: {})",
            saved.run.model.architecture,
            Llama::NAME
        );
    }
    let config = model_config(&saved.run)?;
    let model = saved.load_into(config.init::<B>(device), LORA_TARGETS)?;
    Ok(LoadedModel {
        config,
        model,
        tokenizer: saved.run.tokenizer_path(),
        source: saved.checkpoint.path.clone(),
    })
}

/// Write `loaded` as a Hugging Face folder at `out`, live LoRA adapters folded in: the folder
/// holds the function the run ended with.
pub fn save_hf<B: Backend>(loaded: &LoadedModel<B>, out: &Path) -> Result<()> {
    let tokenizer = Tokenizer::from_file(&loaded.tokenizer)
        .with_context(|| format!("the tokenizer of {}", loaded.source.display()))?;
    let ids = (tokenizer.bos_id(), tokenizer.eos_id());
    let model = loaded.model.clone().merge_adapters();
    hf_llama::save_llama(&model, &loaded.config, Some(&loaded.tokenizer), ids, out)?;
    Ok(())
}
