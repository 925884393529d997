//! Writer of `(id, text)` Parquet files in the Hugging Face datasets layout (two Utf8 columns,
//! zstd), appearing atomically: rows go to `<path>.tmp`, which is renamed over `<path>` only by
//! [`TextParquetWriter::finish`]; a writer dropped early removes its scratch file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{DataError, Result};
use cpt_core::atomic::{commit_temp, temp_sibling};

/// Rows buffered before they are handed to the Parquet encoder.
const BATCH_ROWS: usize = 256;
/// A row group is closed early once its encoded size reaches this many bytes, so that a few huge
/// documents never make one unit too big to hold in memory.
const MAX_ROW_GROUP_BYTES: usize = 64 << 20;

/// Streams `(id, text)` rows into a zstd Parquet file that appears whole or not at all.
pub struct TextParquetWriter {
    path: PathBuf,
    scratch: PathBuf,
    schema: SchemaRef,
    /// `None` once finished.
    writer: Option<ArrowWriter<File>>,
    ids: Vec<String>,
    texts: Vec<String>,
    rows: u64,
}

impl TextParquetWriter {
    /// Start writing `path` (through `path.tmp`). Row groups — the shuffle and read units of
    /// [`crate::ParquetTextSource`] — hold at most `max_row_group_rows` rows.
    pub fn create(path: impl AsRef<Path>, max_row_group_rows: usize) -> Result<Self> {
        if max_row_group_rows == 0 {
            return Err(DataError::InvalidOption {
                name: "max_row_group_rows",
                message: "must be at least 1".into(),
            });
        }
        let path = path.as_ref().to_path_buf();
        let scratch = temp_sibling(&path);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        let zstd = ZstdLevel::try_new(3).map_err(|e| DataError::parquet(&path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_max_row_group_size(max_row_group_rows)
            .build();
        let file = File::create(&scratch).map_err(|e| DataError::io(&scratch, e))?;
        let writer = match ArrowWriter::try_new(file, schema.clone(), Some(props)) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&scratch);
                return Err(DataError::parquet(&scratch, e));
            }
        };
        Ok(Self {
            path,
            scratch,
            schema,
            writer: Some(writer),
            ids: Vec::new(),
            texts: Vec::new(),
            rows: 0,
        })
    }

    /// Append one row.
    pub fn write(&mut self, id: &str, text: &str) -> Result<()> {
        self.ids.push(id.to_string());
        self.texts.push(text.to_string());
        self.rows += 1;
        if self.ids.len() >= BATCH_ROWS {
            self.flush_rows()?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Close the file, fsync it and rename it into place; returns the number of rows.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_rows()?;
        let Some(writer) = self.writer.take() else {
            unreachable!("finish consumes the writer, so it runs once");
        };
        let file = writer
            .into_inner()
            .map_err(|e| DataError::parquet(&self.scratch, e))?;
        file.sync_all()
            .map_err(|e| DataError::io(&self.scratch, e))?;
        drop(file);
        commit_temp(&self.scratch, &self.path)?;
        Ok(self.rows)
    }

    /// Hand the buffered rows to the encoder.
    fn flush_rows(&mut self) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let Some(writer) = self.writer.as_mut() else {
            unreachable!("rows are only flushed before finish");
        };
        let ids: ArrayRef = Arc::new(StringArray::from(std::mem::take(&mut self.ids)));
        let texts: ArrayRef = Arc::new(StringArray::from(std::mem::take(&mut self.texts)));
        let batch = RecordBatch::try_new(self.schema.clone(), vec![ids, texts])
            .map_err(|e| DataError::parquet(&self.scratch, e.into()))?;
        writer
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.scratch, e))?;
        if writer.in_progress_size() >= MAX_ROW_GROUP_BYTES {
            writer
                .flush()
                .map_err(|e| DataError::parquet(&self.scratch, e))?;
        }
        Ok(())
    }
}

impl Drop for TextParquetWriter {
    fn drop(&mut self) {
        // Not finished: an error or early return happened; leave no half-written file behind.
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParquetTextSource, TextSourceOptions};

    #[test]
    fn rows_land_in_row_groups_of_the_given_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        let mut w = TextParquetWriter::create(&path, 4).unwrap();
        for i in 0..10 {
            w.write(&format!("d{i}"), &format!("text {i}")).unwrap();
        }
        assert!(!path.exists(), "nothing visible before finish");
        assert_eq!(w.finish().unwrap(), 10);
        assert!(!temp_sibling(&path).exists());
        let source = ParquetTextSource::open(&[path], TextSourceOptions::default()).unwrap();
        let sizes: Vec<usize> = source.units().iter().map(|u| u.num_rows).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.parquet");
        let mut w = TextParquetWriter::create(&path, 4).unwrap();
        w.write("a", "b").unwrap();
        drop(w);
        assert!(!path.exists());
        assert!(!temp_sibling(&path).exists());
    }
}
