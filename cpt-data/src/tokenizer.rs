//! A Hugging Face `tokenizer.json` tokenizer, and training of a byte-level BPE one (the GPT-2
//! scheme: Radford et al., "Language Models are Unsupervised Multitask Learners", 2019).
//!
//! The file format is the Hugging Face one so that a tokenizer trained here loads in Python's
//! `tokenizers` / `transformers` and encodes identically.

use std::path::{Path, PathBuf};

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::error::{DataError, Result};
use crate::parquet_text::{ParquetTextSource, TextSourceOptions};
use cpt_core::atomic::write_atomic;

/// End-of-text token names, most common first.
const EOS_NAMES: [&str; 4] = ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"];
/// Beginning-of-text token names, most common first.
const BOS_NAMES: [&str; 3] = ["<s>", "<bos>", "<|begin_of_text|>"];
/// The end-of-text token of tokenizers trained by [`train_bpe`].
pub const DEFAULT_EOS_TOKEN: &str = "<|endoftext|>";
/// Where errors point for a tokenizer that never came from a file.
const IN_MEMORY: &str = "<in-memory tokenizer>";

/// A loaded tokenizer with its end/beginning-of-text ids resolved once.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The file it was loaded from, for error messages.
    origin: PathBuf,
    eos_id: Option<u32>,
    bos_id: Option<u32>,
    vocab_size: usize,
}

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`.
    ///
    /// Truncation and padding settings stored in the file are dropped: a pre-training stream
    /// packs whole documents, and silently truncating them would lose text.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_json_bytes(&bytes, path)
    }

    /// A tokenizer from the bytes of a `tokenizer.json` that `path` holds or describes (a GGUF
    /// file's tokenizer is built in memory); `path` names it in errors.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        DataError::guard(path, "tokenizer.json", || {
            let inner =
                tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| DataError::Tokenizer {
                    path: path.to_path_buf(),
                    message: format!("not a valid tokenizer.json: {e}"),
                })?;
            let tokenizer = Self::with_origin(inner, path.to_path_buf())?;
            // A sample encoding, so that a structurally broken tokenizer fails here, by name.
            tokenizer.encode("cpt")?;
            Ok(tokenizer)
        })
    }

    /// Wrap a tokenizer built in memory (e.g. by [`train_bpe`]).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Result<Self> {
        Self::with_origin(inner, PathBuf::from(IN_MEMORY))
    }

    fn with_origin(mut inner: tokenizers::Tokenizer, origin: PathBuf) -> Result<Self> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| DataError::Tokenizer {
                path: origin.clone(),
                message: e.to_string(),
            })?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let eos_id = find(&EOS_NAMES);
        let bos_id = find(&BOS_NAMES);
        // Ids need not be dense (added tokens can sit past the model's vocabulary), and the
        // embedding table must cover the largest one.
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0)
            .max(inner.get_vocab_size(true));
        Ok(Self {
            inner,
            origin,
            eos_id,
            bos_id,
            vocab_size,
        })
    }

    /// Token ids of `text`, without special tokens (no BOS/EOS: the packer adds those).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        DataError::guard(&self.origin, "tokenizer", || {
            let encoding =
                self.inner
                    .encode_fast(text, false)
                    .map_err(|e| DataError::Tokenizer {
                        path: self.origin.clone(),
                        message: e.to_string(),
                    })?;
            Ok(encoding.get_ids().to_vec())
        })
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| DataError::Tokenizer {
                path: self.origin.clone(),
                message: e.to_string(),
            })
    }

    /// Size an embedding table needs: one past the largest id (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The end-of-text id, found by name (`<|endoftext|>`, `</s>`, `<eos>`, `<|end_of_text|>`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The beginning-of-text id, found by name (`<s>`, `<bos>`, `<|begin_of_text|>`).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The id of `token`, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The file this tokenizer was loaded from (`<in-memory tokenizer>` otherwise).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The wrapped Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Write `tokenizer.json` to `path` atomically (scratch file, fsync, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| DataError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(write_atomic(path, json.as_bytes())?)
    }
}

/// Train a byte-level BPE tokenizer on `texts`.
///
/// Byte-level means every byte has a token, so no text is ever unknown; the pre-tokenizer is
/// GPT-2's (no prefix space), and the decoder and post-processor are byte-level too, exactly as
/// Python's `ByteLevelBPETokenizer` builds them. `special_tokens` get the first ids, in order;
/// the first of [`DEFAULT_EOS_TOKEN`]-like names among them becomes [`Tokenizer::eos_id`].
/// Pairs seen fewer than `min_frequency` times are never merged.
pub fn train_bpe(
    texts: impl Iterator<Item = String> + Send,
    vocab_size: usize,
    special_tokens: &[String],
    min_frequency: u64,
) -> Result<Tokenizer> {
    let alphabet = ByteLevel::alphabet();
    let floor = alphabet.len() + special_tokens.len();
    if vocab_size < floor {
        return Err(DataError::InvalidOption {
            name: "vocab_size",
            message: format!(
                "{vocab_size} is below the {} byte tokens plus {} special tokens",
                alphabet.len(),
                special_tokens.len()
            ),
        });
    }
    let training_error = |e: tokenizers::Error| DataError::Tokenizer {
        path: IN_MEMORY.into(),
        message: e.to_string(),
    };
    let byte_level = ByteLevel::default()
        .add_prefix_space(false)
        .trim_offsets(false);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::default()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(training_error)?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(
            special_tokens
                .iter()
                .map(|t| AddedToken::from(t.clone(), true))
                .collect(),
        )
        .initial_alphabet(alphabet.into_iter().collect())
        .build();
    tokenizer
        .train(&mut trainer, texts)
        .map_err(training_error)?;
    Tokenizer::from_inner(tokenizer.into())
}

/// Train a byte-level BPE tokenizer (see [`train_bpe`], pairs seen at least twice) on the
/// `column` of Parquet `files`, streamed one row group at a time in file order, one epoch.
pub fn train_bpe_from_parquet(
    files: &[PathBuf],
    column: &str,
    vocab_size: usize,
    special_tokens: &[String],
) -> Result<Tokenizer> {
    let options = TextSourceOptions {
        column: column.to_string(),
        shuffle: false,
        seed: 0,
        ..Default::default()
    };
    let mut source = ParquetTextSource::open(files, options)?;
    // The trainer consumes a plain iterator, so a read error is parked here and the stream
    // ends early; it is reported after training returns.
    let failure = std::sync::Mutex::new(None);
    let mut documents = 0usize;
    let texts = std::iter::from_fn(|| match source.next_in_epoch() {
        Ok(Some(text)) => {
            documents += 1;
            Some(text)
        }
        Ok(None) => None,
        Err(e) => {
            if let Ok(mut slot) = failure.lock() {
                *slot = Some(e);
            }
            None
        }
    });
    let trained = train_bpe(texts, vocab_size, special_tokens, 2);
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let tokenizer = trained?;
    if documents == 0 {
        return Err(source.empty_corpus_error());
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences() -> impl Iterator<Item = String> + Send {
        [
            "the cat sat on the mat",
            "the dog sat on the log",
            "a cat and a dog met on the mat",
            "émigré café naïve — unicode too",
        ]
        .into_iter()
        .cycle()
        .take(40)
        .map(String::from)
    }

    fn tiny() -> Tokenizer {
        train_bpe(sentences(), 300, &[DEFAULT_EOS_TOKEN.to_string()], 2).unwrap()
    }

    #[test]
    fn trained_bpe_has_eos_first_no_bos_and_merges() {
        let tok = tiny();
        assert_eq!(tok.eos_id(), Some(0), "special tokens get the first ids");
        assert_eq!(tok.bos_id(), None);
        assert!(
            tok.vocab_size() > 257 && tok.vocab_size() <= 300,
            "{}",
            tok.vocab_size()
        );
        // Frequent words were merged: fewer ids than bytes.
        let ids = tok.encode("the cat sat on the mat").unwrap();
        assert!(ids.len() < "the cat sat on the mat".len(), "{ids:?}");
    }

    #[test]
    fn encoding_round_trips_any_text_and_adds_no_specials() {
        let tok = tiny();
        let text = "unseen ✓ text\twith\nbytes 日本";
        let ids = tok.encode(text).unwrap();
        assert!(!ids.contains(&0), "no EOS added by encode");
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert!(tok.encode("").unwrap().is_empty());
    }

    #[test]
    fn saved_file_reloads_identically_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = tiny();
        tok.save(&path).unwrap();
        assert!(!dir.path().join(".tokenizer.json.tmp").exists());
        let loaded = Tokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.vocab_size(), tok.vocab_size());
        assert_eq!(loaded.eos_id(), tok.eos_id());
        for s in sentences().take(4) {
            assert_eq!(loaded.encode(&s).unwrap(), tok.encode(&s).unwrap());
        }
    }

    #[test]
    fn training_is_reproducible() {
        let a = tiny().inner().to_string(false).unwrap();
        let b = tiny().inner().to_string(false).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn finds_bos_and_eos_by_common_names() {
        let specials = ["<s>".to_string(), "</s>".to_string()];
        let tok = train_bpe(sentences(), 300, &specials, 2).unwrap();
        assert_eq!(tok.bos_id(), Some(0));
        assert_eq!(tok.eos_id(), Some(1));
    }

    #[test]
    fn vocab_below_byte_alphabet_is_rejected() {
        let err = train_bpe(sentences(), 100, &[], 2).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::InvalidOption {
                    name: "vocab_size",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, b"{\"model\": [1, 2").unwrap();
        let err = Tokenizer::from_file(&path).unwrap_err();
        assert!(matches!(err, DataError::Tokenizer { .. }), "{err}");
        assert!(err.to_string().contains("broken.json"), "{err}");
    }

    #[test]
    fn missing_file_is_io_error_naming_it() {
        let err = Tokenizer::from_file("/nonexistent/tok.json").unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/tok.json"), "{err}");
    }
}
