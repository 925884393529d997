//! Shared pieces of the trainer tests: a tiny LLaMA, a synthetic resumable token stream, and a
//! loss evaluator.

#![allow(dead_code)]

use burn::backend::{Autodiff, Flex};
use burn::tensor::ElementConversion;
use cpt_continual::{AdamWConfig, ContinualTrainer, Experience, Strategy, TrainerSettings};
use cpt_core::{
    EvalScores, Evaluator, ItemSource, ScheduleConfig, ScheduleKind, SplitMix64, TaskModel,
    TokenBatch, TokenSequence,
};
use cpt_models::{LlamaConfig, LlamaForCausalLM};

pub type B = Autodiff<Flex>;
pub type Inner = Flex;
pub type Model = LlamaForCausalLM<B>;

pub const VOCAB: usize = 32;
pub const SEQ: usize = 8;

pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: VOCAB,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        head_dim: None,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        attention_bias: false,
        mlp_bias: false,
        initializer_range: 0.1,
        rope_scaling: None,
    }
}

pub fn tiny_model(seed: u64) -> Model {
    tiny_config().init_seeded(seed, &Default::default())
}

/// A resumable stream of token sequences from one "domain": tokens drawn from a band of the
/// vocabulary with a simple repeating structure, so that a model can learn and forget it.
pub struct SyntheticSource {
    rng: SplitMix64,
    band: u32,
}

impl SyntheticSource {
    pub fn new(seed: u64, band: u32) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            band,
        }
    }
}

impl ItemSource<TokenSequence> for SyntheticSource {
    fn next_item(&mut self) -> cpt_core::Result<TokenSequence> {
        let start = self.rng.below(8) as u32;
        Ok((0..SEQ as u32)
            .map(|i| self.band * 8 + (start + i) % 8)
            .collect::<Vec<u32>>()
            .into())
    }
    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(self.rng).unwrap()
    }
    fn seek(&mut self, cursor: &serde_json::Value) -> cpt_core::Result<()> {
        self.rng = serde_json::from_value(cursor.clone()).unwrap();
        Ok(())
    }
}

/// Mean loss on fixed batches per experience; metric = perplexity.
pub struct LossEvaluator {
    pub sets: Vec<(String, TokenBatch)>,
}

impl Evaluator<LlamaForCausalLM<Inner>> for LossEvaluator {
    fn metric_name(&self) -> &str {
        "perplexity"
    }
    fn lower_is_better(&self) -> bool {
        true
    }
    fn evaluate(&mut self, model: &LlamaForCausalLM<Inner>) -> cpt_core::Result<Vec<EvalScores>> {
        Ok(self
            .sets
            .iter()
            .map(|(name, batch)| {
                let out = model.forward_step(batch);
                let loss = out.loss.into_scalar().elem::<f64>();
                EvalScores {
                    experience: name.clone(),
                    loss,
                    metric: loss.exp(),
                    count: out.count,
                    extras: Default::default(),
                }
            })
            .collect())
    }
}

pub fn settings(steps_between_checkpoints: u64) -> TrainerSettings {
    TrainerSettings {
        batch_size: 4,
        grad_accum_steps: 2,
        grad_clip_norm: 1.0,
        adamw: AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        schedule: ScheduleConfig {
            kind: ScheduleKind::Cosine,
            peak_lr: 1e-2,
            min_lr: 1e-3,
            warmup_steps: 2,
            decay_fraction: 0.2,
            rewarm: true,
        },
        eval_every_steps: 2,
        checkpoint_every_steps: steps_between_checkpoints,
        keep_last: 0,
        log_every_steps: 1,
        config_hash: "test".into(),
        non_finite: cpt_continual::NonFinitePolicy::Fail,
        loss_spike_factor: None,
        seed: 5,
        precision: cpt_core::Precision::Fp32,
        eval_precision: cpt_core::Precision::Fp32,
        loss_scaler: Default::default(),
        recompute_layers: false,
        device_memory: cpt_core::memory::no_device_memory,
    }
}

pub const STEPS: [u64; 3] = [5, 4, 3];

pub fn experiences() -> Vec<Experience<TokenSequence>> {
    (0..3)
        .map(|i| Experience {
            name: format!("domain{i}"),
            steps: STEPS[i],
            source: Box::new(SyntheticSource::new(100 + i as u64, i as u32))
                as Box<dyn ItemSource<TokenSequence>>,
        })
        .collect()
}

pub fn evaluator() -> LossEvaluator {
    let sets = (0..3)
        .map(|i| {
            let mut source = SyntheticSource::new(900 + i as u64, i as u32);
            let rows: Vec<Vec<u32>> = (0..4).map(|_| source.next_item().unwrap().tokens).collect();
            (format!("domain{i}"), TokenBatch::from_sequences(&rows))
        })
        .collect();
    LossEvaluator { sets }
}

pub fn trainer(
    seed: u64,
    strategies: Vec<Box<dyn Strategy<B, Model>>>,
    checkpoint_every: u64,
) -> ContinualTrainer<B, Model> {
    ContinualTrainer::new(
        tiny_model(seed),
        strategies,
        experiences(),
        Box::new(evaluator()),
        settings(checkpoint_every),
    )
}

/// burn's CPU backend keeps one global RNG, which the trainer re-seeds at every step and LoRA
/// dropout draws from: tests that train or draw hold this lock so parallel tests cannot
/// interleave their draws.
pub fn backend_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
