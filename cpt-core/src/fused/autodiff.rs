//! [`FusedOps`] on `Autodiff<B>`: each fused operation is one node of the autodiff graph whose
//! backward pass calls `B`'s fused backward kernel, instead of the half-dozen nodes (and saved
//! tensors) of the composite.

use super::{FusedOps, recompute};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::FloatDType;
use burn::tensor::ops::{FloatTensor, IntTensor};

/// Backward state of the causal softmax: its output and the score scale.
#[derive(Debug)]
struct CausalSoftmax;

impl<B: FusedOps> Backward<B, 1> for CausalSoftmax {
    type State = (FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (probs, scale) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::causal_softmax_backward(probs, grad, scale)
        });
    }
}

/// Backward state of the cross-entropy: logits, their log-sum-exp and the targets.
#[derive(Debug)]
struct CrossEntropy;

impl<B: FusedOps> Backward<B, 1> for CrossEntropy {
    type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, logsumexp, targets) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::cross_entropy_backward(logits, logsumexp, targets, grad)
        });
    }
}

/// Backward state of the RMS norm: input, weight and per-row inverse RMS.
#[derive(Debug)]
struct RmsNorm;

impl<B: FusedOps> Backward<B, 2> for RmsNorm {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, inv) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (d_x, d_weight) = B::rms_norm_backward(x, weight, inv, grad);
        register_pair!(B, ops.parents, grads, d_x, d_weight);
    }
}

/// Backward state of SwiGLU: both inputs.
#[derive(Debug)]
struct SwiGlu;

impl<B: FusedOps> Backward<B, 2> for SwiGlu {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        // Both gradients share σ(gate): one kernel computes them together.
        let (d_gate, d_up) = B::swiglu_backward(gate, up, grad);
        register_pair!(B, ops.parents, grads, d_gate, d_up);
    }
}

/// The `*_backward` methods keep the trait's defaults: on `Autodiff` they are differentiable
/// composites, so gradients of gradients still work.
///
/// Under any checkpoint strategy `C` each node is declared compute-bound (as burn marks its
/// matmuls): it is never recomputed, and it keeps what its backward reads in its own state
/// rather than asking the checkpointer, so `BalancedCheckpointing` changes neither its outputs
/// nor its gradients; a memory-bound op downstream backs up its output like a matmul's.
///
/// Inside a [`recompute::layers`] scope the norm, softmax and SwiGLU are recorded memory-bound
/// instead, with their inputs in the checkpointer, and matmuls, casts and rotary embeddings get
/// nodes of their own (see [`recompute`]).
impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn causal_softmax(scores: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        if recompute::active() {
            return recompute::causal_softmax::<B, C>(scores, scale);
        }
        match CausalSoftmax
            .prepare::<C>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let probs = B::causal_softmax(scores.primitive, scale);
                prep.finish((probs.clone(), scale), probs)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_softmax(scores.primitive, scale)),
        }
    }

    fn rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, inv) = B::rms_norm(x.primitive.clone(), weight.primitive.clone(), eps);
        // The inverse RMS is returned untracked: a by-product, not a differentiable output.
        let untracked =
            <Autodiff<B, C> as burn::tensor::backend::AutodiffBackend>::from_inner(inv.clone());
        if recompute::active() {
            return (recompute::rms_norm::<B, C>(x, weight, eps, y), untracked);
        }
        let y = match RmsNorm
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive, inv), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, untracked)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        if recompute::active() {
            return recompute::swiglu::<B, C>(gate, up);
        }
        match SwiGlu
            .prepare::<C>([gate.node.clone(), up.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::swiglu(gate.primitive.clone(), up.primitive.clone());
                prep.finish((gate.primitive, up.primitive), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate.primitive, up.primitive)),
        }
    }

    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, logsumexp) = B::cross_entropy(logits.primitive.clone(), targets.clone());
        // The log-sum-exp is returned untracked: it is a by-product, not a differentiable output.
        let untracked = <Autodiff<B, C> as burn::tensor::backend::AutodiffBackend>::from_inner(
            logsumexp.clone(),
        );
        let loss = match CrossEntropy
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((logits.primitive, logsumexp, targets), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        };
        (loss, untracked)
    }

    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        rotation: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if recompute::active() {
            return recompute::rotary::<B, C>(x, cos, sin, rotation);
        }
        // The composite on `Autodiff`: burn's nodes, as the ordinary pass records them.
        super::composite::rotary::<Self>(x, cos, sin, rotation)
    }

    fn recomputable_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        recompute::matmul::<B, C>(lhs, rhs)
    }

    fn recomputable_cast(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        recompute::cast::<B, C>(x, dtype)
    }

    fn recompute_boundary(x: FloatTensor<Self>) -> FloatTensor<Self> {
        recompute::boundary::<B, C>(x)
    }
}
