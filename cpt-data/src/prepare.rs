//! Turning raw text (files, directories of files, JSONL) into `train.parquet` and `eval.parquet`
//! in the Hugging Face datasets layout (`id`, `text` columns), split deterministically by id.
//!
//! The split depends only on each document's id (a stable hash compared with the eval fraction),
//! so re-running on a grown corpus keeps every old document on the same side.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use cpt_core::SplitMix64;
use cpt_core::rng::stable_hash;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::parquet_writer::TextParquetWriter;

/// Documents per row group of the prepared files, unless told otherwise.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1024;

/// What [`prepare`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrepareReport {
    /// The training split.
    pub train_path: PathBuf,
    /// The evaluation split.
    pub eval_path: PathBuf,
    /// Documents in the training split.
    pub train_docs: u64,
    /// Documents in the evaluation split.
    pub eval_docs: u64,
    /// Documents left out because their text was empty.
    pub skipped_empty: u64,
    /// Input files read.
    pub files_read: usize,
}

/// Whether a document with this id belongs to the evaluation split: its stable hash, mixed and
/// scaled to `[0, 1]`, is below `eval_fraction` (a fraction of 1 takes everything).
///
/// The FNV-1a hash alone is not enough: its high bits barely change between ids that differ
/// only in their last characters (`doc-1`, `doc-2`, ...), which put 15% of such ids in a 10%
/// split. One SplitMix64 step spreads every input bit over the whole word.
pub fn is_eval(id: &str, eval_fraction: f64) -> bool {
    let mixed = SplitMix64::new(stable_hash(id.as_bytes())).next_u64();
    eval_fraction >= 1.0 || (mixed as f64 / u64::MAX as f64) < eval_fraction
}

/// Read every document of `inputs` and write `out_dir/train.parquet` and `out_dir/eval.parquet`.
///
/// An input is a text file (one document), a `.jsonl` file (one JSON object per line with a
/// string `text` and an optional `id`), or a directory, walked recursively in sorted order
/// (hidden entries skipped) with each file read by the same rules. A document's id is the JSONL
/// `id` if given, else its path relative to the input's parent (`docs/a/b.txt`), with `#line`
/// for JSONL lines. Each file appears only when complete; on error no scratch file remains.
pub fn prepare(
    inputs: &[PathBuf],
    out_dir: &Path,
    eval_fraction: f64,
    max_row_group_rows: usize,
) -> Result<PrepareReport> {
    if !(0.0..=1.0).contains(&eval_fraction) {
        return Err(DataError::InvalidOption {
            name: "eval_fraction",
            message: format!("{eval_fraction} is not in [0, 1]"),
        });
    }
    let files = input_files(inputs)?;
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    let train_path = out_dir.join("train.parquet");
    let eval_path = out_dir.join("eval.parquet");
    let mut train = TextParquetWriter::create(&train_path, max_row_group_rows)?;
    let mut eval = TextParquetWriter::create(&eval_path, max_row_group_rows)?;
    let mut skipped_empty = 0u64;
    for (path, id) in &files {
        for_each_document(path, id, |id, text| {
            if text.is_empty() {
                skipped_empty += 1;
                return Ok(());
            }
            if is_eval(&id, eval_fraction) {
                eval.write(&id, &text)
            } else {
                train.write(&id, &text)
            }
        })?;
    }
    if train.rows() + eval.rows() == 0 {
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(DataError::EmptyCorpus {
            what: format!("no non-empty document in {}", names.join(", ")),
        });
    }
    // A failure between the two commits leaves a new train split beside an old eval split;
    // both are still whole files, which is what readers rely on.
    let train_docs = train.finish()?;
    let eval_docs = eval.finish()?;
    tracing::info!(
        train_docs,
        eval_docs,
        skipped_empty,
        "prepared {}",
        out_dir.display()
    );
    Ok(PrepareReport {
        train_path,
        eval_path,
        train_docs,
        eval_docs,
        skipped_empty,
        files_read: files.len(),
    })
}

/// Every input file with its id (path relative to its input's parent), in a stable order.
fn input_files(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    if inputs.is_empty() {
        return Err(DataError::EmptyCorpus {
            what: "no input paths given".into(),
        });
    }
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| DataError::io(input, e))?;
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if meta.is_dir() {
            walk(input, &name, &mut files)?;
        } else {
            files.push((input.clone(), name));
        }
    }
    Ok(files)
}

/// Files below `dir`, sorted by name at every level, with ids prefixed by `prefix`.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden entries are tool state (.git, .DS_Store), not corpus.
        if !name.starts_with('.') {
            entries.push((name, entry.path()));
        }
    }
    entries.sort();
    for (name, path) in entries {
        let id = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            walk(&path, &id, out)?;
        } else {
            out.push((path, id));
        }
    }
    Ok(())
}

/// Call `emit(id, text)` for each document of one input file.
fn for_each_document(
    path: &Path,
    id: &str,
    mut emit: impl FnMut(String, String) -> Result<()>,
) -> Result<()> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        return for_each_jsonl_document(path, id, emit);
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to() as u64,
    })?;
    emit(id.to_string(), text)
}

/// Call `emit(id, text)` for each non-blank line of a JSONL file.
fn for_each_jsonl_document(
    path: &Path,
    file_id: &str,
    mut emit: impl FnMut(String, String) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    let mut offset = 0u64;
    for line_no in 1.. {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        let line = std::str::from_utf8(&raw).map_err(|e| DataError::NotUtf8 {
            path: path.to_path_buf(),
            offset: offset + e.valid_up_to() as u64,
        })?;
        offset += n as u64;
        if line.trim().is_empty() {
            continue;
        }
        let (id, text) = parse_jsonl_line(line).map_err(|message| DataError::BadInput {
            path: path.to_path_buf(),
            line: line_no,
            message,
        })?;
        emit(id.unwrap_or_else(|| format!("{file_id}#{line_no}")), text)?;
    }
    Ok(())
}

/// The optional id and the text of one JSONL line, or what is wrong with it.
fn parse_jsonl_line(line: &str) -> std::result::Result<(Option<String>, String), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err("expected a JSON object with a `text` field".into());
    };
    let text = match object.remove("text") {
        Some(serde_json::Value::String(text)) => text,
        Some(other) => return Err(format!("`text` must be a string, found {other}")),
        None => return Err("no `text` field".into()),
    };
    let id = match object.remove("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id),
        Some(serde_json::Value::Number(id)) => Some(id.to_string()),
        Some(other) => return Err(format!("`id` must be a string or number, found {other}")),
    };
    Ok((id, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_lines_parse_ids_and_reject_bad_shapes() {
        assert_eq!(
            parse_jsonl_line(r#"{"text": "hi", "id": 7}"#),
            Ok((Some("7".into()), "hi".into()))
        );
        assert_eq!(
            parse_jsonl_line(r#"{"text": "hi"}"#),
            Ok((None, "hi".into()))
        );
        assert!(
            parse_jsonl_line(r#"{"txt": "hi"}"#)
                .unwrap_err()
                .contains("no `text`")
        );
        assert!(
            parse_jsonl_line(r#"{"text": 3}"#)
                .unwrap_err()
                .contains("must be a string")
        );
        assert!(
            parse_jsonl_line(r#"["text"]"#)
                .unwrap_err()
                .contains("JSON object")
        );
        assert!(
            parse_jsonl_line(r#"{"text": "#)
                .unwrap_err()
                .contains("invalid JSON")
        );
    }

    #[test]
    fn split_is_a_pure_function_of_id_and_fraction() {
        let ids: Vec<String> = (0..2000).map(|i| format!("doc-{i}")).collect();
        let eval = ids.iter().filter(|id| is_eval(id, 0.1)).count();
        // Binomial sd is ~13, so this band is ~4 sd wide each side.
        assert!((150..250).contains(&eval), "{eval} of 2000 in eval at 10%");
        assert!(ids.iter().all(|id| !is_eval(id, 0.0)));
        assert!(ids.iter().all(|id| is_eval(id, 1.0)));
        // Growing the fraction only moves documents into eval, never out.
        assert!(ids.iter().all(|id| !is_eval(id, 0.1) || is_eval(id, 0.2)));
    }
}
