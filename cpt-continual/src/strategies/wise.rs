//! WiSE-FT interpolation between the weights before and after each experience ("Robust
//! fine-tuning of zero-shot models", 2022): `θ ← (1 − α) · θ_before + α · θ_after`.

use crate::error::Result;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, load_optional, replace, save_optional, snapshot};
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::{NamedTensors, TaskModel};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Interpolate each experience's result back toward its starting point.
pub struct Wise<B: AutodiffBackend> {
    alpha: f64,
    start: Option<Weights<B>>,
}

impl<B: AutodiffBackend> Wise<B> {
    /// `alpha = 1` keeps the fine-tuned weights, `alpha = 0` the starting ones.
    pub fn new(alpha: f64) -> Self {
        Self { alpha, start: None }
    }
}

/// `(1 − α) · a + α · b`, exact at both ends (`0 · a = 0` and `x + 0 = x` in floating point).
pub fn interpolate<B: burn::tensor::backend::Backend>(
    a: Tensor<B, 1>,
    b: Tensor<B, 1>,
    alpha: f64,
) -> Tensor<B, 1> {
    a.mul_scalar(1.0 - alpha) + b.mul_scalar(alpha)
}

impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Strategy<B, M> for Wise<B> {
    fn name(&self) -> &str {
        "wise"
    }

    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        self.start = Some(snapshot::<B, M>(cx.model));
        Ok(())
    }

    fn after_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        let Some(start) = self.start.take() else {
            return Ok(());
        };
        let end = snapshot::<B, M>(cx.model);
        let mixed: Weights<B> = end
            .into_iter()
            .map(|(path, after)| {
                let value: Tensor<Inner<B>, 1> = match start.get(&path) {
                    Some(before) => interpolate(before.clone(), after, self.alpha),
                    None => after,
                };
                (path, value)
            })
            .collect();
        *cx.model = replace::<B, M>(cx.model.clone(), &mixed);
        Ok(())
    }

    fn state(&self) -> StrategyState {
        let (mut json, mut tensors) = (serde_json::Map::new(), NamedTensors::new());
        save_optional::<B>(self.start.as_ref(), "start", &mut json, &mut tensors);
        StrategyState {
            json: json.into(),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        self.start = load_optional::<B>(&state, "start", device);
        Ok(())
    }
}

/// The `[wise]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WiseSettings {
    /// Weight of the fine-tuned end point (1: keep it, 0: undo the experience).
    pub alpha: f64,
}

impl Default for WiseSettings {
    fn default() -> Self {
        Self { alpha: 0.5 }
    }
}

impl StrategySettings for WiseSettings {
    const NAME: &'static str = "wise";

    fn build<B, M>(self, _cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(Wise::<B>::new(self.alpha)))
    }
}
