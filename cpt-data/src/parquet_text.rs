//! Documents streamed from the text column of Parquet files, one row group at a time, in a
//! deterministic, resumable (optionally shuffled) order that repeats forever in epochs.
//!
//! The unit of shuffling and of I/O is the row group (a "shard unit"): an epoch visits every unit
//! once in a seeded order and every row of a unit in a seeded order, so only one row group's
//! texts are ever in memory and a [`DocCursor`] of three integers pins the position exactly.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use cpt_core::SplitMix64;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

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

/// One row group of one file: the granule of shuffling and reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardUnit {
    /// Index into the source's file list.
    pub file: usize,
    /// Row group index inside that file.
    pub row_group: usize,
    /// Rows in the row group (nulls included).
    pub num_rows: usize,
}

/// Position of the next document of a [`ParquetTextSource`]: saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocCursor {
    /// Completed passes over the corpus.
    pub epoch: u64,
    /// Position in this epoch's unit order (not a unit id).
    pub unit_pos: usize,
    /// Position in the current unit's row order (not a row index).
    pub row_pos: usize,
    /// Units (row groups) found corrupt and skipped under the quarantine policy; kept in the
    /// cursor so that a resumed run skips them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<usize>,
}

/// An opened, validated Parquet file: its metadata is kept so units are read without reparsing.
struct ParquetFile {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
    /// Index of the text column among the file's top-level columns.
    column_index: usize,
}

/// The texts of the unit being read, in file row order (`None` for nulls and taken rows).
struct LoadedUnit {
    epoch: u64,
    unit_pos: usize,
    texts: Vec<Option<String>>,
    /// Row visiting order for this epoch.
    order: Vec<usize>,
}

/// Documents from the text column of one or more Parquet files; see the module docs.
pub struct ParquetTextSource {
    files: Vec<ParquetFile>,
    units: Vec<ShardUnit>,
    options: TextSourceOptions,
    cursor: DocCursor,
    /// Unit order of `order_epoch`, recomputed when the epoch changes.
    unit_order: Vec<usize>,
    order_epoch: u64,
    loaded: Option<LoadedUnit>,
}

impl std::fmt::Debug for ParquetTextSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetTextSource")
            .field(
                "files",
                &self.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            )
            .field("units", &self.units.len())
            .field("options", &self.options)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl ParquetTextSource {
    /// Open and validate every file (exists, valid footer, text column present and of a string
    /// type) and list its row groups as units. No document is read yet.
    pub fn open(paths: &[PathBuf], options: TextSourceOptions) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut units = Vec::new();
        for (file_index, path) in paths.iter().enumerate() {
            let file = open_parquet(path, &options.column)?;
            for (row_group, meta) in file.metadata.metadata().row_groups().iter().enumerate() {
                let num_rows = usize::try_from(meta.num_rows()).unwrap_or(0);
                // Empty row groups hold no document; leaving them out keeps cursors dense.
                if num_rows > 0 {
                    units.push(ShardUnit {
                        file: file_index,
                        row_group,
                        num_rows,
                    });
                }
            }
            files.push(file);
        }
        let unit_order = unit_order(units.len(), &options, 0);
        Ok(Self {
            files,
            units,
            options,
            cursor: DocCursor {
                epoch: 0,
                unit_pos: 0,
                row_pos: 0,
                ..Default::default()
            },
            unit_order,
            order_epoch: 0,
            loaded: None,
        })
    }

    /// The shard units (row groups with at least one row), in file order; a unit's id is its
    /// index here.
    pub fn units(&self) -> &[ShardUnit] {
        &self.units
    }

    /// The files of this source, in the order given to [`ParquetTextSource::open`].
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Rows over all units (nulls included): an upper bound on documents per epoch.
    pub fn num_rows(&self) -> usize {
        self.units.iter().map(|u| u.num_rows).sum()
    }

    /// The options this source was opened with.
    pub fn options(&self) -> &TextSourceOptions {
        &self.options
    }

    /// Corrupt units skipped so far, as (file, row group).
    pub fn quarantined(&self) -> Vec<(&Path, usize)> {
        self.cursor
            .quarantined
            .iter()
            .map(|&u| {
                (
                    self.files[self.units[u].file].path.as_path(),
                    self.units[u].row_group,
                )
            })
            .collect()
    }

    /// The position of the next document.
    pub fn cursor(&self) -> DocCursor {
        self.cursor.clone()
    }

    /// Continue from `cursor` (from [`ParquetTextSource::cursor`] of a source over the same
    /// files and options). The unit is read lazily, on the next call for a document.
    pub fn seek(&mut self, cursor: &DocCursor) -> Result<()> {
        if cursor.unit_pos > self.units.len() {
            return Err(DataError::BadCursor {
                message: format!(
                    "unit position {} but the source has {} units",
                    cursor.unit_pos,
                    self.units.len()
                ),
            });
        }
        if cursor.unit_pos < self.units.len() {
            self.ensure_order(cursor.epoch);
            let unit = self.units[self.unit_order[cursor.unit_pos]];
            if cursor.row_pos > unit.num_rows {
                return Err(DataError::BadCursor {
                    message: format!(
                        "row position {} but unit {} ({} row group {}) has {} rows",
                        cursor.row_pos,
                        cursor.unit_pos,
                        self.files[unit.file].path.display(),
                        unit.row_group,
                        unit.num_rows
                    ),
                });
            }
        }
        // Rows before the current position were handed out (taken from the loaded unit), so
        // the unit can stay only if the cursor does not move back within it.
        let keep = self.loaded.as_ref().is_some_and(|l| {
            l.epoch == cursor.epoch
                && l.unit_pos == cursor.unit_pos
                && cursor.row_pos >= self.cursor.row_pos
        });
        if !keep {
            self.loaded = None;
        }
        self.cursor = cursor.clone();
        Ok(())
    }

    /// The next document of the current epoch, or `None` once the epoch is exhausted (the cursor
    /// then points at the start of the next epoch). Null rows are skipped.
    pub fn next_in_epoch(&mut self) -> Result<Option<String>> {
        loop {
            if self.cursor.unit_pos >= self.units.len() {
                self.cursor = DocCursor {
                    epoch: self.cursor.epoch + 1,
                    unit_pos: 0,
                    row_pos: 0,
                    quarantined: std::mem::take(&mut self.cursor.quarantined),
                };
                self.loaded = None;
                return Ok(None);
            }
            let loaded_here = self.loaded.as_ref().is_some_and(|l| {
                l.epoch == self.cursor.epoch && l.unit_pos == self.cursor.unit_pos
            });
            if !loaded_here {
                self.ensure_order(self.cursor.epoch);
                let unit_id = self.unit_order[self.cursor.unit_pos];
                let loaded = if self.cursor.quarantined.contains(&unit_id) {
                    None
                } else {
                    match self.load_unit(self.cursor.epoch, self.cursor.unit_pos) {
                        Ok(loaded) => Some(loaded),
                        Err(e) if self.options.quarantine_bad_shards && e.is_corrupt_data() => {
                            tracing::warn!("quarantined (skipped from now on): {e}");
                            self.cursor.quarantined.push(unit_id);
                            None
                        }
                        Err(e) => return Err(e),
                    }
                };
                let Some(loaded) = loaded else {
                    self.cursor.unit_pos += 1;
                    self.cursor.row_pos = 0;
                    continue;
                };
                self.loaded = Some(loaded);
            }
            let Some(loaded) = self.loaded.as_mut() else {
                unreachable!("a unit was loaded just above");
            };
            while self.cursor.row_pos < loaded.order.len() {
                let row = loaded.order[self.cursor.row_pos];
                self.cursor.row_pos += 1;
                if let Some(text) = loaded.texts[row].take() {
                    return Ok(Some(text));
                }
            }
            self.cursor.unit_pos += 1;
            self.cursor.row_pos = 0;
            self.loaded = None;
        }
    }

    /// The next document, looping over epochs forever. A whole epoch without a single non-null
    /// row gives [`DataError::EmptyCorpus`] instead of spinning.
    pub fn next_document(&mut self) -> Result<String> {
        let mut epoch_ends = 0;
        loop {
            match self.next_in_epoch()? {
                Some(text) => return Ok(text),
                // The first end may follow a partial epoch (after a seek); a second end in a row
                // means one full epoch held nothing.
                None if epoch_ends == 0 => epoch_ends += 1,
                None => return Err(self.empty_corpus_error()),
            }
        }
    }

    /// The error for a source whose every epoch is empty, naming its files.
    pub(crate) fn empty_corpus_error(&self) -> DataError {
        let names: Vec<String> = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        DataError::EmptyCorpus {
            what: format!(
                "no non-empty document in column `{}` of {}",
                self.options.column,
                if names.is_empty() {
                    "an empty file list".to_string()
                } else {
                    names.join(", ")
                }
            ),
        }
    }

    /// Recompute the unit order if `epoch` is not the cached one.
    fn ensure_order(&mut self, epoch: u64) {
        if self.order_epoch != epoch {
            self.unit_order = unit_order(self.units.len(), &self.options, epoch);
            self.order_epoch = epoch;
        }
    }

    /// Read one unit's text column (only that row group, only that column).
    fn load_unit(&mut self, epoch: u64, unit_pos: usize) -> Result<LoadedUnit> {
        self.ensure_order(epoch);
        let unit_id = self.unit_order[unit_pos];
        let unit = self.units[unit_id];
        let texts = read_row_group(&self.files[unit.file], unit.row_group, unit.num_rows)?;
        let order = if self.options.shuffle {
            SplitMix64::derive(self.options.seed, &[epoch, unit_id as u64])
                .permutation(unit.num_rows)
        } else {
            (0..unit.num_rows).collect()
        };
        Ok(LoadedUnit {
            epoch,
            unit_pos,
            texts,
            order,
        })
    }
}

/// The order in which epoch `epoch` visits `n` units.
fn unit_order(n: usize, options: &TextSourceOptions, epoch: u64) -> Vec<usize> {
    if options.shuffle {
        SplitMix64::derive(options.seed, &[epoch]).permutation(n)
    } else {
        (0..n).collect()
    }
}

/// Open a Parquet file, parse its footer and check its text column.
fn open_parquet(path: &Path, column: &str) -> Result<ParquetFile> {
    DataError::guard(path, "Parquet footer", || {
        open_parquet_unguarded(path, column)
    })
}

fn open_parquet_unguarded(path: &Path, column: &str) -> Result<ParquetFile> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| DataError::parquet(path, e))?;
    let schema = metadata.schema();
    let Ok(column_index) = schema.index_of(column) else {
        return Err(DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        });
    };
    match schema.field(column_index).data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {}
        other => {
            return Err(DataError::WrongColumnType {
                path: path.to_path_buf(),
                column: column.to_string(),
                found: other.to_string(),
            });
        }
    }
    Ok(ParquetFile {
        path: path.to_path_buf(),
        metadata,
        column_index,
    })
}

/// Decode the text column of one row group, `None` for null rows.
fn read_row_group(
    file: &ParquetFile,
    row_group: usize,
    num_rows: usize,
) -> Result<Vec<Option<String>>> {
    DataError::guard(&file.path, "Parquet row group", || {
        read_row_group_unguarded(file, row_group, num_rows)
    })
}

fn read_row_group_unguarded(
    file: &ParquetFile,
    row_group: usize,
    num_rows: usize,
) -> Result<Vec<Option<String>>> {
    let path = &file.path;
    let handle = File::open(path).map_err(|e| DataError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, file.metadata.clone());
    let mask = ProjectionMask::roots(builder.parquet_schema(), [file.column_index]);
    let reader = builder
        .with_row_groups(vec![row_group])
        .with_projection(mask)
        .with_batch_size(num_rows.clamp(1, 8192))
        .build()
        .map_err(|e| DataError::parquet(path, e))?;
    let mut texts = Vec::with_capacity(num_rows);
    for batch in reader {
        let batch = batch.map_err(|source| DataError::Arrow {
            path: path.clone(),
            row_group,
            source,
        })?;
        let array = batch.column(0);
        push_strings(array.as_ref(), &mut texts).ok_or_else(|| DataError::WrongColumnType {
            path: path.clone(),
            column: batch.schema().field(0).name().clone(),
            found: array.data_type().to_string(),
        })?;
    }
    if texts.len() != num_rows {
        return Err(DataError::RowCountMismatch {
            path: path.clone(),
            row_group,
            expected: num_rows,
            found: texts.len(),
        });
    }
    Ok(texts)
}

/// Append the values of a string array of any of the three Arrow string layouts; `None` if the
/// array is not a string array.
fn push_strings(array: &dyn Array, out: &mut Vec<Option<String>>) -> Option<()> {
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
