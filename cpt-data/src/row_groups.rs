//! The row-group streaming machinery shared by the Parquet sources (text and images): file and
//! row-group ("shard unit") order, the per-epoch seeded shuffle, the resumable [`DocCursor`],
//! seeking and the bad-shard quarantine. What a row *is* (a document, an image) is left to the
//! source, which hands a loader closure to [`RowGroupStream::next_in_epoch`].
//!
//! An epoch visits every unit once in a seeded order and every row of a unit in a seeded order,
//! so only one row group is ever in memory and a cursor of three integers pins the position.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use cpt_core::SplitMix64;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

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

/// Position of the next row of a row-group stream (a [`crate::ParquetTextSource`] or a
/// [`crate::ParquetImageSource`]): saved in checkpoints.
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

/// How a stream orders its units and rows, and whether it skips corrupt ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamOrder {
    pub(crate) shuffle: bool,
    pub(crate) seed: u64,
    pub(crate) quarantine_bad_shards: bool,
}

/// An opened Parquet file whose footer parsed: its metadata is kept so units are read without
/// reparsing it.
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) metadata: ArrowReaderMetadata,
}

impl SourceFile {
    /// Open `path` and parse its footer. The parquet crate panics on some damaged footers, so
    /// the parse runs under [`DataError::guard`].
    pub(crate) fn open(path: &Path) -> Result<Self> {
        DataError::guard(path, "Parquet footer", || {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                .map_err(|e| DataError::parquet(path, e))?;
            Ok(Self {
                path: path.to_path_buf(),
                metadata,
            })
        })
    }

    /// Read the given top-level columns of one row group (nothing else is decoded), checking
    /// that it holds the number of rows its footer promises. The batches' columns come in
    /// schema order, whatever the order of `columns`.
    pub(crate) fn read_row_group(
        &self,
        row_group: usize,
        num_rows: usize,
        columns: &[usize],
    ) -> Result<Vec<RecordBatch>> {
        DataError::guard(&self.path, "Parquet row group", || {
            let path = &self.path;
            let handle = File::open(path).map_err(|e| DataError::io(path, e))?;
            let builder =
                ParquetRecordBatchReaderBuilder::new_with_metadata(handle, self.metadata.clone());
            let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
            let reader = builder
                .with_row_groups(vec![row_group])
                .with_projection(mask)
                .with_batch_size(num_rows.clamp(1, 8192))
                .build()
                .map_err(|e| DataError::parquet(path, e))?;
            let mut batches = Vec::new();
            let mut found = 0;
            for batch in reader {
                let batch = batch.map_err(|source| DataError::Arrow {
                    path: path.clone(),
                    row_group,
                    source,
                })?;
                found += batch.num_rows();
                batches.push(batch);
            }
            if found != num_rows {
                return Err(DataError::RowCountMismatch {
                    path: path.clone(),
                    row_group,
                    expected: num_rows,
                    found,
                });
            }
            Ok(batches)
        })
    }
}

/// A row handed out by [`RowGroupStream::next_in_epoch`], with where it came from.
#[derive(Debug)]
pub(crate) struct StreamRow<R> {
    /// What the loader made of the row.
    pub(crate) value: R,
    /// The epoch it was drawn in.
    pub(crate) epoch: u64,
    /// Index of the row among all rows of all files, in file order: a stable name for the row
    /// whatever the shuffle, for keying per-row randomness.
    pub(crate) global_row: u64,
    /// The unit it came from.
    pub(crate) unit: ShardUnit,
    /// Index of the row inside its row group.
    pub(crate) row_in_group: usize,
}

/// Reads the rows of one unit: `None` for rows to skip (nulls, filtered out).
pub(crate) type UnitLoader<'a, R> =
    dyn FnMut(&SourceFile, ShardUnit) -> Result<Vec<Option<R>>> + 'a;

/// The rows of the unit being read, in file row order (`None` once taken or skipped).
struct LoadedUnit<R> {
    epoch: u64,
    unit_pos: usize,
    rows: Vec<Option<R>>,
    /// Row visiting order for this epoch.
    order: Vec<usize>,
}

/// Rows of one or more Parquet files, unit by unit, in a deterministic resumable order; see the
/// module docs.
pub(crate) struct RowGroupStream<R> {
    files: Vec<SourceFile>,
    units: Vec<ShardUnit>,
    /// Global index of the first row of each unit.
    unit_first_row: Vec<u64>,
    order: StreamOrder,
    cursor: DocCursor,
    /// Unit order of `order_epoch`, recomputed when the epoch changes.
    unit_order: Vec<usize>,
    order_epoch: u64,
    loaded: Option<LoadedUnit<R>>,
}

impl<R> RowGroupStream<R> {
    /// A stream over `files` (already validated by the source), listing their non-empty row
    /// groups as units.
    pub(crate) fn new(files: Vec<SourceFile>, order: StreamOrder) -> Self {
        let mut units = Vec::new();
        let mut unit_first_row = Vec::new();
        let mut first_row = 0u64;
        for (file_index, file) in files.iter().enumerate() {
            for (row_group, meta) in file.metadata.metadata().row_groups().iter().enumerate() {
                let num_rows = usize::try_from(meta.num_rows()).unwrap_or(0);
                // Empty row groups hold no row; leaving them out keeps cursors dense.
                if num_rows > 0 {
                    units.push(ShardUnit {
                        file: file_index,
                        row_group,
                        num_rows,
                    });
                    unit_first_row.push(first_row);
                }
                first_row += num_rows as u64;
            }
        }
        let unit_order = unit_order(units.len(), &order, 0);
        Self {
            files,
            units,
            unit_first_row,
            order,
            cursor: DocCursor::default(),
            unit_order,
            order_epoch: 0,
            loaded: None,
        }
    }

    pub(crate) fn files(&self) -> &[SourceFile] {
        &self.files
    }

    pub(crate) fn units(&self) -> &[ShardUnit] {
        &self.units
    }

    pub(crate) fn num_rows(&self) -> usize {
        self.units.iter().map(|u| u.num_rows).sum()
    }

    pub(crate) fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    pub(crate) fn quarantined(&self) -> Vec<(&Path, usize)> {
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

    pub(crate) fn cursor(&self) -> DocCursor {
        self.cursor.clone()
    }

    /// Continue from `cursor` (taken from a stream over the same files and order). The unit is
    /// read lazily, on the next call for a row.
    pub(crate) fn seek(&mut self, cursor: &DocCursor) -> Result<()> {
        if cursor.unit_pos > self.units.len() {
            return Err(DataError::BadCursor {
                message: format!(
                    "unit position {} but the source has {} units",
                    cursor.unit_pos,
                    self.units.len()
                ),
            });
        }
        if let Some(&bad) = cursor.quarantined.iter().find(|&&u| u >= self.units.len()) {
            return Err(DataError::BadCursor {
                message: format!(
                    "quarantined unit {bad} but the source has {} units",
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

    /// The next row of the current epoch, or `None` once the epoch is exhausted (the cursor then
    /// points at the start of the next epoch). Rows the loader skipped are passed over. A unit
    /// whose loader fails with corrupt data is quarantined when the policy allows it.
    pub(crate) fn next_in_epoch(
        &mut self,
        load: &mut UnitLoader<'_, R>,
    ) -> Result<Option<StreamRow<R>>> {
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
                    match self.load_unit(unit_id, load) {
                        Ok(loaded) => Some(loaded),
                        Err(e) if self.order.quarantine_bad_shards && e.is_corrupt_data() => {
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
            let unit_id = self.unit_order[self.cursor.unit_pos];
            while self.cursor.row_pos < loaded.order.len() {
                let row = loaded.order[self.cursor.row_pos];
                self.cursor.row_pos += 1;
                if let Some(value) = loaded.rows[row].take() {
                    return Ok(Some(StreamRow {
                        value,
                        epoch: loaded.epoch,
                        global_row: self.unit_first_row[unit_id] + row as u64,
                        unit: self.units[unit_id],
                        row_in_group: row,
                    }));
                }
            }
            self.cursor.unit_pos += 1;
            self.cursor.row_pos = 0;
            self.loaded = None;
        }
    }

    /// Recompute the unit order if `epoch` is not the cached one.
    fn ensure_order(&mut self, epoch: u64) {
        if self.order_epoch != epoch {
            self.unit_order = unit_order(self.units.len(), &self.order, epoch);
            self.order_epoch = epoch;
        }
    }

    /// Read the unit at the cursor's position (its unit id is `unit_id`).
    fn load_unit(&mut self, unit_id: usize, load: &mut UnitLoader<'_, R>) -> Result<LoadedUnit<R>> {
        let unit = self.units[unit_id];
        let rows = load(&self.files[unit.file], unit)?;
        if rows.len() != unit.num_rows {
            // The loaders check this against the decoded batches; a mismatch here is a loader
            // bug, reported rather than risked as an out-of-bounds index.
            return Err(DataError::RowCountMismatch {
                path: self.files[unit.file].path.clone(),
                row_group: unit.row_group,
                expected: unit.num_rows,
                found: rows.len(),
            });
        }
        let epoch = self.cursor.epoch;
        let order = if self.order.shuffle {
            SplitMix64::derive(self.order.seed, &[epoch, unit_id as u64]).permutation(unit.num_rows)
        } else {
            (0..unit.num_rows).collect()
        };
        Ok(LoadedUnit {
            epoch,
            unit_pos: self.cursor.unit_pos,
            rows,
            order,
        })
    }
}

/// The order in which epoch `epoch` visits `n` units.
fn unit_order(n: usize, order: &StreamOrder, epoch: u64) -> Vec<usize> {
    if order.shuffle {
        SplitMix64::derive(order.seed, &[epoch]).permutation(n)
    } else {
        (0..n).collect()
    }
}

/// The next item of an endless stream over epochs: `next_in_epoch` until it yields one. The first
/// epoch end may follow a partial epoch (after a seek); a second end in a row means one full
/// epoch held nothing, and gives `None` so the caller can name its empty corpus instead of
/// spinning.
pub(crate) fn next_across_epochs<T>(
    mut next_in_epoch: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut epoch_ends = 0;
    loop {
        match next_in_epoch()? {
            Some(item) => return Ok(Some(item)),
            None if epoch_ends == 0 => epoch_ends += 1,
            None => return Ok(None),
        }
    }
}
