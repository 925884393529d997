//! Text generation with a key/value cache: greedy, or sampled with temperature, top-k and
//! top-p (nucleus) filtering from a seeded RNG.

use crate::llama::{KvCache, LlamaForCausalLM};
use burn::tensor::{Int, Tensor, TensorData};
use cpt_core::{FusedOps, SplitMix64};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    /// Seed of the sampling RNG.
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Continue `prompt` by `max_new_tokens` tokens (stopping early at `stop`, which is included).
/// Returns only the new tokens.
pub fn generate<B: FusedOps>(
    model: &LlamaForCausalLM<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: &Sampling,
    stop: Option<u32>,
) -> Vec<u32> {
    let device = model.model.embed_tokens.weight.device();
    let ids = |ids: &[u32]| {
        let data: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &device)
    };
    let mut rng = SplitMix64::new(sampling.seed);
    let mut cache = KvCache::new(model.model.layers.len());
    let mut out = Vec::with_capacity(max_new_tokens);
    let mut input = prompt.to_vec();
    for _ in 0..max_new_tokens {
        let logits = model.forward_cached(ids(&input), &mut cache);
        let [_, seq, vocab] = logits.dims();
        let last: Vec<f32> = logits
            .narrow(1, seq - 1, 1)
            .reshape([vocab])
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 logits");
        let next = choose(&last, sampling, &mut rng);
        out.push(next);
        if Some(next) == stop {
            break;
        }
        input = vec![next];
    }
    out
}

/// Pick a token from one position's logits.
pub fn choose(logits: &[f32], sampling: &Sampling, rng: &mut SplitMix64) -> u32 {
    if sampling.temperature <= 0.0 {
        // First maximum, as torch.argmax.
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    let max = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    // Nucleus: the shortest prefix whose probability mass reaches top_p.
    let mut keep = weights.len();
    if sampling.top_p < 1.0 {
        let mut mass = 0.0;
        for (n, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= sampling.top_p {
                keep = n + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..keep].iter().sum();
    let mut draw = rng.next_f64() * kept_total;
    for (n, w) in weights[..keep].iter().enumerate() {
        if draw < *w {
            return order[n] as u32;
        }
        draw -= w;
    }
    order[keep - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            choose(&[0.1, 3.0, 3.0, -1.0], &Sampling::greedy(), &mut rng),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_limits_the_support() {
        let mut rng = SplitMix64::new(4);
        let logits = [0.0f32, 2.0, 1.0, 1.5];
        let k1 = Sampling {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 0,
        };
        assert!((0..50).all(|_| choose(&logits, &k1, &mut rng) == 1));
        // Probabilities ∝ e^0, e^2, e^1, e^1.5: tokens 1 and 3 hold ≈ 0.64 together.
        let p = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.6,
            seed: 0,
        };
        let drawn: std::collections::BTreeSet<u32> =
            (0..200).map(|_| choose(&logits, &p, &mut rng)).collect();
        assert_eq!(drawn, [1, 3].into_iter().collect());
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let mut rng = SplitMix64::new(9);
        let logits = [0.0f32, (3.0f32).ln()];
        let s = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        let ones = (0..4000)
            .filter(|_| choose(&logits, &s, &mut rng) == 1)
            .count();
        assert!((ones as f64 / 4000.0 - 0.75).abs() < 0.03, "{ones}");
    }
}
