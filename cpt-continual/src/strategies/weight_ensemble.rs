//! ZSCL's weight ensemble ("Preventing Zero-Shot Transfer Degradation in Continual Learning of
//! Vision-Language Models", 2023): every `every_steps` steps the current weights join a running
//! average that starts from the weights at the experience start; the average replaces the
//! model when the experience ends.

use crate::error::Result;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, combine, load_optional, replace, save_optional, snapshot};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::{NamedTensors, TaskModel};

/// Average of weight samples taken every `every_steps` steps within each experience.
pub struct WeightEnsemble<B: AutodiffBackend> {
    every_steps: u64,
    average: Option<Weights<B>>,
    samples: u64,
    steps: u64,
}

impl<B: AutodiffBackend> WeightEnsemble<B> {
    /// Sample the weights every `every_steps` optimizer steps (at least 1).
    pub fn new(every_steps: u64) -> Self {
        Self {
            every_steps: every_steps.max(1),
            average: None,
            samples: 0,
            steps: 0,
        }
    }

    /// The running average and the number of samples in it.
    pub fn average(&self) -> Option<(&Weights<B>, u64)> {
        self.average.as_ref().map(|a| (a, self.samples))
    }
}

impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Strategy<B, M> for WeightEnsemble<B> {
    fn name(&self) -> &str {
        "weight_ensemble"
    }

    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        self.average = Some(snapshot::<B, M>(cx.model));
        self.samples = 1;
        self.steps = 0;
        Ok(())
    }

    fn after_step(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        self.steps += 1;
        if !self.steps.is_multiple_of(self.every_steps) {
            return Ok(());
        }
        let Some(average) = self.average.take() else {
            return Ok(());
        };
        let current = snapshot::<B, M>(cx.model);
        let n = self.samples as f64;
        // avg ← avg + (θ − avg) / (n + 1): the mean of all samples so far.
        self.average = Some(combine::<B>(average, &current, |avg, theta| {
            avg.clone() + (theta.clone() - avg).div_scalar(n + 1.0)
        }));
        self.samples += 1;
        Ok(())
    }

    fn after_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        if let Some(average) = &self.average {
            *cx.model = replace::<B, M>(cx.model.clone(), average);
        }
        Ok(())
    }

    fn state(&self) -> StrategyState {
        let (mut json, mut tensors) = (serde_json::Map::new(), NamedTensors::new());
        save_optional::<B>(self.average.as_ref(), "average", &mut json, &mut tensors);
        json.insert("samples".into(), self.samples.into());
        json.insert("steps".into(), self.steps.into());
        StrategyState {
            json: json.into(),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        let get = |key: &str| {
            state
                .json
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        self.samples = get("samples");
        self.steps = get("steps");
        self.average = load_optional::<B>(&state, "average", device);
        Ok(())
    }
}

/// The `[weight_ensemble]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightEnsembleSettings {
    /// Add the current weights to the average every this many steps.
    pub every_steps: u64,
}

impl Default for WeightEnsembleSettings {
    fn default() -> Self {
        Self { every_steps: 10 }
    }
}

impl StrategySettings for WeightEnsembleSettings {
    const NAME: &'static str = "weight_ensemble";

    fn build<B, M>(self, _cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(WeightEnsemble::<B>::new(self.every_steps)))
    }
}
