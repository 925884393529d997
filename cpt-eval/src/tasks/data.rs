//! A task's documents from local files: JSON Lines (or a JSON array), Parquet or CSV, one file
//! list per split, as `datasets.load_dataset("json"|"parquet"|"csv", data_files=...)` or a
//! folder of `<split>.<ext>` files.
//!
//! Rows become JSON objects with every column of their split (absent keys are null, as in a
//! `datasets` table). CSV cells are typed per column as pandas would: integers if every
//! non-empty cell parses as one, else floats if every one parses as one, else strings; empty
//! cells are null.

use super::config::{DataFormat, DataSource, TaskConfig, invalid};
use super::error::TaskError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One document: column name to value.
pub(crate) type Doc = Map<String, Value>;

/// The documents of one split.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    /// The split's name (`test`, ...).
    pub name: String,
    /// Its documents, in file order.
    pub docs: Vec<Doc>,
    /// Its column names, in order of first appearance.
    pub columns: Vec<String>,
}

/// Read the split named `split`, which the task file names under `key` (for errors).
pub(crate) fn load_split(config: &TaskConfig, split: &str, key: &str) -> Result<Split, TaskError> {
    let path = &config.path;
    let (format_files, data_key): (Vec<(DataFormat, PathBuf)>, String) = match &config.data {
        DataSource::Files { format, splits } => {
            let data_key = format!("dataset_kwargs.data_files.{split}");
            let Some((_, files)) = splits.iter().find(|(name, _)| name == split) else {
                let names: Vec<&str> = splits.iter().map(|(n, _)| n.as_str()).collect();
                return Err(invalid(
                    path,
                    key,
                    format!(
                        "split `{split}` is not in dataset_kwargs.data_files (it has {})",
                        names.join(", ")
                    ),
                ));
            };
            (
                files.iter().map(|f| (*format, f.clone())).collect(),
                data_key,
            )
        }
        DataSource::Folder(dir) => {
            let candidates = [
                ("jsonl", DataFormat::Json),
                ("json", DataFormat::Json),
                ("parquet", DataFormat::Parquet),
                ("csv", DataFormat::Csv),
            ];
            let found = candidates
                .iter()
                .map(|(ext, format)| (*format, dir.join(format!("{split}.{ext}"))))
                .find(|(_, file)| file.is_file());
            let Some(found) = found else {
                return Err(invalid(
                    path,
                    key,
                    format!(
                        "{} holds no {split}.jsonl, {split}.json, {split}.parquet or {split}.csv",
                        dir.display()
                    ),
                ));
            };
            (vec![found], "dataset_path".to_string())
        }
    };
    let mut rows = Vec::new();
    for (format, file) in &format_files {
        if !file.is_file() {
            return Err(TaskError::MissingData {
                path: path.clone(),
                key: data_key,
                file: file.clone(),
            });
        }
        rows.extend(match format {
            DataFormat::Json => read_json(file)?,
            DataFormat::Parquet => read_parquet(file)?,
            DataFormat::Csv => read_csv(file)?,
        });
    }
    Ok(complete(split, rows))
}

/// Give every row every column of the split (null where absent).
fn complete(split: &str, mut rows: Vec<Doc>) -> Split {
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for key in row.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    for row in &mut rows {
        for column in &columns {
            row.entry(column.clone()).or_insert(Value::Null);
        }
    }
    Split {
        name: split.to_string(),
        docs: rows,
        columns,
    }
}

fn data_error(file: &Path, message: String) -> TaskError {
    TaskError::Data {
        file: file.to_path_buf(),
        message,
    }
}

fn read_text(file: &Path) -> Result<String, TaskError> {
    std::fs::read_to_string(file).map_err(|source| TaskError::Io {
        path: file.to_path_buf(),
        source,
    })
}

/// JSON Lines, or one JSON array of objects.
fn read_json(file: &Path) -> Result<Vec<Doc>, TaskError> {
    let text = read_text(file)?;
    if text.trim_start().starts_with('[') {
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| data_error(file, format!("not a JSON array of objects: {e}")))?;
        let Value::Array(items) = value else {
            unreachable!("text starting with '[' parses to an array or fails");
        };
        return items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(doc) => Ok(doc),
                other => Err(data_error(
                    file,
                    format!("item {i} is not an object: {other}"),
                )),
            })
            .collect();
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(Value::Object(doc)) => docs.push(doc),
            Ok(other) => {
                return Err(data_error(
                    file,
                    format!("line {}: not a JSON object: {other}", i + 1),
                ));
            }
            Err(e) => return Err(data_error(file, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(docs)
}

/// CSV with a header row, cells typed per column.
fn read_csv(file: &Path) -> Result<Vec<Doc>, TaskError> {
    let mut reader = csv::Reader::from_path(file).map_err(|e| data_error(file, e.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| data_error(file, e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut cells: Vec<Vec<String>> = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| data_error(file, format!("row {}: {e}", i + 1)))?;
        cells.push(record.iter().map(str::to_string).collect());
    }
    let typed: Vec<fn(&str) -> Option<Value>> = (0..headers.len())
        .map(|c| {
            let present = || {
                cells
                    .iter()
                    .map(|r| r[c].as_str())
                    .filter(|s| !s.is_empty())
            };
            if present().all(|s| s.parse::<i64>().is_ok()) {
                (|s: &str| s.parse::<i64>().ok().map(Value::from)) as fn(&str) -> Option<Value>
            } else if present().all(|s| s.parse::<f64>().is_ok()) {
                |s: &str| s.parse::<f64>().ok().map(Value::from)
            } else {
                |s: &str| Some(Value::String(s.to_string()))
            }
        })
        .collect();
    Ok(cells
        .into_iter()
        .map(|row| {
            headers
                .iter()
                .zip(&row)
                .zip(&typed)
                .map(|((name, cell), parse)| {
                    let value = if cell.is_empty() {
                        Value::Null
                    } else {
                        parse(cell).unwrap_or(Value::Null)
                    };
                    (name.clone(), value)
                })
                .collect()
        })
        .collect())
}

/// Every row of every row group. `parquet` can panic on damaged files (see ARCHITECTURE.md,
/// "Decoder panics"); that becomes an error naming the file.
fn read_parquet(file: &Path) -> Result<Vec<Doc>, TaskError> {
    let handle = std::fs::File::open(file).map_err(|source| TaskError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let read = std::panic::catch_unwind(|| -> Result<Vec<RecordBatch>, String> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(handle)
            .and_then(|b| b.build())
            .map_err(|e| e.to_string())?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    });
    let batches = match read {
        Ok(Ok(batches)) => batches,
        Ok(Err(message)) => return Err(data_error(file, message)),
        Err(_) => return Err(data_error(file, "malformed Parquet file".into())),
    };
    let mut docs = Vec::new();
    for batch in &batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut doc = Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let value = arrow_value(column.as_ref(), row).map_err(|message| {
                    data_error(file, format!("column `{}`: {message}", field.name()))
                })?;
                doc.insert(field.name().clone(), value);
            }
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// One cell of an Arrow column as JSON.
fn arrow_value(array: &dyn Array, row: usize) -> Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    macro_rules! number {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(row))
        };
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float32 => number!(Float32Type),
        DataType::Float64 => number!(Float64Type),
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(array.as_string_view().value(row)),
        DataType::List(_) => list_value(array.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => list_value(array.as_list::<i64>().value(row).as_ref())?,
        DataType::Struct(fields) => {
            let columns = array.as_struct();
            let mut map = Map::new();
            for (field, column) in fields.iter().zip(columns.columns()) {
                map.insert(field.name().clone(), arrow_value(column.as_ref(), row)?);
            }
            Value::Object(map)
        }
        other => return Err(format!("type {other} is not supported")),
    })
}

fn list_value(items: &dyn Array) -> Result<Value, String> {
    (0..items.len())
        .map(|i| arrow_value(items, i))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_typed_per_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.csv");
        std::fs::write(&file, "a,b,c\n1,2.5,x\n2,,3\n").unwrap();
        let rows = read_csv(&file).unwrap();
        assert_eq!(rows[0]["a"], Value::from(1));
        assert_eq!(rows[0]["b"], Value::from(2.5));
        assert_eq!(rows[1]["b"], Value::Null);
        assert_eq!(
            rows[1]["c"],
            Value::from("3"),
            "a column with text stays text"
        );
    }

    #[test]
    fn json_lines_and_arrays_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("a.jsonl");
        let array = dir.path().join("b.json");
        std::fs::write(&lines, "{\"x\": 1}\n\n{\"x\": 2, \"y\": \"z\"}\n").unwrap();
        std::fs::write(&array, "[{\"x\": 1}, {\"x\": 2, \"y\": \"z\"}]").unwrap();
        let a = complete("test", read_json(&lines).unwrap());
        let b = complete("test", read_json(&array).unwrap());
        assert_eq!(a.docs, b.docs);
        assert_eq!(a.columns, ["x", "y"]);
        assert_eq!(a.docs[0]["y"], Value::Null, "absent keys are null");
    }

    #[test]
    fn a_bad_json_line_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.jsonl");
        std::fs::write(&file, "{\"x\": 1}\n[1]\n").unwrap();
        let message = read_json(&file).unwrap_err().to_string();
        assert!(
            message.contains("a.jsonl") && message.contains("line 2"),
            "{message}"
        );
    }
}
