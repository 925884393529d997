//! Pieces of the Hugging Face folder format that do not depend on the model: reading
//! `config.json` into a model's serde mirror with errors that name the file and field, the map between
//! burn's and PyTorch's linear-weight layouts, and writing a model folder atomically.

use crate::error::{ModelError, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use cpt_core::atomic::{sync_dir, write_atomic};
use cpt_core::params::{HostTensor, NamedTensors, named_tensors};
use cpt_core::tensor_file::write_tensors;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Single-file weights of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Swap the two axes of a 2-D host tensor.
pub fn transpose(t: &HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut values = vec![0.0; t.values.len()];
    for r in 0..rows {
        for c in 0..cols {
            values[c * rows + r] = t.values[r * cols + c];
        }
    }
    HostTensor {
        shape: vec![cols, rows],
        values,
    }
}

/// `tensors` with every tensor for which `transposed(name, shape)` holds transposed: burn stores
/// linear weights `[in, out]`, PyTorch `[out, in]`, and this one map serves both directions.
pub fn transpose_where(
    tensors: NamedTensors,
    transposed: impl Fn(&str, &[usize]) -> bool,
) -> NamedTensors {
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = if transposed(&name, &t.shape) {
                transpose(&t)
            } else {
                t
            };
            (name, t)
        })
        .collect()
}

/// A model's weights under Hugging Face names and shapes (adapters excluded: merge or drop them
/// first); `transposed` names the model's linear weights.
pub fn hf_tensors<B: Backend, M: Module<B>>(
    model: &M,
    transposed: impl Fn(&str, &[usize]) -> bool,
) -> NamedTensors {
    let mut tensors = named_tensors(model);
    tensors.retain(|name, _| !name.contains(cpt_core::ADAPTER_MARKER));
    transpose_where(tensors, transposed)
}

/// Write a model folder at `out` atomically: `config.json`, `model.safetensors` (PyTorch
/// metadata, as transformers writes it) and a copy of `tokenizer_json` if given.
pub fn write_model_folder(
    out: &Path,
    config: &Value,
    tensors: &NamedTensors,
    tokenizer_json: Option<&Path>,
) -> Result<()> {
    write_folder_atomic(out, |tmp| {
        let json = serde_json::to_vec_pretty(config).expect("config serialises");
        write_atomic(&tmp.join("config.json"), &json)?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_tensors(&tmp.join(WEIGHTS_FILE), tensors, metadata)?;
        if let Some(tokenizer) = tokenizer_json {
            let bytes =
                std::fs::read(tokenizer).map_err(|e| cpt_core::CoreError::io(tokenizer, e))?;
            write_atomic(&tmp.join("tokenizer.json"), &bytes)?;
        }
        Ok(())
    })
}

/// Read and parse `dir/config.json`; returns the JSON and its path (for error messages).
pub fn read_config_json(dir: &Path) -> Result<(Value, PathBuf)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| cpt_core::CoreError::io(&path, e))?;
    let json = serde_json::from_str(&text).map_err(|e| ModelError::Folder {
        path: path.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    Ok((json, path))
}

/// Deserialize the serde mirror `T` of a `config.json` (or of a part of one) from `json`; `path`
/// names the file in errors.
///
/// serde's messages say what was expected ("invalid type: string \"many\", expected usize")
/// but not where. So when deserialization fails, each key is deserialized again on its own to
/// find the one that fails, descending into nested objects (`text_config.vocab_size`). That
/// works because mirrors give every field a default (`Option` or `#[serde(default)]`): a
/// single key is a complete config.
pub fn parse_mirror<T: DeserializeOwned>(json: &Value, path: &Path) -> Result<T> {
    T::deserialize(json).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        field: failing_key::<T>(json, &|v| v).unwrap_or_else(|| "config".into()),
        message: e.to_string(),
    })
}

/// The dotted path of the first key of `value` that `T` refuses on its own; `wrap` puts a
/// one-key object back where `value` sits in the whole config.
fn failing_key<T: DeserializeOwned>(
    value: &Value,
    wrap: &dyn Fn(Value) -> Value,
) -> Option<String> {
    for (key, inner) in value.as_object()? {
        let alone = |v: Value| Value::Object(Map::from_iter([(key.clone(), v)]));
        if T::deserialize(&wrap(alone(inner.clone()))).is_ok() {
            continue;
        }
        return Some(match failing_key::<T>(inner, &|v| wrap(alone(v))) {
            Some(deeper) => format!("{key}.{deeper}"),
            None => key.clone(),
        });
    }
    None
}

/// serde's `deserialize_with` for a field where `null` means something other than absence
/// (CLIP's token ids: absent takes the default, `null` means no such token): `Some` of the
/// value, `null` included, when the key is present; the field's `#[serde(default)]` gives
/// `None` when it is absent.
pub fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Write a folder at `out` atomically: `fill` writes the files into a temporary sibling folder,
/// which then replaces `out` by a rename, so readers see the old folder or the new one, never a
/// half-written one. The temporary folder is removed on error.
pub fn write_folder_atomic(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_dir(out);
    let result = (|| -> Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| cpt_core::CoreError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| cpt_core::CoreError::io(&tmp, e))?;
        fill(&tmp)?;
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| cpt_core::CoreError::io(out, e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| cpt_core::CoreError::io(out, e))?;
        Ok(sync_dir(out.parent())?)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn temp_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.tmp"))
}
