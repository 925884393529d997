//! [`FusedOps`] kernels for burn's CPU backend `flex`: each operation is one pass over each row,
//! rows split over rayon's threads (the composites run one single-threaded sweep per op).
//! Tensors of a dtype other than f32 fall back to the composites.

use super::{AdamWScalars, FusedOps, composite};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// Rows per rayon task: enough work per task that scheduling stays negligible.
const MIN_ROWS_PER_TASK: usize = 16;

/// The dimensions and f32 values of a float tensor, row-major.
fn f32_rows(t: &FlexTensor) -> (Vec<usize>, FlexTensor) {
    let t = t.to_contiguous();
    (t.layout().shape().to_vec(), t)
}

/// Token ids of an int tensor, whatever its integer width.
fn ids(t: &IntTensor<Flex>) -> Vec<usize> {
    let t = t.to_contiguous();
    match t.dtype() {
        DType::I64 => t.storage::<i64>().iter().map(|&v| v as usize).collect(),
        DType::I32 => t.storage::<i32>().iter().map(|&v| v as usize).collect(),
        DType::U32 => t.storage::<u32>().iter().map(|&v| v as usize).collect(),
        other => panic!("cross_entropy: targets must be integers, got {other:?}"),
    }
}

fn tensor(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

impl FusedOps for Flex {
    fn causal_softmax(scores: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        if scores.dtype() != DType::F32 {
            return composite::causal_softmax::<Flex>(scores, scale);
        }
        let (dims, scores) = f32_rows(&scores);
        let (queries, keys) = (dims[1], dims[2]);
        let input = scores.storage::<f32>();
        let scale = scale as f32;
        let mut out = vec![0.0f32; input.len()];
        out.par_chunks_mut(keys)
            .zip(input.par_chunks(keys))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (out, x))| {
                let visible = row % queries + (keys - queries) + 1;
                let (out, x) = (&mut out[..visible], &x[..visible]);
                let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
                let mut sum = 0.0f32;
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = (v * scale - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                out.iter_mut().for_each(|o| *o *= inv);
            });
        tensor(out, dims)
    }

    fn causal_softmax_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        if probs.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return composite::causal_softmax_backward::<Flex>(probs, grad, scale);
        }
        let (dims, probs) = f32_rows(&probs);
        let (_, grad) = f32_rows(&grad);
        let keys = dims[2];
        let (p, g) = (probs.storage::<f32>(), grad.storage::<f32>());
        let scale = scale as f32;
        let mut out = vec![0.0f32; p.len()];
        out.par_chunks_mut(keys)
            .zip(p.par_chunks(keys).zip(g.par_chunks(keys)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(out, (p, g))| {
                // Hidden positions have p = 0, so they contribute nothing and get 0.
                let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                for ((o, &p), &g) in out.iter_mut().zip(p).zip(g) {
                    *o = scale * p * (g - dot);
                }
            });
        tensor(out, dims)
    }

    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if logits.dtype() != DType::F32 {
            return composite::cross_entropy::<Flex>(logits, targets);
        }
        let (dims, logits) = f32_rows(&logits);
        let (rows, vocab) = (dims[0], dims[1]);
        let x = logits.storage::<f32>();
        let targets = ids(&targets);
        let (loss, logsumexp): (Vec<f32>, Vec<f32>) = x
            .par_chunks(vocab)
            .zip(targets.par_iter())
            .with_min_len(MIN_ROWS_PER_TASK)
            .map(|(row, &target)| {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                // The sum of up to ~10⁵ exponentials is accumulated in f64: an f32 running sum
                // drifts by ~1e-5 relative over a 49k vocabulary.
                let sum: f64 = row.iter().map(|&v| (v - max).exp() as f64).sum();
                let lse = max + (sum.ln() as f32);
                (lse - row[target], lse)
            })
            .unzip();
        (tensor(loss, vec![rows]), tensor(logsumexp, vec![rows]))
    }

    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        logsumexp: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if logits.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return composite::cross_entropy_backward::<Flex>(logits, logsumexp, targets, grad);
        }
        let (dims, logits) = f32_rows(&logits);
        let vocab = dims[1];
        let (_, lse) = f32_rows(&logsumexp);
        let (_, grad) = f32_rows(&grad);
        let x = logits.storage::<f32>();
        let (lse, g) = (lse.storage::<f32>(), grad.storage::<f32>());
        let targets = ids(&targets);
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(vocab)
            .zip(x.par_chunks(vocab))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(r, (out, row))| {
                let (lse, g) = (lse[r], g[r]);
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = g * (v - lse).exp();
                }
                out[targets[r]] -= g;
            });
        tensor(out, dims)
    }

    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        c: AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let all_f32 = [&param, &grad, &exp_avg, &exp_avg_sq]
            .iter()
            .all(|t| t.dtype() == DType::F32);
        if !all_f32 {
            return composite::adamw_step::<Flex>(param, grad, exp_avg, exp_avg_sq, c);
        }
        let dims = param.layout().shape().to_vec();
        let (p, g) = (f32_rows(&param).1, f32_rows(&grad).1);
        let (m, v) = (f32_rows(&exp_avg).1, f32_rows(&exp_avg_sq).1);
        let mut new_p = p.storage::<f32>().to_vec();
        let mut new_m = m.storage::<f32>().to_vec();
        let mut new_v = v.storage::<f32>().to_vec();
        // The same f32 operations in the same order as the composite, one pass instead of 14.
        let (beta1, beta2) = (c.beta1 as f32, c.beta2 as f32);
        let (one_minus_beta1, one_minus_beta2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let bias1 = 1.0 - c.beta1.powi(c.step);
        let bias2_sqrt = ((1.0 - c.beta2.powi(c.step)).sqrt()) as f32;
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let step_size = (c.lr / bias1) as f32;
        let eps = c.eps as f32;
        let decays = c.weight_decay != 0.0;
        const CHUNK: usize = 16 * 1024;
        new_p
            .par_chunks_mut(CHUNK)
            .zip(new_m.par_chunks_mut(CHUNK))
            .zip(new_v.par_chunks_mut(CHUNK))
            .zip(g.storage::<f32>().par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let g = g[i];
                    m[i] = m[i] * beta1 + g * one_minus_beta1;
                    v[i] = v[i] * beta2 + (g * g) * one_minus_beta2;
                    let denom = v[i].sqrt() / bias2_sqrt + eps;
                    let decayed = if decays { p[i] * decay } else { p[i] };
                    p[i] = decayed - (m[i] / denom) * step_size;
                }
            });
        (
            tensor(new_p, dims.clone()),
            tensor(new_m, dims.clone()),
            tensor(new_v, dims),
        )
    }
}
