//! Each fused operation of `cpt_core::fused` against the composite of burn ops it replaces,
//! forward and backward under autodiff on flex, at the middle benchmark shape (batch 8, seq 256,
//! hidden 256, 8 heads, FFN 688, vocab 8192). `cargo bench -p cpt-benches --bench fused_ops`.

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::activation::{log_softmax, silu, softmax};
    use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};
    use cpt_core::fused::{self, AdamWScalars, FusedOps, composite};
    use criterion::Criterion;

    type A = Autodiff<Flex>;

    /// Times `forward` plus the backward pass of the sum of its output.
    fn pair<const D: usize>(
        c: &mut Criterion,
        name: &str,
        input: Tensor<Flex, D>,
        fused: impl Fn(Tensor<A, D>) -> Tensor<A, D>,
        composite: impl Fn(Tensor<A, D>) -> Tensor<A, D>,
    ) {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for (label, op) in [
            ("fused", &fused as &dyn Fn(_) -> _),
            ("composite", &composite),
        ] {
            group.bench_function(label, |b| {
                b.iter(|| {
                    let x = Tensor::<A, D>::from_inner(input.clone()).require_grad();
                    let grads = op(x.clone()).sum().backward();
                    x.grad(&grads).expect("gradient")
                })
            });
        }
        group.finish();
    }

    pub fn fused_ops(c: &mut Criterion) {
        cpt_benches::keep_freed_pages();
        let device = Default::default();
        let normal = |std| Distribution::Normal(0.0, std);

        let rows = 8 * 256;
        let targets: Vec<i64> = (0..rows as i64).map(|i| (i * 7919) % 8192).collect();
        let targets = Tensor::<A, 1, Int>::from_data(TensorData::new(targets, [rows]), &device);
        pair(
            c,
            "cross_entropy_2048x8192",
            Tensor::<Flex, 2>::random([rows, 8192], normal(2.0), &device),
            |x| fused::cross_entropy(x, targets.clone()).unsqueeze::<2>(),
            |x| {
                log_softmax(x, 1)
                    .gather(1, targets.clone().unsqueeze_dim::<2>(1))
                    .neg()
            },
        );

        let hidden = Tensor::<Flex, 2, Bool>::tril_mask([256, 256], 0, &device);
        let hidden = Tensor::<A, 2, Bool>::from_inner(hidden).unsqueeze::<3>();
        pair(
            c,
            "causal_softmax_64x256x256",
            Tensor::<Flex, 3>::random([64, 256, 256], normal(1.0), &device),
            |x| fused::causal_softmax(x, 0.18),
            |x| {
                softmax(
                    x.mul_scalar(0.18)
                        .mask_fill(hidden.clone(), f32::NEG_INFINITY),
                    2,
                )
            },
        );

        let up = Tensor::<A, 2>::random([rows, 688], normal(1.0), &device);
        pair(
            c,
            "swiglu_2048x688",
            Tensor::<Flex, 2>::random([rows, 688], normal(1.0), &device),
            |x| fused::swiglu(x, up.clone()),
            |x| silu(x) * up.clone(),
        );

        let weight = Tensor::<A, 1>::ones([256], &device);
        pair(
            c,
            "rms_norm_2048x256",
            Tensor::<Flex, 2>::random([rows, 256], normal(1.0), &device),
            |x| fused::rms_norm(x, weight.clone(), 1e-6),
            |x| {
                let inv = (x.clone().square().mean_dim(1) + 1e-6).sqrt().recip();
                x * inv * weight.clone().unsqueeze::<2>()
            },
        );

        // AdamW over the middle model's ~5 M parameters as one flat tensor.
        let n = 5_000_000;
        let flat = |t: Tensor<Flex, 1>| t.into_primitive().tensor();
        let param = flat(Tensor::random([n], normal(1.0), &device));
        let grad = flat(Tensor::random([n], normal(0.01), &device));
        let moment = flat(Tensor::zeros([n], &device));
        let scalars = AdamWScalars {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 1,
        };
        let mut group = c.benchmark_group("adamw_5M");
        group.sample_size(10);
        group.bench_function("fused", |b| {
            b.iter(|| {
                Flex::adamw_step(
                    param.clone(),
                    grad.clone(),
                    moment.clone(),
                    moment.clone(),
                    scalars,
                )
            })
        });
        group.bench_function("composite", |b| {
            b.iter(|| {
                composite::adamw_step::<Flex>(
                    param.clone(),
                    grad.clone(),
                    moment.clone(),
                    moment.clone(),
                    scalars,
                )
            })
        });
        group.finish();
    }
}

#[cfg(feature = "flex")]
criterion::criterion_group!(benches, flex::fused_ops);
#[cfg(feature = "flex")]
criterion::criterion_main!(benches);

#[cfg(not(feature = "flex"))]
fn main() {
    eprintln!("fused_ops benchmarks the flex kernels: build with the `flex` feature");
}
