//! A linear layer with an optional low-rank adapter (LoRA: "LoRA: Low-Rank Adaptation of Large
//! Language Models", 2021; rsLoRA scaling: "A Rank Stabilization Scaling Factor for Fine-Tuning
//! with LoRA", 2023).
//!
//! Without an adapter its parameters are exactly burn's `Linear` (`weight` `[in, out]`,
//! `bias`), so checkpoints and the Hugging Face key map do not change; with one it adds
//! `lora_a` `[in, r]` and `lora_b` `[r, out]` and computes `x·W + b + s·(x·A)·B`.

use crate::blocks::Init;
use burn::module::{Module, Param};
use burn::tensor::{DType, FloatDType, Tensor, TensorData, backend::Backend};
use cpt_core::SplitMix64;
use cpt_core::fused::{self, FusedOps};

pub use cpt_core::LoraSpec;

/// A linear layer `y = x·W + b`, with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Adapter down-projection `[in, r]`.
    pub lora_a: Option<Param<Tensor<B, 2>>>,
    /// Adapter up-projection `[r, out]`, zero at creation so the adapter starts as a no-op.
    pub lora_b: Option<Param<Tensor<B, 2>>>,
    /// Adapter scale s.
    pub lora_scaling: f64,
    /// Dropout probability on the adapter's input during training.
    pub lora_dropout: f64,
}

impl<B: Backend> Linear<B> {
    /// A layer `d_in → d_out`: weight normal with standard deviation `std`, zero bias when
    /// `bias`, no adapter.
    pub fn new(init: &Init<'_, B>, d_in: usize, d_out: usize, bias: bool, std: f64) -> Self {
        Self {
            weight: init.normal("weight", [d_in, d_out], std),
            bias: bias.then(|| init.zeros([d_out])),
            lora_a: None,
            lora_b: None,
            lora_scaling: 0.0,
            lora_dropout: 0.0,
        }
    }

    /// # Shapes
    /// `x`: `[..., in]` → `[..., out]`.
    ///
    /// Leading dimensions are flattened into one so every product is a single 2-D matmul: a
    /// batched matmul against the weight broadcast over the batch would, in its backward pass,
    /// materialise one `[in, out]` weight gradient per batch row and then sum them.
    ///
    /// Inside a mixed-precision scope ([`cpt_core::precision::autocast`]) the input, weight,
    /// bias and adapter are cast to the compute dtype and the output back to the input's dtype,
    /// as `torch.autocast` runs `F.linear`: this is the one place a model changes precision, so
    /// the residual stream, norms, softmax and loss around it stay `f32`. The casts are
    /// differentiable and hand the gradients back in the parameters' own dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_with(x, |a, b| a.matmul(b), |t, dtype| t.cast(dtype))
    }

    /// [`Linear::forward`] with the products and casts of `multiply` and `cast`.
    fn forward_with<const D: usize>(
        &self,
        x: Tensor<B, D>,
        multiply: fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
        cast: fn(Tensor<B, 2>, FloatDType) -> Tensor<B, 2>,
    ) -> Tensor<B, D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let x = x.reshape([dims[..D - 1].iter().product::<usize>(), d_in]);
        let source = x.dtype();
        let compute = cpt_core::precision::compute_dtype().filter(|&d| DType::from(d) != source);
        let low = |t: Tensor<B, 2>| match compute {
            Some(dtype) => cast(t, dtype),
            None => t,
        };
        let x = low(x);
        let mut y = multiply(x.clone(), low(self.weight.val()));
        if let Some(bias) = &self.bias {
            y = y + low(bias.val().unsqueeze::<2>());
        }
        if let (Some(a), Some(b)) = (&self.lora_a, &self.lora_b) {
            let p = self.lora_dropout;
            // Dropout only where gradients flow (training), as PEFT's nn.Dropout in train mode.
            let x = if p > 0.0 && B::ad_enabled(&x.device()) {
                let keep = x.random_like(burn::tensor::Distribution::Bernoulli(1.0 - p));
                x * keep / (1.0 - p)
            } else {
                x
            };
            let low_rank = multiply(multiply(x, low(a.val())), low(b.val()));
            y = y + low_rank.mul_scalar(self.lora_scaling);
        }
        if compute.is_some() {
            y = cast(y, FloatDType::from(source));
        }
        dims[D - 1] = y.dims()[1];
        y.reshape(dims)
    }

    /// Attach a fresh adapter: `A` uniform in ±1/√in (PEFT's default, Kaiming-uniform with
    /// a = √5) drawn from `seed`, `B` zero.
    pub fn with_adapter(mut self, spec: &LoraSpec, seed: u64) -> Self {
        let [d_in, d_out] = self.weight.dims();
        let device = self.weight.device();
        let bound = 1.0 / (d_in as f64).sqrt();
        let mut rng = SplitMix64::new(seed);
        let values: Vec<f32> = (0..d_in * spec.rank)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
            .collect();
        let a = Tensor::from_data(TensorData::new(values, [d_in, spec.rank]), &device);
        self.lora_a = Some(Param::from_tensor(a));
        self.lora_b = Some(Param::from_tensor(Tensor::zeros(
            [spec.rank, d_out],
            &device,
        )));
        self.lora_scaling = spec.scaling();
        self.lora_dropout = spec.dropout;
        self
    }

    /// Fold the adapter into the weight (`W ← W + s·A·B`) and drop it.
    pub fn merged(mut self) -> Self {
        if let (Some(a), Some(b)) = (self.lora_a.take(), self.lora_b.take()) {
            let delta = a.val().matmul(b.val()).mul_scalar(self.lora_scaling);
            let (id, weight, mapper) = self.weight.consume();
            let tracked = weight.is_require_grad();
            let mut merged = (weight + delta).detach();
            if tracked {
                merged = merged.require_grad();
            }
            self.weight = Param::from_mapped_value(id, merged, mapper);
        }
        self.lora_scaling = 0.0;
        self.lora_dropout = 0.0;
        self
    }

    /// Drop the adapter without merging it.
    pub fn without_adapter(mut self) -> Self {
        self.lora_a = None;
        self.lora_b = None;
        self.lora_scaling = 0.0;
        self.lora_dropout = 0.0;
        self
    }
}

impl<B: FusedOps> Linear<B> {
    /// [`Linear::forward`] with its products and casts recorded by `cpt_core::fused`, so that a
    /// decoder layer recomputed in the backward pass ([`cpt_core::fused::recompute`]) does not
    /// keep them; outside that scope the same ops as [`Linear::forward`].
    pub fn forward_fused<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_with(x, fused::matmul, fused::cast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use cpt_core::precision::{Precision, autocast};

    type B = Autodiff<Flex>;

    /// `x·W + b` with values whose products are not exact in bfloat16.
    fn layer_and_input() -> (Linear<B>, Tensor<B, 3>) {
        let device = Default::default();
        let w: Vec<f32> = (0..12).map(|i| 0.1 + i as f32 / 7.0).collect();
        let layer = Linear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [4, 3]), &device)),
            bias: Some(Param::from_tensor(Tensor::from_floats(
                [0.3, -0.2, 0.01],
                &device,
            ))),
            lora_a: None,
            lora_b: None,
            lora_scaling: 0.0,
            lora_dropout: 0.0,
        };
        let x: Vec<f32> = (0..8).map(|i| 1.0 / (i as f32 + 3.0)).collect();
        let x = Tensor::from_data(TensorData::new(x, [1, 2, 4]), &device).require_grad();
        (layer, x)
    }

    #[test]
    fn mixed_precision_computes_low_and_returns_f32_with_f32_gradients() {
        let (layer, x) = layer_and_input();
        let exact = layer.forward(x.clone());
        for (precision, tolerance) in [(Precision::Bf16Mixed, 2e-2), (Precision::F16Mixed, 2e-3)] {
            let y = {
                let _scope = autocast(precision);
                layer.forward(x.clone())
            };
            assert_eq!(y.dtype(), DType::F32);
            let diff = (y.clone() - exact.clone()).abs().max().into_scalar();
            // Rounded to the compute dtype somewhere, but only by its precision.
            assert!(diff > 0.0 && diff < tolerance, "{precision:?}: {diff}");
            let grads = y.sum().backward();
            let gw = layer.weight.grad(&grads).expect("weight gradient");
            let gb = layer
                .bias
                .as_ref()
                .unwrap()
                .grad(&grads)
                .expect("bias gradient");
            assert_eq!((gw.dtype(), gb.dtype()), (DType::F32, DType::F32));
            assert_eq!(x.grad(&grads).expect("input gradient").dtype(), DType::F32);
            // d(sum y)/db = number of rows, exactly, in any precision.
            assert_eq!(gb.into_data().to_vec::<f32>().unwrap(), vec![2.0; 3]);
        }
        // Outside a scope the layer is f32 again, bit for bit.
        let again = layer.forward(x);
        assert_eq!(again.into_data(), exact.into_data());
    }
}
