//! Parquet → tokens → packed sequences on the bundled Austen slice, in tokens per second. The
//! pipeline runs on the CPU whatever the backend, so one group covers every backend.

use cpt_benches::{quickstart_shape, repo_root};
use cpt_core::TokenBatch;
use cpt_data::{PackedSource, ParquetTextSource, TextSourceOptions, Tokenizer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

fn data_pipeline(c: &mut Criterion) {
    let root = repo_root().join("examples/data");
    let tokenizer =
        Arc::new(Tokenizer::from_file(root.join("tokenizer.json")).expect("bundled tokenizer"));
    let (seq_len, batch_size) = quickstart_shape();
    let batches = 64;
    let mut group = c.benchmark_group("data_pipeline");
    group.throughput(Throughput::Elements(
        (seq_len * batch_size * batches) as u64,
    ));
    group.sample_size(10);
    group.bench_function("parquet_tokenize_pack", |b| {
        b.iter(|| {
            // A fresh source each time, so every iteration reads, decodes and tokenizes.
            let text = ParquetTextSource::open(
                &[root.join("austen/train.parquet")],
                TextSourceOptions::shuffled(3),
            )
            .expect("bundled data");
            let mut source = PackedSource::new(text, tokenizer.clone(), seq_len).expect("packable");
            (0..batches)
                .map(|_| {
                    let rows: Vec<Vec<u32>> = (0..batch_size)
                        .map(|_| source.next_sequence().expect("sequence").tokens)
                        .collect();
                    TokenBatch::from_sequences(&rows).tokens.len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, data_pipeline);
criterion_main!(benches);
