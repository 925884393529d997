//! A fixed-capacity uniform sample of a stream (Vitter's Algorithm R, "Random Sampling with a
//! Reservoir", 1985): after `n` offers every offered item is held with probability
//! `capacity / n`. Replay buffers are built on it.

use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// A reservoir sample of at most `capacity` items, with its own random stream. The whole value
/// (items, count, RNG) serialises, so a checkpointed buffer continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservoir<T> {
    capacity: usize,
    seen: u64,
    items: Vec<T>,
    rng: SplitMix64,
}

impl<T: Clone> Reservoir<T> {
    /// An empty reservoir holding at most `capacity` items.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            capacity,
            seen: 0,
            items: Vec::with_capacity(capacity.min(4096)),
            rng: SplitMix64::new(seed),
        }
    }

    /// Offer one item of the stream.
    pub fn offer(&mut self, item: &T) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(item.clone());
        } else if self.capacity > 0 {
            let slot = self.rng.below(self.seen);
            if (slot as usize) < self.capacity {
                self.items[slot as usize] = item.clone();
            }
        }
    }

    /// `n` items drawn uniformly with replacement; empty when the reservoir is.
    pub fn sample(&mut self, n: usize) -> Vec<T> {
        if self.items.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|_| self.items[self.rng.below(self.items.len() as u64) as usize].clone())
            .collect()
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The held items.
    pub fn items(&self) -> &[T] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_never_exceeded() {
        let mut r = Reservoir::new(5, 1);
        for i in 0..100 {
            r.offer(&i);
            assert!(r.len() <= 5);
        }
        assert_eq!(r.seen(), 100);
    }

    #[test]
    fn every_item_is_kept_with_equal_probability() {
        // 20 items into 5 slots over 4000 seeds: each item held ≈ 25% of the time. Keeping the
        // first or the last five would give 100% / 0% and fail.
        let (n, k, trials) = (20usize, 5usize, 4000u64);
        let mut held = vec![0u32; n];
        for seed in 0..trials {
            let mut r = Reservoir::new(k, seed);
            (0..n).for_each(|i| r.offer(&i));
            r.items().iter().for_each(|&i| held[i] += 1);
        }
        for (i, &count) in held.iter().enumerate() {
            let freq = count as f64 / trials as f64;
            assert!((freq - 0.25).abs() < 0.035, "item {i} held {freq}");
        }
    }

    #[test]
    fn a_restored_reservoir_continues_identically() {
        let mut a = Reservoir::new(3, 9);
        (0..10).for_each(|i| a.offer(&i));
        let json = serde_json::to_string(&a).unwrap();
        let mut b: Reservoir<i32> = serde_json::from_str(&json).unwrap();
        (10..20).for_each(|i| {
            a.offer(&i);
            b.offer(&i);
        });
        assert_eq!(a.sample(8), b.sample(8));
        assert_eq!(a, b);
    }
}
