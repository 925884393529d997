//! Whole-model weight snapshots keyed by parameter path: what EWC anchors, teachers, averages
//! and task vectors are made of. Snapshots live on the model's device, outside the autodiff
//! graph.

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::params::{HostTensor, NamedTensors, map_named, visit_named};
use std::collections::BTreeMap;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Flattened parameter values by path.
pub type Weights<B> = BTreeMap<String, Tensor<Inner<B>, 1>>;

/// A detached copy of every parameter of `model`.
pub fn snapshot<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Weights<B> {
    let mut out = Weights::<B>::new();
    visit_named(model, |path, param, _| {
        out.insert(path.to_string(), param.val().inner());
    });
    out
}

/// `model` with every parameter found in `weights` replaced by its value there.
pub fn replace<B: AutodiffBackend, M: AutodiffModule<B>>(model: M, weights: &Weights<B>) -> M {
    map_named(model, |path, old| match weights.get(path) {
        Some(value) => Tensor::from_inner(value.clone()),
        None => old,
    })
}

/// `f(path, value)` applied to every weight: the building block of averages and merges.
pub fn map_weights<B: AutodiffBackend>(
    weights: &Weights<B>,
    mut f: impl FnMut(&str, &Tensor<Inner<B>, 1>) -> Tensor<Inner<B>, 1>,
) -> Weights<B> {
    weights
        .iter()
        .map(|(path, value)| (path.clone(), f(path, value)))
        .collect()
}

/// Copy to the host under `prefix.<path>` names, for a checkpoint.
pub fn to_host<B: AutodiffBackend>(weights: &Weights<B>, prefix: &str, out: &mut NamedTensors) {
    for (path, value) in weights {
        out.insert(
            format!("{prefix}.{path}"),
            HostTensor::from_tensor(value.clone()),
        );
    }
}

/// Read back the weights stored by [`to_host`] under `prefix`.
pub fn from_host<B: AutodiffBackend>(
    tensors: &NamedTensors,
    prefix: &str,
    device: &burn::tensor::Device<Inner<B>>,
) -> Weights<B> {
    let start = format!("{prefix}.");
    tensors
        .iter()
        .filter_map(|(name, t)| {
            let path = name.strip_prefix(&start)?;
            let flat = HostTensor {
                shape: vec![t.values.len()],
                values: t.values.clone(),
            };
            Some((path.to_string(), flat.to_tensor(device)))
        })
        .collect()
}

/// The device of a model's parameters.
pub fn device_of<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
) -> burn::tensor::Device<Inner<B>> {
    let mut device = None;
    visit_named(model, |_, param, _| {
        if device.is_none() {
            device = Some(param.val().inner().device());
        }
    });
    device.expect("a model has parameters")
}

/// `f(a, b)` for every weight of `a` that `b` also has; the others keep `a`'s value.
pub fn combine<B: AutodiffBackend>(
    a: Weights<B>,
    b: &Weights<B>,
    f: impl Fn(Tensor<Inner<B>, 1>, &Tensor<Inner<B>, 1>) -> Tensor<Inner<B>, 1>,
) -> Weights<B> {
    a.into_iter()
        .map(|(path, value)| {
            let value = match b.get(&path) {
                Some(other) => f(value, other),
                None => value,
            };
            (path, value)
        })
        .collect()
}

/// Put optional weights into a strategy state: a JSON flag `name` and tensors under `name.`.
pub fn save_optional<B: AutodiffBackend>(
    weights: Option<&Weights<B>>,
    name: &str,
    json: &mut serde_json::Map<String, serde_json::Value>,
    tensors: &mut NamedTensors,
) {
    json.insert(name.to_string(), serde_json::Value::Bool(weights.is_some()));
    if let Some(weights) = weights {
        to_host::<B>(weights, name, tensors);
    }
}

/// Read back weights stored by [`save_optional`].
pub fn load_optional<B: AutodiffBackend>(
    state: &crate::strategy::StrategyState,
    name: &str,
    device: &burn::tensor::Device<Inner<B>>,
) -> Option<Weights<B>> {
    let present = state
        .json
        .get(name)
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    present.then(|| from_host::<B>(&state.tensors, name, device))
}
