//! Masked autoencoder pre-training of a ViT ("Masked Autoencoders Are Scalable Vision
//! Learners", 2021), in the Hugging Face `ViTMAEForPreTraining` layout.
//!
//! The encoder sees only the patches a random mask keeps (the lowest `1 - mask_ratio` of a
//! uniform noise per patch, exactly as transformers' `random_masking`); a narrower decoder puts a
//! learned mask token at every removed position, restores the patch order and predicts each
//! patch's pixels; the loss is the mean squared error over the removed patches only, optionally
//! against per-patch normalised pixels (`norm_pix_loss`). Position embeddings of encoder and
//! decoder are the fixed 2-D sin-cos tables: saved and loaded with the weights (transformers
//! keeps them in the checkpoint as `requires_grad=False` parameters) but never trained.
//!
//! Encoder and decoder layers are [`crate::vit::ViTLayer`]s, with ViT's parameter names.

use crate::adapters::{self, LinearFn, LoraLinears, child};
use crate::blocks::{Init, LayerNorm};
use crate::linear::{Linear, LoraSpec};
use crate::vit::{
    EncoderDims, ViTEncoder, ViTLayer, ViTPatchEmbeddings, batch_pixels, check_image_size,
    default_hidden_act, default_initializer_range, default_layer_norm_eps, default_num_channels,
    default_true, fixed_param, validate_common,
};
use burn::module::{Module, Param};
use burn::tensor::{Distribution, Int, Tensor, TensorData, backend::Backend};
use cpt_core::{ImageBatch, ImageEncoder, MaskedImageModel, StepOutput, TaskModel};
use serde::{Deserialize, Serialize};

/// ViT-MAE hyperparameters, with the field names of transformers' `ViTMAEConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViTMAEConfig {
    /// Encoder width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Encoder attention heads.
    pub num_attention_heads: usize,
    /// Encoder MLP width.
    pub intermediate_size: usize,
    /// MLP activation; only `gelu` (exact, erf-based) is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon (encoder and decoder).
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
    /// Standard deviation of the normal initialisation of weights.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Decoder attention heads.
    #[serde(default = "default_decoder_heads")]
    pub decoder_num_attention_heads: usize,
    /// Decoder width.
    #[serde(default = "default_decoder_hidden")]
    pub decoder_hidden_size: usize,
    /// Decoder layers.
    #[serde(default = "default_decoder_layers")]
    pub decoder_num_hidden_layers: usize,
    /// Decoder MLP width.
    #[serde(default = "default_decoder_intermediate")]
    pub decoder_intermediate_size: usize,
    /// Fraction of patches removed from the encoder's input.
    #[serde(default = "default_mask_ratio")]
    pub mask_ratio: f64,
    /// Regress per-patch normalised pixels (mean 0, variance 1) instead of raw ones.
    #[serde(default)]
    pub norm_pix_loss: bool,
}

pub(crate) fn default_decoder_heads() -> usize {
    16
}
pub(crate) fn default_decoder_hidden() -> usize {
    512
}
pub(crate) fn default_decoder_layers() -> usize {
    8
}
pub(crate) fn default_decoder_intermediate() -> usize {
    2048
}
pub(crate) fn default_mask_ratio() -> f64 {
    0.75
}

/// The variance floor of `norm_pix_loss`, as transformers.
const NORM_PIX_EPS: f64 = 1e-6;

impl ViTMAEConfig {
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
                (
                    "decoder_num_attention_heads",
                    self.decoder_num_attention_heads,
                ),
                ("decoder_hidden_size", self.decoder_hidden_size),
                ("decoder_intermediate_size", self.decoder_intermediate_size),
            ],
            &self.hidden_act,
            &[
                (
                    "hidden_size",
                    self.hidden_size,
                    "num_attention_heads",
                    self.num_attention_heads,
                ),
                (
                    "decoder_hidden_size",
                    self.decoder_hidden_size,
                    "decoder_num_attention_heads",
                    self.decoder_num_attention_heads,
                ),
            ],
            self.image_size,
            self.patch_size,
        )?;
        // The sin-cos tables split the width in four (sin/cos of row and column).
        for (name, width) in [
            ("hidden_size", self.hidden_size),
            ("decoder_hidden_size", self.decoder_hidden_size),
        ] {
            if !width.is_multiple_of(4) {
                return Err(format!(
                    "{name} must be a multiple of 4 (2-D sin-cos position embeddings)"
                ));
            }
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return Err("mask_ratio must be in [0, 1)".into());
        }
        if self.kept_patches() == 0 {
            return Err("mask_ratio must keep at least one patch".into());
        }
        Ok(())
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Patches the encoder sees: `int(num_patches * (1 - mask_ratio))`, as transformers.
    pub fn kept_patches(&self) -> usize {
        (self.num_patches() as f64 * (1.0 - self.mask_ratio)) as usize
    }

    /// Build the model with weights drawn from `seed` alone (normal with std
    /// `initializer_range`, zero biases, unit LayerNorm weights; transformers draws the patch
    /// kernel Xavier-uniform, immaterial from scratch), keyed by parameter path (see [`Init`]).
    /// The position tables are the fixed sin-cos ones.
    pub fn init_seeded<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> ViTMAEForPreTraining<B> {
        self.build(&Init::seeded(seed, device))
    }

    /// Build the model with the same rules, drawn from burn's backend RNG. Prefer
    /// [`ViTMAEConfig::init_seeded`] for reproducible runs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ViTMAEForPreTraining<B> {
        self.build(&Init::backend(device))
    }

    fn build<B: Backend>(&self, init: &Init<'_, B>) -> ViTMAEForPreTraining<B> {
        let std = self.initializer_range;
        let grid = self.image_size / self.patch_size;
        let table = |width: usize| {
            let values = sincos_position_table(grid, width);
            fixed_param(
                Tensor::<B, 1>::from_data(
                    TensorData::new(values, [(grid * grid + 1) * width]),
                    init.device(),
                )
                .reshape([1, grid * grid + 1, width]),
            )
        };
        let (hidden, decoder_hidden) = (self.hidden_size, self.decoder_hidden_size);
        let encoder_dims = EncoderDims {
            hidden,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            qkv_bias: self.qkv_bias,
            eps: self.layer_norm_eps,
        };
        let decoder_dims = EncoderDims {
            hidden: decoder_hidden,
            heads: self.decoder_num_attention_heads,
            intermediate: self.decoder_intermediate_size,
            ..encoder_dims
        };
        let (vit, decoder) = (init.at("vit"), init.at("decoder"));
        let embeddings = vit.at("embeddings");
        let pixels_per_patch = self.patch_size * self.patch_size * self.num_channels;
        ViTMAEForPreTraining {
            vit: ViTMAEModel {
                embeddings: ViTMAEEmbeddings {
                    cls_token: embeddings.normal("cls_token", [1, 1, hidden], std),
                    position_embeddings: table(hidden),
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
                    encoder_dims,
                    self.num_hidden_layers,
                    std,
                ),
                layernorm: LayerNorm::new(&vit.at("layernorm"), hidden, self.layer_norm_eps),
            },
            decoder: ViTMAEDecoder {
                decoder_embed: Linear::new(
                    &decoder.at("decoder_embed"),
                    hidden,
                    decoder_hidden,
                    true,
                    std,
                ),
                mask_token: decoder.normal("mask_token", [1, 1, decoder_hidden], std),
                decoder_pos_embed: table(decoder_hidden),
                decoder_layers: (0..self.decoder_num_hidden_layers)
                    .map(|i| ViTLayer::new(&decoder.at("decoder_layers").at(i), decoder_dims, std))
                    .collect(),
                decoder_norm: LayerNorm::new(
                    &decoder.at("decoder_norm"),
                    decoder_hidden,
                    self.layer_norm_eps,
                ),
                decoder_pred: Linear::new(
                    &decoder.at("decoder_pred"),
                    decoder_hidden,
                    pixels_per_patch,
                    true,
                    std,
                ),
            },
            image_size: self.image_size,
            patch_size: self.patch_size,
            mask_ratio: self.mask_ratio,
            norm_pix_loss: self.norm_pix_loss,
        }
    }
}

/// The MAE 2-D sin-cos position table `[1 + grid², width]`, row-major: a zero row for CLS, then
/// for the patch at (row h, column w) `[sin(w·ω) | cos(w·ω) | sin(h·ω) | cos(h·ω)]` with
/// `ω_i = 10000^(-i / (width/4))`, computed in f64 and rounded to f32 (the values of published
/// checkpoints and of transformers' `initialize_weights`).
pub fn sincos_position_table(grid: usize, width: usize) -> Vec<f32> {
    let quarter = width / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10_000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut table = vec![0.0f32; width];
    for h in 0..grid {
        for w in 0..grid {
            for pos in [w as f64, h as f64] {
                table.extend(omega.iter().map(|o| (pos * o).sin() as f32));
                table.extend(omega.iter().map(|o| (pos * o).cos() as f32));
            }
        }
    }
    table
}

/// Which patches the encoder keeps, from one noise value per patch (transformers'
/// `random_masking`): patches sorted by ascending noise, the first `keep` kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Masking {
    /// Images.
    pub batch: usize,
    /// Patches per image.
    pub patches: usize,
    /// Patches kept per image.
    pub keep: usize,
    /// Kept patch indices in shuffled order (ascending noise), row-major `[batch, keep]`.
    pub ids_keep: Vec<i64>,
    /// Position of each patch in the shuffled order (the inverse permutation), `[batch,
    /// patches]`: the decoder uses it to put patches back in place.
    pub ids_restore: Vec<i64>,
    /// 1 for removed patches, 0 for kept ones, `[batch, patches]`.
    pub mask: Vec<f32>,
}

impl Masking {
    /// The masking of `noise` (row-major `[batch, patches]`) keeping `keep` patches per image.
    /// Ties (measure zero for uniform noise) keep index order.
    pub fn from_noise(noise: &[f32], batch: usize, patches: usize, keep: usize) -> Self {
        assert_eq!(
            noise.len(),
            batch * patches,
            "noise must be [batch, patches]"
        );
        let mut out = Self {
            batch,
            patches,
            keep,
            ids_keep: Vec::with_capacity(batch * keep),
            ids_restore: vec![0; batch * patches],
            mask: vec![1.0; batch * patches],
        };
        for b in 0..batch {
            let row = &noise[b * patches..(b + 1) * patches];
            let mut order: Vec<usize> = (0..patches).collect();
            order.sort_by(|&i, &j| row[i].total_cmp(&row[j]));
            for (rank, &patch) in order.iter().enumerate() {
                out.ids_restore[b * patches + patch] = rank as i64;
                if rank < keep {
                    out.mask[b * patches + patch] = 0.0;
                }
            }
            out.ids_keep.extend(order[..keep].iter().map(|&p| p as i64));
        }
        out
    }

    /// Everything kept in place: the masking of ascending noise with mask ratio 0.
    pub fn none(batch: usize, patches: usize) -> Self {
        let ascending: Vec<f32> = (0..batch)
            .flat_map(|_| (0..patches).map(|p| p as f32))
            .collect();
        Self::from_noise(&ascending, batch, patches, patches)
    }

    /// Row indices into a `[batch * patches, width]` flattening for the kept patches, in
    /// shuffled order.
    fn keep_rows<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        let rows: Vec<i64> = self
            .ids_keep
            .iter()
            .enumerate()
            .map(|(i, &id)| (i / self.keep * self.patches) as i64 + id)
            .collect();
        Tensor::from_data(TensorData::new(rows, [self.batch * self.keep]), device)
    }

    /// Row indices into a `[batch * patches, width]` flattening of shuffled-order tokens that
    /// put every patch back at its place.
    fn restore_rows<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        let rows: Vec<i64> = self
            .ids_restore
            .iter()
            .enumerate()
            .map(|(i, &id)| (i / self.patches * self.patches) as i64 + id)
            .collect();
        Tensor::from_data(TensorData::new(rows, [self.batch * self.patches]), device)
    }
}

/// CLS token, fixed sin-cos position table and patch embeddings (`vit.embeddings`).
#[derive(Module, Debug)]
pub struct ViTMAEEmbeddings<B: Backend> {
    /// CLS token `[1, 1, hidden]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Fixed sin-cos table `[1, 1 + patches, hidden]` (CLS row zero); not trained.
    pub position_embeddings: Param<Tensor<B, 3>>,
    /// Patch embeddings.
    pub patch_embeddings: ViTPatchEmbeddings<B>,
}

/// The encoder (`vit.*`).
#[derive(Module, Debug)]
pub struct ViTMAEModel<B: Backend> {
    /// Embeddings.
    pub embeddings: ViTMAEEmbeddings<B>,
    /// Encoder layers.
    pub encoder: ViTEncoder<B>,
    /// Final norm.
    pub layernorm: LayerNorm<B>,
}

/// The decoder (`decoder.*`).
#[derive(Module, Debug)]
pub struct ViTMAEDecoder<B: Backend> {
    /// Encoder width to decoder width.
    pub decoder_embed: Linear<B>,
    /// Token put at every removed patch `[1, 1, decoder_hidden]`.
    pub mask_token: Param<Tensor<B, 3>>,
    /// Fixed sin-cos table `[1, 1 + patches, decoder_hidden]`; not trained.
    pub decoder_pos_embed: Param<Tensor<B, 3>>,
    /// Decoder layers.
    pub decoder_layers: Vec<ViTLayer<B>>,
    /// Final norm.
    pub decoder_norm: LayerNorm<B>,
    /// Pixel prediction per patch, `patch² · channels` values in (row, column, channel) order.
    pub decoder_pred: Linear<B>,
}

/// ViT-MAE encoder and decoder with the masked reconstruction loss.
#[derive(Module, Debug)]
pub struct ViTMAEForPreTraining<B: Backend> {
    /// Encoder.
    pub vit: ViTMAEModel<B>,
    /// Decoder.
    pub decoder: ViTMAEDecoder<B>,
    /// Image height and width.
    pub image_size: usize,
    /// Patch height and width.
    pub patch_size: usize,
    /// Fraction of patches removed.
    pub mask_ratio: f64,
    /// Regress per-patch normalised pixels.
    pub norm_pix_loss: bool,
}

/// What a masked forward pass produces.
#[derive(Debug, Clone)]
pub struct MaeOutput<B: Backend> {
    /// Mean squared error over removed patches, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Predicted pixels of every patch, `[batch, patches, patch² · channels]`.
    pub logits: Tensor<B, 3>,
    /// Final-layernormed encoder output of CLS and the kept patches, `[batch, 1 + keep, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// The masking used.
    pub masking: Masking,
}

impl<B: Backend> ViTMAEForPreTraining<B> {
    fn device(&self) -> B::Device {
        self.decoder.decoder_pred.weight.device()
    }

    /// Patches per image.
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Patches the encoder keeps under the configured mask ratio.
    pub fn kept_patches(&self) -> usize {
        (self.patches() as f64 * (1.0 - self.mask_ratio)) as usize
    }

    /// The masking drawn from `noise` `[batch, patches]` (read back to the host: sorting a few
    /// hundred values there keeps the ranking exact and identical on every backend).
    pub fn masking(&self, noise: Tensor<B, 2>) -> Masking {
        let [batch, patches] = noise.dims();
        assert_eq!(
            patches,
            self.patches(),
            "noise must have one value per patch"
        );
        let values = noise
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32");
        Masking::from_noise(&values, batch, patches, self.kept_patches())
    }

    /// Final-layernormed encoder output of CLS and the patches `masking` keeps (in its shuffled
    /// order).
    ///
    /// # Shapes
    /// `pixels`: `[batch, channels, height, width]` → `[batch, 1 + keep, hidden]`.
    pub fn encode(&self, pixels: Tensor<B, 4>, masking: &Masking) -> Tensor<B, 3> {
        check_image_size(&pixels, self.image_size);
        let embeddings = &self.vit.embeddings;
        let table = embeddings.position_embeddings.val().detach();
        let patches = embeddings.patch_embeddings.forward(pixels);
        let [batch, n, hidden] = patches.dims();
        let patches = patches + table.clone().narrow(1, 1, n);
        let kept = patches
            .reshape([batch * n, hidden])
            .select(0, masking.keep_rows(&self.device()))
            .reshape([batch, masking.keep, hidden]);
        let cls = (embeddings.cls_token.val() + table.narrow(1, 0, 1)).expand([batch, 1, hidden]);
        let x = Tensor::cat(vec![cls, kept], 1);
        self.vit.layernorm.forward(self.vit.encoder.forward(x))
    }

    /// Predicted pixels of every patch from the encoder output `latent` `[batch, 1 + keep,
    /// hidden]`, `[batch, patches, patch² · channels]`.
    pub fn decode(&self, latent: Tensor<B, 3>, masking: &Masking) -> Tensor<B, 3> {
        let d = &self.decoder;
        let x = d.decoder_embed.forward(latent);
        let [batch, seq, width] = x.dims();
        let n = masking.patches;
        let cls = x.clone().narrow(1, 0, 1);
        let visible = x.narrow(1, 1, seq - 1);
        let mut tokens = vec![visible];
        if n + 1 > seq {
            tokens.push(d.mask_token.val().expand([batch, n + 1 - seq, width]));
        }
        let restored = Tensor::cat(tokens, 1)
            .reshape([batch * n, width])
            .select(0, masking.restore_rows(&self.device()))
            .reshape([batch, n, width]);
        let mut x = Tensor::cat(vec![cls, restored], 1) + d.decoder_pos_embed.val().detach();
        for layer in &d.decoder_layers {
            x = layer.forward(x);
        }
        let pred = d.decoder_pred.forward(d.decoder_norm.forward(x));
        pred.narrow(1, 1, n)
    }

    /// Pixels as patches, `[batch, patches, patch² · channels]` with each patch in (row,
    /// column, channel) order: the decoder's prediction target (transformers' `patchify`).
    pub fn patchify(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, channels, height, width] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        pixels
            .reshape([batch, channels, gh, p, gw, p])
            .permute([0, 2, 4, 3, 5, 1])
            .reshape([batch, gh * gw, p * p * channels])
    }

    /// Mean squared error of `logits` against the patches of `pixels`, averaged over the removed
    /// patches only.
    pub fn reconstruction_loss(
        &self,
        pixels: Tensor<B, 4>,
        logits: Tensor<B, 3>,
        masking: &Masking,
    ) -> Tensor<B, 1> {
        let mut target = self.patchify(pixels);
        let [batch, n, values] = target.dims();
        if self.norm_pix_loss {
            let mean = target.clone().mean_dim(2);
            let centered = target - mean;
            // torch's `var` is the unbiased estimate (divides by values - 1).
            let var = centered
                .clone()
                .square()
                .sum_dim(2)
                .div_scalar((values - 1) as f64);
            target = centered / (var + NORM_PIX_EPS).sqrt();
        }
        let per_patch = (logits - target).square().mean_dim(2).reshape([batch, n]);
        let mask = Tensor::<B, 2>::from_data(
            TensorData::new(masking.mask.clone(), [batch, n]),
            &self.device(),
        );
        let removed = masking.mask.iter().filter(|&&m| m > 0.0).count();
        (per_patch * mask).sum().div_scalar(removed.max(1) as f64)
    }

    /// The masked forward pass and loss with the mask drawn from `noise` `[batch, patches]`
    /// (uniform in [0, 1); the lowest-noise patches are kept).
    pub fn forward_with_noise(&self, pixels: Tensor<B, 4>, noise: Tensor<B, 2>) -> MaeOutput<B> {
        let masking = self.masking(noise);
        let last_hidden_state = self.encode(pixels.clone(), &masking);
        let logits = self.decode(last_hidden_state.clone(), &masking);
        let loss = self.reconstruction_loss(pixels, logits.clone(), &masking);
        MaeOutput {
            loss,
            logits,
            last_hidden_state,
            masking,
        }
    }

    /// Image features without masking: every patch in place (transformers with `mask_ratio` 0
    /// and ascending noise), pooled as the mean of the final-layernormed patch tokens (CLS
    /// excluded, the global pooling MAE fine-tunes with).
    pub fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let [batch, ..] = pixels.dims();
        let masking = Masking::none(batch, self.patches());
        let hidden = self.encode(pixels, &masking);
        mean_patch_tokens(hidden)
    }

    fn noise(&self, batch: usize) -> Tensor<B, 2> {
        Tensor::random(
            [batch, self.patches()],
            Distribution::Uniform(0.0, 1.0),
            &self.device(),
        )
    }
}

/// Mean of the patch tokens (all but the first, CLS) of `[batch, 1 + n, width]`.
fn mean_patch_tokens<B: Backend>(hidden: Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, seq, width] = hidden.dims();
    hidden
        .narrow(1, 1, seq - 1)
        .mean_dim(1)
        .reshape([batch, width])
}

impl<B: Backend> TaskModel<B> for ViTMAEForPreTraining<B> {
    type Batch = ImageBatch;

    /// The masked reconstruction loss with noise from burn's backend RNG (the trainer re-seeds it
    /// before every step, so runs and resumes draw the same masks). Features are the mean of the
    /// encoder's kept patch tokens of this masked pass (cheap, but mask-dependent: two calls see
    /// different patches); no logits. Count: images.
    fn forward_step(&self, batch: &ImageBatch) -> StepOutput<B> {
        let pixels = batch_pixels(batch, &self.device());
        let out = self.forward_with_noise(pixels, self.noise(batch.batch_size));
        StepOutput {
            loss: out.loss,
            logits: None,
            features: Some(mean_patch_tokens(out.last_hidden_state)),
            count: batch.batch_size,
        }
    }
}

impl<B: Backend> ImageEncoder<B> for ViTMAEForPreTraining<B> {
    /// [`ViTMAEForPreTraining::features`]: no masking, mean of the patch tokens.
    fn image_features(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        self.features(batch_pixels(batch, &self.device()))
    }
}

impl<B: Backend> MaskedImageModel<B> for ViTMAEForPreTraining<B> {
    fn num_patches(&self) -> usize {
        self.patches()
    }

    fn masked_loss(&self, batch: &ImageBatch, noise: Tensor<B, 2>) -> Tensor<B, 1> {
        self.forward_with_noise(batch_pixels(batch, &self.device()), noise)
            .loss
    }
}

/// The projections of encoder and decoder layers (the same target names select both), so a
/// frozen base still reconstructs through a trainable decoder.
impl<B: Backend> LoraLinears<B> for ViTMAEForPreTraining<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let encoder = child(&child(prefix, "vit"), "encoder");
        self.vit.encoder = self.vit.encoder.map_linears(&encoder, f);
        let decoder = child(&child(prefix, "decoder"), "decoder_layers");
        self.decoder.decoder_layers = std::mem::take(&mut self.decoder.decoder_layers)
            .into_iter()
            .enumerate()
            .map(|(i, layer)| layer.map_linears(&child(&decoder, i), f))
            .collect();
        self
    }
}

impl<B: Backend> cpt_core::AdapterModel for ViTMAEForPreTraining<B> {
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
