//! Hugging Face folders for CLIP (`CLIPModel`): `config.json` with `text_config` and
//! `vision_config` (transformers 4 and 5; the old `text_config_dict`/`vision_config_dict`
//! overrides are applied as transformers applies them) and `model.safetensors`.
//!
//! The key map is the identity up to two shape changes: 2-D projection weights are transposed
//! (burn stores `[in, out]`; embeddings are not), and `logit_scale` is 0-d in the checkpoint but
//! `[1]` in the model. `*.embeddings.position_ids` are non-persistent buffers in transformers 5
//! (never written by `save_pretrained`, so not written by us either), but checkpoints saved by
//! older versions carry them, as int64: they are dropped on load.

use crate::clip::{ClipActivation, ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig};
use crate::error::{ModelError, Result};
use crate::hf_folder::{WEIGHTS_FILE, read_config_json, transpose_where, write_model_folder};
use crate::hf_llama::read_weights;
use burn::tensor::backend::Backend;
use cpt_core::params::{NamedTensors, load_named};
use cpt_core::tensor_file::parse_tensors;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Read a transformers `config.json` of a CLIP model.
pub fn read_config(dir: &Path) -> Result<ClipConfig> {
    let (json, path) = read_config_json(dir)?;
    parse_config(&json, &path)
}

/// Reads typed fields of one JSON object; errors name the field with its prefix
/// (`text_config.hidden_size`). Missing and null fields take transformers' defaults. (The
/// shared `hf_folder::ConfigFields` reads a flat config without defaults; CLIP's are nested,
/// and old checkpoints omit fields that transformers fills in.)
struct Fields<'a> {
    object: Map<String, Value>,
    prefix: &'a str,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.object.get(name).filter(|v| !v.is_null())
    }

    fn usize(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.err(name, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn float(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(name, format!("expected a number, got {v}"))),
        }
    }

    fn token(&self, name: &str, default: Option<u32>) -> Result<Option<u32>> {
        match self.object.get(name) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(name, format!("expected a token id, got {v}"))),
        }
    }

    fn activation(&self) -> Result<ClipActivation> {
        match self.get("hidden_act") {
            None => Ok(ClipActivation::QuickGelu),
            Some(v) => v
                .as_str()
                .and_then(ClipActivation::from_name)
                .ok_or_else(|| {
                    self.err(
                        "hidden_act",
                        format!("{v} is not supported (quick_gelu or gelu)"),
                    )
                }),
        }
    }
}

/// The sub-config `name` with the legacy `<name>_dict` values laid over it, as transformers
/// does when both are present.
fn sub_config(json: &Value, name: &str) -> Map<String, Value> {
    let mut object = json
        .get(name)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(overrides) = json.get(format!("{name}_dict")).and_then(Value::as_object) {
        for (k, v) in overrides {
            object.insert(k.clone(), v.clone());
        }
    }
    object
}

/// Interpret config.json values; `path` names the file in errors.
pub fn parse_config(json: &Value, path: &Path) -> Result<ClipConfig> {
    let top = Fields {
        object: json.as_object().cloned().unwrap_or_default(),
        prefix: "",
        path,
    };
    if !json.is_object() {
        return Err(top.err("config", "expected a JSON object"));
    }
    if let Some(kind) = top.get("model_type")
        && kind.as_str() != Some("clip")
    {
        return Err(top.err(
            "model_type",
            format!("{kind} is not a CLIP model (expected \"clip\")"),
        ));
    }
    let text = Fields {
        object: sub_config(json, "text_config"),
        prefix: "text_config.",
        path,
    };
    let vision = Fields {
        object: sub_config(json, "vision_config"),
        prefix: "vision_config.",
        path,
    };
    let (t, v) = (ClipTextConfig::default(), ClipVisionConfig::default());
    let eos_token_id = match text.object.get("eos_token_id") {
        None => t.eos_token_id,
        Some(value) => text.token("eos_token_id", None)?.ok_or_else(|| {
            text.err(
                "eos_token_id",
                format!("{value}: CLIP pools each caption at its EOS token, which must be set"),
            )
        })?,
    };
    let config = ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: text.usize("vocab_size", t.vocab_size)?,
            hidden_size: text.usize("hidden_size", t.hidden_size)?,
            intermediate_size: text.usize("intermediate_size", t.intermediate_size)?,
            num_hidden_layers: text.usize("num_hidden_layers", t.num_hidden_layers)?,
            num_attention_heads: text.usize("num_attention_heads", t.num_attention_heads)?,
            max_position_embeddings: text
                .usize("max_position_embeddings", t.max_position_embeddings)?,
            hidden_act: text.activation()?,
            layer_norm_eps: text.float("layer_norm_eps", t.layer_norm_eps)?,
            pad_token_id: text.token("pad_token_id", t.pad_token_id)?,
            bos_token_id: text.token("bos_token_id", t.bos_token_id)?,
            eos_token_id,
        },
        vision_config: ClipVisionConfig {
            hidden_size: vision.usize("hidden_size", v.hidden_size)?,
            intermediate_size: vision.usize("intermediate_size", v.intermediate_size)?,
            num_hidden_layers: vision.usize("num_hidden_layers", v.num_hidden_layers)?,
            num_attention_heads: vision.usize("num_attention_heads", v.num_attention_heads)?,
            num_channels: vision.usize("num_channels", v.num_channels)?,
            image_size: vision.usize("image_size", v.image_size)?,
            patch_size: vision.usize("patch_size", v.patch_size)?,
            hidden_act: vision.activation()?,
            layer_norm_eps: vision.float("layer_norm_eps", v.layer_norm_eps)?,
            initializer_range: vision.float("initializer_range", v.initializer_range)?,
        },
        projection_dim: top.usize("projection_dim", 512)?,
        logit_scale_init_value: top.float("logit_scale_init_value", 2.6592)?,
        initializer_factor: top.float("initializer_factor", 1.0)?,
    };
    config
        .validate()
        .map_err(|(field, message)| top.err(&field, message))?;
    Ok(config)
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
