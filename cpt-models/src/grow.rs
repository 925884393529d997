//! Function-preserving growth of a model before training continues: more layers ("LLaMA Pro:
//! Progressive LLaMA with Block Expansion", 2024) or wider layers ("bert2BERT: Towards Reusable
//! Pretrained Language Models", 2022; "Net2Net", 2016). The grown model computes exactly the
//! function of the original (up to float rounding) until it is trained.
//!
//! Growth is tensor surgery on parameters by path: the grown model is built fresh from the
//! grown config (its seeded draws supply the random parts of new heads and neurons), and each of
//! its parameters is then computed from the original's by a rule per axis ([`Axis`]).
//!
//! **Depth** (`kind = "depth"`): `add_layers` copies of existing layers are inserted, each right
//! after the layer it copies, with the projections that write into the residual stream
//! (LLaMA's `o_proj` and `down_proj`, ViT's `attention.output.dense` and `output.dense`; weights
//! and biases) zeroed, so each new block adds nothing: `x + 0 + 0`. By default the `N` layers
//! are split into `add_layers` groups and a copy follows each group's last layer (LLaMA Pro);
//! `positions = [i, ...]` instead names, for each copy, the original layer (0-based, in
//! `0..N`) it copies and follows.
//!
//! **Width** (`kind = "width"`): any of `hidden_size`, `intermediate_size` and (LLaMA)
//! `num_attention_heads` grows.
//! - New MLP neurons and new attention heads get the fresh model's random input weights and
//!   zero output weights (the rows of `down_proj` / `o_proj` that read them), so they add 0.
//!   Heads keep their width (and so the `1/sqrt(head_dim)` scale and the rotary pairing of
//!   channel `i` with `i + head_dim / 2`); new heads come after the old ones, whole key/value
//!   heads with their query groups under grouped-query attention.
//! - The hidden size grows by a whole factor `k`: every residual channel is repeated `k` times
//!   (the new vector is `[x, x, ..., x]`), which keeps the mean, the mean square and the
//!   variance of every hidden vector, so RMSNorm and LayerNorm see the same statistics with the
//!   same epsilon. What writes the residual stream (embeddings, output projections, their
//!   biases) is repeated the same way; what reads a norm's output repeats its input rows; and the
//!   `k` copies of a norm's weight (and LayerNorm's bias) are the original scaled by fractions
//!   `α_c = 2(c+1) / (k(k+1))` that sum to 1, so the readers' sums over the copies give the
//!   original product. The fractions differ on purpose: with equal ones (bert2BERT's even
//!   split) swapping two copies is a symmetry of the whole network, their gradients stay equal
//!   and the copies never become different channels; unequal norm weights break it. A tied LM
//!   head reads through the final norm, so it needs no rule of its own. Hidden growth by a
//!   factor that is not whole is refused.
//!
//! **Freezing** (`freeze = "old"`, depth only): only the inserted layers train; embeddings, the
//! original layers, norms and the head keep learning-rate scale 0 (the trainer's frozen-means-no-
//! gradient rule). Width growth refuses it: old and new values share tensors there, and
//! parameters are frozen whole.

use crate::error::{ModelError, Result};
use crate::{LlamaConfig, LlamaForCausalLM, ViTConfig, ViTForImageClassification};
use burn::module::Module;
use burn::tensor::backend::Backend;
use cpt_core::params::{HostTensor, NamedTensors, load_named, named_tensors};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `[model.grow]` table of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum GrowSpec {
    /// Insert copies of layers whose residual writers are zeroed.
    Depth {
        /// How many layers to insert (at least 1).
        add_layers: usize,
        /// For each inserted layer, the original layer (0-based) it copies and follows;
        /// default: one after the last layer of each of `add_layers` even groups.
        #[serde(default)]
        positions: Option<Vec<usize>>,
        /// Which parameters train afterwards.
        #[serde(default)]
        freeze: Freeze,
    },
    /// Widen the residual stream, the MLP and/or attention.
    Width {
        /// New residual width: a whole multiple of the original.
        #[serde(default)]
        hidden_size: Option<usize>,
        /// New MLP width (at least the original).
        #[serde(default)]
        intermediate_size: Option<usize>,
        /// New number of query heads (LLaMA; default: scaled with the hidden size, so the head
        /// width stays `hidden_size / num_attention_heads`). ViT's is always the hidden size over
        /// the original head width.
        #[serde(default)]
        num_attention_heads: Option<usize>,
        /// Must stay `none` (see the module documentation).
        #[serde(default)]
        freeze: Freeze,
    },
}

/// Which parameters of a grown model train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Freeze {
    /// All of them.
    #[default]
    None,
    /// Only the added ones (depth growth).
    Old,
}

/// Growth kinds `[model.grow] kind` accepts.
pub const GROW_KINDS: &[&str] = &["depth", "width"];

fn invalid(key: &str, message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        key: format!("model.grow.{key}"),
        message: message.into(),
    }
}

impl GrowSpec {
    /// Read a `[model.grow]` table; errors name the key (`model.grow.kind`, an unknown field).
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        match table.get("kind") {
            None => return Err(invalid("kind", "required: `depth` or `width`")),
            Some(toml::Value::String(kind)) if !GROW_KINDS.contains(&kind.as_str()) => {
                return Err(invalid(
                    "kind",
                    format!("unknown growth `{kind}` (known: {})", GROW_KINDS.join(", ")),
                ));
            }
            Some(toml::Value::String(_)) => {}
            Some(other) => {
                return Err(invalid(
                    "kind",
                    format!("expected a string (`depth` or `width`), found {other}"),
                ));
            }
        }
        let spec: Self =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| ModelError::Invalid {
                    key: "model.grow".into(),
                    message: e.message().to_string(),
                })?;
        if let Self::Width {
            freeze: Freeze::Old,
            ..
        } = spec
        {
            return Err(invalid(
                "freeze",
                "`old` works with depth growth only: width growth extends existing tensors, so old \
                 and new values share a parameter, and parameters are frozen whole",
            ));
        }
        Ok(spec)
    }

    /// Whether only the added parameters train.
    pub fn freezes_old(&self) -> bool {
        matches!(
            self,
            Self::Depth {
                freeze: Freeze::Old,
                ..
            }
        )
    }

    /// The layer plan of a depth growth of `layers` original layers (`None` for width growth).
    pub fn depth_plan(&self, layers: usize) -> Result<Option<DepthPlan>> {
        match self {
            Self::Depth {
                add_layers,
                positions,
                ..
            } => DepthPlan::new(layers, *add_layers, positions.as_deref()).map(Some),
            Self::Width { .. } => Ok(None),
        }
    }

    /// The config of `config` grown.
    pub fn llama_config(&self, config: &LlamaConfig) -> Result<LlamaConfig> {
        let mut grown = config.clone();
        match self {
            Self::Depth { .. } => {
                let plan = self.depth_plan(config.num_hidden_layers)?.expect("depth");
                grown.num_hidden_layers = plan.layers.len();
            }
            Self::Width {
                hidden_size,
                intermediate_size,
                num_attention_heads,
                ..
            } => {
                let hidden = grown_hidden(config.hidden_size, *hidden_size)?;
                let intermediate = at_least(
                    "intermediate_size",
                    config.intermediate_size,
                    *intermediate_size,
                )?;
                let factor = hidden / config.hidden_size;
                let heads = at_least(
                    "num_attention_heads",
                    config.num_attention_heads,
                    Some(num_attention_heads.unwrap_or(config.num_attention_heads * factor)),
                )?;
                let groups = config.num_attention_heads / config.kv_heads();
                if !heads.is_multiple_of(groups) {
                    return Err(invalid(
                        "num_attention_heads",
                        format!(
                            "{heads} is not a multiple of the {groups} query heads per key/value \
                             head; new heads come as whole key/value groups"
                        ),
                    ));
                }
                let head_width = config.head_width();
                grown.hidden_size = hidden;
                grown.intermediate_size = intermediate;
                grown.num_attention_heads = heads;
                grown.num_key_value_heads = config.num_key_value_heads.map(|_| heads / groups);
                // Heads keep their width; it is stated when it no longer follows by default.
                let default_width = hidden.is_multiple_of(heads) && hidden / heads == head_width;
                if !default_width {
                    grown.head_dim = Some(head_width);
                }
                nothing_grows(config == &grown)?;
            }
        }
        grown
            .validate()
            .map_err(|m| invalid("kind", format!("the grown model is invalid: {m}")))?;
        Ok(grown)
    }

    /// `model` (of config `config`) grown, with its config; the random parts of new heads and
    /// neurons come from a fresh model drawn from `seed`.
    pub fn grow_llama<B: Backend>(
        &self,
        config: &LlamaConfig,
        model: LlamaForCausalLM<B>,
        seed: u64,
        device: &B::Device,
    ) -> Result<(LlamaConfig, LlamaForCausalLM<B>)> {
        let grown = self.llama_config(config)?;
        let fresh = grown.init_seeded::<B>(seed, device);
        let model = self.fill(&LLAMA, config.num_hidden_layers, &model, fresh)?;
        Ok((grown, model))
    }

    /// The config of `config` grown.
    pub fn vit_config(&self, config: &ViTConfig) -> Result<ViTConfig> {
        let mut grown = config.clone();
        match self {
            Self::Depth { .. } => {
                let plan = self.depth_plan(config.num_hidden_layers)?.expect("depth");
                grown.num_hidden_layers = plan.layers.len();
            }
            Self::Width {
                hidden_size,
                intermediate_size,
                num_attention_heads,
                ..
            } => {
                let hidden = grown_hidden(config.hidden_size, *hidden_size)?;
                let head_width = config.hidden_size / config.num_attention_heads;
                // ViT's attention is as wide as the residual stream and its head width is
                // implied: keeping it fixes the number of heads.
                let heads = hidden / head_width;
                if let Some(asked) = num_attention_heads.filter(|&n| n != heads) {
                    return Err(invalid(
                        "num_attention_heads",
                        format!(
                            "ViT's head width is hidden_size / num_attention_heads; keeping it at \
                             {head_width} with hidden_size {hidden} needs {heads} heads, not {asked}"
                        ),
                    ));
                }
                grown.hidden_size = hidden;
                grown.num_attention_heads = heads;
                grown.intermediate_size = at_least(
                    "intermediate_size",
                    config.intermediate_size,
                    *intermediate_size,
                )?;
                nothing_grows(config == &grown)?;
            }
        }
        grown
            .validate()
            .map_err(|m| invalid("kind", format!("the grown model is invalid: {m}")))?;
        Ok(grown)
    }

    /// `model` (of config `config`) grown, with its config (see [`GrowSpec::grow_llama`]).
    pub fn grow_vit<B: Backend>(
        &self,
        config: &ViTConfig,
        model: ViTForImageClassification<B>,
        seed: u64,
        device: &B::Device,
    ) -> Result<(ViTConfig, ViTForImageClassification<B>)> {
        let grown = self.vit_config(config)?;
        let fresh = grown.init_seeded::<B>(seed, device);
        let model = self.fill(&VIT, config.num_hidden_layers, &model, fresh)?;
        Ok((grown, model))
    }

    /// `fresh` (the grown shape, as drawn) with every parameter computed from `original`'s
    /// (of `layers` layers) by `schema`'s rules.
    fn fill<B: Backend, M: Module<B>>(
        &self,
        schema: &Schema,
        layers: usize,
        original: &M,
        fresh: M,
    ) -> Result<M> {
        let tensors = self.grow_tensors(
            schema,
            layers,
            &named_tensors(original),
            &named_tensors(&fresh),
        )?;
        Ok(load_named(fresh, &tensors, Path::new("[model.grow]"))?)
    }

    /// With `freeze = "old"`: patterns (for the `slow_learner` matcher) of the parameters that
    /// train in a LLaMA of `layers` original layers grown by this spec; `None` when all train.
    pub fn llama_trainable(&self, layers: usize) -> Result<Option<Vec<String>>> {
        self.trainable(&LLAMA, layers)
    }

    /// As [`GrowSpec::llama_trainable`], for ViT.
    pub fn vit_trainable(&self, layers: usize) -> Result<Option<Vec<String>>> {
        self.trainable(&VIT, layers)
    }

    fn trainable(&self, schema: &Schema, layers: usize) -> Result<Option<Vec<String>>> {
        if !self.freezes_old() {
            return Ok(None);
        }
        let plan = self.depth_plan(layers)?.expect("only depth growth freezes");
        Ok(Some(
            plan.added()
                .map(|i| format!("{}.{i}.*", schema.layers))
                .collect(),
        ))
    }

    /// Every parameter of the grown model (`fresh`, as drawn) computed from the original's.
    fn grow_tensors(
        &self,
        schema: &Schema,
        layers: usize,
        old: &NamedTensors,
        fresh: &NamedTensors,
    ) -> Result<NamedTensors> {
        let original = |path: &str| {
            old.get(path).ok_or_else(|| ModelError::Invalid {
                key: "model.grow".into(),
                message: format!("the original model has no parameter `{path}`"),
            })
        };
        let mut grown = NamedTensors::new();
        match self.depth_plan(layers)? {
            Some(plan) => {
                for path in fresh.keys() {
                    let value = match schema.layer_of(path) {
                        Some((i, rest)) => {
                            let (source, copy) = match plan.layers[i] {
                                LayerOrigin::Original(s) => (s, false),
                                LayerOrigin::Copy(s) => (s, true),
                            };
                            let mut value =
                                original(&format!("{}.{source}.{rest}", schema.layers))?.clone();
                            if copy && schema.writes_residual(rest) {
                                value.values.iter_mut().for_each(|v| *v = 0.0);
                            }
                            value
                        }
                        None => original(path)?.clone(),
                    };
                    grown.insert(path.clone(), value);
                }
            }
            None => {
                for (path, drawn) in fresh {
                    let axes = (schema.width_axes)(path).ok_or_else(|| ModelError::Invalid {
                        key: "model.grow".into(),
                        message: format!("no width rule for parameter `{path}`"),
                    })?;
                    grown.insert(path.clone(), widen(original(path)?, drawn, axes));
                }
            }
        }
        Ok(grown)
    }
}

/// The new hidden size: at least the original and a whole multiple of it.
fn grown_hidden(original: usize, asked: Option<usize>) -> Result<usize> {
    let hidden = at_least("hidden_size", original, asked)?;
    if !hidden.is_multiple_of(original) {
        return Err(invalid(
            "hidden_size",
            format!(
                "{hidden} is not a whole multiple of the original {original}: hidden channels are \
                 repeated a whole number of times, which keeps every norm's statistics"
            ),
        ));
    }
    Ok(hidden)
}

/// `asked`, or `original` when not given; smaller than `original` is an error naming `key`.
fn at_least(key: &str, original: usize, asked: Option<usize>) -> Result<usize> {
    match asked {
        Some(n) if n < original => Err(invalid(
            key,
            format!("{n} is smaller than the original {original}; growth only widens"),
        )),
        Some(n) => Ok(n),
        None => Ok(original),
    }
}

fn nothing_grows(unchanged: bool) -> Result<()> {
    match unchanged {
        true => Err(invalid(
            "kind",
            "width growth changes nothing: give a larger `hidden_size`, `intermediate_size` or \
             `num_attention_heads`",
        )),
        false => Ok(()),
    }
}

/// Where each layer of a depth-grown stack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthPlan {
    /// The grown stack, in order.
    pub layers: Vec<LayerOrigin>,
}

/// One layer of a grown stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOrigin {
    /// Original layer `i`, unchanged.
    Original(usize),
    /// A copy of original layer `i` that adds nothing (residual writers zeroed).
    Copy(usize),
}

impl DepthPlan {
    /// `add` copies into a stack of `layers`, after the original layers `positions` names
    /// (default: the last layer of each of `add` even groups, `⌈(g+1)·layers/add⌉ − 1`).
    pub fn new(layers: usize, add: usize, positions: Option<&[usize]>) -> Result<Self> {
        if add == 0 {
            return Err(invalid("add_layers", "must be at least 1"));
        }
        let mut after: Vec<usize> = match positions {
            Some(p) if p.len() != add => {
                return Err(invalid(
                    "positions",
                    format!("has {} entries; `add_layers` is {add}", p.len()),
                ));
            }
            Some(p) => {
                if let Some(bad) = p.iter().find(|&&i| i >= layers) {
                    return Err(invalid(
                        "positions",
                        format!(
                            "{bad} is not a layer of the original model (0..{layers}); each entry \
                             names the original layer a copy follows"
                        ),
                    ));
                }
                p.to_vec()
            }
            None => (0..add)
                .map(|g| ((g + 1) * layers).div_ceil(add) - 1)
                .collect(),
        };
        after.sort_unstable();
        let mut stack = Vec::with_capacity(layers + add);
        for i in 0..layers {
            stack.push(LayerOrigin::Original(i));
            let copies = after.iter().filter(|&&p| p == i).count();
            stack.extend(std::iter::repeat_n(LayerOrigin::Copy(i), copies));
        }
        Ok(Self { layers: stack })
    }

    /// Indices in the grown stack of the inserted layers.
    pub fn added(&self) -> impl Iterator<Item = usize> + '_ {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, LayerOrigin::Copy(_)))
            .map(|(i, _)| i)
    }
}

/// How one axis of a parameter grows, from the original length to the grown one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    /// Unchanged length.
    Keep,
    /// A residual axis: the original repeated (new index `j` reads `j mod n`).
    Tile,
    /// A norm's residual axis: repeated, copy `c` of `k` scaled by `2(c+1)/(k(k+1))`.
    Split,
    /// Original first, then the fresh model's values (inputs of new heads and neurons).
    Fresh,
    /// Original first, then zeros (what reads new heads and neurons into the residual stream).
    Zero,
}

/// Where grown index `j` of one axis reads from.
#[derive(Clone, Copy)]
enum Source {
    /// Original index, scaled.
    Old(usize, f32),
    /// The fresh model's value.
    Fresh,
    /// Zero.
    Zero,
}

fn axis_sources(axis: Axis, old: usize, new: usize) -> Vec<Source> {
    let k = new / old;
    (0..new)
        .map(|j| match axis {
            Axis::Keep | Axis::Tile => Source::Old(j % old, 1.0),
            Axis::Split => {
                let c = j / old;
                Source::Old(j % old, (2 * (c + 1)) as f32 / (k * (k + 1)) as f32)
            }
            Axis::Fresh | Axis::Zero if j < old => Source::Old(j, 1.0),
            Axis::Fresh => Source::Fresh,
            Axis::Zero => Source::Zero,
        })
        .collect()
}

/// The grown value of a parameter: `old` carried over axis by axis into the shape of `fresh`.
/// A zero source on any axis wins over a fresh one.
fn widen(old: &HostTensor, fresh: &HostTensor, axes: &[Axis]) -> HostTensor {
    assert_eq!(axes.len(), old.shape.len(), "one rule per axis");
    let sources: Vec<Vec<Source>> = axes
        .iter()
        .zip(old.shape.iter().zip(&fresh.shape))
        .map(|(&axis, (&o, &n))| {
            let fits = match axis {
                Axis::Keep => n == o,
                Axis::Tile | Axis::Split => n.is_multiple_of(o),
                Axis::Fresh | Axis::Zero => n >= o,
            };
            assert!(fits, "grown shape {:?} from {:?}", fresh.shape, old.shape);
            axis_sources(axis, o, n)
        })
        .collect();
    let old_strides = strides(&old.shape);
    let mut values = Vec::with_capacity(fresh.values.len());
    let mut index = vec![0usize; fresh.shape.len()];
    for (flat, &drawn) in fresh.values.iter().enumerate() {
        // Row-major index of `flat` in the grown shape.
        let mut rest = flat;
        for d in (0..index.len()).rev() {
            index[d] = rest % fresh.shape[d];
            rest /= fresh.shape[d];
        }
        let (mut at, mut scale, mut from_fresh, mut zero) = (0, 1.0f32, false, false);
        for (d, &j) in index.iter().enumerate() {
            match sources[d][j] {
                Source::Old(i, s) => {
                    at += i * old_strides[d];
                    scale *= s;
                }
                Source::Fresh => from_fresh = true,
                Source::Zero => zero = true,
            }
        }
        values.push(match (zero, from_fresh) {
            (true, _) => 0.0,
            (false, true) => drawn,
            (false, false) => old.values[at] * scale,
        });
    }
    HostTensor {
        shape: fresh.shape.clone(),
        values,
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// What growth needs to know of an architecture's parameter names (its Hugging Face key map).
struct Schema {
    /// Path of the layer list (`model.layers`).
    layers: &'static str,
    /// Modules of a layer that add into the residual stream (zeroed in inserted copies).
    residual_writers: &'static [&'static str],
    /// The axis rules of a parameter path (burn layouts: linear weights `[in, out]`).
    width_axes: fn(&str) -> Option<&'static [Axis]>,
}

impl Schema {
    /// `(index, rest)` of a path inside layer `index` of the stack.
    fn layer_of<'p>(&self, path: &'p str) -> Option<(usize, &'p str)> {
        let inside = path.strip_prefix(self.layers)?.strip_prefix('.')?;
        let (index, rest) = inside.split_once('.')?;
        Some((index.parse().ok()?, rest))
    }

    /// Whether `rest` (a path inside a layer) is a parameter of a residual writer.
    fn writes_residual(&self, rest: &str) -> bool {
        self.residual_writers.iter().any(|w| {
            rest.strip_prefix(w)
                .is_some_and(|tail| tail.starts_with('.'))
        })
    }
}

use Axis::{Fresh, Keep, Split, Tile, Zero};

/// The last two components of a dotted path.
fn tail2(path: &str) -> (&str, &str) {
    let mut parts = path.rsplit('.');
    let last = parts.next().unwrap_or_default();
    (parts.next().unwrap_or_default(), last)
}

const LLAMA: Schema = Schema {
    layers: "model.layers",
    residual_writers: &["self_attn.o_proj", "mlp.down_proj"],
    width_axes: |path| {
        Some(match tail2(path) {
            ("embed_tokens", "weight") => &[Keep, Tile],
            ("q_proj" | "k_proj" | "v_proj" | "gate_proj" | "up_proj", "weight") => &[Tile, Fresh],
            ("q_proj" | "k_proj" | "v_proj" | "gate_proj" | "up_proj", "bias") => &[Fresh],
            ("o_proj" | "down_proj", "weight") => &[Zero, Tile],
            ("o_proj" | "down_proj", "bias") => &[Tile],
            ("input_layernorm" | "post_attention_layernorm" | "norm", "weight") => &[Split],
            ("lm_head", "weight") => &[Tile, Keep],
            _ => return None,
        })
    },
};

const VIT: Schema = Schema {
    layers: "vit.encoder.layer",
    residual_writers: &["attention.output.dense", "output.dense"],
    width_axes: |path| {
        Some(match tail2(path) {
            ("embeddings", "cls_token" | "position_embeddings") => &[Keep, Keep, Tile],
            ("projection", "weight") => &[Tile, Keep, Keep, Keep],
            ("projection", "bias") => &[Tile],
            ("query" | "key" | "value", "weight") => &[Tile, Fresh],
            ("query" | "key" | "value", "bias") => &[Fresh],
            // `attention.output.dense` and the MLP's `output.dense`; `intermediate.dense` reads.
            ("dense", "weight") if path.ends_with("intermediate.dense.weight") => &[Tile, Fresh],
            ("dense", "bias") if path.ends_with("intermediate.dense.bias") => &[Fresh],
            ("dense", "weight") => &[Zero, Tile],
            ("dense", "bias") => &[Tile],
            ("layernorm_before" | "layernorm_after" | "layernorm", "weight" | "bias") => &[Split],
            ("classifier", "weight") => &[Tile, Keep],
            ("classifier", "bias") => &[Keep],
            _ => return None,
        })
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::tensor::{Distribution, Int, Tensor, TensorData};
    use cpt_core::params::map_named;

    type B = Flex;

    /// Every parameter moved off its initial value (norm weights off 1, biases off 0), so a
    /// wrong rule for any of them changes the output.
    fn perturbed<Bk: Backend, M: Module<Bk>>(model: M) -> M {
        map_named(model, |path, t| {
            let n = t.dims()[0];
            let wiggle: Vec<f32> = (0..n)
                .map(|i| 0.3 * ((i * 7 + path.len()) as f32 * 0.61).sin())
                .collect();
            let device = t.device();
            t + Tensor::from_data(TensorData::new(wiggle, [n]), &device)
        })
    }

    fn tokens<Bk: Backend>() -> Tensor<Bk, 2, Int> {
        let ids: Vec<i64> = (0..12).map(|i| (i * 5 + 3) % 32).collect();
        Tensor::from_data(TensorData::new(ids, [2, 6]), &Default::default())
    }

    fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar()
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    fn depth(add_layers: usize, positions: Option<Vec<usize>>) -> GrowSpec {
        GrowSpec::Depth {
            add_layers,
            positions,
            freeze: Freeze::None,
        }
    }

    fn width(hidden: Option<usize>, inner: Option<usize>, heads: Option<usize>) -> GrowSpec {
        GrowSpec::Width {
            hidden_size: hidden,
            intermediate_size: inner,
            num_attention_heads: heads,
            freeze: Freeze::None,
        }
    }

    #[test]
    fn default_positions_follow_each_group_of_layers() {
        let copies = |layers, add| {
            let plan = DepthPlan::new(layers, add, None).unwrap();
            plan.layers
                .iter()
                .filter_map(|o| match o {
                    LayerOrigin::Copy(i) => Some(*i),
                    LayerOrigin::Original(_) => None,
                })
                .collect::<Vec<_>>()
        };
        // LLaMA Pro: 4 layers in 2 groups, a copy after layers 1 and 3.
        assert_eq!(copies(4, 2), [1, 3]);
        assert_eq!(copies(2, 2), [0, 1]);
        assert_eq!(copies(3, 1), [2]);
        assert_eq!(copies(2, 4), [0, 0, 1, 1]);
        let plan = DepthPlan::new(3, 2, Some(&[2, 0])).unwrap();
        use LayerOrigin::{Copy, Original};
        assert_eq!(
            plan.layers,
            [Original(0), Copy(0), Original(1), Original(2), Copy(2)]
        );
        assert_eq!(plan.added().collect::<Vec<_>>(), [1, 4]);
    }

    #[test]
    fn llama_depth_growth_keeps_the_logits_and_copies_layers_with_silent_writers() {
        let device = Default::default();
        let config = tiny::llama();
        let model = perturbed(config.init_seeded::<B>(1, &device));
        for positions in [None, Some(vec![1, 0, 1])] {
            let add = positions.as_ref().map_or(2, Vec::len);
            let spec = depth(add, positions);
            let (grown_config, grown) =
                spec.grow_llama(&config, model.clone(), 9, &device).unwrap();
            assert_eq!(grown_config.num_hidden_layers, 2 + add);
            assert_eq!(grown.model.layers.len(), 2 + add);
            let diff = max_diff(grown.forward(tokens()), model.forward(tokens()));
            assert!(diff <= 1e-5, "logits moved by {diff}");
            let plan = spec.depth_plan(2).unwrap().unwrap();
            for i in plan.added() {
                let LayerOrigin::Copy(source) = plan.layers[i] else {
                    unreachable!()
                };
                let (new, old) = (&grown.model.layers[i], &model.model.layers[source]);
                let weight = |l: &crate::linear::Linear<B>| l.weight.val();
                assert_eq!(
                    max_diff(weight(&new.self_attn.q_proj), weight(&old.self_attn.q_proj)),
                    0.0
                );
                for zeroed in [&new.self_attn.o_proj, &new.mlp.down_proj] {
                    assert_eq!(zeroed.weight.val().abs().max().into_scalar(), 0.0);
                    let bias = zeroed.bias.as_ref().unwrap().val();
                    assert_eq!(bias.abs().max().into_scalar(), 0.0);
                }
            }
        }
    }

    #[test]
    fn llama_width_growth_keeps_the_logits() {
        let device = Default::default();
        let base = tiny::llama();
        let tied = LlamaConfig {
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
            ..tiny::llama()
        };
        let cases = [
            // Hidden ×2 with heads (and key/value heads) following, MLP wider, biases, untied.
            (
                base.clone(),
                width(Some(16), Some(24), None),
                (16, 24, 4, Some(2), None),
            ),
            // Hidden ×3, tied embeddings, the head count kept: the head width is stated.
            (
                tied.clone(),
                width(Some(24), None, Some(2)),
                (24, 16, 2, Some(1), Some(4)),
            ),
            // Only the MLP, and only the heads.
            (
                base.clone(),
                width(None, Some(17), None),
                (8, 17, 2, Some(1), None),
            ),
            (
                base.clone(),
                width(None, None, Some(6)),
                (8, 16, 6, Some(3), Some(4)),
            ),
        ];
        for (config, spec, (hidden, inner, heads, kv, head_dim)) in cases {
            let model = perturbed(config.init_seeded::<B>(1, &device));
            let (grown_config, grown) =
                spec.grow_llama(&config, model.clone(), 9, &device).unwrap();
            assert_eq!(
                (
                    grown_config.hidden_size,
                    grown_config.intermediate_size,
                    grown_config.num_attention_heads,
                    grown_config.num_key_value_heads,
                    grown_config.head_dim,
                ),
                (hidden, inner, heads, kv, head_dim),
                "{spec:?}"
            );
            assert_eq!(grown_config.head_width(), config.head_width());
            let diff = max_diff(grown.forward(tokens()), model.forward(tokens()));
            assert!(diff <= 1e-5, "{spec:?}: logits moved by {diff}");
            // The same model, rebuilt from the grown config, takes the grown weights (the
            // shape a checkpoint or an exported folder of it has).
            let named = named_tensors(&grown);
            let rebuilt: LlamaForCausalLM<B> =
                load_named(grown_config.init::<B>(&device), &named, Path::new("grown")).unwrap();
            assert_eq!(
                max_diff(rebuilt.forward(tokens()), grown.forward(tokens())),
                0.0
            );
        }
    }

    /// Unequal norm fractions make the copies of a hidden channel learn apart; with bert2BERT's
    /// even split their gradients would stay equal forever.
    #[test]
    fn hidden_copies_get_different_gradients_unless_the_split_is_even() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let config = tiny::llama();
        let model = perturbed(config.init_seeded::<A>(1, &device));
        let (_, grown) = width(Some(16), None, None)
            .grow_llama(&config, model, 9, &device)
            .unwrap();
        let copy_gap = |model: &LlamaForCausalLM<A>| {
            let logits = model.forward(tokens());
            let target = logits.random_like(Distribution::Normal(0.0, 1.0));
            let grads = (logits * target.detach()).sum().backward();
            let g = model.model.embed_tokens.weight.grad(&grads).unwrap();
            let (first, second) = (g.clone().narrow(1, 0, 8), g.narrow(1, 8, 8));
            (first - second).abs().max().into_scalar()
        };
        assert!(copy_gap(&grown) > 1e-4, "copies get equal gradients");
        // Control: replace each norm's fractions by the even split (mean of the copies).
        let even = map_named(grown, |path, t| {
            if !path.ends_with("norm.weight") {
                return t;
            }
            let half = (t.clone().narrow(0, 0, 8) + t.narrow(0, 8, 8)) / 2.0;
            Tensor::cat(vec![half.clone(), half], 0)
        });
        assert!(copy_gap(&even) < 1e-6, "the control should be symmetric");
    }

    fn pixels() -> Tensor<B, 4> {
        let values: Vec<f32> = (0..2 * 3 * 8 * 8)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 8, 8]), &Default::default())
    }

    #[test]
    fn vit_width_and_depth_growth_keep_the_logits() {
        let device = Default::default();
        let config = tiny::vit();
        let model = perturbed(config.init_seeded::<B>(1, &device));
        let cases = [
            (width(Some(16), Some(20), None), (16, 4, 20, 2)),
            (width(Some(24), None, Some(6)), (24, 6, 16, 2)),
            (width(None, Some(33), None), (8, 2, 33, 2)),
            (depth(2, None), (8, 2, 16, 4)),
        ];
        for (spec, (hidden, heads, inner, layers)) in cases {
            let (grown_config, grown) = spec.grow_vit(&config, model.clone(), 9, &device).unwrap();
            assert_eq!(
                (
                    grown_config.hidden_size,
                    grown_config.num_attention_heads,
                    grown_config.intermediate_size,
                    grown_config.num_hidden_layers,
                ),
                (hidden, heads, inner, layers),
                "{spec:?}"
            );
            let diff = max_diff(grown.forward(pixels()), model.forward(pixels()));
            assert!(diff <= 1e-5, "{spec:?}: logits moved by {diff}");
        }
    }

    #[test]
    fn depth_growth_with_frozen_old_layers_trains_only_the_copies() {
        let spec = GrowSpec::from_table(&table(
            "kind = \"depth\"\nadd_layers = 2\npositions = [0, 0]\nfreeze = \"old\"",
        ))
        .unwrap();
        assert!(spec.freezes_old());
        assert_eq!(
            spec.llama_trainable(3).unwrap().unwrap(),
            ["model.layers.1.*", "model.layers.2.*"]
        );
        assert_eq!(
            spec.vit_trainable(3).unwrap().unwrap(),
            ["vit.encoder.layer.1.*", "vit.encoder.layer.2.*"]
        );
        assert_eq!(depth(1, None).llama_trainable(3).unwrap(), None);
    }

    /// Bad `[model.grow]` settings fail naming the key.
    #[test]
    fn bad_settings_name_the_key() {
        let config = tiny::llama();
        let error = |text: &str| {
            GrowSpec::from_table(&table(text))
                .and_then(|spec| spec.llama_config(&config))
                .unwrap_err()
                .to_string()
        };
        let cases = [
            ("kind = \"sideways\"", "`model.grow.kind`", "sideways"),
            ("add_layers = 1", "`model.grow.kind`", "required"),
            (
                "kind = \"depth\"\nadd_layers = 0",
                "`model.grow.add_layers`",
                "at least 1",
            ),
            (
                "kind = \"depth\"\nadd_layers = 1\npositions = [2]",
                "`model.grow.positions`",
                "0..2",
            ),
            (
                "kind = \"depth\"\nadd_layers = 2\npositions = [1]",
                "`model.grow.positions`",
                "1 entries",
            ),
            (
                "kind = \"depth\"\nadd_layer = 1",
                "`model.grow`",
                "add_layer",
            ),
            (
                "kind = \"width\"\nhidden_size = 4",
                "`model.grow.hidden_size`",
                "smaller",
            ),
            (
                "kind = \"width\"\nhidden_size = 12",
                "`model.grow.hidden_size`",
                "multiple",
            ),
            (
                "kind = \"width\"\nintermediate_size = 8",
                "`model.grow.intermediate_size`",
                "smaller",
            ),
            (
                "kind = \"width\"\nnum_attention_heads = 3",
                "`model.grow.num_attention_heads`",
                "multiple",
            ),
            (
                "kind = \"width\"\nhidden_size = 8",
                "`model.grow.kind`",
                "changes nothing",
            ),
            (
                "kind = \"width\"\nhidden_size = 16\nfreeze = \"old\"",
                "`model.grow.freeze`",
                "depth growth only",
            ),
        ];
        for (text, key, what) in cases {
            let message = error(text);
            assert!(
                message.contains(key) && message.contains(what),
                "{text}: {message}"
            );
        }
        let vit = GrowSpec::from_table(&table(
            "kind = \"width\"\nhidden_size = 16\nnum_attention_heads = 2",
        ))
        .unwrap()
        .vit_config(&tiny::vit())
        .unwrap_err()
        .to_string();
        assert!(
            vit.contains("`model.grow.num_attention_heads`") && vit.contains("needs 4"),
            "{vit}"
        );
    }
}
