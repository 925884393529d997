//! Activation checkpointing changes what the backward pass keeps, never what it computes: under
//! burn's `BalancedCheckpointing`, and with every decoder layer recomputed
//! (`cpt_core::fused::recompute`), the tiny LLaMA's losses, every gradient and the weights after
//! AdamW steps equal those without checkpointing bit for bit — also with LoRA adapters and
//! dropout, bf16-mixed products, and a frozen embedding (untracked layer inputs).

mod common;

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::tensor::ElementConversion;
use cpt_continual::{AdamW, AdamWConfig, GradStore};
use cpt_core::fused::recompute;
use cpt_core::params::named_tensors;
use cpt_core::precision::autocast;
use cpt_core::{AdapterModel, Precision, TaskModel, TokenBatch, TrainBackend};
use cpt_models::LlamaForCausalLM;
use std::collections::BTreeMap;

/// Losses of each step, the gradients of the last step by path and the final weights by path.
struct Trace {
    losses: Vec<f32>,
    grads: BTreeMap<String, Vec<f32>>,
    weights: BTreeMap<String, Vec<f32>>,
}

/// What a run trains: the model's variant and how its forward passes are recorded.
#[derive(Debug, Clone, Copy, Default)]
struct Setup {
    tied: bool,
    /// LoRA adapters (with dropout) on every projection.
    lora: bool,
    precision: Precision,
    /// The input embedding without gradients, so the first layer's input is untracked.
    frozen_embedding: bool,
    /// Forward passes inside a `recompute::layers` scope.
    recompute: bool,
}

/// Three clipped AdamW steps of the tiny LLaMA on backend `B`.
fn train<B: TrainBackend>(setup: Setup) -> Trace {
    let mut config = common::tiny_config();
    config.tie_word_embeddings = setup.tied;
    let device = Default::default();
    let mut model: LlamaForCausalLM<B> = config.init_seeded(7, &device);
    if setup.lora {
        let spec = cpt_models::linear::LoraSpec {
            rank: 2,
            alpha: 4.0,
            rslora: false,
            target_modules: ["q", "k", "v", "o", "gate", "up", "down"]
                .map(Into::into)
                .to_vec(),
            dropout: 0.1,
        };
        model = model.with_adapters(&spec, 3);
    }
    if setup.frozen_embedding {
        let weight = model.model.embed_tokens.weight;
        model.model.embed_tokens.weight = weight.set_require_grad(false);
    }
    let mut optimizer = AdamW::<B>::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.01,
    });
    let mut losses = Vec::new();
    let mut grads_by_path = BTreeMap::new();
    for step in 0..3 {
        let batch = TokenBatch::random(3, common::SEQ, common::VOCAB, step);
        // LoRA dropout draws the same masks in every run.
        B::seed(&device, 11 + step);
        let loss = {
            let _precision = autocast(setup.precision);
            let _recompute = recompute::layers(setup.recompute);
            model.forward_step(&batch).loss
        };
        losses.push(loss.clone().into_scalar().elem::<f32>());
        let mut grads = GradStore::<B>::default();
        grads.accumulate(&model, &loss.backward());
        grads_by_path = grads
            .iter()
            .map(|(path, g)| (path.to_string(), g.to_data().to_vec::<f32>().unwrap()))
            .collect();
        let norm = grads.global_norm();
        if norm > 0.5 {
            grads.scale(0.5 / (norm + 1e-6));
        }
        model = optimizer.step(model, &grads, 1e-2, |_| 1.0);
    }
    let weights = named_tensors(&model)
        .into_iter()
        .map(|(path, t)| (path, t.values))
        .collect();
    Trace {
        losses,
        grads: grads_by_path,
        weights,
    }
}

fn assert_identical(a: &Trace, b: &Trace) {
    assert_eq!(a.losses, b.losses);
    assert_eq!(
        a.grads.keys().collect::<Vec<_>>(),
        b.grads.keys().collect::<Vec<_>>()
    );
    assert!(!a.grads.is_empty());
    for (path, grad) in &a.grads {
        assert_eq!(grad, &b.grads[path], "gradient of {path}");
    }
    assert_eq!(a.weights.len(), b.weights.len());
    for (path, w) in &a.weights {
        assert_eq!(w, &b.weights[path], "weights of {path}");
    }
}

#[test]
fn balanced_checkpointing_reproduces_losses_gradients_and_weights_exactly() {
    let _rng = common::backend_rng_lock();
    for tied in [false, true] {
        let setup = Setup {
            tied,
            ..Setup::default()
        };
        let plain = train::<Autodiff<Flex>>(setup);
        let balanced = train::<Autodiff<Flex, BalancedCheckpointing>>(setup);
        assert!(plain.losses.iter().all(|l| l.is_finite()));
        // The steps moved the model: equal traces are not equal because nothing happened.
        assert_ne!(plain.losses[0], plain.losses[2]);
        assert_identical(&plain, &balanced);
    }
}

#[test]
fn recomputed_layers_reproduce_losses_gradients_and_weights_exactly() {
    let _rng = common::backend_rng_lock();
    let setups = [
        Setup::default(),
        Setup {
            tied: true,
            ..Setup::default()
        },
        Setup {
            lora: true,
            ..Setup::default()
        },
        Setup {
            precision: Precision::Bf16Mixed,
            ..Setup::default()
        },
        Setup {
            frozen_embedding: true,
            tied: true,
            ..Setup::default()
        },
    ];
    for setup in setups {
        let plain = train::<Autodiff<Flex>>(setup);
        let recomputed = train::<Autodiff<Flex, BalancedCheckpointing>>(Setup {
            recompute: true,
            ..setup
        });
        assert!(plain.losses.iter().all(|l| l.is_finite()), "{setup:?}");
        assert_ne!(plain.losses[0], plain.losses[2], "{setup:?}");
        assert_identical(&plain, &recomputed);
    }
}
