//! Data parallelism is the same training: two peers (two threads on the flex device, talking
//! through burn's collective engine) with global batch B give the losses and weights of one
//! device with batch B, for naive, replay and EWC, step by step.

#![cfg(feature = "collective")]

mod common;

use common::*;
use cpt_continual::distributed::collective::{LocalPeers, Topology};
use cpt_continual::strategies::{Ewc, EwcConfig, FisherKind, Naive, Replay};
use cpt_continual::{ContinualTrainer, Experience, RunObserver, Strategy};
use cpt_core::params::named_tensors;
use cpt_core::{ItemSource, NamedTensors, StepRecord, TokenSequence};
use std::sync::Arc;
use std::time::Duration;

const STEPS_PER_EXPERIENCE: u64 = 10;

/// Two experiences of ten steps: twenty steps in all.
fn stream() -> Vec<Experience<TokenSequence>> {
    (0..2)
        .map(|i| Experience {
            name: format!("domain{i}"),
            steps: STEPS_PER_EXPERIENCE,
            source: Box::new(SyntheticSource::new(100 + i as u64, i as u32))
                as Box<dyn ItemSource<TokenSequence>>,
        })
        .collect()
}

fn strategies(kind: &str) -> Vec<Box<dyn Strategy<B, Model>>> {
    match kind {
        "naive" => vec![Box::new(Naive)],
        "replay" => vec![Box::new(Replay::new(6, 0.5, 7))],
        "ewc" => vec![Box::new(Ewc::<B>::new(EwcConfig {
            lambda: 10.0,
            fisher_batches: 2,
            online: false,
            gamma: 1.0,
            fisher: FisherKind::Empirical,
        }))],
        other => panic!("no strategy {other}"),
    }
}

fn trainer(kind: &str) -> ContinualTrainer<B, Model> {
    let mut settings = settings(0);
    settings.eval_every_steps = 0;
    ContinualTrainer::new(
        tiny_model(3),
        strategies(kind),
        stream(),
        Box::new(evaluator()),
        settings,
    )
}

#[derive(Default)]
struct Losses(Vec<f64>);

impl RunObserver for Losses {
    fn step(&mut self, record: &StepRecord) {
        self.0.push(record.loss);
    }
}

fn single(kind: &str) -> (Vec<f64>, NamedTensors) {
    let mut trainer = trainer(kind);
    let mut losses = Losses::default();
    trainer.run(&mut losses).unwrap();
    (losses.0, named_tensors(trainer.model()))
}

fn two_peers(kind: &str) -> Vec<(Vec<f64>, NamedTensors)> {
    let lost = Arc::new(|message: String| panic!("{message}"));
    let peers = Arc::new(LocalPeers::new(
        Topology::local(2, Duration::from_secs(60)),
        lost,
    ));
    let handles: Vec<_> = (0..2)
        .map(|local| {
            let peers = peers.clone();
            let kind = kind.to_string();
            std::thread::spawn(move || {
                let peer = peers.register::<Inner>(local, Default::default()).unwrap();
                let mut trainer = trainer(&kind).with_peers(Box::new(peer)).unwrap();
                let mut losses = Losses::default();
                trainer.run(&mut losses).unwrap();
                (losses.0, named_tensors(trainer.model()))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn two_peers_train_like_one_device_with_the_global_batch() {
    let _rng = backend_rng_lock();
    for kind in ["naive", "replay", "ewc"] {
        let (losses, weights) = single(kind);
        let peers = two_peers(kind);
        assert_eq!(losses.len(), 2 * STEPS_PER_EXPERIENCE as usize);
        for (rank, (peer_losses, peer_weights)) in peers.iter().enumerate() {
            assert_eq!(peer_losses.len(), losses.len(), "{kind} rank {rank}");
            for (step, (a, b)) in losses.iter().zip(peer_losses).enumerate() {
                assert!(
                    relative(*a, *b) < 1e-5,
                    "{kind}: rank {rank} step {}: loss {b} vs one device's {a}",
                    step + 1
                );
            }
            let mut worst = 0.0f64;
            for (name, w) in &weights {
                let p = &peer_weights[name];
                let scale = w.values.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
                for (x, y) in w.values.iter().zip(&p.values) {
                    worst = worst.max((*x as f64 - *y as f64).abs() / scale.max(1e-6));
                }
            }
            assert!(
                worst < 1e-5,
                "{kind} rank {rank}: weights differ by {worst:e} (relative to each tensor's largest)"
            );
        }
        // The peers hold one model between them.
        assert_eq!(
            peers[0].1, peers[1].1,
            "{kind}: the peers' weights diverged"
        );
    }
}

/// A stand-in group that returns what it is given: a peer then trains on its slice alone.
struct Echo {
    rank: usize,
}

impl cpt_continual::distributed::PeerGroup<Inner> for Echo {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        2
    }
    fn all_reduce_mean(
        &self,
        values: burn::tensor::Tensor<Inner, 1>,
    ) -> cpt_continual::Result<burn::tensor::Tensor<Inner, 1>> {
        Ok(values)
    }
}

#[test]
fn each_peer_trains_on_its_own_half_of_the_global_batch() {
    let _rng = backend_rng_lock();
    let first_loss = |trainer: ContinualTrainer<B, Model>| {
        let mut trainer = trainer;
        let mut losses = Losses::default();
        trainer.run(&mut losses).unwrap();
        losses.0[0]
    };
    let whole = first_loss(trainer("naive"));
    let halves: Vec<f64> = (0..2)
        .map(|rank| {
            first_loss(
                trainer("naive")
                    .with_peers(Box::new(Echo { rank }))
                    .unwrap(),
            )
        })
        .collect();
    // Different data, and together the global batch (equal token counts per half).
    assert!(relative(halves[0], halves[1]) > 1e-3, "{halves:?}");
    assert!(
        relative((halves[0] + halves[1]) / 2.0, whole) < 1e-5,
        "{halves:?} vs {whole}"
    );
    let odd = trainer("naive").with_peers(Box::new(Echo { rank: 0 }));
    let mut settings = settings(0);
    settings.batch_size = 3;
    let uneven = ContinualTrainer::new(
        tiny_model(3),
        strategies("naive"),
        stream(),
        Box::new(evaluator()),
        settings,
    )
    .with_peers(Box::new(Echo { rank: 0 }));
    assert!(odd.is_ok());
    let message = uneven
        .err()
        .expect("3 items do not split over 2 peers")
        .to_string();
    assert!(message.contains("train.batch_size"), "{message}");
}
