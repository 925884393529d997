//! Hugging Face folders for CLIP (`CLIPModel`): `config.json` with `text_config` and
//! `vision_config` (transformers 4 and 5; the old `text_config_dict`/`vision_config_dict`
//! overrides are applied as transformers applies them) and `model.safetensors`.
//!
//! The key map is the identity up to two shape changes: 2-D projection weights are transposed
//! (burn stores `[in, out]`; embeddings are not), and `logit_scale` is 0-d in the checkpoint but
//! `[1]` in the model. `*.embeddings.position_ids` are non-persistent buffers in transformers 5
//! (never written by `save_pretrained`, so not written by us either), but checkpoints saved by
//! older versions carry them, as int64: they are dropped on load.

use crate::clip::{self, ClipActivation, ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig};
use crate::error::{ModelError, Result};
use crate::hf_folder::{
    WEIGHTS_FILE, parse_mirror, present, read_config_json, transpose_where, write_model_folder,
};
use crate::hf_llama::read_weights;
use burn::tensor::backend::Backend;
use cpt_core::params::{NamedTensors, load_named};
use cpt_core::tensor_file::parse_tensors;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Read a transformers `config.json` of a CLIP model.
pub fn read_config(dir: &Path) -> Result<ClipConfig> {
    let (json, path) = read_config_json(dir)?;
    parse_config(&json, &path)
}

/// Interpret config.json values; `path` names the file in errors.
pub fn parse_config(json: &Value, path: &Path) -> Result<ClipConfig> {
    parse_mirror::<HfClipConfig>(&with_legacy_overrides(json), path)?.into_config(path)
}

/// `json` with the legacy `text_config_dict` / `vision_config_dict` values laid over
/// `text_config` / `vision_config`, as transformers does when both are present.
fn with_legacy_overrides(json: &Value) -> Value {
    let mut json = json.clone();
    for name in ["text_config", "vision_config"] {
        let Some(overrides) = json
            .get(format!("{name}_dict"))
            .and_then(Value::as_object)
            .cloned()
        else {
            continue;
        };
        let Some(object) = json.as_object_mut() else {
            return json;
        };
        let target = object
            .entry(name)
            .or_insert_with(|| Value::Object(Map::new()));
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Some(target) = target.as_object_mut() {
            target.extend(overrides);
        }
    }
    json
}

/// transformers' `CLIPConfig` as `config.json` spells it. Unknown keys are ignored; every field
/// is optional (`null` counts as absent, but see the token ids) and takes the default of
/// [`ClipConfig`] in [`HfClipConfig::into_config`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfClipConfig {
    /// `clip` when present.
    pub model_type: Option<String>,
    /// The text tower.
    pub text_config: Option<HfClipTextConfig>,
    /// The vision tower.
    pub vision_config: Option<HfClipVisionConfig>,
    /// Width of the shared embedding space.
    pub projection_dim: Option<usize>,
    /// Initial `logit_scale`.
    pub logit_scale_init_value: Option<f64>,
    /// Multiplier of every initialisation standard deviation.
    pub initializer_factor: Option<f64>,
}

/// transformers' `CLIPTextConfig` as `config.json` spells it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// Residual width.
    pub hidden_size: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Encoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: Option<usize>,
    /// Longest caption.
    pub max_position_embeddings: Option<usize>,
    /// `quick_gelu` or `gelu`.
    pub hidden_act: Option<String>,
    /// LayerNorm epsilon.
    pub layer_norm_eps: Option<f64>,
    /// `None` when absent (the default applies); `Some(None)` when `null` (no such token).
    #[serde(default, deserialize_with = "present")]
    pub pad_token_id: Option<Option<u32>>,
    /// As `pad_token_id`.
    #[serde(default, deserialize_with = "present")]
    pub bos_token_id: Option<Option<u32>>,
    /// As `pad_token_id`, but CLIP cannot do without it: `null` is an error.
    #[serde(default, deserialize_with = "present")]
    pub eos_token_id: Option<Option<u32>>,
}

/// transformers' `CLIPVisionConfig` as `config.json` spells it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfClipVisionConfig {
    /// Residual width.
    pub hidden_size: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Encoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: Option<usize>,
    /// Input channels.
    pub num_channels: Option<usize>,
    /// Image side.
    pub image_size: Option<usize>,
    /// Patch side.
    pub patch_size: Option<usize>,
    /// `quick_gelu` or `gelu`.
    pub hidden_act: Option<String>,
    /// LayerNorm epsilon.
    pub layer_norm_eps: Option<f64>,
    /// Standard deviation of the patch and position embeddings at initialisation.
    pub initializer_range: Option<f64>,
}

/// An error about `field` of the file `path`.
fn config_error(path: &Path, field: &str, message: impl Into<String>) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// The activation named by `hidden_act` of the tower `tower`, `default` when absent.
fn activation(
    name: Option<String>,
    default: ClipActivation,
    tower: &str,
    path: &Path,
) -> Result<ClipActivation> {
    match name {
        None => Ok(default),
        Some(name) => ClipActivation::from_name(&name).ok_or_else(|| {
            config_error(
                path,
                &format!("{tower}.hidden_act"),
                format!("\"{name}\" is not supported (quick_gelu or gelu)"),
            )
        }),
    }
}

impl HfClipConfig {
    /// The working config: defaults of [`ClipConfig`] for absent fields, then its checks;
    /// errors name `path` and the field (`text_config.hidden_size`).
    pub fn into_config(self, path: &Path) -> Result<ClipConfig> {
        if let Some(kind) = self.model_type.as_deref().filter(|k| *k != "clip") {
            return Err(config_error(
                path,
                "model_type",
                format!("\"{kind}\" is not a CLIP model (expected \"clip\")"),
            ));
        }
        let (t, v) = (ClipTextConfig::default(), ClipVisionConfig::default());
        let text = self.text_config.unwrap_or_default();
        let vision = self.vision_config.unwrap_or_default();
        let eos_token_id = match text.eos_token_id {
            None => t.eos_token_id,
            Some(Some(id)) => id,
            Some(None) => {
                return Err(config_error(
                    path,
                    "text_config.eos_token_id",
                    "null: CLIP pools each caption at its EOS token, which must be set",
                ));
            }
        };
        let config = ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: text.vocab_size.unwrap_or(t.vocab_size),
                hidden_size: text.hidden_size.unwrap_or(t.hidden_size),
                intermediate_size: text.intermediate_size.unwrap_or(t.intermediate_size),
                num_hidden_layers: text.num_hidden_layers.unwrap_or(t.num_hidden_layers),
                num_attention_heads: text.num_attention_heads.unwrap_or(t.num_attention_heads),
                max_position_embeddings: text
                    .max_position_embeddings
                    .unwrap_or(t.max_position_embeddings),
                hidden_act: activation(text.hidden_act, t.hidden_act, "text_config", path)?,
                layer_norm_eps: text.layer_norm_eps.unwrap_or(t.layer_norm_eps),
                pad_token_id: text.pad_token_id.unwrap_or(t.pad_token_id),
                bos_token_id: text.bos_token_id.unwrap_or(t.bos_token_id),
                eos_token_id,
            },
            vision_config: ClipVisionConfig {
                hidden_size: vision.hidden_size.unwrap_or(v.hidden_size),
                intermediate_size: vision.intermediate_size.unwrap_or(v.intermediate_size),
                num_hidden_layers: vision.num_hidden_layers.unwrap_or(v.num_hidden_layers),
                num_attention_heads: vision.num_attention_heads.unwrap_or(v.num_attention_heads),
                num_channels: vision.num_channels.unwrap_or(v.num_channels),
                image_size: vision.image_size.unwrap_or(v.image_size),
                patch_size: vision.patch_size.unwrap_or(v.patch_size),
                hidden_act: activation(vision.hidden_act, v.hidden_act, "vision_config", path)?,
                layer_norm_eps: vision.layer_norm_eps.unwrap_or(v.layer_norm_eps),
                initializer_range: vision.initializer_range.unwrap_or(v.initializer_range),
            },
            projection_dim: self
                .projection_dim
                .unwrap_or_else(clip::default_projection_dim),
            logit_scale_init_value: self
                .logit_scale_init_value
                .unwrap_or_else(clip::default_logit_scale),
            initializer_factor: self
                .initializer_factor
                .unwrap_or_else(clip::default_initializer_factor),
        };
        config
            .validate()
            .map_err(|(field, message)| config_error(path, &field, message))?;
        Ok(config)
    }
}

/// `config.json` content for `config`, as transformers 5 writes it for a `CLIPModel`.
pub fn config_json(config: &ClipConfig) -> Value {
    let (t, v) = (&config.text_config, &config.vision_config);
    json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "dtype": "float32",
        "initializer_factor": config.initializer_factor,
        "logit_scale_init_value": config.logit_scale_init_value,
        "projection_dim": config.projection_dim,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": t.hidden_act.name(),
            "layer_norm_eps": t.layer_norm_eps,
            "attention_dropout": 0.0,
            "initializer_factor": config.initializer_factor,
            "initializer_range": 0.02,
            "projection_dim": config.projection_dim,
            "pad_token_id": t.pad_token_id,
            "bos_token_id": t.bos_token_id,
            "eos_token_id": t.eos_token_id,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "num_channels": v.num_channels,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": v.hidden_act.name(),
            "layer_norm_eps": v.layer_norm_eps,
            "attention_dropout": 0.0,
            "initializer_factor": config.initializer_factor,
            "initializer_range": v.initializer_range,
            "projection_dim": config.projection_dim,
        },
    })
}

/// Whether a Hugging Face CLIP tensor is stored transposed relative to burn: every 2-D weight
/// but the embedding tables.
pub fn transposed(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight") && !name.ends_with("_embedding.weight")
}

/// The buffers older transformers versions saved beside the weights.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".position_ids")
}

/// Every weight of a CLIP folder by Hugging Face name, as f32, without the `position_ids`
/// buffers. A single `model.safetensors` may hold them as int64 (which the f32 reader refuses),
/// so they are cut out of the file before it is parsed; sharded folders go through the
/// generic reader (large CLIP checkpoints are recent, without the buffers).
pub fn read_weights_without_buffers(dir: &Path) -> Result<NamedTensors> {
    let single = dir.join(WEIGHTS_FILE);
    let mut weights = if single.exists() {
        let bytes = std::fs::read(&single).map_err(|e| cpt_core::CoreError::io(&single, e))?;
        let stripped = match safetensors::SafeTensors::deserialize(&bytes) {
            Ok(file) if file.names().iter().any(|n| is_buffer(n)) => {
                let kept: Vec<_> = file
                    .tensors()
                    .into_iter()
                    .filter(|(name, _)| !is_buffer(name))
                    .collect();
                Some(
                    safetensors::serialize(kept, None).map_err(|e| ModelError::Folder {
                        path: single.clone(),
                        message: format!("cannot drop the position_ids buffers: {e}"),
                    })?,
                )
            }
            // Not parseable: the reader below reports why, naming the file.
            _ => None,
        };
        parse_tensors(stripped.as_deref().unwrap_or(&bytes), &single)?.0
    } else {
        read_weights(dir)?
    };
    weights.retain(|name, _| !is_buffer(name));
    Ok(weights)
}

/// Load a CLIP model folder onto `device`: config, then every weight with its exact shape (a
/// missing, unexpected or misshapen tensor is an error naming it).
pub fn load_clip<B: Backend>(dir: &Path, device: &B::Device) -> Result<(ClipConfig, ClipModel<B>)> {
    let config = read_config(dir)?;
    let weights = read_weights_without_buffers(dir)?;
    let source = dir.join(WEIGHTS_FILE);
    let mut burn_layout = transpose_where(weights, transposed);
    if let Some(scale) = burn_layout.get_mut("logit_scale")
        && scale.shape.is_empty()
    {
        // burn has no 0-d tensors: `[1]`.
        scale.shape = vec![1];
    }
    let model = load_named(config.init::<B>(device), &burn_layout, &source)?;
    Ok((config, model))
}

/// The model's weights under Hugging Face names and shapes (adapters excluded: merge or drop
/// them first).
pub fn hf_tensors<B: Backend>(model: &ClipModel<B>) -> NamedTensors {
    let mut tensors = crate::hf_folder::hf_tensors(model, transposed);
    if let Some(scale) = tensors.get_mut("logit_scale") {
        // 0-d, as `nn.Parameter(torch.tensor(value))` saves it.
        scale.shape = vec![];
    }
    tensors
}

/// Write a Hugging Face folder (`config.json`, `model.safetensors`, and a copy of
/// `tokenizer_json` if given) at `out`, atomically: built beside it, then renamed into place.
pub fn save_clip<B: Backend>(
    model: &ClipModel<B>,
    config: &ClipConfig,
    tokenizer_json: Option<&Path>,
    out: &Path,
) -> Result<()> {
    write_model_folder(
        out,
        &config_json(config),
        &hf_tensors(model),
        tokenizer_json,
    )
}
