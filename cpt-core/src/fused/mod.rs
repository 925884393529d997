//! Fused operations: the hot spots of training that burn builds from several generic ops.
//!
//! burn's autodiff records a composite such as `log_softmax(x).gather(t)` as half a dozen nodes,
//! each keeping a full-size tensor for its backward pass and each a separate sweep over memory;
//! on a CPU most of a small model's step went there rather than into matmuls. Each operation
//! here is one node with a hand-written backward pass, following burn's backend-extension
//! pattern:
//!
//! - [`FusedOps`] is a backend trait whose default methods are the same composites built from
//!   ordinary burn ops, so any backend (wgpu, cuda) gets a correct implementation by naming
//!   itself (`impl FusedOps for Wgpu {}`);
//! - [`autodiff`] implements it for `Autodiff<B>` once, for every inner `B: FusedOps`, with the
//!   backward pass written in terms of `B`'s own fused kernels;
//! - [`flex`] gives burn's CPU backend real kernels: one pass per row, rows in parallel.
//!
//! Model code calls the tensor-level functions below ([`causal_softmax`], [`cross_entropy`],
//! [`rms_norm`], [`swiglu`], [`rotary`], [`matmul`], [`cast`], [`layer_boundary`]); the
//! optimizer calls [`FusedOps::adamw_step`]. The last four exist so that a decoder layer can be
//! recomputed in the backward pass instead of kept ([`recompute`]); outside a
//! [`recompute::layers`] scope they are the ordinary ops.

/// Give each tracked parent of a two-input node its gradient (a macro because burn does not
/// export the type of graph nodes).
macro_rules! register_pair {
    ($B:ty, $parents:expr, $grads:expr, $first:expr, $second:expr) => {{
        let [first_parent, second_parent] = $parents;
        if let Some(node) = first_parent {
            $grads.register::<$B>(node.id, $first);
        }
        if let Some(node) = second_parent {
            $grads.register::<$B>(node.id, $second);
        }
    }};
}

pub mod autodiff;
pub mod composite;
#[cfg(feature = "flex")]
pub mod flex;
pub mod recompute;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, Int, Tensor, TensorPrimitive};

/// A backend with cpt's fused operations. The default methods are composites of ordinary ops
/// (correct everywhere, not faster); backends with kernels override them.
pub trait FusedOps: Backend {
    /// Softmax over the last axis of `scale · scores` `[batch, queries, keys]`, with query `i`
    /// seeing keys `0 ..= i + keys - queries` (causal attention after `keys - queries` cached
    /// positions); hidden positions get probability 0.
    fn causal_softmax(scores: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        composite::causal_softmax::<Self>(scores, scale)
    }

    /// Gradient of [`FusedOps::causal_softmax`] with respect to `scores`, from its output `probs`
    /// and the gradient of the output: `scale · p ⊙ (g − Σ g ⊙ p)`.
    fn causal_softmax_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        composite::causal_softmax_backward::<Self>(probs, grad, scale)
    }

    /// Cross-entropy of each row of `logits` `[rows, vocab]` against `targets` `[rows]`:
    /// returns `(loss [rows], logsumexp [rows])`, where `loss = logsumexp − logits[target]`.
    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composite::cross_entropy::<Self>(logits, targets)
    }

    /// Gradient of [`FusedOps::cross_entropy`]'s loss with respect to `logits`, given the
    /// upstream gradient per row: `grad_r · (softmax(logits_r) − onehot(target_r))`.
    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        logsumexp: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composite::cross_entropy_backward::<Self>(logits, logsumexp, targets, grad)
    }

    /// RMS norm of each row of `x` `[rows, width]` times `weight` `[width]`:
    /// `y = x / √(mean(x²) + eps) ⊙ weight`. Returns `y` and the per-row `1/√(mean(x²) + eps)`.
    fn rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composite::rms_norm::<Self>(x, weight, eps)
    }

    /// Gradients of [`FusedOps::rms_norm`] with respect to `x` and `weight`, from the input, the
    /// weight, the saved per-row inverse RMS `inv` and the output gradient `grad`:
    /// `∂x = inv·(g⊙w) − x·inv³·mean((g⊙w)⊙x)`, `∂w = Σ_rows g⊙x·inv`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        inv: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composite::rms_norm_backward::<Self>(x, weight, inv, grad)
    }

    /// SwiGLU's gated product `silu(gate) ⊙ up` (`silu(x) = x · σ(x)`) of two flat tensors.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composite::swiglu::<Self>(gate, up)
    }

    /// Gradients of [`FusedOps::swiglu`] with respect to `gate` and `up`.
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composite::swiglu_backward::<Self>(gate, up, grad)
    }

    /// Rotary position embedding of `x` `[batch, n]`: `x ⊙ cos + (x · R) ⊙ sin`, where `cos` and
    /// `sin` are `[1, n]` tables shared by the batch and the rotation `R` `[w, w]` multiplies
    /// each run of `w` consecutive values (one head's vector).
    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        rotation: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composite::rotary::<Self>(x, cos, sin, rotation)
    }

    /// `lhs · rhs` as a node the backward pass may recompute ([`recompute`]); elsewhere burn's
    /// matmul.
    fn recomputable_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// A dtype conversion as a node the backward pass may recompute ([`recompute`]); elsewhere
    /// burn's cast.
    fn recomputable_cast(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        Self::float_cast(x, dtype)
    }

    /// The identity, as the node whose output a recomputing backward pass keeps
    /// ([`recompute`]).
    fn recompute_boundary(x: FloatTensor<Self>) -> FloatTensor<Self> {
        x
    }

    /// One AdamW update of a flat parameter from its gradient and moments: returns the new
    /// `(param, exp_avg, exp_avg_sq)`.
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        scalars: AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composite::adamw_step::<Self>(param, grad, exp_avg, exp_avg_sq, scalars)
    }
}

/// The scalars of one AdamW update (`torch.optim.AdamW`'s formula).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator term.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// The update's step number, from 1 (for the bias corrections).
    pub step: i32,
}

/// A training backend: autodiff over an inner backend, both with fused operations. Everything
/// that trains or evaluates a model built on [`FusedOps`] asks for this.
pub trait TrainBackend: AutodiffBackend<InnerBackend: FusedOps> + FusedOps {}

impl<B> TrainBackend for B where B: AutodiffBackend<InnerBackend: FusedOps> + FusedOps {}

#[cfg(feature = "wgpu")]
impl FusedOps for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl FusedOps for burn::backend::Cuda {}

/// [`FusedOps::causal_softmax`] on tensors.
///
/// # Shapes
/// `scores`: `[batch, queries, keys]` with `keys >= queries` → same.
pub fn causal_softmax<B: FusedOps>(scores: Tensor<B, 3>, scale: f64) -> Tensor<B, 3> {
    let [_, queries, keys] = scores.dims();
    assert!(
        keys >= queries,
        "causal_softmax: {keys} keys for {queries} queries"
    );
    Tensor::from_primitive(TensorPrimitive::Float(B::causal_softmax(
        scores.into_primitive().tensor(),
        scale,
    )))
}

/// RMS norm over the last axis with a per-channel `weight` ([`FusedOps::rms_norm`]).
pub fn rms_norm<B: FusedOps, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dims = x.dims();
    let width = dims[D - 1];
    let rows = x.reshape([-1, width as i32]).into_primitive().tensor();
    let (y, _) = B::rms_norm(rows, weight.into_primitive().tensor(), eps);
    Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(y)).reshape(dims)
}

/// `silu(gate) ⊙ up` ([`FusedOps::swiglu`]), the gated product of LLaMA's MLP.
pub fn swiglu<B: FusedOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let dims = gate.dims();
    assert_eq!(dims, up.dims(), "swiglu: gate and up differ in shape");
    let flat = |t: Tensor<B, D>| t.reshape([-1]).into_primitive().tensor();
    Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::swiglu(flat(gate), flat(up))))
        .reshape(dims)
}

/// Per-row cross-entropy `logsumexp(logits_r) − logits_r[target_r]` ([`FusedOps::cross_entropy`]).
///
/// # Shapes
/// `logits`: `[rows, vocab]`, `targets`: `[rows]` → `[rows]`.
pub fn cross_entropy<B: FusedOps>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let (loss, _) = B::cross_entropy(logits.into_primitive().tensor(), targets.into_primitive());
    Tensor::from_primitive(TensorPrimitive::Float(loss))
}

/// [`FusedOps::rotary`] on tensors.
///
/// # Shapes
/// `x`: `[batch, n]`, `cos`/`sin`: `[1, n]`, `rotation`: `[w, w]` with `w` dividing `n` → `[batch, n]`.
pub fn rotary<B: FusedOps>(
    x: Tensor<B, 2>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    rotation: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let p = |t: Tensor<B, 2>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::rotary(
        p(x),
        p(cos),
        p(sin),
        p(rotation),
    )))
}

/// `lhs · rhs` (burn's `Tensor::matmul`); inside a [`recompute::layers`] scope, a node the
/// backward pass recomputes ([`FusedOps::recomputable_matmul`]).
pub fn matmul<B: FusedOps, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    if !recompute::active() {
        return lhs.matmul(rhs);
    }
    let (l, r) = (lhs.dims(), rhs.dims());
    assert_eq!(
        l[D - 1],
        r[D - 2],
        "matmul: inner dimensions differ ({l:?} · {r:?})"
    );
    Tensor::from_primitive(TensorPrimitive::Float(B::recomputable_matmul(
        lhs.into_primitive().tensor(),
        rhs.into_primitive().tensor(),
    )))
}

/// `x.cast(dtype)`; inside a [`recompute::layers`] scope, a node the backward pass recomputes
/// ([`FusedOps::recomputable_cast`]).
pub fn cast<B: FusedOps, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if !recompute::active() {
        return x.cast(dtype);
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::recomputable_cast(
        x.into_primitive().tensor(),
        dtype,
    )))
}

/// The end of a decoder layer: the identity, except that inside a [`recompute::layers`] scope
/// it is where a recomputing backward pass keeps the activations ([`FusedOps::recompute_boundary`]).
pub fn layer_boundary<B: FusedOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !recompute::active() {
        return x;
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::recompute_boundary(
        x.into_primitive().tensor(),
    )))
}
