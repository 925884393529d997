//! CLIP ("Learning Transferable Visual Models From Natural Language Supervision", 2021), in the
//! Hugging Face `CLIPModel` layout: a causal text transformer pooled at the EOS token, a vision
//! transformer pooled at its class token, linear projections into one space, and a learned
//! temperature (`logit_scale`). Trained with the symmetric InfoNCE loss.
//!
//! Module field names reproduce the transformers parameter names (including the vision tower's
//! `pre_layrnorm`), so the Hugging Face key map is the identity up to the transposition of 2-D
//! linear weights and the shape of `logit_scale` (0-d there, `[1]` here: burn has no 0-d
//! tensors).

use crate::adapters::{self, LinearFn, LoraLinears, child};
use crate::blocks::{Init, LayerNorm, embedding, gelu, multi_head_attention, patch_projection};
use crate::linear::Linear;
use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use cpt_core::fused::{FusedOps, cross_entropy};
use cpt_core::{ImageBatch, StepOutput, TaskModel};
use serde::{Deserialize, Serialize};

/// Names of the projections LoRA can target in CLIP (both towers): `q`, `k`, `v`, `out`
/// (`out_proj`), `fc1`, `fc2`.
pub const CLIP_LORA_TARGETS: &[&str] = &["q", "k", "v", "out", "fc1", "fc2"];

/// The MLP activation. transformers accepts many; CLIP checkpoints use these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x · sigmoid(1.702 x)`, OpenAI's CLIP.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl ClipActivation {
    /// The activation named `name` as in transformers' `hidden_act`, or `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            _ => None,
        }
    }

    /// The transformers name.
    pub fn name(self) -> &'static str {
        match self {
            Self::QuickGelu => "quick_gelu",
            Self::Gelu => "gelu",
        }
    }

    fn apply<B: Backend>(self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Self::Gelu => gelu(x),
        }
    }
}

/// The text tower's hyperparameters, with the field names of transformers' `CLIPTextConfig`
/// (missing fields take its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest caption (learned position embeddings).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token.
    pub pad_token_id: Option<u32>,
    /// Start-of-text token.
    pub bos_token_id: Option<u32>,
    /// End-of-text token, where captions are pooled. The value 2 selects transformers' legacy
    /// rule (pool at the highest id), which old OpenAI configs rely on.
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: 49407,
        }
    }
}

/// The vision tower's hyperparameters, with the field names of transformers'
/// `CLIPVisionConfig` (missing fields take its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Side of the (square) input image.
    pub image_size: usize,
    /// Side of a (square) patch.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Standard deviation of the patch and position embeddings at initialisation.
    pub initializer_range: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
        }
    }
}

impl ClipVisionConfig {
    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// CLIP hyperparameters, with the field names of transformers' `CLIPConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// The text tower.
    #[serde(default)]
    pub text_config: ClipTextConfig,
    /// The vision tower.
    #[serde(default)]
    pub vision_config: ClipVisionConfig,
    /// Width of the shared embedding space.
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    /// Initial value of `logit_scale` (log of the inverse temperature).
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f64,
    /// Multiplier of every initialisation standard deviation.
    #[serde(default = "default_initializer_factor")]
    pub initializer_factor: f64,
}

pub(crate) fn default_projection_dim() -> usize {
    512
}
pub(crate) fn default_logit_scale() -> f64 {
    2.6592
}
pub(crate) fn default_initializer_factor() -> f64 {
    1.0
}

impl ClipConfig {
    /// Check the shape constraints; the error names the field (`text_config.hidden_size`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let (t, v) = (&self.text_config, &self.vision_config);
        let positive = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.num_channels", v.num_channels),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("projection_dim", self.projection_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, n)| *n == 0) {
            return Err((name.to_string(), "must be positive".into()));
        }
        for (tower, c) in [
            ("text_config", (t.hidden_size, t.num_attention_heads)),
            ("vision_config", (v.hidden_size, v.num_attention_heads)),
        ] {
            if !c.0.is_multiple_of(c.1) {
                return Err((
                    format!("{tower}.hidden_size"),
                    format!("{} is not a multiple of num_attention_heads ({})", c.0, c.1),
                ));
            }
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err((
                "vision_config.patch_size".into(),
                format!(
                    "{} does not divide image_size ({})",
                    v.patch_size, v.image_size
                ),
            ));
        }
        if t.eos_token_id as usize >= t.vocab_size {
            return Err((
                "text_config.eos_token_id".into(),
                format!(
                    "{} is outside the vocabulary ({})",
                    t.eos_token_id, t.vocab_size
                ),
            ));
        }
        Ok(())
    }

    /// Build the model with weights drawn from `seed` alone, with transformers' CLIP
    /// initialisation (per-module normal standard deviations, unit LayerNorms, zero biases,
    /// `logit_scale = logit_scale_init_value`). The draws come from cpt's own RNG keyed by
    /// parameter path, so the same seed gives the same model on every backend and thread (see
    /// [`Init`]).
    pub fn init_seeded<B: Backend>(&self, seed: u64, device: &B::Device) -> ClipModel<B> {
        self.build(&Init::seeded(seed, device))
    }

    /// Build the model with the same rules, drawn from burn's backend RNG. Prefer
    /// [`ClipConfig::init_seeded`] for reproducible runs; loaders overwrite every weight.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipModel<B> {
        self.build(&Init::backend(device))
    }

    /// transformers' `CLIPPreTrainedModel._init_weights`: every standard deviation below is
    /// multiplied by `initializer_factor`.
    fn build<B: Backend>(&self, init: &Init<'_, B>) -> ClipModel<B> {
        let factor = self.initializer_factor;
        let (t, v) = (&self.text_config, &self.vision_config);
        let text = init.at("text_model");
        let text_embeddings = text.at("embeddings");
        let vision = init.at("vision_model");
        let vision_embeddings = vision.at("embeddings");
        let (text_width, vision_width) = (t.hidden_size as f64, v.hidden_size as f64);
        ClipModel {
            text_model: ClipTextTransformer {
                embeddings: ClipTextEmbeddings {
                    token_embedding: embedding(
                        &text_embeddings.at("token_embedding"),
                        t.vocab_size,
                        t.hidden_size,
                        0.02 * factor,
                    ),
                    position_embedding: embedding(
                        &text_embeddings.at("position_embedding"),
                        t.max_position_embeddings,
                        t.hidden_size,
                        0.02 * factor,
                    ),
                },
                encoder: ClipEncoder::new(
                    &text.at("encoder"),
                    EncoderShape {
                        width: t.hidden_size,
                        inner: t.intermediate_size,
                        layers: t.num_hidden_layers,
                        heads: t.num_attention_heads,
                        activation: t.hidden_act,
                        eps: t.layer_norm_eps,
                    },
                    factor,
                ),
                final_layer_norm: LayerNorm::new(
                    &text.at("final_layer_norm"),
                    t.hidden_size,
                    t.layer_norm_eps,
                ),
                eos_token_id: t.eos_token_id,
            },
            vision_model: ClipVisionTransformer {
                embeddings: ClipVisionEmbeddings {
                    class_embedding: vision_embeddings.normal(
                        "class_embedding",
                        [v.hidden_size],
                        vision_width.powf(-0.5) * factor,
                    ),
                    patch_embedding: PatchEmbedding {
                        weight: vision_embeddings.at("patch_embedding").normal(
                            "weight",
                            [v.hidden_size, v.num_channels, v.patch_size, v.patch_size],
                            v.initializer_range * factor,
                        ),
                        patch_size: v.patch_size,
                    },
                    position_embedding: embedding(
                        &vision_embeddings.at("position_embedding"),
                        v.num_patches() + 1,
                        v.hidden_size,
                        v.initializer_range * factor,
                    ),
                    image_size: v.image_size,
                },
                pre_layrnorm: LayerNorm::new(
                    &vision.at("pre_layrnorm"),
                    v.hidden_size,
                    v.layer_norm_eps,
                ),
                encoder: ClipEncoder::new(
                    &vision.at("encoder"),
                    EncoderShape {
                        width: v.hidden_size,
                        inner: v.intermediate_size,
                        layers: v.num_hidden_layers,
                        heads: v.num_attention_heads,
                        activation: v.hidden_act,
                        eps: v.layer_norm_eps,
                    },
                    factor,
                ),
                post_layernorm: LayerNorm::new(
                    &vision.at("post_layernorm"),
                    v.hidden_size,
                    v.layer_norm_eps,
                ),
            },
            visual_projection: Linear::new(
                &init.at("visual_projection"),
                v.hidden_size,
                self.projection_dim,
                false,
                vision_width.powf(-0.5) * factor,
            ),
            text_projection: Linear::new(
                &init.at("text_projection"),
                t.hidden_size,
                self.projection_dim,
                false,
                text_width.powf(-0.5) * factor,
            ),
            logit_scale: Param::from_tensor(
                Tensor::ones([1], init.device()).mul_scalar(self.logit_scale_init_value),
            ),
        }
    }
}

/// The shape of one tower's encoder.
#[derive(Debug, Clone, Copy)]
struct EncoderShape {
    width: usize,
    inner: usize,
    layers: usize,
    heads: usize,
    activation: ClipActivation,
    eps: f64,
}

/// Multi-head self-attention with biased projections (`q_proj`, `k_proj`, `v_proj`,
/// `out_proj`).
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    /// Heads.
    pub num_heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// # Shapes
    /// `x`: `[batch, seq, hidden]`, `mask`: `[seq, seq]` (true = hidden) → same as `x`.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let q = self.q_proj.forward(x.clone());
        let k = self.k_proj.forward(x.clone());
        let v = self.v_proj.forward(x);
        self.out_proj
            .forward(multi_head_attention(q, k, v, self.num_heads, mask))
    }
}

/// The feed-forward block `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// Up projection.
    pub fc1: Linear<B>,
    /// Down projection.
    pub fc2: Linear<B>,
    /// Activation between them.
    #[module(skip)]
    pub activation: ClipActivation,
}

/// One pre-norm encoder layer, shared by both towers.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// Norm before attention.
    pub layer_norm1: LayerNorm<B>,
    /// Attention block.
    pub self_attn: ClipAttention<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
    /// MLP block.
    pub mlp: ClipMlp<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// transformers' rules for a layer of an encoder of `shape` (before the factor): the
    /// attention inputs and `fc2` normal with std `width^-0.5 · (2 · layers)^-0.5`, `out_proj`
    /// `width^-0.5`, `fc1` `(2 · width)^-0.5`; biases zero, norms one.
    fn new(init: &Init<'_, B>, shape: EncoderShape, factor: f64) -> Self {
        let width = shape.width as f64;
        let deep = (2.0 * shape.layers as f64).powf(-0.5);
        let (in_std, out_std) = (width.powf(-0.5) * deep * factor, width.powf(-0.5) * factor);
        let fc1_std = (2.0 * width).powf(-0.5) * factor;
        let (w, inner) = (shape.width, shape.inner);
        let attn = init.at("self_attn");
        let mlp = init.at("mlp");
        Self {
            layer_norm1: LayerNorm::new(&init.at("layer_norm1"), w, shape.eps),
            self_attn: ClipAttention {
                q_proj: Linear::new(&attn.at("q_proj"), w, w, true, in_std),
                k_proj: Linear::new(&attn.at("k_proj"), w, w, true, in_std),
                v_proj: Linear::new(&attn.at("v_proj"), w, w, true, in_std),
                out_proj: Linear::new(&attn.at("out_proj"), w, w, true, out_std),
                num_heads: shape.heads,
            },
            layer_norm2: LayerNorm::new(&init.at("layer_norm2"), w, shape.eps),
            mlp: ClipMlp {
                fc1: Linear::new(&mlp.at("fc1"), w, inner, true, fc1_std),
                fc2: Linear::new(&mlp.at("fc2"), inner, w, true, in_std),
                activation: shape.activation,
            },
        }
    }

    fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        let mlp = &self.mlp;
        let hidden = mlp
            .activation
            .apply(mlp.fc1.forward(self.layer_norm2.forward(x.clone())));
        x + mlp.fc2.forward(hidden)
    }
}

/// The six projections, under their own names (`q_proj`, ..., `fc2`; see
/// [`CLIP_LORA_TARGETS`] for the short forms).
impl<B: Backend> LoraLinears<B> for ClipEncoderLayer<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let attn = child(prefix, "self_attn");
        let a = self.self_attn;
        self.self_attn = ClipAttention {
            q_proj: f(&child(&attn, "q_proj"), "q_proj", a.q_proj),
            k_proj: f(&child(&attn, "k_proj"), "k_proj", a.k_proj),
            v_proj: f(&child(&attn, "v_proj"), "v_proj", a.v_proj),
            out_proj: f(&child(&attn, "out_proj"), "out_proj", a.out_proj),
            num_heads: a.num_heads,
        };
        let mlp = child(prefix, "mlp");
        self.mlp.fc1 = f(&child(&mlp, "fc1"), "fc1", self.mlp.fc1);
        self.mlp.fc2 = f(&child(&mlp, "fc2"), "fc2", self.mlp.fc2);
        self
    }
}

impl<B: Backend> LoraLinears<B> for ClipEncoder<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let layers = child(prefix, "layers");
        self.layers = std::mem::take(&mut self.layers)
            .into_iter()
            .enumerate()
            .map(|(i, layer)| layer.map_linears(&child(&layers, i), f))
            .collect();
        self
    }
}

/// A stack of encoder layers (`encoder.layers.N`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// The layers.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

impl<B: Backend> ClipEncoder<B> {
    fn new(init: &Init<'_, B>, shape: EncoderShape, factor: f64) -> Self {
        Self {
            layers: (0..shape.layers)
                .map(|i| ClipEncoderLayer::new(&init.at("layers").at(i), shape, factor))
                .collect(),
        }
    }

    fn forward(&self, mut x: Tensor<B, 3>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        x
    }
}

/// Token and learned position embeddings of the text tower.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    /// `[vocab, hidden]`.
    pub token_embedding: Embedding<B>,
    /// `[max_position_embeddings, hidden]`.
    pub position_embedding: Embedding<B>,
}

/// The text tower (`text_model.*`).
#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    /// Embeddings.
    pub embeddings: ClipTextEmbeddings<B>,
    /// Causal encoder.
    pub encoder: ClipEncoder<B>,
    /// Norm after the encoder.
    pub final_layer_norm: LayerNorm<B>,
    /// Token whose position is pooled (see [`eos_positions`]).
    pub eos_token_id: u32,
}

/// The position each row of `tokens` (row-major `[rows, text_len]`) is pooled at, as
/// transformers 5 does: with `eos_token_id == 2` (old OpenAI configs) the first position of the
/// row's highest id; otherwise the first position holding `eos_token_id`, or 0 when the row
/// has none (torch's argmax of an all-zero row).
pub fn eos_positions(tokens: &[u32], text_len: usize, eos_token_id: u32) -> Vec<usize> {
    tokens
        .chunks(text_len)
        .map(|row| {
            if eos_token_id == 2 {
                // The first maximum, as torch.argmax.
                let mut best = 0;
                for (i, &t) in row.iter().enumerate() {
                    if t > row[best] {
                        best = i;
                    }
                }
                best
            } else {
                row.iter().position(|&t| t == eos_token_id).unwrap_or(0)
            }
        })
        .collect()
}

impl<B: Backend> ClipTextTransformer<B> {
    /// Final hidden states at each row's EOS position (see [`eos_positions`]).
    ///
    /// # Shapes
    /// `tokens`: row-major `[rows, text_len]` → `[rows, hidden]`.
    pub fn pooled(&self, tokens: &[u32], text_len: usize) -> Tensor<B, 2> {
        let weight = self.embeddings.token_embedding.weight.val();
        let device = weight.device();
        let max_len = self.embeddings.position_embedding.weight.dims()[0];
        assert!(
            text_len > 0 && text_len <= max_len && tokens.len().is_multiple_of(text_len),
            "CLIP captions must be padded to one length in 1..={max_len} (got {text_len} for {} tokens)",
            tokens.len()
        );
        let rows = tokens.len() / text_len;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, text_len]), &device);
        let positions = self
            .embeddings
            .position_embedding
            .weight
            .val()
            .narrow(0, 0, text_len)
            .unsqueeze::<3>();
        let x = self.embeddings.token_embedding.forward(ids) + positions;
        // `true` above the diagonal: a position never attends to a later one, which is also
        // why padding after the EOS cannot reach the pooled EOS state.
        let mask = Tensor::<B, 2, Bool>::tril_mask([text_len, text_len], 0, &device);
        let hidden = self
            .final_layer_norm
            .forward(self.encoder.forward(x, Some(mask)));
        let width = hidden.dims()[2];
        let flat: Vec<i64> = eos_positions(tokens, text_len, self.eos_token_id)
            .into_iter()
            .enumerate()
            .map(|(row, pos)| (row * text_len + pos) as i64)
            .collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [rows]), &device);
        hidden.reshape([rows * text_len, width]).select(0, index)
    }
}

/// Non-overlapping patches projected by a convolution without bias whose stride equals its
/// kernel (`patch_embedding.weight` `[hidden, channels, patch, patch]`, PyTorch's layout),
/// computed as an unfold and one matrix product.
#[derive(Module, Debug)]
pub struct PatchEmbedding<B: Backend> {
    /// Convolution kernel `[hidden, channels, patch, patch]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Patch side.
    pub patch_size: usize,
}

impl<B: Backend> PatchEmbedding<B> {
    /// # Shapes
    /// `pixels`: `[batch, channels, h, w]` → `[batch, (h / p) · (w / p), hidden]`, patches in
    /// row-major order as the flattened convolution output.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        patch_projection(pixels, self.weight.val())
    }
}

/// Class token, patch and learned position embeddings of the vision tower.
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// The class token `[hidden]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// Patch projection.
    pub patch_embedding: PatchEmbedding<B>,
    /// `[patches + 1, hidden]`.
    pub position_embedding: Embedding<B>,
    /// Side of the expected image.
    pub image_size: usize,
}

/// The vision tower (`vision_model.*`).
#[derive(Module, Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    /// Embeddings.
    pub embeddings: ClipVisionEmbeddings<B>,
    /// Norm before the encoder (transformers' spelling).
    pub pre_layrnorm: LayerNorm<B>,
    /// Encoder (no mask).
    pub encoder: ClipEncoder<B>,
    /// Norm of the pooled class token.
    pub post_layernorm: LayerNorm<B>,
}

impl<B: Backend> ClipVisionTransformer<B> {
    /// The normalised class-token state.
    ///
    /// # Shapes
    /// `pixels`: `[batch, channels, image_size, image_size]` → `[batch, hidden]`.
    pub fn pooled(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let [batch, _, h, w] = pixels.dims();
        let size = self.embeddings.image_size;
        // transformers refuses other sizes too unless asked to interpolate positions.
        assert!(
            h == size && w == size,
            "CLIP expects {size}x{size} images, got {h}x{w}"
        );
        let patches = self.embeddings.patch_embedding.forward(pixels);
        let width = patches.dims()[2];
        let class = self
            .embeddings
            .class_embedding
            .val()
            .reshape([1, 1, width])
            .repeat_dim(0, batch);
        let x = Tensor::cat(vec![class, patches], 1)
            + self
                .embeddings
                .position_embedding
                .weight
                .val()
                .unsqueeze::<3>();
        let hidden = self.encoder.forward(self.pre_layrnorm.forward(x), None);
        let class_state = hidden.narrow(1, 0, 1).reshape([batch, width]);
        self.post_layernorm.forward(class_state)
    }
}

/// CLIP: both towers, their projections and the learned temperature.
#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    /// Text tower.
    pub text_model: ClipTextTransformer<B>,
    /// Vision tower.
    pub vision_model: ClipVisionTransformer<B>,
    /// Image projection (no bias).
    pub visual_projection: Linear<B>,
    /// Text projection (no bias).
    pub text_projection: Linear<B>,
    /// Log inverse temperature, `[1]` (0-d in Hugging Face checkpoints).
    pub logit_scale: Param<Tensor<B, 1>>,
}

/// What a forward pass over image–caption pairs gives.
#[derive(Debug, Clone)]
pub struct ClipOutput<B: Backend> {
    /// Scaled cosine similarities `[images, texts]`.
    pub logits_per_image: Tensor<B, 2>,
    /// Its transpose `[texts, images]`.
    pub logits_per_text: Tensor<B, 2>,
    /// L2-normalised text embeddings `[texts, projection_dim]`.
    pub text_embeds: Tensor<B, 2>,
    /// L2-normalised image embeddings `[images, projection_dim]`.
    pub image_embeds: Tensor<B, 2>,
}

/// Divide each row by its L2 norm.
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / norm
}

/// The symmetric InfoNCE loss of CLIP: the mean of the cross-entropies of each row of
/// `logits_per_text` `[n, n]` and of each column, against the diagonal (pair i matches i).
pub fn clip_loss<B: FusedOps>(logits_per_text: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = logits_per_text.dims()[0];
    let device = logits_per_text.device();
    let diagonal = Tensor::<B, 1, Int>::arange(0..n as i64, &device);
    let caption = cross_entropy(logits_per_text.clone(), diagonal.clone()).mean();
    let image = cross_entropy(logits_per_text.transpose(), diagonal).mean();
    (caption + image).div_scalar(2.0)
}

impl<B: Backend> ClipModel<B> {
    fn device(&self) -> B::Device {
        self.logit_scale.val().device()
    }

    /// Upload a batch's pixels, `[batch, channels, h, w]`.
    pub fn batch_pixels(&self, batch: &ImageBatch) -> Tensor<B, 4> {
        let [c, h, w] = batch.shape;
        Tensor::from_data(
            TensorData::new(batch.pixels.clone(), [batch.batch_size, c, h, w]),
            &self.device(),
        )
    }

    /// Projected, unnormalised image features (`get_image_features`).
    ///
    /// # Shapes
    /// `pixels`: `[batch, channels, h, w]` → `[batch, projection_dim]`.
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        project(&self.visual_projection, self.vision_model.pooled(pixels))
    }

    /// Projected, unnormalised text features (`get_text_features`) of padded token rows,
    /// row-major `[rows, text_len]` → `[rows, projection_dim]`.
    pub fn text_features(&self, tokens: &[u32], text_len: usize) -> Tensor<B, 2> {
        project(
            &self.text_projection,
            self.text_model.pooled(tokens, text_len),
        )
    }

    /// Both towers on image–caption pairs, as `CLIPModel.forward`.
    pub fn forward(&self, pixels: Tensor<B, 4>, tokens: &[u32], text_len: usize) -> ClipOutput<B> {
        let image_embeds = l2_normalize(self.image_features(pixels));
        let text_embeds = l2_normalize(self.text_features(tokens, text_len));
        let scale = self.logit_scale.val().exp().unsqueeze::<2>();
        let logits_per_text = text_embeds.clone().matmul(image_embeds.clone().transpose()) * scale;
        ClipOutput {
            logits_per_image: logits_per_text.clone().transpose(),
            logits_per_text,
            text_embeds,
            image_embeds,
        }
    }

    /// [`ClipModel::forward`] on a batch with captions. Panics on a batch without captions.
    pub fn forward_batch(&self, batch: &ImageBatch) -> ClipOutput<B> {
        assert!(
            batch.text_len > 0 && batch.text.len() == batch.batch_size * batch.text_len,
            "CLIP trains on image–caption pairs: the batch has no captions"
        );
        self.forward(self.batch_pixels(batch), &batch.text, batch.text_len)
    }
}

fn project<B: Backend>(projection: &Linear<B>, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, _] = pooled.dims();
    let out = projection.forward(pooled.unsqueeze_dim::<3>(1));
    let width = out.dims()[2];
    out.reshape([rows, width])
}

impl<B: FusedOps> TaskModel<B> for ClipModel<B> {
    type Batch = ImageBatch;

    fn forward_step(&self, batch: &ImageBatch) -> StepOutput<B> {
        let out = self.forward_batch(batch);
        let n = batch.batch_size;
        let loss = clip_loss(out.logits_per_text);
        StepOutput {
            loss,
            // Distilling these logits matches each image's distribution over the batch's
            // captions to a teacher's (ZSCL's image→text distillation).
            logits: Some(out.logits_per_image.reshape([n, 1, n])),
            features: Some(out.image_embeds),
            count: n,
        }
    }
}

impl<B: Backend> cpt_core::ImageEncoder<B> for ClipModel<B> {
    /// The L2-normalised image embeddings: what zero-shot and nearest-mean classifiers compare.
    fn image_features(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        l2_normalize(ClipModel::image_features(self, self.batch_pixels(batch)))
    }
}

impl<B: Backend> cpt_core::ImageTextModel<B> for ClipModel<B> {
    fn image_embeds(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        l2_normalize(ClipModel::image_features(self, self.batch_pixels(batch)))
    }

    fn text_embeds(&self, tokens: &[u32], text_len: usize) -> Tensor<B, 2> {
        l2_normalize(self.text_features(tokens, text_len))
    }
}

/// The attention and MLP projections of both towers; the projections into the shared space
/// carry no adapter.
impl<B: Backend> LoraLinears<B> for ClipModel<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let text = child(&child(prefix, "text_model"), "encoder");
        self.text_model.encoder = self.text_model.encoder.map_linears(&text, f);
        let vision = child(&child(prefix, "vision_model"), "encoder");
        self.vision_model.encoder = self.vision_model.encoder.map_linears(&vision, f);
        self
    }
}

impl<B: Backend> cpt_core::AdapterModel for ClipModel<B> {
    type Spec = crate::linear::LoraSpec;

    fn with_adapters(self, spec: &Self::Spec, seed: u64) -> Self {
        adapters::add_adapters(self, spec, seed)
    }

    fn merge_adapters(self) -> Self {
        adapters::merge_adapters(self)
    }

    fn drop_adapters(self) -> Self {
        adapters::drop_adapters(self)
    }
}
