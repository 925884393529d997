//! Rotary position embeddings ("RoFormer", 2021) as transformers computes them: the scaling
//! rules a longer context is trained with (`linear`, `dynamic`, `yarn`, `llama3`), the settings
//! a model keeps (and a stage of the stream may change), and the cos/sin tables of one forward
//! pass in the rotate-half convention (element `i` pairs with `i + head_dim / 2`).

use burn::tensor::{Tensor, TensorData, backend::Backend};
use cpt_core::fused::{self, FusedOps};
use serde::{Deserialize, Serialize};

/// Rotary-frequency scaling, as transformers' `rope_scaling` (`rope_type` selects the rule).
/// Continuing pre-training at a longer context is an edit of this and `rope_theta`
/// ("Effective Long-Context Scaling of Foundation Models", 2023).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// Context extension factor.
        factor: f64,
    },
    /// Llama 3.1's band-wise rule: long wavelengths divided by `factor`, short ones kept, the
    /// band between interpolated smoothly.
    Llama3 {
        /// Context extension factor.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled fully.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length of the original pre-training.
        original_max_position_embeddings: usize,
    },
    /// Dynamic NTK scaling: unchanged up to `max_position_embeddings`; past it, the base grows
    /// with the sequence length `L` as `theta · (factor·L/max − (factor − 1))^(d/(d−2))`.
    ///
    /// transformers keeps the longest length seen until a sequence within the original
    /// context resets it; cpt computes the base from each forward pass's own length, which is
    /// the same for training (every batch of a stage has one length) and for generation (the
    /// length only grows).
    Dynamic {
        /// Context extension factor.
        factor: f64,
    },
    /// YaRN ("YaRN: Efficient Context Window Extension of Large Language Models", 2023):
    /// frequencies with fewer than `beta_slow` rotations over the original context are
    /// interpolated by `factor`, those with more than `beta_fast` kept, a linear ramp between;
    /// cos and sin are scaled by the attention factor (`0.1·ln(factor) + 1` by default).
    Yarn {
        /// Context extension factor.
        factor: f64,
        /// Context length of the original pre-training (default: `max_position_embeddings`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        original_max_position_embeddings: Option<usize>,
        /// Rotations above which a frequency is kept (default 32).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beta_fast: Option<f64>,
        /// Rotations below which a frequency is interpolated (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beta_slow: Option<f64>,
        /// Scale of cos and sin (default: from `factor`, `mscale` and `mscale_all_dim`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attention_factor: Option<f64>,
        /// DeepSeek's numerator multiplier of the default attention factor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mscale: Option<f64>,
        /// DeepSeek's denominator multiplier of the default attention factor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mscale_all_dim: Option<f64>,
        /// Round the ramp's bounds outwards to whole dimensions (default `true`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncate: Option<bool>,
    },
}

/// What the rotary embedding of a model needs: its base, scaling rule, head width and original
/// context. Kept by the model (not a parameter), so a stage of the stream can change it.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSettings {
    /// RoPE base.
    pub theta: f64,
    /// Frequency scaling, if any.
    pub scaling: Option<RopeScaling>,
    /// Per-head width.
    pub head_dim: usize,
    /// The config's `max_position_embeddings` (dynamic scaling starts past it; YaRN's default
    /// original context).
    pub max_position_embeddings: usize,
}

impl RopeSettings {
    /// Inverse frequencies `[head_dim / 2]` and the factor cos and sin are scaled by, for a
    /// forward pass over positions `0..len`, computed in f32 as transformers computes them
    /// (`modeling_rope_utils`), with the scaling rule applied.
    pub fn frequencies(&self, len: usize) -> (Vec<f32>, f32) {
        let width = self.head_dim;
        let exponents = (0..width / 2).map(|i| (2 * i) as f32 / width as f32);
        let unscaled = |theta: f64| -> Vec<f32> {
            exponents
                .clone()
                .map(|e| 1.0 / (theta as f32).powf(e))
                .collect()
        };
        let base = || unscaled(self.theta);
        match &self.scaling {
            None => (base(), 1.0),
            Some(RopeScaling::Linear { factor }) => {
                (base().iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let original = *original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (original / low, original / high);
                let scaled = base()
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (original / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                (scaled, 1.0)
            }
            Some(RopeScaling::Dynamic { factor }) => {
                // The base is a Python float (f64) in transformers; the powers are f32.
                let max = self.max_position_embeddings as f64;
                let len = (len as f64).max(max);
                let d = width as f64;
                let theta =
                    self.theta * ((factor * len / max) - (factor - 1.0)).powf(d / (d - 2.0));
                (unscaled(theta), 1.0)
            }
            Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                mscale,
                mscale_all_dim,
                truncate,
            }) => {
                let original =
                    original_max_position_embeddings.unwrap_or(self.max_position_embeddings) as f64;
                let get_mscale = |scale: f64, m: f64| match scale <= 1.0 {
                    true => 1.0,
                    false => 0.1 * m * scale.ln() + 1.0,
                };
                let attention =
                    attention_factor.unwrap_or_else(|| match (mscale, mscale_all_dim) {
                        (Some(m), Some(all)) if *m != 0.0 && *all != 0.0 => {
                            get_mscale(*factor, *m) / get_mscale(*factor, *all)
                        }
                        _ => get_mscale(*factor, 1.0),
                    });
                let (fast, slow) = (beta_fast.unwrap_or(32.0), beta_slow.unwrap_or(1.0));
                let d = width as f64;
                // The dimension whose frequency turns `rotations` times over the original context.
                let correction_dim = |rotations: f64| {
                    d * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction_dim(fast), correction_dim(slow));
                if truncate.unwrap_or(true) {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, high) = (low.max(0.0), high.min(d - 1.0));
                let high = if low == high { high + 0.001 } else { high };
                // f32 from here on, as transformers' tensors.
                let (span, low, factor) = ((high - low) as f32, low as f32, *factor as f32);
                let powers: Vec<f32> = exponents.map(|e| (self.theta as f32).powf(e)).collect();
                let frequencies = powers
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        let ramp = ((i as f32 - low) / span).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        let (kept, interpolated) = (1.0 / p, 1.0 / (factor * p));
                        interpolated * (1.0 - extrapolation) + kept * extrapolation
                    })
                    .collect();
                (frequencies, attention as f32)
            }
        }
    }
}

/// `(heads, cos, sin)`: rotary tables repeated over a number of heads, `[1, seq·heads·width]`.
type HeadTables<B> = (usize, Tensor<B, 2>, Tensor<B, 2>);

/// Rotary embedding tables for one sequence length.
pub struct Rope<B: Backend> {
    /// `[1, seq, 1, head_dim]`.
    cos: Tensor<B, 4>,
    /// `[1, seq, 1, head_dim]`.
    sin: Tensor<B, 4>,
    /// `(heads, cos, sin)` with the tables repeated over `heads` (`[1, seq·heads·head_dim]`),
    /// made on first use for each head count and shared by all layers: a product with a table
    /// that differs from `x` in its batch dimension only is one contiguous sweep, while one
    /// broadcast over heads in the middle falls back to element-by-element strided indexing.
    per_heads: std::cell::RefCell<Vec<HeadTables<B>>>,
    /// The signed permutation `rotate_half` as a `[head_dim, head_dim]` matrix.
    rotate_half: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `offset..offset + seq` with inverse frequencies `inv_freq`
    /// (`[head_dim / 2]`) and cos and sin multiplied by `scale` (see
    /// [`RopeSettings::frequencies`]).
    pub fn new(
        seq: usize,
        offset: usize,
        inv_freq: &[f32],
        scale: f32,
        device: &B::Device,
    ) -> Self {
        let half = inv_freq.len();
        let head_dim = 2 * half;
        // Computed on the host in f32 with transformers' formula, so the tables match its own:
        // angle = position × inv_freq, repeated for both halves of the head.
        let mut cos = Vec::with_capacity(seq * head_dim);
        let mut sin = Vec::with_capacity(seq * head_dim);
        for pos in offset..offset + seq {
            for i in 0..head_dim {
                let angle = pos as f32 * inv_freq[i % half];
                cos.push(angle.cos() * scale);
                sin.push(angle.sin() * scale);
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::<B, 4>::from_data(TensorData::new(v, [1, seq, 1, head_dim]), device)
        };
        // rotate_half(x) = [-x2, x1] = x · P with P[i + half][i] = -1 and P[i][i + half] = 1.
        // Exact (one ±1 per column), and a matmul reads and writes contiguous rows, where the
        // narrow/neg/cat composite makes three strided copies and their gradients.
        let mut rotation = vec![0.0f32; head_dim * head_dim];
        for i in 0..half {
            rotation[(i + half) * head_dim + i] = -1.0;
            rotation[i * head_dim + i + half] = 1.0;
        }
        Self {
            cos: table(cos),
            sin: table(sin),
            per_heads: Default::default(),
            rotate_half: Tensor::from_data(TensorData::new(rotation, [head_dim, head_dim]), device),
        }
    }
}

impl<B: FusedOps> Rope<B> {
    /// Rotate `x` `[batch, seq, heads, head_dim]`: `x * cos + rotate_half(x) * sin`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dims = x.dims();
        let [batch, seq, heads, width] = dims;
        let (cos, sin) = self.tables(heads);
        // As `[batch, seq·heads·width]` against `[1, seq·heads·width]` tables, each product is
        // one row shared across the batch, a pattern the backends sweep contiguously.
        let x = x.reshape([batch, seq * heads * width]);
        fused::rotary(x, cos, sin, self.rotate_half.clone()).reshape(dims)
    }
}

impl<B: Backend> Rope<B> {
    /// The cos and sin tables repeated over `heads` heads, flattened to `[1, seq·heads·width]`.
    fn tables(&self, heads: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let mut cached = self.per_heads.borrow_mut();
        if let Some((_, cos, sin)) = cached.iter().find(|(h, _, _)| *h == heads) {
            return (cos.clone(), sin.clone());
        }
        let flat = |t: Tensor<B, 4>| {
            let n = t.dims().iter().product::<usize>() * heads;
            t.repeat_dim(2, heads).reshape([1, n])
        };
        let (cos, sin) = (flat(self.cos.clone()), flat(self.sin.clone()));
        cached.push((heads, cos.clone(), sin.clone()));
        (cos, sin)
    }
}
