//! Mixed precision: which dtype the matrix products compute in, and the dynamic loss scale that
//! keeps `f16` gradients from underflowing ("Mixed Precision Training", Micikevicius et al., 2018).
//!
//! The weights, the optimizer moments, the residual stream, the norms, the softmax and the loss
//! stay `f32`; only the products of the linear layers run in the compute dtype, as PyTorch's
//! `torch.autocast` does for `F.linear`. The compute dtype is a scope on the current thread
//! ([`autocast`]), read by one place per model, `cpt_models::Linear::forward`, which casts its
//! input and weight down and its output back up. burn's cast is differentiable and returns the
//! gradient in the source dtype, so the gradients reaching the optimizer are `f32`.

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// The `train.precision` / `eval.precision` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// Everything in `f32`.
    #[default]
    #[serde(rename = "fp32")]
    Fp32,
    /// Linear-layer products in `bfloat16`, everything else in `f32`.
    #[serde(rename = "bf16-mixed")]
    Bf16Mixed,
    /// Linear-layer products in `float16`, everything else in `f32`, with dynamic loss scaling
    /// (f16's 5-bit exponent underflows small gradients and overflows large ones).
    #[serde(rename = "f16-mixed")]
    F16Mixed,
}

impl Precision {
    /// The dtype of the linear layers' products, `None` for `f32`.
    pub fn compute_dtype(self) -> Option<FloatDType> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16Mixed => Some(FloatDType::BF16),
            Precision::F16Mixed => Some(FloatDType::F16),
        }
    }

    /// Whether the loss must be scaled before the backward pass (`f16` only: `bfloat16` has
    /// `f32`'s exponent range).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16Mixed
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16Mixed => "bf16-mixed",
            Precision::F16Mixed => "f16-mixed",
        }
    }
}

thread_local! {
    static COMPUTE_DTYPE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// The compute dtype of the current thread's [`autocast`] scope, `None` outside one (or under
/// `fp32`).
pub fn compute_dtype() -> Option<FloatDType> {
    COMPUTE_DTYPE.with(Cell::get)
}

/// A scope in which the linear layers of the current thread compute in `precision`'s dtype; the
/// previous setting is restored when the guard drops. Only the forward pass needs it: the casts
/// it makes are recorded in the autodiff graph, which the backward pass replays as recorded.
pub fn autocast(precision: Precision) -> AutocastGuard {
    let previous = COMPUTE_DTYPE.with(|c| c.replace(precision.compute_dtype()));
    AutocastGuard { previous }
}

/// Restores the enclosing compute dtype when dropped (see [`autocast`]).
#[must_use = "the scope ends when the guard drops"]
pub struct AutocastGuard {
    previous: Option<FloatDType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        COMPUTE_DTYPE.with(|c| c.set(self.previous));
    }
}

/// Dynamic loss scaling as PyTorch's `torch.amp.GradScaler`: the objective is multiplied by
/// `scale` before the backward pass and the gradients divided by it before the update; a step
/// whose gradients overflow is skipped and the scale multiplied by `backoff_factor`, and after
/// `growth_interval` steps in a row without overflow it is multiplied by `growth_factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScalerConfig {
    /// The first scale.
    pub init_scale: f64,
    /// Factor applied after `growth_interval` clean steps.
    pub growth_factor: f64,
    /// Factor applied after an overflow.
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: u64,
}

impl Default for LossScalerConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// The state of a dynamic loss scale, checkpointed in `trainer_state.json` so a resumed run
/// scales (and skips) exactly as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// Current scale.
    pub scale: f64,
    /// Clean steps since the last overflow or growth.
    pub growth_tracker: u64,
    /// Steps skipped for overflow over the run.
    pub overflow_steps: u64,
}

impl LossScaler {
    /// A scaler at `config.init_scale`.
    pub fn new(config: &LossScalerConfig) -> Self {
        Self {
            scale: config.init_scale,
            growth_tracker: 0,
            overflow_steps: 0,
        }
    }

    /// Record one step: back off after an overflow, grow after `growth_interval` clean steps.
    pub fn update(&mut self, overflow: bool, config: &LossScalerConfig) {
        if overflow {
            self.scale *= config.backoff_factor;
            self.growth_tracker = 0;
            self.overflow_steps += 1;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= config.growth_interval {
            self.scale *= config.growth_factor;
            self.growth_tracker = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_reads_its_config_spelling() {
        #[derive(Deserialize)]
        struct T {
            p: Precision,
        }
        let read = |s: &str| toml::from_str::<T>(&format!("p = \"{s}\"")).map(|t| t.p);
        assert_eq!(read("fp32").unwrap(), Precision::Fp32);
        assert_eq!(read("bf16-mixed").unwrap(), Precision::Bf16Mixed);
        assert_eq!(read("f16-mixed").unwrap(), Precision::F16Mixed);
        assert!(read("bf16").is_err());
        for p in [Precision::Fp32, Precision::Bf16Mixed, Precision::F16Mixed] {
            assert_eq!(read(p.name()).unwrap(), p);
        }
    }

    #[test]
    fn autocast_scopes_nest_and_restore() {
        assert_eq!(compute_dtype(), None);
        {
            let _outer = autocast(Precision::Bf16Mixed);
            assert_eq!(compute_dtype(), Some(FloatDType::BF16));
            {
                let _inner = autocast(Precision::Fp32);
                assert_eq!(compute_dtype(), None);
            }
            assert_eq!(compute_dtype(), Some(FloatDType::BF16));
        }
        assert_eq!(compute_dtype(), None);
    }

    #[test]
    fn scaler_backs_off_on_overflow_and_grows_after_the_interval() {
        let config = LossScalerConfig {
            init_scale: 1024.0,
            growth_interval: 3,
            ..Default::default()
        };
        let mut s = LossScaler::new(&config);
        s.update(false, &config);
        s.update(false, &config);
        s.update(true, &config);
        assert_eq!((s.scale, s.growth_tracker, s.overflow_steps), (512.0, 0, 1));
        for _ in 0..2 {
            s.update(false, &config);
        }
        assert_eq!(s.scale, 512.0);
        s.update(false, &config);
        assert_eq!((s.scale, s.growth_tracker), (1024.0, 0));
    }
}
