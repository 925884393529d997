//! What a `recompute::layers` scope records: on burn's checkpointing autodiff every operation a
//! decoder layer is made of becomes a node the backward pass recomputes (memory-bound), the layer
//! boundary one it keeps (compute-bound); outside the scope nothing changes; and the gradients of
//! a recomputed chain equal those of the ordinary one.

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, FloatDType, Tensor};
use cpt_core::fused::{
    FusedOps, cast, causal_softmax, layer_boundary, matmul, recompute, rms_norm, rotary, swiglu,
};

type A = Autodiff<Flex, BalancedCheckpointing>;

/// How burn's graph will treat the node that made `p` (`MemoryBound { .. }`, `ComputeBound`, or
/// `Ambiguous` for leaves), read from its debug form: the type is not exported.
fn property(p: &FloatTensor<A>) -> String {
    let debug = format!("{:?}", p.node.properties);
    debug.split([' ', '{', '(']).next().unwrap().to_string()
}

fn primitive<const D: usize>(t: Tensor<A, D>) -> FloatTensor<A> {
    t.into_primitive().tensor()
}

/// Each layer operation applied once to small tracked inputs, by the backend methods the model's
/// functions call (so no reshape around them hides the node), with the node each produced.
fn layer_operations() -> Vec<(&'static str, String)> {
    let device = Default::default();
    let tracked = |shape: [usize; 2]| {
        primitive(Tensor::<A, 2>::random(shape, Distribution::Default, &device).require_grad())
    };
    let constant = |shape: [usize; 2]| primitive(Tensor::<A, 2>::ones(shape, &device));
    let norm = primitive(Tensor::<A, 1>::ones([8], &device).require_grad());
    let scores =
        primitive(Tensor::<A, 3>::random([1, 4, 4], Distribution::Default, &device).require_grad());
    vec![
        ("rms_norm", A::rms_norm(tracked([2, 8]), norm, 1e-6).0),
        (
            "matmul",
            A::recomputable_matmul(tracked([2, 8]), tracked([8, 8])),
        ),
        (
            "rotary",
            A::rotary(
                tracked([2, 8]),
                constant([1, 8]),
                constant([1, 8]),
                constant([4, 4]),
            ),
        ),
        ("causal_softmax", A::causal_softmax(scores, 0.5)),
        ("swiglu", A::swiglu(tracked([2, 8]), tracked([2, 8]))),
        (
            "cast",
            A::recomputable_cast(tracked([2, 8]), FloatDType::F16),
        ),
        ("layer_boundary", A::recompute_boundary(tracked([2, 8]))),
    ]
    .into_iter()
    .map(|(name, out)| (name, property(&out)))
    .collect()
}

#[test]
fn a_recompute_scope_records_layer_operations_as_recomputable() {
    let recorded = {
        let _scope = recompute::layers(true);
        layer_operations()
    };
    for (name, property) in &recorded {
        let want = if *name == "layer_boundary" {
            "ComputeBound"
        } else {
            "MemoryBound"
        };
        assert_eq!(property, want, "{name} in the scope");
    }
    // Outside the scope cpt's fused nodes keep their state (compute-bound), and the model's
    // `matmul`/`cast` functions are burn's (compute-bound) ops.
    let plain: Vec<_> = layer_operations()
        .into_iter()
        .filter(|(name, _)| ["rms_norm", "causal_softmax", "swiglu"].contains(name))
        .collect();
    assert_eq!(plain.len(), 3);
    for (name, property) in &plain {
        assert_eq!(property, "ComputeBound", "{name} outside the scope");
    }
    let device = Default::default();
    let t = || Tensor::<A, 2>::random([4, 4], Distribution::Default, &device).require_grad();
    assert_eq!(property(&primitive(matmul(t(), t()))), "ComputeBound");
    assert_eq!(
        property(&primitive(cast(t(), FloatDType::F16))),
        "ComputeBound"
    );
}

fn inputs() -> (Tensor<A, 2>, Tensor<A, 2>, Tensor<A, 1>) {
    let device = Default::default();
    let x = Tensor::<A, 2>::random([4, 8], Distribution::Default, &device).require_grad();
    let w = Tensor::<A, 2>::random([8, 8], Distribution::Default, &device).require_grad();
    let norm = Tensor::<A, 1>::random([8], Distribution::Default, &device).require_grad();
    (x, w, norm)
}

/// Every operation's output is read by a later node's backward pass (a matmul with a tracked
/// weight, a product), so under the scope each one is recomputed by its retro-forward.
#[test]
fn recomputed_chain_has_the_ordinary_gradients() {
    let (x, w, norm) = inputs();
    // A constant, drawn once (the backend RNG is shared with the other tests' threads).
    let rotation = Tensor::<A, 2>::random([4, 4], Distribution::Default, &x.device());
    let loss = |recomputing: bool| {
        let _scope = recompute::layers(recomputing);
        let device = x.device();
        let normed = rms_norm(x.clone(), norm.clone(), 1e-6);
        let projected = matmul(normed, w.clone());
        let table = Tensor::<A, 2>::full([1, 8], 0.5, &device);
        let rotated = rotary(projected.clone(), table.clone(), table, rotation.clone());
        let scores = matmul(rotated.clone(), rotated.clone().transpose()).unsqueeze::<3>();
        let probs = causal_softmax(scores, 0.5).squeeze::<2>();
        let attended = matmul(probs, rotated);
        let gated = swiglu(projected, attended);
        let out = matmul(gated, w.clone());
        let round_trip = cast(cast(out, FloatDType::BF16), FloatDType::F32);
        layer_boundary(round_trip.clone() * round_trip + x.clone()).sum()
    };
    let grads = |recomputing: bool| {
        let g = loss(recomputing).backward();
        vec![
            x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
            w.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
            norm.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
        ]
    };
    let plain = grads(false);
    let recomputed = grads(true);
    assert!(plain.iter().flatten().any(|g| *g != 0.0));
    assert_eq!(plain, recomputed);
}
