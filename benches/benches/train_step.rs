//! One optimizer step of the quickstart model (forward, backward, AdamW), in tokens per second,
//! on every compiled backend.

use cpt_benches::{quickstart_model, quickstart_shape};
use cpt_continual::{AdamW, AdamWConfig, GradStore};
use cpt_core::TrainBackend;
use cpt_core::{TaskModel, TokenBatch};
use cpt_models::LlamaForCausalLM;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench_backend<B: TrainBackend>(c: &mut Criterion, name: &str, device: burn::tensor::Device<B>) {
    let config = quickstart_model();
    let (seq_len, batch_size) = quickstart_shape();
    let mut model: LlamaForCausalLM<B> = config.init_seeded(1, &device);
    let batch = TokenBatch::random(batch_size, seq_len, config.vocab_size, 1);
    let mut optimizer = AdamW::<B>::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.01,
    });
    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements((seq_len * batch_size) as u64));
    group.sample_size(10);
    group.bench_function(name, |b| {
        b.iter(|| {
            let loss = model.forward_step(&batch).loss;
            let mut grads = GradStore::<B>::default();
            grads.accumulate(&model, &loss.backward());
            model = optimizer.step(model.clone(), &grads, 1e-3, |_| 1.0);
            // Reading the loss forces the step to finish on asynchronous backends.
            grads.global_norm()
        })
    });
    group.finish();
}

fn train_step(c: &mut Criterion) {
    cpt_benches::keep_freed_pages();
    #[cfg(feature = "flex")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Flex>>(c, "flex", Default::default());
    #[cfg(feature = "wgpu")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Wgpu>>(c, "wgpu", Default::default());
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Cuda>>(c, "cuda", Default::default());
}

criterion_group!(benches, train_step);
criterion_main!(benches);
