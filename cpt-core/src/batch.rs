//! Batch types that cross crate walls: made by cpt-data, consumed by models.
//!
//! They hold plain host data (no backend type), so data pipelines, replay buffers and checkpoints
//! never depend on where the model runs; a model turns a batch into tensors on its own device.

use serde::{Deserialize, Serialize};

/// A batch of packed token sequences for causal language modelling.
///
/// `tokens` is row-major `[batch_size, seq_len]`; the loss predicts token `t + 1` from tokens
/// `..= t` inside each row (the Hugging Face `labels = input_ids` convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBatch {
    /// Token ids, row-major `[batch_size, seq_len]`.
    pub tokens: Vec<u32>,
    /// Number of sequences.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
}

impl TokenBatch {
    /// Stack equal-length sequences into one batch. Panics if the lengths differ, which would be a
    /// bug in the packer (it only ever emits full sequences).
    pub fn from_sequences(sequences: &[Vec<u32>]) -> Self {
        let seq_len = sequences.first().map_or(0, Vec::len);
        let mut tokens = Vec::with_capacity(seq_len * sequences.len());
        for sequence in sequences {
            assert_eq!(
                sequence.len(),
                seq_len,
                "packed sequences must share one length"
            );
            tokens.extend_from_slice(sequence);
        }
        Self {
            tokens,
            batch_size: sequences.len(),
            seq_len,
        }
    }

    /// Row `i` of the batch.
    pub fn sequence(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Tokens whose next token the loss predicts: `seq_len - 1` per row.
    pub fn predicted_tokens(&self) -> usize {
        self.batch_size * self.seq_len.saturating_sub(1)
    }
}

impl crate::model::Batch for TokenBatch {
    type Item = Vec<u32>;

    fn from_items(items: Vec<Vec<u32>>) -> Self {
        Self::from_sequences(&items)
    }

    fn into_items(self) -> Vec<Vec<u32>> {
        if self.seq_len == 0 {
            return vec![Vec::new(); self.batch_size];
        }
        self.tokens
            .chunks(self.seq_len)
            .map(<[u32]>::to_vec)
            .collect()
    }

    fn len(&self) -> usize {
        self.batch_size
    }

    fn units(&self) -> usize {
        self.batch_size * self.seq_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_rows_in_order() {
        let batch = TokenBatch::from_sequences(&[vec![1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(batch.tokens, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(batch.sequence(1), &[4, 5, 6]);
        assert_eq!(batch.predicted_tokens(), 4);
    }

    #[test]
    fn items_round_trip() {
        use crate::model::Batch;
        let rows = vec![vec![1, 2], vec![3, 4], vec![5, 6]];
        let batch = TokenBatch::from_items(rows.clone());
        assert_eq!(batch.units(), 6);
        assert_eq!(batch.into_items(), rows);
    }
}
