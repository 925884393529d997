//! Checkpoint and resume: everything a run needs to continue bit-identically after a restart
//! (model, optimizer moments, strategy state, stream cursors, [`TrainerState`]), written as the
//! files of one checkpoint directory.

use super::{ContinualTrainer, RunObserver, TrainerState};
use crate::error::{ContinualError, Result};
use crate::strategy::StrategyState;
use burn::module::{AutodiffModule, Module};
use cpt_core::checkpoint::{CheckpointDir, save_checkpoint, tag_for_step};
use cpt_core::params::{load_named, named_tensors};
use cpt_core::tensor_file::{encode_tensors, parse_tensors};
use cpt_core::{CoreError, LossScaler, TaskModel, TrainBackend};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Model weights inside a checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer moments inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Trainer position and history inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";

/// Tensors of the strategy at `index` in the stack (only for strategies that have any).
fn strategy_file(index: usize) -> String {
    format!("strategy-{index}.safetensors")
}

impl<B, M> ContinualTrainer<B, M>
where
    B: TrainBackend,
    M: TaskModel<B> + AutodiffModule<B>,
{
    /// Where the checkpoint of the current position is (or would be) written.
    pub(super) fn last_checkpoint(&self) -> Option<PathBuf> {
        let root = self.checkpoint_root.as_ref()?;
        Some(root.join(tag_for_step(
            self.state.global_step,
            !self.state.experience_started,
        )))
    }

    /// Write a checkpoint of everything a resume needs. Does nothing without a checkpoint root.
    pub(super) fn checkpoint(&mut self, observer: &mut dyn RunObserver) -> Result<Option<PathBuf>> {
        let Some(root) = self.checkpoint_root.clone() else {
            return Ok(None);
        };
        self.state.cursors = self.experiences.iter().map(|x| x.source.cursor()).collect();
        let states: Vec<StrategyState> = self.strategies.iter().map(|s| s.state()).collect();
        self.state.strategies = states.iter().map(|s| s.json.clone()).collect();

        let mut files = Vec::new();
        let model_file = Path::new(MODEL_FILE);
        files.push((
            MODEL_FILE.to_string(),
            encode_tensors(&named_tensors(&self.model), HashMap::new(), model_file)?,
        ));
        let (moments, steps) = self.optimizer.state_tensors();
        files.push((
            OPTIMIZER_FILE.to_string(),
            encode_tensors(&moments, steps, Path::new(OPTIMIZER_FILE))?,
        ));
        for (i, state) in states.iter().enumerate() {
            if !state.tensors.is_empty() {
                let name = strategy_file(i);
                files.push((
                    name.clone(),
                    encode_tensors(&state.tensors, HashMap::new(), Path::new(&name))?,
                ));
            }
        }
        let state_json = serde_json::to_vec_pretty(&self.state).expect("trainer state serialises");
        files.push((STATE_FILE.to_string(), state_json));
        let tag = tag_for_step(self.state.global_step, !self.state.experience_started);
        let path = save_checkpoint(
            &root,
            &tag,
            self.state.global_step,
            &self.settings.config_hash,
            &files,
            self.settings.keep_last,
        )?;
        observer.checkpoint(&path);
        Ok(Some(path))
    }

    /// Restore model, optimizer, strategies, stream positions and history from a checkpoint.
    pub fn resume(&mut self, checkpoint: &CheckpointDir) -> Result<()> {
        let read_tensors = |name: &str| -> Result<_> {
            let bytes = checkpoint.read(name)?;
            Ok(parse_tensors(&bytes, &checkpoint.path.join(name))?)
        };
        let state_path = checkpoint.path.join(STATE_FILE);
        let state: TrainerState =
            serde_json::from_slice(&checkpoint.read(STATE_FILE)?).map_err(|source| {
                CoreError::Json {
                    path: state_path,
                    source,
                }
            })?;
        if state.cursors.len() != self.experiences.len()
            || state.strategies.len() != self.strategies.len()
        {
            return Err(ContinualError::Resume(format!(
                "checkpoint has {} experiences and {} strategies, the config {} and {}",
                state.cursors.len(),
                state.strategies.len(),
                self.experiences.len(),
                self.strategies.len()
            )));
        }
        let device = Module::devices(&self.model.valid())
            .into_iter()
            .next()
            .expect("a model has a device");
        // Strategies first: they may change the model's structure (adapters) that the
        // checkpointed weights belong to.
        for (i, strategy) in self.strategies.iter_mut().enumerate() {
            let name = strategy_file(i);
            let has_tensors = checkpoint.manifest.files.iter().any(|f| f.name == name);
            let tensors = if has_tensors {
                read_tensors(&name)?.0
            } else {
                Default::default()
            };
            let state = StrategyState {
                json: state.strategies[i].clone(),
                tensors,
            };
            strategy.load_state(state, &device)?;
        }
        let mut model = self.model.clone();
        for strategy in &self.strategies {
            model = strategy.rebuild_model(model);
        }
        let (weights, _) = read_tensors(MODEL_FILE)?;
        self.model = load_named(model, &weights, &checkpoint.path.join(MODEL_FILE))?;
        let (moments, steps) = read_tensors(OPTIMIZER_FILE)?;
        self.optimizer
            .load_state(&moments, &steps, &device)
            .map_err(|key| ContinualError::Resume(format!("optimizer state lacks `{key}`")))?;
        for (experience, cursor) in self.experiences.iter_mut().zip(&state.cursors) {
            experience.source.seek(cursor)?;
        }
        self.state = state;
        // A run resumed under another precision starts (or drops) its loss scale here.
        let scaling = self.settings.precision.needs_loss_scaling();
        self.state.loss_scaler = match self.state.loss_scaler.take() {
            Some(scaler) if scaling => Some(scaler),
            _ if scaling => Some(LossScaler::new(&self.settings.loss_scaler)),
            _ => None,
        };
        Ok(())
    }
}
