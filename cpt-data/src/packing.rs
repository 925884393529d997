//! Packing documents into fixed-length sequences: each document becomes `[bos] + tokens + [eos]`
//! (BOS only where the tokenizer has one), the documents are concatenated into one stream, and
//! the stream is cut every `seq_len` tokens, so a document may span sequences and no token is
//! padding (the GPT-2/3 practice; Brown et al., "Language Models are Few-Shot Learners", 2020).
//!
//! Under metadata conditioning ([`Conditioning`]) a document is `metadata + separator + text`;
//! the prefix is tokenized on its own (so the boundary between metadata and text tokens is
//! exact) and its tokens can be kept out of the loss by a per-token mask that travels with the
//! sequences. Without a mask nothing extra is stored or computed.

use std::sync::Arc;

use cpt_core::TokenSequence;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::parquet_text::{DocCursor, Document, ParquetTextSource};
use crate::tokenizer::Tokenizer;

/// How documents are conditioned on metadata before packing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditioning {
    /// Metadata before every document; `None`: each document's own (from its metadata column),
    /// and no prefix where it has none.
    pub constant: Option<String>,
    /// What joins metadata and text.
    pub separator: String,
    /// Keep the metadata tokens out of the loss (their loss-mask flags are `false`).
    pub mask_metadata: bool,
}

impl Conditioning {
    /// Plain text: no prefix, no mask.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the packed sequences carry a loss mask.
    pub fn masks(&self) -> bool {
        self.mask_metadata
    }
}

/// Turns documents into token runs under a [`Conditioning`].
#[derive(Debug)]
pub(crate) struct DocumentEncoder {
    conditioning: Conditioning,
    /// The tokens of `constant + separator`, encoded once.
    constant_prefix: Option<Vec<u32>>,
}

impl DocumentEncoder {
    pub(crate) fn new(tokenizer: &Tokenizer, conditioning: Conditioning) -> Result<Self> {
        let constant_prefix = match &conditioning.constant {
            Some(text) => Some(tokenizer.encode(&format!("{text}{}", conditioning.separator))?),
            None => None,
        };
        Ok(Self {
            conditioning,
            constant_prefix,
        })
    }

    /// The tokens of `document` (metadata prefix, then text) and how many lead as the prefix;
    /// empty when the text has no token (the document is skipped whatever its metadata).
    pub(crate) fn encode(
        &self,
        tokenizer: &Tokenizer,
        document: &Document,
    ) -> Result<(Vec<u32>, usize)> {
        let text = tokenizer.encode(&document.text)?;
        if text.is_empty() {
            return Ok((text, 0));
        }
        let mut tokens = match (&self.constant_prefix, &document.metadata) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(metadata)) => {
                tokenizer.encode(&format!("{metadata}{}", self.conditioning.separator))?
            }
            (None, None) => Vec::new(),
        };
        let prefix = tokens.len();
        tokens.extend_from_slice(&text);
        Ok((tokens, prefix))
    }

    /// Append `document` to `packer`, its prefix masked if the conditioning says so, unless its
    /// text has fewer than `min_text_tokens` tokens. Returns whether it added any token.
    pub(crate) fn push(
        &self,
        tokenizer: &Tokenizer,
        document: &Document,
        min_text_tokens: usize,
        packer: &mut Packer,
    ) -> Result<bool> {
        let (tokens, prefix) = self.encode(tokenizer, document)?;
        // The length that makes a document long is its text's, without a metadata prefix.
        if tokens.is_empty() || tokens.len() - prefix < min_text_tokens {
            return Ok(false);
        }
        let masked = if self.conditioning.mask_metadata {
            prefix
        } else {
            0
        };
        packer.push_document_masking(&tokens, masked);
        Ok(true)
    }

    /// Whether metadata tokens are kept out of the loss.
    pub(crate) fn masks(&self) -> bool {
        self.conditioning.masks()
    }

    pub(crate) fn packer(&self, tokenizer: &Tokenizer, seq_len: usize) -> Result<Packer> {
        let packer = packer_for(tokenizer, seq_len)?;
        Ok(if self.conditioning.masks() {
            packer.with_loss_mask()
        } else {
            packer
        })
    }
}

/// Concatenates documents' tokens and cuts them into `seq_len` chunks, keeping the leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packer {
    seq_len: usize,
    bos: Option<u32>,
    eos: u32,
    /// Tokens not yet emitted are `buffer[start..]`; the emitted prefix is dropped lazily so
    /// that cutting a very long document stays linear.
    buffer: Vec<u32>,
    /// The loss-mask flag of each token of `buffer`, when sequences carry a mask.
    mask: Option<Vec<bool>>,
    start: usize,
}

impl Packer {
    /// A packer of `seq_len`-token sequences with the given document delimiters.
    pub fn new(seq_len: usize, bos: Option<u32>, eos: u32) -> Result<Self> {
        if seq_len == 0 {
            return Err(DataError::InvalidOption {
                name: "seq_len",
                message: "must be at least 1".into(),
            });
        }
        Ok(Self {
            seq_len,
            bos,
            eos,
            buffer: Vec::new(),
            mask: None,
            start: 0,
        })
    }

    /// The same packer, emitting a loss mask with every sequence.
    pub fn with_loss_mask(mut self) -> Self {
        self.mask = Some(vec![true; self.buffer.len()]);
        self
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Whether each document opens with a BOS token.
    pub fn has_bos(&self) -> bool {
        self.bos.is_some()
    }

    /// Append one document's tokens (without specials); an empty document adds nothing.
    pub fn push_document(&mut self, tokens: &[u32]) {
        self.push_document_masking(tokens, 0);
    }

    /// [`Packer::push_document`] with its first `masked` tokens out of the loss (a metadata
    /// prefix); the delimiters stay targets, as in a plain document. Without a loss mask the
    /// count is ignored.
    pub fn push_document_masking(&mut self, tokens: &[u32], masked: usize) {
        if tokens.is_empty() {
            return;
        }
        self.buffer.extend(self.bos);
        self.buffer.extend_from_slice(tokens);
        self.buffer.push(self.eos);
        if let Some(mask) = self.mask.as_mut() {
            mask.extend(self.bos.map(|_| true));
            mask.extend((0..tokens.len()).map(|i| i >= masked));
            mask.push(true);
        }
    }

    /// The next full sequence, if enough tokens are pending.
    pub fn pop_sequence(&mut self) -> Option<TokenSequence> {
        if self.buffer.len() - self.start < self.seq_len {
            return None;
        }
        let range = self.start..self.start + self.seq_len;
        let sequence = TokenSequence {
            tokens: self.buffer[range.clone()].to_vec(),
            loss_mask: self.mask.as_ref().map(|mask| mask[range].to_vec()),
        };
        self.start += self.seq_len;
        // Compact once the dead prefix outweighs the live tail: amortised O(1) per token.
        if self.start >= self.buffer.len() - self.start {
            self.buffer.drain(..self.start);
            if let Some(mask) = self.mask.as_mut() {
                mask.drain(..self.start);
            }
            self.start = 0;
        }
        Some(sequence)
    }

    /// Tokens packed but not yet emitted (a partial sequence, or more after a long document).
    pub fn pending(&self) -> &[u32] {
        &self.buffer[self.start..]
    }

    /// The loss-mask flags of [`Packer::pending`], when sequences carry a mask.
    pub fn pending_mask(&self) -> Option<&[bool]> {
        self.mask.as_ref().map(|mask| &mask[self.start..])
    }

    /// Replace the pending tokens (when resuming from a cursor).
    pub fn set_pending(&mut self, pending: &[u32]) {
        self.set_pending_masked(pending, None);
    }

    /// Replace the pending tokens and their mask flags (absent flags: every token a target).
    pub fn set_pending_masked(&mut self, pending: &[u32], mask: Option<&[bool]>) {
        self.buffer.clear();
        self.buffer.extend_from_slice(pending);
        if let Some(own) = self.mask.as_mut() {
            own.clear();
            match mask {
                Some(flags) => own.extend_from_slice(flags),
                None => own.extend(std::iter::repeat_n(true, pending.len())),
            }
        }
        self.start = 0;
    }
}

/// Position of a [`PackedSource`]: the next document and the tokens packed but not yet emitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedCursor {
    /// The next document to tokenize.
    pub doc: DocCursor,
    /// Pending tokens, emitted before any token of `doc`.
    pub pending: Vec<u32>,
    /// Loss-mask flags of `pending`, when the source masks metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_mask: Option<Vec<bool>>,
}

/// An endless stream of packed `seq_len`-token sequences from a Parquet text source.
#[derive(Debug)]
pub struct PackedSource {
    source: ParquetTextSource,
    tokenizer: Arc<Tokenizer>,
    encoder: DocumentEncoder,
    packer: Packer,
    /// Documents with fewer tokens are skipped (0 keeps all).
    min_document_tokens: usize,
}

impl PackedSource {
    /// Pack `source`'s documents with `tokenizer`'s BOS (if any) and EOS (required: without a
    /// delimiter the model could not tell where one document ends).
    pub fn new(
        source: ParquetTextSource,
        tokenizer: Arc<Tokenizer>,
        seq_len: usize,
    ) -> Result<Self> {
        Self::conditioned(source, tokenizer, seq_len, Conditioning::none())
    }

    /// [`PackedSource::new`] with documents conditioned on metadata.
    pub fn conditioned(
        source: ParquetTextSource,
        tokenizer: Arc<Tokenizer>,
        seq_len: usize,
        conditioning: Conditioning,
    ) -> Result<Self> {
        let encoder = DocumentEncoder::new(&tokenizer, conditioning)?;
        let packer = encoder.packer(&tokenizer, seq_len)?;
        Ok(Self {
            source,
            tokenizer,
            encoder,
            packer,
            min_document_tokens: 0,
        })
    }

    /// Pack only documents of at least `tokens` tokens (before BOS/EOS): the long-document
    /// half of a long-context stage's sampler. Skipping depends on the text alone, so the
    /// cursor stays the position.
    pub fn with_min_document_tokens(mut self, tokens: usize) -> Self {
        self.min_document_tokens = tokens;
        self
    }

    /// The next sequence of exactly `seq_len` tokens, looping over epochs forever. A whole epoch
    /// without a single non-empty document gives [`DataError::EmptyCorpus`].
    pub fn next_sequence(&mut self) -> Result<TokenSequence> {
        let mut empty_epoch_ends = 0;
        loop {
            if let Some(sequence) = self.packer.pop_sequence() {
                return Ok(sequence);
            }
            match self.source.next_document_in_epoch()? {
                Some(document) => {
                    if self.encoder.push(
                        &self.tokenizer,
                        &document,
                        self.min_document_tokens,
                        &mut self.packer,
                    )? {
                        empty_epoch_ends = 0;
                    }
                }
                // The first end may close a partial epoch (after a seek); two in a row with no
                // token in between mean a full epoch had none.
                None if empty_epoch_ends == 0 => empty_epoch_ends += 1,
                None => return Err(self.empty_corpus_error()),
            }
        }
    }

    fn empty_corpus_error(&self) -> DataError {
        match self.min_document_tokens {
            0 => self.source.empty_corpus_error(),
            n => self
                .source
                .no_documents_error(&format!("document of at least {n} tokens")),
        }
    }

    /// The position after the last sequence returned.
    pub fn cursor(&self) -> PackedCursor {
        PackedCursor {
            doc: self.source.cursor(),
            pending: self.packer.pending().to_vec(),
            pending_mask: self.packer.pending_mask().map(<[bool]>::to_vec),
        }
    }

    /// Continue from `cursor`, taken from a source over the same files, options and tokenizer.
    pub fn seek(&mut self, cursor: &PackedCursor) -> Result<()> {
        check_pending(&cursor.pending, cursor.pending_mask.as_deref())?;
        self.source.seek(&cursor.doc)?;
        self.packer
            .set_pending_masked(&cursor.pending, cursor.pending_mask.as_deref());
        Ok(())
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.packer.seq_len()
    }
}

/// Up to `max_sequences` packed sequences from one pass over `source` (from its current position
/// to the end of that epoch; open it without shuffle for a stable evaluation set). The partial
/// tail is dropped. Fewer than one full sequence is [`DataError::EmptyCorpus`].
pub fn eval_sequences(
    source: ParquetTextSource,
    tokenizer: &Tokenizer,
    seq_len: usize,
    max_sequences: usize,
) -> Result<Vec<Vec<u32>>> {
    let sequences = eval_token_sequences(
        source,
        tokenizer,
        seq_len,
        max_sequences,
        Conditioning::none(),
    )?;
    Ok(sequences.into_iter().map(|s| s.tokens).collect())
}

/// [`eval_sequences`] with documents conditioned on metadata (an eval set scored as trained
/// under metadata conditioning: the prefixes read, their tokens masked if so conditioned).
pub fn eval_token_sequences(
    mut source: ParquetTextSource,
    tokenizer: &Tokenizer,
    seq_len: usize,
    max_sequences: usize,
    conditioning: Conditioning,
) -> Result<Vec<TokenSequence>> {
    if max_sequences == 0 {
        return Err(DataError::InvalidOption {
            name: "max_sequences",
            message: "must be at least 1".into(),
        });
    }
    let encoder = DocumentEncoder::new(tokenizer, conditioning)?;
    let mut packer = encoder.packer(tokenizer, seq_len)?;
    let mut sequences = Vec::new();
    'pass: while sequences.len() < max_sequences {
        let Some(document) = source.next_document_in_epoch()? else {
            break;
        };
        encoder.push(tokenizer, &document, 0, &mut packer)?;
        while let Some(sequence) = packer.pop_sequence() {
            sequences.push(sequence);
            if sequences.len() == max_sequences {
                break 'pass;
            }
        }
    }
    if sequences.is_empty() {
        let DataError::EmptyCorpus { what } = source.empty_corpus_error() else {
            unreachable!("empty_corpus_error builds EmptyCorpus");
        };
        return Err(DataError::EmptyCorpus {
            what: format!("fewer than {seq_len} tokens for evaluation ({what})"),
        });
    }
    Ok(sequences)
}

/// A cursor's pending mask must flag each pending token.
pub(crate) fn check_pending(pending: &[u32], mask: Option<&[bool]>) -> Result<()> {
    match mask {
        Some(mask) if mask.len() != pending.len() => Err(DataError::BadCursor {
            message: format!(
                "{} pending tokens but {} loss-mask flags",
                pending.len(),
                mask.len()
            ),
        }),
        _ => Ok(()),
    }
}

/// A packer using `tokenizer`'s delimiters, or an error naming the tokenizer if it has no EOS.
fn packer_for(tokenizer: &Tokenizer, seq_len: usize) -> Result<Packer> {
    let Some(eos) = tokenizer.eos_id() else {
        return Err(DataError::Tokenizer {
            path: tokenizer.origin().to_path_buf(),
            message:
                "no end-of-text token (looked for <|endoftext|>, </s>, <eos>, <|end_of_text|>)"
                    .into(),
        });
    };
    Packer::new(seq_len, tokenizer.bos_id(), eos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOS: u32 = 0;
    const BOS: u32 = 1;

    fn drain(packer: &mut Packer) -> Vec<Vec<u32>> {
        std::iter::from_fn(|| packer.pop_sequence().map(|s| s.tokens)).collect()
    }

    #[test]
    fn masked_prefixes_travel_with_their_tokens_across_cuts() {
        let mut p = Packer::new(4, Some(BOS), EOS).unwrap().with_loss_mask();
        // Prefix 50 51 masked, text 10 11 kept; then a plain document.
        p.push_document_masking(&[50, 51, 10, 11], 2);
        p.push_document(&[20]);
        // Stream: BOS 50 51 10 | 11 EOS BOS 20 | EOS
        let first = p.pop_sequence().unwrap();
        assert_eq!(first.tokens, vec![BOS, 50, 51, 10]);
        assert_eq!(first.loss_mask, Some(vec![true, false, false, true]));
        let second = p.pop_sequence().unwrap();
        assert_eq!(second.loss_mask, Some(vec![true; 4]));
        assert_eq!(p.pending(), &[EOS]);
        assert_eq!(p.pending_mask(), Some(&[true][..]));
        // A packer without a mask ignores the masked count and emits none.
        let mut plain = Packer::new(4, Some(BOS), EOS).unwrap();
        plain.push_document_masking(&[50, 51, 10, 11], 2);
        let sequence = plain.pop_sequence().unwrap();
        assert_eq!((sequence.tokens, sequence.loss_mask), (first.tokens, None));
    }

    #[test]
    fn eos_separates_documents_and_stream_is_cut_exactly() {
        let mut p = Packer::new(4, None, EOS).unwrap();
        p.push_document(&[10, 11, 12]);
        p.push_document(&[20, 21]);
        p.push_document(&[30]);
        // Stream: 10 11 12 0 20 21 0 30 0
        assert_eq!(
            drain(&mut p),
            vec![vec![10, 11, 12, EOS], vec![20, 21, EOS, 30]]
        );
        assert_eq!(p.pending(), &[EOS]);
    }

    #[test]
    fn bos_opens_each_document_when_present() {
        let mut p = Packer::new(3, Some(BOS), EOS).unwrap();
        p.push_document(&[10, 11]);
        p.push_document(&[20]);
        assert_eq!(drain(&mut p), vec![vec![BOS, 10, 11], vec![EOS, BOS, 20]]);
        assert_eq!(p.pending(), &[EOS]);
    }

    #[test]
    fn empty_documents_contribute_nothing() {
        let mut p = Packer::new(2, Some(BOS), EOS).unwrap();
        p.push_document(&[]);
        assert!(p.pending().is_empty());
        p.push_document(&[5]);
        p.push_document(&[]);
        assert_eq!(drain(&mut p), vec![vec![BOS, 5]]);
        assert_eq!(p.pending(), &[EOS]);
    }

    #[test]
    fn long_document_spans_many_sequences_without_loss() {
        let mut p = Packer::new(7, None, EOS).unwrap();
        let doc: Vec<u32> = (100..1100).collect();
        p.push_document(&doc);
        let mut stream: Vec<u32> = drain(&mut p).concat();
        assert!(p.pending().len() < 7);
        stream.extend_from_slice(p.pending());
        let mut expected = doc.clone();
        expected.push(EOS);
        assert_eq!(stream, expected);
    }

    #[test]
    fn set_pending_restores_the_partial_sequence() {
        let mut a = Packer::new(3, None, EOS).unwrap();
        a.push_document(&[1, 2, 3, 4]);
        a.pop_sequence();
        let mut b = Packer::new(3, None, EOS).unwrap();
        b.set_pending(a.pending());
        a.push_document(&[7]);
        b.push_document(&[7]);
        assert_eq!(drain(&mut a), drain(&mut b));
    }

    #[test]
    fn zero_seq_len_is_rejected() {
        assert!(matches!(
            Packer::new(0, None, EOS),
            Err(DataError::InvalidOption {
                name: "seq_len",
                ..
            })
        ));
    }
}
