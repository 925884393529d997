//! The one error type of cpt-data. Every variant names the file (and row, line or column) at
//! fault, so that a bad shard in a corpus of thousands is found from the message alone.

use std::path::PathBuf;

/// Everything that can go wrong while reading, tokenizing, packing or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A third-party decoder (parquet, tokenizers) panicked on malformed input; the panic was
    /// caught at the crate boundary and turned into this error.
    #[error("{}: malformed {what} (the decoder failed: {message})", path.display())]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// What was being decoded.
        what: &'static str,
        /// The decoder's panic message.
        message: String,
    },

    /// A write through cpt-core's atomic file helpers failed.
    #[error(transparent)]
    Write(#[from] cpt_core::CoreError),

    /// A Parquet file is not valid (bad footer, corrupt page, truncated) or could not be written.
    #[error("{}: not a readable Parquet file: {source}", path.display())]
    Parquet {
        /// The Parquet file concerned.
        path: PathBuf,
        /// The parquet crate's error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A row group of a Parquet file could not be decoded into Arrow arrays.
    #[error("{}: row group {row_group}: cannot decode: {source}", path.display())]
    Arrow {
        /// The Parquet file concerned.
        path: PathBuf,
        /// Index of the row group that failed.
        row_group: usize,
        /// The arrow crate's error.
        #[source]
        source: arrow_schema::ArrowError,
    },

    /// The configured text column is not in a Parquet file.
    #[error("{}: no column `{column}` (columns: {})", path.display(), available.join(", "))]
    MissingColumn {
        /// The Parquet file concerned.
        path: PathBuf,
        /// The column that was asked for.
        column: String,
        /// The columns the file does have, to spot a typo at once.
        available: Vec<String>,
    },

    /// A column exists but does not hold the type it must (strings for text, integers for
    /// labels, binary or `{bytes, path}` structs for images).
    #[error("{}: column `{column}` has type {found}, expected {expected}", path.display())]
    WrongColumnType {
        /// The Parquet file concerned.
        path: PathBuf,
        /// The column.
        column: String,
        /// The Arrow type found instead.
        found: String,
        /// What the column must hold.
        expected: &'static str,
    },

    /// One row of a data file cannot be used: an image that does not decode, an image stored
    /// only as a path, a label outside the class names.
    #[error("{}: column `{column}`, row {row} (row group {row_group}): {message}", path.display())]
    BadRow {
        /// The Parquet file concerned.
        path: PathBuf,
        /// The column at fault.
        column: String,
        /// Index of the row group holding the row.
        row_group: usize,
        /// Index of the row in the file (0-based, over all row groups).
        row: u64,
        /// What is wrong with it.
        message: String,
    },

    /// A row group decoded to a different number of rows than its footer promised.
    #[error("{}: row group {row_group}: footer says {expected} rows, decoded {found}", path.display())]
    RowCountMismatch {
        /// The Parquet file concerned.
        path: PathBuf,
        /// Index of the row group.
        row_group: usize,
        /// Rows according to the footer.
        expected: usize,
        /// Rows actually decoded.
        found: usize,
    },

    /// No usable document (or not enough tokens) where at least one was needed.
    #[error("empty corpus: {what}")]
    EmptyCorpus {
        /// What was empty, e.g. the files of a source.
        what: String,
    },

    /// A glob pattern matched no file.
    #[error("no files match `{pattern}`")]
    NoFilesMatch {
        /// The pattern as given.
        pattern: String,
    },

    /// A glob pattern is not valid syntax.
    #[error("bad glob pattern `{pattern}`: {message}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What the glob crate objected to.
        message: String,
    },

    /// A tokenizer could not be loaded, trained, saved or used.
    #[error("{}: tokenizer error: {message}", path.display())]
    Tokenizer {
        /// The tokenizer.json file (or `<in-memory tokenizer>` for one trained in this process).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// A line of an input file is malformed (e.g. a JSONL line that is not a JSON object).
    #[error("{}:{line}: {message}", path.display())]
    BadInput {
        /// The input file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        message: String,
    },

    /// An input file is not UTF-8 text.
    #[error("{}: not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotUtf8 {
        /// The input file.
        path: PathBuf,
        /// Byte offset of the first invalid byte in the file.
        offset: u64,
    },

    /// A cursor does not fit the source it is applied to (other files, other mixture).
    #[error("cursor does not fit this source: {message}")]
    BadCursor {
        /// What did not fit.
        message: String,
    },

    /// An argument is out of its valid range.
    #[error("invalid `{name}`: {message}")]
    InvalidOption {
        /// The argument's name.
        name: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`DataError::Parquet`] for `path`.
    /// Whether this error means the bytes of a data file are damaged (as opposed to a missing
    /// file, a wrong column or a bad option): what the quarantine policy may skip.
    pub fn is_corrupt_data(&self) -> bool {
        matches!(
            self,
            Self::Parquet { .. }
                | Self::Arrow { .. }
                | Self::Malformed { .. }
                | Self::RowCountMismatch { .. }
        )
    }

    /// Run a third-party decoder on data from `path`, turning a panic into
    /// [`DataError::Malformed`]: malformed input must give an error, never abort the run.
    pub(crate) fn guard<T>(
        path: &std::path::Path,
        what: &'static str,
        decode: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(Self::Malformed {
                path: path.to_path_buf(),
                what,
                message,
            })
        })
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Self::Parquet {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_column_names_file_and_alternatives_on_one_line() {
        let err = DataError::MissingColumn {
            path: "data/x.parquet".into(),
            column: "txt".into(),
            available: vec!["text".into(), "id".into()],
        };
        assert_eq!(
            err.to_string(),
            "data/x.parquet: no column `txt` (columns: text, id)"
        );
    }

    #[test]
    fn bad_input_names_file_and_line() {
        let err = DataError::BadInput {
            path: "in/a.jsonl".into(),
            line: 7,
            message: "expected a JSON object".into(),
        };
        assert_eq!(err.to_string(), "in/a.jsonl:7: expected a JSON object");
    }
}
