//! The error type of cpt-models.

use std::path::PathBuf;

/// Errors of model construction, import and export.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file or tensor error from cpt-core (names the file and tensor).
    #[error(transparent)]
    Core(#[from] cpt_core::CoreError),
    /// A `config.json` field is missing or has the wrong type or value.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: String,
        /// What was expected.
        message: String,
    },
    /// A model folder lacks a file it needs or holds a malformed one.
    #[error("{path}: {message}")]
    Folder {
        /// The file or folder.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A run-config setting the model cannot honour (`[model.grow]`).
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The offending key, dotted (`model.grow.positions`).
        key: String,
        /// What was expected.
        message: String,
    },
    /// A GGUF file is malformed, truncated or uses something cpt does not read.
    #[error("{path}: {message}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// One tensor of a GGUF file is malformed, truncated or of an unsupported type.
    #[error("{path}: tensor `{tensor}`: {message}")]
    GgufTensor {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// What was wrong.
        message: String,
    },
    /// A resize of a model's tables (vocabulary, positions) cannot be done as asked.
    #[error("resizing `{what}`: {message}")]
    Resize {
        /// The table (parameter path).
        what: String,
        /// What was wrong.
        message: String,
    },
}

/// Result alias for cpt-models.
pub type Result<T> = std::result::Result<T, ModelError>;
