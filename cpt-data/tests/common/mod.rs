//! Helpers shared by the integration tests: Parquet files written in-test and a tiny BPE.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use arrow_schema::{DataType, Field, Schema};
use cpt_data::{DEFAULT_EOS_TOKEN, Tokenizer, train_bpe};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Write `texts` (None = null) as column `column` of the given string type, `rows_per_group`
/// rows per row group.
pub fn write_texts(
    path: &Path,
    column: &str,
    data_type: DataType,
    texts: &[Option<&str>],
    rows_per_group: usize,
) {
    let array: ArrayRef = match data_type {
        DataType::Utf8 => Arc::new(StringArray::from(texts.to_vec())),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(texts.to_vec())),
        DataType::Utf8View => Arc::new(StringViewArray::from(texts.to_vec())),
        other => panic!("not a string type: {other}"),
    };
    write_columns(path, vec![(column, array)], rows_per_group);
}

/// Write arbitrary columns into one Parquet file.
pub fn write_columns(path: &Path, columns: Vec<(&str, ArrayRef)>, rows_per_group: usize) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_size(rows_per_group)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A Parquet file whose only column, `text`, is Int64.
pub fn write_int_column(path: &Path) {
    let array: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    write_columns(path, vec![("text", array)], 10);
}

/// Documents "doc {i} ..." with varied lengths, so packing crosses document boundaries.
pub fn numbered_docs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let words = ["alpha", "beta", "gamma", "delta", "epsilon"];
            let body: Vec<&str> = (0..(i % 7 + 1))
                .map(|j| words[(i + j) % words.len()])
                .collect();
            format!("doc {i} {}", body.join(" "))
        })
        .collect()
}

/// Write `docs` spread over `files` Parquet files with `rows_per_group` rows per row group.
pub fn write_corpus(
    dir: &Path,
    docs: &[String],
    files: usize,
    rows_per_group: usize,
) -> Vec<PathBuf> {
    let per_file = docs.len().div_ceil(files);
    docs.chunks(per_file)
        .enumerate()
        .map(|(i, chunk)| {
            let path = dir.join(format!("part-{i:02}.parquet"));
            let texts: Vec<Option<&str>> = chunk.iter().map(|s| Some(s.as_str())).collect();
            write_texts(&path, "text", DataType::Utf8, &texts, rows_per_group);
            path
        })
        .collect()
}

/// Sentences to train test tokenizers on.
pub fn training_text() -> Vec<String> {
    let mut texts = numbered_docs(60);
    texts.extend(
        [
            "The quick brown fox jumps over the lazy dog.",
            "Continual pre-training adapts a language model to a new domain.",
            "Byte-level BPE never meets an unknown character: ünïcödé → fine.",
        ]
        .map(String::from),
    );
    texts
}

/// A byte-level BPE with ~300 tokens and `<|endoftext|>` as EOS (no BOS).
pub fn tiny_tokenizer() -> Arc<Tokenizer> {
    let specials = [DEFAULT_EOS_TOKEN.to_string()];
    Arc::new(train_bpe(training_text().into_iter(), 300, &specials, 2).unwrap())
}

/// A byte-level BPE with `<s>` (BOS) and `</s>` (EOS).
pub fn tiny_tokenizer_with_bos() -> Arc<Tokenizer> {
    let specials = ["<s>".to_string(), "</s>".to_string()];
    Arc::new(train_bpe(training_text().into_iter(), 300, &specials, 2).unwrap())
}
