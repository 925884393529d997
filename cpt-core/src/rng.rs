//! A tiny, portable, seedable random number generator whose whole state is one `u64`.
//!
//! cpt checkpoints every random state it owns, so the generator must serialise trivially and
//! produce the same stream on every platform and backend. SplitMix64 (Steele, Lea & Flood,
//! "Fast splittable pseudorandom number generators", 2014) does both in a few lines.

use serde::{Deserialize, Serialize};

/// SplitMix64 generator. Its state is a plain `u64`, saved verbatim in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for a named sub-stream of `seed` (e.g. `derive(seed, &[epoch, shard])`), so
    /// that independent consumers never share draws and each can be recreated from its key.
    pub fn derive(seed: u64, key: &[u64]) -> Self {
        let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
        for &k in key {
            state = mix(state ^ mix(k.wrapping_add(0x9e37_79b9_7f4a_7c15)));
        }
        Self { state }
    }

    /// The full state, to be stored in a checkpoint.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// A uniform draw in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A uniform integer in `[0, n)`; `n` must be positive. Uses Lemire's multiply-shift with
    /// rejection so that no value is favoured.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no valid value");
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = (self.next_u64() as u128) * (n as u128);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates shuffle of `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A seeded permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        self.shuffle(&mut order);
        order
    }
}

/// The first key of every sub-stream drawn from the run seed, named once so that no two
/// consumers share draws by accident. A new consumer adds its domain here. Values are arbitrary
/// but fixed: changing one changes every run that uses it.
pub mod domain {
    /// Order of an experience's training data: `[TRAINING_DATA, experience, source]`.
    pub const TRAINING_DATA: u64 = 0xda7a;
    /// Order of the distillation reference data: `[DISTILL_REFERENCE, 0]`.
    pub const DISTILL_REFERENCE: u64 = 0x4ef;
    /// Patch masks of MAE's reconstruction evaluation: `[MAE_EVAL_MASKS]`.
    pub const MAE_EVAL_MASKS: u64 = 0xe7a1;
    /// Seed of the strategy at position `i` of `strategies`: `[STRATEGY, i]`.
    pub const STRATEGY: u64 = 0x57a7;
    /// Backend RNG before a strategy hook: `[global_step, experience, started, HOOK]` (the
    /// domain comes last here: the step-level key is `[global_step]` alone).
    pub const HOOK: u64 = 0x400c;
    /// Training-image augmentation: `[AUGMENT, epoch, row]` under the stream's seed (apart from
    /// the shuffle's `[epoch, unit]` keys).
    pub const AUGMENT: u64 = 0x6175_676d_656e_7401;
    /// New vocabulary rows drawn at a resize (`model.resize_vocab.init = "normal"`):
    /// `[RESIZE_VOCAB, stable_hash(parameter path)]`.
    pub const RESIZE_VOCAB: u64 = 0x7e51_2e00;
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit FNV-1a hash of bytes: for ids that must not change between Rust versions
/// (std's `DefaultHasher` gives no such promise).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_reference_splitmix64_stream() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn restoring_state_restores_stream() {
        let mut a = SplitMix64::new(42);
        a.next_u64();
        let mut b = SplitMix64::new(a.state());
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn derived_streams_differ_by_key() {
        let a = SplitMix64::derive(1, &[0]).next_u64();
        let b = SplitMix64::derive(1, &[1]).next_u64();
        let c = SplitMix64::derive(2, &[0]).next_u64();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn normal_draws_have_unit_variance() {
        let mut rng = SplitMix64::new(3);
        let xs: Vec<f64> = (0..20_000).map(|_| rng.next_normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.04,
            "{mean} {var}"
        );
    }

    proptest! {
        #[test]
        fn permutation_is_a_bijection(seed in any::<u64>(), n in 0usize..200) {
            let mut p = SplitMix64::new(seed).permutation(n);
            p.sort_unstable();
            prop_assert_eq!(p, (0..n).collect::<Vec<_>>());
        }

        #[test]
        fn below_stays_in_range(seed in any::<u64>(), n in 1u64..1000) {
            let mut rng = SplitMix64::new(seed);
            for _ in 0..20 { prop_assert!(rng.below(n) < n); }
        }
    }
}
