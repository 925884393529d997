//! Every bad input gives a typed error that names the file, and nothing panics.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, StringArray};
use arrow_schema::DataType;
use common::{
    numbered_docs, tiny_tokenizer, write_columns, write_corpus, write_int_column, write_texts,
};
use cpt_data::{
    DataError, PackedSource, ParquetTextSource, TextSourceOptions, Tokenizer, eval_sequences,
};
use parquet::file::reader::{FileReader, SerializedFileReader};

fn open(path: &Path) -> cpt_data::Result<ParquetTextSource> {
    ParquetTextSource::open(&[path.to_path_buf()], TextSourceOptions::default())
}

fn assert_names(err: &DataError, path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        err.to_string().contains(name),
        "`{err}` does not name {name}"
    );
    assert_eq!(err.to_string().lines().count(), 1, "one line: `{err}`");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.parquet");
    let err = open(&path).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn missing_column_lists_the_columns_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    write_texts(&path, "txt", DataType::Utf8, &[Some("a")], 10);
    let err = open(&path).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingColumn { column, .. } if column == "text"),
        "{err}"
    );
    assert_names(&err, &path);
    assert!(
        err.to_string().ends_with("no column `text` (columns: txt)"),
        "{err}"
    );
}

#[test]
fn non_text_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ints.parquet");
    write_int_column(&path);
    let err = open(&path).unwrap_err();
    assert!(
        matches!(&err, DataError::WrongColumnType { found, .. } if found == "Int64"),
        "{err}"
    );
    assert_names(&err, &path);
}

#[test]
fn the_bad_file_among_good_ones_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = write_corpus(dir.path(), &numbered_docs(6), 2, 10);
    let bad = dir.path().join("zz-bad.parquet");
    write_int_column(&bad);
    files.insert(1, bad.clone());
    let err = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap_err();
    assert_names(&err, &bad);
}

#[test]
fn all_null_or_zero_row_corpus_is_empty_not_an_endless_loop() {
    let dir = tempfile::tempdir().unwrap();
    let nulls = dir.path().join("nulls.parquet");
    write_texts(&nulls, "text", DataType::Utf8, &[None, None, None], 2);
    let err = open(&nulls).unwrap().next_document().unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err}");
    assert_names(&err, &nulls);

    let zero = dir.path().join("zero.parquet");
    write_texts(&zero, "text", DataType::Utf8, &[], 2);
    let mut source = open(&zero).unwrap();
    assert!(source.units().is_empty());
    assert!(matches!(
        source.next_document(),
        Err(DataError::EmptyCorpus { .. })
    ));
}

#[test]
fn corpus_of_empty_strings_gives_empty_corpus_when_packing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank.parquet");
    write_texts(
        &path,
        "text",
        DataType::Utf8,
        &[Some(""), Some(""), None],
        2,
    );
    let tokenizer = tiny_tokenizer();
    let source =
        ParquetTextSource::open(std::slice::from_ref(&path), TextSourceOptions::shuffled(1))
            .unwrap();
    let mut packed = PackedSource::new(source, tokenizer.clone(), 8).unwrap();
    let err = packed.next_sequence().unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err}");
    assert_names(&err, &path);

    let err = eval_sequences(open(&path).unwrap(), &tokenizer, 8, 4).unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err}");
}

#[test]
fn malformed_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        (
            "truncated.json",
            &b"{\"version\": \"1.0\", \"model\": {"[..],
        ),
        ("not-json.json", &b"\xff\xfe binary"[..]),
        ("wrong-shape.json", &b"{\"model\": 3}"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = Tokenizer::from_file(&path).unwrap_err();
        assert!(matches!(err, DataError::Tokenizer { .. }), "{err}");
        assert_names(&err, &path);
    }
}

#[test]
fn tokenizer_without_eos_cannot_pack() {
    let tok = cpt_data::train_bpe(common::training_text().into_iter(), 280, &[], 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = write_corpus(dir.path(), &numbered_docs(4), 1, 10);
    let source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
    let err = PackedSource::new(source, Arc::new(tok), 8).unwrap_err();
    assert!(matches!(err, DataError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("end-of-text"), "{err}");
}

/// A valid three-row-group file (two string columns) for the corruption tests.
fn good_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("data.parquet");
    let docs = numbered_docs(30);
    let other: ArrayRef = Arc::new(StringArray::from(
        (0..30)
            .map(|i| format!("other column {i}"))
            .collect::<Vec<_>>(),
    ));
    let text: ArrayRef = Arc::new(StringArray::from(docs));
    write_columns(&path, vec![("other", other), ("text", text)], 10);
    path
}

#[test]
fn truncated_parquet_fails_at_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(good_file(dir.path())).unwrap();
    let path = dir.path().join("cut.parquet");
    for keep in [0, 3, 4, 100, good.len() / 2, good.len() - 9, good.len() - 1] {
        std::fs::write(&path, &good[..keep]).unwrap();
        let err = open(&path).unwrap_err();
        assert!(
            matches!(err, DataError::Parquet { .. }),
            "keep {keep}: {err}"
        );
        assert_names(&err, &path);
    }
    let mut junk = good.clone();
    junk.extend_from_slice(b"appended junk");
    std::fs::write(&path, &junk).unwrap();
    assert!(matches!(open(&path), Err(DataError::Parquet { .. })));
}

/// Overwrite the pages of one column chunk with 0xFF.
fn smash_column_chunk(path: &Path, row_group: usize, column: usize) {
    let file = std::fs::File::open(path).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let chunk = reader
        .metadata()
        .row_group(row_group)
        .column(column)
        .clone();
    let (start, len) = chunk.byte_range();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[start as usize..(start + len) as usize].fill(0xFF);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_page_fails_its_unit_only_and_names_file_and_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path());
    smash_column_chunk(&path, 1, 1); // row group 1 of `text`
    let mut source = open(&path).unwrap(); // the footer is intact
    for _ in 0..10 {
        source.next_document().unwrap(); // row group 0 still reads
    }
    let err = source.next_document().unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Arrow { row_group: 1, .. } | DataError::Parquet { .. }
        ),
        "{err}"
    );
    assert_names(&err, &path);
}

#[test]
fn only_the_text_column_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path());
    // Destroy every page of the other column: a reader that decoded it would fail.
    for rg in 0..3 {
        smash_column_chunk(&path, rg, 0);
    }
    let mut source = open(&path).unwrap();
    let docs: Vec<String> = std::iter::from_fn(|| source.next_in_epoch().unwrap()).collect();
    assert_eq!(docs, numbered_docs(30));
}

#[test]
fn quarantine_skips_a_corrupt_row_group_remembers_it_and_resume_skips_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path());
    smash_column_chunk(&path, 1, 1); // row group 1 of `text`
    let options = TextSourceOptions {
        quarantine_bad_shards: true,
        ..Default::default()
    };
    let mut source = ParquetTextSource::open(std::slice::from_ref(&path), options.clone()).unwrap();
    let first_epoch: Vec<String> = std::iter::from_fn(|| source.next_in_epoch().unwrap()).collect();
    // Row groups 0 and 2 (10 documents each) survive; row group 1 is skipped.
    let expected: Vec<String> = numbered_docs(30)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !(10..20).contains(i))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(first_epoch, expected);
    assert_eq!(source.quarantined(), vec![(path.as_path(), 1)]);
    let cursor = source.cursor();
    assert_eq!(cursor.quarantined, vec![1]);
    // A fresh source resumed from the cursor skips the unit without touching it again.
    let mut resumed = ParquetTextSource::open(std::slice::from_ref(&path), options).unwrap();
    resumed.seek(&cursor).unwrap();
    let second_epoch: Vec<String> =
        std::iter::from_fn(|| resumed.next_in_epoch().unwrap()).collect();
    assert_eq!(second_epoch, expected);
    // Without the policy the same file fails the run.
    let mut strict = open(&path).unwrap();
    assert!((0..30).map(|_| strict.next_document()).any(|r| r.is_err()));
}
