//! Learning-rate schedules: pure functions of the step.
//!
//! Constant, linear warmup + cosine decay, and warmup–stable–decay (WSD, the "infinite" schedule
//! of "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", 2024). Across
//! a stream of experiences the schedule either runs once over the whole stream or re-warms at
//! every experience ("Continual Pre-Training of Large Language Models: How to (re)warm your
//! model?", 2023). Because the rate is a pure function of (experience, step), resuming needs no
//! scheduler state.

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};

/// The shape of the learning-rate curve inside one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Warmup, then `peak_lr` forever.
    Constant,
    /// Linear warmup to `peak_lr`, then cosine decay to `min_lr` at the end of the phase.
    Cosine,
    /// Linear warmup, a constant plateau at `peak_lr`, and a linear cooldown to `min_lr` over the
    /// last `decay_fraction` of the phase.
    Wsd,
}

/// Learning-rate schedule settings (the `[schedule]` table of a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Curve shape.
    pub kind: ScheduleKind,
    /// Rate at the end of warmup.
    pub peak_lr: f64,
    /// Rate at the end of a cosine decay or a WSD cooldown.
    #[serde(default)]
    pub min_lr: f64,
    /// Linear warmup length in optimizer steps (from 0 to `peak_lr`).
    #[serde(default)]
    pub warmup_steps: u64,
    /// WSD only: fraction of the phase spent cooling down (0..=1).
    #[serde(default = "default_decay_fraction")]
    pub decay_fraction: f64,
    /// `true`: every experience is its own phase (warmup to the peak again);
    /// `false`: one phase spans the whole stream.
    #[serde(default)]
    pub rewarm: bool,
}

fn default_decay_fraction() -> f64 {
    0.2
}

impl ScheduleConfig {
    /// Check ranges, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, message: &str| {
            Err(CoreError::Invalid {
                key: format!("schedule.{key}"),
                message: message.into(),
            })
        };
        if !(self.peak_lr.is_finite() && self.peak_lr >= 0.0) {
            return bad("peak_lr", "must be a finite number >= 0");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.peak_lr) {
            return bad("min_lr", "must be finite and within [0, peak_lr]");
        }
        if !(0.0..=1.0).contains(&self.decay_fraction) {
            return bad("decay_fraction", "must lie in [0, 1]");
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based, counted inside the phase) of a phase of `phase_steps`
    /// optimizer steps.
    pub fn lr_at(&self, step: u64, phase_steps: u64) -> f64 {
        if step < self.warmup_steps {
            // Step 0 already gets a non-zero rate: warmup reaches the peak at `warmup_steps`.
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = |a: f64, b: f64, t: f64| a + (b - a) * t;
        match self.kind {
            ScheduleKind::Constant => self.peak_lr,
            ScheduleKind::Cosine => {
                let decay_steps = phase_steps.saturating_sub(self.warmup_steps).max(1);
                let t = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                span(self.min_lr, self.peak_lr, cosine)
            }
            ScheduleKind::Wsd => {
                let decay_steps = (self.decay_fraction * phase_steps as f64).round() as u64;
                let decay_start = phase_steps
                    .saturating_sub(decay_steps)
                    .max(self.warmup_steps);
                if step < decay_start || decay_steps == 0 {
                    self.peak_lr
                } else {
                    let t = ((step - decay_start + 1) as f64 / decay_steps as f64).min(1.0);
                    span(self.peak_lr, self.min_lr, t)
                }
            }
        }
    }
}

/// Where a global step falls in the schedule, given each experience's step budget.
///
/// Returns `(step_in_phase, phase_steps)` to pass to [`ScheduleConfig::lr_at`].
pub fn phase_position(
    rewarm: bool,
    experience_steps: &[u64],
    experience: usize,
    step_in_experience: u64,
) -> (u64, u64) {
    if rewarm {
        (step_in_experience, experience_steps[experience])
    } else {
        let before: u64 = experience_steps[..experience].iter().sum();
        (before + step_in_experience, experience_steps.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: ScheduleKind) -> ScheduleConfig {
        ScheduleConfig {
            kind,
            peak_lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 4,
            decay_fraction: 0.25,
            rewarm: false,
        }
    }

    #[test]
    fn warmup_is_linear_to_the_peak() {
        let c = config(ScheduleKind::Constant);
        let lrs: Vec<f64> = (0..5).map(|s| c.lr_at(s, 100)).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0]);
    }

    #[test]
    fn cosine_hits_peak_midpoint_and_floor() {
        let c = config(ScheduleKind::Cosine);
        // 4 warmup + 100 decay steps.
        assert_eq!(c.lr_at(4, 104), 1.0);
        assert!((c.lr_at(54, 104) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(104, 104) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(500, 104) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn wsd_has_plateau_then_linear_cooldown() {
        let c = config(ScheduleKind::Wsd);
        // 100 steps: cooldown over the last 25 (steps 75..=99).
        assert_eq!(c.lr_at(10, 100), 1.0);
        assert_eq!(c.lr_at(74, 100), 1.0);
        assert!((c.lr_at(75, 100) - (1.0 - 0.9 / 25.0)).abs() < 1e-12);
        assert!((c.lr_at(99, 100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn rewarm_restarts_the_phase_per_experience() {
        let steps = [10, 20, 30];
        assert_eq!(phase_position(true, &steps, 1, 3), (3, 20));
        assert_eq!(phase_position(false, &steps, 1, 3), (13, 60));
        assert_eq!(phase_position(false, &steps, 2, 0), (30, 60));
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = config(ScheduleKind::Cosine);
        c.min_lr = 2.0;
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("schedule.min_lr"), "{msg}");
    }
}
