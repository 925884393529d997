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
}

/// Result alias for cpt-models.
pub type Result<T> = std::result::Result<T, ModelError>;
