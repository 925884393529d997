//! A NaN loss is never applied: under `fail` the run stops naming the step, under `skip` the
//! step is skipped with the weights untouched, and the skip cap is enforced.

mod common;

use burn::tensor::Tensor;
use common::*;
use cpt_continual::{ContinualError, NonFinitePolicy, RunObserver, Strategy};
use cpt_core::params::named_tensors;
use cpt_core::{StepOutput, StepRecord, TokenBatch};

/// Adds a penalty of `value` (NaN by default) on the global steps in `at` (counted by its own
/// calls).
struct PoisonAt {
    at: Vec<u64>,
    calls: std::cell::Cell<u64>,
    value: f32,
}

// The trainer never shares strategies across threads; Cell is enough.
unsafe impl Send for PoisonAt {}

impl Strategy<B, Model> for PoisonAt {
    fn name(&self) -> &str {
        "poison"
    }
    fn penalty(&self, _m: &Model, _b: &TokenBatch, out: &StepOutput<B>) -> Option<Tensor<B, 1>> {
        // One call per micro-batch; 2 micro-batches per step in these settings.
        let step = self.calls.get() / 2 + 1;
        self.calls.set(self.calls.get() + 1);
        self.at
            .contains(&step)
            .then(|| out.loss.zeros_like().add_scalar(self.value))
    }
}

fn run_with(
    policy: NonFinitePolicy,
    at: Vec<u64>,
) -> (
    cpt_continual::Result<cpt_continual::RunOutcome>,
    Vec<StepRecord>,
) {
    let mut settings = settings(0);
    settings.non_finite = policy;
    let strategies: Vec<Box<dyn Strategy<B, Model>>> = vec![Box::new(PoisonAt {
        at,
        calls: Default::default(),
        value: f32::NAN,
    })];
    let mut t = cpt_continual::ContinualTrainer::new(
        tiny_model(1),
        strategies,
        experiences(),
        Box::new(evaluator()),
        settings,
    );
    struct Log(Vec<StepRecord>);
    impl RunObserver for Log {
        fn step(&mut self, r: &StepRecord) {
            self.0.push(r.clone());
        }
    }
    let mut log = Log(Vec::new());
    let result = t.run(&mut log);
    (result, log.0)
}

#[test]
fn fail_policy_stops_at_the_poisoned_step() {
    let (result, steps) = run_with(NonFinitePolicy::Fail, vec![3]);
    match result {
        Err(ContinualError::NonFinite {
            what,
            step,
            experience,
            ..
        }) => {
            assert_eq!((what, step, experience.as_str()), ("loss", 3, "domain0"));
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
    assert_eq!(steps.len(), 2, "steps 1 and 2 ran");
}

#[test]
fn skip_policy_leaves_the_weights_untouched_and_counts() {
    let (result, steps) = run_with(
        NonFinitePolicy::Skip {
            max_skipped_steps: 5,
        },
        vec![3, 4],
    );
    assert!(result.is_ok(), "{result:?}");
    let skipped: Vec<u64> = steps
        .iter()
        .filter(|s| s.skipped)
        .map(|s| s.global_step)
        .collect();
    assert_eq!(skipped, vec![3, 4]);
    assert_eq!(
        steps.len() as u64,
        STEPS.iter().sum::<u64>(),
        "skipped steps spend their budget"
    );
}

/// A trainer run over the first experience for `steps` steps, its penalty `value` at the steps
/// in `poison`.
fn poisoned_run(
    settings: cpt_continual::TrainerSettings,
    steps: u64,
    poison: Vec<u64>,
    value: f32,
) -> cpt_continual::ContinualTrainer<B, Model> {
    let strategies: Vec<Box<dyn Strategy<B, Model>>> = vec![Box::new(PoisonAt {
        at: poison,
        calls: Default::default(),
        value,
    })];
    let mut exps = experiences();
    exps.truncate(1);
    exps[0].steps = steps;
    let mut t = cpt_continual::ContinualTrainer::new(
        tiny_model(1),
        strategies,
        exps,
        Box::new(evaluator()),
        settings,
    );
    t.run(&mut cpt_continual::SilentObserver).unwrap();
    t
}

#[test]
fn a_skipped_step_applies_no_update() {
    // Two runs that stop after step 2 and after poisoned step 3: same weights.
    let weights_after = |steps: u64, poison: Vec<u64>| {
        let mut settings = settings(0);
        settings.non_finite = NonFinitePolicy::Skip {
            max_skipped_steps: 5,
        };
        // A constant rate, so the two budgets see the same rates on their shared steps.
        settings.schedule.kind = cpt_core::ScheduleKind::Constant;
        let t = poisoned_run(settings, steps, poison, f32::NAN);
        named_tensors(t.model())
    };
    assert!(
        weights_after(3, vec![3]) == weights_after(2, vec![]),
        "the skipped step changed weights"
    );
    assert!(
        weights_after(3, vec![]) != weights_after(2, vec![]),
        "an applied step must change them"
    );
}

#[test]
fn the_skip_cap_is_enforced() {
    let (result, _) = run_with(
        NonFinitePolicy::Skip {
            max_skipped_steps: 1,
        },
        vec![2, 4],
    );
    assert!(
        matches!(result, Err(ContinualError::TooManySkipped { limit: 1, .. })),
        "{result:?}"
    );
}

#[test]
fn the_spike_guard_ignores_non_finite_losses_and_flags_jumps() {
    let mut guard = cpt_continual::SpikeGuard::default();
    for _ in 0..25 {
        assert!(!guard.observe(2.0, 3.0));
    }
    assert!(
        !guard.observe(f64::NAN, 3.0),
        "a NaN is not a spike (another guard handles it)"
    );
    assert_eq!(guard.mean, 2.0, "and never enters the mean");
    assert!(guard.observe(7.0, 3.0), "3.5× the mean is a spike");
    assert_eq!(guard.mean, 2.0, "a spike does not enter the mean either");
    assert!(!guard.observe(5.0, 3.0));
}

#[test]
fn a_loss_spike_is_not_applied() {
    // A +50 penalty on step 23 (after the guard's 20-step warmup) is a spike: not applied, so
    // the weights equal those of a run that stops after step 22 (constant rate).
    let weights_after = |steps: u64, poison: Vec<u64>| {
        let mut settings = settings(0);
        settings.loss_spike_factor = Some(3.0);
        settings.non_finite = NonFinitePolicy::Skip {
            max_skipped_steps: 5,
        };
        settings.schedule.kind = cpt_core::ScheduleKind::Constant;
        let t = poisoned_run(settings, steps, poison, 50.0);
        (named_tensors(t.model()), t.state().skipped_steps)
    };
    let (spiked, skipped) = weights_after(23, vec![23]);
    let (clean, none) = weights_after(22, vec![]);
    assert_eq!((skipped, none), (1, 0));
    assert!(spiked == clean, "the spiking step changed the weights");
}

/// Adds `fault(loss)` to the objective of every micro-batch of global step `at` (2 per step),
/// a penalty that, unlike [`PoisonAt`]'s constant, reaches the gradients.
struct FaultAt {
    at: u64,
    calls: std::cell::Cell<u64>,
    fault: fn(Tensor<B, 1>) -> Tensor<B, 1>,
}

// The trainer never shares strategies across threads; Cell is enough.
unsafe impl Send for FaultAt {}

impl Strategy<B, Model> for FaultAt {
    fn name(&self) -> &str {
        "fault"
    }
    fn penalty(&self, _m: &Model, _b: &TokenBatch, out: &StepOutput<B>) -> Option<Tensor<B, 1>> {
        let step = self.calls.get() / 2 + 1;
        self.calls.set(self.calls.get() + 1);
        (step == self.at).then(|| (self.fault)(out.loss.clone()))
    }
}

/// A run over the first experience for `steps` steps (constant rate) with `fault` on step `at`.
fn faulted_run(
    policy: NonFinitePolicy,
    steps: u64,
    at: u64,
    fault: fn(Tensor<B, 1>) -> Tensor<B, 1>,
) -> (
    cpt_continual::Result<cpt_continual::RunOutcome>,
    cpt_continual::ContinualTrainer<B, Model>,
) {
    let _serial = backend_rng_lock();
    let mut settings = settings(0);
    settings.non_finite = policy;
    settings.schedule.kind = cpt_core::ScheduleKind::Constant;
    let strategies: Vec<Box<dyn Strategy<B, Model>>> = vec![Box::new(FaultAt {
        at,
        calls: Default::default(),
        fault,
    })];
    let mut exps = experiences();
    exps.truncate(1);
    exps[0].steps = steps;
    let mut t = cpt_continual::ContinualTrainer::new(
        tiny_model(1),
        strategies,
        exps,
        Box::new(evaluator()),
        settings,
    );
    let result = t.run(&mut cpt_continual::SilentObserver);
    (result, t)
}

/// NaN × loss: a NaN objective whose gradients are NaN too.
fn nan_objective(loss: Tensor<B, 1>) -> Tensor<B, 1> {
    loss.mul_scalar(f32::NAN)
}

/// √(loss − loss): an objective of exactly 0 whose gradient is infinite.
fn infinite_gradient(loss: Tensor<B, 1>) -> Tensor<B, 1> {
    (loss.clone() - loss.detach()).sqrt()
}

#[test]
fn a_nan_objective_with_nan_gradients_names_the_loss_and_applies_nothing() {
    let skip = NonFinitePolicy::Skip {
        max_skipped_steps: 5,
    };
    let (result, faulted) = faulted_run(skip, 3, 3, nan_objective);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(faulted.state().skipped_steps, 1);
    let (_, clean) = faulted_run(skip, 2, 0, nan_objective);
    assert!(
        named_tensors(faulted.model()) == named_tensors(clean.model()),
        "the NaN gradients reached the weights"
    );
    let (result, _) = faulted_run(NonFinitePolicy::Fail, 3, 3, nan_objective);
    assert!(
        matches!(
            result,
            Err(ContinualError::NonFinite {
                what: "loss",
                step: 3,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn a_finite_loss_with_an_infinite_gradient_names_the_gradient_norm() {
    let (result, _) = faulted_run(NonFinitePolicy::Fail, 3, 3, infinite_gradient);
    match result {
        Err(ContinualError::NonFinite {
            what, step, value, ..
        }) => {
            assert_eq!((what, step), ("gradient norm", 3));
            assert!(!value.is_finite());
        }
        other => panic!("expected a non-finite gradient norm, got {other:?}"),
    }
    let skip = NonFinitePolicy::Skip {
        max_skipped_steps: 5,
    };
    let (result, faulted) = faulted_run(skip, 3, 3, infinite_gradient);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(faulted.state().skipped_steps, 1);
    let (_, clean) = faulted_run(skip, 2, 0, infinite_gradient);
    assert!(
        named_tensors(faulted.model()) == named_tensors(clean.model()),
        "the skipped step changed the weights"
    );
}
