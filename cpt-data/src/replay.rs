//! A replay buffer holding a uniform random sample of every sequence offered to it, by reservoir
//! sampling (Vitter, "Random Sampling with a Reservoir", 1985: Algorithm R).
//!
//! After `n` offers each offered sequence is in the buffer with probability `capacity / n`,
//! whatever the order of arrival, so old experiences keep their share as the stream grows.

use cpt_core::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Everything a [`ReplayBuffer`] is, for checkpoints: restoring it continues the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayState {
    /// Maximum number of sequences held.
    pub capacity: usize,
    /// The sequences held, in slot order.
    pub items: Vec<Vec<u32>>,
    /// Sequences offered so far.
    pub seen: u64,
    /// The buffer's own generator (for both replacement and sampling).
    pub rng: SplitMix64,
}

/// A fixed-capacity reservoir of token sequences; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayBuffer {
    state: ReplayState,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `capacity` sequences, with its own generator from `seed`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            state: ReplayState {
                capacity,
                items: Vec::with_capacity(capacity.min(1 << 16)),
                seen: 0,
                rng: SplitMix64::new(seed),
            },
        }
    }

    /// Offer one sequence: kept for sure while the buffer fills, then with probability
    /// `capacity / seen`, replacing a uniformly chosen slot.
    pub fn offer(&mut self, sequence: &[u32]) {
        let s = &mut self.state;
        s.seen += 1;
        if s.items.len() < s.capacity {
            s.items.push(sequence.to_vec());
            return;
        }
        let slot = s.rng.below(s.seen);
        if slot < s.capacity as u64 {
            s.items[slot as usize] = sequence.to_vec();
        }
    }

    /// `n` sequences drawn uniformly with replacement (none if the buffer is empty).
    pub fn sample(&mut self, n: usize) -> Vec<Vec<u32>> {
        let s = &mut self.state;
        if s.items.is_empty() {
            return Vec::new();
        }
        let len = s.items.len() as u64;
        (0..n)
            .map(|_| s.items[s.rng.below(len) as usize].clone())
            .collect()
    }

    /// Sequences held.
    pub fn len(&self) -> usize {
        self.state.items.len()
    }

    /// Whether no sequence is held.
    pub fn is_empty(&self) -> bool {
        self.state.items.is_empty()
    }

    /// Sequences offered so far.
    pub fn seen(&self) -> u64 {
        self.state.seen
    }

    /// Maximum number of sequences held.
    pub fn capacity(&self) -> usize {
        self.state.capacity
    }

    /// The sequences held, in slot order.
    pub fn items(&self) -> &[Vec<u32>] {
        &self.state.items
    }

    /// The whole state, for a checkpoint.
    pub fn state(&self) -> &ReplayState {
        &self.state
    }

    /// Restore a buffer from a checkpointed state, checking that it is one Algorithm R can reach.
    pub fn from_state(state: ReplayState) -> Result<Self> {
        let expected = state.seen.min(state.capacity as u64);
        if state.items.len() as u64 != expected {
            return Err(DataError::InvalidOption {
                name: "replay state",
                message: format!(
                    "{} items with capacity {} after {} offers (expected {expected})",
                    state.items.len(),
                    state.capacity,
                    state.seen
                ),
            });
        }
        Ok(Self { state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_never_exceeded() {
        let mut buffer = ReplayBuffer::new(5, 1);
        for i in 0..100u32 {
            buffer.offer(&[i]);
            assert!(buffer.len() <= 5);
            assert_eq!(buffer.len(), (i as usize + 1).min(5));
        }
        assert_eq!(buffer.seen(), 100);
    }

    #[test]
    fn every_item_is_kept_with_probability_k_over_n() {
        // Over many seeds, item i's inclusion frequency must be near k/n = 0.2 for every i.
        // "Keep the first k" gives 1.0 for items 0..10 and 0 after; "keep the last k" the
        // reverse; a reservoir without the 1/seen decay over-represents late items.
        let (k, n, trials) = (10usize, 50u32, 4000u64);
        let mut counts = vec![0u32; n as usize];
        for seed in 0..trials {
            let mut buffer = ReplayBuffer::new(k, seed);
            for i in 0..n {
                buffer.offer(&[i]);
            }
            for item in buffer.items() {
                counts[item[0] as usize] += 1;
            }
        }
        let expected = k as f64 / n as f64;
        for (i, &c) in counts.iter().enumerate() {
            let freq = c as f64 / trials as f64;
            // Binomial sd = sqrt(0.2 * 0.8 / 4000) ≈ 0.0063; 0.03 is ~4.7 sd.
            assert!(
                (freq - expected).abs() < 0.03,
                "item {i}: {freq} vs {expected}"
            );
        }
        // Early and late halves are kept equally often (catches a subtle bias in either end).
        let early: u32 = counts[..25].iter().sum();
        let late: u32 = counts[25..].iter().sum();
        let ratio = early as f64 / late as f64;
        assert!((ratio - 1.0).abs() < 0.05, "early/late ratio {ratio}");
    }

    #[test]
    fn sampling_is_uniform_over_the_buffer_and_empty_when_empty() {
        let mut buffer = ReplayBuffer::new(4, 9);
        assert!(buffer.sample(3).is_empty());
        for i in 0..4u32 {
            buffer.offer(&[i]);
        }
        let mut counts = [0u32; 4];
        for s in buffer.sample(8000) {
            counts[s[0] as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 / 8000.0 - 0.25).abs() < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn restored_state_continues_the_same_stream() {
        let mut a = ReplayBuffer::new(8, 3);
        for i in 0..30u32 {
            a.offer(&[i, i + 1]);
        }
        a.sample(5);
        let json = serde_json::to_string(a.state()).unwrap();
        let mut b = ReplayBuffer::from_state(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(a, b);
        for i in 30..80u32 {
            a.offer(&[i]);
            b.offer(&[i]);
        }
        assert_eq!(a.sample(20), b.sample(20));
        assert_eq!(a, b);
    }

    #[test]
    fn inconsistent_state_is_rejected() {
        let mut state = ReplayBuffer::new(4, 0).state().clone();
        state.seen = 10;
        assert!(ReplayBuffer::from_state(state).is_err());
    }
}
