//! Vocabulary extension of a BPE tokenizer: new merges learned on a new corpus, appended after
//! every existing one (the domain-adaptation recipe of "Cabrita: closing the gap for foreign
//! languages", 2023, and of Taiyi's bilingual CLIP).
//!
//! What is guaranteed, for a BPE model without `ignore_merges`:
//! - every existing id keeps its token string, and the new tokens get the ids
//!   `vocab_size .. vocab_size + N` (`vocab_size` as [`Tokenizer::vocab_size`]: one past the
//!   largest id, added tokens included);
//! - the old merges keep their ranks and the new ones rank after all of them; each new merge
//!   joins two adjacent pieces into a string the old vocabulary does not hold. BPE applies
//!   merges by rank, so a pre-token is first encoded exactly as before, then the new merges
//!   coarsen that sequence: replacing each new token by the pair it was merged from (repeatedly)
//!   gives back the old encoding. Text in which no new pair is adjacent after the old merges
//!   encodes to the very same ids.
//!
//! The old ids keep their meaning for a model trained on them; old text may still encode to
//! fewer, new, ids where it contains the new merges' pairs (the `--compare` table of
//! `cpt tokenizer extend` measures how much).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::{Model, ModelWrapper};

use crate::error::{DataError, Result};
use crate::parquet_text::{ParquetTextSource, TextSourceOptions};
use crate::tokenizer::Tokenizer;

/// Pairs seen fewer times than this are never merged (as `cpt tokenizer train`).
pub const EXTEND_MIN_FREQUENCY: u64 = 2;

/// A tokenizer with appended merges, and what was appended.
#[derive(Debug, Clone)]
pub struct ExtendedTokenizer {
    /// The extended tokenizer.
    pub tokenizer: Tokenizer,
    /// Id of the first new token (the base tokenizer's [`Tokenizer::vocab_size`]).
    pub first_new_id: u32,
    /// The new merges in rank order, as `(left, right)` token strings; the `i`-th made the
    /// token `first_new_id + i`.
    pub merges: Vec<(String, String)>,
}

/// Counts of adjacent token pairs over a corpus of words, each word a token sequence with its
/// frequency, kept up to date as merges are applied.
struct PairCounts {
    words: Vec<(Vec<u32>, u64)>,
    counts: HashMap<(u32, u32), u64>,
    /// Words each pair occurs in (entries may be stale; a merge re-checks the word).
    occurs_in: HashMap<(u32, u32), HashSet<usize>>,
}

impl PairCounts {
    fn new(words: Vec<(Vec<u32>, u64)>) -> Self {
        let mut this = Self {
            words,
            counts: HashMap::new(),
            occurs_in: HashMap::new(),
        };
        for w in 0..this.words.len() {
            this.count_word(w, true);
        }
        this
    }

    fn count_word(&mut self, w: usize, add: bool) {
        let (ids, freq) = &self.words[w];
        for pair in ids.windows(2).map(|p| (p[0], p[1])) {
            let count = self.counts.entry(pair).or_default();
            if add {
                *count += freq;
                self.occurs_in.entry(pair).or_default().insert(w);
            } else {
                *count -= freq;
            }
        }
    }

    /// The most frequent pair not in `blocked` (ties: the smaller ids), with its count.
    fn best(&self, blocked: &HashSet<(u32, u32)>) -> Option<((u32, u32), u64)> {
        self.counts
            .iter()
            .filter(|(pair, count)| **count > 0 && !blocked.contains(pair))
            .max_by(|(pa, ca), (pb, cb)| ca.cmp(cb).then(pb.cmp(pa)))
            .map(|(pair, count)| (*pair, *count))
    }

    /// Replace every occurrence of `pair` (left to right, not overlapping, as BPE does) by
    /// `new_id`.
    fn merge(&mut self, pair: (u32, u32), new_id: u32) {
        let mut affected: Vec<usize> = self
            .occurs_in
            .remove(&pair)
            .unwrap_or_default()
            .into_iter()
            .collect();
        affected.sort_unstable();
        for w in affected {
            self.count_word(w, false);
            let ids = &self.words[w].0;
            let mut merged = Vec::with_capacity(ids.len());
            let mut i = 0;
            while i < ids.len() {
                if i + 1 < ids.len() && (ids[i], ids[i + 1]) == pair {
                    merged.push(new_id);
                    i += 2;
                } else {
                    merged.push(ids[i]);
                    i += 1;
                }
            }
            self.words[w].0 = merged;
            self.count_word(w, true);
        }
    }
}

/// Learn `add` new merges on `texts` and append them to `base` (see the module documentation
/// for what stays the same). Only BPE models without a continuing-subword prefix or an
/// end-of-word suffix are supported. Fails, saying how many it found, when the corpus has fewer
/// than `add` pairs seen at least `min_frequency` times.
pub fn extend_bpe(
    base: &Tokenizer,
    texts: impl Iterator<Item = String>,
    add: usize,
    min_frequency: u64,
) -> Result<ExtendedTokenizer> {
    let unsupported = |message: String| DataError::Tokenizer {
        path: base.origin().to_path_buf(),
        message,
    };
    let ModelWrapper::BPE(bpe) = base.inner().get_model() else {
        return Err(unsupported(
            "vocabulary extension needs a BPE model (`model.type = \"BPE\"`)".into(),
        ));
    };
    if bpe.continuing_subword_prefix.is_some() || bpe.end_of_word_suffix.is_some() {
        return Err(unsupported(
            "vocabulary extension supports BPE without `continuing_subword_prefix` and `end_of_word_suffix`".into(),
        ));
    }
    if add == 0 {
        return Err(DataError::InvalidOption {
            name: "add",
            message: "must be at least 1".into(),
        });
    }
    let mut vocab = bpe.get_vocab();
    let mut token_of: HashMap<u32, String> = vocab.iter().map(|(t, &id)| (id, t.clone())).collect();
    let specials: HashSet<u32> = base
        .inner()
        .get_added_tokens_decoder()
        .into_keys()
        .collect();
    let words = count_words(base, texts, &specials)?;
    let mut pairs = PairCounts::new(words);

    let first_new_id = base.vocab_size() as u32;
    let mut merges = Vec::with_capacity(add);
    // Pairs whose joined string the vocabulary already holds: merging them would add no token.
    let mut blocked = HashSet::new();
    while merges.len() < add {
        let Some((pair, count)) = pairs.best(&blocked) else {
            break;
        };
        if count < min_frequency {
            break;
        }
        let (left, right) = (token_of[&pair.0].clone(), token_of[&pair.1].clone());
        let joined = format!("{left}{right}");
        if vocab.contains_key(&joined) {
            blocked.insert(pair);
            continue;
        }
        let id = first_new_id + merges.len() as u32;
        vocab.insert(joined.clone(), id);
        token_of.insert(id, joined);
        pairs.merge(pair, id);
        merges.push((left, right));
    }
    if merges.len() < add {
        return Err(DataError::InvalidOption {
            name: "add",
            message: format!(
                "the corpus supports only {} new merges (pairs seen at least {min_frequency} times), not {add}",
                merges.len()
            ),
        });
    }

    let mut all_merges = base_merges(bpe, base)?;
    all_merges.extend(merges.iter().cloned());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), all_merges)
        .fuse_unk(bpe.fuse_unk)
        .byte_fallback(bpe.byte_fallback)
        .ignore_merges(bpe.ignore_merges);
    if let Some(p) = bpe.dropout {
        builder = builder.dropout(p);
    }
    if let Some(unk) = &bpe.unk_token {
        builder = builder.unk_token(unk.clone());
    }
    let extended = builder
        .build()
        .map_err(|e| unsupported(format!("building the extended BPE: {e}")))?;
    let mut inner = base.inner().clone();
    inner.with_model(ModelWrapper::BPE(extended));
    Ok(ExtendedTokenizer {
        tokenizer: Tokenizer::from_inner(inner)?,
        first_new_id,
        merges,
    })
}

/// [`extend_bpe`] (pairs seen at least [`EXTEND_MIN_FREQUENCY`] times) on the `column` of
/// Parquet `files`, read once in file order.
pub fn extend_bpe_from_parquet(
    base: &Tokenizer,
    files: &[PathBuf],
    column: &str,
    add: usize,
) -> Result<ExtendedTokenizer> {
    let mut texts = Vec::new();
    for_each_text(files, column, |t| texts.push(t))?;
    extend_bpe(base, texts.into_iter(), add, EXTEND_MIN_FREQUENCY)
}

/// Tokens and characters (Unicode scalar values) of the `column` of Parquet `files` under
/// `tokenizer`, special tokens not added.
pub fn count_tokens_and_chars(
    tokenizer: &Tokenizer,
    files: &[PathBuf],
    column: &str,
) -> Result<(u64, u64)> {
    let (mut tokens, mut chars) = (0u64, 0u64);
    let mut failure = None;
    for_each_text(files, column, |text| {
        if failure.is_some() {
            return;
        }
        match tokenizer.encode(&text) {
            Ok(ids) => {
                tokens += ids.len() as u64;
                chars += text.chars().count() as u64;
            }
            Err(e) => failure = Some(e),
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok((tokens, chars)),
    }
}

/// The ids the `old` tokenizer gives the text of token `id` of the `new` one: a token of the
/// new BPE model is split by the old model alone (its string is one pre-token already, in the
/// model's own alphabet, so partial UTF-8 pieces of byte-level BPE work); an added token's text
/// is encoded by the whole old tokenizer.
pub fn old_pieces(new: &Tokenizer, old: &Tokenizer, id: u32) -> Result<Vec<u32>> {
    let failed = |message: String| DataError::Tokenizer {
        path: new.origin().to_path_buf(),
        message,
    };
    let pieces = match new.inner().get_model().id_to_token(id) {
        Some(token) => old
            .inner()
            .get_model()
            .tokenize(&token)
            .map_err(|e| failed(format!("token {id} `{token}` under the old tokenizer: {e}")))?
            .into_iter()
            .map(|t| t.id)
            .collect(),
        None => {
            let content = new
                .inner()
                .id_to_token(id)
                .ok_or_else(|| failed(format!("no token has id {id}")))?;
            old.encode(&content)?
        }
    };
    if pieces.is_empty() {
        return Err(failed(format!(
            "token {id} encodes to nothing under the old tokenizer {}",
            old.origin().display()
        )));
    }
    Ok(pieces)
}

/// Every document of the `column` of `files`, in file order; an empty corpus is an error.
fn for_each_text(files: &[PathBuf], column: &str, mut f: impl FnMut(String)) -> Result<()> {
    let options = TextSourceOptions {
        column: column.to_string(),
        shuffle: false,
        seed: 0,
        ..Default::default()
    };
    let mut source = ParquetTextSource::open(files, options)?;
    let mut documents = 0usize;
    while let Some(text) = source.next_in_epoch()? {
        documents += 1;
        f(text);
    }
    if documents == 0 {
        return Err(source.empty_corpus_error());
    }
    Ok(())
}

/// The pre-tokens of `texts` as the base tokenizer encodes them (all old merges applied), with
/// their frequencies, in a fixed order. Special tokens are never part of a word.
fn count_words(
    base: &Tokenizer,
    texts: impl Iterator<Item = String>,
    specials: &HashSet<u32>,
) -> Result<Vec<(Vec<u32>, u64)>> {
    let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
    for text in texts {
        // `encode`, not `encode_fast`: only it records which pre-token each token came from.
        let encoding =
            base.inner()
                .encode(text.as_str(), false)
                .map_err(|e| DataError::Tokenizer {
                    path: base.origin().to_path_buf(),
                    message: e.to_string(),
                })?;
        let mut word: Vec<u32> = Vec::new();
        let mut current = None;
        for (&id, &word_id) in encoding.get_ids().iter().zip(encoding.get_word_ids()) {
            if word_id != current || word_id.is_none() || specials.contains(&id) {
                if word.len() > 1 {
                    *counts.entry(std::mem::take(&mut word)).or_default() += 1;
                }
                word.clear();
                current = word_id;
            }
            if word_id.is_some() && !specials.contains(&id) {
                word.push(id);
            }
        }
        if word.len() > 1 {
            *counts.entry(word).or_default() += 1;
        }
    }
    let mut words: Vec<(Vec<u32>, u64)> = counts.into_iter().collect();
    words.sort_unstable();
    Ok(words)
}

/// The merges of `bpe` in rank order, read from its serialised form (the model keeps them in a
/// map by pair).
fn base_merges(bpe: &BPE, base: &Tokenizer) -> Result<Vec<(String, String)>> {
    let bad = |message: String| DataError::Tokenizer {
        path: base.origin().to_path_buf(),
        message,
    };
    let json = serde_json::to_value(bpe).map_err(|e| bad(e.to_string()))?;
    serde_json::from_value(json["merges"].clone())
        .map_err(|e| bad(format!("reading the merges: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{DEFAULT_EOS_TOKEN, train_bpe};

    fn prose() -> impl Iterator<Item = String> + Send {
        [
            "the cat sat on the mat",
            "the dog sat on the log",
            "a cat and a dog met on the mat",
        ]
        .into_iter()
        .cycle()
        .take(30)
        .map(String::from)
    }

    fn code() -> impl Iterator<Item = String> {
        [
            "fn main() { let x = vec![1, 2]; println!(\"{x:?}\"); }",
            "impl Iterator for Counter { fn next(&mut self) -> Option<u32> { None } }",
            "pub fn parse(s: &str) -> Result<u32, String> { s.parse().map_err(|e| e.to_string()) }",
        ]
        .into_iter()
        .cycle()
        .take(30)
        .map(String::from)
    }

    fn base() -> Tokenizer {
        train_bpe(prose(), 290, &[DEFAULT_EOS_TOKEN.to_string()], 2).unwrap()
    }

    /// The old-vocabulary ids a token sequence of the extended tokenizer stands for: each new
    /// token replaced by its merge pair, repeatedly.
    fn expand(ids: &[u32], ext: &ExtendedTokenizer) -> Vec<u32> {
        let mut out = Vec::new();
        for &id in ids {
            if id < ext.first_new_id {
                out.push(id);
                continue;
            }
            let (l, r) = &ext.merges[(id - ext.first_new_id) as usize];
            let new = &ext.tokenizer;
            let pieces = [new.token_to_id(l).unwrap(), new.token_to_id(r).unwrap()];
            out.extend(expand(&pieces, ext));
        }
        out
    }

    #[test]
    fn keeps_every_old_id_and_adds_exactly_n() {
        let old = base();
        let ext = extend_bpe(&old, code(), 25, 2).unwrap();
        let new = &ext.tokenizer;
        assert_eq!(ext.first_new_id as usize, old.vocab_size());
        assert_eq!(new.vocab_size(), old.vocab_size() + 25);
        assert_eq!(ext.merges.len(), 25);
        let (old_vocab, new_vocab) = (old.inner().get_vocab(true), new.inner().get_vocab(true));
        for (token, id) in &old_vocab {
            assert_eq!(new_vocab.get(token), Some(id), "{token}");
        }
        let added: Vec<u32> = new_vocab
            .values()
            .copied()
            .filter(|id| !old_vocab.values().any(|o| o == id))
            .collect();
        let mut added_sorted = added.clone();
        added_sorted.sort_unstable();
        let expected: Vec<u32> = (ext.first_new_id..ext.first_new_id + 25).collect();
        assert_eq!(added_sorted, expected);
        assert_eq!(new.eos_id(), old.eos_id());
    }

    #[test]
    fn new_encoding_is_a_coarsening_of_the_old() {
        let old = base();
        let ext = extend_bpe(&old, code(), 40, 2).unwrap();
        let samples = code()
            .take(3)
            .chain(prose().take(3))
            .chain(["unseen → text; fn x<'a>(y: &'a str) {}".to_string()]);
        let mut shorter = false;
        for text in samples {
            let before = old.encode(&text).unwrap();
            let after = ext.tokenizer.encode(&text).unwrap();
            assert_eq!(expand(&after, &ext), before, "{text}");
            assert_eq!(ext.tokenizer.decode(&after).unwrap(), text);
            shorter |= after.len() < before.len();
        }
        assert!(shorter, "the new merges shorten code");
    }

    #[test]
    fn text_without_the_new_pairs_encodes_identically() {
        let old = base();
        let ext = extend_bpe(&old, code(), 10, 2).unwrap();
        // Single characters separated by spaces: no two pieces of one pre-token to merge.
        let text = "a b c d e f g";
        assert_eq!(
            ext.tokenizer.encode(text).unwrap(),
            old.encode(text).unwrap()
        );
    }

    #[test]
    fn saved_extension_reloads_with_the_same_merges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.json");
        let ext = extend_bpe(&base(), code(), 12, 2).unwrap();
        ext.tokenizer.save(&path).unwrap();
        let loaded = Tokenizer::from_file(&path).unwrap();
        let text = code().next().unwrap();
        assert_eq!(
            loaded.encode(&text).unwrap(),
            ext.tokenizer.encode(&text).unwrap()
        );
        assert_eq!(loaded.vocab_size(), ext.tokenizer.vocab_size());
    }

    #[test]
    fn asking_for_more_merges_than_the_corpus_supports_says_how_many() {
        let err = extend_bpe(&base(), prose(), 100_000, 2).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidOption { name: "add", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("supports only"), "{err}");
    }

    #[test]
    fn old_pieces_of_a_new_token_spell_it_in_old_tokens() {
        let old = base();
        let ext = extend_bpe(&old, code(), 15, 2).unwrap();
        for id in ext.first_new_id..ext.first_new_id + 15 {
            let pieces = old_pieces(&ext.tokenizer, &old, id).unwrap();
            assert!(
                pieces.len() >= 2,
                "a new token joins old pieces: {pieces:?}"
            );
            assert!(pieces.iter().all(|&p| p < ext.first_new_id));
            assert_eq!(
                old.decode(&pieces).unwrap(),
                ext.tokenizer.decode(&[id]).unwrap()
            );
        }
    }

    #[test]
    fn extension_is_deterministic() {
        let a = extend_bpe(&base(), code(), 20, 2).unwrap();
        let b = extend_bpe(&base(), code(), 20, 2).unwrap();
        assert_eq!(a.merges, b.merges);
        assert_eq!(
            a.tokenizer.inner().to_string(false).unwrap(),
            b.tokenizer.inner().to_string(false).unwrap()
        );
    }
}
