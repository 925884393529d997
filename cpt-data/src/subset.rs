//! A fixed, seeded subset of a corpus repeated in epochs (`subset_docs`, `epochs`): the
//! repeated-data regime of Muennighoff et al., "Scaling Data-Constrained Language Models" (2023).
//!
//! The subset is a uniform sample of `docs` documents among those the source yields (non-null,
//! non-empty, passing its filter), drawn once by reservoir sampling over one pass in file order
//! with an RNG from the seed, so it depends on the seed and the files alone. Its documents are
//! tokenized once and held in memory (subsets are meant to be small). Pass `p` visits every one
//! of them in the seeded order `derive(seed, [1, p])`; with an epoch limit `E` the stream ends
//! after `E` passes, and asking for more is an error.

use cpt_core::reservoir::Reservoir;
use cpt_core::{SplitMix64, TokenSequence};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::mixture::{SequenceSource, SourceCursor};
use crate::packing::{Conditioning, DocumentEncoder, Packer, check_pending};
use crate::parquet_text::{Document, ParquetTextSource, describe_files};
use crate::tokenizer::Tokenizer;

/// Position of a [`SubsetSource`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsetCursor {
    /// Completed passes over the subset.
    pub pass: u64,
    /// Documents of this pass already packed.
    pub position: usize,
    /// Tokens packed but not yet emitted.
    pub pending: Vec<u32>,
    /// Loss-mask flags of `pending`, when the source masks metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_mask: Option<Vec<bool>>,
}

/// One subset document, tokenized: its tokens and how many lead as a masked prefix.
#[derive(Debug)]
struct SubsetDocument {
    tokens: Vec<u32>,
    masked: usize,
}

/// Packed sequences from a fixed subset of a source's documents, pass after pass; see the
/// module docs.
#[derive(Debug)]
pub struct SubsetSource {
    documents: Vec<SubsetDocument>,
    packer: Packer,
    seed: u64,
    max_passes: Option<u64>,
    pass: u64,
    position: usize,
    /// Visiting order of `order_pass`.
    order: Vec<usize>,
    order_pass: u64,
    /// The source's files, for errors.
    what: String,
}

impl SubsetSource {
    /// Sample `docs` documents of `source` (read once, from its current position to the end of
    /// that epoch: open it unshuffled) with `seed`, encode them under `conditioning`, and pack
    /// `seq_len`-token sequences from at most `epochs` passes (`None`: endless). Fewer than
    /// `docs` documents in the source is an error naming its files.
    pub fn new(
        mut source: ParquetTextSource,
        tokenizer: &Tokenizer,
        seq_len: usize,
        conditioning: Conditioning,
        docs: usize,
        epochs: Option<u64>,
        seed: u64,
    ) -> Result<Self> {
        let what = describe_files(&source.paths());
        if docs == 0 || epochs == Some(0) {
            return Err(DataError::InvalidOption {
                name: if docs == 0 { "subset_docs" } else { "epochs" },
                message: "must be at least 1".into(),
            });
        }
        let mut reservoir: Reservoir<Document> =
            Reservoir::new(docs, SplitMix64::derive(seed, &[0]).next_u64());
        while let Some(document) = source.next_document_in_epoch()? {
            if !document.text.is_empty() {
                reservoir.offer(&document);
            }
        }
        if reservoir.len() < docs {
            return Err(DataError::InvalidOption {
                name: "subset_docs",
                message: format!(
                    "a subset of {docs} documents, but {what} holds only {} usable ones",
                    reservoir.len()
                ),
            });
        }
        let encoder = DocumentEncoder::new(tokenizer, conditioning)?;
        let mask_metadata = encoder.masks();
        let documents = reservoir
            .items()
            .iter()
            .map(|document| {
                let (tokens, prefix) = encoder.encode(tokenizer, document)?;
                let masked = if mask_metadata { prefix } else { 0 };
                Ok(SubsetDocument { tokens, masked })
            })
            .collect::<Result<Vec<_>>>()?;
        if documents.iter().all(|d| d.tokens.is_empty()) {
            return Err(DataError::EmptyCorpus {
                what: format!("no document of the subset of {what} has a token"),
            });
        }
        let mut subset = Self {
            documents,
            packer: encoder.packer(tokenizer, seq_len)?,
            seed,
            max_passes: epochs,
            pass: 0,
            position: 0,
            order: Vec::new(),
            order_pass: u64::MAX,
            what,
        };
        subset.ensure_order();
        Ok(subset)
    }

    /// Tokens one pass hands the packer (documents with their delimiters and prefixes): the
    /// subset's size in tokens.
    pub fn tokens_per_pass(&self) -> u64 {
        let delimiters = 1 + self.packer.has_bos() as u64;
        self.documents
            .iter()
            .filter(|d| !d.tokens.is_empty())
            .map(|d| d.tokens.len() as u64 + delimiters)
            .sum()
    }

    /// Documents in the subset.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// `true` for an empty subset (never: construction refuses one).
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The next sequence; an error once the epoch limit would be passed.
    pub fn next_sequence(&mut self) -> Result<TokenSequence> {
        loop {
            if let Some(sequence) = self.packer.pop_sequence() {
                return Ok(sequence);
            }
            if self.position == self.documents.len() {
                if self.max_passes.is_some_and(|max| self.pass + 1 >= max) {
                    return Err(DataError::InvalidOption {
                        name: "epochs",
                        message: format!(
                            "the subset of {} documents of {} was read {} times, the limit; \
                             raise `epochs` or lower the budget",
                            self.documents.len(),
                            self.what,
                            self.pass + 1
                        ),
                    });
                }
                self.pass += 1;
                self.position = 0;
                self.ensure_order();
            }
            let document = &self.documents[self.order[self.position]];
            self.position += 1;
            self.packer
                .push_document_masking(&document.tokens, document.masked);
        }
    }

    /// The position after the last sequence returned.
    pub fn cursor(&self) -> SubsetCursor {
        SubsetCursor {
            pass: self.pass,
            position: self.position,
            pending: self.packer.pending().to_vec(),
            pending_mask: self.packer.pending_mask().map(<[bool]>::to_vec),
        }
    }

    /// Continue from `cursor`, taken from a subset built the same way.
    pub fn seek(&mut self, cursor: &SubsetCursor) -> Result<()> {
        if cursor.position > self.documents.len() {
            return Err(DataError::BadCursor {
                message: format!(
                    "subset position {} but the subset has {} documents",
                    cursor.position,
                    self.documents.len()
                ),
            });
        }
        check_pending(&cursor.pending, cursor.pending_mask.as_deref())?;
        self.pass = cursor.pass;
        self.position = cursor.position;
        self.packer
            .set_pending_masked(&cursor.pending, cursor.pending_mask.as_deref());
        self.ensure_order();
        Ok(())
    }

    /// Compute the visiting order of the current pass if it is not the cached one.
    fn ensure_order(&mut self) {
        if self.order_pass != self.pass {
            self.order =
                SplitMix64::derive(self.seed, &[1, self.pass]).permutation(self.documents.len());
            self.order_pass = self.pass;
        }
    }
}

impl SequenceSource for SubsetSource {
    fn next_sequence(&mut self) -> Result<TokenSequence> {
        SubsetSource::next_sequence(self)
    }

    fn cursor(&self) -> SourceCursor {
        SourceCursor::Subset(SubsetSource::cursor(self))
    }

    fn seek(&mut self, cursor: &SourceCursor) -> Result<()> {
        match cursor {
            SourceCursor::Subset(c) => SubsetSource::seek(self, c),
            other => Err(DataError::BadCursor {
                message: format!("a {} cursor given to a subset source", other.kind()),
            }),
        }
    }
}
