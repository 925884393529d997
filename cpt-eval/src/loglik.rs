//! Log-likelihood scoring of continuations: the primitive behind multiple-choice benchmarks
//! (as in the LM evaluation harness).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use cpt_core::{TaskModel, TokenBatch};

/// Log-probabilities of `ids[start..]`, each given every token before it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationScore {
    /// Per scored token, natural-log probability.
    pub logprobs: Vec<f64>,
    /// Whether greedy decoding would have produced every scored token.
    pub greedy: bool,
}

impl ContinuationScore {
    /// Summed log-probability.
    pub fn total(&self) -> f64 {
        self.logprobs.iter().sum()
    }
}

/// Score `ids[start..]` under `model` (`1 <= start < ids.len()`). The model must return logits.
pub fn score_continuation<B: Backend, M: TaskModel<B, Batch = TokenBatch>>(
    model: &M,
    ids: &[u32],
    start: usize,
) -> ContinuationScore {
    assert!(
        start >= 1 && start < ids.len(),
        "score at least one token after at least one"
    );
    let out = model.forward_step(&TokenBatch::from_sequences(&[ids.to_vec()]));
    let logits = out.logits.expect("a language model returns logits");
    let [_, seq, vocab] = logits.dims();
    let log_probs: Vec<f32> = log_softmax(logits, 2)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32");
    debug_assert_eq!(seq, ids.len());
    let mut logprobs = Vec::with_capacity(ids.len() - start);
    let mut greedy = true;
    for pos in start..ids.len() {
        let row = &log_probs[(pos - 1) * vocab..pos * vocab];
        let target = ids[pos] as usize;
        logprobs.push(row[target] as f64);
        let best = row
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
        greedy &= best == target;
    }
    ContinuationScore { logprobs, greedy }
}
