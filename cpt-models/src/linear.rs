//! A linear layer with an optional low-rank adapter (LoRA: "LoRA: Low-Rank Adaptation of Large
//! Language Models", 2021; rsLoRA scaling: "A Rank Stabilization Scaling Factor for Fine-Tuning
//! with LoRA", 2023).
//!
//! Without an adapter its parameters are exactly burn's `Linear` (`weight` `[in, out]`,
//! `bias`), so checkpoints and the Hugging Face key map do not change; with one it adds
//! `lora_a` `[in, r]` and `lora_b` `[r, out]` and computes `x·W + b + s·(x·A)·B`.

use crate::blocks::Init;
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use cpt_core::SplitMix64;

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
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let x = x.reshape([dims[..D - 1].iter().product::<usize>(), d_in]);
        let mut y = x.clone().matmul(self.weight.val());
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze::<2>();
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
            let low = x.matmul(a.val()).matmul(b.val());
            y = y + low.mul_scalar(self.lora_scaling);
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
