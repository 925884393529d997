//! The run configuration: one TOML file, plain serde structs, unknown keys rejected.
//!
//! Model hyperparameters stay an opaque table here (`[model.config]`): the composition root
//! deserialises it into the concrete model's config, which rejects unknown keys in turn. So do
//! the strategies' settings (`[replay]`, `[ewc]`, ...): every top-level table that is not a
//! section below is kept as [`RunConfig::strategy_settings`], and cpt-continual's strategy
//! registry reads, checks and resolves each one (an unknown table is an error there).

use crate::error::{CoreError, Result};
use crate::precision::Precision;
pub use crate::recipes::{MetadataSetting, MetadataSource};
use crate::schedule::ScheduleConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A whole continual pre-training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Master seed: model init, data order, replay sampling all derive from it.
    pub seed: u64,
    /// The model to train.
    pub model: ModelSection,
    /// Tokenizer and packing settings.
    pub data: DataSection,
    /// The stream, in training order.
    pub experiences: Vec<ExperienceConfig>,
    /// Optimizer settings.
    pub train: TrainSection,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Continual-learning strategies, applied in order (e.g. `["replay"]`).
    #[serde(default = "default_strategies")]
    pub strategies: Vec<String>,
    /// Groups of the `slow_learner` strategy: `[[param_groups]] pattern = "...", lr_scale = 0.1`.
    #[serde(default)]
    pub param_groups: Vec<ParamGroup>,
    /// Evaluation plan.
    #[serde(default)]
    pub eval: EvalSection,
    /// Checkpoint plan.
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    /// Settings tables of the strategies, by strategy name (`[replay]` → `replay`), as written:
    /// each strategy owns its settings type (see cpt-continual's registry).
    #[serde(skip)]
    pub strategy_settings: BTreeMap<String, toml::Table>,
}

/// The top-level keys [`RunConfig`] reads itself; any other top-level table is a strategy's.
const SECTIONS: &[&str] = &[
    "seed",
    "model",
    "data",
    "experiences",
    "train",
    "schedule",
    "strategies",
    "param_groups",
    "eval",
    "checkpoint",
];

fn default_strategies() -> Vec<String> {
    vec!["naive".to_string()]
}

/// Which model to build: a fresh one from hyperparameters (`config`), or a Hugging Face
/// model folder to continue from (`from`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Architecture name, e.g. `llama`.
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Hyperparameters of a freshly initialised model, in the architecture's own (Hugging Face)
    /// field names.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// A Hugging Face model folder (`config.json`, safetensors weights) to start from.
    #[serde(default)]
    pub from: Option<PathBuf>,
    /// Function-preserving growth applied once to the starting model (`kind = "depth"` or
    /// `"width"`), read by the architecture (cpt-models' `grow::GrowSpec`).
    #[serde(default)]
    pub grow: Option<toml::Table>,
    /// Grow the embedding (and untied LM head) of `from` to the vocabulary of `data.tokenizer`
    /// at load (`[model.resize_vocab]`).
    #[serde(default)]
    pub resize_vocab: Option<ResizeVocab>,
    /// Grow the learned text position table of `from` (CLIP) at load
    /// (`[model.resize_text_positions]`).
    #[serde(default)]
    pub resize_text_positions: Option<ResizeTextPositions>,
}

/// `[model.resize_vocab]`: the model of `model.from` gets one new embedding row (and LM-head
/// row) per token the run's tokenizer has beyond the model's vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeVocab {
    /// How new rows start.
    pub init: VocabInit,
    /// The tokenizer the model was trained with (`subword_mean` encodes new tokens with it;
    /// every mode checks that the new tokenizer keeps its id→token map). Default: the
    /// `tokenizer.json` of `model.from`.
    #[serde(default)]
    pub old_tokenizer: Option<PathBuf>,
}

/// Initial value of a new vocabulary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VocabInit {
    /// The mean of all old rows.
    Mean,
    /// The mean of the rows of the old tokens the new token's text encodes to under the old
    /// tokenizer.
    SubwordMean,
    /// Normal with mean 0 and the model's `initializer_range`, from the run's seed.
    Normal,
}

/// `[model.resize_text_positions]`: a longer learned position table for CLIP's text tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeTextPositions {
    /// The new table length (the text config's `max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// How positions are filled.
    #[serde(default)]
    pub init: PositionInit,
    /// `interpolate` only: the first positions kept as they are (Long-CLIP keeps 20).
    #[serde(default)]
    pub keep_positions: usize,
}

/// How a longer position table is filled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionInit {
    /// Positions `keep_positions..` stretched linearly over the new length (position
    /// interpolation; Long-CLIP's knowledge-preserved stretching with `keep_positions = 20`).
    #[default]
    Interpolate,
    /// Old positions kept, the table repeated after them (as Longformer copies RoBERTa's).
    Copy,
}

fn default_architecture() -> String {
    "llama".to_string()
}

/// Tokenizer and sequence settings shared by every experience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Path of a Hugging Face `tokenizer.json` (default: the one in `model.from`).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per packed training sequence (language models).
    #[serde(default)]
    pub seq_len: usize,
    /// Name of the text column in every Parquet file.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Shuffle shard and row order each epoch (deterministically, from the seed).
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// A training row group that fails to decode: `fail` the run, or `quarantine` it (skip it,
    /// remember it in the data cursor, warn).
    #[serde(default)]
    pub bad_shards: BadShards,
    /// Image columns, preprocessing and augmentation (vision models).
    #[serde(default)]
    pub image: ImageDataSection,
    /// Metadata conditioning: a string column whose value is prepended to each document as
    /// `metadata + separator + text` (see `crate::recipes`).
    #[serde(default)]
    pub metadata_column: Option<String>,
    /// What joins metadata and text (default `"\n\n"`; only with metadata).
    #[serde(default)]
    pub metadata_separator: Option<String>,
    /// Whether metadata tokens count in the loss (default `false`; only with metadata).
    #[serde(default)]
    pub metadata_loss: Option<bool>,
}

/// How image Parquet files are read and turned into model inputs. Image size and channels come
/// from the model's config; this section holds what the model does not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageDataSection {
    /// Column of the images (PNG/JPEG bytes, or the `{bytes, path}` struct of HF datasets).
    pub image_column: String,
    /// Column of the integer class labels.
    pub label_column: String,
    /// Column of captions; absent: captions come from `caption_template` and class names.
    pub caption_column: Option<String>,
    /// Caption built from a class name, `{label}` standing for it.
    pub caption_template: String,
    /// Resize the shorter edge to this many pixels, then center-crop to the model's size
    /// (absent: resize straight to the model's size).
    pub resize_shortest_edge: Option<usize>,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f64>,
    /// Per-channel standard deviation divided by.
    pub std: Vec<f64>,
    /// Training augmentation: flip horizontally with probability 0.5.
    pub hflip: bool,
    /// Training augmentation: random-resized-crop with this area-scale range (e.g. [0.6, 1.0]).
    pub random_resized_crop: Option<[f64; 2]>,
    /// Caption tokens per image–text pair (padded or truncated, end-of-text kept).
    pub text_len: usize,
}

impl Default for ImageDataSection {
    fn default() -> Self {
        Self {
            image_column: "image".into(),
            label_column: "label".into(),
            caption_column: None,
            caption_template: "a photo of a {label}".into(),
            resize_shortest_edge: None,
            mean: vec![0.5],
            std: vec![0.5],
            hflip: false,
            random_resized_crop: None,
            text_len: 16,
        }
    }
}

/// The `data.bad_shards` policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadShards {
    /// Stop the run, naming the file and row group.
    #[default]
    Fail,
    /// Skip the row group from then on, and say so.
    Quarantine,
}

fn default_text_column() -> String {
    "text".to_string()
}

fn default_true() -> bool {
    true
}

/// One stage of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperienceConfig {
    /// Short name, used in the eval matrix header.
    pub name: String,
    /// Training data: Parquet files or globs.
    #[serde(default)]
    pub train: Vec<String>,
    /// Training data as a weighted mixture of sources (instead of `train`).
    #[serde(default)]
    pub mixture: Vec<MixtureComponent>,
    /// Held-out data: Parquet files or globs.
    pub eval: Vec<String>,
    /// Budget in optimizer steps.
    #[serde(default)]
    pub steps: Option<u64>,
    /// Budget in training tokens (converted to whole steps, rounding up).
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Image streams: keep only these labels (class-incremental splits); empty keeps all.
    #[serde(default)]
    pub classes: Vec<i64>,
    /// Image streams: the name of each label (index = label), for captions and zero-shot
    /// prompts.
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Tokens per packed sequence in this stage, training and its held-out set alike (default:
    /// `data.seq_len`): a longer-context stage ("Effective Long-Context Scaling of Foundation
    /// Models", 2023).
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// A new RoPE base from this stage on (language models).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// A new RoPE scaling rule from this stage on, as transformers writes `rope_scaling`
    /// (`{ rope_type = "yarn", factor = 4.0, ... }`; `rope_type = "default"` removes it). The
    /// architecture reads the table.
    #[serde(default)]
    pub rope_scaling: Option<toml::Table>,
    /// Upsample long documents: this fraction of the stage's training sequences is packed from
    /// documents of at least `long_doc_min_tokens` tokens, the rest from all documents.
    #[serde(default)]
    pub long_doc_ratio: Option<f64>,
    /// What counts as a long document for `long_doc_ratio` (default: the stage's `seq_len`).
    #[serde(default)]
    pub long_doc_min_tokens: Option<usize>,
    /// Metadata of this experience's documents: `false` (plain text: the cooldown), `true`
    /// (`data.metadata_column`), or a constant string; absent: `data.metadata_column` if set.
    #[serde(default)]
    pub metadata: Option<MetadataSetting>,
    /// Keep only rows of `train` for which this holds, e.g. `"score >= 0.7"`
    /// (see `crate::row_filter`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Train on a fixed seeded sample of this many documents of `train`, repeated in epochs.
    #[serde(default)]
    pub subset_docs: Option<usize>,
    /// With `subset_docs`: the most passes over the subset the budget may take.
    #[serde(default)]
    pub epochs: Option<u64>,
}

/// A held-out set evaluated at every evaluation but never trained on: zero-shot retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOutSet {
    /// Column name in reports.
    pub name: String,
    /// Parquet files or globs.
    pub files: Vec<String>,
    /// Keep only these labels; empty keeps all.
    #[serde(default)]
    pub classes: Vec<i64>,
    /// The name of each label (index = label).
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// One weighted source of a mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureComponent {
    /// Parquet files or globs.
    pub files: Vec<String>,
    /// Relative sampling weight (> 0).
    pub weight: f64,
    /// Name in per-source token counts (default: its index).
    #[serde(default)]
    pub name: Option<String>,
    /// Metadata of this component's documents (as an experience's `metadata`; absent: the
    /// experience's).
    #[serde(default)]
    pub metadata: Option<MetadataSetting>,
    /// Keep only this component's rows for which this holds, e.g. `"score >= 0.7"`.
    #[serde(default)]
    pub filter: Option<String>,
}

/// Optimizer (AdamW) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "default_one")]
    pub grad_accum_steps: usize,
    /// Clip the global gradient norm to this value (0 disables).
    #[serde(default = "default_clip")]
    pub grad_clip_norm: f64,
    /// Decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// AdamW β1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// AdamW β2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// AdamW ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Log a metrics line every this many steps.
    #[serde(default = "default_one_u64")]
    pub log_every_steps: u64,
    /// A NaN/Inf loss or gradient norm: `fail` (stop, naming the step) or `skip` the step.
    #[serde(default)]
    pub non_finite: NonFiniteSetting,
    /// Under `skip`: the most steps that may be skipped over the run.
    #[serde(default = "default_max_skipped")]
    pub max_skipped_steps: u64,
    /// Loss-spike guard: a step whose loss exceeds this factor times the running mean of recent
    /// losses is not applied (counted against `max_skipped_steps`). Off when absent.
    #[serde(default)]
    pub loss_spike_factor: Option<f64>,
    /// `fp32`, `bf16-mixed` or `f16-mixed` (f32 master weights and moments, linear-layer
    /// products in the low precision; see [`crate::precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// Activation checkpointing: `none` keeps every activation the backward pass reads;
    /// `balanced` keeps only the outputs of compute-heavy operations (matmuls, fused kernels)
    /// and recomputes the cheap element-wise ones during the backward pass; `layers` keeps each
    /// LLaMA decoder layer's input and recomputes the layer in the backward pass.
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
}

/// The `train.activation_checkpointing` setting: which activations the backward pass keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationCheckpointing {
    /// Keep every activation (burn's `NoCheckpointing`).
    #[default]
    None,
    /// Recompute memory-bound operations in the backward pass (burn's `BalancedCheckpointing`).
    Balanced,
    /// Keep each decoder layer's input and recompute the layer in the backward pass
    /// (`cpt_core::fused::recompute` on burn's `BalancedCheckpointing`).
    Layers,
}

impl ActivationCheckpointing {
    /// The setting's name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Balanced => "balanced",
            Self::Layers => "layers",
        }
    }
}

impl std::str::FromStr for ActivationCheckpointing {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [Self::None, Self::Balanced, Self::Layers]
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("`{s}` is not an activation checkpointing (none, balanced, layers)")
            })
    }
}

/// The `train.non_finite` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFiniteSetting {
    /// Stop the run.
    #[default]
    Fail,
    /// Skip the step, up to `max_skipped_steps`.
    Skip,
}

fn default_max_skipped() -> u64 {
    10
}

fn default_one() -> usize {
    1
}
fn default_one_u64() -> u64 {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}

/// One learning-rate group of the `slow_learner` strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// Parameter-path pattern (`*` matches any run of characters).
    pub pattern: String,
    /// Learning-rate multiplier (0 freezes).
    pub lr_scale: f64,
}

/// When and how much to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Also evaluate every this many steps inside an experience (0: only at its end).
    pub every_steps: u64,
    /// Held-out sequences per experience.
    pub max_sequences: usize,
    /// Sequences per evaluation batch.
    pub batch_size: usize,
    /// Held-out images per experience (vision).
    pub max_images: usize,
    /// Training images per experience that the frozen-feature probes (nearest-mean classifier,
    /// ridge linear probe) fit on; 0 turns the probes off.
    pub support_images: usize,
    /// Which classes a probe's images compete among: `per_set` (each experience's own) or
    /// `all_sets` (the classes of every experience: class-incremental).
    pub probe_scope: String,
    /// Sets never trained on, evaluated alongside the stream (zero-shot retention).
    pub held_out: Vec<HeldOutSet>,
    /// Downstream tasks (lm-evaluation-harness task files) scored at every evaluation beside
    /// perplexity (language models).
    pub tasks: Vec<EvalTask>,
    /// Precision of evaluation forward passes (default: `train.precision`).
    pub precision: Option<Precision>,
    /// Score eval sets with each experience's metadata prefix (its tokens masked), as trained;
    /// `false`: plain text, as at deployment.
    pub metadata: bool,
}

/// A downstream task of `[[eval.tasks]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalTask {
    /// Column name in reports (default: the file's `task`).
    #[serde(default)]
    pub name: Option<String>,
    /// The task file: lm-evaluation-harness YAML over local data.
    pub file: PathBuf,
    /// Score only the first this many documents.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Few-shot examples per prompt (default: the file's `num_fewshot`, else 0).
    #[serde(default)]
    pub num_fewshot: Option<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every_steps: 0,
            max_sequences: 64,
            batch_size: 8,
            max_images: 256,
            support_images: 0,
            probe_scope: "per_set".into(),
            held_out: Vec::new(),
            tasks: Vec::new(),
            precision: None,
            metadata: false,
        }
    }
}

/// When to checkpoint and how many to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Checkpoint every this many steps (0: only at experience ends).
    pub every_steps: u64,
    /// Keep the newest this many checkpoints (0 keeps all).
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every_steps: 0,
            keep_last: 2,
        }
    }
}

impl RunConfig {
    /// Read a config file, apply `key.path=value` overrides, parse and validate it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Self::parse(&text, path, overrides)
    }

    /// Parse config text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Self> {
        let config_error = |message: String| CoreError::Config {
            path: path.into(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| config_error(one_line(&e.to_string())))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        // Other top-level tables are strategies' settings; anything else unknown stays in the
        // table for serde to reject by name.
        let settings_keys: Vec<String> = table
            .iter()
            .filter(|(key, value)| !SECTIONS.contains(&key.as_str()) && value.is_table())
            .map(|(key, _)| key.clone())
            .collect();
        let mut strategy_settings = BTreeMap::new();
        for key in settings_keys {
            if let Some(toml::Value::Table(t)) = table.remove(&key) {
                strategy_settings.insert(key, t);
            }
        }
        let mut config: RunConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| config_error(one_line(&e.to_string())))?;
        config.strategy_settings = strategy_settings;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML text, for the run directory: the sections, then the strategies'
    /// settings tables.
    pub fn to_toml(&self) -> String {
        let mut text = toml::to_string_pretty(self).expect("a parsed config serialises");
        if !self.strategy_settings.is_empty() {
            text.push('\n');
            text += &toml::to_string_pretty(&self.strategy_settings)
                .expect("settings tables serialise");
        }
        text
    }

    /// Check values that serde cannot, naming the key.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: String, message: &str| {
            Err(CoreError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        match (&self.model.config, &self.model.from) {
            (None, None) => {
                return invalid(
                    "model.config".into(),
                    "give `config` (a fresh model) or `from` (a model folder)",
                );
            }
            (Some(_), Some(_)) => {
                return invalid("model.from".into(), "give `config` or `from`, not both");
            }
            _ => {}
        }
        if self.model.from.is_none() {
            if self.model.resize_vocab.is_some() {
                return invalid(
                    "model.resize_vocab".into(),
                    "resizes the model of `model.from`; a fresh model takes the tokenizer's size in `model.config`",
                );
            }
            if self.model.resize_text_positions.is_some() {
                return invalid(
                    "model.resize_text_positions".into(),
                    "resizes the model of `model.from`; a fresh model takes its length in `model.config`",
                );
            }
        }
        if self.experiences.is_empty() {
            return invalid(
                "experiences".into(),
                "the stream needs at least one experience",
            );
        }
        // 0 leaves it unset (image models); a language model's architecture requires it.
        if self.data.seq_len == 1 {
            return invalid("data.seq_len".into(), "must be at least 2");
        }
        if !["per_set", "all_sets"].contains(&self.eval.probe_scope.as_str()) {
            return invalid("eval.probe_scope".into(), "must be `per_set` or `all_sets`");
        }
        if self.train.batch_size == 0 {
            return invalid("train.batch_size".into(), "must be at least 1");
        }
        if self.train.grad_accum_steps == 0 {
            return invalid("train.grad_accum_steps".into(), "must be at least 1");
        }
        for (i, e) in self.experiences.iter().enumerate() {
            let key = |k: &str| format!("experiences[{i}].{k}");
            match (e.train.is_empty(), e.mixture.is_empty()) {
                (true, true) => return invalid(key("train"), "give `train` files or a `mixture`"),
                (false, false) => {
                    return invalid(key("mixture"), "give `train` or `mixture`, not both");
                }
                _ => {}
            }
            if e.mixture
                .iter()
                .any(|c| !(c.weight.is_finite() && c.weight > 0.0))
            {
                return invalid(key("mixture.weight"), "weights must be positive numbers");
            }
            match (e.steps, e.tokens) {
                (None, None) => return invalid(key("steps"), "give a budget: `steps` or `tokens`"),
                (Some(_), Some(_)) => {
                    return invalid(key("tokens"), "give `steps` or `tokens`, not both");
                }
                (Some(0), _) | (_, Some(0)) => {
                    return invalid(key("steps"), "the budget must be positive");
                }
                _ => {}
            }
            if e.eval.is_empty() {
                return invalid(key("eval"), "every experience needs held-out data");
            }
            if e.seq_len.is_some_and(|n| n < 2) {
                return invalid(key("seq_len"), "must be at least 2");
            }
            if e.rope_theta.is_some_and(|t| !(t.is_finite() && t > 1.0)) {
                return invalid(key("rope_theta"), "must be a number above 1");
            }
            if let Some(ratio) = e.long_doc_ratio {
                if !(ratio > 0.0 && ratio <= 1.0) {
                    return invalid(key("long_doc_ratio"), "must be in (0, 1]");
                }
                if !e.mixture.is_empty() || e.subset_docs.is_some() {
                    return invalid(
                        key("long_doc_ratio"),
                        "applies to `train` files, not to a `mixture` or a `subset_docs` subset",
                    );
                }
            }
            if e.long_doc_min_tokens.is_some() && e.long_doc_ratio.is_none() {
                return invalid(key("long_doc_min_tokens"), "needs `long_doc_ratio`");
            }
        }
        let mut names: Vec<&str> = self.experiences.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return invalid(
                "experiences.name".into(),
                &format!("`{}` is used twice", w[0]),
            );
        }
        self.validate_recipes()?;
        self.schedule.validate()
    }

    /// The tokenizer file: `data.tokenizer`, or `tokenizer.json` inside `model.from`. Only
    /// meaningful when the model reads text (its architecture then requires one of them).
    pub fn tokenizer_path(&self) -> PathBuf {
        match (&self.data.tokenizer, &self.model.from) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) => dir.join("tokenizer.json"),
            (None, None) => unreachable!("validate() requires one of them"),
        }
    }

    /// Tokens per packed sequence in experience `index`: its own `seq_len`, else `data.seq_len`.
    pub fn seq_len_of(&self, index: usize) -> usize {
        self.experiences[index].seq_len.unwrap_or(self.data.seq_len)
    }

    /// Tokens consumed by one optimizer step of experience `index`.
    pub fn tokens_per_step(&self, index: usize) -> u64 {
        (self.train.batch_size * self.train.grad_accum_steps * self.seq_len_of(index)) as u64
    }

    /// Each experience's budget in optimizer steps.
    pub fn experience_steps(&self) -> Vec<u64> {
        self.experiences
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.steps
                    .unwrap_or_else(|| e.tokens.unwrap_or(0).div_ceil(self.tokens_per_step(i)))
            })
            .collect()
    }
}

/// Apply one `a.b.c=value` override (`experiences[1].steps=50` indexes arrays of tables); the
/// value is parsed as TOML, or taken as a string.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let bad = |message: String| CoreError::Config {
        path: "--set".into(),
        message,
    };
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| bad(format!("`{item}`: expected key.path=value")))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut node = table;
    for part in parents {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => {
                let index = rest
                    .trim_end_matches(']')
                    .parse::<usize>()
                    .map_err(|_| bad(format!("`{key}`: bad index in `{part}`")))?;
                (name, Some(index))
            }
            None => (*part, None),
        };
        let entry = node
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let entry = match index {
            Some(i) => entry
                .as_array_mut()
                .and_then(|a| a.get_mut(i))
                .ok_or_else(|| bad(format!("`{key}`: `{name}` has no element {i}")))?,
            None => entry,
        };
        node = entry
            .as_table_mut()
            .ok_or_else(|| bad(format!("`{key}`: `{part}` is not a table")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
seed = 1
[model]
architecture = "llama"
config = { vocab_size = 8 }
[data]
tokenizer = "t.json"
seq_len = 4
[[experiences]]
name = "a"
train = ["a.parquet"]
eval = ["a_eval.parquet"]
tokens = 100
[[experiences]]
name = "b"
train = ["b.parquet"]
eval = ["b_eval.parquet"]
steps = 7
[train]
batch_size = 2
grad_accum_steps = 3
[schedule]
kind = "wsd"
peak_lr = 0.01
"#;

    fn parse(text: &str, overrides: &[&str]) -> Result<RunConfig> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::parse(text, Path::new("run.toml"), &overrides)
    }

    #[test]
    fn defaults_and_budgets() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.strategies, vec!["naive"]);
        assert_eq!(c.data.text_column, "text");
        assert_eq!(c.tokens_per_step(0), 24);
        // 100 tokens at 24 per step round up to 5 steps.
        assert_eq!(c.experience_steps(), vec![5, 7]);
        // A stage's own `seq_len` sets its tokens per step, and so its steps.
        let c = parse(MINIMAL, &["experiences[0].seq_len=8"]).unwrap();
        assert_eq!((c.seq_len_of(0), c.seq_len_of(1)), (8, 4));
        assert_eq!(c.tokens_per_step(0), 48);
        assert_eq!(c.experience_steps()[0], 3);
    }

    #[test]
    fn activation_checkpointing_defaults_to_none_and_names_bad_values() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(
            c.train.activation_checkpointing,
            ActivationCheckpointing::None
        );
        let c = parse(MINIMAL, &["train.activation_checkpointing=\"balanced\""]).unwrap();
        assert_eq!(
            c.train.activation_checkpointing,
            ActivationCheckpointing::Balanced
        );
        let err = parse(MINIMAL, &["train.activation_checkpointing=\"full\""])
            .unwrap_err()
            .to_string();
        assert!(err.contains("full"), "{err}");
        assert_eq!("balanced".parse(), Ok(ActivationCheckpointing::Balanced));
        assert_eq!("layers".parse(), Ok(ActivationCheckpointing::Layers));
        assert!("full".parse::<ActivationCheckpointing>().is_err());
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let err = parse(
            &MINIMAL.replace("seq_len = 4", "seq_len = 4\nseq_length = 5"),
            &[],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("run.toml") && msg.contains("seq_length"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn overrides_reach_nested_keys_and_array_elements() {
        let c = parse(
            MINIMAL,
            &[
                "train.batch_size=5",
                "experiences[1].steps=9",
                "strategies=[\"replay\"]",
            ],
        )
        .unwrap();
        assert_eq!(c.train.batch_size, 5);
        assert_eq!(c.experience_steps()[1], 9);
        assert_eq!(c.strategies, vec!["replay"]);
        let err = parse(MINIMAL, &["experiences[5].steps=1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no element 5"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (MINIMAL.replace("steps = 7", ""), "experiences[1].steps"),
            (
                MINIMAL.replace("tokens = 100", "tokens = 100\nsteps = 3"),
                "experiences[0].tokens",
            ),
            (
                MINIMAL.replace("seq_len = 4", "seq_len = 1"),
                "data.seq_len",
            ),
            (
                MINIMAL.replace("name = \"b\"", "name = \"a\""),
                "experiences.name",
            ),
            (
                MINIMAL.replace("peak_lr = 0.01", "peak_lr = -1.0"),
                "schedule.peak_lr",
            ),
        ];
        for (text, key) in cases {
            let msg = parse(&text, &[]).unwrap_err().to_string();
            assert!(msg.contains(key), "expected `{key}` in: {msg}");
        }
    }

    #[test]
    fn the_resolved_config_round_trips() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(parse(&c.to_toml(), &[]).unwrap(), c);
    }
}
