//! Few-shot example selection as lm-eval's samplers (`lm_eval/api/samplers.py`) make it,
//! including which examples its `default` sampler draws: Python's `random.Random(seed)`
//! (MT19937 seeded by `init_by_array`) and `Random.sample`, reproduced draw for draw, so that
//! few-shot prompts are byte-identical to lm-eval's for the same `--fewshot_random_seed`.
//!
//! The generator is created once per task and advances through the evaluated documents in
//! order, as lm-eval's sampler does in `build_all_requests`.

use super::config::SamplerKind;
use super::data::Doc;

/// Picks the few-shot examples of each evaluated document from a pool.
pub(crate) struct FewshotSampler {
    kind: SamplerKind,
    rng: PyRandom,
}

impl FewshotSampler {
    /// A sampler of `kind` whose draws start from `seed`.
    pub fn new(kind: SamplerKind, seed: u64) -> Self {
        Self {
            kind,
            rng: PyRandom::new(seed),
        }
    }

    /// Indices into `pool` of `n` examples for one document; `eval_doc` (when lm-eval would
    /// pass it) is never among them, nor any pool document equal to it.
    ///
    /// `default`: `sample(pool, n)`, or with `eval_doc`: `sample(pool, n + 1)` minus copies of
    /// the document, cut to `n`, and when more than one copy was drawn, `sample(pool without
    /// the document, n)`. `first_n`: the first `n` of the pool without the document.
    pub fn sample(
        &mut self,
        n: usize,
        pool: &[Doc],
        eval_doc: Option<&Doc>,
    ) -> Result<Vec<usize>, String> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let is_eval = |i: &usize| eval_doc.is_some_and(|doc| &pool[*i] == doc);
        match self.kind {
            SamplerKind::FirstN => {
                let kept: Vec<usize> = (0..pool.len()).filter(|i| !is_eval(i)).collect();
                if kept.len() < n {
                    return Err(format!(
                        "{n} few-shot examples requested, the pool has {}",
                        kept.len()
                    ));
                }
                Ok(kept[..n].to_vec())
            }
            SamplerKind::Default => {
                let draw = n + usize::from(eval_doc.is_some());
                if draw > pool.len() {
                    return Err(format!(
                        "drawing {n} few-shot examples takes {draw} pool documents, the pool has {}",
                        pool.len()
                    ));
                }
                let mut picked: Vec<usize> = self
                    .rng
                    .sample(pool.len(), draw)
                    .into_iter()
                    .filter(|i| !is_eval(i))
                    .collect();
                picked.truncate(n);
                if picked.len() < n {
                    let kept: Vec<usize> = (0..pool.len()).filter(|i| !is_eval(i)).collect();
                    if kept.len() < n {
                        return Err(format!(
                            "{n} few-shot examples requested, the pool has {} besides the document",
                            kept.len()
                        ));
                    }
                    picked = self
                        .rng
                        .sample(kept.len(), n)
                        .into_iter()
                        .map(|i| kept[i])
                        .collect();
                }
                Ok(picked)
            }
        }
    }
}

/// CPython's `random.Random` for integer seeds: MT19937 and the parts of `Random` that
/// `sample` uses.
pub(crate) struct PyRandom {
    state: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)`: `init_by_array` over the seed's 32-bit words, low word first.
    pub fn new(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut rng = Self {
            state: [0; 624],
            index: 624,
        };
        rng.init_by_array(&key);
        rng
    }

    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..624 {
            let prev = self.state[i - 1];
            self.state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let mt = &mut self.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                mt[0] = mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let prev = mt[i - 1];
            mt[i] =
                (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                mt[0] = mt[623];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % 624] & 0x7fff_ffff);
                let mut next = self.state[(k + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    next ^= 0x9908_b0df;
                }
                self.state[k] = next;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for `1 <= k <= 32`.
    fn bits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow_with_getrandbits(n)`: rejection sampling on `n.bit_length()` bits.
    fn below(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.bits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `sample(range(n), k)`: a partial shuffle of a pool for small populations, rejection of
    /// repeats from a set for large ones, with CPython's threshold between the two.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            setsize += 4usize.pow(((k * 3) as f64).log(4.0).ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            (0..k)
                .map(|i| {
                    let j = self.below(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::new();
            (0..k)
                .map(|_| {
                    loop {
                        let j = self.below(n);
                        if selected.insert(j) {
                            return j;
                        }
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected values printed by CPython 3.11:
    //   r = random.Random(1234); [r.getrandbits(32) for _ in range(3)]
    //   r = random.Random(1234); r.sample(range(10), 3), r.sample(range(10), 3),
    //       r.sample(range(100), 7), r.sample(range(1), 1)
    //   random.Random(2**40 + 5).sample(range(30), 4); random.Random(0).sample(range(5), 5)
    #[test]
    fn draws_match_cpython() {
        let mut r = PyRandom::new(1234);
        let words: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(words, [4150886329, 3342196574, 1892932127]);
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(10, 3), [7, 1, 0]);
        assert_eq!(r.sample(10, 3), [1, 0, 9]);
        assert_eq!(r.sample(100, 7), [12, 98, 45, 30, 2, 3, 44]);
        assert_eq!(r.sample(1, 1), [0]);
        assert_eq!(PyRandom::new((1 << 40) + 5).sample(30, 4), [16, 8, 21, 29]);
        assert_eq!(PyRandom::new(0).sample(5, 5), [3, 4, 0, 1, 2]);
    }

    fn docs(n: usize) -> Vec<Doc> {
        (0..n)
            .map(|i| json!({ "i": i }).as_object().unwrap().clone())
            .collect()
    }

    #[test]
    fn first_n_skips_the_evaluated_document() {
        let pool = docs(5);
        let mut sampler = FewshotSampler::new(SamplerKind::FirstN, 1234);
        assert_eq!(sampler.sample(2, &pool, None).unwrap(), [0, 1]);
        assert_eq!(sampler.sample(2, &pool, Some(&pool[0])).unwrap(), [1, 2]);
        assert!(sampler.sample(5, &pool, Some(&pool[0])).is_err());
    }

    #[test]
    fn default_never_returns_the_evaluated_document() {
        let pool = docs(4);
        let mut sampler = FewshotSampler::new(SamplerKind::Default, 1234);
        for _ in 0..50 {
            let picked = sampler.sample(3, &pool, Some(&pool[2])).unwrap();
            assert_eq!(picked.len(), 3);
            assert!(!picked.contains(&2));
        }
        assert!(sampler.sample(4, &pool, Some(&pool[2])).is_err());
    }
}
