//! `cpt bench`: training and forward throughput of LLaMA at fixed shapes, comparable line by line
//! with `scripts/bench_vs_pytorch.py` (same shapes, same optimizer, same clipping).
//!
//! The step is the trainer's: forward, backward, gradients collected by path, the global norm
//! read to the host, clipping, our AdamW. Weights are seeded, tokens are seeded random ids: the
//! work per step does not depend on the data.

use crate::backend::BackendJob;
use anyhow::Result;
use burn::module::{AutodiffModule, Module};
use clap::ValueEnum;
use cpt_continual::{AdamW, AdamWConfig, GradStore};
use cpt_core::TrainBackend;
use cpt_core::config::ActivationCheckpointing;
use cpt_core::fused::recompute;
use cpt_core::precision::autocast;
use cpt_core::{Precision, TaskModel, TokenBatch};
use cpt_models::generate::{Sampling, generate};
use cpt_models::{LlamaConfig, LlamaForCausalLM};
use serde::Serialize;
use std::time::Instant;

/// The benchmark shapes of the speed issue (kept in step with `scripts/bench_vs_pytorch.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchShape {
    /// The quickstart model: vocab 1024, hidden 64, 2 layers, seq 128, batch 16.
    Quick,
    /// vocab 8192, hidden 256, 4 layers, 8 heads / 4 KV, FFN 688, seq 256, batch 8.
    Middle,
    /// SmolLM2-135M's shape: vocab 49152, hidden 576, 30 layers, 9 heads / 3 KV, FFN 1536,
    /// seq 256, batch 4.
    #[value(name = "135m")]
    #[serde(rename = "135m")]
    M135,
}

impl BenchShape {
    /// The model and the (sequence length, batch size) of one step.
    fn model_and_batch(self) -> (LlamaConfig, usize, usize) {
        let (vocab, hidden, layers, heads, kv, ffn, seq, batch) = match self {
            Self::Quick => (1024, 64, 2, 4, 2, 172, 128, 16),
            Self::Middle => (8192, 256, 4, 8, 4, 688, 256, 8),
            Self::M135 => (49152, 576, 30, 9, 3, 1536, 256, 4),
        };
        let config = LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: ffn,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            head_dim: None,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 2048,
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
            initializer_range: 0.02,
            rope_scaling: None,
        };
        (config, seq, batch)
    }
}

/// What `cpt bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// Full optimizer steps.
    Train,
    /// Forward passes without gradients (as `cpt eval`/`cpt score` run them).
    Forward,
    /// Greedy decoding with the key/value cache (as `cpt generate` runs it): the first
    /// sequence of the batch as the prompt, [`GENERATED_TOKENS`] new tokens per step, counted
    /// as the tokens of a step.
    Generate,
}

/// New tokens per `generate` step (the same in `scripts/bench_vs_pytorch.py`).
pub const GENERATED_TOKENS: usize = 64;

/// `cpt bench`.
pub struct BenchJob {
    pub shape: BenchShape,
    pub mode: BenchMode,
    pub steps: usize,
    pub warmup: usize,
    /// The autodiff checkpoint strategy the job was dispatched with (reported, not applied here).
    pub checkpointing: ActivationCheckpointing,
    /// Precision of the forward (and backward) passes. `f16-mixed` times the low-precision
    /// products without loss scaling, whose cost is one scalar per step.
    pub precision: Precision,
    /// Reads the device memory after the timed steps (`null` on the CPU).
    pub device_memory: cpt_core::memory::DeviceMemoryProbe,
}

/// A `--precision` value, spelled as `train.precision`.
pub fn parse_precision(value: &str) -> std::result::Result<Precision, String> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| format!("`{value}`: expected fp32, bf16-mixed or f16-mixed"))
}

/// One line of JSON, the same keys as the PyTorch script prints.
#[derive(Serialize)]
struct BenchResult {
    engine: String,
    shape: BenchShape,
    mode: BenchMode,
    checkpointing: &'static str,
    precision: &'static str,
    threads: usize,
    steps: usize,
    /// Parameters of the model (tied embeddings counted once): the N of 6·N FLOPs per token.
    parameters: usize,
    tokens_per_sec: f64,
    peak_rss_mib: Option<f64>,
    /// Device memory in live tensors after the last step, in MiB (`null` on the CPU).
    device_memory_mib: Option<f64>,
    /// Device memory held by the allocator after the last step, in MiB (`null` on the CPU).
    device_reserved_mib: Option<f64>,
}

impl BackendJob for BenchJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<()> {
        crate::backend::check_precision::<B>(&device, self.precision, "--precision")?;
        let (config, seq, batch_size) = self.shape.model_and_batch();
        let batch = TokenBatch::random(batch_size, seq, config.vocab_size, 1);
        let mut model: LlamaForCausalLM<B> = config.init_seeded(1, &device);
        let mut optimizer = AdamW::<B>::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
        });
        let precision = self.precision;
        let recompute_layers = self.checkpointing == ActivationCheckpointing::Layers;
        let mut step = |model: LlamaForCausalLM<B>| -> LlamaForCausalLM<B> {
            let _scope = autocast(precision);
            let _recompute = recompute::layers(recompute_layers);
            match self.mode {
                BenchMode::Forward => {
                    let inference = model.valid();
                    let out = inference.forward_step(&batch);
                    // Reading a value forces the work to finish on asynchronous backends.
                    let _ = out.loss.into_scalar();
                    model
                }
                BenchMode::Generate => {
                    let inference = model.valid();
                    let prompt = batch.sequence(0);
                    let new = generate(
                        &inference,
                        prompt,
                        GENERATED_TOKENS,
                        &Sampling::greedy(),
                        None,
                    );
                    assert_eq!(new.len(), GENERATED_TOKENS);
                    model
                }
                BenchMode::Train => {
                    let loss = model.forward_step(&batch).loss;
                    let _ = loss.clone().into_scalar();
                    let mut grads = GradStore::<B>::default();
                    grads.accumulate(&model, &loss.backward());
                    let norm = grads.global_norm();
                    if norm > 1.0 {
                        grads.scale(1.0 / (norm + 1e-6));
                    }
                    optimizer.step(model, &grads, 1e-4, |_| 1.0)
                }
            }
        };
        for _ in 0..self.warmup {
            model = step(model);
        }
        let started = Instant::now();
        for _ in 0..self.steps {
            model = step(model);
        }
        let seconds = started.elapsed().as_secs_f64();
        let device_memory = (self.device_memory)();
        let tokens_per_step = match self.mode {
            BenchMode::Generate => GENERATED_TOKENS,
            BenchMode::Train | BenchMode::Forward => batch_size * seq,
        };
        let result = BenchResult {
            engine: format!("cpt {}", env!("CARGO_PKG_VERSION")),
            shape: self.shape,
            mode: self.mode,
            checkpointing: self.checkpointing.name(),
            precision: self.precision.name(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            steps: self.steps,
            parameters: model.num_params(),
            tokens_per_sec: (self.steps * tokens_per_step) as f64 / seconds,
            peak_rss_mib: cpt_core::memory::peak_rss_mib(),
            device_memory_mib: device_memory.map(|m| m.in_use_mib()),
            device_reserved_mib: device_memory.map(|m| m.reserved_mib()),
        };
        println!("{}", serde_json::to_string(&result)?);
        Ok(())
    }
}
