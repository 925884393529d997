//! Data recipes on in-test Parquet files: row filters, metadata conditioning with its loss mask,
//! and repeated seeded subsets — each deterministic and resumable from a cursor.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use common::{tiny_tokenizer_with_bos, write_columns};
use cpt_core::TokenSequence;
use cpt_core::row_filter::RowFilter;
use cpt_data::{
    Conditioning, DataError, Document, DocumentColumns, PackedSource, ParquetTextSource,
    SequenceSource, SubsetSource, TextSourceOptions, Tokenizer, eval_token_sequences,
};

const DOCS: usize = 40;

/// `DOCS` rows: `text` "doc i ...", `score` = (i % 10) / 10 (null every 13th row), `n` = i,
/// `url` = "site-i" (null every 7th row); 6 rows per row group.
fn write_scored(dir: &Path) -> PathBuf {
    let path = dir.join("scored.parquet");
    let words = ["alpha", "beta", "gamma", "delta"];
    let texts: Vec<String> = (0..DOCS)
        .map(|i| format!("doc {i} {}", words[..i % 4 + 1].join(" ")))
        .collect();
    let score: Vec<Option<f64>> = (0..DOCS)
        .map(|i| (i % 13 != 12).then_some((i % 10) as f64 / 10.0))
        .collect();
    let urls: Vec<Option<String>> = (0..DOCS)
        .map(|i| (i % 7 != 6).then(|| format!("site-{i}")))
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("text", Arc::new(StringArray::from(texts))),
        ("score", Arc::new(Float64Array::from(score))),
        ("n", Arc::new(Int64Array::from_iter_values(0..DOCS as i64))),
        ("url", Arc::new(StringArray::from(urls))),
    ];
    write_columns(&path, columns, 6);
    path
}

fn doc_index(text: &str) -> usize {
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn filtered(path: &Path, filter: &str, options: TextSourceOptions) -> ParquetTextSource {
    let columns = DocumentColumns {
        metadata: None,
        filter: Some(RowFilter::parse(filter).unwrap()),
    };
    ParquetTextSource::open_with(&[path.to_path_buf()], options, columns).unwrap()
}

fn epoch(source: &mut ParquetTextSource) -> Vec<Document> {
    std::iter::from_fn(|| source.next_document_in_epoch().unwrap()).collect()
}

#[test]
fn filters_keep_exactly_the_rows_that_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let mut source = filtered(
        &path,
        "score >= 0.7 and n != 17",
        TextSourceOptions::default(),
    );
    let kept: Vec<usize> = epoch(&mut source)
        .iter()
        .map(|d| doc_index(&d.text))
        .collect();
    // Null scores (rows 12, 25, 38) fail the comparison.
    let expected: Vec<usize> = (0..DOCS)
        .filter(|i| i % 13 != 12 && i % 10 >= 7 && *i != 17)
        .collect();
    assert_eq!(kept, expected);
}

#[test]
fn a_shuffled_filtered_source_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let open = || filtered(&path, "score > 0.25", TextSourceOptions::shuffled(5));
    let mut whole = open();
    let expected: Vec<String> = (0..30).map(|_| whole.next_document().unwrap()).collect();
    let mut first = open();
    for _ in 0..11 {
        first.next_document().unwrap();
    }
    let mut resumed = open();
    resumed.seek(&first.cursor()).unwrap();
    let rest: Vec<String> = (0..19).map(|_| resumed.next_document().unwrap()).collect();
    assert_eq!(rest, expected[11..]);
    assert!(expected.iter().all(|t| doc_index(t) % 10 > 2));
}

#[test]
fn unknown_or_non_numeric_filter_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let open = |filter: &str| {
        let columns = DocumentColumns {
            metadata: None,
            filter: Some(RowFilter::parse(filter).unwrap()),
        };
        ParquetTextSource::open_with(
            std::slice::from_ref(&path),
            TextSourceOptions::default(),
            columns,
        )
        .unwrap_err()
    };
    let err = open("quality >= 1");
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("quality") && msg.contains("scored.parquet"),
        "{msg}"
    );
    assert!(msg.contains("score"), "lists the columns there are: {msg}");
    let msg = open("url > 1").to_string();
    assert!(msg.contains("`url`") && msg.contains("numeric"), "{msg}");
    let columns = DocumentColumns {
        metadata: Some("n".into()),
        filter: None,
    };
    let msg = ParquetTextSource::open_with(
        std::slice::from_ref(&path),
        TextSourceOptions::default(),
        columns,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("`n`") && msg.contains("string"), "{msg}");
}

fn conditioned(
    path: &Path,
    tok: &Arc<Tokenizer>,
    conditioning: Conditioning,
    options: TextSourceOptions,
) -> PackedSource {
    let columns = DocumentColumns {
        metadata: Some("url".into()),
        filter: None,
    };
    let text = ParquetTextSource::open_with(&[path.to_path_buf()], options, columns).unwrap();
    PackedSource::conditioned(text, tok.clone(), 11, conditioning).unwrap()
}

fn column_conditioning() -> Conditioning {
    Conditioning {
        constant: None,
        separator: "\n\n".into(),
        mask_metadata: true,
    }
}

#[test]
fn metadata_prefixes_are_read_and_masked_out_of_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let tok = tiny_tokenizer_with_bos();
    let mut source = conditioned(
        &path,
        &tok,
        column_conditioning(),
        TextSourceOptions::default(),
    );
    let sequences: Vec<TokenSequence> = (0..60).map(|_| source.next_sequence().unwrap()).collect();
    let tokens: Vec<u32> = sequences.iter().flat_map(|s| s.tokens.clone()).collect();
    let mask: Vec<bool> = sequences
        .iter()
        .flat_map(|s| s.loss_mask.clone().unwrap())
        .collect();
    // The stream is, per document, BOS + tokens("site-i\n\n") masked + tokens(text) + EOS,
    // with no prefix where the url is null.
    let (mut want_tokens, mut want_mask) = (Vec::new(), Vec::new());
    for i in 0..DOCS {
        let text = tok
            .encode(&format!(
                "doc {i} {}",
                ["alpha", "beta", "gamma", "delta"][..i % 4 + 1].join(" ")
            ))
            .unwrap();
        let prefix = if i % 7 != 6 {
            tok.encode(&format!("site-{i}\n\n")).unwrap()
        } else {
            Vec::new()
        };
        want_tokens.push(tok.bos_id().unwrap());
        want_mask.push(true);
        want_tokens.extend(&prefix);
        want_mask.extend(prefix.iter().map(|_| false));
        want_tokens.extend(&text);
        want_mask.extend(text.iter().map(|_| true));
        want_tokens.push(tok.eos_id().unwrap());
        want_mask.push(true);
    }
    let n = want_tokens.len().min(tokens.len());
    assert!(n > 300, "the comparison covers most of an epoch");
    assert_eq!(tokens[..n], want_tokens[..n]);
    assert_eq!(mask[..n], want_mask[..n]);
    // With metadata in the loss (metadata_loss = true) the tokens are the same, without a mask.
    let mut in_loss = conditioned(
        &path,
        &tok,
        Conditioning {
            mask_metadata: false,
            ..column_conditioning()
        },
        TextSourceOptions::default(),
    );
    let first = in_loss.next_sequence().unwrap();
    assert_eq!(first.tokens, sequences[0].tokens);
    assert_eq!(first.loss_mask, None);
}

#[test]
fn a_constant_prefix_needs_no_column_and_eval_sets_can_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let tok = tiny_tokenizer_with_bos();
    let conditioning = Conditioning {
        constant: Some("source: scored".into()),
        separator: " | ".into(),
        mask_metadata: true,
    };
    let open = || {
        ParquetTextSource::open(std::slice::from_ref(&path), TextSourceOptions::default()).unwrap()
    };
    let eval = eval_token_sequences(open(), &tok, 40, 3, conditioning.clone()).unwrap();
    let prefix = tok.encode("source: scored | ").unwrap();
    assert_eq!(eval[0].tokens[1..1 + prefix.len()], prefix[..]);
    let mask = eval[0].loss_mask.as_ref().unwrap();
    assert!(mask[1..1 + prefix.len()].iter().all(|&kept| !kept));
    assert!(mask[1 + prefix.len()]);
    let plain = eval_token_sequences(open(), &tok, 40, 3, Conditioning::none()).unwrap();
    assert!(plain.iter().all(|s| s.loss_mask.is_none()));
    assert_ne!(plain[0].tokens, eval[0].tokens);
}

#[test]
fn a_conditioned_source_resumes_with_its_pending_mask() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let tok = tiny_tokenizer_with_bos();
    let open = || {
        conditioned(
            &path,
            &tok,
            column_conditioning(),
            TextSourceOptions::shuffled(9),
        )
    };
    let mut whole = open();
    let expected: Vec<TokenSequence> = (0..80).map(|_| whole.next_sequence().unwrap()).collect();
    for cut in [1, 17, 45] {
        let mut first = open();
        for _ in 0..cut {
            first.next_sequence().unwrap();
        }
        let json = serde_json::to_string(&first.cursor()).unwrap();
        let mut resumed = open();
        resumed.seek(&serde_json::from_str(&json).unwrap()).unwrap();
        let rest: Vec<TokenSequence> = (cut..80)
            .map(|_| resumed.next_sequence().unwrap())
            .collect();
        assert_eq!(rest, expected[cut..], "cut at {cut}");
    }
}

fn subset(
    path: &Path,
    tok: &Tokenizer,
    docs: usize,
    epochs: Option<u64>,
    seed: u64,
) -> SubsetSource {
    let columns = DocumentColumns {
        metadata: None,
        filter: Some(RowFilter::parse("n >= 4").unwrap()),
    };
    let text =
        ParquetTextSource::open_with(&[path.to_path_buf()], TextSourceOptions::default(), columns)
            .unwrap();
    SubsetSource::new(text, tok, 7, Conditioning::none(), docs, epochs, seed).unwrap()
}

/// The documents of a packed token stream, by their number ("doc i" → i).
fn documents_of(stream: &[u32], tok: &Tokenizer) -> Vec<usize> {
    let eos = tok.eos_id().unwrap();
    let bos = tok.bos_id();
    stream
        .split(|&t| t == eos)
        .filter_map(|doc| {
            let ids: Vec<u32> = doc.iter().copied().filter(|&t| Some(t) != bos).collect();
            let text = tok.decode(&ids).ok()?;
            text.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

#[test]
fn a_subset_is_seeded_and_every_pass_visits_exactly_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let tok = tiny_tokenizer_with_bos();
    let mut a = subset(&path, &tok, 8, None, 3);
    let per_pass = a.tokens_per_pass() as usize;
    // Three passes' worth of tokens, whole sequences.
    let sequences = 3 * per_pass / 7;
    let stream: Vec<u32> = (0..sequences)
        .flat_map(|_| a.next_sequence().unwrap().tokens)
        .collect();
    let mut b = subset(&path, &tok, 8, None, 3);
    let again: Vec<u32> = (0..sequences)
        .flat_map(|_| b.next_sequence().unwrap().tokens)
        .collect();
    assert_eq!(stream, again, "the same seed gives the same stream");
    let docs = documents_of(&stream[..per_pass], &tok);
    let mut members = docs.clone();
    members.sort_unstable();
    assert_eq!(members.len(), 8);
    members.dedup();
    assert_eq!(
        members.len(),
        8,
        "a pass visits each document once: {docs:?}"
    );
    assert!(members.iter().all(|&i| i >= 4), "the filter applies first");
    let second = documents_of(&stream[per_pass..2 * per_pass], &tok);
    let mut second_members = second.clone();
    second_members.sort_unstable();
    assert_eq!(
        second_members, members,
        "the second pass repeats the subset"
    );
    assert_ne!(second, docs, "in a new order");
    let mut other = subset(&path, &tok, 8, None, 4);
    let other_pass = other.tokens_per_pass() as usize;
    let other_stream: Vec<u32> = (0..other_pass.div_ceil(7))
        .flat_map(|_| other.next_sequence().unwrap().tokens)
        .collect();
    let mut other_members = documents_of(&other_stream[..other_pass], &tok);
    other_members.sort_unstable();
    assert_ne!(other_members, members, "another seed, another subset");
}

#[test]
fn a_subset_resumes_exactly_and_stops_at_its_epoch_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let tok = tiny_tokenizer_with_bos();
    let mut whole = subset(&path, &tok, 5, Some(2), 1);
    let available = 2 * whole.tokens_per_pass() as usize / 7;
    let expected: Vec<TokenSequence> = (0..available)
        .map(|_| whole.next_sequence().unwrap())
        .collect();
    let err = whole.next_sequence().unwrap_err().to_string();
    assert!(err.contains("epochs") && err.contains("2 times"), "{err}");
    for cut in [0, 3, available / 2 + 1] {
        let mut first = subset(&path, &tok, 5, Some(2), 1);
        for _ in 0..cut {
            first.next_sequence().unwrap();
        }
        let json = serde_json::to_string(&SequenceSource::cursor(&first)).unwrap();
        let mut resumed = subset(&path, &tok, 5, Some(2), 1);
        SequenceSource::seek(&mut resumed, &serde_json::from_str(&json).unwrap()).unwrap();
        let rest: Vec<TokenSequence> = (cut..available)
            .map(|_| resumed.next_sequence().unwrap())
            .collect();
        assert_eq!(rest, expected[cut..], "cut at {cut}");
    }
}

#[test]
fn a_subset_larger_than_the_filtered_corpus_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scored(dir.path());
    let tok = tiny_tokenizer_with_bos();
    let columns = DocumentColumns {
        metadata: None,
        filter: Some(RowFilter::parse("score >= 0.9").unwrap()),
    };
    let text = ParquetTextSource::open_with(
        std::slice::from_ref(&path),
        TextSourceOptions::default(),
        columns,
    )
    .unwrap();
    let err = SubsetSource::new(text, &tok, 7, Conditioning::none(), 10, None, 0).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("subset_docs") && msg.contains("only 4") && msg.contains("scored.parquet"),
        "{msg}"
    );
}
