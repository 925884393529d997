//! Exponential moving average of the weights during training, swapped in at the end of each
//! experience (weight averaging to keep what was learnt; cf. ZSCL, "Preventing Zero-Shot
//! Transfer Degradation in Continual Learning of Vision-Language Models", 2023).

use crate::error::Result;
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, from_host, replace, snapshot, to_host};
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
        self.average = Some(
            average
                .into_iter()
                .map(|(path, avg)| {
                    let value = match current.get(&path) {
                        Some(theta) => avg.mul_scalar(d) + theta.clone().mul_scalar(1.0 - d),
                        None => avg,
                    };
                    (path, value)
                })
                .collect(),
        );
        Ok(())
    }

    fn after_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        if let Some(average) = &self.average {
            *cx.model = replace::<B, M>(cx.model.clone(), average);
        }
        Ok(())
    }

    fn state(&self) -> StrategyState {
        let mut tensors = NamedTensors::new();
        if let Some(average) = &self.average {
            to_host::<B>(average, "average", &mut tensors);
        }
        StrategyState {
            json: serde_json::json!({ "average": self.average.is_some() }),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        let has = state
            .json
            .get("average")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        self.average = has.then(|| from_host::<B>(&state.tensors, "average", device));
        Ok(())
    }
}
