//! Where a trained model is found: a run directory (its newest complete checkpoint) or one
//! checkpoint, with the config of its run; and the `[model.config]` table of a run. What is
//! model-specific (building, Hugging Face folders) is each architecture's, in `arch/`.

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::Backend;
use cpt_continual::strategies::LoraSettings;
use cpt_core::checkpoint::{latest_checkpoint, verify_checkpoint};
use cpt_core::params::load_named;
use cpt_core::tensor_file::read_tensors;
use cpt_core::{AdapterModel, LoraSpec, RunConfig};
use std::path::{Path, PathBuf};

/// A `[model.config]` table as the architecture's own config type, which rejects unknown keys;
/// errors name the key.
pub fn model_table<C: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<C> {
    toml::Value::Table(table.clone())
        .try_into::<C>()
        .map_err(|e| anyhow!("config key `model.config`: {}", e.message()))
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
        let run = load_run_config(&run_dir.join("config.toml"), &[])
            .with_context(|| format!("reading the run config of {}", path.display()))?;
        Ok(Self { run, checkpoint })
    }

    /// `model` (freshly built from the run's config) with the checkpoint's weights. A checkpoint
    /// saved mid-experience with live LoRA adapters gets them back first (`targets`: the
    /// projections the architecture's adapters may name), so the structures match.
    pub fn load_into<B: Backend, M>(&self, model: M, targets: &[&str]) -> Result<M>
    where
        M: burn::module::Module<B> + AdapterModel<Spec = LoraSpec>,
    {
        let weights_path = self.checkpoint.path.join("model.safetensors");
        let (weights, _) = read_tensors(&weights_path)?;
        let model = if weights.keys().any(|k| k.contains(cpt_core::ADAPTER_MARKER)) {
            model.with_adapters(&self.adapter_spec(targets)?, 0)
        } else {
            model
        };
        Ok(load_named(model, &weights, &weights_path)?)
    }

    /// The experience whose stage settings (`seq_len`, RoPE) the checkpointed model was trained
    /// under, from the checkpoint's `trainer_state.json`; `None` before the first experience.
    pub fn stage(&self) -> Result<Option<usize>> {
        /// The two fields of `TrainerState` that place a checkpoint in the stream.
        #[derive(serde::Deserialize)]
        struct Position {
            experience: usize,
            experience_started: bool,
        }
        let path = self.checkpoint.path.join("trainer_state.json");
        let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
        let at: Position = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a trainer state", path.display()))?;
        // After an experience's end the position is already the next one, not yet started.
        Ok(match at.experience_started {
            true => Some(at.experience),
            false => at.experience.checked_sub(1),
        })
    }

    /// The run's `[lora]` adapter spec (`targets`: the projections the architecture's adapters
    /// may name).
    pub fn adapter_spec(&self, targets: &[&str]) -> Result<LoraSpec> {
        let settings: LoraSettings = cpt_continual::settings(&self.run)?;
        Ok(settings.spec(targets, &self.run.model.architecture)?)
    }
}

/// Read a run config and resolve its strategies' settings (defaults written out, unknown keys
/// refused): the config a run directory records.
pub fn load_run_config(path: &Path, overrides: &[String]) -> Result<RunConfig> {
    let mut config = RunConfig::load(path, overrides)?;
    cpt_continual::resolve_settings(&mut config)?;
    Ok(config)
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
