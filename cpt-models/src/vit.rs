//! Vision Transformer ("An Image is Worth 16x16 Words: Transformers for Image Recognition at
//! Scale", 2021) for image classification, in the Hugging Face `ViTForImageClassification`
//! layout.
//!
//! Non-overlapping patches embedded by a convolution with kernel = stride = patch, a learned CLS
//! token and learned position embeddings, pre-norm encoder layers with exact (erf) GELU, a final
//! LayerNorm and a linear head on the CLS token. Module field names reproduce the names
//! transformers writes into checkpoints (`vit.encoder.layer.0.attention.attention.query`), so the
//! Hugging Face key map is the identity up to the transposition of 2-D linear weights; the patch
//! convolution's weight is kept in PyTorch's `[out, in, kh, kw]` layout and needs no mapping.
//!
//! The encoder pieces ([`ViTLayer`], [`LayerNorm`], [`ViTPatchEmbeddings`]) are shared with
//! ViT-MAE (`vit_mae.rs`), whose encoder and decoder layers carry the same parameter names.

use crate::adapters::{self, LinearFn, LoraLinears, child};
use crate::blocks::{Init, LayerNorm, gelu, multi_head_attention, patch_projection};
use crate::linear::{Linear, LoraSpec};
use burn::module::{Module, Param, ParamId};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use cpt_core::fused::{FusedOps, cross_entropy};
use cpt_core::{ImageBatch, ImageClassifier, ImageEncoder, StepOutput, TaskModel};
use serde::{Deserialize, Serialize};

/// LoRA target names of ViT (and ViT-MAE) projections, for `LoraSpec::target_modules`:
/// `query`, `key`, `value` (attention inputs), `attention_output` (`attention.output.dense`),
/// `intermediate` (`intermediate.dense`, the MLP's up-projection) and `output` (`output.dense`,
/// its down-projection). `q`, `k`, `v` and `o` are accepted for the first four, so a target list
/// written for LLaMA (`[q, v]`) means the same projections here.
pub const VIT_LORA_TARGETS: &[&str] = &[
    "query",
    "key",
    "value",
    "attention_output",
    "intermediate",
    "output",
];

/// Extra LoRA target of [`ViTForImageClassification`]: an adapter on the classification head.
pub const CLASSIFIER_TARGET: &str = "classifier";

/// ViT hyperparameters, with the field names of transformers' `ViTConfig` (`num_labels` is the
/// length of its `id2label`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViTConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// MLP activation; only `gelu` (exact, erf-based) is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Height and width of the (square) input images.
    pub image_size: usize,
    /// Height and width of the (square) patches.
    pub patch_size: usize,
    /// Image channels.
    #[serde(default = "default_num_channels")]
    pub num_channels: usize,
    /// Biases on the query/key/value projections.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// Classes of the classification head.
    pub num_labels: usize,
    /// Standard deviation of the normal initialisation of weights.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

pub(crate) fn default_hidden_act() -> String {
    "gelu".into()
}
pub(crate) fn default_layer_norm_eps() -> f64 {
    1e-12
}
pub(crate) fn default_num_channels() -> usize {
    3
}
pub(crate) fn default_true() -> bool {
    true
}
pub(crate) fn default_initializer_range() -> f64 {
    0.02
}

/// The shape of one stack of encoder layers (ViT's encoder, MAE's encoder or decoder).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderDims {
    /// Residual width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Biases on query/key/value.
    pub qkv_bias: bool,
    /// LayerNorm epsilon.
    pub eps: f64,
}

/// Shape checks shared by ViT and ViT-MAE; names the offending field.
pub(crate) fn validate_common(
    positive: &[(&str, usize)],
    hidden_act: &str,
    hidden_heads: &[(&str, usize, &str, usize)],
    image_size: usize,
    patch_size: usize,
) -> Result<(), String> {
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{name} must be positive"));
    }
    if hidden_act != "gelu" {
        return Err(format!(
            "hidden_act `{hidden_act}` is not supported (only `gelu`, the exact erf form)"
        ));
    }
    for (hidden, h, heads, n) in hidden_heads {
        if !h.is_multiple_of(*n) {
            return Err(format!("{hidden} must be a multiple of {heads}"));
        }
    }
    if !image_size.is_multiple_of(patch_size) {
        return Err("image_size must be a multiple of patch_size".into());
    }
    Ok(())
}

impl ViTConfig {
    /// Check the shape constraints; the message starts with the offending field.
    pub fn validate(&self) -> Result<(), String> {
        validate_common(
            &[
                ("hidden_size", self.hidden_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("intermediate_size", self.intermediate_size),
                ("image_size", self.image_size),
                ("patch_size", self.patch_size),
                ("num_channels", self.num_channels),
            ],
            &self.hidden_act,
            &[(
                "hidden_size",
                self.hidden_size,
                "num_attention_heads",
                self.num_attention_heads,
            )],
            self.image_size,
            self.patch_size,
        )?;
        // transformers treats one label as regression (MSE); cpt's head is a classifier only.
        if self.num_labels < 2 {
            return Err(
                "num_labels must be at least 2 (id2label needs two or more classes)".into(),
            );
        }
        Ok(())
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Shape of the encoder layers.
    pub fn encoder_dims(&self) -> EncoderDims {
        EncoderDims {
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            qkv_bias: self.qkv_bias,
            eps: self.layer_norm_eps,
        }
    }

    /// Build the model with weights drawn from `seed` alone: normal with std
    /// `initializer_range` (transformers draws the CLS token and position embeddings from a
    /// truncated normal; the difference is immaterial for training from scratch), zero biases,
    /// unit LayerNorm weights. The draws come from cpt's RNG keyed by parameter path, so the same
    /// seed gives the same model on every backend and thread (see [`Init`]).
    pub fn init_seeded<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> ViTForImageClassification<B> {
        self.build(&Init::seeded(seed, device))
    }

    /// Build the model with the same rules, drawn from burn's backend RNG. Prefer
    /// [`ViTConfig::init_seeded`] for reproducible runs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ViTForImageClassification<B> {
        self.build(&Init::backend(device))
    }

    fn build<B: Backend>(&self, init: &Init<'_, B>) -> ViTForImageClassification<B> {
        let std = self.initializer_range;
        let hidden = self.hidden_size;
        let vit = init.at("vit");
        let embeddings = vit.at("embeddings");
        ViTForImageClassification {
            vit: ViTModel {
                embeddings: ViTEmbeddings {
                    cls_token: embeddings.normal("cls_token", [1, 1, hidden], std),
                    position_embeddings: embeddings.normal(
                        "position_embeddings",
                        [1, self.num_patches() + 1, hidden],
                        std,
                    ),
                    patch_embeddings: ViTPatchEmbeddings::new(
                        &embeddings.at("patch_embeddings"),
                        self.num_channels,
                        self.patch_size,
                        hidden,
                        std,
                    ),
                },
                encoder: ViTEncoder::new(
                    &vit.at("encoder"),
                    self.encoder_dims(),
                    self.num_hidden_layers,
                    std,
                ),
                layernorm: LayerNorm::new(&vit.at("layernorm"), hidden, self.layer_norm_eps),
            },
            classifier: Linear::new(&init.at("classifier"), hidden, self.num_labels, true, std),
            image_size: self.image_size,
        }
    }
}

/// The patch convolution (`projection`, kernel = stride = patch), its weight in PyTorch's
/// `[out, in, kh, kw]` layout so checkpoints load without reordering.
#[derive(Module, Debug)]
pub struct PatchProjection<B: Backend> {
    /// Kernel `[hidden, channels, patch, patch]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias `[hidden]`.
    pub bias: Param<Tensor<B, 1>>,
}

/// Images to patch embeddings (`embeddings.patch_embeddings`).
#[derive(Module, Debug)]
pub struct ViTPatchEmbeddings<B: Backend> {
    /// The patch convolution.
    pub projection: PatchProjection<B>,
    /// Patch height and width.
    pub patch_size: usize,
}

impl<B: Backend> ViTPatchEmbeddings<B> {
    /// A projection of `channels × patch × patch` pixels to `hidden`: kernel normal with
    /// standard deviation `std`, zero bias.
    pub fn new(init: &Init<'_, B>, channels: usize, patch: usize, hidden: usize, std: f64) -> Self {
        let projection = init.at("projection");
        Self {
            projection: PatchProjection {
                weight: projection.normal("weight", [hidden, channels, patch, patch], std),
                bias: projection.zeros([hidden]),
            },
            patch_size: patch,
        }
    }

    /// # Shapes
    /// `pixels`: `[batch, channels, height, width]` → `[batch, patches, hidden]` (see
    /// [`patch_projection`]).
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        patch_projection(pixels, self.projection.weight.val())
            + self.projection.bias.val().unsqueeze::<3>()
    }
}

/// Query/key/value projections and multi-head attention (`attention.attention`).
#[derive(Module, Debug)]
pub struct ViTSelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Heads.
    pub num_heads: usize,
}

impl<B: Backend> ViTSelfAttention<B> {
    /// Bidirectional attention over every position.
    ///
    /// # Shapes
    /// `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]` (heads merged, before the output
    /// projection).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = self.query.forward(x.clone());
        let k = self.key.forward(x.clone());
        let v = self.value.forward(x);
        multi_head_attention(q, k, v, self.num_heads, None)
    }
}

/// A block holding one linear layer named `dense` (`attention.output`, `intermediate`, `output`
/// in transformers' checkpoint names).
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// The projection.
    pub dense: Linear<B>,
}

/// Self-attention and its output projection (`attention`).
#[derive(Module, Debug)]
pub struct ViTAttention<B: Backend> {
    /// Query/key/value and attention.
    pub attention: ViTSelfAttention<B>,
    /// Output projection (`attention.output.dense`).
    pub output: Dense<B>,
}

/// One pre-norm encoder layer: `x + attn(ln(x))`, then `x + mlp(ln(x))`.
#[derive(Module, Debug)]
pub struct ViTLayer<B: Backend> {
    /// Attention block.
    pub attention: ViTAttention<B>,
    /// MLP up-projection (`intermediate.dense`), followed by GELU.
    pub intermediate: Dense<B>,
    /// MLP down-projection (`output.dense`).
    pub output: Dense<B>,
    /// Norm before attention.
    pub layernorm_before: LayerNorm<B>,
    /// Norm before the MLP.
    pub layernorm_after: LayerNorm<B>,
}

impl<B: Backend> ViTLayer<B> {
    /// A layer of shape `dims`: weights normal with standard deviation `std`, zero biases,
    /// unit norms.
    pub fn new(init: &Init<'_, B>, dims: EncoderDims, std: f64) -> Self {
        let linear =
            |init: &Init<'_, B>, d_in, d_out, bias| Linear::new(init, d_in, d_out, bias, std);
        let h = dims.hidden;
        let attention = init.at("attention");
        let qkv = attention.at("attention");
        Self {
            attention: ViTAttention {
                attention: ViTSelfAttention {
                    query: linear(&qkv.at("query"), h, h, dims.qkv_bias),
                    key: linear(&qkv.at("key"), h, h, dims.qkv_bias),
                    value: linear(&qkv.at("value"), h, h, dims.qkv_bias),
                    num_heads: dims.heads,
                },
                output: Dense {
                    dense: linear(&attention.at("output").at("dense"), h, h, true),
                },
            },
            intermediate: Dense {
                dense: linear(
                    &init.at("intermediate").at("dense"),
                    h,
                    dims.intermediate,
                    true,
                ),
            },
            output: Dense {
                dense: linear(&init.at("output").at("dense"), dims.intermediate, h, true),
            },
            layernorm_before: LayerNorm::new(&init.at("layernorm_before"), h, dims.eps),
            layernorm_after: LayerNorm::new(&init.at("layernorm_after"), h, dims.eps),
        }
    }

    /// # Shapes
    /// `x`: `[batch, seq, hidden]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let attended = self
            .attention
            .attention
            .forward(self.layernorm_before.forward(x.clone()));
        let x = x + self.attention.output.dense.forward(attended);
        let up = gelu(
            self.intermediate
                .dense
                .forward(self.layernorm_after.forward(x.clone())),
        );
        x + self.output.dense.forward(up)
    }
}

/// The six projections, under the target names of [`VIT_LORA_TARGETS`].
impl<B: Backend> LoraLinears<B> for ViTLayer<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let attention = child(prefix, "attention");
        let qkv = |name| child(&child(&attention, "attention"), name);
        let a = self.attention.attention;
        self.attention.attention = ViTSelfAttention {
            query: f(&qkv("query"), "query", a.query),
            key: f(&qkv("key"), "key", a.key),
            value: f(&qkv("value"), "value", a.value),
            num_heads: a.num_heads,
        };
        let projection = child(&attention, "output.dense");
        let dense = self.attention.output.dense;
        self.attention.output.dense = f(&projection, "attention_output", dense);
        let intermediate = child(prefix, "intermediate.dense");
        self.intermediate.dense = f(&intermediate, "intermediate", self.intermediate.dense);
        self.output.dense = f(&child(prefix, "output.dense"), "output", self.output.dense);
        self
    }
}

impl<B: Backend> LoraLinears<B> for ViTEncoder<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let layers = child(prefix, "layer");
        self.layer = std::mem::take(&mut self.layer)
            .into_iter()
            .enumerate()
            .map(|(i, layer)| layer.map_linears(&child(&layers, i), f))
            .collect();
        self
    }
}

/// The encoder stack (`encoder.layer.N`).
#[derive(Module, Debug)]
pub struct ViTEncoder<B: Backend> {
    /// Layers.
    pub layer: Vec<ViTLayer<B>>,
}

impl<B: Backend> ViTEncoder<B> {
    /// `layers` layers of shape `dims` (see [`ViTLayer::new`]).
    pub fn new(init: &Init<'_, B>, dims: EncoderDims, layers: usize, std: f64) -> Self {
        Self {
            layer: (0..layers)
                .map(|i| ViTLayer::new(&init.at("layer").at(i), dims, std))
                .collect(),
        }
    }

    /// # Shapes
    /// `x`: `[batch, seq, hidden]` → same.
    pub fn forward(&self, mut x: Tensor<B, 3>) -> Tensor<B, 3> {
        for layer in &self.layer {
            x = layer.forward(x);
        }
        x
    }
}

/// CLS token, learned position embeddings and patch embeddings (`vit.embeddings`).
#[derive(Module, Debug)]
pub struct ViTEmbeddings<B: Backend> {
    /// CLS token `[1, 1, hidden]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Position embeddings `[1, 1 + patches, hidden]` (CLS first).
    pub position_embeddings: Param<Tensor<B, 3>>,
    /// Patch embeddings.
    pub patch_embeddings: ViTPatchEmbeddings<B>,
}

/// Embeddings, encoder and final norm (`vit.*`).
#[derive(Module, Debug)]
pub struct ViTModel<B: Backend> {
    /// Embeddings.
    pub embeddings: ViTEmbeddings<B>,
    /// Encoder layers.
    pub encoder: ViTEncoder<B>,
    /// Final norm.
    pub layernorm: LayerNorm<B>,
}

/// ViT with a linear classification head on the final CLS token.
#[derive(Module, Debug)]
pub struct ViTForImageClassification<B: Backend> {
    /// The transformer.
    pub vit: ViTModel<B>,
    /// Classification head.
    pub classifier: Linear<B>,
    /// Image height and width the position embeddings were made for.
    pub image_size: usize,
}

/// Upload a batch's pixels `[batch, channels, height, width]` to `device`.
pub fn batch_pixels<B: Backend>(batch: &ImageBatch, device: &B::Device) -> Tensor<B, 4> {
    let [c, h, w] = batch.shape;
    Tensor::from_data(
        TensorData::new(batch.pixels.clone(), [batch.batch_size, c, h, w]),
        device,
    )
}

/// Panic unless `pixels` are `size × size` images: position embeddings are made for one grid
/// (transformers raises the same error without `interpolate_pos_encoding`).
pub(crate) fn check_image_size<B: Backend>(pixels: &Tensor<B, 4>, size: usize) {
    let [_, _, h, w] = pixels.dims();
    assert!(
        h == size && w == size,
        "input image size ({h}*{w}) doesn't match the model ({size}*{size})"
    );
}

impl<B: Backend> ViTForImageClassification<B> {
    /// Final-layernormed hidden states, CLS first.
    ///
    /// # Shapes
    /// `pixels`: `[batch, channels, height, width]` → `[batch, 1 + patches, hidden]`.
    pub fn hidden_states(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        check_image_size(&pixels, self.image_size);
        let embeddings = &self.vit.embeddings;
        let patches = embeddings.patch_embeddings.forward(pixels);
        let [batch, _, hidden] = patches.dims();
        let cls = embeddings.cls_token.val().expand([batch, 1, hidden]);
        let x = Tensor::cat(vec![cls, patches], 1) + embeddings.position_embeddings.val();
        self.vit.layernorm.forward(self.vit.encoder.forward(x))
    }

    /// The final CLS token, `[batch, hidden]`: the classifier's input and the image features.
    pub fn cls_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let hidden = self.hidden_states(pixels);
        let [batch, _, width] = hidden.dims();
        hidden.narrow(1, 0, 1).reshape([batch, width])
    }

    /// Class logits of CLS features `[batch, hidden]`, as `[batch, 1, num_labels]`.
    fn head(&self, features: Tensor<B, 2>) -> Tensor<B, 3> {
        self.classifier.forward(features.unsqueeze_dim::<3>(1))
    }

    /// Class logits.
    ///
    /// # Shapes
    /// `pixels`: `[batch, channels, height, width]` → `[batch, num_labels]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let logits = self.head(self.cls_features(pixels));
        let [batch, _, classes] = logits.dims();
        logits.reshape([batch, classes])
    }

    /// Classes of the head.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    fn device(&self) -> B::Device {
        self.classifier.weight.device()
    }

    /// Upload a batch's labels as `[batch, 1]` class indices. Panics on a label outside
    /// `0..num_labels`: the data pipeline's label range must match the head (an unlabelled
    /// dataset's `-1` cannot train a classifier).
    pub fn batch_labels(&self, batch: &ImageBatch) -> Tensor<B, 2, Int> {
        let classes = self.num_labels();
        for &label in &batch.labels {
            assert!(
                (0..classes as i64).contains(&label),
                "label {label} is outside the classifier's 0..{classes}"
            );
        }
        Tensor::from_data(
            TensorData::new(batch.labels.clone(), [batch.batch_size, 1]),
            &self.device(),
        )
    }
}

/// Mean cross-entropy of `logits` `[batch, classes]` against `labels` `[batch, 1]`.
pub fn classification_loss<B: FusedOps>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let n = labels.dims()[0];
    cross_entropy(logits, labels.reshape([n])).mean()
}

impl<B: FusedOps> TaskModel<B> for ViTForImageClassification<B> {
    type Batch = ImageBatch;

    /// Cross-entropy on the batch labels; logits `[batch, 1, num_labels]`, features the final
    /// CLS token, count the number of images.
    fn forward_step(&self, batch: &ImageBatch) -> StepOutput<B> {
        let labels = self.batch_labels(batch);
        let features = self.cls_features(batch_pixels(batch, &self.device()));
        let logits = self.head(features.clone());
        let [n, _, classes] = logits.dims();
        let loss = classification_loss(logits.clone().reshape([n, classes]), labels);
        StepOutput {
            loss,
            logits: Some(logits),
            features: Some(features),
            count: batch.batch_size,
        }
    }
}

impl<B: Backend> ImageEncoder<B> for ViTForImageClassification<B> {
    fn image_features(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        self.cls_features(batch_pixels(batch, &self.device()))
    }
}

impl<B: Backend> ImageClassifier<B> for ViTForImageClassification<B> {
    fn class_logits(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        self.forward(batch_pixels(batch, &self.device()))
    }
}

/// The projections of every encoder layer, and the classification head (target
/// [`CLASSIFIER_TARGET`]): LoRA freezes every base weight, so without an adapter there the head
/// could not learn new classes.
impl<B: Backend> LoraLinears<B> for ViTForImageClassification<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let encoder = child(&child(prefix, "vit"), "encoder");
        self.vit.encoder = self.vit.encoder.map_linears(&encoder, f);
        let classifier = child(prefix, "classifier");
        self.classifier = f(&classifier, CLASSIFIER_TARGET, self.classifier);
        self
    }
}

impl<B: Backend> cpt_core::AdapterModel for ViTForImageClassification<B> {
    type Spec = LoraSpec;

    fn with_adapters(self, spec: &LoraSpec, seed: u64) -> Self {
        adapters::add_adapters(self, spec, seed)
    }

    fn merge_adapters(self) -> Self {
        adapters::merge_adapters(self)
    }

    fn drop_adapters(self) -> Self {
        adapters::drop_adapters(self)
    }
}

/// A parameter that is saved and loaded but never trained (MAE's fixed sin-cos tables, as
/// transformers' `nn.Parameter(..., requires_grad=False)`): no gradient is tracked for it, so
/// optimizers neither update nor decay it.
pub fn fixed_param<B: Backend, const D: usize>(value: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::new(), value.set_require_grad(false))
}
