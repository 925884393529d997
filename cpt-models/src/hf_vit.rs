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
    ConfigFields, WEIGHTS_FILE, read_config_json, transpose_where, write_model_folder,
};
use crate::hf_llama::read_weights;
use crate::vit::{ViTConfig, ViTForImageClassification};
use crate::vit_mae::{ViTMAEConfig, ViTMAEForPreTraining};
use burn::module::Module;
use burn::tensor::backend::Backend;
use cpt_core::params::{NamedTensors, load_named};
use serde_json::{Value, json};
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
    let fields = ConfigFields::new(json, path);
    match fields.string("model_type")? {
        Some("vit") => Ok(VisionConfig::ViT(parse_vit_config(json, path)?)),
        Some("vit_mae") => Ok(VisionConfig::ViTMAE(parse_mae_config(json, path)?)),
        Some(other) => Err(fields.error(
            "model_type",
            format!("`{other}` is not a supported vision model (expected `vit` or `vit_mae`)"),
        )),
        None => Err(fields.error("model_type", "missing (expected `vit` or `vit_mae`)")),
    }
}

/// The fields ViT and ViT-MAE share.
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

fn check_model_type(fields: &ConfigFields<'_>, expected: &str) -> Result<()> {
    match fields.string("model_type")? {
        Some(kind) if kind != expected => Err(fields.error(
            "model_type",
            format!("`{kind}` is not a {expected} model (expected `{expected}`)"),
        )),
        _ => Ok(()),
    }
}

/// `image_size` / `patch_size`: an integer, or a `[height, width]` pair of equal integers
/// (transformers accepts both; cpt's position embeddings are for square grids).
fn square(fields: &ConfigFields<'_>, name: &str, default: usize) -> Result<usize> {
    match fields.get(name) {
        None => Ok(default),
        Some(Value::Array(pair)) => match pair.as_slice() {
            [h, w] if h.as_u64().is_some() && h == w => Ok(h.as_u64().unwrap_or(0) as usize),
            [h, w] if h.as_u64().is_some() && w.as_u64().is_some() => Err(fields.error(
                name,
                format!("non-square {name} [{h}, {w}] is not supported"),
            )),
            _ => Err(fields.error(name, "expected an integer or [height, width]")),
        },
        Some(_) => fields
            .usize(name)?
            .ok_or_else(|| fields.error(name, "missing")),
    }
}

fn parse_common(fields: &ConfigFields<'_>) -> Result<Common> {
    Ok(Common {
        hidden_size: fields.usize("hidden_size")?.unwrap_or(768),
        num_hidden_layers: fields.usize("num_hidden_layers")?.unwrap_or(12),
        num_attention_heads: fields.usize("num_attention_heads")?.unwrap_or(12),
        intermediate_size: fields.usize("intermediate_size")?.unwrap_or(3072),
        hidden_act: fields.string("hidden_act")?.unwrap_or("gelu").to_string(),
        layer_norm_eps: fields.float("layer_norm_eps")?.unwrap_or(1e-12),
        image_size: square(fields, "image_size", 224)?,
        patch_size: square(fields, "patch_size", 16)?,
        num_channels: fields.usize("num_channels")?.unwrap_or(3),
        qkv_bias: fields.bool("qkv_bias", true)?,
        initializer_range: fields.float("initializer_range")?.unwrap_or(0.02),
    })
}

/// Turn a `validate` message ("<field> must ...") into an error naming that field.
fn invalid(fields: &ConfigFields<'_>, message: String) -> ModelError {
    let field = message
        .split_whitespace()
        .next()
        .unwrap_or("config")
        .to_string();
    fields.error(&field, message)
}

/// Interpret the config.json of a `ViTForImageClassification` (defaults as transformers'
/// `ViTConfig`); `num_labels` is the number of `id2label` entries.
pub fn parse_vit_config(json: &Value, path: &Path) -> Result<ViTConfig> {
    let fields = ConfigFields::new(json, path);
    check_model_type(&fields, "vit")?;
    let c = parse_common(&fields)?;
    let num_labels = match fields.get("id2label") {
        Some(Value::Object(map)) => map.len(),
        Some(_) => return Err(fields.error("id2label", "expected an object")),
        // transformers' default without id2label: two labels.
        None => fields.usize("num_labels")?.unwrap_or(2),
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
    config.validate().map_err(|m| invalid(&fields, m))?;
    Ok(config)
}

/// Interpret the config.json of a `ViTMAEForPreTraining` (defaults as transformers'
/// `ViTMAEConfig`).
pub fn parse_mae_config(json: &Value, path: &Path) -> Result<ViTMAEConfig> {
    let fields = ConfigFields::new(json, path);
    check_model_type(&fields, "vit_mae")?;
    let c = parse_common(&fields)?;
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
        decoder_num_attention_heads: fields.usize("decoder_num_attention_heads")?.unwrap_or(16),
        decoder_hidden_size: fields.usize("decoder_hidden_size")?.unwrap_or(512),
        decoder_num_hidden_layers: fields.usize("decoder_num_hidden_layers")?.unwrap_or(8),
        decoder_intermediate_size: fields.usize("decoder_intermediate_size")?.unwrap_or(2048),
        mask_ratio: fields.float("mask_ratio")?.unwrap_or(0.75),
        norm_pix_loss: fields.bool("norm_pix_loss", false)?,
    };
    config.validate().map_err(|m| invalid(&fields, m))?;
    Ok(config)
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
