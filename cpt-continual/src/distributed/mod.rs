//! Data parallelism behind one small interface.
//!
//! Every peer holds a full replica of the model, the strategies and the data streams. Each step
//! every peer assembles the same global micro-batches (fresh items plus replayed ones, so replay
//! buffers stay identical everywhere), trains on its own contiguous slice of each, and the
//! gradients, the step's losses and the stop flag are averaged in one all-reduce; then every peer
//! applies the same update. The result equals one device training on the global batch up to
//! float summation order, a resumed run continues the same data order whatever the number of
//! peers, and a checkpoint written by rank 0 restores every peer.
//!
//! The trainer only sees [`PeerGroup`]; `collective` implements it on burn 0.21's
//! collective engine (feature `collective`). Another engine (burn's NCCL backend, say) would
//! be one more implementation, with no change to the trainer or the strategies.

#[cfg(feature = "collective")]
pub mod collective;

use crate::error::{ContinualError, Result};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// One peer's view of its data-parallel group.
pub trait PeerGroup<B: Backend>: Send {
    /// This peer's rank, `0..size()`. Rank 0 writes logs, evaluations and checkpoints.
    fn rank(&self) -> usize;

    /// Number of peers over all processes and devices.
    fn size(&self) -> usize;

    /// The element-wise mean of `values` over all peers; every peer receives the same result.
    /// Blocks until every peer has called it.
    fn all_reduce_mean(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>>;

    /// Leave the group once the stream is trained through (every peer calls it).
    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

/// The slice of a global batch of `batch_size` items that peer `rank` of `size` trains on.
pub fn shard(batch_size: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let per_peer = batch_size / size;
    rank * per_peer..(rank + 1) * per_peer
}

/// Check that a global batch splits evenly over `size` peers.
pub fn check_batch(batch_size: usize, size: usize) -> Result<()> {
    if size == 0 || !batch_size.is_multiple_of(size) {
        return Err(ContinualError::invalid(
            "train.batch_size",
            &format!("{batch_size} (the global batch) must divide by the number of peers ({size})"),
        ));
    }
    Ok(())
}

/// Concatenate flat tensors into one for a single collective call, and split the result back.
pub struct Packed<B: Backend> {
    lengths: Vec<usize>,
    flat: Tensor<B, 1>,
}

impl<B: Backend> Packed<B> {
    /// Pack `parts` (every one non-empty), in order.
    pub fn new(parts: Vec<Tensor<B, 1>>) -> Self {
        let lengths = parts.iter().map(|t| t.dims()[0]).collect();
        Self {
            lengths,
            flat: Tensor::cat(parts, 0),
        }
    }

    /// The mean of the packed tensors over `peers`, split back into the original parts.
    pub fn all_reduce_mean(self, peers: &dyn PeerGroup<B>) -> Result<Vec<Tensor<B, 1>>> {
        let reduced = peers.all_reduce_mean(self.flat)?;
        let mut parts = Vec::with_capacity(self.lengths.len());
        let mut start = 0;
        for length in self.lengths {
            parts.push(reduced.clone().narrow(0, start, length));
            start += length;
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_batch() {
        let slices: Vec<_> = (0..4).map(|r| shard(8, r, 4)).collect();
        assert_eq!(slices, vec![0..2, 2..4, 4..6, 6..8]);
        assert!(check_batch(8, 4).is_ok());
        let message = check_batch(6, 4).unwrap_err().to_string();
        assert!(
            message.contains("train.batch_size") && message.contains("4"),
            "{message}"
        );
    }
}
