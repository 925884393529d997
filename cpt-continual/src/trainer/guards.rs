//! The guards between a step's gradients and its update: a non-finite loss or gradient norm
//! (policy `fail` or `skip`) and a loss spike against the running mean. A guarded step is never
//! applied; a skipped one still spends its budget and its data.

use super::{ContinualTrainer, StepLosses};
use crate::error::{ContinualError, Result};
use burn::module::AutodiffModule;
use cpt_core::{TaskModel, TrainBackend};
use serde::{Deserialize, Serialize};

/// Running mean of recent step losses for the loss-spike guard: an exponential average over
/// roughly the last 50 applied steps, armed after 20. Non-finite and spiking losses never enter
/// it (a NaN would poison it for good, as llm.c's detector is). Checkpointed with the trainer
/// state, so a resumed run judges spikes exactly as an uninterrupted one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeGuard {
    /// Exponential mean of accepted losses.
    pub mean: f64,
    /// Losses accepted so far.
    pub count: u64,
}

impl SpikeGuard {
    const DECAY: f64 = 0.98;
    const WARMUP: u64 = 20;

    /// Whether `loss` is a spike under `factor`; a finite non-spike loss updates the mean.
    pub fn observe(&mut self, loss: f64, factor: f64) -> bool {
        if !loss.is_finite() {
            return false;
        }
        if self.count >= Self::WARMUP && loss > factor * self.mean {
            return true;
        }
        self.mean = if self.count == 0 {
            loss
        } else {
            Self::DECAY * self.mean + (1.0 - Self::DECAY) * loss
        };
        self.count += 1;
        false
    }
}

/// What the trainer does with a step whose loss or gradient norm is not finite. The update is
/// never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinitePolicy {
    /// Stop the run with an error naming the experience and step.
    Fail,
    /// Skip the step (its data is consumed) and continue; fail once more than
    /// `max_skipped_steps` steps were skipped in the run.
    Skip {
        /// Most steps that may be skipped over the run.
        max_skipped_steps: u64,
    },
}

/// Skip cap of the loss-spike guard when the non-finite policy (`fail`) sets none.
const DEFAULT_SPIKE_CAP: u64 = 10;

impl<B, M> ContinualTrainer<B, M>
where
    B: TrainBackend,
    M: TaskModel<B> + AutodiffModule<B>,
{
    /// Judge experience `e`'s step before its update is applied: `Ok(true)` to skip it,
    /// `Ok(false)` to apply it, or the error that stops the run. `grad_norm` is NaN when the
    /// losses were not finite (the norm was then not computed).
    pub(super) fn guard(&mut self, e: usize, losses: &StepLosses, grad_norm: f64) -> Result<bool> {
        if let Some(total) = losses.non_finite_total {
            return self.non_finite_step("loss", total, e);
        }
        if !grad_norm.is_finite() {
            return self.non_finite_step("gradient norm", grad_norm, e);
        }
        // The guard watches the objective the update follows (loss plus penalties).
        match self.settings.loss_spike_factor {
            Some(factor) if self.state.spike_guard.observe(losses.total, factor) => {
                self.spike_step(losses.total, e)
            }
            _ => Ok(false),
        }
    }

    /// Under a dynamic loss scale: whether the step's gradients overflowed (a finite objective
    /// but a non-finite gradient norm), which skips the step without counting against the
    /// non-finite policy, as `GradScaler.step` does. Every step with a finite objective moves
    /// the scale: down after an overflow, up after enough clean steps in a row.
    pub(super) fn loss_scale_overflow(&mut self, losses: &StepLosses, grad_norm: f64) -> bool {
        let Some(scaler) = self.state.loss_scaler.as_mut() else {
            return false;
        };
        if losses.non_finite_total.is_some() {
            return false;
        }
        let overflow = !grad_norm.is_finite();
        let before = scaler.scale;
        scaler.update(overflow, &self.settings.loss_scaler);
        if overflow {
            tracing::warn!(
                "gradient overflow at global step {} under loss scale {before}; step skipped, scale now {}",
                self.state.global_step + 1,
                scaler.scale
            );
        }
        overflow
    }

    /// A loss spike: skip the step (counted against the skip cap), whatever the non-finite
    /// policy, since the guard was asked for explicitly.
    fn spike_step(&mut self, loss: f64, e: usize) -> Result<bool> {
        let cap = match self.settings.non_finite {
            NonFinitePolicy::Skip { max_skipped_steps } => max_skipped_steps,
            NonFinitePolicy::Fail => DEFAULT_SPIKE_CAP,
        };
        self.state.skipped_steps += 1;
        let mean = self.state.spike_guard.mean;
        let message = format!(
            "loss spike at experience `{}` step {}: {loss:.4} against a running mean of {mean:.4}; update not applied",
            self.experiences[e].name,
            self.state.step_in_experience + 1
        );
        if self.state.skipped_steps > cap {
            return Err(ContinualError::TooManySkipped {
                limit: cap,
                last: Box::new(ContinualError::LossSpike(message)),
            });
        }
        tracing::warn!(
            "{message} ({} skipped of at most {cap})",
            self.state.skipped_steps
        );
        Ok(true)
    }

    /// Apply the non-finite policy to a step whose `what` was `value`: `Ok(true)` to skip it,
    /// or the error that stops the run. The update is never applied either way.
    fn non_finite_step(&mut self, what: &'static str, value: f64, e: usize) -> Result<bool> {
        let error = ContinualError::NonFinite {
            what,
            value,
            experience: self.experiences[e].name.clone(),
            step: self.state.step_in_experience + 1,
        };
        match self.settings.non_finite {
            NonFinitePolicy::Fail => Err(error),
            NonFinitePolicy::Skip { max_skipped_steps } => {
                self.state.skipped_steps += 1;
                if self.state.skipped_steps > max_skipped_steps {
                    return Err(ContinualError::TooManySkipped {
                        limit: max_skipped_steps,
                        last: Box::new(error),
                    });
                }
                tracing::warn!(
                    "{error}; skipped ({} of at most {max_skipped_steps})",
                    self.state.skipped_steps
                );
                Ok(true)
            }
        }
    }
}
