//! Where a model comes from: fresh hyperparameters, a Hugging Face folder, a run directory or one
//! of its checkpoints. Every command that takes a model goes through here.

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::Backend;
use cpt_core::checkpoint::{latest_checkpoint, verify_checkpoint};
use cpt_core::params::load_named;
use cpt_core::tensor_file::read_tensors;
use cpt_core::{AdapterModel, RunConfig};
use cpt_data::Tokenizer;
use cpt_models::{LlamaConfig, LlamaForCausalLM, hf_llama};
use std::path::{Path, PathBuf};

/// A model ready to use, with the tokenizer that goes with it.
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

/// A `[model.config]` table as the architecture's own config type, which rejects unknown keys;
/// errors name the key.
pub fn model_table<C: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<C> {
    toml::Value::Table(table.clone())
        .try_into::<C>()
        .map_err(|e| anyhow!("config key `model.config`: {}", e.message()))
}

/// The architecture config a run's `[model]` section describes (without weights).
pub fn run_model_config(config: &RunConfig) -> Result<LlamaConfig> {
    if config.model.architecture != "llama" {
        bail!(
            "config key `model.architecture`: unknown architecture `{}` (known: llama)",
            config.model.architecture
        );
    }
    let model = match (&config.model.config, &config.model.from) {
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
pub fn initial_model<B: Backend>(
    config: &RunConfig,
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<(LlamaConfig, LlamaForCausalLM<B>)> {
    let (model_config, model) = match &config.model.from {
        Some(dir) => hf_llama::load_llama::<B>(dir, device)?,
        None => {
            let model_config = run_model_config(config)?;
            let model = model_config.init_seeded(config.seed, device);
            (model_config, model)
        }
    };
    if model_config.vocab_size < tokenizer.vocab_size() {
        bail!(
            "config key `model.config.vocab_size`: {} is smaller than the tokenizer's vocabulary ({})",
            model_config.vocab_size,
            tokenizer.vocab_size()
        );
    }
    Ok((model_config, model))
}

/// Load `path`: a Hugging Face folder (`config.json`), a run directory (its newest complete
/// checkpoint) or a checkpoint directory (`manifest.json`).
pub fn load_model<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    if path.join("config.json").exists() {
        let (config, model) = hf_llama::load_llama::<B>(path, device)?;
        return Ok(LoadedModel {
            config,
            model,
            tokenizer: path.join("tokenizer.json"),
            source: path.into(),
        });
    }
    let saved = RunCheckpoint::open(path)?;
    let model_config = run_model_config(&saved.run)?;
    let model = saved.load_into(
        model_config.init::<B>(device),
        crate::run::LLAMA_LORA_TARGETS,
    )?;
    Ok(LoadedModel {
        config: model_config,
        model,
        tokenizer: saved.run.tokenizer_path(),
        source: saved.checkpoint.path,
    })
}

/// A checkpoint with the config of the run it belongs to.
pub struct RunCheckpoint {
    /// The run's config.
    pub run: RunConfig,
    /// The checkpoint directory.
    pub checkpoint: cpt_core::checkpoint::CheckpointDir,
}

impl RunCheckpoint {
    /// The checkpoint `path` names (a run directory: its newest complete one) and its run's
    /// config.
    pub fn open(path: &Path) -> Result<Self> {
        let (run_dir, checkpoint) = run_checkpoint(path)?;
        let run = RunConfig::load(&run_dir.join("config.toml"), &[])
            .with_context(|| format!("reading the run config of {}", path.display()))?;
        Ok(Self { run, checkpoint })
    }

    /// `model` (freshly built from the run's config) with the checkpoint's weights. A checkpoint
    /// saved mid-experience with live LoRA adapters gets them back first (`targets`: the
    /// projections the architecture's adapters may name), so the structures match.
    pub fn load_into<B: Backend, M>(&self, model: M, targets: &[&str]) -> Result<M>
    where
        M: burn::module::Module<B> + AdapterModel<Spec = cpt_models::linear::LoraSpec>,
    {
        let weights_path = self.checkpoint.path.join("model.safetensors");
        let (weights, _) = read_tensors(&weights_path)?;
        let model = if weights.keys().any(|k| k.contains(cpt_core::ADAPTER_MARKER)) {
            model.with_adapters(&crate::run::lora_spec(&self.run, targets)?, 0)
        } else {
            model
        };
        Ok(load_named(model, &weights, &weights_path)?)
    }
}

/// The run directory and the checkpoint `path` names: a run directory (its newest complete
/// checkpoint) or one checkpoint directory (verified).
pub fn run_checkpoint(path: &Path) -> Result<(PathBuf, cpt_core::checkpoint::CheckpointDir)> {
    Ok(if path.join("config.toml").exists() {
        let found = latest_checkpoint(&path.join("checkpoints"))?
            .ok_or_else(|| anyhow!("{}: the run has no complete checkpoint", path.display()))?;
        (path.to_path_buf(), found)
    } else if path.join(cpt_core::checkpoint::MANIFEST).exists() {
        let run = path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        (run, verify_checkpoint(path)?)
    } else {
        bail!(
            "{}: not a model folder (config.json), run directory (config.toml) or checkpoint (manifest.json)",
            path.display()
        );
    })
}

/// The run directory that `path` (a run directory or one of its checkpoints) belongs to.
pub fn run_dir_of(path: &Path) -> Option<PathBuf> {
    if path.join("config.toml").exists() {
        return Some(path.to_path_buf());
    }
    let run = path.parent()?.parent()?;
    run.join("config.toml").exists().then(|| run.to_path_buf())
}
