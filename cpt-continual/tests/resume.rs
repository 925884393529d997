//! Resumed == uninterrupted, bit for bit on the flex backend: a run stopped after k steps and
//! resumed from its checkpoint (into a freshly built model) ends with the same weights, the same
//! eval matrix and the same per-step losses as a run never interrupted.

mod common;

use common::*;
use cpt_continual::strategies::{Naive, Replay};
use cpt_continual::{RunObserver, RunOutcome, Strategy};
use cpt_core::StepRecord;
use cpt_core::checkpoint::latest_checkpoint;
use cpt_core::params::named_tensors;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Records step losses; raises the stop flag after global step `stop_at`.
struct StopAt {
    stop_at: Option<u64>,
    flag: Arc<AtomicBool>,
    losses: Vec<(u64, u64)>,
}

impl RunObserver for StopAt {
    fn step(&mut self, record: &StepRecord) {
        self.losses
            .push((record.global_step, record.loss.to_bits()));
        if Some(record.global_step) == self.stop_at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

/// A run's strategy stack.
type Strategies = Vec<Box<dyn Strategy<B, Model>>>;

fn strategies() -> Strategies {
    vec![Box::new(Naive), Box::new(Replay::new(6, 0.5, 7))]
}

/// Every strategy with state at once.
fn all_strategies() -> Vec<Box<dyn Strategy<B, Model>>> {
    use cpt_continual::strategies::{
        Distill, Ema, Ewc, EwcConfig, FisherKind, Merge, SlowLearner, Wise,
    };
    let ewc = EwcConfig {
        lambda: 10.0,
        fisher_batches: 2,
        online: true,
        gamma: 0.9,
        fisher: FisherKind::Empirical,
    };
    vec![
        Box::new(Replay::new(6, 0.5, 7)),
        Box::new(Ewc::<B>::new(ewc)),
        Box::new(Distill::<B, Model>::with_config(
            cpt_continual::strategies::DistillConfig {
                alpha: 0.5,
                temperature: 2.0,
                feature_weight: 0.3,
                feature_distance: cpt_continual::strategies::FeatureDistance::Cosine,
                reference_batch_size: 2,
            },
            Some(Box::new(SyntheticSource::new(77, 2))),
        )),
        Box::new(Ema::<B>::new(0.8)),
        Box::new(Wise::<B>::new(0.7)),
        Box::new(Merge::<B>::new(0.9)),
        Box::new(cpt_continual::strategies::WeightEnsemble::<B>::new(2)),
        Box::new(SlowLearner::new(vec![("model.embed_tokens.*".into(), 0.5)])),
    ]
}

fn bits(model: &Model) -> Vec<(String, Vec<u32>)> {
    named_tensors(model)
        .into_iter()
        .map(|(k, t)| (k, t.values.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn matrix_bits(trainer: &cpt_continual::ContinualTrainer<B, Model>) -> Vec<Vec<u64>> {
    trainer
        .state()
        .matrix
        .iter()
        .map(|row| row.iter().map(|s| s.loss.to_bits()).collect())
        .collect()
}

fn resume_matches_uninterrupted(stop_at: u64) {
    resume_matches_uninterrupted_with(stop_at, strategies);
}

fn resume_matches_uninterrupted_with(stop_at: u64, strategies: fn() -> Strategies) {
    let _serial = backend_rng_lock();
    compare_resumed_with_uninterrupted(stop_at, strategies);
}

fn compare_resumed_with_uninterrupted(stop_at: u64, strategies: fn() -> Strategies) {
    let mut reference = trainer(1, strategies(), 0);
    let mut seen = StopAt {
        stop_at: None,
        flag: reference.stop_flag(),
        losses: Vec::new(),
    };
    assert_eq!(reference.run(&mut seen).unwrap(), RunOutcome::Finished);

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(1, strategies(), 3).with_checkpoints(dir.path().to_path_buf());
    let mut cut = StopAt {
        stop_at: Some(stop_at),
        flag: first.stop_flag(),
        losses: Vec::new(),
    };
    assert!(matches!(
        first.run(&mut cut).unwrap(),
        RunOutcome::Interrupted { .. }
    ));
    drop(first);

    // A different init seed: every weight must come from the checkpoint.
    let mut second = trainer(99, strategies(), 3).with_checkpoints(dir.path().to_path_buf());
    let checkpoint = latest_checkpoint(dir.path())
        .unwrap()
        .expect("a checkpoint was written");
    assert_eq!(checkpoint.manifest.step, stop_at);
    second.resume(&checkpoint).unwrap();
    let mut rest = StopAt {
        stop_at: None,
        flag: second.stop_flag(),
        losses: Vec::new(),
    };
    assert_eq!(second.run(&mut rest).unwrap(), RunOutcome::Finished);

    let mut joined = cut.losses.clone();
    joined.extend(rest.losses);
    assert_eq!(joined, seen.losses, "per-step losses differ");
    assert_eq!(
        matrix_bits(&second),
        matrix_bits(&reference),
        "eval matrix differs"
    );
    assert_eq!(
        bits(second.model()),
        bits(reference.model()),
        "final weights differ"
    );
    assert_eq!(second.state().tokens_seen, reference.state().tokens_seen);
    // Per-source counts continue from the checkpoint and add up to the total.
    let counts = &second.state().tokens_by_source;
    assert_eq!(counts, &reference.state().tokens_by_source);
    assert_eq!(counts.values().sum::<u64>(), reference.state().tokens_seen);
    assert!(counts.contains_key("domain0") && counts.contains_key("domain2"));
}

#[test]
fn resume_mid_experience_is_bit_identical() {
    resume_matches_uninterrupted(2);
}

#[test]
fn resume_at_an_experience_boundary_is_bit_identical() {
    resume_matches_uninterrupted(STEPS[0]);
}

/// Replay + EWC + distillation + LoRA (merged per experience, with adapter dropout), as the
/// strategies issue asks.
fn with_lora() -> Strategies {
    use cpt_continual::strategies::{Distill, Ewc, EwcConfig, FisherKind, Lora, LoraMode};
    let ewc = EwcConfig {
        lambda: 10.0,
        fisher_batches: 2,
        online: false,
        gamma: 1.0,
        fisher: FisherKind::Empirical,
    };
    let spec = cpt_models::linear::LoraSpec {
        rank: 2,
        alpha: 4.0,
        rslora: true,
        target_modules: vec!["q".into(), "up".into()],
        dropout: 0.1,
    };
    vec![
        Box::new(Replay::new(6, 0.5, 7)),
        Box::new(Ewc::<B>::new(ewc)),
        Box::new(Distill::<B, Model>::new(0.5, 2.0)),
        Box::new(Lora::<B, Model>::new(spec, LoraMode::Merge, 11)),
    ]
}

#[test]
fn replay_ewc_distill_lora_resume_bit_identically() {
    resume_matches_uninterrupted_with(STEPS[0] + 1, with_lora);
    resume_matches_uninterrupted_with(STEPS[0], with_lora);
}

#[test]
fn all_strategies_together_resume_bit_identically_mid_experience() {
    resume_matches_uninterrupted_with(STEPS[0] + 2, all_strategies);
}

#[test]
fn all_strategies_together_resume_bit_identically_at_a_boundary() {
    resume_matches_uninterrupted_with(STEPS[0] + STEPS[1], all_strategies);
}

#[test]
fn a_run_without_checkpoints_trains_and_fills_the_matrix() {
    let _serial = backend_rng_lock();
    let mut t = trainer(1, strategies(), 0);
    assert_eq!(
        t.run(&mut cpt_continual::SilentObserver).unwrap(),
        RunOutcome::Finished
    );
    let state = t.state();
    assert_eq!(state.matrix.len(), 3);
    assert_eq!(state.global_step, STEPS.iter().sum::<u64>());
    // Training on domain 0 lowers its loss below the initial model's.
    let initial = state.initial_scores.as_ref().unwrap();
    assert!(state.matrix[0][0].loss < initial[0].loss);
}

/// LoRA with adapter dropout (masks from the backend RNG, re-seeded from (seed, step) at every
/// step) next to replay and distillation.
fn lora_with_dropout() -> Strategies {
    use cpt_continual::strategies::{Distill, Lora, LoraMode};
    let spec = cpt_models::linear::LoraSpec {
        rank: 2,
        alpha: 4.0,
        rslora: true,
        target_modules: vec!["q".into(), "up".into()],
        dropout: 0.1,
    };
    vec![
        Box::new(Replay::new(6, 0.5, 7)),
        Box::new(Distill::<B, Model>::new(0.5, 2.0)),
        Box::new(Lora::<B, Model>::new(spec, LoraMode::Merge, 11)),
    ]
}

#[test]
fn lora_dropout_resumes_bit_identically() {
    resume_matches_uninterrupted_with(STEPS[0] + 1, lora_with_dropout);
    resume_matches_uninterrupted_with(2, lora_with_dropout);
}
