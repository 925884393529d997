//! The fused operations against their composites: flex's kernels give the same values and the
//! autodiff node the same gradients as burn differentiating the composite op by op.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};
use cpt_core::fused::{causal_softmax, cross_entropy};

type A = Autodiff<Flex>;

fn values<const D: usize>(t: Tensor<impl burn::tensor::backend::Backend, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// The values of a backend primitive (what the `FusedOps` methods take and return).
fn host(t: burn_flex::FlexTensor) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * w.abs().max(1.0),
            "element {i}: {g} vs {w}"
        );
    }
}

/// Softmax of `scale · x` with key `j` hidden from query `i` when `j > i + keys − queries`,
/// built from burn's ops (what the model computed before the fused op).
fn reference_causal_softmax<B: burn::tensor::backend::Backend>(
    x: Tensor<B, 3>,
    scale: f64,
) -> Tensor<B, 3> {
    let [_, queries, keys] = x.dims();
    let hidden =
        Tensor::<B, 2, Bool>::tril_mask([queries, keys], (keys - queries) as i64, &x.device());
    softmax(
        x.mul_scalar(scale)
            .mask_fill(hidden.unsqueeze::<3>(), f32::NEG_INFINITY),
        2,
    )
}

#[test]
fn causal_softmax_matches_the_composite_in_value_and_gradient() {
    let device = Default::default();
    // Square (training) and with 3 cached keys before 4 queries (incremental decoding).
    for (queries, keys) in [(5, 5), (4, 7)] {
        let x =
            Tensor::<Flex, 3>::random([6, queries, keys], Distribution::Normal(0.0, 3.0), &device);
        let upstream =
            Tensor::<Flex, 3>::random([6, queries, keys], Distribution::Normal(0.0, 1.0), &device);
        let scale = 0.35;

        let fused_in = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
        let fused = causal_softmax(fused_in.clone(), scale);
        let reference_in = Tensor::<A, 3>::from_inner(x).require_grad();
        let reference = reference_causal_softmax(reference_in.clone(), scale);
        assert_close(&values(fused.clone()), &values(reference.clone()), 1e-6);

        let upstream = Tensor::<A, 3>::from_inner(upstream);
        let fused_grads = (fused * upstream.clone()).sum().backward();
        let reference_grads = (reference * upstream).sum().backward();
        assert_close(
            &values(fused_in.grad(&fused_grads).unwrap()),
            &values(reference_in.grad(&reference_grads).unwrap()),
            1e-5,
        );
        // Hidden positions have exactly zero probability and zero gradient.
        let probs = values(causal_softmax(
            Tensor::<Flex, 3>::ones([1, queries, keys], &device),
            1.0,
        ));
        assert_eq!(
            probs[keys - queries + 1],
            0.0,
            "query 0 must not see key {}",
            keys - queries + 1
        );
    }
}

#[test]
fn cross_entropy_matches_the_composite_in_value_and_gradient() {
    let device = Default::default();
    let (rows, vocab) = (7, 300);
    let logits = Tensor::<Flex, 2>::random([rows, vocab], Distribution::Normal(0.0, 4.0), &device);
    let targets: Vec<i64> = vec![0, 299, 17, 17, 150, 3, 298];
    let targets = Tensor::<Flex, 1, Int>::from_data(TensorData::new(targets, [rows]), &device);
    let weights = Tensor::<A, 1>::from_data(
        TensorData::new(vec![1.0f32, 0.5, 0.0, 2.0, 1.0, 1.0, 3.0], [rows]),
        &device,
    );

    let fused_in = Tensor::<A, 2>::from_inner(logits.clone()).require_grad();
    let fused = cross_entropy(fused_in.clone(), Tensor::from_inner(targets.clone()));
    let reference_in = Tensor::<A, 2>::from_inner(logits).require_grad();
    let reference = log_softmax(reference_in.clone(), 1)
        .gather(
            1,
            Tensor::<A, 1, Int>::from_inner(targets).unsqueeze_dim::<2>(1),
        )
        .reshape([rows])
        .neg();
    assert_close(&values(fused.clone()), &values(reference.clone()), 1e-6);

    let fused_grads = (fused * weights.clone()).sum().backward();
    let reference_grads = (reference * weights).sum().backward();
    assert_close(
        &values(fused_in.grad(&fused_grads).unwrap()),
        &values(reference_in.grad(&reference_grads).unwrap()),
        1e-6,
    );
}

#[test]
fn cross_entropy_of_extreme_logits_stays_finite() {
    // A 49k vocabulary with one logit far above the rest: the log-sum-exp must not overflow
    // and the loss of the dominant target must be ~0.
    let device = Default::default();
    let vocab = 49_152;
    let mut row = vec![-30.0f32; vocab];
    row[123] = 80.0;
    let logits = Tensor::<Flex, 2>::from_data(TensorData::new(row, [1, vocab]), &device);
    let targets = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![123i64], [1]), &device);
    let loss = values(cross_entropy(logits, targets))[0];
    assert!(loss.is_finite() && loss.abs() < 1e-6, "{loss}");
}

#[test]
fn the_composite_defaults_agree_with_the_flex_kernels() {
    // What wgpu and cuda run (the trait's default methods) against flex's kernels, forward and
    // backward, on the same inputs.
    use cpt_core::fused::{FusedOps, composite};
    let device = Default::default();
    let float = |t: Tensor<Flex, 3>| t.into_primitive().tensor();
    let x = Tensor::<Flex, 3>::random([3, 4, 6], Distribution::Normal(0.0, 2.0), &device);
    let g = Tensor::<Flex, 3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let kernel = Flex::causal_softmax(float(x.clone()), 0.7);
    let default = composite::causal_softmax::<Flex>(float(x), 0.7);
    assert_close(&host(kernel.clone()), &host(default.clone()), 1e-6);
    assert_close(
        &host(Flex::causal_softmax_backward(kernel, float(g.clone()), 0.7)),
        &host(composite::causal_softmax_backward::<Flex>(
            default,
            float(g),
            0.7,
        )),
        1e-6,
    );

    let logits = Tensor::<Flex, 2>::random([5, 40], Distribution::Normal(0.0, 2.0), &device);
    let targets =
        Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![0i64, 39, 7, 7, 20], [5]), &device);
    let grad = Tensor::<Flex, 1>::random([5], Distribution::Normal(0.0, 1.0), &device);
    let l = logits.into_primitive().tensor();
    let (t, g) = (targets.into_primitive(), grad.into_primitive().tensor());
    let (kernel_loss, kernel_lse) = Flex::cross_entropy(l.clone(), t.clone());
    let (default_loss, default_lse) = composite::cross_entropy::<Flex>(l.clone(), t.clone());
    assert_close(&host(kernel_loss), &host(default_loss), 1e-6);
    assert_close(&host(kernel_lse.clone()), &host(default_lse.clone()), 1e-6);
    assert_close(
        &host(Flex::cross_entropy_backward(
            l.clone(),
            kernel_lse,
            t.clone(),
            g.clone(),
        )),
        &host(composite::cross_entropy_backward::<Flex>(
            l,
            default_lse,
            t,
            g,
        )),
        1e-6,
    );
}

#[test]
fn adamw_kernel_matches_the_composite_over_several_steps() {
    use cpt_core::fused::{AdamWScalars, FusedOps, composite};
    let device = Default::default();
    let flat = |t: Tensor<Flex, 1>| t.into_primitive().tensor();
    // Longer than one parallel chunk, so the split is exercised.
    let n = 40_000;
    for weight_decay in [0.0, 0.1] {
        let mut kernel = (
            flat(Tensor::random([n], Distribution::Normal(0.0, 1.0), &device)),
            flat(Tensor::zeros([n], &device)),
            flat(Tensor::zeros([n], &device)),
        );
        let mut reference = kernel.clone();
        for step in 1..=3 {
            let grad = flat(Tensor::random([n], Distribution::Normal(0.0, 0.1), &device));
            let scalars = AdamWScalars {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay,
                step,
            };
            kernel = Flex::adamw_step(kernel.0, grad.clone(), kernel.1, kernel.2, scalars);
            reference =
                composite::adamw_step::<Flex>(reference.0, grad, reference.1, reference.2, scalars);
        }
        assert_close(&host(kernel.0), &host(reference.0), 1e-6);
        assert_close(&host(kernel.1), &host(reference.1), 1e-6);
        assert_close(&host(kernel.2), &host(reference.2), 1e-6);
    }
}

#[test]
fn swiglu_matches_the_composite_in_value_and_gradients() {
    use burn::tensor::activation::silu;
    use cpt_core::fused::swiglu;
    let device = Default::default();
    let gate = Tensor::<Flex, 3>::random([2, 5, 37], Distribution::Normal(0.0, 4.0), &device);
    let up = Tensor::<Flex, 3>::random([2, 5, 37], Distribution::Normal(0.0, 1.0), &device);
    let upstream = Tensor::<A, 3>::from_inner(Tensor::random(
        [2, 5, 37],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let (fg, fu) = (
        Tensor::<A, 3>::from_inner(gate.clone()).require_grad(),
        Tensor::<A, 3>::from_inner(up.clone()).require_grad(),
    );
    let (rg, ru) = (
        Tensor::<A, 3>::from_inner(gate).require_grad(),
        Tensor::<A, 3>::from_inner(up).require_grad(),
    );
    let fused = swiglu(fg.clone(), fu.clone());
    let reference = silu(rg.clone()) * ru.clone();
    assert_close(&values(fused.clone()), &values(reference.clone()), 1e-6);
    let fused_grads = (fused * upstream.clone()).sum().backward();
    let reference_grads = (reference * upstream).sum().backward();
    for (f, r) in [(fg, rg), (fu, ru)] {
        assert_close(
            &values(f.grad(&fused_grads).unwrap()),
            &values(r.grad(&reference_grads).unwrap()),
            1e-6,
        );
    }
}

#[test]
fn fast_exp_is_within_a_few_ulp_of_libm() {
    use cpt_core::fused::flex::fast_exp;
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let (got, want) = (fast_exp(x) as f64, (x as f64).exp());
        worst = worst.max((got - want).abs() / want);
        x += 0.0137;
    }
    assert!(worst < 3e-7, "worst relative error {worst:e}");
    assert_eq!(fast_exp(0.0), 1.0);
    assert!(fast_exp(f32::NEG_INFINITY) < 1e-37);
    assert!(fast_exp(f32::NAN).is_nan());
}

#[test]
fn rms_norm_matches_the_composite_in_value_and_gradients() {
    use cpt_core::fused::{FusedOps, composite, rms_norm};
    let device = Default::default();
    // More rows than one ∂weight block (64), so the blocked sum over rows is exercised.
    let x = Tensor::<Flex, 3>::random([3, 50, 24], Distribution::Normal(0.5, 2.0), &device);
    let w = Tensor::<Flex, 1>::random([24], Distribution::Normal(1.0, 0.3), &device);
    let upstream = Tensor::<A, 3>::from_inner(Tensor::random(
        [3, 50, 24],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let eps = 1e-6;
    let (fx, fw) = (
        Tensor::<A, 3>::from_inner(x.clone()).require_grad(),
        Tensor::<A, 1>::from_inner(w.clone()).require_grad(),
    );
    let (rx, rw) = (
        Tensor::<A, 3>::from_inner(x.clone()).require_grad(),
        Tensor::<A, 1>::from_inner(w.clone()).require_grad(),
    );
    let fused = rms_norm(fx.clone(), fw.clone(), eps);
    // transformers' LlamaRMSNorm, op by op.
    let inv = (rx.clone().square().mean_dim(2) + eps).sqrt().recip();
    let reference = rx.clone() * inv * rw.clone().unsqueeze::<3>();
    assert_close(&values(fused.clone()), &values(reference.clone()), 1e-6);
    let fused_grads = (fused * upstream.clone()).sum().backward();
    let reference_grads = (reference * upstream).sum().backward();
    assert_close(
        &values(fx.grad(&fused_grads).unwrap()),
        &values(rx.grad(&reference_grads).unwrap()),
        1e-5,
    );
    assert_close(
        &values(fw.grad(&fused_grads).unwrap()),
        &values(rw.grad(&reference_grads).unwrap()),
        1e-5,
    );

    // The default (wgpu, cuda) against the kernel, forward and backward.
    let rows = x.reshape([150, 24]).into_primitive().tensor();
    let w = w.into_primitive().tensor();
    let g = Tensor::<Flex, 2>::random([150, 24], Distribution::Normal(0.0, 1.0), &device)
        .into_primitive()
        .tensor();
    let (ky, kinv) = Flex::rms_norm(rows.clone(), w.clone(), eps);
    let (dy, dinv) = composite::rms_norm::<Flex>(rows.clone(), w.clone(), eps);
    assert_close(&host(ky), &host(dy), 1e-6);
    let (kdx, kdw) = Flex::rms_norm_backward(rows.clone(), w.clone(), kinv, g.clone());
    let (ddx, ddw) = composite::rms_norm_backward::<Flex>(rows, w, dinv, g);
    assert_close(&host(kdx), &host(ddx), 1e-5);
    assert_close(&host(kdw), &host(ddw), 1e-5);
}
