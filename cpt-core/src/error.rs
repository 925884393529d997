//! The error type of cpt-core.

use std::path::PathBuf;

/// Errors raised by cpt-core: configuration, checkpoints and tensor files.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An I/O call failed on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A TOML config could not be parsed or holds an unknown key.
    #[error("{path}: {message}")]
    Config {
        /// The config file (or `--set` for command-line overrides).
        path: PathBuf,
        /// What was wrong, naming the key.
        message: String,
    },
    /// A config value is out of its valid range.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `schedule.warmup_steps`.
        key: String,
        /// What was expected.
        message: String,
    },
    /// A safetensors file is malformed or does not match the model.
    #[error("{path}: {message}")]
    Tensors {
        /// The safetensors file.
        path: PathBuf,
        /// What was wrong, naming the tensor.
        message: String,
    },
    /// A checkpoint is incomplete or inconsistent.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A JSON document could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A data source failed (its crate's error, carried as text across the crate wall).
    #[error("{0}")]
    Data(String),
    /// Training hit a state it must not continue from.
    #[error("{0}")]
    Training(String),
}

impl CoreError {
    /// An [`CoreError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for cpt-core.
pub type Result<T> = std::result::Result<T, CoreError>;
