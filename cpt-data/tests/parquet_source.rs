//! Behaviour of ParquetTextSource: order, shuffling, epochs, nulls, string layouts, globbing.

mod common;

use arrow_schema::DataType;
use common::{numbered_docs, write_corpus, write_texts};
use cpt_data::{DocCursor, ParquetTextSource, TextSourceOptions, expand_paths};

/// The documents of one epoch, and the cursor after it.
fn one_epoch(source: &mut ParquetTextSource) -> Vec<String> {
    std::iter::from_fn(|| source.next_in_epoch().unwrap()).collect()
}

#[test]
fn unshuffled_source_reads_files_and_row_groups_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let docs = numbered_docs(23);
    let files = write_corpus(dir.path(), &docs, 3, 4);
    let mut source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
    // 8 + 8 + 7 docs at 4 rows per group: 2 + 2 + 2 units per file.
    let units: Vec<(usize, usize, usize)> = source
        .units()
        .iter()
        .map(|u| (u.file, u.row_group, u.num_rows))
        .collect();
    assert_eq!(
        units,
        vec![
            (0, 0, 4),
            (0, 1, 4),
            (1, 0, 4),
            (1, 1, 4),
            (2, 0, 4),
            (2, 1, 3)
        ]
    );
    assert_eq!(one_epoch(&mut source), docs);
    assert_eq!(
        source.cursor(),
        DocCursor {
            epoch: 1,
            unit_pos: 0,
            row_pos: 0,
            ..Default::default()
        }
    );
    // Infinite stream: the next document is the first again, in epoch 1.
    assert_eq!(source.next_document().unwrap(), docs[0]);
}

#[test]
fn shuffle_is_a_permutation_deterministic_per_seed_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let docs = numbered_docs(40);
    let files = write_corpus(dir.path(), &docs, 2, 5);
    let epochs = |seed| {
        let mut s = ParquetTextSource::open(&files, TextSourceOptions::shuffled(seed)).unwrap();
        (one_epoch(&mut s), one_epoch(&mut s))
    };
    let (a0, a1) = epochs(1);
    let (b0, _) = epochs(1);
    let (c0, _) = epochs(2);
    assert_eq!(a0, b0, "same seed, same order");
    assert_ne!(a0, c0, "different seed, different order");
    assert_ne!(a0, a1, "each epoch has its own order");
    assert_ne!(a0, docs, "shuffled is not file order");
    for epoch in [&a0, &a1, &c0] {
        let mut sorted = epoch.clone();
        sorted.sort();
        let mut expected = docs.clone();
        expected.sort();
        assert_eq!(sorted, expected, "every document exactly once per epoch");
    }
}

#[test]
fn shuffle_moves_rows_inside_units_and_units_as_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let docs = numbered_docs(30);
    let files = write_corpus(dir.path(), &docs, 1, 10);
    let mut source = ParquetTextSource::open(&files, TextSourceOptions::shuffled(5)).unwrap();
    let epoch = one_epoch(&mut source);
    // Documents of one unit (row group of 10) stay together: each block of 10 is one unit.
    for block in epoch.chunks(10) {
        let index = |d: &String| docs.iter().position(|x| x == d).unwrap() / 10;
        let unit = index(&block[0]);
        assert!(block.iter().all(|d| index(d) == unit), "{block:?}");
    }
    assert_ne!(epoch[..10], docs[..10]);
}

#[test]
fn nulls_are_skipped_and_all_string_layouts_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [Some("a"), None, Some("b"), None, Some("c")];
    let mut files = Vec::new();
    for (i, dt) in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("{i}.parquet"));
        write_texts(&path, "body", dt, &texts, 2);
        files.push(path);
    }
    let options = TextSourceOptions {
        column: "body".into(),
        ..TextSourceOptions::default()
    };
    let mut source = ParquetTextSource::open(&files, options).unwrap();
    assert_eq!(source.num_rows(), 15);
    assert_eq!(
        one_epoch(&mut source),
        ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
    );
}

#[test]
fn seek_mid_unit_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_corpus(dir.path(), &numbered_docs(25), 2, 4);
    let options = TextSourceOptions::shuffled(9);
    let mut whole = ParquetTextSource::open(&files, options.clone()).unwrap();
    let expected: Vec<String> = (0..60).map(|_| whole.next_document().unwrap()).collect();
    for cut in [0, 1, 3, 4, 24, 25, 26, 41] {
        let mut first = ParquetTextSource::open(&files, options.clone()).unwrap();
        for _ in 0..cut {
            first.next_document().unwrap();
        }
        let cursor: DocCursor =
            serde_json::from_str(&serde_json::to_string(&first.cursor()).unwrap()).unwrap();
        let mut resumed = ParquetTextSource::open(&files, options.clone()).unwrap();
        resumed.seek(&cursor).unwrap();
        let rest: Vec<String> = (cut..60)
            .map(|_| resumed.next_document().unwrap())
            .collect();
        assert_eq!(rest, expected[cut..], "cut at {cut}");
    }
}

#[test]
fn seek_backwards_in_the_loaded_unit_rereads_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_corpus(dir.path(), &numbered_docs(8), 1, 8);
    let mut source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
    let start = source.cursor();
    let first = source.next_document().unwrap();
    source.next_document().unwrap();
    source.seek(&start).unwrap();
    assert_eq!(source.next_document().unwrap(), first);
}

#[test]
fn out_of_range_cursor_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_corpus(dir.path(), &numbered_docs(8), 1, 4);
    let mut source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
    for bad in [
        DocCursor {
            epoch: 0,
            unit_pos: 3,
            row_pos: 0,
            ..Default::default()
        },
        DocCursor {
            epoch: 0,
            unit_pos: 1,
            row_pos: 5,
            ..Default::default()
        },
    ] {
        let err = source.seek(&bad).unwrap_err();
        assert!(
            matches!(err, cpt_data::DataError::BadCursor { .. }),
            "{err}"
        );
    }
}

#[test]
fn expand_paths_globs_sorted_and_reports_misses() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_corpus(dir.path(), &numbered_docs(9), 3, 4);
    let pattern = format!("{}/part-*.parquet", dir.path().display());
    assert_eq!(expand_paths(&[pattern]).unwrap(), files);
    // A directory stands for the Parquet files below it.
    assert_eq!(
        expand_paths(&[dir.path().display().to_string()]).unwrap(),
        files
    );
    // A duplicate keeps its first place.
    let twice = vec![
        files[2].display().to_string(),
        format!("{}/*.parquet", dir.path().display()),
    ];
    assert_eq!(
        expand_paths(&twice).unwrap(),
        vec![files[2].clone(), files[0].clone(), files[1].clone()]
    );

    let none = format!("{}/nothing-*.parquet", dir.path().display());
    let err = expand_paths(std::slice::from_ref(&none)).unwrap_err();
    assert!(
        matches!(err, cpt_data::DataError::NoFilesMatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nothing-*.parquet"), "{err}");
    let missing = dir.path().join("absent.parquet").display().to_string();
    let err = expand_paths(&[missing]).unwrap_err();
    assert!(matches!(err, cpt_data::DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.parquet"), "{err}");
    let err = expand_paths(&["[".to_string()]).unwrap_err();
    assert!(
        matches!(err, cpt_data::DataError::BadPattern { .. }),
        "{err}"
    );
}
