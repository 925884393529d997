//! Bounded byte-mutation fuzzing of the Parquet and tokenizer readers: whatever the damage,
//! opening and reading return values (documents or typed errors), never a panic.

mod common;

use cpt_data::{ParquetTextSource, TextSourceOptions, Tokenizer};
use proptest::prelude::*;

fn valid_parquet() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    let docs = common::numbered_docs(40);
    let texts: Vec<Option<&str>> = docs.iter().map(|d| Some(d.as_str())).collect();
    common::write_texts(&path, "text", arrow_schema::DataType::Utf8, &texts, 8);
    std::fs::read(&path).unwrap()
}

fn read_all(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.parquet");
    std::fs::write(&path, bytes).unwrap();
    let Ok(mut source) = ParquetTextSource::open(&[path], TextSourceOptions::default()) else {
        return;
    };
    for _ in 0..100 {
        match source.next_in_epoch() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn mutated_parquet_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = valid_parquet();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        let keep = if cut % 4 == 0 { cut % (bytes.len() + 1) } else { bytes.len() };
        bytes.truncate(keep);
        read_all(&bytes);
    }

    #[test]
    fn mutated_tokenizer_json_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        common::tiny_tokenizer().save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(tokenizer) = Tokenizer::from_file(&path) {
            let _ = tokenizer.encode("fuzzing the tokenizer");
        }
    }
}

/// Inputs on which a dependency's decoder once panicked, found by the fuzzing above (a footer
/// mutation that makes `parquet`'s thrift decoder unwrap a `None`). Each must now be an error.
#[test]
fn regression_inputs_are_errors_not_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regressions");
    let path = dir.join("parquet_footer_panic.parquet");
    let err = ParquetTextSource::open(std::slice::from_ref(&path), TextSourceOptions::default())
        .expect_err("a damaged footer must not open");
    assert!(
        matches!(err, cpt_data::DataError::Malformed { .. }),
        "the decoder panic is caught: {err}"
    );
    assert!(
        err.to_string().contains("parquet_footer_panic.parquet"),
        "{err}"
    );
}
