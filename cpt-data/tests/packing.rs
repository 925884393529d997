//! Packing real documents with a real tokenizer: boundaries, no loss, resume, mixtures.

mod common;

use std::sync::Arc;

use common::{numbered_docs, tiny_tokenizer, tiny_tokenizer_with_bos, write_corpus};
use cpt_data::{
    Mixture, PackedCursor, PackedSource, ParquetTextSource, SequenceSource, SourceCursor,
    TextSourceOptions, Tokenizer, eval_sequences,
};
use proptest::prelude::*;

/// The token stream packing must produce: each document as [bos] + tokens + [eos].
fn expected_stream(docs: &[String], tok: &Tokenizer) -> Vec<u32> {
    let mut stream = Vec::new();
    for doc in docs {
        let ids = tok.encode(doc).unwrap();
        if ids.is_empty() {
            continue;
        }
        stream.extend(tok.bos_id());
        stream.extend(ids);
        stream.extend(tok.eos_id());
    }
    stream
}

#[test]
fn sequences_are_the_document_stream_cut_exactly() {
    for tok in [tiny_tokenizer(), tiny_tokenizer_with_bos()] {
        let dir = tempfile::tempdir().unwrap();
        let mut docs = numbered_docs(20);
        docs.insert(5, String::new()); // contributes nothing
        let files = write_corpus(dir.path(), &docs, 2, 3);
        let source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
        let seq_len = 13;
        let mut packed = PackedSource::new(source, tok.clone(), seq_len).unwrap();
        let stream = expected_stream(&docs, &tok);
        let full = stream.len() / seq_len;
        let sequences: Vec<Vec<u32>> = (0..full)
            .map(|_| packed.next_sequence().unwrap().tokens)
            .collect();
        assert!(sequences.iter().all(|s| s.len() == seq_len));
        // Nothing lost, nothing duplicated, nothing reordered: the concatenation is the stream.
        assert_eq!(sequences.concat(), stream[..full * seq_len]);
        assert_eq!(packed.cursor().pending, stream[full * seq_len..]);
        // EOS count equals non-empty documents seen in full sequences, BOS likewise.
        let eos = tok.eos_id().unwrap();
        let eos_in_stream = stream.iter().filter(|&&t| t == eos).count();
        assert_eq!(eos_in_stream, 20);
        if let Some(bos) = tok.bos_id() {
            assert_eq!(stream.iter().filter(|&&t| t == bos).count(), 20);
            assert_eq!(sequences[0][0], bos);
        }
        // The next sequence wraps into epoch 1: pending tail, then the first document again.
        let wrap = packed.next_sequence().unwrap().tokens;
        let mut again = stream[full * seq_len..].to_vec();
        again.extend_from_slice(&stream);
        assert_eq!(wrap, again[..seq_len]);
    }
}

#[test]
fn eval_sequences_is_one_unshuffled_pass_capped() {
    let tok = tiny_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let docs = numbered_docs(12);
    let files = write_corpus(dir.path(), &docs, 1, 5);
    let open = || ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
    let stream = expected_stream(&docs, &tok);
    let all = eval_sequences(open(), &tok, 10, 1000).unwrap();
    assert_eq!(
        all.len(),
        stream.len() / 10,
        "one pass only, partial tail dropped"
    );
    assert_eq!(all.concat(), stream[..all.len() * 10]);
    let capped = eval_sequences(open(), &tok, 10, 3).unwrap();
    assert_eq!(capped, all[..3]);
}

/// Shared fixture for the resume properties: a multi-file, multi-row-group corpus.
struct Fixture {
    _dir: tempfile::TempDir,
    files: Vec<std::path::PathBuf>,
    tok: Arc<Tokenizer>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let files = write_corpus(dir.path(), &numbered_docs(37), 3, 4);
        Fixture {
            _dir: dir,
            files,
            tok: tiny_tokenizer(),
        }
    })
}

fn packed(seed: u64, seq_len: usize) -> PackedSource {
    let f = fixture();
    let source = ParquetTextSource::open(&f.files, TextSourceOptions::shuffled(seed)).unwrap();
    PackedSource::new(source, f.tok.clone(), seq_len).unwrap()
}

fn mixture(seed: u64) -> Mixture {
    let a: Box<dyn SequenceSource> = Box::new(packed(seed, 16));
    let b: Box<dyn SequenceSource> = Box::new(packed(seed ^ 0xabc, 16));
    Mixture::new(vec![(a, 0.7), (b, 0.3)], seed.wrapping_add(1)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// k sequences, save, seek a fresh source, m more == sequences k..k+m of one run, across
    /// unit and epoch boundaries (an epoch here is ~25 sequences of 16).
    #[test]
    fn packed_resume_equals_uninterrupted(seed in any::<u64>(), k in 0usize..70, m in 1usize..20) {
        let mut whole = packed(seed, 16);
        let expected: Vec<Vec<u32>> = (0..k + m).map(|_| whole.next_sequence().unwrap().tokens).collect();
        let mut first = packed(seed, 16);
        for _ in 0..k {
            first.next_sequence().unwrap();
        }
        let json = serde_json::to_string(&first.cursor()).unwrap();
        let cursor: PackedCursor = serde_json::from_str(&json).unwrap();
        let mut resumed = packed(seed, 16);
        resumed.seek(&cursor).unwrap();
        let rest: Vec<Vec<u32>> = (0..m).map(|_| resumed.next_sequence().unwrap().tokens).collect();
        prop_assert_eq!(&rest[..], &expected[k..]);
    }

    /// The same through a mixture of two packed sources and the trait-object cursor.
    #[test]
    fn mixture_resume_equals_uninterrupted(seed in any::<u64>(), k in 0usize..60, m in 1usize..15) {
        let mut whole = mixture(seed);
        let expected: Vec<Vec<u32>> = (0..k + m).map(|_| whole.next_sequence().unwrap().tokens).collect();
        let mut first = mixture(seed);
        for _ in 0..k {
            first.next_sequence().unwrap();
        }
        let json = serde_json::to_string(&SequenceSource::cursor(&first)).unwrap();
        let cursor: SourceCursor = serde_json::from_str(&json).unwrap();
        let mut resumed = mixture(seed);
        SequenceSource::seek(&mut resumed, &cursor).unwrap();
        let rest: Vec<Vec<u32>> = (0..m).map(|_| resumed.next_sequence().unwrap().tokens).collect();
        prop_assert_eq!(&rest[..], &expected[k..]);
    }
}

#[test]
fn shuffled_packing_differs_across_seeds_and_repeats_per_seed() {
    let take = |seed| {
        let mut p = packed(seed, 16);
        (0..10)
            .map(|_| p.next_sequence().unwrap().tokens)
            .collect::<Vec<_>>()
    };
    assert_eq!(take(3), take(3));
    assert_ne!(take(3), take(4));
}

#[test]
fn mixture_of_packed_sources_follows_weights() {
    // Attribute each draw by matching it against each component's own uninterrupted stream.
    let mut m = mixture(21);
    let mut a = packed(21, 16);
    let mut b = packed(21 ^ 0xabc, 16);
    let (mut next_a, mut next_b) = (
        a.next_sequence().unwrap().tokens,
        b.next_sequence().unwrap().tokens,
    );
    let mut from_a = 0;
    let draws = 400;
    for _ in 0..draws {
        let s = m.next_sequence().unwrap().tokens;
        if s == next_a {
            from_a += 1;
            next_a = a.next_sequence().unwrap().tokens;
        } else {
            assert_eq!(
                s, next_b,
                "every draw is the next sequence of one component"
            );
            next_b = b.next_sequence().unwrap().tokens;
        }
    }
    let share = from_a as f64 / draws as f64;
    assert!((share - 0.7).abs() < 0.07, "{share}");
}

#[test]
fn a_minimum_document_length_packs_long_documents_only_and_resumes() {
    let tok = tiny_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    // Documents of 1 to 12 repeated words: only some reach the threshold.
    let docs: Vec<String> = (0..24)
        .map(|i| vec!["alpha beta"; 1 + i % 12].join(" "))
        .collect();
    let files = write_corpus(dir.path(), &docs, 2, 3);
    let min_tokens = 12;
    let open = || {
        let source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
        PackedSource::new(source, tok.clone(), 8)
            .unwrap()
            .with_min_document_tokens(min_tokens)
    };
    let long: Vec<String> = docs
        .iter()
        .filter(|d| tok.encode(d).unwrap().len() >= min_tokens)
        .cloned()
        .collect();
    assert!(
        !long.is_empty() && long.len() < docs.len(),
        "the test needs both kinds"
    );
    let stream = expected_stream(&long, &tok);
    let mut packed = open();
    let sequences: Vec<Vec<u32>> = (0..stream.len() / 8)
        .map(|_| packed.next_sequence().unwrap().tokens)
        .collect();
    assert_eq!(sequences.concat(), stream[..sequences.len() * 8]);
    // Resuming from the cursor continues the same filtered stream.
    let mut first = open();
    for _ in 0..3 {
        first.next_sequence().unwrap();
    }
    let mut resumed = open();
    resumed.seek(&first.cursor()).unwrap();
    assert_eq!(resumed.next_sequence().unwrap().tokens, sequences[3]);
    // A threshold no document reaches is an empty corpus, saying so.
    let source = ParquetTextSource::open(&files, TextSourceOptions::default()).unwrap();
    let mut none = PackedSource::new(source, tok.clone(), 8)
        .unwrap()
        .with_min_document_tokens(10_000);
    let message = none.next_sequence().unwrap_err().to_string();
    assert!(message.contains("at least 10000 tokens"), "{message}");
}
