//! Pieces the transformer models share: seeded weight draws, exact GELU, LayerNorm with
//! PyTorch's parameter names, multi-head attention and the patch projection of vision towers.
//! Each model file composes them under its own transformers names.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

/// `value`'s replacement drawn from cpt's RNG keyed by `(seed, path)`: normal with standard
/// deviation `std`. Keying by path (not by burn's backend RNG, which is global and differs per
/// backend) gives the same model for the same seed on every backend and thread.
pub fn seeded_normal<B: Backend>(
    seed: u64,
    path: &str,
    value: &Tensor<B, 1>,
    std: f64,
) -> Tensor<B, 1> {
    let n = value.dims()[0];
    let mut rng =
        cpt_core::SplitMix64::derive(seed, &[cpt_core::rng::stable_hash(path.as_bytes())]);
    let values: Vec<f32> = (0..n).map(|_| (rng.next_normal() * std) as f32).collect();
    Tensor::from_data(TensorData::new(values, [n]), &value.device())
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
    pub fn new(width: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([width], device)),
            bias: Param::from_tensor(Tensor::zeros([width], device)),
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
