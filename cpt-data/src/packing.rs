//! Packing documents into fixed-length sequences: each document becomes `[bos] + tokens + [eos]`
//! (BOS only where the tokenizer has one), the documents are concatenated into one stream, and
//! the stream is cut every `seq_len` tokens, so a document may span sequences and no token is
//! padding (the GPT-2/3 practice; Brown et al., "Language Models are Few-Shot Learners", 2020).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::parquet_text::{DocCursor, ParquetTextSource};
use crate::tokenizer::Tokenizer;

/// Concatenates documents' tokens and cuts them into `seq_len` chunks, keeping the leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packer {
    seq_len: usize,
    bos: Option<u32>,
    eos: u32,
    /// Tokens not yet emitted are `buffer[start..]`; the emitted prefix is dropped lazily so
    /// that cutting a very long document stays linear.
    buffer: Vec<u32>,
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
            start: 0,
        })
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Append one document's tokens (without specials); an empty document adds nothing.
    pub fn push_document(&mut self, tokens: &[u32]) {
        if tokens.is_empty() {
            return;
        }
        self.buffer.extend(self.bos);
        self.buffer.extend_from_slice(tokens);
        self.buffer.push(self.eos);
    }

    /// The next full sequence, if enough tokens are pending.
    pub fn pop_sequence(&mut self) -> Option<Vec<u32>> {
        if self.buffer.len() - self.start < self.seq_len {
            return None;
        }
        let sequence = self.buffer[self.start..self.start + self.seq_len].to_vec();
        self.start += self.seq_len;
        // Compact once the dead prefix outweighs the live tail: amortised O(1) per token.
        if self.start >= self.buffer.len() - self.start {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        Some(sequence)
    }

    /// Tokens packed but not yet emitted (a partial sequence, or more after a long document).
    pub fn pending(&self) -> &[u32] {
        &self.buffer[self.start..]
    }

    /// Replace the pending tokens (when resuming from a cursor).
    pub fn set_pending(&mut self, pending: &[u32]) {
        self.buffer.clear();
        self.buffer.extend_from_slice(pending);
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
}

/// An endless stream of packed `seq_len`-token sequences from a Parquet text source.
#[derive(Debug)]
pub struct PackedSource {
    source: ParquetTextSource,
    tokenizer: Arc<Tokenizer>,
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
        let packer = packer_for(&tokenizer, seq_len)?;
        Ok(Self {
            source,
            tokenizer,
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
    pub fn next_sequence(&mut self) -> Result<Vec<u32>> {
        let mut empty_epoch_ends = 0;
        loop {
            if let Some(sequence) = self.packer.pop_sequence() {
                return Ok(sequence);
            }
            match self.source.next_in_epoch()? {
                Some(text) => {
                    let tokens = self.tokenizer.encode(&text)?;
                    if !tokens.is_empty() && tokens.len() >= self.min_document_tokens {
                        empty_epoch_ends = 0;
                        self.packer.push_document(&tokens);
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
        }
    }

    /// Continue from `cursor`, taken from a source over the same files, options and tokenizer.
    pub fn seek(&mut self, cursor: &PackedCursor) -> Result<()> {
        self.source.seek(&cursor.doc)?;
        self.packer.set_pending(&cursor.pending);
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
    mut source: ParquetTextSource,
    tokenizer: &Tokenizer,
    seq_len: usize,
    max_sequences: usize,
) -> Result<Vec<Vec<u32>>> {
    if max_sequences == 0 {
        return Err(DataError::InvalidOption {
            name: "max_sequences",
            message: "must be at least 1".into(),
        });
    }
    let mut packer = packer_for(tokenizer, seq_len)?;
    let mut sequences = Vec::new();
    'pass: while sequences.len() < max_sequences {
        let Some(text) = source.next_in_epoch()? else {
            break;
        };
        packer.push_document(&tokenizer.encode(&text)?);
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
        std::iter::from_fn(|| packer.pop_sequence()).collect()
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
