//! Pieces of the Hugging Face folder format that do not depend on the model: reading
//! `config.json`, typed field access that names the file and field in errors, and writing a
//! folder atomically.

use crate::error::{ModelError, Result};
use cpt_core::atomic::sync_dir;
use serde_json::Value;
use std::path::{Path, PathBuf};

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
