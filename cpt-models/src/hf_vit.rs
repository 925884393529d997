//! Hugging Face folders for ViT (`model_type: vit`, `ViTForImageClassification`) and ViT-MAE
//! (`vit_mae`, `ViTMAEForPreTraining`): `config.json` and `model.safetensors` (or shards), f32,
//! f16 or bf16. Parameter paths equal the names transformers writes into checkpoints; 2-D linear
//! weights are transposed (burn stores `[in, out]`), the patch convolution's 4-D kernel is
//! stored as is.
//!
//! transformers 5 saves MAE decoder layers as `decoder.decoder_encoder.layer.N.*` where published
//! checkpoints (and transformers 4) have `decoder.decoder_layers.N.*`; both load, and cpt writes
//! the published spelling, which transformers 5 also reads.

use crate::error::{ModelError, Result};
use crate::hf_folder::{
    WEIGHTS_FILE, parse_mirror, read_config_json, transpose_where, write_model_folder,
};
use crate::hf_llama::read_weights;
use crate::vit::{self, ViTConfig, ViTForImageClassification};
use crate::vit_mae::{self, ViTMAEConfig, ViTMAEForPreTraining};
use burn::module::Module;
use burn::tensor::backend::Backend;
use cpt_core::params::{NamedTensors, load_named};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::path::Path;

/// The config of a vision model folder, by `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum VisionConfig {
    /// `model_type: vit`.
    ViT(ViTConfig),
    /// `model_type: vit_mae`.
    ViTMAE(ViTMAEConfig),
}

/// Read the `config.json` of a ViT or ViT-MAE folder.
pub fn read_config(dir: &Path) -> Result<VisionConfig> {
    let (json, path) = read_config_json(dir)?;
    parse_config(&json, &path)
}

/// Interpret config.json values of a ViT or ViT-MAE model, by `model_type`; `path` names the
/// file in errors.
pub fn parse_config(json: &Value, path: &Path) -> Result<VisionConfig> {
    /// Just the key that says which mirror reads the rest.
    #[derive(Deserialize)]
    struct ModelType {
        model_type: Option<String>,
    }
    let err = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        field: "model_type".into(),
        message,
    };
    match parse_mirror::<ModelType>(json, path)?.model_type.as_deref() {
        Some("vit") => Ok(VisionConfig::ViT(parse_vit_config(json, path)?)),
        Some("vit_mae") => Ok(VisionConfig::ViTMAE(parse_mae_config(json, path)?)),
        Some(other) => Err(err(format!(
            "`{other}` is not a supported vision model (expected `vit` or `vit_mae`)"
        ))),
        None => Err(err("missing (expected `vit` or `vit_mae`)".into())),
    }
}

/// Interpret the config.json of a `ViTForImageClassification` (defaults as transformers'
/// `ViTConfig`); `num_labels` is the number of `id2label` entries.
pub fn parse_vit_config(json: &Value, path: &Path) -> Result<ViTConfig> {
    parse_mirror::<HfViTConfig>(json, path)?.into_config(path)
}

/// Interpret the config.json of a `ViTMAEForPreTraining` (defaults as transformers'
/// `ViTMAEConfig`).
pub fn parse_mae_config(json: &Value, path: &Path) -> Result<ViTMAEConfig> {
    parse_mirror::<HfViTMAEConfig>(json, path)?.into_config(path)
}

/// The `config.json` fields transformers' `ViTConfig` and `ViTMAEConfig` share. Unknown keys
/// are ignored; every field is optional (`null` counts as absent) and takes transformers'
/// default in the conversion, which for the fields cpt's own configs also have is theirs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfViTCommon {
    /// `vit` or `vit_mae`.
    pub model_type: Option<String>,
    /// Width of the residual stream (default 768).
    pub hidden_size: Option<usize>,
    /// Encoder layers (default 12).
    pub num_hidden_layers: Option<usize>,
    /// Attention heads (default 12).
    pub num_attention_heads: Option<usize>,
    /// Width of the MLP (default 3072).
    pub intermediate_size: Option<usize>,
    /// MLP activation.
    pub hidden_act: Option<String>,
    /// LayerNorm epsilon.
    pub layer_norm_eps: Option<f64>,
    /// Image side (default 224).
    pub image_size: Option<HfSide>,
    /// Patch side (default 16).
    pub patch_size: Option<HfSide>,
    /// Image channels.
    pub num_channels: Option<usize>,
    /// Biases on query/key/value.
    pub qkv_bias: Option<bool>,
    /// Standard deviation of the weight initialisation.
    pub initializer_range: Option<f64>,
}

/// `image_size` / `patch_size`: an integer, or a `[height, width]` pair (transformers accepts
/// both; cpt's position embeddings are for square grids, so the pair's sides must be equal).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged, expecting = "an integer or [height, width]")]
pub enum HfSide {
    /// One side for both.
    Square(usize),
    /// `[height, width]`.
    Pair(usize, usize),
}

/// transformers' `ViTConfig` (`model_type: vit`) as `config.json` spells it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfViTConfig {
    /// The fields ViT-MAE shares.
    #[serde(flatten)]
    pub common: HfViTCommon,
    /// Class names by index; their number is the head's width.
    pub id2label: Option<Map<String, Value>>,
    /// The head's width when `id2label` is absent (default 2, as transformers).
    pub num_labels: Option<usize>,
}

/// transformers' `ViTMAEConfig` (`model_type: vit_mae`) as `config.json` spells it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfViTMAEConfig {
    /// The fields ViT shares.
    #[serde(flatten)]
    pub common: HfViTCommon,
    /// Decoder attention heads.
    pub decoder_num_attention_heads: Option<usize>,
    /// Decoder width.
    pub decoder_hidden_size: Option<usize>,
    /// Decoder layers.
    pub decoder_num_hidden_layers: Option<usize>,
    /// Decoder MLP width.
    pub decoder_intermediate_size: Option<usize>,
    /// Fraction of patches removed.
    pub mask_ratio: Option<f64>,
    /// Regress per-patch normalised pixels.
    pub norm_pix_loss: Option<bool>,
}

/// Errors about one field of one file.
struct Fields<'a> {
    path: &'a Path,
}

impl Fields<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Turn a `validate` message ("<field> must ...") into an error naming that field.
    fn invalid(&self, message: String) -> ModelError {
        let field = message
            .split_whitespace()
            .next()
            .unwrap_or("config")
            .to_string();
        self.error(&field, message)
    }

    fn check_model_type(&self, kind: Option<&str>, expected: &str) -> Result<()> {
        match kind {
            Some(kind) if kind != expected => Err(self.error(
                "model_type",
                format!("`{kind}` is not a {expected} model (expected `{expected}`)"),
            )),
            _ => Ok(()),
        }
    }

    fn side(&self, side: Option<HfSide>, name: &str, default: usize) -> Result<usize> {
        match side {
            None => Ok(default),
            Some(HfSide::Square(n)) => Ok(n),
            Some(HfSide::Pair(h, w)) if h == w => Ok(h),
            Some(HfSide::Pair(h, w)) => Err(self.error(
                name,
                format!("non-square {name} [{h}, {w}] is not supported"),
            )),
        }
    }
}

/// The shared fields with their defaults applied.
struct Common {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    image_size: usize,
    patch_size: usize,
    num_channels: usize,
    qkv_bias: bool,
    initializer_range: f64,
}

impl HfViTCommon {
    /// transformers' defaults for the shape (cpt's own configs have none: a run config states
    /// its shape), cpt's for the rest.
    fn resolve(self, fields: &Fields<'_>) -> Result<Common> {
        Ok(Common {
            hidden_size: self.hidden_size.unwrap_or(768),
            num_hidden_layers: self.num_hidden_layers.unwrap_or(12),
            num_attention_heads: self.num_attention_heads.unwrap_or(12),
            intermediate_size: self.intermediate_size.unwrap_or(3072),
            hidden_act: self.hidden_act.unwrap_or_else(vit::default_hidden_act),
            layer_norm_eps: self
                .layer_norm_eps
                .unwrap_or_else(vit::default_layer_norm_eps),
            image_size: fields.side(self.image_size, "image_size", 224)?,
            patch_size: fields.side(self.patch_size, "patch_size", 16)?,
            num_channels: self.num_channels.unwrap_or_else(vit::default_num_channels),
            qkv_bias: self.qkv_bias.unwrap_or_else(vit::default_true),
            initializer_range: self
                .initializer_range
                .unwrap_or_else(vit::default_initializer_range),
        })
    }
}

impl HfViTConfig {
    /// The working config, checked; errors name `path` and the field.
    pub fn into_config(self, path: &Path) -> Result<ViTConfig> {
        let fields = Fields { path };
        fields.check_model_type(self.common.model_type.as_deref(), "vit")?;
        let c = self.common.resolve(&fields)?;
        let num_labels = match self.id2label {
            Some(map) => map.len(),
            // transformers' default without id2label: two labels.
            None => self.num_labels.unwrap_or(2),
        };
        let config = ViTConfig {
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            hidden_act: c.hidden_act,
            layer_norm_eps: c.layer_norm_eps,
            image_size: c.image_size,
            patch_size: c.patch_size,
            num_channels: c.num_channels,
            qkv_bias: c.qkv_bias,
            num_labels,
            initializer_range: c.initializer_range,
        };
        config.validate().map_err(|m| fields.invalid(m))?;
        Ok(config)
    }
}

impl HfViTMAEConfig {
    /// The working config, checked; errors name `path` and the field.
    pub fn into_config(self, path: &Path) -> Result<ViTMAEConfig> {
        let fields = Fields { path };
        fields.check_model_type(self.common.model_type.as_deref(), "vit_mae")?;
        let c = self.common.resolve(&fields)?;
        let config = ViTMAEConfig {
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            hidden_act: c.hidden_act,
            layer_norm_eps: c.layer_norm_eps,
            image_size: c.image_size,
            patch_size: c.patch_size,
            num_channels: c.num_channels,
            qkv_bias: c.qkv_bias,
            initializer_range: c.initializer_range,
            decoder_num_attention_heads: self
                .decoder_num_attention_heads
                .unwrap_or_else(vit_mae::default_decoder_heads),
            decoder_hidden_size: self
                .decoder_hidden_size
                .unwrap_or_else(vit_mae::default_decoder_hidden),
            decoder_num_hidden_layers: self
                .decoder_num_hidden_layers
                .unwrap_or_else(vit_mae::default_decoder_layers),
            decoder_intermediate_size: self
                .decoder_intermediate_size
                .unwrap_or_else(vit_mae::default_decoder_intermediate),
            mask_ratio: self.mask_ratio.unwrap_or_else(vit_mae::default_mask_ratio),
            norm_pix_loss: self.norm_pix_loss.unwrap_or_default(),
        };
        config.validate().map_err(|m| fields.invalid(m))?;
        Ok(config)
    }
}

/// `config.json` content for a ViT classifier (labels named `LABEL_i`).
pub fn vit_config_json(config: &ViTConfig) -> Value {
    let id2label: serde_json::Map<String, Value> = (0..config.num_labels)
        .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
        .collect();
    let label2id: serde_json::Map<String, Value> = (0..config.num_labels)
        .map(|i| (format!("LABEL_{i}"), json!(i)))
        .collect();
    json!({
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": config.layer_norm_eps,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.num_channels,
        "qkv_bias": config.qkv_bias,
        "encoder_stride": config.patch_size,
        "initializer_range": config.initializer_range,
        "id2label": id2label,
        "label2id": label2id,
        "dtype": "float32",
    })
}

/// `config.json` content for a ViT-MAE model.
pub fn mae_config_json(config: &ViTMAEConfig) -> Value {
    json!({
        "architectures": ["ViTMAEForPreTraining"],
        "model_type": "vit_mae",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": config.layer_norm_eps,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.num_channels,
        "qkv_bias": config.qkv_bias,
        "initializer_range": config.initializer_range,
        "decoder_num_attention_heads": config.decoder_num_attention_heads,
        "decoder_hidden_size": config.decoder_hidden_size,
        "decoder_num_hidden_layers": config.decoder_num_hidden_layers,
        "decoder_intermediate_size": config.decoder_intermediate_size,
        "mask_ratio": config.mask_ratio,
        "norm_pix_loss": config.norm_pix_loss,
        "dtype": "float32",
    })
}

/// Whether a tensor is stored transposed relative to burn: every 2-D `.weight` (the linear
/// layers; the CLS token, position tables and patch kernel have other ranks).
pub fn transposed(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight")
}

/// transformers 5's spelling of MAE decoder layers, and the published one cpt uses.
const DECODER_LAYERS_V5: &str = "decoder.decoder_encoder.layer.";
const DECODER_LAYERS: &str = "decoder.decoder_layers.";

/// Hugging Face tensors to burn's names and layouts.
fn to_burn(weights: NamedTensors) -> NamedTensors {
    let renamed = weights
        .into_iter()
        .map(|(name, t)| {
            let name = match name.strip_prefix(DECODER_LAYERS_V5) {
                Some(rest) => format!("{DECODER_LAYERS}{rest}"),
                None => name,
            };
            (name, t)
        })
        .collect();
    transpose_where(renamed, transposed)
}

/// A model's weights under Hugging Face names and shapes (adapters excluded: merge or drop them
/// first).
pub fn hf_tensors<B: Backend, M: Module<B>>(model: &M) -> NamedTensors {
    crate::hf_folder::hf_tensors(model, transposed)
}

/// Load a ViT classifier folder onto `device`; a missing, unexpected or misshapen tensor is an
/// error naming it (transformers' unused `vit.pooler.*`, absent from classifiers it saves, is
/// dropped if present).
pub fn load_vit<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ViTConfig, ViTForImageClassification<B>)> {
    let (json, path) = read_config_json(dir)?;
    let config = parse_vit_config(&json, &path)?;
    let mut weights = read_weights(dir)?;
    weights.retain(|name, _| !name.starts_with("vit.pooler."));
    let model = load_named(
        config.init::<B>(device),
        &to_burn(weights),
        &dir.join(WEIGHTS_FILE),
    )?;
    Ok((config, model))
}

/// Load a ViT-MAE pre-training folder onto `device`, the fixed sin-cos tables included (as
/// transformers, which keeps them in the checkpoint).
pub fn load_vit_mae<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ViTMAEConfig, ViTMAEForPreTraining<B>)> {
    let (json, path) = read_config_json(dir)?;
    let config = parse_mae_config(&json, &path)?;
    let weights = read_weights(dir)?;
    let model = load_named(
        config.init::<B>(device),
        &to_burn(weights),
        &dir.join(WEIGHTS_FILE),
    )?;
    Ok((config, model))
}

fn save_folder<B: Backend, M: Module<B>>(model: &M, config: Value, out: &Path) -> Result<()> {
    write_model_folder(out, &config, &hf_tensors(model), None)
}

/// Write a Hugging Face folder (`config.json`, `model.safetensors`) for a ViT classifier at
/// `out`, atomically (built beside it, then renamed into place).
pub fn save_vit<B: Backend>(
    model: &ViTForImageClassification<B>,
    config: &ViTConfig,
    out: &Path,
) -> Result<()> {
    save_folder(model, vit_config_json(config), out)
}

/// Write a Hugging Face folder for a ViT-MAE model at `out`, atomically.
pub fn save_vit_mae<B: Backend>(
    model: &ViTMAEForPreTraining<B>,
    config: &ViTMAEConfig,
    out: &Path,
) -> Result<()> {
    save_folder(model, mae_config_json(config), out)
}
