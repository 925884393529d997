//! Pieces of the Hugging Face folder format that do not depend on the model: reading
//! `config.json`, typed field access that names the file and field in errors, the map between
//! burn's and PyTorch's linear-weight layouts, and writing a model folder atomically.

use crate::error::{ModelError, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use cpt_core::atomic::{sync_dir, write_atomic};
use cpt_core::params::{HostTensor, NamedTensors, named_tensors};
use cpt_core::tensor_file::write_tensors;
use serde_json::Value;
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

/// Typed access to the fields of one `config.json`; every error names the file and the field.
pub struct ConfigFields<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl<'a> ConfigFields<'a> {
    /// Fields of `json`, read from `path`.
    pub fn new(json: &'a Value, path: &'a Path) -> Self {
        Self { json, path }
    }

    /// An error about `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The raw value of `name`, `None` when absent or null.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.json.get(name).filter(|v| !v.is_null())
    }

    /// A non-negative integer, `None` when absent.
    pub fn usize(&self, name: &str) -> Result<Option<usize>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.error(name, "expected a non-negative integer")),
        }
    }

    /// A required non-negative integer.
    pub fn required(&self, name: &str) -> Result<usize> {
        self.usize(name)?.ok_or_else(|| self.error(name, "missing"))
    }

    /// A number, `None` when absent.
    pub fn float(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(name, "expected a number")),
        }
    }

    /// A boolean, `default` when absent.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(name, "expected true or false")),
        }
    }

    /// A string, `None` when absent.
    pub fn string(&self, name: &str) -> Result<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.error(name, "expected a string")),
        }
    }
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
