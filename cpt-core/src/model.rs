//! The model trait every trainable cpt model implements, and what a training step returns.

use crate::batch::ImageBatch;
use crate::error::Result;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Serialize, de::DeserializeOwned};

/// A batch a model trains on: a list of items (sequences, images, image–text pairs) that
/// replay buffers and mixtures can take apart and put back together without knowing the model.
pub trait Batch: Clone + Send + Sized + 'static {
    /// One training example. Serialisable so that replay buffers can be checkpointed.
    type Item: Clone + Send + Serialize + DeserializeOwned + 'static;

    /// Stack items into a batch.
    fn from_items(items: Vec<Self::Item>) -> Self;
    /// The items of this batch, in order.
    fn into_items(self) -> Vec<Self::Item>;
    /// Number of items.
    fn len(&self) -> usize;
    /// `true` when the batch holds no item.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Units of training signal in this batch (tokens for text, samples for images): what a
    /// token budget counts and what throughput is reported in.
    fn units(&self) -> usize;
    /// `item`, from another stage of the stream (a replayed one), made to fit a batch whose
    /// first item is `like`, drawing `more` such items if it needs them. The default keeps it
    /// as it is; token sequences of another length are joined or cut (see [`TokenBatch`]).
    ///
    /// [`TokenBatch`]: crate::TokenBatch
    fn fit(
        item: Self::Item,
        _like: &Self::Item,
        _more: &mut dyn FnMut() -> Self::Item,
    ) -> Self::Item {
        item
    }
}

/// What one forward pass over a batch produces.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// Mean training loss over the batch, shape `[1]`.
    pub loss: Tensor<B, 1>,
    /// Logits used by the loss, `[batch, positions, classes]`, for logit distillation.
    pub logits: Option<Tensor<B, 3>>,
    /// Pooled features `[batch, width]`, for feature distillation and prototype classifiers.
    pub features: Option<Tensor<B, 2>>,
    /// Number of tokens or samples the mean loss averages over.
    pub count: usize,
}

/// A model that computes its own training objective on its own batch type.
pub trait TaskModel<B: Backend>: Module<B> {
    /// The batch this model trains on.
    type Batch: Batch;

    /// Forward pass and objective on `batch`, on the model's device.
    fn forward_step(&self, batch: &Self::Batch) -> StepOutput<B>;
}

/// An endless, resumable stream of training items for one experience.
pub trait ItemSource<I>: Send {
    /// The next item; streams loop over their data in epochs and never run dry.
    fn next_item(&mut self) -> Result<I>;
    /// Position of the stream, enough to reproduce every following item.
    fn cursor(&self) -> serde_json::Value;
    /// Move to a position previously returned by [`ItemSource::cursor`].
    fn seek(&mut self, cursor: &serde_json::Value) -> Result<()>;
    /// The part of the stream the last item came from (a mixture's component), for per-source
    /// token accounting; `None` for a stream of one part, which is named after its experience.
    fn last_part(&self) -> Option<&str> {
        None
    }
}

/// Scores of a model on one experience's held-out set.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalScores {
    /// Name of the experience whose eval set was scored.
    pub experience: String,
    /// Mean loss per token (or per sample); NaN where a set has none (a downstream task scored
    /// by accuracy), written as `null` in JSON.
    #[serde(deserialize_with = "nan_when_null")]
    pub loss: f64,
    /// The matrix metric (perplexity for language models, accuracy for classifiers).
    pub metric: f64,
    /// Units scored.
    pub count: usize,
    /// Further metrics of this set beside the matrix metric (`nmc_accuracy`, `recall@5`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extras: std::collections::BTreeMap<String, f64>,
}

/// serde_json writes NaN as `null`; read it back as NaN, so a record round-trips.
fn nan_when_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Evaluates a model on the held-out set of every experience of the stream. Implemented in
/// cpt-eval and handed to the trainer by the composition root, so the trainer never depends on
/// a concrete metric.
pub trait Evaluator<M>: Send {
    /// Name of the matrix metric, e.g. `perplexity`.
    fn metric_name(&self) -> &str;
    /// `true` when a lower metric is better (perplexity), `false` otherwise (accuracy).
    fn lower_is_better(&self) -> bool;
    /// Scores on each experience's eval set, in stream order.
    fn evaluate(&mut self, model: &M) -> Result<Vec<EvalScores>>;
}

/// Settings of the adapters a model carries.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank r.
    pub rank: usize,
    /// Scale numerator α.
    pub alpha: f64,
    /// rsLoRA: scale by α/√r instead of α/r.
    #[serde(default)]
    pub rslora: bool,
    /// Which projections get adapters, by name: for LLaMA `q`, `k`, `v`, `o`, `gate`, `up`,
    /// `down` (or the full names `q_proj`, ...); for ViT and ViT-MAE those of
    /// `cpt_models::vit::VIT_LORA_TARGETS` (`query`, ..., with `q`/`k`/`v`/`o` accepted too) and, for
    /// ViT classifiers, `classifier`.
    pub target_modules: Vec<String>,
    /// Dropout on the adapter's input while training (0: none). Its masks come from the
    /// backend RNG, which the trainer re-seeds from (seed, step) at every step, so runs and
    /// resumes stay reproducible.
    #[serde(default)]
    pub dropout: f64,
}

impl LoraSpec {
    /// The factor `s` in `x·W + s·(x·A)·B`.
    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Whether the projection named `name` is targeted: LLaMA's and CLIP's `q_proj`, ...
    /// (also selected by their short forms `q`, `out`, ...), ViT's `query`, `key`, `value`,
    /// `attention_output` (also selected by LLaMA's `q`, `k`, `v`, `o`, so a target list means
    /// the same projections in every model), `intermediate`, `output`, `classifier`.
    pub fn targets(&self, name: &str) -> bool {
        let short = match name {
            "query" => "q",
            "key" => "k",
            "value" => "v",
            "attention_output" => "o",
            _ => name.trim_end_matches("_proj"),
        };
        self.target_modules.iter().any(|t| t == name || t == short)
    }
}

/// A model that can carry low-rank adapters on some of its linear layers (LoRA). The LoRA
/// strategy drives it through this trait, so it names no concrete model. Adapter parameters
/// are those whose path contains [`ADAPTER_MARKER`].
pub trait AdapterModel: Sized {
    /// Adapter settings (rank, scale, target layers): [`LoraSpec`] for cpt's models.
    type Spec: Clone + Send;
    /// The model with fresh adapters (the up-projection zero, so outputs are unchanged), drawn
    /// from `seed`.
    fn with_adapters(self, spec: &Self::Spec, seed: u64) -> Self;
    /// The model with its adapters folded into the base weights and removed.
    fn merge_adapters(self) -> Self;
    /// The model with its adapters removed, unmerged.
    fn drop_adapters(self) -> Self;
}

/// A model that maps images to pooled feature vectors: what nearest-mean classifiers and linear
/// probes read ("a simple baseline" of class-incremental learning on pre-trained models).
pub trait ImageEncoder<B: Backend> {
    /// Pooled features `[batch, width]` of the batch's images (no gradient needed).
    fn image_features(&self, batch: &ImageBatch) -> Tensor<B, 2>;
}

/// An image model with a classification head (ViT for image classification).
pub trait ImageClassifier<B: Backend>: ImageEncoder<B> {
    /// Class logits `[batch, num_labels]`.
    fn class_logits(&self, batch: &ImageBatch) -> Tensor<B, 2>;
}

/// A model that embeds images and texts into one space (CLIP): zero-shot classification and
/// retrieval compare these embeddings.
pub trait ImageTextModel<B: Backend>: ImageEncoder<B> {
    /// L2-normalised image embeddings `[batch, projection_dim]`.
    fn image_embeds(&self, batch: &ImageBatch) -> Tensor<B, 2>;
    /// L2-normalised text embeddings `[rows, projection_dim]` of padded token rows, row-major
    /// `[rows, text_len]`.
    fn text_embeds(&self, tokens: &[u32], text_len: usize) -> Tensor<B, 2>;
}

/// A masked image model (MAE): the loss depends on a random mask, which evaluation must fix.
pub trait MaskedImageModel<B: Backend>: ImageEncoder<B> {
    /// Patches per image: the width of the noise tensor.
    fn num_patches(&self) -> usize;
    /// Mean reconstruction loss over masked patches, shape `[1]`, with the mask drawn from
    /// `noise` `[batch, num_patches]` (uniform in [0, 1); lowest noise is kept, as transformers).
    fn masked_loss(&self, batch: &ImageBatch, noise: Tensor<B, 2>) -> Tensor<B, 1>;
}

/// Substring that marks adapter parameters in parameter paths (`...q_proj.lora_a`).
pub const ADAPTER_MARKER: &str = ".lora_";
