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

/// The dimensions of a tensor and the tensor itself, contiguous (row-major) for slice access.
fn f32_rows(t: &FlexTensor) -> (Vec<usize>, FlexTensor) {
    let t = t.to_contiguous();
    (t.layout().shape().to_vec(), t)
}

/// `t` itself when it is the sole owner of exactly its contiguous f32 values, else a fresh copy
/// that is: something the caller may update in place.
fn sole_copy(t: FlexTensor, dims: &[usize]) -> FlexTensor {
    let n: usize = dims.iter().product();
    let layout = t.layout();
    let owned = t.is_unique()
        && layout.is_contiguous()
        && layout.start_offset() == 0
        && t.storage::<f32>().len() == n;
    if owned {
        t
    } else {
        tensor(t.to_contiguous().storage::<f32>().to_vec(), dims.to_vec())
    }
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

/// Whether every tensor holds f32 (the kernels' dtype; others take the composite).
fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

fn tensor(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

/// Lanes of the partial sums and maxima below: independent accumulators the compiler keeps in
/// one vector register, where a single running sum would serialise on the add latency.
const LANES: usize = 8;

/// `e^x` for the kernels' inner loops, branch-free so that loops over it vectorise (libm's
/// `expf` is one opaque call per element): Cody–Waite reduction `x = k·ln2 + r` and Cephes'
/// degree-6 polynomial for `e^r` on `|r| ≤ ln2/2` (within 2 ulp of `expf` on the range used);
/// inputs are clamped to `[-87.3, 88.3]` so `2^k` stays a normal float, which turns results
/// below 1e-38 (masked or hopeless logits) into ~1e-38 rather than 0.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    // Written as selects rather than `clamp`, whose NaN rules compile to scalar compares; these
    // map onto vector max/min and still let a NaN through.
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    let shifted = x * LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^k from the bits: `shifted` holds k in its low mantissa bits (its bit pattern is
    // 0x4B40_0000 + k), and shifting k + 127 into the exponent field drops the rest. Integer ops
    // on the bit pattern vectorise; `k as i32` is a saturating scalar conversion per element.
    e_r * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// Largest element (`-inf` for an empty slice).
fn max_of(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Σ values, accumulated in f64 lanes (a single f32 running sum drifts ~1e-5 over 10⁵ terms).
fn sum_of(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail.iter().map(|&v| v as f64).sum::<f64>()
}

/// Σ a ⊙ b, in f64 lanes.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| (x * y) as f64)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += (x * y) as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Elements per rayon task in element-wise kernels.
const CHUNK: usize = 16 * 1024;

impl FusedOps for Flex {
    fn causal_softmax(scores: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        if !all_f32(&[&scores]) {
            return composite::causal_softmax::<Flex>(scores, scale);
        }
        let (dims, scores) = f32_rows(&scores);
        let (queries, keys) = (dims[1], dims[2]);
        let input = scores.storage::<f32>();
        // A positive scale (1/√d), so the row maximum of scale·x is scale times the maximum.
        debug_assert!(scale > 0.0, "causal_softmax: scale must be positive");
        let scale = scale as f32;
        let mut out = vec![0.0f32; input.len()];
        out.par_chunks_mut(keys)
            .zip(input.par_chunks(keys))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (out, x))| {
                let visible = row % queries + (keys - queries) + 1;
                let (out, x) = (&mut out[..visible], &x[..visible]);
                let max = max_of(x) * scale;
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = fast_exp(v * scale - max);
                }
                let inv = (1.0 / sum_of(out)) as f32;
                out.iter_mut().for_each(|o| *o *= inv);
            });
        tensor(out, dims)
    }

    fn causal_softmax_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&probs, &grad]) {
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
                let dot = dot(p, g) as f32;
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
        if !all_f32(&[&logits]) {
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
            .map_init(
                || vec![0.0f32; vocab],
                |exps, (row, &target)| {
                    let max = max_of(row);
                    for (e, &v) in exps.iter_mut().zip(row) {
                        *e = fast_exp(v - max);
                    }
                    let lse = max + (sum_of(exps).ln() as f32);
                    (lse - row[target], lse)
                },
            )
            .unzip();
        (tensor(loss, vec![rows]), tensor(logsumexp, vec![rows]))
    }

    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        logsumexp: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&logits, &logsumexp, &grad]) {
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
                    *o = g * fast_exp(v - lse);
                }
                out[targets[r]] -= g;
            });
        tensor(out, dims)
    }

    fn rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &weight]) {
            return composite::rms_norm::<Flex>(x, weight, eps);
        }
        let (dims, x) = f32_rows(&x);
        let (_, weight) = f32_rows(&weight);
        let (rows, width) = (dims[0], dims[1]);
        let (x, w) = (x.storage::<f32>(), weight.storage::<f32>());
        let mut y = vec![0.0f32; x.len()];
        let mut inv = vec![0.0f32; rows];
        y.par_chunks_mut(width)
            .zip(inv.par_iter_mut())
            .zip(x.par_chunks(width))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|((y, inv), x)| {
                let mean_square = dot(x, x) / width as f64;
                *inv = (1.0 / (mean_square + eps).sqrt()) as f32;
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * *inv * w;
                }
            });
        (tensor(y, dims), tensor(inv, vec![rows]))
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        inv: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &weight, &inv, &grad]) {
            return composite::rms_norm_backward::<Flex>(x, weight, inv, grad);
        }
        let (dims, x) = f32_rows(&x);
        let width = dims[1];
        let (_, weight) = f32_rows(&weight);
        let (_, inv) = f32_rows(&inv);
        let (_, grad) = f32_rows(&grad);
        let (x, w) = (x.storage::<f32>(), weight.storage::<f32>());
        let (inv, g) = (inv.storage::<f32>(), grad.storage::<f32>());
        let mut d_x = vec![0.0f32; x.len()];
        d_x.par_chunks_mut(width)
            .zip(x.par_chunks(width).zip(g.par_chunks(width)))
            .zip(inv.par_iter())
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|((d_x, (x, g)), &inv)| {
                // g ⊙ w first (into the output row), then its dot with x, then the update.
                for ((d, &g), &w) in d_x.iter_mut().zip(g).zip(w) {
                    *d = g * w;
                }
                let mean = (dot(d_x, x) / width as f64) as f32;
                let correction = inv * inv * inv * mean;
                for (d, &x) in d_x.iter_mut().zip(x) {
                    *d = *d * inv - x * correction;
                }
            });
        // ∂w sums over rows: per-block partial sums in parallel, then the blocks in order, so
        // the result does not depend on how rayon scheduled the blocks (resume is bit-exact).
        const ROWS_PER_PARTIAL: usize = 64;
        let partials: Vec<Vec<f64>> = x
            .par_chunks(width * ROWS_PER_PARTIAL)
            .zip(g.par_chunks(width * ROWS_PER_PARTIAL))
            .zip(inv.par_chunks(ROWS_PER_PARTIAL))
            .map(|((x, g), inv)| {
                let mut partial = vec![0.0f64; width];
                for ((x, g), &inv) in x.chunks(width).zip(g.chunks(width)).zip(inv) {
                    for ((p, &x), &g) in partial.iter_mut().zip(x).zip(g) {
                        *p += (g * x * inv) as f64;
                    }
                }
                partial
            })
            .collect();
        let mut d_w = vec![0.0f64; width];
        for partial in &partials {
            d_w.iter_mut().zip(partial).for_each(|(d, p)| *d += p);
        }
        let d_w = d_w.into_iter().map(|v| v as f32).collect();
        (tensor(d_x, dims), tensor(d_w, vec![width]))
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&[&gate, &up]) {
            return composite::swiglu::<Flex>(gate, up);
        }
        let (dims, gate) = f32_rows(&gate);
        let (_, up) = f32_rows(&up);
        let (g, u) = (gate.storage::<f32>(), up.storage::<f32>());
        let mut out = vec![0.0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(out, (g, u))| {
                for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + fast_exp(-g)) * u;
                }
            });
        tensor(out, dims)
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&gate, &up, &grad]) {
            return composite::swiglu_backward::<Flex>(gate, up, grad);
        }
        let (dims, gate) = f32_rows(&gate);
        let (_, up) = f32_rows(&up);
        let (_, grad) = f32_rows(&grad);
        let (g, u, d) = (
            gate.storage::<f32>(),
            up.storage::<f32>(),
            grad.storage::<f32>(),
        );
        let mut d_gate = vec![0.0f32; g.len()];
        let mut d_up = vec![0.0f32; g.len()];
        d_gate
            .par_chunks_mut(CHUNK)
            .zip(d_up.par_chunks_mut(CHUNK))
            .zip(
                g.par_chunks(CHUNK)
                    .zip(u.par_chunks(CHUNK))
                    .zip(d.par_chunks(CHUNK)),
            )
            .for_each(|((d_gate, d_up), ((g, u), d))| {
                for i in 0..d_gate.len() {
                    let sig = 1.0 / (1.0 + fast_exp(-g[i]));
                    d_up[i] = d[i] * g[i] * sig;
                    d_gate[i] = d[i] * u[i] * (sig * (1.0 + g[i] * (1.0 - sig)));
                }
            });
        (tensor(d_gate, dims.clone()), tensor(d_up, dims))
    }

    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        c: AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&param, &grad, &exp_avg, &exp_avg_sq]) {
            return composite::adamw_step::<Flex>(param, grad, exp_avg, exp_avg_sq, c);
        }
        let dims = param.layout().shape().to_vec();
        let g = f32_rows(&grad).1;
        // In place when the caller handed over the only reference to a state tensor (the
        // optimizer does): no model-sized allocation and copy per tensor per step.
        let (mut p, mut m, mut v) = (
            sole_copy(param, &dims),
            sole_copy(exp_avg, &dims),
            sole_copy(exp_avg_sq, &dims),
        );
        let new_p = p.try_storage_mut::<f32>().expect("sole owner");
        let new_m = m.try_storage_mut::<f32>().expect("sole owner");
        let new_v = v.try_storage_mut::<f32>().expect("sole owner");
        // The same f32 operations in the same order as the composite, one pass instead of 14.
        let (beta1, beta2) = (c.beta1 as f32, c.beta2 as f32);
        let (one_minus_beta1, one_minus_beta2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let bias1 = 1.0 - c.beta1.powi(c.step);
        let bias2_sqrt = ((1.0 - c.beta2.powi(c.step)).sqrt()) as f32;
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let step_size = (c.lr / bias1) as f32;
        let eps = c.eps as f32;
        let decays = c.weight_decay != 0.0;
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
        (p, m, v)
    }
}
