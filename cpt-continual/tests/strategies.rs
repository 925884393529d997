//! Each strategy's mechanism, tested so that a wrong mechanism fails.

mod common;

use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use common::*;
use cpt_continual::strategies::{
    Distill, Ema, Ewc, EwcConfig, FisherKind, SlowLearner, Wise, estimate_fisher, interpolate,
    kd_loss,
};
use cpt_continual::weights::{replace, snapshot};
use cpt_continual::{Context, RunOutcome, SilentObserver, Strategy, StrategyState};
use cpt_core::params::{HostTensor, NamedTensors, named_tensors};
use cpt_core::{ItemSource, SplitMix64, TaskModel, TokenBatch};
use std::marker::PhantomData;

type Inner = burn::backend::Flex;

fn batch(seed: u64) -> TokenBatch {
    let mut source = SyntheticSource::new(seed, 1);
    TokenBatch::from_sequences(
        &(0..4)
            .map(|_| source.next_item().unwrap().tokens)
            .collect::<Vec<_>>(),
    )
}

fn host(t: Tensor<Inner, 1>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Run `f` with a context over `model` whose batches come from a synthetic stream.
fn with_context<R>(
    model: &mut Model,
    experience: usize,
    f: impl FnOnce(&mut Context<'_, B, Model>) -> R,
) -> R {
    let mut source = SyntheticSource::new(5, 0);
    let mut next = || -> cpt_continual::Result<TokenBatch> {
        Ok(TokenBatch::from_sequences(
            &(0..4)
                .map(|_| source.next_item().unwrap().tokens)
                .collect::<Vec<_>>(),
        ))
    };
    let mut resets = Vec::new();
    let mut cx = Context {
        reset_optimizer: &mut resets,
        model,
        experience,
        experience_name: "x",
        global_step: 0,
        next_batch: &mut next,
        backend: PhantomData,
    };
    f(&mut cx)
}

fn ewc_config(fisher: FisherKind, online: bool, gamma: f64) -> EwcConfig {
    EwcConfig {
        lambda: 3.0,
        fisher_batches: 3,
        online,
        gamma,
        fisher,
    }
}

#[test]
fn ewc_penalty_gradient_is_lambda_fisher_times_distance() {
    let model = tiny_model(1);
    let mut rng = SplitMix64::new(8);
    let mut tensors = NamedTensors::new();
    let mut expected = NamedTensors::new();
    for (path, theta) in named_tensors(&model) {
        let n = theta.values.len();
        let fisher: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32).collect();
        let anchor: Vec<f32> = theta
            .values
            .iter()
            .map(|v| v + (rng.next_f64() as f32 - 0.5) * 0.1)
            .collect();
        let grad: Vec<f32> = (0..n)
            .map(|i| 3.0 * fisher[i] * (theta.values[i] - anchor[i]))
            .collect();
        tensors.insert(
            format!("0.fisher.{path}"),
            HostTensor {
                shape: vec![n],
                values: fisher,
            },
        );
        tensors.insert(
            format!("0.anchor.{path}"),
            HostTensor {
                shape: vec![n],
                values: anchor,
            },
        );
        expected.insert(
            path,
            HostTensor {
                shape: theta.shape,
                values: grad,
            },
        );
    }
    let mut ewc = Ewc::<B>::new(ewc_config(FisherKind::Empirical, false, 1.0));
    let state = StrategyState {
        json: serde_json::json!({"terms": 1}),
        tensors,
    };
    Strategy::<B, Model>::load_state(&mut ewc, state, &Default::default()).unwrap();
    let b = batch(1);
    let out = model.forward_step(&b);
    let penalty =
        Strategy::<B, Model>::penalty(&ewc, &model, &b, &out).expect("a penalty once consolidated");
    let mut grads = cpt_continual::GradStore::<B>::default();
    grads.accumulate(&model, &penalty.backward());
    for (path, want) in &expected {
        let got = host(grads.get(path).unwrap().clone());
        let worst = got
            .iter()
            .zip(&want.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "{path}: max difference {worst}");
    }
}

#[test]
fn fisher_is_the_mean_squared_gradient() {
    let model = tiny_model(2);
    let batches: Vec<TokenBatch> = (0..3).map(|i| batch(40 + i)).collect();
    let mut queue = batches.clone().into_iter();
    let mut next = || -> cpt_continual::Result<TokenBatch> { Ok(queue.next().unwrap()) };
    let fisher = estimate_fisher::<B, Model>(&model, 3, &mut next).unwrap();
    // By hand, through burn's own gradient lookup on one parameter.
    let mut manual = vec![0.0f32; 32 * 16];
    for b in &batches {
        let grads = model.forward_step(b).loss.backward();
        let head = model.lm_head.as_ref().unwrap();
        let g: Vec<f32> = head
            .weight
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        manual
            .iter_mut()
            .zip(g)
            .for_each(|(m, g)| *m += g * g / 3.0);
    }
    let got = host(fisher["lm_head.weight"].clone());
    let worst = got
        .iter()
        .zip(&manual)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-7, "max difference {worst}");
    assert!(manual.iter().any(|&v| v > 0.0));
}

#[test]
fn online_ewc_decays_its_fisher_and_keeps_one_latest_anchor() {
    let mut model = tiny_model(3);
    let mut l2 = Ewc::<B>::new(ewc_config(FisherKind::Identity, true, 0.5));
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::after_experience(&mut l2, cx)
    })
    .unwrap();
    let mut moved = replace::<B, Model>(
        model.clone(),
        &cpt_continual::weights::map_weights::<B>(&snapshot::<B, Model>(&model), |_, w| {
            w.clone().add_scalar(1.0)
        }),
    );
    with_context(&mut moved, 1, |cx| {
        Strategy::<B, Model>::after_experience(&mut l2, cx)
    })
    .unwrap();
    assert_eq!(l2.fishers().len(), 1, "online keeps one term");
    let fisher = host(l2.fishers()[0]["model.norm.weight"].clone());
    assert!(
        fisher.iter().all(|&f| f == 1.5),
        "γ·1 + 1 = 1.5, got {fisher:?}"
    );
    let anchor = host(l2.anchors()[0]["model.norm.weight"].clone());
    assert!(
        anchor.iter().all(|&a| a == 2.0),
        "the anchor is the latest weights (norm 1 + 1)"
    );
    // Offline EWC keeps one term per experience instead.
    let mut offline = Ewc::<B>::new(ewc_config(FisherKind::Identity, false, 0.5));
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::after_experience(&mut offline, cx)
    })
    .unwrap();
    with_context(&mut moved, 1, |cx| {
        Strategy::<B, Model>::after_experience(&mut offline, cx)
    })
    .unwrap();
    assert_eq!(offline.fishers().len(), 2);
}

#[test]
fn kd_loss_and_its_gradient_vanish_when_student_equals_teacher() {
    let device = Default::default();
    let mut rng = SplitMix64::new(1);
    let values: Vec<f32> = (0..2 * 3 * 5).map(|_| rng.next_normal() as f32).collect();
    let logits = Tensor::<B, 1>::from_data(TensorData::new(values.clone(), [30]), &device)
        .reshape([2, 3, 5]);
    let student = logits.clone().require_grad();
    let loss = kd_loss(student.clone(), logits.clone(), 2.0);
    assert!(loss.clone().into_scalar().abs() < 1e-7);
    let grads = loss.backward();
    let g: Vec<f32> = student
        .grad(&grads)
        .unwrap()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    assert!(g.iter().all(|v| v.abs() < 1e-7), "{g:?}");
    // A different teacher gives a positive loss.
    let other = Tensor::<B, 1>::from_data(
        TensorData::new(values.iter().rev().copied().collect::<Vec<_>>(), [30]),
        &device,
    )
    .reshape([2, 3, 5]);
    assert!(kd_loss(logits, other, 2.0).into_scalar() > 0.01);
}

#[test]
fn the_distillation_teacher_is_frozen_during_an_experience() {
    let mut model = tiny_model(4);
    let mut distill = Distill::<B, Model>::new(1.0, 2.0);
    with_context(&mut model, 1, |cx| {
        Strategy::<B, Model>::before_experience(&mut distill, cx)
    })
    .unwrap();
    let teacher = distill
        .teacher_weights()
        .expect("a teacher from the second experience on");
    // Train the student a few steps with the distillation term.
    let mut optimizer = cpt_continual::AdamW::<B>::new(cpt_continual::AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.0,
    });
    for i in 0..3 {
        let b = batch(60 + i);
        let out = model.forward_step(&b);
        let penalty = Strategy::<B, Model>::penalty(&distill, &model, &b, &out).unwrap();
        let mut grads = cpt_continual::GradStore::<B>::default();
        grads.accumulate(&model, &(out.loss + penalty).backward());
        model = optimizer.step(model, &grads, 1e-2, |_| 1.0);
    }
    assert!(
        distill.teacher_weights().unwrap() == teacher,
        "the teacher changed"
    );
    assert!(
        named_tensors(&model.valid()) != teacher,
        "the student must have moved"
    );
}

/// `m` with every weight set to `v`.
fn set(m: &Model, v: f32) -> Model {
    let w = cpt_continual::weights::map_weights::<B>(&snapshot::<B, Model>(m), |_, t| {
        t.zeros_like().add_scalar(v)
    });
    replace::<B, Model>(m.clone(), &w)
}

#[test]
fn ema_matches_its_closed_form() {
    let mut model = tiny_model(5);
    let d = 0.9;
    let mut ema = Ema::<B>::new(d);
    model = set(&model, 1.0);
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::before_experience(&mut ema, cx)
    })
    .unwrap();
    let thetas = [2.0f32, 4.0, 8.0];
    for &theta in &thetas {
        model = set(&model, theta);
        with_context(&mut model, 0, |cx| {
            Strategy::<B, Model>::after_step(&mut ema, cx)
        })
        .unwrap();
    }
    // d³·θ0 + (1−d)(d²·θ1 + d·θ2 + θ3)
    let closed = d.powi(3) * 1.0 + (1.0 - d) * (d * d * 2.0 + d * 4.0 + 8.0);
    let got = host(ema.average().unwrap()["model.norm.weight"].clone());
    assert!(
        got.iter().all(|&v| (v as f64 - closed).abs() < 1e-5),
        "{got:?} vs {closed}"
    );
    // The end of the experience swaps the average in.
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::after_experience(&mut ema, cx)
    })
    .unwrap();
    let norm = &named_tensors(&model)["model.norm.weight"].values;
    assert!(norm.iter().all(|&v| (v as f64 - closed).abs() < 1e-5));
}

#[test]
fn interpolation_endpoints_are_exact() {
    let device = Default::default();
    let mut rng = SplitMix64::new(2);
    let a: Vec<f32> = (0..50).map(|_| rng.next_normal() as f32).collect();
    let b: Vec<f32> = (0..50).map(|_| rng.next_normal() as f32 * 1e3).collect();
    let t = |v: &Vec<f32>| Tensor::<Inner, 1>::from_data(TensorData::new(v.clone(), [50]), &device);
    assert_eq!(host(interpolate(t(&a), t(&b), 0.0)), a);
    assert_eq!(host(interpolate(t(&a), t(&b), 1.0)), b);
    // And the strategy: α = 0 restores the weights from before the experience.
    let mut model = tiny_model(6);
    let before = named_tensors(&model);
    let mut wise = Wise::<B>::new(0.0);
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::before_experience(&mut wise, cx)
    })
    .unwrap();
    model = tiny_model(7);
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::after_experience(&mut wise, cx)
    })
    .unwrap();
    assert!(named_tensors(&model) == before);
}

#[test]
fn a_group_with_multiplier_zero_is_bit_identical_after_training() {
    let _serial = backend_rng_lock();
    let slow: Vec<Box<dyn Strategy<B, Model>>> = vec![Box::new(SlowLearner::new(vec![
        ("lm_head.*".into(), 0.0),
        ("model.embed_tokens.*".into(), 0.1),
    ]))];
    let mut t = trainer(1, slow, 0);
    let before = named_tensors(t.model());
    assert_eq!(t.run(&mut SilentObserver).unwrap(), RunOutcome::Finished);
    let after = named_tensors(t.model());
    assert!(
        after["lm_head.weight"] == before["lm_head.weight"],
        "frozen head moved"
    );
    assert!(after["model.embed_tokens.weight"] != before["model.embed_tokens.weight"]);
    assert!(after["model.norm.weight"] != before["model.norm.weight"]);
}

fn lora_spec() -> cpt_models::linear::LoraSpec {
    cpt_models::linear::LoraSpec {
        rank: 2,
        alpha: 4.0,
        rslora: false,
        target_modules: vec!["q".into(), "v".into(), "down".into()],
        dropout: 0.0,
    }
}

#[test]
fn lora_trains_only_adapters_and_leaves_the_base_bit_identical() {
    let _serial = backend_rng_lock();
    use cpt_continual::strategies::{Lora, LoraMode};
    let base = named_tensors(&tiny_model(1));
    let lora: Vec<Box<dyn Strategy<B, Model>>> = vec![Box::new(Lora::<B, Model>::new(
        lora_spec(),
        LoraMode::Continue,
        3,
    ))];
    let mut t = trainer(1, lora, 0);
    assert_eq!(t.run(&mut SilentObserver).unwrap(), RunOutcome::Finished);
    let after = named_tensors(t.model());
    for (path, value) in &base {
        assert!(after[path] == *value, "base weight {path} moved");
    }
    let adapters: Vec<&String> = after.keys().filter(|k| k.contains(".lora_")).collect();
    assert_eq!(
        adapters.len(),
        2 * 3 * 2,
        "A and B on q, v, down in 2 layers"
    );
    assert!(
        after["model.layers.0.self_attn.q_proj.lora_b"]
            .values
            .iter()
            .any(|&v| v != 0.0),
        "B trained"
    );
}

#[test]
fn a_fresh_adapter_is_a_no_op_and_merging_preserves_the_function() {
    use cpt_core::AdapterModel;
    let model = tiny_model(2).valid();
    let b = batch(9);
    let logits = |m: &cpt_models::LlamaForCausalLM<Inner>| {
        m.forward_step(&b)
            .logits
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    };
    let base = logits(&model);
    let adapted = model.clone().with_adapters(&lora_spec(), 5);
    assert_eq!(
        logits(&adapted),
        base,
        "B = 0: the first step's logits equal the base model's"
    );
    // Give B values, then merge: the merged model computes the same function.
    let trained = cpt_core::params::map_named(adapted, |path, t| {
        if path.ends_with("lora_b") {
            t.ones_like().mul_scalar(0.05)
        } else {
            t
        }
    });
    let with_adapter = logits(&trained);
    assert!(
        max_diff(&with_adapter, &base) > 1e-3,
        "the adapter must change the logits"
    );
    let merged = trained.merge_adapters();
    assert!(!named_tensors(&merged).keys().any(|k| k.contains(".lora_")));
    let diff = max_diff(&logits(&merged), &with_adapter);
    assert!(diff <= 1e-5, "merged vs adapter logits differ by {diff}");
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_weight_ensemble_is_the_mean_of_its_samples() {
    use cpt_continual::strategies::WeightEnsemble;
    let mut model = tiny_model(5);
    let mut ensemble = WeightEnsemble::<B>::new(2);
    model = set(&model, 1.0);
    with_context(&mut model, 0, |cx| {
        Strategy::<B, Model>::before_experience(&mut ensemble, cx)
    })
    .unwrap();
    // Steps 1..=4 at weights 2, 3, 5, 9: samples at steps 2 and 4 (3 and 9) join the start (1).
    for v in [2.0f32, 3.0, 5.0, 9.0] {
        model = set(&model, v);
        with_context(&mut model, 0, |cx| {
            Strategy::<B, Model>::after_step(&mut ensemble, cx)
        })
        .unwrap();
    }
    let (average, samples) = ensemble.average().unwrap();
    assert_eq!(samples, 3);
    let got = host(average["model.norm.weight"].clone());
    assert!(
        got.iter().all(|&v| (v - 13.0 / 3.0).abs() < 1e-5),
        "{got:?}"
    );
}

#[test]
fn feature_distillation_on_a_reference_source() {
    use cpt_continual::strategies::{DistillConfig, FeatureDistance, feature_loss};
    let device = Default::default();
    let f = Tensor::<B, 1>::from_data(
        TensorData::new(
            (0..12).map(|i| i as f32 * 0.3 - 1.0).collect::<Vec<_>>(),
            [12],
        ),
        &device,
    )
    .reshape([3, 4]);
    for d in [FeatureDistance::L2, FeatureDistance::Cosine] {
        assert!(feature_loss(f.clone(), f.clone(), d).into_scalar().abs() < 1e-6);
        assert!(feature_loss(f.clone(), f.clone().neg(), d).into_scalar() > 0.1);
    }
    // With a reference source the terms are computed on reference batches, whatever the
    // current batch: a source that repeats one sequence gives the same penalty for any batch.
    struct Constant;
    impl cpt_core::ItemSource<cpt_core::TokenSequence> for Constant {
        fn next_item(&mut self) -> cpt_core::Result<cpt_core::TokenSequence> {
            Ok((0..SEQ as u32).collect::<Vec<u32>>().into())
        }
        fn cursor(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn seek(&mut self, _: &serde_json::Value) -> cpt_core::Result<()> {
            Ok(())
        }
    }
    let config = DistillConfig {
        alpha: 1.0,
        temperature: 2.0,
        feature_weight: 1.0,
        feature_distance: FeatureDistance::L2,
        reference_batch_size: 2,
    };
    let mut distill = Distill::<B, Model>::with_config(config, Some(Box::new(Constant)));
    let mut model = tiny_model(8);
    with_context(&mut model, 1, |cx| {
        Strategy::<B, Model>::before_experience(&mut distill, cx)
    })
    .unwrap();
    // Move the student so that the terms are non-zero.
    let moved = cpt_core::params::map_named(model.clone(), |_, t| t.mul_scalar(1.1));
    let penalty = |b: &TokenBatch| {
        let out = moved.forward_step(b);
        Strategy::<B, Model>::penalty(&distill, &moved, b, &out)
            .unwrap()
            .into_scalar()
    };
    let (p1, p2) = (penalty(&batch(1)), penalty(&batch(2)));
    assert!(p1 > 0.0);
    assert_eq!(p1, p2);
}

#[test]
fn lora_dropout_acts_only_in_training_and_follows_the_seed() {
    let _serial = backend_rng_lock();
    use cpt_core::AdapterModel;
    let mut spec = lora_spec();
    spec.dropout = 0.5;
    let trained = cpt_core::params::map_named(tiny_model(3).with_adapters(&spec, 2), |path, t| {
        if path.ends_with("lora_b") {
            t.ones_like().mul_scalar(0.05)
        } else {
            t
        }
    });
    let b = batch(4);
    let device: burn::tensor::Device<B> = Default::default();
    let logits = |m: &Model, seed: u64| {
        <B as burn::tensor::backend::Backend>::seed(&device, seed);
        m.forward_step(&b)
            .logits
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    };
    assert_eq!(
        logits(&trained, 1),
        logits(&trained, 1),
        "same seed, same masks"
    );
    assert_ne!(
        logits(&trained, 1),
        logits(&trained, 2),
        "dropout draws new masks"
    );
    // Evaluation (no autodiff) has no dropout: it equals the same adapter without dropout.
    let eval = trained
        .valid()
        .forward_step(&b)
        .logits
        .unwrap()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    spec.dropout = 0.0;
    let no_dropout =
        cpt_core::params::map_named(tiny_model(3).with_adapters(&spec, 2), |path, t| {
            if path.ends_with("lora_b") {
                t.ones_like().mul_scalar(0.05)
            } else {
                t
            }
        });
    let reference = no_dropout
        .valid()
        .forward_step(&b)
        .logits
        .unwrap()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    assert_eq!(eval, reference);
}
