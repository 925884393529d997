//! Records a run emits: one per logged step (`metrics.jsonl`) and one per evaluation
//! (`eval.jsonl`).

use crate::model::EvalScores;
use serde::{Deserialize, Serialize};

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Experience index (0-based).
    pub experience: usize,
    /// Experience name.
    pub experience_name: String,
    /// Step inside the experience (1-based: the number of updates applied so far in it).
    pub step: u64,
    /// Steps in this experience.
    pub experience_steps: u64,
    /// Steps over the whole run so far.
    pub global_step: u64,
    /// Mean training loss of the step (before strategy penalties).
    pub loss: f64,
    /// Loss including strategy penalties (what the gradient follows).
    pub total_loss: f64,
    /// Learning rate applied.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training units (tokens or samples) consumed over the whole run.
    pub tokens_seen: u64,
    /// Throughput of this step, units per second.
    pub tokens_per_sec: f64,
    /// The step's loss or gradient was not finite and its update was not applied.
    #[serde(default)]
    pub skipped: bool,
    /// Peak resident memory of the process so far, in MiB (Linux; `null` elsewhere, absent in
    /// logs written before it was recorded).
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
    /// Device memory in live tensors when the step ended, in MiB, as the accelerator's
    /// allocator reports it (`null` on the CPU and in logs written before it was recorded).
    #[serde(default)]
    pub device_memory_mib: Option<f64>,
    /// Device memory the accelerator's allocator holds (its pools, live or free) when the step
    /// ended, in MiB: what the device cannot give to another process (`null` on the CPU).
    #[serde(default)]
    pub device_reserved_mib: Option<f64>,
    /// Training units consumed over the whole run per source: an experience's stream by its
    /// name, a mixture's components as `experience/component`, items a strategy added to the
    /// batch (replay) as `(replay)`. The values sum to `tokens_seen`.
    #[serde(default)]
    pub tokens_by_source: std::collections::BTreeMap<String, u64>,
}

/// When an evaluation was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalPoint {
    /// Before any training: the baseline for forward transfer.
    Initial,
    /// Inside an experience, every `eval.every_steps` (the stability gap lives here).
    Periodic,
    /// At the end of an experience: one row of the eval matrix.
    ExperienceEnd,
}

/// One evaluation of the model on every experience's held-out set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Which kind of evaluation.
    pub point: EvalPoint,
    /// Experience being trained (or just finished); `None` for the initial evaluation.
    pub experience: Option<usize>,
    /// Step inside that experience.
    pub step: u64,
    /// Steps over the whole run.
    pub global_step: u64,
    /// Name of the matrix metric (`perplexity`, `accuracy`).
    pub metric: String,
    /// Scores per experience, in stream order.
    pub scores: Vec<EvalScores>,
}
