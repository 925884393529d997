//! Hugging Face folders for LLaMA: `config.json` (transformers 4 and 5 spellings),
//! `model.safetensors` or sharded `model-0000k-of-0000N.safetensors` with their index, in f32,
//! f16 or bf16. Import and export are a name table: parameter paths equal the transformers
//! names, and 2-D projection weights are transposed (burn stores `[in, out]`).

use crate::error::{ModelError, Result};
use crate::hf_folder::{parse_mirror, read_config_json, transpose_where, write_model_folder};
use crate::llama::{self, LlamaConfig, LlamaForCausalLM, RopeScaling};
use burn::tensor::backend::Backend;
use cpt_core::atomic::write_atomic;
use cpt_core::params::{NamedTensors, load_named, named_tensors};
use cpt_core::tensor_file::{read_tensors, write_tensors};
use serde::Deserialize;
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
    parse_mirror::<HfLlamaConfig>(json, path)?.into_config(path)
}

/// transformers' `LlamaConfig` as `config.json` spells it, in transformers 4 and 5. Unknown keys
/// are ignored (real files carry many); every field is optional, `null` counting as absent,
/// and [`HfLlamaConfig::into_config`] applies the defaults of [`LlamaConfig`] and checks it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfLlamaConfig {
    /// `llama` when present.
    pub model_type: Option<String>,
    /// `silu` when present.
    pub hidden_act: Option<String>,
    /// Required.
    pub vocab_size: Option<usize>,
    /// Required.
    pub hidden_size: Option<usize>,
    /// Required.
    pub intermediate_size: Option<usize>,
    /// Required.
    pub num_hidden_layers: Option<usize>,
    /// Required.
    pub num_attention_heads: Option<usize>,
    /// Grouped-query attention's key/value heads.
    pub num_key_value_heads: Option<usize>,
    /// Per-head width.
    pub head_dim: Option<usize>,
    /// RoPE base at the top level (transformers 4); wins over `rope_parameters.rope_theta`.
    pub rope_theta: Option<f64>,
    /// RoPE scaling at the top level (transformers 4); wins over `rope_parameters`.
    pub rope_scaling: Option<HfRopeParameters>,
    /// RoPE base and scaling together (transformers 5).
    pub rope_parameters: Option<HfRopeParameters>,
    /// Context length of the original pre-training, when the RoPE settings do not carry it.
    pub original_max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// Longest sequence.
    pub max_position_embeddings: Option<usize>,
    /// Shared input and output embedding.
    pub tie_word_embeddings: Option<bool>,
    /// Biases on the attention projections.
    pub attention_bias: Option<bool>,
    /// Biases on the MLP projections.
    pub mlp_bias: Option<bool>,
    /// Standard deviation of the weight initialisation.
    pub initializer_range: Option<f64>,
}

/// transformers' RoPE settings: `rope_scaling` (4) or `rope_parameters` (5), which also holds
/// `rope_theta`. `rope_type` (or the older `type`) selects the rule; `default` is none.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfRopeParameters {
    /// `default`, `linear` or `llama3`.
    pub rope_type: Option<String>,
    /// The older spelling of `rope_type`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// RoPE base (transformers 5).
    pub rope_theta: Option<f64>,
    /// Context extension factor (`linear`, `llama3`).
    pub factor: Option<f64>,
    /// `llama3`'s low-frequency factor.
    pub low_freq_factor: Option<f64>,
    /// `llama3`'s high-frequency factor.
    pub high_freq_factor: Option<f64>,
    /// `llama3`'s and `yarn`'s original context length.
    pub original_max_position_embeddings: Option<usize>,
    /// `yarn`'s rotation bounds of the ramp.
    pub beta_fast: Option<f64>,
    /// See `beta_fast`.
    pub beta_slow: Option<f64>,
    /// `yarn`'s scale of cos and sin.
    pub attention_factor: Option<f64>,
    /// `yarn`'s attention-factor multipliers (DeepSeek).
    pub mscale: Option<f64>,
    /// See `mscale`.
    pub mscale_all_dim: Option<f64>,
    /// `yarn`: round the ramp bounds to whole dimensions.
    pub truncate: Option<bool>,
}

impl HfLlamaConfig {
    /// The working config: defaults of [`LlamaConfig`] for absent fields, then its shape checks;
    /// errors name `path` and the field.
    pub fn into_config(self, path: &Path) -> Result<LlamaConfig> {
        let err = |field: &str, message: String| ModelError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        if let Some(kind) = self.model_type.as_deref().filter(|k| *k != "llama") {
            return Err(err(
                "model_type",
                format!("`{kind}` is not a LLaMA model (expected `llama`)"),
            ));
        }
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(err(
                "hidden_act",
                format!("`{act}` is not supported (LLaMA uses silu)"),
            ));
        }
        let required =
            |value: Option<usize>, name: &str| value.ok_or_else(|| err(name, "missing".into()));
        // transformers 5 nests the RoPE settings in `rope_parameters`; 4 has `rope_theta` and
        // `rope_scaling` at the top level, which win when both are present.
        let rope_theta = self
            .rope_theta
            .or(self.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or_else(llama::default_rope_theta);
        let rope_scaling = match (&self.rope_scaling, &self.rope_parameters) {
            (Some(s), _) => {
                s.scaling("rope_scaling", self.original_max_position_embeddings, path)?
            }
            (None, Some(p)) => p.scaling(
                "rope_parameters",
                self.original_max_position_embeddings,
                path,
            )?,
            (None, None) => None,
        };
        let config = LlamaConfig {
            vocab_size: required(self.vocab_size, "vocab_size")?,
            hidden_size: required(self.hidden_size, "hidden_size")?,
            intermediate_size: required(self.intermediate_size, "intermediate_size")?,
            num_hidden_layers: required(self.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: required(self.num_attention_heads, "num_attention_heads")?,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rope_theta,
            rms_norm_eps: self
                .rms_norm_eps
                .unwrap_or_else(llama::default_rms_norm_eps),
            max_position_embeddings: self
                .max_position_embeddings
                .unwrap_or_else(llama::default_max_positions),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or_default(),
            attention_bias: self.attention_bias.unwrap_or_default(),
            mlp_bias: self.mlp_bias.unwrap_or_default(),
            initializer_range: self
                .initializer_range
                .unwrap_or_else(llama::default_initializer_range),
            rope_scaling,
        };
        config.validate().map_err(|m| err("config", m))?;
        Ok(config)
    }
}

impl HfRopeParameters {
    /// The scaling rule these settings select, read from the key `name` of the file `path`;
    /// `original` is the top-level `original_max_position_embeddings`, used when these
    /// settings lack it.
    fn scaling(
        &self,
        name: &str,
        original: Option<usize>,
        path: &Path,
    ) -> Result<Option<RopeScaling>> {
        let err = |field: &str, message: String| ModelError::Config {
            path: path.to_path_buf(),
            field: format!("{name}.{field}"),
            message,
        };
        let number =
            |value: Option<f64>, field: &str| value.ok_or_else(|| err(field, "missing".into()));
        let kind = self
            .rope_type
            .as_deref()
            .or(self.kind.as_deref())
            .unwrap_or("default");
        match kind {
            "default" => Ok(None),
            "linear" => Ok(Some(RopeScaling::Linear {
                factor: number(self.factor, "factor")?,
            })),
            "llama3" => Ok(Some(RopeScaling::Llama3 {
                factor: number(self.factor, "factor")?,
                low_freq_factor: number(self.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: number(self.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: self
                    .original_max_position_embeddings
                    .or(original)
                    .ok_or_else(|| err("original_max_position_embeddings", "missing".into()))?,
            })),
            "dynamic" => Ok(Some(RopeScaling::Dynamic {
                factor: number(self.factor, "factor")?,
            })),
            "yarn" => Ok(Some(RopeScaling::Yarn {
                factor: number(self.factor, "factor")?,
                original_max_position_embeddings: self
                    .original_max_position_embeddings
                    .or(original),
                beta_fast: self.beta_fast,
                beta_slow: self.beta_slow,
                attention_factor: self.attention_factor,
                mscale: self.mscale,
                mscale_all_dim: self.mscale_all_dim,
                truncate: self.truncate,
            })),
            other => Err(err(
                "rope_type",
                format!("`{other}` is not supported (default, linear, dynamic, yarn, llama3)"),
            )),
        }
    }
}

/// `config.json` content for `config`, readable by transformers 4 and 5.
pub fn config_json(config: &LlamaConfig, bos: Option<u32>, eos: Option<u32>) -> Value {
    // The enum serialises in transformers' own layout (`rope_type` tag, its field names).
    let rope_scaling = match &config.rope_scaling {
        None => Value::Null,
        Some(scaling) => serde_json::to_value(scaling).expect("RoPE settings serialise"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "some_future_key": [1, 2],
        })
    }

    fn with(edit: impl FnOnce(&mut Value)) -> Result<LlamaConfig> {
        let mut json = base();
        edit(&mut json);
        parse_config(&json, Path::new("m/config.json"))
    }

    fn field(result: Result<LlamaConfig>) -> String {
        match result {
            Err(ModelError::Config { field, path, .. }) => {
                assert_eq!(path, Path::new("m/config.json"));
                field
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn absent_and_null_fields_take_the_defaults_of_llama_config() {
        let config = with(|_| {}).unwrap();
        let nulls = with(|j| {
            for key in [
                "rope_theta",
                "rms_norm_eps",
                "rope_scaling",
                "tie_word_embeddings",
            ] {
                j[key] = Value::Null;
            }
        })
        .unwrap();
        assert_eq!(config, nulls);
        // The same defaults as the TOML form of the config.
        let toml_form: LlamaConfig = serde_json::from_value(json!({
            "vocab_size": 64, "hidden_size": 16, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4,
        }))
        .unwrap();
        assert_eq!(config, toml_form);
    }

    #[test]
    fn transformers_4_and_5_spell_rope_settings_alike() {
        let v4 = with(|j| {
            j["rope_theta"] = json!(500000.0);
            j["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        })
        .unwrap();
        let v5 = with(|j| {
            j["rope_parameters"] =
                json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 500000});
        })
        .unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v4.rope_theta, 500000.0);
        assert_eq!(v4.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        // llama3 may take its original length from the top level.
        let llama3 = with(|j| {
            j["original_max_position_embeddings"] = json!(64);
            j["rope_parameters"] = json!({"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0});
        })
        .unwrap();
        assert!(matches!(
            llama3.rope_scaling,
            Some(RopeScaling::Llama3 {
                original_max_position_embeddings: 64,
                ..
            })
        ));
        let default = with(|j| j["rope_parameters"] = json!({"rope_type": "default"})).unwrap();
        assert_eq!(default.rope_scaling, None);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field(with(|j| j["vocab_size"] = json!("many"))),
            "vocab_size"
        );
        assert_eq!(field(with(|j| j["hidden_size"] = json!(-1))), "hidden_size");
        assert_eq!(
            field(with(|j| j["tie_word_embeddings"] = json!(1))),
            "tie_word_embeddings"
        );
        assert_eq!(
            field(with(|j| j["num_hidden_layers"] = Value::Null)),
            "num_hidden_layers"
        );
        assert_eq!(
            field(with(|j| j["model_type"] = json!("mistral"))),
            "model_type"
        );
        assert_eq!(
            field(with(|j| j["hidden_act"] = json!("gelu"))),
            "hidden_act"
        );
        assert_eq!(
            field(with(|j| j["rope_parameters"] = json!({"rope_theta": "big"}))),
            "rope_parameters.rope_theta"
        );
        assert_eq!(
            field(with(
                |j| j["rope_scaling"] = json!({"rope_type": "longrope", "factor": 4.0})
            )),
            "rope_scaling.rope_type"
        );
        assert_eq!(
            field(with(|j| j["rope_scaling"] = json!({"rope_type": "linear"}))),
            "rope_scaling.factor"
        );
        assert_eq!(
            field(with(|j| j["num_key_value_heads"] = json!(3))),
            "config"
        );
    }

    #[test]
    fn exported_config_reads_back() {
        let config = with(|j| {
            j["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
        })
        .unwrap();
        let json = config_json(&config, Some(1), None);
        let back = parse_config(&json, Path::new("config.json")).unwrap();
        // The export states head_dim and num_key_value_heads explicitly.
        assert_eq!(back.head_width(), config.head_width());
        assert_eq!(back.kv_heads(), config.kv_heads());
        assert_eq!(back.rope_scaling, config.rope_scaling);
        assert_eq!(back.rope_theta, config.rope_theta);
    }
}
