//! The fused operations as composites of ordinary burn ops: what every backend without its own
//! kernels runs, and the reference the kernels are tested against.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Bool, Int, Tensor, TensorPrimitive};

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// The default of [`super::FusedOps::causal_softmax`].
pub fn causal_softmax<B: Backend>(scores: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let scores = float::<B, 3>(scores);
    let [_, queries, keys] = scores.dims();
    let hidden =
        Tensor::<B, 2, Bool>::tril_mask([queries, keys], (keys - queries) as i64, &scores.device());
    let masked = scores
        .mul_scalar(scale)
        .mask_fill(hidden.unsqueeze::<3>(), f32::NEG_INFINITY);
    primitive(softmax(masked, 2))
}

/// The default of [`super::FusedOps::causal_softmax_backward`].
pub fn causal_softmax_backward<B: Backend>(
    probs: FloatTensor<B>,
    grad: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let (probs, grad) = (float::<B, 3>(probs), float::<B, 3>(grad));
    let dot = (grad.clone() * probs.clone()).sum_dim(2);
    primitive((probs * (grad - dot)).mul_scalar(scale))
}

/// The default of [`super::FusedOps::cross_entropy`].
pub fn cross_entropy<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let logits = float::<B, 2>(logits);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let [rows, _] = logits.dims();
    let max = logits.clone().max_dim(1);
    let logsumexp = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
    let picked = logits.gather(1, targets.unsqueeze_dim::<2>(1));
    let loss = (logsumexp.clone() - picked).reshape([rows]);
    (primitive(loss), primitive(logsumexp.reshape([rows])))
}

/// The default of [`super::FusedOps::cross_entropy_backward`].
pub fn cross_entropy_backward<B: Backend>(
    logits: FloatTensor<B>,
    logsumexp: FloatTensor<B>,
    targets: IntTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = float::<B, 2>(logits);
    let [rows, _] = logits.dims();
    let logsumexp = float::<B, 1>(logsumexp).reshape([rows, 1]);
    let grad = float::<B, 1>(grad).reshape([rows, 1]);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).unsqueeze_dim::<2>(1);
    let probs = (logits - logsumexp).exp() * grad.clone();
    primitive(probs.scatter(1, targets, grad.neg(), burn::tensor::IndexingUpdateOp::Add))
}

/// The default of [`super::FusedOps::rotary`]: `x ⊙ cos + (x · R) ⊙ sin`.
pub fn rotary<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    rotation: FloatTensor<B>,
) -> FloatTensor<B> {
    let x = float::<B, 2>(x);
    let [batch, n] = x.dims();
    let rotation = float::<B, 2>(rotation);
    let width = rotation.dims()[0];
    let rotated = x
        .clone()
        .reshape([batch * n / width, width])
        .matmul(rotation)
        .reshape([batch, n]);
    primitive(x * float::<B, 2>(cos) + rotated * float::<B, 2>(sin))
}

/// The default of [`super::FusedOps::adamw_step`]: PyTorch's AdamW as tensor ops.
pub fn adamw_step<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    exp_avg: FloatTensor<B>,
    exp_avg_sq: FloatTensor<B>,
    c: super::AdamWScalars,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (param, grad) = (float::<B, 1>(param), float::<B, 1>(grad));
    let exp_avg =
        float::<B, 1>(exp_avg).mul_scalar(c.beta1) + grad.clone().mul_scalar(1.0 - c.beta1);
    let exp_avg_sq =
        float::<B, 1>(exp_avg_sq).mul_scalar(c.beta2) + grad.square().mul_scalar(1.0 - c.beta2);
    let bias1 = 1.0 - c.beta1.powi(c.step);
    let bias2 = 1.0 - c.beta2.powi(c.step);
    let denom = exp_avg_sq
        .clone()
        .sqrt()
        .div_scalar(bias2.sqrt())
        .add_scalar(c.eps);
    let decayed = if c.weight_decay == 0.0 {
        param
    } else {
        param.mul_scalar(1.0 - c.lr * c.weight_decay)
    };
    let updated = decayed - (exp_avg.clone() / denom).mul_scalar(c.lr / bias1);
    (
        primitive(updated),
        primitive(exp_avg),
        primitive(exp_avg_sq),
    )
}

/// The default of [`super::FusedOps::swiglu`].
pub fn swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    let gate = float::<B, 1>(gate);
    primitive(gate.clone() * sigmoid(gate) * float::<B, 1>(up))
}

/// The default of [`super::FusedOps::swiglu_backward`]:
/// `∂gate = g ⊙ up ⊙ σ(gate) ⊙ (1 + gate ⊙ (1 − σ(gate)))`, `∂up = g ⊙ silu(gate)`.
pub fn swiglu_backward<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (gate, up, grad) = (float::<B, 1>(gate), float::<B, 1>(up), float::<B, 1>(grad));
    let sig = sigmoid(gate.clone());
    let d_up = grad.clone() * gate.clone() * sig.clone();
    let slope = sig.clone() * (gate * (sig.neg() + 1.0) + 1.0);
    (primitive(grad * up * slope), primitive(d_up))
}

/// The default of [`super::FusedOps::rms_norm`], as transformers' `LlamaRMSNorm` computes it.
pub fn rms_norm<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = float::<B, 2>(x);
    let [rows, _] = x.dims();
    let inv = (x.clone().square().mean_dim(1) + eps).sqrt().recip();
    let y = x * inv.clone() * float::<B, 1>(weight).unsqueeze::<2>();
    (primitive(y), primitive(inv.reshape([rows])))
}

/// The default of [`super::FusedOps::rms_norm_backward`].
pub fn rms_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    inv: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, grad) = (float::<B, 2>(x), float::<B, 2>(grad));
    let [rows, width] = x.dims();
    let inv = float::<B, 1>(inv).reshape([rows, 1]);
    let weighted = grad.clone() * float::<B, 1>(weight).unsqueeze::<2>();
    let mean = (weighted.clone() * x.clone())
        .sum_dim(1)
        .div_scalar(width as f64);
    let d_x = weighted * inv.clone() - x.clone() * inv.clone().powi_scalar(3) * mean;
    let d_weight = (grad * x * inv).sum_dim(0).reshape([width]);
    (primitive(d_x), primitive(d_weight))
}
