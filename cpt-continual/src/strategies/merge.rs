//! Merging per-experience task vectors ("Editing Models with Task Arithmetic", 2023): after
//! each experience, `θ ← θ_0 + s · Σ_k τ_k` with `τ_k = θ_after_k − θ_before_k` and `θ_0` the
//! model before the stream. `s = 1` is plain sequential training; `s < 1` shrinks every update
//! toward the original model, which "A Practitioner's Guide to Continual Multimodal
//! Pretraining" (2024) finds among the best trade-offs.

use crate::error::Result;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, load_optional, replace, save_optional, snapshot};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::{NamedTensors, TaskModel};

/// Task arithmetic over the experiences of the stream.
pub struct Merge<B: AutodiffBackend> {
    scale: f64,
    base: Option<Weights<B>>,
    start: Option<Weights<B>>,
    task_sum: Option<Weights<B>>,
}

impl<B: AutodiffBackend> Merge<B> {
    /// Merge with scale `scale`.
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            base: None,
            start: None,
            task_sum: None,
        }
    }
}

impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Strategy<B, M> for Merge<B> {
    fn name(&self) -> &str {
        "merge"
    }

    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        let now = snapshot::<B, M>(cx.model);
        if self.base.is_none() {
            self.base = Some(now.clone());
        }
        self.start = Some(now);
        Ok(())
    }

    fn after_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        let (Some(base), Some(start)) = (&self.base, self.start.take()) else {
            return Ok(());
        };
        let end = snapshot::<B, M>(cx.model);
        let mut sum = self.task_sum.take().unwrap_or_default();
        for (path, after) in &end {
            let Some(before) = start.get(path) else {
                continue;
            };
            let tau = after.clone() - before.clone();
            let total = match sum.remove(path) {
                Some(previous) => previous + tau,
                None => tau,
            };
            sum.insert(path.clone(), total);
        }
        let merged: Weights<B> = sum
            .iter()
            .filter_map(|(path, tau)| {
                Some((
                    path.clone(),
                    base.get(path)?.clone() + tau.clone().mul_scalar(self.scale),
                ))
            })
            .collect();
        *cx.model = replace::<B, M>(cx.model.clone(), &merged);
        self.task_sum = Some(sum);
        Ok(())
    }

    fn state(&self) -> StrategyState {
        let (mut json, mut tensors) = (serde_json::Map::new(), NamedTensors::new());
        save_optional::<B>(self.base.as_ref(), "base", &mut json, &mut tensors);
        save_optional::<B>(self.start.as_ref(), "start", &mut json, &mut tensors);
        save_optional::<B>(self.task_sum.as_ref(), "task_sum", &mut json, &mut tensors);
        StrategyState {
            json: json.into(),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        self.base = load_optional::<B>(&state, "base", device);
        self.start = load_optional::<B>(&state, "start", device);
        self.task_sum = load_optional::<B>(&state, "task_sum", device);
        Ok(())
    }
}

/// The `[merge]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MergeSettings {
    /// Scale of the summed task vectors.
    pub scale: f64,
}

impl Default for MergeSettings {
    fn default() -> Self {
        Self { scale: 0.7 }
    }
}

impl StrategySettings for MergeSettings {
    const NAME: &'static str = "merge";

    fn build<B, M>(self, _cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(Merge::<B>::new(self.scale)))
    }
}
