//! LLaMA in GGUF: llama.cpp's metadata keys and tensor names mapped to [`LlamaConfig`] and the
//! Hugging Face names, and the rotary row order of the query and key projections.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of
//! `q_proj` and `k_proj` within each head from transformers' "two halves" rotary layout to
//! interleaved pairs: GGUF row `h·d + 2j + s` holds transformers row `h·d + s·d/2 + j`. Import
//! undoes it, export applies it.

use super::dequant::GgmlType;
use super::reader::{GgufReader, MetaValue, ValueType};
use super::tokenizer::{gguf_tokenizer_metadata, tokenizer_json};
use super::writer::GgufWriter;
use crate::error::{ModelError, Result};
use crate::hf_folder::{WEIGHTS_FILE, transpose_where, write_folder_atomic};
use crate::hf_llama::{self, transposed};
use crate::llama::{LlamaConfig, LlamaForCausalLM, RopeScaling};
use burn::tensor::backend::Backend;
use cpt_core::atomic::write_atomic;
use cpt_core::params::{HostTensor, NamedTensors, load_named};
use cpt_core::tensor_file::write_tensors;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

/// `general.architecture` of the models this file maps.
pub const ARCHITECTURE: &str = "llama";
/// llama.cpp's Llama 3 rotary factors, derived from the RoPE settings (not a parameter).
const ROPE_FREQS: &str = "rope_freqs.weight";

/// Whole-model tensors: (GGUF stem, Hugging Face stem).
const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];
/// Per-layer tensors: (GGUF stem after `blk.N.`, Hugging Face stem after `model.layers.N.`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// The Hugging Face name of GGUF tensor `name` (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`).
pub fn hf_name(name: &str) -> Option<String> {
    let (stem, kind) = name.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.{kind}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of Hugging Face tensor `name` (the inverse of [`hf_name`]).
pub fn gguf_name(name: &str) -> Option<String> {
    let (stem, kind) = name.rsplit_once('.')?;
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, hf)| *hf == stem) {
        return Some(format!("{g}.{kind}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, hf)| *hf == part)?;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Heads whose rows llama.cpp interleaves in Hugging Face tensor `name`: the query heads for
/// `q_proj`, the key/value heads for `k_proj`, none otherwise.
fn rotary_heads(name: &str, config: &LlamaConfig) -> Option<usize> {
    if name.contains(".self_attn.q_proj.") {
        Some(config.num_attention_heads)
    } else if name.contains(".self_attn.k_proj.") {
        Some(config.kv_heads())
    } else {
        None
    }
}

/// Reorder the rows of a `[heads·d, ...]` tensor between transformers' rotary layout and
/// llama.cpp's: `to_gguf` applies `LlamaModel.permute`, otherwise it is undone.
pub fn permute_rows(t: &HostTensor, heads: usize, to_gguf: bool) -> HostTensor {
    let rows = t.shape[0];
    let cols = t.values.len() / rows.max(1);
    let half = rows / heads / 2;
    let mut values = vec![0.0; t.values.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let hf = h * 2 * half + s * half + j;
                let gg = h * 2 * half + 2 * j + s;
                let (to, from) = if to_gguf { (gg, hf) } else { (hf, gg) };
                values[to * cols..(to + 1) * cols]
                    .copy_from_slice(&t.values[from * cols..(from + 1) * cols]);
            }
        }
    }
    HostTensor {
        shape: t.shape.clone(),
        values,
    }
}

/// The model's hyperparameters from `llama.*` metadata. The vocabulary size falls back on the
/// token list, and the embedding is tied when the file has no `output.weight`.
pub fn llama_config<R: Read + Seek>(file: &mut GgufReader<R>) -> Result<LlamaConfig> {
    let arch = file
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| file.err("no `general.architecture` string".into()))?;
    if arch != ARCHITECTURE {
        return Err(file.err(format!(
            "`general.architecture` is `{arch}`; cpt reads `{ARCHITECTURE}` GGUF files"
        )));
    }
    let key = |name: &str| format!("{ARCHITECTURE}.{name}");
    let count = |name: &str| -> Result<Option<usize>> {
        match file.get(&key(name)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                file.err(format!(
                    "`{}` is {v:?}, not a non-negative integer",
                    key(name)
                ))
            }),
        }
    };
    let required = |name: &str| -> Result<usize> {
        count(name)?.ok_or_else(|| file.err(format!("missing `{}`", key(name))))
    };
    let number = |name: &str| -> Result<Option<f64>> {
        match file.get(&key(name)) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| file.err(format!("`{}` is {v:?}, not a number", key(name)))),
        }
    };
    let hidden_size = required("embedding_length")?;
    let num_attention_heads = required("attention.head_count")?;
    let head_dim = count("attention.key_length")?;
    if let (Some(k), Some(v)) = (head_dim, count("attention.value_length")?)
        && k != v
    {
        return Err(file.err(format!(
            "key width {k} differs from value width {v}; LLaMA uses one head width"
        )));
    }
    let head_width = head_dim.unwrap_or(hidden_size / num_attention_heads.max(1));
    if let Some(rot) = count("rope.dimension_count")?
        && rot != head_width
    {
        return Err(file.err(format!(
            "`{}` is {rot} but heads are {head_width} wide: partial rotary embeddings are not supported",
            key("rope.dimension_count")
        )));
    }
    let vocab_size = match count("vocab_size")? {
        Some(n) => n,
        None => file
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map(<[_]>::len)
            .ok_or_else(|| file.err("no `llama.vocab_size` and no token list".into()))?,
    };
    let rope_theta = number("rope.freq_base")?.unwrap_or_else(crate::llama::default_rope_theta);
    let rope_scaling = match file
        .get(&key("rope.scaling.type"))
        .map(|v| v.as_str().unwrap_or("?"))
    {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: number("rope.scaling.factor")?
                .ok_or_else(|| file.err(format!("missing `{}`", key("rope.scaling.factor"))))?,
        }),
        Some(other) => {
            return Err(file.err(format!(
                "`{}` `{other}` is not supported (none, linear)",
                key("rope.scaling.type")
            )));
        }
    };
    let has = |name: &str| file.tensor_info(name).is_some();
    let mut config = LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: required("block_count")?,
        num_attention_heads,
        num_key_value_heads: count("attention.head_count_kv")?,
        head_dim,
        rope_theta,
        rms_norm_eps: number("attention.layer_norm_rms_epsilon")?
            .unwrap_or_else(crate::llama::default_rms_norm_eps),
        max_position_embeddings: count("context_length")?
            .unwrap_or_else(crate::llama::default_max_positions),
        tie_word_embeddings: !has("output.weight"),
        attention_bias: has("blk.0.attn_q.bias"),
        mlp_bias: has("blk.0.ffn_up.bias"),
        initializer_range: crate::llama::default_initializer_range(),
        rope_scaling,
    };
    if file.tensor_info(ROPE_FREQS).is_some() {
        let factors = file.tensor_f32(ROPE_FREQS)?.values;
        config.rope_scaling =
            llama3_scaling(&config, &factors).map_err(|m| file.tensor_err(ROPE_FREQS, m))?;
    }
    config.validate().map_err(|m| {
        file.err(format!(
            "the `llama.*` metadata describe no valid model: {m}"
        ))
    })?;
    Ok(config)
}

/// The frequency factors llama.cpp stores as `rope_freqs.weight` for Llama 3's RoPE scaling
/// (`LlamaModel.generate_extra_tensors` of `convert_hf_to_gguf.py`).
fn llama3_factors(
    theta: f64,
    head_width: usize,
    factor: f64,
    low: f64,
    high: f64,
    original: usize,
) -> Vec<f32> {
    let original = original as f64;
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_width / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_width as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

/// Llama 3's settings behind stored rotary factors. The file keeps only the factors; every
/// Llama 3.x release uses low 1, high 4 and an original context of 8192, so those are assumed
/// and the factors must match them.
fn llama3_scaling(
    config: &LlamaConfig,
    factors: &[f32],
) -> std::result::Result<Option<RopeScaling>, String> {
    if factors.len() != config.head_width() / 2 {
        return Err(format!(
            "{} factors for heads {} wide",
            factors.len(),
            config.head_width()
        ));
    }
    if factors.iter().all(|&f| f == 1.0) {
        return Ok(None);
    }
    let factor = f64::from(*factors.last().expect("non-empty"));
    let expected = llama3_factors(
        config.rope_theta,
        config.head_width(),
        factor,
        1.0,
        4.0,
        8192,
    );
    let worst = factors
        .iter()
        .zip(&expected)
        .map(|(a, b)| ((a - b) / b).abs())
        .fold(0.0f32, f32::max);
    if worst > 1e-3 {
        return Err(format!(
            "rotary factors do not follow Llama 3's rule (low 1, high 4, original 8192; off by {worst:.2e})"
        ));
    }
    Ok(Some(RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    }))
}

/// Every weight of the file dequantised to f32 under its Hugging Face name and shape, rotary
/// rows back in transformers' order.
pub fn llama_weights<R: Read + Seek>(
    file: &mut GgufReader<R>,
    config: &LlamaConfig,
) -> Result<NamedTensors> {
    let names: Vec<String> = file.tensors.iter().map(|t| t.name.clone()).collect();
    let mut out = NamedTensors::new();
    for name in names {
        if name == ROPE_FREQS {
            continue;
        }
        let hf = hf_name(&name).ok_or_else(|| {
            file.tensor_err(&name, "not a tensor of a LLaMA model cpt knows".into())
        })?;
        let mut tensor = file.tensor_f32(&name)?;
        if let Some(heads) = rotary_heads(&hf, config) {
            if !tensor.shape[0].is_multiple_of(2 * heads) {
                return Err(file.tensor_err(
                    &name,
                    format!(
                        "{} rows do not split into {heads} rotary heads",
                        tensor.shape[0]
                    ),
                ));
            }
            tensor = permute_rows(&tensor, heads, false);
        }
        out.insert(hf, tensor);
    }
    Ok(out)
}

/// Load a LLaMA GGUF file onto `device`: config from its metadata, every weight dequantised
/// (a missing, unexpected or misshapen tensor is an error naming the file and tensor).
pub fn load_llama_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LlamaConfig, LlamaForCausalLM<B>)> {
    let mut file = super::reader::open(path)?;
    let config = llama_config(&mut file)?;
    let weights = llama_weights(&mut file, &config)?;
    let model = load_named(
        config.init::<B>(device),
        &transpose_where(weights, transposed),
        path,
    )?;
    Ok((config, model))
}

/// The special token ids of the file (`tokenizer.ggml.bos_token_id`, `eos_token_id`).
fn special_ids<R>(file: &GgufReader<R>) -> (Option<u32>, Option<u32>) {
    let id = |key: &str| file.get(key).and_then(MetaValue::as_u64).map(|v| v as u32);
    (
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id"),
    )
}

/// Convert the GGUF file at `path` into a Hugging Face folder at `out` (`config.json`,
/// `model.safetensors` in f32, `tokenizer.json`), written whole or not at all.
pub fn import_gguf(path: &Path, out: &Path) -> Result<LlamaConfig> {
    let mut file = super::reader::open(path)?;
    let config = llama_config(&mut file)?;
    let weights = llama_weights(&mut file, &config)?;
    let tokenizer = tokenizer_json(&file)?;
    let (bos, eos) = special_ids(&file);
    write_folder_atomic(out, |tmp| {
        let json = serde_json::to_vec_pretty(&hf_llama::config_json(&config, bos, eos))
            .expect("config serialises");
        write_atomic(&tmp.join("config.json"), &json)?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_tensors(&tmp.join(WEIGHTS_FILE), &weights, metadata)?;
        let json = serde_json::to_vec(&tokenizer).expect("tokenizer serialises");
        write_atomic(&tmp.join("tokenizer.json"), &json)?;
        Ok(())
    })?;
    Ok(config)
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file whose matrices are `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2_K => 10,
        GgmlType::Q3_K => 12,
        GgmlType::Q4_K => 15,
        GgmlType::Q5_K => 17,
        GgmlType::Q6_K => 18,
        GgmlType::BF16 => 32,
    }
}

/// The tokenizer to embed in an exported GGUF file.
pub struct ExportTokenizer<'a> {
    /// A parsed `tokenizer.json` (byte-level BPE).
    pub json: &'a Value,
    /// Where it came from, for errors.
    pub path: &'a Path,
    /// Beginning- and end-of-text ids.
    pub special_ids: (Option<u32>, Option<u32>),
}

/// Write `model` as a GGUF file at `out`, as llama.cpp's converter writes LLaMA models:
/// `general.*`, `llama.*` and `tokenizer.ggml.*` metadata, matrices stored as `ty` (or f16 where
/// rows are not whole blocks of `ty`) with rotary rows interleaved, 1-D tensors in f32, Llama 3
/// rotary factors as `rope_freqs.weight`. Adapters must be merged or dropped first. The file
/// appears whole or not at all.
pub fn save_llama_gguf<B: Backend>(
    model: &LlamaForCausalLM<B>,
    config: &LlamaConfig,
    tokenizer: &ExportTokenizer,
    ty: GgmlType,
    name: &str,
    out: &Path,
) -> Result<()> {
    use MetaValue::{F32, String as Str, U32};
    let mut w = GgufWriter::new();
    let arch = |k: &str| format!("{ARCHITECTURE}.{k}");
    let u32_of = |n: usize| U32(n as u32);
    w.set("general.architecture", Str(ARCHITECTURE.into()));
    w.set("general.type", Str("model".into()));
    w.set("general.name", Str(name.into()));
    w.set(&arch("block_count"), u32_of(config.num_hidden_layers));
    w.set(
        &arch("context_length"),
        u32_of(config.max_position_embeddings),
    );
    w.set(&arch("embedding_length"), u32_of(config.hidden_size));
    w.set(
        &arch("feed_forward_length"),
        u32_of(config.intermediate_size),
    );
    w.set(
        &arch("attention.head_count"),
        u32_of(config.num_attention_heads),
    );
    w.set(&arch("attention.head_count_kv"), u32_of(config.kv_heads()));
    w.set(&arch("rope.freq_base"), F32(config.rope_theta as f32));
    w.set(
        &arch("attention.layer_norm_rms_epsilon"),
        F32(config.rms_norm_eps as f32),
    );
    w.set(&arch("attention.key_length"), u32_of(config.head_width()));
    w.set(&arch("attention.value_length"), u32_of(config.head_width()));
    w.set("general.file_type", U32(file_type(ty)));
    w.set(&arch("vocab_size"), u32_of(config.vocab_size));
    w.set(&arch("rope.dimension_count"), u32_of(config.head_width()));
    if let Some(RopeScaling::Dynamic { .. } | RopeScaling::Yarn { .. }) = &config.rope_scaling {
        // llama.cpp has no dynamic NTK rule, and its YaRN takes its ramp bounds and attention
        // factor from run-time options rather than the file: neither would load as trained.
        return Err(ModelError::Gguf {
            path: out.to_path_buf(),
            message: "GGUF export supports RoPE scaling `linear` and `llama3` only; this model \
                      uses `dynamic` or `yarn` (export a Hugging Face folder instead)"
                .into(),
        });
    }
    if let Some(RopeScaling::Linear { factor }) = &config.rope_scaling {
        w.set(&arch("rope.scaling.type"), Str("linear".into()));
        w.set(&arch("rope.scaling.factor"), F32(*factor as f32));
    }
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        w.set("general.quantization_version", U32(2));
    }
    for (key, value) in gguf_tokenizer_metadata(
        tokenizer.json,
        tokenizer.path,
        config.vocab_size,
        tokenizer.special_ids,
    )? {
        w.set(&key, value);
    }
    if let Some(RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    }) = &config.rope_scaling
    {
        let factors = llama3_factors(
            config.rope_theta,
            config.head_width(),
            *factor,
            *low_freq_factor,
            *high_freq_factor,
            *original_max_position_embeddings,
        );
        w.add_tensor(ROPE_FREQS, &[factors.len()], &factors, GgmlType::F32, out)?;
    }
    let tensors = hf_llama::hf_tensors(model);
    // llama.cpp's tensor order: embedding, then each block, then the output norm and head.
    let mut ordered: Vec<(String, String)> = tensors
        .keys()
        .map(|hf| {
            gguf_name(hf)
                .map(|g| (hf.clone(), g))
                .ok_or_else(|| ModelError::GgufTensor {
                    path: out.to_path_buf(),
                    tensor: hf.clone(),
                    message: "no GGUF name for this tensor".into(),
                })
        })
        .collect::<Result<_>>()?;
    ordered.sort_by_key(|(_, g)| tensor_order(g));
    for (hf, gguf) in ordered {
        let mut tensor = tensors[&hf].clone();
        if let Some(heads) = rotary_heads(&hf, config) {
            tensor = permute_rows(&tensor, heads, true);
        }
        let row = *tensor.shape.last().expect("tensors have a shape");
        let stored = if tensor.shape.len() == 1 {
            GgmlType::F32
        } else if row.is_multiple_of(ty.block_size()) {
            ty
        } else {
            // llama.cpp's converter falls back the same way for rows that are not whole blocks.
            GgmlType::F16
        };
        w.add_tensor(&gguf, &tensor.shape, &tensor.values, stored, out)?;
    }
    w.write(out)
}

/// Sort key giving llama.cpp's tensor order.
fn tensor_order(name: &str) -> (usize, usize, String) {
    match name.strip_prefix("blk.") {
        _ if name.starts_with("token_embd") => (0, 0, String::new()),
        Some(rest) => {
            let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
            (1, layer.parse().unwrap_or(usize::MAX), part.to_string())
        }
        None => (2, 0, name.to_string()),
    }
}

/// Metadata of an array of strings.
pub(crate) fn string_array(values: impl IntoIterator<Item = String>) -> MetaValue {
    MetaValue::Array {
        item: ValueType::String,
        values: values.into_iter().map(MetaValue::String).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (g, hf) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "model.norm.weight"),
            (
                "blk.12.attn_q.bias",
                "model.layers.12.self_attn.q_proj.bias",
            ),
            (
                "blk.0.ffn_down.weight",
                "model.layers.0.mlp.down_proj.weight",
            ),
            (
                "blk.3.ffn_norm.weight",
                "model.layers.3.post_attention_layernorm.weight",
            ),
        ] {
            assert_eq!(hf_name(g).as_deref(), Some(hf));
            assert_eq!(gguf_name(hf).as_deref(), Some(g));
        }
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn rotary_permutation_matches_llama_cpp() {
        // convert_hf_to_gguf's permute on 2 heads of width 4 (rows 0..8, one column):
        // reshape(2, 2, 2).swapaxes(1, 2) gives [0, 2, 1, 3, 4, 6, 5, 7].
        let t = HostTensor {
            shape: vec![8, 1],
            values: (0..8).map(|i| i as f32).collect(),
        };
        let g = permute_rows(&t, 2, true);
        assert_eq!(g.values, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(permute_rows(&g, 2, false).values, t.values);
        // Width 6: halves [0 1 2 | 3 4 5] interleave to 0 3 1 4 2 5.
        let t = HostTensor {
            shape: vec![6, 1],
            values: (0..6).map(|i| i as f32).collect(),
        };
        assert_eq!(
            permute_rows(&t, 1, true).values,
            vec![0., 3., 1., 4., 2., 5.]
        );
    }

    #[test]
    fn llama3_factors_match_the_converter() {
        // Llama 3.2 1B: theta 5e5, head 64, factor 32; the converter's first factors are 1, the
        // last equal `factor`.
        let f = llama3_factors(500000.0, 64, 32.0, 1.0, 4.0, 8192);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(*f.last().unwrap(), 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
        let config = LlamaConfig {
            rope_theta: 500000.0,
            head_dim: Some(64),
            ..crate::tiny::llama()
        };
        assert!(matches!(
            llama3_scaling(&config, &f),
            Ok(Some(RopeScaling::Llama3 { factor: 32.0, .. }))
        ));
        let mut off = f.clone();
        off[20] *= 1.5;
        assert!(llama3_scaling(&config, &off).is_err());
        assert_eq!(llama3_scaling(&config, &[1.0; 32]), Ok(None));
    }
}
