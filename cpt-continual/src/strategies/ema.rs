//! Exponential moving average of the weights during training, swapped in at the end of each
//! experience (weight averaging to keep what was learnt; cf. ZSCL, "Preventing Zero-Shot
//! Transfer Degradation in Continual Learning of Vision-Language Models", 2023).

use crate::error::Result;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, combine, load_optional, replace, save_optional, snapshot};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::{NamedTensors, TaskModel};

/// `avg ← decay · avg + (1 − decay) · θ` after every step; the model becomes `avg` when an
/// experience ends.
pub struct Ema<B: AutodiffBackend> {
    decay: f64,
    average: Option<Weights<B>>,
}

impl<B: AutodiffBackend> Ema<B> {
    /// An average with the given decay (close to 1: slow).
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            average: None,
        }
    }

    /// The current average.
    pub fn average(&self) -> Option<&Weights<B>> {
        self.average.as_ref()
    }
}

impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Strategy<B, M> for Ema<B> {
    fn name(&self) -> &str {
        "ema"
    }

    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        if self.average.is_none() {
            self.average = Some(snapshot::<B, M>(cx.model));
        }
        Ok(())
    }

    fn after_step(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        let current = snapshot::<B, M>(cx.model);
        let d = self.decay;
        let average = self.average.take().unwrap_or_else(|| current.clone());
        self.average = Some(combine::<B>(average, &current, |avg, theta| {
            avg.mul_scalar(d) + theta.clone().mul_scalar(1.0 - d)
        }));
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
        StrategyState {
            json: json.into(),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        self.average = load_optional::<B>(&state, "average", device);
        Ok(())
    }
}

/// The `[ema]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaSettings {
    /// Decay per step.
    pub decay: f64,
}

impl Default for EmaSettings {
    fn default() -> Self {
        Self { decay: 0.99 }
    }
}

impl StrategySettings for EmaSettings {
    const NAME: &'static str = "ema";

    fn build<B, M>(self, _cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(Ema::<B>::new(self.decay)))
    }
}
