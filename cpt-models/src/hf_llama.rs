//! Hugging Face folders for LLaMA: `config.json` (transformers 4 and 5 spellings),
//! `model.safetensors` or sharded `model-0000k-of-0000N.safetensors` with their index, in f32,
//! f16 or bf16. Import and export are a name table: parameter paths equal the transformers
//! names, and 2-D projection weights are transposed (burn stores `[in, out]`).

use crate::error::{ModelError, Result};
use crate::hf_folder::{read_config_json, transpose_where, write_model_folder};
use crate::llama::{LlamaConfig, LlamaForCausalLM, RopeScaling};
use burn::tensor::backend::Backend;
use cpt_core::atomic::write_atomic;
use cpt_core::params::{NamedTensors, load_named, named_tensors};
use cpt_core::tensor_file::{read_tensors, write_tensors};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

pub use crate::hf_folder::{WEIGHTS_FILE, transpose};
/// Index of sharded weights.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Read a transformers `config.json` of a LLaMA model.
pub fn read_config(dir: &Path) -> Result<LlamaConfig> {
    let (json, path) = read_config_json(dir)?;
    parse_config(&json, &path)
}

/// Interpret config.json values; `path` names the file in errors.
pub fn parse_config(json: &Value, path: &Path) -> Result<LlamaConfig> {
    let err = |field: &str, message: &str| ModelError::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        message: message.to_string(),
    };
    if let Some(kind) = json.get("model_type").and_then(Value::as_str)
        && kind != "llama"
    {
        return Err(err(
            "model_type",
            &format!("`{kind}` is not a LLaMA model (expected `llama`)"),
        ));
    }
    let usize_field = |name: &str| -> Result<Option<usize>> {
        match json.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| err(name, "expected a non-negative integer")),
        }
    };
    let required = |name: &str| usize_field(name)?.ok_or_else(|| err(name, "missing"));
    let float_field = |value: Option<&Value>, name: &str| -> Result<Option<f64>> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| err(name, "expected a number")),
        }
    };
    let bool_field = |name: &str, default: bool| -> Result<bool> {
        match json.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err(name, "expected true or false")),
        }
    };
    if let Some(act) = json.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(err(
            "hidden_act",
            &format!("`{act}` is not supported (LLaMA uses silu)"),
        ));
    }
    // transformers 5 nests the RoPE settings in `rope_parameters`; 4 has `rope_theta` and
    // `rope_scaling` at the top level.
    let rope_parameters = json.get("rope_parameters").filter(|v| v.is_object());
    let rope_theta = float_field(json.get("rope_theta"), "rope_theta")?
        .or(float_field(
            rope_parameters.and_then(|p| p.get("rope_theta")),
            "rope_parameters.rope_theta",
        )?)
        .unwrap_or(10_000.0);
    let scaling = json
        .get("rope_scaling")
        .filter(|v| v.is_object())
        .or(rope_parameters);
    let rope_scaling = match scaling {
        None => None,
        Some(s) => parse_rope_scaling(s, json, path)?,
    };
    let config = LlamaConfig {
        vocab_size: required("vocab_size")?,
        hidden_size: required("hidden_size")?,
        intermediate_size: required("intermediate_size")?,
        num_hidden_layers: required("num_hidden_layers")?,
        num_attention_heads: required("num_attention_heads")?,
        num_key_value_heads: usize_field("num_key_value_heads")?,
        head_dim: usize_field("head_dim")?,
        rope_theta,
        rms_norm_eps: float_field(json.get("rms_norm_eps"), "rms_norm_eps")?.unwrap_or(1e-6),
        max_position_embeddings: usize_field("max_position_embeddings")?.unwrap_or(2048),
        tie_word_embeddings: bool_field("tie_word_embeddings", false)?,
        attention_bias: bool_field("attention_bias", false)?,
        mlp_bias: bool_field("mlp_bias", false)?,
        initializer_range: float_field(json.get("initializer_range"), "initializer_range")?
            .unwrap_or(0.02),
        rope_scaling,
    };
    config.validate().map_err(|m| err("config", &m))?;
    Ok(config)
}

fn parse_rope_scaling(s: &Value, top: &Value, path: &Path) -> Result<Option<RopeScaling>> {
    let err = |field: &str, message: String| ModelError::Config {
        path: path.to_path_buf(),
        field: format!("rope_scaling.{field}"),
        message,
    };
    let kind = s
        .get("rope_type")
        .or(s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |name: &str| {
        s.get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| err(name, "missing or not a number".into()))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: number("factor")?,
        })),
        "llama3" => {
            let original = s
                .get("original_max_position_embeddings")
                .or(top.get("original_max_position_embeddings"))
                .and_then(Value::as_u64)
                .ok_or_else(|| err("original_max_position_embeddings", "missing".into()))?;
            Ok(Some(RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: original as usize,
            }))
        }
        other => Err(err(
            "rope_type",
            format!("`{other}` is not supported (default, linear, llama3)"),
        )),
    }
}

/// `config.json` content for `config`, readable by transformers 4 and 5.
pub fn config_json(config: &LlamaConfig, bos: Option<u32>, eos: Option<u32>) -> Value {
    let rope_scaling = match &config.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    };
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.kv_heads(),
        "head_dim": config.head_width(),
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "attention_dropout": 0.0,
        "mlp_bias": config.mlp_bias,
        "initializer_range": config.initializer_range,
        "pretraining_tp": 1,
        "use_cache": true,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    })
}

/// Whether a Hugging Face tensor is stored transposed relative to burn: every 2-D weight but
/// the embedding.
pub fn transposed(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight") && name != "model.embed_tokens.weight"
}

/// Every tensor of a model folder (single file or shards), by Hugging Face name, as f32.
pub fn read_weights(dir: &Path) -> Result<NamedTensors> {
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(WEIGHTS_INDEX);
    if single.exists() {
        return Ok(read_tensors(&single)?.0);
    }
    if !index.exists() {
        return Err(ModelError::Folder {
            path: dir.to_path_buf(),
            message: format!("no {WEIGHTS_FILE} and no {WEIGHTS_INDEX}"),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|e| cpt_core::CoreError::io(&index, e))?;
    let bad = |message: String| ModelError::Folder {
        path: index.clone(),
        message,
    };
    let json: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: BTreeSet<&str> = BTreeSet::new();
    for (name, file) in map {
        shards.insert(
            file.as_str()
                .ok_or_else(|| bad(format!("`{name}` maps to a non-string")))?,
        );
    }
    let mut out = NamedTensors::new();
    for shard in shards {
        let (tensors, _) = read_tensors(&dir.join(shard))?;
        for (name, tensor) in tensors {
            if map.get(&name).and_then(Value::as_str) != Some(shard) {
                return Err(bad(format!(
                    "{shard} holds `{name}`, which the index places elsewhere"
                )));
            }
            out.insert(name, tensor);
        }
    }
    if let Some(missing) = map.keys().find(|k| !out.contains_key(*k)) {
        return Err(bad(format!("`{missing}` is listed but no shard holds it")));
    }
    Ok(out)
}

/// Load a LLaMA model folder onto `device`: config, then every weight with its exact shape (a
/// missing, unexpected or misshapen tensor is an error naming it).
pub fn load_llama<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(LlamaConfig, LlamaForCausalLM<B>)> {
    let config = read_config(dir)?;
    let mut weights = read_weights(dir)?;
    if config.tie_word_embeddings {
        // Tied checkpoints may carry the shared matrix under both names.
        weights.remove("lm_head.weight");
    }
    let burn_layout = transpose_where(weights, transposed);
    let model = config.init::<B>(device);
    let model = load_named(model, &burn_layout, &dir.join(WEIGHTS_FILE))?;
    Ok((config, model))
}

/// The model's weights under Hugging Face names and shapes (adapters excluded: merge or drop
/// them first).
pub fn hf_tensors<B: Backend>(model: &LlamaForCausalLM<B>) -> NamedTensors {
    crate::hf_folder::hf_tensors(model, transposed)
}

/// Write a Hugging Face folder (`config.json`, `model.safetensors`, and a copy of
/// `tokenizer_json` if given) at `out`, atomically: built beside it, then renamed into place.
pub fn save_llama<B: Backend>(
    model: &LlamaForCausalLM<B>,
    config: &LlamaConfig,
    tokenizer_json: Option<&Path>,
    special_ids: (Option<u32>, Option<u32>),
    out: &Path,
) -> Result<()> {
    let (bos, eos) = special_ids;
    write_model_folder(
        out,
        &config_json(config, bos, eos),
        &hf_tensors(model),
        tokenizer_json,
    )
}

/// PEFT's adapter weights file.
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";

/// Write the LoRA adapters of `model` in PEFT's format at `out` (`adapter_config.json` and
/// `adapter_model.safetensors` with PEFT's key names), and the frozen base model (adapters
/// dropped) as a Hugging Face folder at `out/base`, so that
/// `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out/base), out)` rebuilds it.
/// Errors if the model carries no adapter.
pub fn save_peft<B: Backend>(
    model: &LlamaForCausalLM<B>,
    config: &LlamaConfig,
    spec: &crate::linear::LoraSpec,
    tokenizer_json: Option<&Path>,
    special_ids: (Option<u32>, Option<u32>),
    out: &Path,
) -> Result<()> {
    use cpt_core::AdapterModel;
    let mut adapters = NamedTensors::new();
    for (path, tensor) in named_tensors(model) {
        // `...q_proj.lora_a` [in, r] → `base_model.model....q_proj.lora_A.weight` [r, in].
        let (stem, kind) = match path.rsplit_once(".lora_") {
            Some((stem, "a")) => (stem, "lora_A"),
            Some((stem, "b")) => (stem, "lora_B"),
            _ => continue,
        };
        adapters.insert(
            format!("base_model.model.{stem}.{kind}.weight"),
            transpose(&tensor),
        );
    }
    if adapters.is_empty() {
        return Err(ModelError::Folder {
            path: out.to_path_buf(),
            message: "the model carries no LoRA adapter to export (merged adapters are part of the weights: export hf instead)".into(),
        });
    }
    let mut modules: Vec<String> = spec
        .target_modules
        .iter()
        .map(|t| {
            if t.ends_with("_proj") {
                t.clone()
            } else {
                format!("{t}_proj")
            }
        })
        .collect();
    modules.sort();
    modules.dedup();
    let adapter_config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "use_rslora": spec.rslora,
        "lora_dropout": spec.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "base_model_name_or_path": null,
    });
    let base = model.clone().drop_adapters();
    std::fs::create_dir_all(out).map_err(|e| cpt_core::CoreError::io(out, e))?;
    save_llama(
        &base,
        config,
        tokenizer_json,
        special_ids,
        &out.join("base"),
    )?;
    let json = serde_json::to_vec_pretty(&adapter_config).expect("config serialises");
    write_atomic(&out.join("adapter_config.json"), &json)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_tensors(&out.join(PEFT_WEIGHTS), &adapters, metadata)?;
    Ok(())
}
