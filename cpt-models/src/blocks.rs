//! Pieces the transformer models share: the initialisation context, exact GELU, LayerNorm with
//! PyTorch's parameter names, multi-head attention and the patch projection of vision towers.
//! Each model file composes them under its own transformers names.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Initializer};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

/// Where initial parameter values come from while a model is built, and the path of the module
/// being built. Each module's constructor states the rule of each of its own parameters
/// (normal with some standard deviation, zeros, ones), so a rule never depends on how a
/// parameter is named.
///
/// Seeded draws come from cpt's RNG keyed by `(seed, parameter path)`, not from burn's backend
/// RNG (global, so parallel tests race on it, and different on each backend): the same seed
/// gives the same model on every backend and thread, and adding a parameter never changes the
/// draws of the others.
#[derive(Clone)]
pub struct Init<'a, B: Backend> {
    /// `Some`: cpt's RNG from this seed; `None`: burn's backend RNG.
    seed: Option<u64>,
    /// Path of the module being built (`""` at the root).
    path: String,
    device: &'a B::Device,
}

impl<'a, B: Backend> Init<'a, B> {
    /// Draws from burn's backend RNG.
    pub fn backend(device: &'a B::Device) -> Self {
        Self {
            seed: None,
            path: String::new(),
            device,
        }
    }

    /// Draws from cpt's RNG seeded by `seed`, keyed by parameter path.
    pub fn seeded(seed: u64, device: &'a B::Device) -> Self {
        Self {
            seed: Some(seed),
            path: String::new(),
            device,
        }
    }

    /// The device parameters are made on.
    pub fn device(&self) -> &'a B::Device {
        self.device
    }

    /// The context of the child module `name` (a field name, or an index in a list).
    pub fn at(&self, name: impl std::fmt::Display) -> Self {
        Self {
            seed: self.seed,
            path: crate::adapters::child(&self.path, name),
            device: self.device,
        }
    }

    /// This module's parameter `name`, normal with mean 0 and standard deviation `std`.
    pub fn normal<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        std: f64,
    ) -> Param<Tensor<B, D>> {
        let Some(seed) = self.seed else {
            return Initializer::Normal { mean: 0.0, std }.init(shape, self.device);
        };
        let path = crate::adapters::child(&self.path, name);
        let mut rng =
            cpt_core::SplitMix64::derive(seed, &[cpt_core::rng::stable_hash(path.as_bytes())]);
        let n = shape.iter().product::<usize>();
        let values: Vec<f32> = (0..n).map(|_| (rng.next_normal() * std) as f32).collect();
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }

    /// A parameter of zeros.
    pub fn zeros<const D: usize>(&self, shape: [usize; D]) -> Param<Tensor<B, D>> {
        Param::from_tensor(Tensor::zeros(shape, self.device))
    }

    /// A parameter of ones.
    pub fn ones<const D: usize>(&self, shape: [usize; D]) -> Param<Tensor<B, D>> {
        Param::from_tensor(Tensor::ones(shape, self.device))
    }
}

/// An embedding table `[rows, width]` (the parameter `weight`), normal with standard deviation
/// `std`.
pub fn embedding<B: Backend>(
    init: &Init<'_, B>,
    rows: usize,
    width: usize,
    std: f64,
) -> Embedding<B> {
    Embedding {
        weight: init.normal("weight", [rows, width], std),
    }
}

/// Exact GELU, `x·Φ(x) = x/2·(1 + erf(x/√2))`, as transformers' `gelu`. Written out from `erf`
/// rather than burn's `gelu` because burn's default `gelu_backward` (used by backends that do
/// not override it) is the derivative of the tanh approximation, which would put the gradients
/// of those backends ~1e-3 away from PyTorch's.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let cdf = x
        .clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0);
    x.mul(cdf).mul_scalar(0.5)
}

/// LayerNorm with the PyTorch parameter names (`weight`, `bias`; burn's own calls them
/// `gamma`, `beta`), normalising the last axis with PyTorch's biased variance.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Per-channel scale, `[width]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift, `[width]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Unit scale, zero shift.
    pub fn new(init: &Init<'_, B>, width: usize, eps: f64) -> Self {
        Self {
            weight: init.ones([width]),
            bias: init.zeros([width]),
            eps,
        }
    }

    /// Normalise the last axis of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let centered = x.clone() - x.mean_dim(D - 1);
        let var = centered.clone().square().mean_dim(D - 1);
        centered / (var + self.eps).sqrt() * self.weight.val().unsqueeze::<D>()
            + self.bias.val().unsqueeze::<D>()
    }
}

/// Scaled dot-product attention of projected queries, keys and values, split into `num_heads`
/// heads and merged back, before any output projection. `mask` (`[seq, seq]`, true = hidden)
/// makes it causal or otherwise restricted.
///
/// # Shapes
/// `q`, `k`, `v`: `[batch, seq, width]` → `[batch, seq, width]`.
pub fn multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    num_heads: usize,
    mask: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 3> {
    let [batch, seq, width] = q.dims();
    let head = width / num_heads;
    let heads = |t: Tensor<B, 3>| t.reshape([batch, seq, num_heads, head]).swap_dims(1, 2);
    // transformers multiplies by head^-0.5 (rather than dividing by √head): same rounding.
    let mut scores = heads(q)
        .matmul(heads(k).swap_dims(2, 3))
        .mul_scalar((head as f64).powf(-0.5));
    if let Some(mask) = mask {
        scores = scores.mask_fill(mask.unsqueeze::<4>(), f32::NEG_INFINITY);
    }
    softmax(scores, 3)
        .matmul(heads(v))
        .swap_dims(1, 2)
        .reshape([batch, seq, width])
}

/// A convolution whose stride equals its kernel (a vision transformer's patch embedding, without
/// bias), as one matrix product: with no overlap each output is the dot product of the kernel
/// with one patch read in `(channel, row, column)` order, the order of the flattened PyTorch
/// `[out, in, kh, kw]` kernel, so checkpoints load without reordering.
///
/// # Shapes
/// `pixels`: `[batch, channels, height, width]`, `kernel`: `[hidden, channels, p, p]` →
/// `[batch, patches, hidden]`, patches row-major over the grid (PyTorch's
/// `flatten(2).transpose(1, 2)`).
pub fn patch_projection<B: Backend>(pixels: Tensor<B, 4>, kernel: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, channels, height, width] = pixels.dims();
    let [hidden, kernel_channels, p, _] = kernel.dims();
    assert_eq!(
        channels, kernel_channels,
        "images have {channels} channels, the model expects {kernel_channels}"
    );
    let (gh, gw) = (height / p, width / p);
    let patches = pixels
        .reshape([batch, channels, gh, p, gw, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([batch, gh * gw, channels * p * p]);
    let kernel = kernel.reshape([hidden, channels * p * p]).transpose();
    patches.matmul(kernel.unsqueeze::<3>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny;
    use burn::backend::Flex;
    use cpt_core::params::named_tensors;

    /// Every parameter of `model` (built from seed 9) that is neither constant nor `fixed` is a
    /// seeded draw keyed by its real parameter path: the paths the constructors state match the
    /// module tree.
    fn draws_are_keyed_by_real_paths<M: Module<Flex>>(model: M, fixed: &[&str]) -> usize {
        let mut drawn = 0;
        for (path, tensor) in named_tensors(&model) {
            let v = &tensor.values;
            if v.iter().all(|&x| x == v[0]) || fixed.contains(&path.as_str()) {
                continue;
            }
            let mut rng =
                cpt_core::SplitMix64::derive(9, &[cpt_core::rng::stable_hash(path.as_bytes())]);
            let z: Vec<f64> = (0..v.len()).map(|_| rng.next_normal()).collect();
            let std = v[0] as f64 / z[0];
            let close = v
                .iter()
                .zip(&z)
                .all(|(&x, z)| (x as f64 - z * std).abs() <= 1e-6);
            assert!(close, "{path} is not the draw keyed by its path");
            drawn += 1;
        }
        drawn
    }

    /// MAE's fixed sin-cos position tables.
    const MAE_TABLES: &[&str] = &[
        "vit.embeddings.position_embeddings",
        "decoder.decoder_pos_embed",
    ];

    #[test]
    fn seeded_draws_are_keyed_by_parameter_paths() {
        let device = Default::default();
        // Per layer 7 projections; embeddings and the LM head.
        assert_eq!(
            draws_are_keyed_by_real_paths(tiny::llama().init_seeded::<Flex>(9, &device), &[]),
            2 * 7 + 2
        );
        // Per layer 6 projections; CLS, positions, patch kernel, classifier.
        assert_eq!(
            draws_are_keyed_by_real_paths(tiny::vit().init_seeded::<Flex>(9, &device), &[]),
            2 * 6 + 4
        );
        // Encoder and decoder layers; CLS, patch kernel, mask token, decoder embed and pred.
        assert_eq!(
            draws_are_keyed_by_real_paths(tiny::mae().init_seeded::<Flex>(9, &device), MAE_TABLES),
            3 * 6 + 5
        );
        // Both towers' layers; 2 text and 3 vision embeddings; 2 projections.
        assert_eq!(
            draws_are_keyed_by_real_paths(tiny::clip().init_seeded::<Flex>(9, &device), &[]),
            3 * 6 + 7
        );
    }

    #[test]
    fn norms_are_one_and_biases_zero() {
        let params = named_tensors(&tiny::clip().init_seeded::<Flex>(9, &Default::default()));
        for (path, tensor) in params {
            let constant = |c: f32| tensor.values.iter().all(|&x| x == c);
            if path.ends_with("norm.weight") || path.ends_with("norm1.weight") {
                assert!(constant(1.0), "{path}");
            } else if path.ends_with(".bias") {
                assert!(constant(0.0), "{path}");
            }
        }
    }
}
