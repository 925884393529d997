//! What can go wrong reading, rendering and scoring a task: every variant names the task file
//! (or data file) and the key, split or document involved.

use std::path::PathBuf;
use thiserror::Error;

/// An error of a task file, its data, its templates or its scoring.
#[derive(Debug, Error)]
pub enum TaskError {
    /// A task file, an included file or a data file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// The task file is not YAML, or not a mapping of keys.
    #[error("{path}: not a valid task file: {message}")]
    Yaml {
        /// The task file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },

    /// A key lm-evaluation-harness knows but cpt does not run.
    #[error("{path}: key `{key}` is not supported (cpt scores log-likelihood tasks on local data)")]
    UnsupportedKey {
        /// The task file.
        path: PathBuf,
        /// The key, dotted for nested keys (`fewshot_config.split`).
        key: String,
    },

    /// A value tagged `!function` (a Python function) or with another YAML tag.
    #[error(
        "{path}: key `{key}` is `{tag} ...`: Python functions are not supported (cpt renders \
         Jinja templates only; write the prompt as a template or preprocess the data)"
    )]
    PythonFunction {
        /// The task file.
        path: PathBuf,
        /// The key holding the tagged value.
        key: String,
        /// The tag as written (`!function`).
        tag: String,
    },

    /// A required key is absent.
    #[error("{path}: key `{key}` is missing{hint}")]
    MissingKey {
        /// The task file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Why it is needed, starting with ": " (may be empty).
        hint: String,
    },

    /// A key holds a value of the wrong type or an unsupported value.
    #[error("{path}: key `{key}`: {message}")]
    InvalidValue {
        /// The task file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },

    /// A data file named by the task does not exist.
    #[error("{path}: key `{key}`: data file {file} does not exist")]
    MissingData {
        /// The task file.
        path: PathBuf,
        /// The key naming the data (`dataset_kwargs.data_files.test`, `dataset_path`).
        key: String,
        /// The data file, resolved against the task file's folder.
        file: PathBuf,
    },

    /// A data file could not be parsed.
    #[error("{file}: {message}")]
    Data {
        /// The data file.
        file: PathBuf,
        /// What is wrong, with the row where known.
        message: String,
    },

    /// A template failed to render, or a document gave a value of the wrong kind.
    #[error("{path}: key `{key}`: document {doc} {detail}")]
    Template {
        /// The task file.
        path: PathBuf,
        /// The key holding the template (`doc_to_text`, ...).
        key: String,
        /// The document's index in its split.
        doc: usize,
        /// The split, what went wrong and the template or field name.
        detail: String,
    },

    /// A document cannot be scored as lm-evaluation-harness would (empty continuation, too few
    /// few-shot documents, ...).
    #[error("{path}: document {doc}: {message}")]
    Document {
        /// The task file.
        path: PathBuf,
        /// The document's index in the evaluated split.
        doc: usize,
        /// What went wrong.
        message: String,
    },

    /// The text encoder failed.
    #[error("tokenizer: {0}")]
    Encode(String),
}
