//! AdamW over named parameters, with global-norm gradient clipping.
//!
//! burn ships AdamW, but keys its state by random parameter ids, clips each tensor on its own,
//! and has no per-parameter learning rate. cpt keys everything by parameter path, so the state
//! checkpoints as a plain safetensors file, resumes bit-exactly into a freshly built model,
//! and parameter groups (slow learners, frozen parts) are a name match. The update follows
//! PyTorch's `torch.optim.AdamW` ("Decoupled Weight Decay Regularization", 2019).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorPrimitive, backend::AutodiffBackend};
use cpt_core::fused::{AdamWScalars, FusedOps, TrainBackend};
use cpt_core::params::{HostTensor, NamedTensors, PathStack, map_named};
use std::collections::{BTreeMap, HashMap};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Gradients of one optimizer step, flattened and keyed by parameter path. Micro-batch
/// gradients accumulate into it by summation.
pub struct GradStore<B: AutodiffBackend> {
    grads: BTreeMap<String, Tensor<Inner<B>, 1>>,
}

impl<B: AutodiffBackend> Default for GradStore<B> {
    fn default() -> Self {
        Self {
            grads: BTreeMap::new(),
        }
    }
}

impl<B: AutodiffBackend> GradStore<B> {
    /// Add the gradients of `model`'s parameters found in `grads` (from `loss.backward()`).
    pub fn accumulate<M: AutodiffModule<B>>(&mut self, model: &M, grads: &B::Gradients) {
        struct Collector<'a, B: AutodiffBackend> {
            stack: PathStack,
            grads: &'a B::Gradients,
            store: &'a mut BTreeMap<String, Tensor<Inner<B>, 1>>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Collector<'_, B> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.stack.enter(name);
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.stack.exit();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let Some(grad) = param.val().grad(self.grads) else {
                    return;
                };
                let flat = grad.reshape([-1]);
                let path = self.stack.path();
                let sum = match self.store.remove(&path) {
                    Some(previous) => previous + flat,
                    None => flat,
                };
                self.store.insert(path, sum);
            }
        }
        model.visit(&mut Collector::<B> {
            stack: PathStack::default(),
            grads,
            store: &mut self.grads,
        });
    }

    /// Global L2 norm of all gradients (one host read).
    pub fn global_norm(&self) -> f64 {
        let Some(first) = self.grads.values().next() else {
            return 0.0;
        };
        let total = self
            .grads
            .values()
            .map(|g| blocked_sum_of_squares(g.clone()))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| first.clone().sum().mul_scalar(0.0));
        (total.into_scalar().elem::<f64>()).sqrt()
    }

    /// Multiply every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// The gradient of one parameter.
    pub fn get(&self, path: &str) -> Option<&Tensor<Inner<B>, 1>> {
        self.grads.get(path)
    }

    /// Keep only the gradients of parameters for which `keep(path)` holds (frozen parameters
    /// have none, as in PyTorch, so they count neither in the clipping norm nor in updates).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.grads.retain(|path, _| keep(path));
    }

    /// Set the gradient of the parameter at `path` (flattened), e.g. from another framework.
    pub fn insert(&mut self, path: &str, grad: Tensor<Inner<B>, 1>) {
        self.grads.insert(path.to_string(), grad);
    }

    /// Every gradient with its parameter path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor<Inner<B>, 1>)> {
        self.grads.iter().map(|(path, g)| (path.as_str(), g))
    }

    /// `true` when no gradient was collected.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

use burn::tensor::ElementConversion;

/// Σ x² of a flat tensor, summed in blocks of 256 and then over blocks: a long f32 sum in
/// one pass drifts (1e-5 relative on a 32k-element embedding), which the two-level sum avoids
/// while staying on the device.
fn blocked_sum_of_squares<B: burn::tensor::backend::Backend>(g: Tensor<B, 1>) -> Tensor<B, 1> {
    const BLOCK: usize = 256;
    let n = g.dims()[0];
    let squares = g.square();
    if n < 2 * BLOCK {
        return squares.sum();
    }
    let full = n / BLOCK * BLOCK;
    let blocks = squares
        .clone()
        .narrow(0, 0, full)
        .reshape([full / BLOCK, BLOCK])
        .sum_dim(1);
    let head = blocks.reshape([full / BLOCK]).sum();
    if full == n {
        head
    } else {
        head + squares.narrow(0, full, n - full).sum()
    }
}

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator term.
    pub eps: f64,
    /// Decoupled weight decay (multiplied by the learning rate, as in PyTorch).
    pub weight_decay: f64,
}

/// Per-parameter optimizer state: the two moments and the number of updates applied.
struct Moments<B: AutodiffBackend> {
    exp_avg: Tensor<Inner<B>, 1>,
    exp_avg_sq: Tensor<Inner<B>, 1>,
    steps: u64,
}

/// AdamW with state keyed by parameter path.
pub struct AdamW<B: AutodiffBackend> {
    config: AdamWConfig,
    state: BTreeMap<String, Moments<B>>,
}

impl<B: AutodiffBackend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            state: BTreeMap::new(),
        }
    }

    /// Forget the state of every parameter whose path satisfies `matches` (it restarts from
    /// zero moments, as for a newly created parameter).
    pub fn forget(&mut self, matches: impl Fn(&str) -> bool) {
        self.state.retain(|path, _| !matches(path));
    }

    /// The optimizer state as named host tensors (`<path>.exp_avg`, `<path>.exp_avg_sq`) and
    /// per-parameter step counts (`<path>` → steps), for checkpoints.
    pub fn state_tensors(&self) -> (NamedTensors, HashMap<String, String>) {
        let mut tensors = NamedTensors::new();
        let mut steps = HashMap::new();
        for (path, m) in &self.state {
            tensors.insert(
                format!("{path}.exp_avg"),
                HostTensor::from_tensor(m.exp_avg.clone()),
            );
            tensors.insert(
                format!("{path}.exp_avg_sq"),
                HostTensor::from_tensor(m.exp_avg_sq.clone()),
            );
            steps.insert(path.clone(), m.steps.to_string());
        }
        (tensors, steps)
    }

    /// Restore state written by [`AdamW::state_tensors`]. Returns the name of the first entry
    /// that is missing or malformed.
    pub fn load_state(
        &mut self,
        tensors: &NamedTensors,
        steps: &HashMap<String, String>,
        device: &burn::tensor::Device<Inner<B>>,
    ) -> Result<(), String> {
        self.state.clear();
        for (path, count) in steps {
            let get = |suffix: &str| {
                tensors
                    .get(&format!("{path}.{suffix}"))
                    .ok_or_else(|| format!("{path}.{suffix}"))
            };
            let (m, v) = (get("exp_avg")?, get("exp_avg_sq")?);
            let steps = count
                .parse::<u64>()
                .map_err(|_| format!("step count of {path}"))?;
            self.state.insert(
                path.clone(),
                Moments {
                    exp_avg: m.to_tensor(device),
                    exp_avg_sq: v.to_tensor(device),
                    steps,
                },
            );
        }
        Ok(())
    }
}

impl<B: TrainBackend> AdamW<B> {
    /// Apply one update to every parameter of `model` that has a gradient in `grads`, with
    /// learning rate `lr × lr_scale(path)`. A scale of 0 freezes a parameter: it is neither
    /// updated nor decayed, and its state does not advance.
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        model: M,
        grads: &GradStore<B>,
        lr: f64,
        lr_scale: impl Fn(&str) -> f64,
    ) -> M {
        let c = self.config;
        map_named(model, |path, param| {
            let (Some(grad), scale) = (grads.get(path), lr_scale(path)) else {
                return param;
            };
            if scale == 0.0 {
                return param;
            }
            let lr = lr * scale;
            let value = param.inner();
            // Taken out of the map and handed over by value, so the fused update may write the
            // moments (and the parameter) in place.
            let mut moments = self.state.remove(path).unwrap_or_else(|| Moments {
                exp_avg: value.zeros_like(),
                exp_avg_sq: value.zeros_like(),
                steps: 0,
            });
            moments.steps += 1;
            let scalars = AdamWScalars {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: c.weight_decay,
                step: moments.steps as i32,
            };
            // One fused pass over parameter, gradient and both moments (cpt_core::fused).
            let flat = |t: Tensor<Inner<B>, 1>| t.into_primitive().tensor();
            let Moments {
                exp_avg,
                exp_avg_sq,
                steps,
            } = moments;
            let (updated, exp_avg, exp_avg_sq) = Inner::<B>::adamw_step(
                flat(value),
                flat(grad.clone()),
                flat(exp_avg),
                flat(exp_avg_sq),
                scalars,
            );
            let float = |t| Tensor::<Inner<B>, 1>::from_primitive(TensorPrimitive::Float(t));
            let moments = Moments {
                exp_avg: float(exp_avg),
                exp_avg_sq: float(exp_avg_sq),
                steps,
            };
            self.state.insert(path.to_string(), moments);
            Tensor::from_inner(float(updated))
        })
    }
}
