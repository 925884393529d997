//! Corpus preparation: inputs of every kind, ids, deterministic split, atomicity, bad inputs.

use std::path::Path;

use cpt_data::{DataError, ParquetTextSource, TextSourceOptions, is_eval, prepare};

/// (id, text) rows of a prepared file, in file order.
fn rows(path: &Path) -> Vec<(String, String)> {
    let read = |column: &str| {
        let options = TextSourceOptions {
            column: column.into(),
            ..TextSourceOptions::default()
        };
        let mut s = ParquetTextSource::open(&[path.to_path_buf()], options).unwrap();
        std::iter::from_fn(|| s.next_in_epoch().unwrap()).collect::<Vec<_>>()
    };
    read("id").into_iter().zip(read("text")).collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn reads_files_directories_and_jsonl_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(corpus.join("sub")).unwrap();
    std::fs::write(corpus.join("b.txt"), "second file").unwrap();
    std::fs::write(corpus.join("a.md"), "# first file").unwrap();
    std::fs::write(corpus.join("sub/c.txt"), "nested").unwrap();
    std::fs::write(corpus.join(".hidden"), "skipped").unwrap();
    std::fs::write(corpus.join("empty.txt"), "").unwrap();
    let jsonl = dir.path().join("extra.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"line one\", \"id\": \"custom\"}\n\n{\"text\": \"line three\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let report = prepare(&[corpus, jsonl], &out, 0.0, 2).unwrap();
    assert_eq!(
        (report.train_docs, report.eval_docs, report.skipped_empty),
        (5, 0, 1)
    );
    assert_eq!(report.files_read, 5);
    let expected = [
        ("corpus/a.md", "# first file"),
        ("corpus/b.txt", "second file"),
        ("corpus/sub/c.txt", "nested"),
        ("custom", "line one"),
        ("extra.jsonl#3", "line three"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(rows(&report.train_path), expected);
    assert!(rows(&report.eval_path).is_empty());
    assert!(leftovers(&out).is_empty());
}

#[test]
fn split_follows_the_id_hash_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..300)
        .map(|i| format!("{{\"id\": \"doc-{i}\", \"text\": \"text {i}\"}}\n"))
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let a = prepare(std::slice::from_ref(&input), &dir.path().join("a"), 0.2, 50).unwrap();
    let b = prepare(std::slice::from_ref(&input), &dir.path().join("b"), 0.2, 50).unwrap();
    assert_eq!(a.train_docs + a.eval_docs, 300);
    assert!(
        (40..=80).contains(&a.eval_docs),
        "{} eval docs at 20%",
        a.eval_docs
    );
    let eval = rows(&a.eval_path);
    assert!(eval.iter().all(|(id, _)| is_eval(id, 0.2)));
    assert!(rows(&a.train_path).iter().all(|(id, _)| !is_eval(id, 0.2)));
    assert_eq!(
        std::fs::read(&a.train_path).unwrap(),
        std::fs::read(&b.train_path).unwrap()
    );
}

#[test]
fn malformed_jsonl_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"ok\"}\n{\"text\": oops}\n").unwrap();
    let out = dir.path().join("out");
    let err = prepare(std::slice::from_ref(&input), &out, 0.1, 10).unwrap_err();
    assert!(matches!(err, DataError::BadInput { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("bad.jsonl:2:"), "{err}");
    assert!(!out.join("train.parquet").exists());
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn failed_run_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "good text").unwrap();
    let out = dir.path().join("out");
    prepare(std::slice::from_ref(&good), &out, 0.0, 10).unwrap();
    let before = std::fs::read(out.join("train.parquet")).unwrap();
    let binary = dir.path().join("image.bin");
    std::fs::write(&binary, b"GIF89a\xff\xfe\x00").unwrap();
    let err = prepare(&[good, binary.clone()], &out, 0.0, 10).unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { offset: 6, .. }), "{err}");
    assert!(err.to_string().contains("image.bin"), "{err}");
    assert_eq!(std::fs::read(out.join("train.parquet")).unwrap(), before);
    assert!(leftovers(&out).is_empty());
}

#[test]
fn empty_input_and_bad_fraction_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty_dir = dir.path().join("nothing");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::write(empty_dir.join("blank.txt"), "").unwrap();
    let out = dir.path().join("out");
    let err = prepare(std::slice::from_ref(&empty_dir), &out, 0.1, 10).unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err}");
    assert!(err.to_string().contains("nothing"), "{err}");
    assert!(leftovers(&out).is_empty());

    let err = prepare(&[dir.path().join("absent.txt")], &out, 0.1, 10).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.txt"), "{err}");

    let err = prepare(std::slice::from_ref(&empty_dir), &out, 1.5, 10).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidOption {
                name: "eval_fraction",
                ..
            }
        ),
        "{err}"
    );
}
