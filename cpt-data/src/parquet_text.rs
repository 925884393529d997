//! Documents streamed from the text column of Parquet files, one row group at a time, in a
//! deterministic, resumable (optionally shuffled) order that repeats forever in epochs.
//!
//! The unit of shuffling and of I/O is the row group (a "shard unit"): an epoch visits every unit
//! once in a seeded order and every row of a unit in a seeded order, so only one row group's
//! texts are ever in memory and a [`DocCursor`] of three integers pins the position exactly.
//! The ordering, cursor and quarantine live in `row_groups.rs`, shared with the image source.
//!
//! Beside the text, a source may read a metadata string column (metadata conditioning) and
//! numeric columns that a [`RowFilter`] selects rows by ([`DocumentColumns`]); a filtered-out
//! row is skipped like a null one, so cursors and epochs are unchanged by filtering.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use cpt_core::row_filter::RowFilter;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
pub use crate::row_groups::{DocCursor, ShardUnit};
use crate::row_groups::{RowGroupStream, SourceFile, StreamOrder, next_across_epochs};

/// The text column of Hugging Face text datasets.
pub const DEFAULT_TEXT_COLUMN: &str = "text";

/// How a [`ParquetTextSource`] reads and orders its documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextSourceOptions {
    /// Name of the string column holding documents (default `text`).
    pub column: String,
    /// Visit units and rows in a seeded random order per epoch (`false`: file order).
    pub shuffle: bool,
    /// Seed of the shuffle; ignored when `shuffle` is false.
    pub seed: u64,
    /// Skip (and remember) row groups that fail to decode instead of failing the run.
    #[serde(default)]
    pub quarantine_bad_shards: bool,
}

impl Default for TextSourceOptions {
    fn default() -> Self {
        Self {
            column: DEFAULT_TEXT_COLUMN.to_string(),
            shuffle: false,
            seed: 0,
            quarantine_bad_shards: false,
        }
    }
}

impl TextSourceOptions {
    /// Options for a shuffled source over the default `text` column.
    pub fn shuffled(seed: u64) -> Self {
        Self {
            shuffle: true,
            seed,
            ..Self::default()
        }
    }
}

/// Columns read beside the text: a metadata string and the numeric columns of a row filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentColumns {
    /// A string column whose value becomes [`Document::metadata`] (null: no metadata).
    pub metadata: Option<String>,
    /// Keep only rows for which this holds.
    pub filter: Option<RowFilter>,
}

/// One document: its text and, when a metadata column is read, that row's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The text.
    pub text: String,
    /// The row's metadata string, when the source reads a metadata column and it is not null.
    pub metadata: Option<String>,
}

/// Where the columns a source reads sit in one opened file.
struct FileColumns {
    /// Index of the text column among the file's top-level columns.
    text: usize,
    /// Index of the metadata column.
    metadata: Option<usize>,
    /// Index of each filter condition's column, in condition order.
    filter: Vec<usize>,
}

impl FileColumns {
    /// The top-level columns to decode, ascending and distinct: the order in which the decoded
    /// batches hold them.
    fn projection(&self) -> Vec<usize> {
        let mut all: Vec<usize> = std::iter::once(self.text)
            .chain(self.metadata)
            .chain(self.filter.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// Documents from the text column of one or more Parquet files; see the module docs.
pub struct ParquetTextSource {
    stream: RowGroupStream<Document>,
    columns: Vec<FileColumns>,
    options: TextSourceOptions,
    extra: DocumentColumns,
}

impl std::fmt::Debug for ParquetTextSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetTextSource")
            .field("files", &self.stream.paths())
            .field("units", &self.stream.units().len())
            .field("options", &self.options)
            .field("cursor", &self.stream.cursor())
            .finish()
    }
}

impl ParquetTextSource {
    /// Open and validate every file (exists, valid footer, text column present and of a string
    /// type) and list its row groups as units. No document is read yet.
    pub fn open(paths: &[PathBuf], options: TextSourceOptions) -> Result<Self> {
        Self::open_with(paths, options, DocumentColumns::default())
    }

    /// [`ParquetTextSource::open`], also reading `extra`'s metadata column (a string type) and
    /// filter columns (numeric types), which every file must have.
    pub fn open_with(
        paths: &[PathBuf],
        options: TextSourceOptions,
        extra: DocumentColumns,
    ) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut columns = Vec::with_capacity(paths.len());
        for path in paths {
            let file = SourceFile::open(path)?;
            let metadata = match &extra.metadata {
                Some(name) => Some(string_column(&file, name)?),
                None => None,
            };
            let filter = extra.filter.iter().flat_map(RowFilter::conditions);
            columns.push(FileColumns {
                text: string_column(&file, &options.column)?,
                metadata,
                filter: filter
                    .map(|c| numeric_column(&file, &c.column))
                    .collect::<Result<_>>()?,
            });
            files.push(file);
        }
        let order = StreamOrder {
            shuffle: options.shuffle,
            seed: options.seed,
            quarantine_bad_shards: options.quarantine_bad_shards,
        };
        Ok(Self {
            stream: RowGroupStream::new(files, order),
            columns,
            options,
            extra,
        })
    }

    /// The shard units (row groups with at least one row), in file order; a unit's id is its
    /// index here.
    pub fn units(&self) -> &[ShardUnit] {
        self.stream.units()
    }

    /// The files of this source, in the order given to [`ParquetTextSource::open`].
    pub fn paths(&self) -> Vec<&Path> {
        self.stream.paths()
    }

    /// Rows over all units (nulls included): an upper bound on documents per epoch.
    pub fn num_rows(&self) -> usize {
        self.stream.num_rows()
    }

    /// The options this source was opened with.
    pub fn options(&self) -> &TextSourceOptions {
        &self.options
    }

    /// Corrupt units skipped so far, as (file, row group).
    pub fn quarantined(&self) -> Vec<(&Path, usize)> {
        self.stream.quarantined()
    }

    /// The position of the next document.
    pub fn cursor(&self) -> DocCursor {
        self.stream.cursor()
    }

    /// Continue from `cursor` (from [`ParquetTextSource::cursor`] of a source over the same
    /// files and options). The unit is read lazily, on the next call for a document.
    pub fn seek(&mut self, cursor: &DocCursor) -> Result<()> {
        self.stream.seek(cursor)
    }

    /// The next document of the current epoch, or `None` once the epoch is exhausted (the cursor
    /// then points at the start of the next epoch). Null and filtered-out rows are skipped.
    pub fn next_in_epoch(&mut self) -> Result<Option<String>> {
        Ok(self.next_document_in_epoch()?.map(|d| d.text))
    }

    /// [`ParquetTextSource::next_in_epoch`] with the row's metadata.
    pub fn next_document_in_epoch(&mut self) -> Result<Option<Document>> {
        let (columns, filter) = (&self.columns, self.extra.filter.as_ref());
        let mut load = |file: &SourceFile, unit: ShardUnit| {
            read_documents(file, &columns[unit.file], filter, unit)
        };
        Ok(self.stream.next_in_epoch(&mut load)?.map(|row| row.value))
    }

    /// The next document, looping over epochs forever. A whole epoch without a single non-null
    /// row gives [`DataError::EmptyCorpus`] instead of spinning.
    pub fn next_document(&mut self) -> Result<String> {
        next_across_epochs(|| self.next_in_epoch())?.ok_or_else(|| self.empty_corpus_error())
    }

    /// The error for a source whose every epoch is empty, naming its files.
    pub(crate) fn empty_corpus_error(&self) -> DataError {
        self.no_documents_error("non-empty document")
    }

    /// [`DataError::EmptyCorpus`] saying that not one `documents` was found.
    pub(crate) fn no_documents_error(&self, documents: &str) -> DataError {
        DataError::EmptyCorpus {
            what: format!(
                "no {documents} in column `{}`{} of {}",
                self.options.column,
                match &self.extra.filter {
                    Some(filter) => format!(" passing `{filter}`"),
                    None => String::new(),
                },
                describe_files(&self.stream.paths())
            ),
        }
    }
}

/// The files of a source for an error message.
pub(crate) fn describe_files(paths: &[&Path]) -> String {
    if paths.is_empty() {
        "an empty file list".to_string()
    } else {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The index of a file's column `column`, or an error naming the columns it has.
fn column_index(file: &SourceFile, column: &str) -> Result<usize> {
    let schema = file.metadata.schema();
    schema
        .index_of(column)
        .map_err(|_| DataError::MissingColumn {
            path: file.path.clone(),
            column: column.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
}

/// Find a string column (text, metadata) of a file and check that it holds strings.
fn string_column(file: &SourceFile, column: &str) -> Result<usize> {
    let index = column_index(file, column)?;
    match file.metadata.schema().field(index).data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(index),
        other => Err(DataError::WrongColumnType {
            path: file.path.clone(),
            column: column.to_string(),
            found: other.to_string(),
            expected: STRING_TYPES,
        }),
    }
}

/// Find a filter's column in a file and check that it holds numbers.
fn numeric_column(file: &SourceFile, column: &str) -> Result<usize> {
    let index = column_index(file, column)?;
    let found = file.metadata.schema().field(index).data_type();
    if numeric_values(&arrow_array::new_empty_array(found)).is_some() {
        Ok(index)
    } else {
        Err(DataError::WrongColumnType {
            path: file.path.clone(),
            column: column.to_string(),
            found: found.to_string(),
            expected: NUMERIC_TYPES,
        })
    }
}

/// What a text column must hold, for [`DataError::WrongColumnType`].
pub(crate) const STRING_TYPES: &str = "a string type (Utf8, LargeUtf8 or Utf8View)";

/// What a filter column must hold.
const NUMERIC_TYPES: &str = "a numeric type (an integer or Float32/Float64) for a row filter";

/// Decode one row group into documents: `None` for rows whose text is null or that the filter
/// drops.
fn read_documents(
    file: &SourceFile,
    columns: &FileColumns,
    filter: Option<&RowFilter>,
    unit: ShardUnit,
) -> Result<Vec<Option<Document>>> {
    let projection = columns.projection();
    // Decoded batches hold the projected columns in ascending order.
    let at = |index: usize| {
        projection
            .binary_search(&index)
            .expect("every read column is projected")
    };
    let batches = file.read_row_group(unit.row_group, unit.num_rows, &projection)?;
    let mut documents = Vec::with_capacity(unit.num_rows);
    for batch in batches {
        let texts = batch_strings(file, &batch, at(columns.text))?;
        let mut metadata = match columns.metadata {
            Some(index) => Some(batch_strings(file, &batch, at(index))?.into_iter()),
            None => None,
        };
        let compared = columns
            .filter
            .iter()
            .map(|&index| {
                let array = batch.column(at(index));
                numeric_values(array.as_ref()).ok_or_else(|| DataError::WrongColumnType {
                    path: file.path.clone(),
                    column: batch.schema().field(at(index)).name().clone(),
                    found: array.data_type().to_string(),
                    expected: NUMERIC_TYPES,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (row, text) in texts.into_iter().enumerate() {
            let metadata = metadata.as_mut().and_then(|m| m.next().flatten());
            let kept = filter.is_none_or(|f| {
                let values: Vec<Option<f64>> = compared.iter().map(|c| c[row]).collect();
                f.keeps(&values)
            });
            documents.push(
                text.filter(|_| kept)
                    .map(|text| Document { text, metadata }),
            );
        }
    }
    Ok(documents)
}

/// The strings of column `position` of a decoded batch.
fn batch_strings(
    file: &SourceFile,
    batch: &RecordBatch,
    position: usize,
) -> Result<Vec<Option<String>>> {
    let array = batch.column(position);
    let mut out = Vec::with_capacity(array.len());
    push_strings(array.as_ref(), &mut out).ok_or_else(|| DataError::WrongColumnType {
        path: file.path.clone(),
        column: batch.schema().field(position).name().clone(),
        found: array.data_type().to_string(),
        expected: STRING_TYPES,
    })?;
    Ok(out)
}

/// The values of an integer or float array as `f64` (`None` for nulls); `None` for an array of
/// another type.
fn numeric_values(array: &dyn Array) -> Option<Vec<Option<f64>>> {
    macro_rules! values {
        ($($t:ty),*) => {$(
            if let Some(a) = array.as_primitive_opt::<$t>() {
                return Some(a.iter().map(|v| v.map(|v| v as f64)).collect());
            }
        )*};
    }
    values!(
        Float64Type,
        Float32Type,
        Int64Type,
        Int32Type,
        Int16Type,
        Int8Type,
        UInt64Type,
        UInt32Type,
        UInt16Type,
        UInt8Type
    );
    None
}

/// Append the values of a string array of any of the three Arrow string layouts; `None` if the
/// array is not a string array.
pub(crate) fn push_strings(array: &dyn Array, out: &mut Vec<Option<String>>) -> Option<()> {
    if let Some(a) = array.as_string_opt::<i32>() {
        out.extend(a.iter().map(|s| s.map(str::to_owned)));
    } else if let Some(a) = array.as_string_opt::<i64>() {
        out.extend(a.iter().map(|s| s.map(str::to_owned)));
    } else if let Some(a) = array.as_string_view_opt() {
        out.extend(a.iter().map(|s| s.map(str::to_owned)));
    } else {
        return None;
    }
    Some(())
}

/// Expand file patterns: a glob (`data/*.parquet`) to its matches in sorted order, a directory
/// to the `.parquet` files below it (sorted), a plain path to itself. A pattern that matches
/// nothing or a plain path that does not exist is an error; duplicates keep their first place.
pub fn expand_paths(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let mut matches = if pattern.contains(['*', '?', '[']) {
            glob_matches(pattern)?
        } else {
            let path = PathBuf::from(pattern);
            let meta = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
            if meta.is_dir() {
                let mut found = Vec::new();
                parquet_files_below(&path, &mut found)?;
                found
            } else {
                vec![path]
            }
        };
        if matches.is_empty() {
            return Err(DataError::NoFilesMatch {
                pattern: pattern.clone(),
            });
        }
        matches.sort();
        for path in matches {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// The files (not directories) matching a glob pattern.
fn glob_matches(pattern: &str) -> Result<Vec<PathBuf>> {
    let paths = glob::glob(pattern).map_err(|e| DataError::BadPattern {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| {
            let path = e.path().to_path_buf();
            DataError::io(path, e.into())
        })?;
        if path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Every `*.parquet` file below `dir`, recursively.
fn parquet_files_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.is_dir() {
            parquet_files_below(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}
