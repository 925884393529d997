//! Log-likelihood requests as lm-eval's `HFLM` tokenises and scores them
//! (`lm_eval/api/model.py`'s `_encode_pair` and `loglikelihood`, `lm_eval/models/huggingface.py`'s
//! `loglikelihood_rolling` and `_loglikelihood_tokens`, `lm_eval/utils.py`'s rolling windows),
//! batched: requests sorted longest first (lm-eval's `Collator` order), right-padded, and their
//! scores returned in input order. Padding sits after every scored position of a causal model,
//! so it cannot change a score.

use super::TextEncoder;
use super::error::TaskError;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use cpt_core::{TaskModel, TokenBatch};

/// Token ids of one request: the context and the continuation it conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Context tokens (at least one).
    pub context: Vec<u32>,
    /// Continuation tokens to score (at least one).
    pub continuation: Vec<u32>,
}

/// Score of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestScore {
    /// Summed natural-log probability of the continuation.
    pub loglik: f64,
    /// Whether every continuation token is the model's argmax.
    pub greedy: bool,
}

/// Batch size and context window of scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreSettings {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// The model's context length (`max_position_embeddings`): a longer context loses its
    /// oldest tokens, and rolling windows are this long, as lm-eval's `max_length`.
    pub max_length: usize,
}

/// `(context, continuation)` to tokens as lm-eval does: trailing whitespace of the context moves
/// to the continuation; the continuation's tokens are those of `context + continuation` after
/// the context's own; an empty context becomes `[prefix_token]` (or the continuation's first
/// token, when that is the prefix token).
pub fn encode_pair(
    encoder: &dyn TextEncoder,
    context: &str,
    continuation: &str,
) -> Result<TokenRequest, TaskError> {
    if context.is_empty() {
        let tokens = encoder.encode(continuation)?;
        let prefix = encoder.prefix_token();
        return Ok(if tokens.first() == Some(&prefix) {
            TokenRequest {
                context: tokens[..1].to_vec(),
                continuation: tokens[1..].to_vec(),
            }
        } else {
            TokenRequest {
                context: vec![prefix],
                continuation: tokens,
            }
        });
    }
    // Python's `str.rstrip()` strips Unicode whitespace, as `char::is_whitespace` does.
    let kept = context.trim_end_matches(char::is_whitespace);
    let (context, continuation) = if kept.len() < context.len() {
        (kept, format!("{}{continuation}", &context[kept.len()..]))
    } else {
        (context, continuation.to_string())
    };
    let whole = encoder.encode(&format!("{context}{continuation}"))?;
    let context_tokens = encoder.encode(context)?;
    let split = context_tokens.len().min(whole.len());
    Ok(TokenRequest {
        continuation: whole[split..].to_vec(),
        context: context_tokens,
    })
}

/// lm-eval's `get_rolling_token_windows(tokens, prefix, max_length, context_len=1)` made
/// disjoint (`make_disjoint_window`): every token is scored once, the first window conditioned
/// on `prefix` and each later one on the `max_length` tokens before it (fewer when the window
/// is short).
pub fn rolling_windows(tokens: &[u32], prefix: u32, max_length: usize) -> Vec<TokenRequest> {
    assert!(max_length >= 1, "a window holds at least one token");
    let mut windows = Vec::new();
    if tokens.is_empty() {
        return windows;
    }
    let first = max_length.min(tokens.len());
    windows.push(TokenRequest {
        context: vec![prefix],
        continuation: tokens[..first].to_vec(),
    });
    let mut predicted = first;
    while predicted < tokens.len() {
        let pred_len = max_length.min(tokens.len() - predicted);
        let end = predicted + pred_len;
        // The window's input is tokens[end - max_length - 1 .. end - 1]; without the last
        // pred_len - 1 of them (which are predicted) the context is what comes before.
        let start = end.saturating_sub(max_length + 1);
        windows.push(TokenRequest {
            context: tokens[start..predicted].to_vec(),
            continuation: tokens[predicted..end].to_vec(),
        });
        predicted = end;
    }
    windows
}

/// Score every request with `model`, `settings.batch_size` at a time, longest first; scores come
/// back in the order of `requests`. `progress` sees (requests scored, total) after each batch.
///
/// Each input is `(context + continuation)[-(max_length + 1)..][..-1]`, as lm-eval's: contexts
/// that do not fit lose their oldest tokens. Panics if a request has no context or no
/// continuation token, or a continuation longer than `max_length` (lm-eval asserts the same).
pub fn score_requests<B: Backend, M: TaskModel<B, Batch = TokenBatch>>(
    model: &M,
    requests: &[TokenRequest],
    settings: &ScoreSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<RequestScore> {
    assert!(settings.batch_size >= 1, "batch_size must be at least 1");
    let mut order: Vec<usize> = (0..requests.len()).collect();
    let whole = |i: usize| {
        let r = &requests[i];
        (
            std::cmp::Reverse(r.context.len() + r.continuation.len()),
            r.context.iter().chain(&r.continuation),
        )
    };
    order.sort_by(|&a, &b| {
        let (len_a, toks_a) = whole(a);
        let (len_b, toks_b) = whole(b);
        len_a.cmp(&len_b).then_with(|| toks_a.cmp(toks_b))
    });
    let mut scores = vec![
        RequestScore {
            loglik: 0.0,
            greedy: false
        };
        requests.len()
    ];
    let mut done = 0;
    for chunk in order.chunks(settings.batch_size) {
        let batch: Vec<&TokenRequest> = chunk.iter().map(|&i| &requests[i]).collect();
        for (&i, score) in chunk
            .iter()
            .zip(score_batch(model, &batch, settings.max_length))
        {
            scores[i] = score;
        }
        done += chunk.len();
        progress(done, requests.len());
    }
    scores
}

/// One forward pass over right-padded inputs; only the scored positions are normalised.
fn score_batch<B: Backend, M: TaskModel<B, Batch = TokenBatch>>(
    model: &M,
    batch: &[&TokenRequest],
    max_length: usize,
) -> Vec<RequestScore> {
    let inputs: Vec<Vec<u32>> = batch
        .iter()
        .map(|r| {
            assert!(
                !r.context.is_empty(),
                "a request has at least one context token"
            );
            assert!(
                !r.continuation.is_empty(),
                "a request scores at least one token"
            );
            assert!(
                r.continuation.len() <= max_length,
                "a continuation of {} tokens does not fit in max_length {max_length}",
                r.continuation.len()
            );
            let whole: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
            let window = &whole[whole.len().saturating_sub(max_length + 1)..];
            window[..window.len() - 1].to_vec()
        })
        .collect();
    let seq = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let padded: Vec<Vec<u32>> = inputs
        .iter()
        .map(|input| {
            let mut row = input.clone();
            row.resize(seq, 0);
            row
        })
        .collect();
    let logits = model
        .forward_step(&TokenBatch::from_sequences(&padded))
        .logits
        .expect("a language model returns logits");
    let [rows, positions, vocab] = logits.dims();
    debug_assert_eq!((rows, positions), (batch.len(), seq));
    let device = logits.device();
    // The logits row predicting continuation token j of request r sits at input position
    // len(input) - len(continuation) + j.
    let mut flat_rows = Vec::new();
    let mut targets = Vec::new();
    for (r, (request, input)) in batch.iter().zip(&inputs).enumerate() {
        let first = input.len() - request.continuation.len();
        for (j, &token) in request.continuation.iter().enumerate() {
            flat_rows.push((r * seq + first + j) as i64);
            targets.push(token as i64);
        }
    }
    let n = flat_rows.len();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(flat_rows, [n]), &device);
    let target = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let scored = logits.reshape([rows * positions, vocab]).select(0, index);
    let argmax: Vec<i64> = scored
        .clone()
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .into_vec()
        .expect("argmax ids");
    let picked: Vec<f32> = log_softmax(scored, 1)
        .gather(1, target.clone())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 log-probabilities");
    let targets: Vec<i64> = target.into_data().convert::<i64>().into_vec().expect("ids");
    let mut out = Vec::with_capacity(batch.len());
    let mut at = 0;
    for request in batch {
        let len = request.continuation.len();
        out.push(RequestScore {
            loglik: picked[at..at + len].iter().map(|&p| p as f64).sum(),
            greedy: argmax[at..at + len] == targets[at..at + len],
        });
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per byte, prefix 0.
    struct Bytes;

    impl TextEncoder for Bytes {
        fn encode(&self, text: &str) -> Result<Vec<u32>, TaskError> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn prefix_token(&self) -> u32 {
            0
        }
    }

    #[test]
    fn trailing_context_whitespace_moves_to_the_continuation() {
        let r = encode_pair(&Bytes, "Q: a \n", "b").unwrap();
        assert_eq!(r.context, b"Q: a".map(u32::from));
        assert_eq!(r.continuation, b" \nb".map(u32::from));
    }

    #[test]
    fn empty_context_is_the_prefix_token() {
        let r = encode_pair(&Bytes, "", "ab").unwrap();
        assert_eq!((r.context, r.continuation), (vec![0], vec![97, 98]));
        let r = encode_pair(&Bytes, "", "\0ab").unwrap();
        assert_eq!((r.context, r.continuation), (vec![0], vec![97, 98]));
    }

    /// lm_eval.utils.get_rolling_token_windows + make_disjoint_window on range(1, 11) with
    /// prefix 0, max_seq_len 4 and 3 (values printed by lm_eval 0.4.13).
    #[test]
    fn rolling_windows_match_lm_eval() {
        let tokens: Vec<u32> = (1..=10).collect();
        let windows: Vec<(Vec<u32>, Vec<u32>)> = rolling_windows(&tokens, 0, 4)
            .into_iter()
            .map(|w| (w.context, w.continuation))
            .collect();
        assert_eq!(
            windows,
            [
                (vec![0], vec![1, 2, 3, 4]),
                (vec![4], vec![5, 6, 7, 8]),
                (vec![6, 7, 8], vec![9, 10]),
            ]
        );
        let windows: Vec<(Vec<u32>, Vec<u32>)> = rolling_windows(&tokens, 0, 3)
            .into_iter()
            .map(|w| (w.context, w.continuation))
            .collect();
        assert_eq!(
            windows,
            [
                (vec![0], vec![1, 2, 3]),
                (vec![3], vec![4, 5, 6]),
                (vec![6], vec![7, 8, 9]),
                (vec![7, 8, 9], vec![10]),
            ]
        );
        assert!(rolling_windows(&[], 0, 4).is_empty());
    }
}
