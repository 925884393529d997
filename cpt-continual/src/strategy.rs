//! The `Strategy` trait: hooks a continual-learning method uses to act on the trainer.
//!
//! Hook names follow Avalanche's vocabulary (before/after experience, after step). Several
//! strategies compose in one run; the trainer calls each hook on every strategy in config order.
//! A strategy owns its state and hands it to checkpoints through [`Strategy::state`], so a
//! resumed run is identical whatever the strategies.

use crate::error::Result;
use burn::tensor::{Tensor, backend::AutodiffBackend};
use cpt_core::{Batch, NamedTensors, StepOutput, TaskModel};
use std::marker::PhantomData;

/// The device of the backend without autodiff, where strategy state lives.
pub type InnerDevice<B> = burn::tensor::Device<<B as AutodiffBackend>::InnerBackend>;

/// An item of the batch type of model `M`.
pub type ItemOf<B, M> = <<M as TaskModel<B>>::Batch as Batch>::Item;

/// What a strategy may see and change at an experience boundary or after a step.
pub struct Context<'a, B: AutodiffBackend, M: TaskModel<B>> {
    /// The model being trained; strategies may replace it (merge adapters, average weights).
    pub model: &'a mut M,
    /// Index of the current experience.
    pub experience: usize,
    /// Name of the current experience.
    pub experience_name: &'a str,
    /// Optimizer steps over the whole run so far.
    pub global_step: u64,
    /// Draws training batches of the current experience (e.g. to estimate a Fisher matrix).
    pub next_batch: &'a mut dyn FnMut() -> Result<M::Batch>,
    /// Substrings of parameter paths whose optimizer state the trainer must reset after this
    /// hook (a strategy that replaces parameters, such as a fresh LoRA adapter, pushes here).
    pub reset_optimizer: &'a mut Vec<String>,
    /// The backend.
    pub backend: PhantomData<B>,
}

/// A strategy's checkpointable state: JSON for small values, named tensors for large ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrategyState {
    /// Small state (counters, buffers of token ids, settings checks).
    pub json: serde_json::Value,
    /// Tensor state (Fisher diagonals, anchors, averaged weights, teachers).
    pub tensors: NamedTensors,
}

/// A continual-learning strategy. Every hook has a neutral default, so a strategy implements
/// only what it changes.
pub trait Strategy<B: AutodiffBackend, M: TaskModel<B>>: Send {
    /// Short name, as written in the config (`replay`, `ewc`, ...).
    fn name(&self) -> &str;

    /// Called once when an experience starts (not again when a run resumes inside it).
    fn before_experience(&mut self, _cx: &mut Context<'_, B, M>) -> Result<()> {
        Ok(())
    }

    /// Batch slots this strategy fills itself (replayed items) in a batch of `batch_size`; the
    /// trainer draws that many fewer items from the experience's stream.
    fn reserved_slots(&self, _batch_size: usize) -> usize {
        0
    }

    /// Add this strategy's [`Strategy::reserved_slots`] items to `batch` (of `batch_size` in
    /// all), given the `fresh` items drawn from the stream.
    fn extend_batch(
        &mut self,
        _batch_size: usize,
        _fresh: &[ItemOf<B, M>],
        _batch: &mut Vec<ItemOf<B, M>>,
    ) {
    }

    /// A term added to the training loss (regularisers, distillation), shape `[1]`.
    fn penalty(&self, _model: &M, _batch: &M::Batch, _out: &StepOutput<B>) -> Option<Tensor<B, 1>> {
        None
    }

    /// Learning-rate multiplier of the parameter at `path` (0 freezes it).
    fn lr_scale(&self, _path: &str) -> f64 {
        1.0
    }

    /// Called after every optimizer step.
    fn after_step(&mut self, _cx: &mut Context<'_, B, M>) -> Result<()> {
        Ok(())
    }

    /// Rebuild the model's structure from this strategy's restored state before checkpointed
    /// weights are loaded into it (e.g. re-attach adapters that existed when it was saved).
    fn rebuild_model(&self, model: M) -> M {
        model
    }

    /// Called once when an experience's budget is spent, before its evaluation.
    fn after_experience(&mut self, _cx: &mut Context<'_, B, M>) -> Result<()> {
        Ok(())
    }

    /// The state to checkpoint.
    fn state(&self) -> StrategyState {
        StrategyState::default()
    }

    /// Restore a checkpointed state; tensors go to `device`, the model's.
    fn load_state(&mut self, _state: StrategyState, _device: &InnerDevice<B>) -> Result<()> {
        Ok(())
    }
}
