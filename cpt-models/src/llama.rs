//! LLaMA decoder-only language model ("LLaMA: Open and Efficient Foundation Language Models",
//! 2023), in the Hugging Face `LlamaForCausalLM` layout.
//!
//! RMSNorm, rotary position embeddings in the Hugging Face rotate-half convention (element `i`
//! pairs with `i + head_dim / 2`), SwiGLU MLP, grouped-query attention, tied or untied
//! embeddings. Module field names reproduce the transformers parameter names, so the Hugging Face
//! key map is the identity up to the transposition of linear weights (burn stores `[in, out]`,
//! PyTorch `[out, in]`).

use crate::adapters::{self, LinearFn, LoraLinears, child};
use crate::blocks::{Init, embedding};
use crate::linear::Linear;
use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use cpt_core::fused::{
    FusedOps, causal_softmax, cross_entropy, layer_boundary, matmul, rms_norm, swiglu,
};
use cpt_core::{StepOutput, TaskModel, TokenBatch};
use serde::{Deserialize, Serialize};

pub use crate::rope::{Rope, RopeScaling, RopeSettings};

/// LLaMA hyperparameters, with the field names of transformers' `LlamaConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Longest sequence the model is meant for.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Share the input embedding with the output projection.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Standard deviation of the normal initialisation of weights.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// RoPE frequency scaling for longer contexts (transformers' `rope_scaling`).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
}

pub(crate) fn default_rope_theta() -> f64 {
    10_000.0
}
pub(crate) fn default_rms_norm_eps() -> f64 {
    1e-6
}
pub(crate) fn default_max_positions() -> usize {
    2048
}
pub(crate) fn default_initializer_range() -> f64 {
    0.02
}

impl LlamaConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_width(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The rotary-embedding settings of this config.
    pub fn rope(&self) -> RopeSettings {
        RopeSettings {
            theta: self.rope_theta,
            scaling: self.rope_scaling.clone(),
            head_dim: self.head_width(),
            max_position_embeddings: self.max_position_embeddings,
        }
    }

    /// Rotary inverse frequencies `[head_width / 2]` for sequences within
    /// `max_position_embeddings` (see [`RopeSettings::frequencies`]).
    pub fn inv_freq(&self) -> Vec<f32> {
        self.rope().frequencies(self.max_position_embeddings).0
    }

    /// Check the shape constraints, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        if !self.head_width().is_multiple_of(2) {
            return Err("the head width must be even for rotary embeddings".into());
        }
        Ok(())
    }

    /// Build the model with weights drawn from `seed` alone, as transformers initialises them
    /// (normal with std `initializer_range`, zero biases, unit norms), from cpt's own RNG keyed
    /// by parameter path: the same seed gives the same model on every backend and in every
    /// thread (see [`Init`]).
    pub fn init_seeded<B: Backend>(&self, seed: u64, device: &B::Device) -> LlamaForCausalLM<B> {
        self.build(&Init::seeded(seed, device))
    }

    /// Build the model with the same rules as [`LlamaConfig::init_seeded`], drawn from burn's
    /// backend RNG. Prefer `init_seeded` for reproducible runs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlamaForCausalLM<B> {
        self.build(&Init::backend(device))
    }

    /// transformers' `LlamaPreTrainedModel._init_weights`: every linear and embedding weight
    /// normal with std `initializer_range`, biases zero, norms one.
    fn build<B: Backend>(&self, init: &Init<'_, B>) -> LlamaForCausalLM<B> {
        let std = self.initializer_range;
        let linear = |init: &Init<'_, B>, d_in: usize, d_out: usize, bias: bool| {
            Linear::new(init, d_in, d_out, bias, std)
        };
        let (hidden, inner) = (self.hidden_size, self.intermediate_size);
        let (heads, kv_heads, head) =
            (self.num_attention_heads, self.kv_heads(), self.head_width());
        let model = init.at("model");
        let layers = (0..self.num_hidden_layers)
            .map(|i| {
                let layer = model.at("layers").at(i);
                let (attn, mlp) = (layer.at("self_attn"), layer.at("mlp"));
                let bias = self.attention_bias;
                LlamaDecoderLayer {
                    self_attn: LlamaAttention {
                        q_proj: linear(&attn.at("q_proj"), hidden, heads * head, bias),
                        k_proj: linear(&attn.at("k_proj"), hidden, kv_heads * head, bias),
                        v_proj: linear(&attn.at("v_proj"), hidden, kv_heads * head, bias),
                        o_proj: linear(&attn.at("o_proj"), heads * head, hidden, bias),
                        num_heads: heads,
                        num_kv_heads: kv_heads,
                        head_dim: head,
                    },
                    mlp: LlamaMlp {
                        gate_proj: linear(&mlp.at("gate_proj"), hidden, inner, self.mlp_bias),
                        up_proj: linear(&mlp.at("up_proj"), hidden, inner, self.mlp_bias),
                        down_proj: linear(&mlp.at("down_proj"), inner, hidden, self.mlp_bias),
                    },
                    input_layernorm: RmsNorm::new(
                        &layer.at("input_layernorm"),
                        hidden,
                        self.rms_norm_eps,
                    ),
                    post_attention_layernorm: RmsNorm::new(
                        &layer.at("post_attention_layernorm"),
                        hidden,
                        self.rms_norm_eps,
                    ),
                }
            })
            .collect();
        LlamaForCausalLM {
            model: LlamaModel {
                embed_tokens: embedding(&model.at("embed_tokens"), self.vocab_size, hidden, std),
                layers,
                norm: RmsNorm::new(&model.at("norm"), hidden, self.rms_norm_eps),
                rope: self.rope(),
            },
            lm_head: (!self.tie_word_embeddings)
                .then(|| linear(&init.at("lm_head"), hidden, self.vocab_size, false)),
        }
    }
}

/// Root-mean-square layer norm with a learned per-channel scale (`weight`, as in transformers).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel scale, `[width]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Unit scale.
    fn new(init: &Init<'_, B>, width: usize, eps: f64) -> Self {
        Self {
            weight: init.ones([width]),
            eps,
        }
    }

    /// # Shapes
    /// `x`: `[batch, seq, width]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: FusedOps,
    {
        rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Grouped-query self-attention with rotary position embeddings.
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub o_proj: Linear<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

impl<B: FusedOps> LlamaAttention<B> {
    /// Self-attention over `x`, after the `cache`d keys and values of earlier positions (if any),
    /// which it extends with this call's.
    ///
    /// # Shapes
    /// `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`; position `i` attends to the cached
    /// positions and to positions `..= i` of `x`.
    ///
    /// # Layout
    /// Heads stay where the projections put them (`[batch, seq, heads, head_dim]`, no copy);
    /// the score and value products read permuted views of them, which the matmul takes as
    /// strides. Grouped-query attention indexes query heads as `[kv_heads, groups]` and
    /// broadcasts each key/value head over its group, so K and V are never repeated.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (kv_heads, width) = (self.num_kv_heads, self.head_dim);
        let groups = self.num_heads / kv_heads;
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, width]);
        let q = rope.apply(split(self.q_proj.forward_fused(x.clone()), self.num_heads));
        let mut k = rope.apply(split(self.k_proj.forward_fused(x.clone()), kv_heads));
        let mut v = split(self.v_proj.forward_fused(x), kv_heads);
        if let Some(cache) = cache {
            if let Some((past_k, past_v)) = cache.kv.take() {
                k = Tensor::cat(vec![past_k, k], 1);
                v = Tensor::cat(vec![past_v, v], 1);
            }
            cache.kv = Some((k.clone(), v.clone()));
        }
        let keys = k.dims()[1];
        // [batch, kv, groups, seq, width] · [batch, kv, 1, width, keys].
        let q = q
            .reshape([batch, seq, kv_heads, groups, width])
            .permute([0, 2, 3, 1, 4]);
        let k = k
            .reshape([batch, keys, kv_heads, 1, width])
            .permute([0, 2, 3, 4, 1]);
        let v = v
            .reshape([batch, keys, kv_heads, 1, width])
            .permute([0, 2, 3, 1, 4]);
        // Scaling, the causal mask and the softmax are one fused operation (see cpt_core::fused).
        let scores = matmul(q, k).reshape([batch * self.num_heads, seq, keys]);
        let probs = causal_softmax(scores, 1.0 / (width as f64).sqrt());
        let attended = matmul(probs.reshape([batch, kv_heads, groups, seq, keys]), v);
        let merged =
            attended
                .permute([0, 3, 1, 2, 4])
                .reshape([batch, seq, self.num_heads * width]);
        self.o_proj.forward_fused(merged)
    }
}

/// SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: Linear<B>,
    /// Up projection.
    pub up_proj: Linear<B>,
    /// Down projection.
    pub down_proj: Linear<B>,
}

impl<B: FusedOps> LlamaMlp<B> {
    /// # Shapes
    /// `x`: `[batch, seq, hidden]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gated = swiglu(
            self.gate_proj.forward_fused(x.clone()),
            self.up_proj.forward_fused(x),
        );
        self.down_proj.forward_fused(gated)
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer<B: Backend> {
    /// Attention block.
    pub self_attn: LlamaAttention<B>,
    /// MLP block.
    pub mlp: LlamaMlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: FusedOps> LlamaDecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let normed = self.input_layernorm.forward(x.clone());
        let x = x + self.self_attn.forward(normed, rope, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// Embeddings, decoder stack and final norm (`model.*` in transformers).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<LlamaDecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Rotary-embedding settings (from the config, not a parameter; a stage of the stream may
    /// change them, see [`LlamaForCausalLM::with_rope`]).
    #[module(skip)]
    pub rope: RopeSettings,
}

/// The causal language model: [`LlamaModel`] and an output projection (`lm_head`), or the
/// transposed input embedding when embeddings are tied.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM<B: Backend> {
    /// Embeddings, decoder stack, final norm.
    pub model: LlamaModel<B>,
    /// Output projection; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear<B>>,
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// The same weights under other rotary settings: a longer-context stage of the stream
    /// changes the base or the scaling rule, the weights carry over.
    pub fn with_rope(mut self, rope: RopeSettings) -> Self {
        self.model.rope = rope;
        self
    }
}

impl<B: FusedOps> LlamaForCausalLM<B> {
    /// Final hidden states.
    ///
    /// # Shapes
    /// `tokens`: `[batch, seq]` → `[batch, seq, hidden]`.
    pub fn hidden_states(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.hidden_states_cached(tokens, None)
    }

    /// Final hidden states of `tokens` placed after the positions already in `cache` (which
    /// this call extends); without a cache, `tokens` start at position 0.
    pub fn hidden_states_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [_, seq] = tokens.dims();
        let device = tokens.device();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let mut x = self.model.embed_tokens.forward(tokens);
        let (inv_freq, scale) = self.model.rope.frequencies(past + seq);
        let rope = Rope::new(seq, past, &inv_freq, scale, &device);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer(i));
            // Where a recomputing backward pass keeps the residual stream (the identity
            // otherwise; see cpt_core::fused::recompute).
            x = layer_boundary(layer.forward(x, &rope, layer_cache));
        }
        if let Some(cache) = cache {
            cache.len += seq;
        }
        self.model.norm.forward(x)
    }

    /// Next-token logits of `tokens` after the positions in `cache`, extending it: one call with
    /// the prompt, then one per generated token.
    ///
    /// # Shapes
    /// `tokens`: `[batch, seq]` → `[batch, seq, vocab]`.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let hidden = self.hidden_states_cached(tokens, Some(cache));
        self.project(hidden)
    }

    /// Next-token logits.
    ///
    /// # Shapes
    /// `tokens`: `[batch, seq]` → `[batch, seq, vocab]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.project(self.hidden_states(tokens))
    }

    /// Output projection of final hidden states.
    fn project(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                // One 2-D product against the transposed embedding (a strided view, which the
                // matmul reads without copying); see `Linear::forward` for why not 3-D.
                let [batch, seq, width] = hidden.dims();
                let embedding = self.model.embed_tokens.weight.val();
                let vocab = embedding.dims()[0];
                hidden
                    .reshape([batch * seq, width])
                    .matmul(embedding.transpose())
                    .reshape([batch, seq, vocab])
            }
        }
    }

    /// Upload a batch's token ids to the model's device.
    pub fn batch_tokens(&self, batch: &TokenBatch) -> Tensor<B, 2, Int> {
        let device = self.model.embed_tokens.weight.device();
        let ids: Vec<i64> = batch.tokens.iter().map(|&t| t as i64).collect();
        Tensor::from_data(
            TensorData::new(ids, [batch.batch_size, batch.seq_len]),
            &device,
        )
    }
}

/// Keys and values of one layer for the positions seen so far, `[batch, past, kv_heads, head]`.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

/// The key/value cache of a whole model, for incremental decoding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerCache { kv: None }; layers],
            len: 0,
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` before the first call.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn layer(&mut self, i: usize) -> &mut LayerCache<B> {
        &mut self.layers[i]
    }
}

/// Mean next-token cross-entropy of `logits` `[batch, seq, vocab]` against `tokens`
/// `[batch, seq]`: position `t` predicts token `t + 1`.
///
/// The fused cross-entropy (one node, one pass per row) runs over all `seq` positions of the
/// contiguous logits and the last one is weighted out, instead of first narrowing the logits to
/// `seq - 1` positions: the narrowed view is not contiguous, and would be copied element by
/// element through strided indexing.
pub fn causal_lm_loss<B: FusedOps>(
    logits: Tensor<B, 3>,
    tokens: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [batch, seq, _] = logits.dims();
    let weights: Vec<f32> = (0..batch * seq)
        .map(|i| if i % seq == seq - 1 { 0.0 } else { 1.0 })
        .collect();
    weighted_causal_lm_loss(logits, tokens, weights, batch * (seq - 1))
}

/// [`causal_lm_loss`] counting only some targets: position `t` weighs `weights[t]` (`[batch *
/// seq]`, row-major; 0 leaves the prediction of token `t + 1` out, as for metadata tokens) and
/// the sum is divided by `count`, the number of kept targets (a batch with none gives 0).
///
/// # Shapes
/// `logits`: `[batch, seq, vocab]`, `tokens`: `[batch, seq]` → `[1]`.
pub fn weighted_causal_lm_loss<B: FusedOps>(
    logits: Tensor<B, 3>,
    tokens: Tensor<B, 2, Int>,
    weights: Vec<f32>,
    count: usize,
) -> Tensor<B, 1> {
    let [batch, seq, vocab] = logits.dims();
    let device = logits.device();
    // Targets shifted left by one; the last position gets a dummy target 0 and weight 0.
    let targets = Tensor::cat(
        vec![
            tokens.narrow(1, 1, seq - 1),
            Tensor::zeros([batch, 1], &device),
        ],
        1,
    );
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [batch * seq]), &device);
    let per_token = cross_entropy(
        logits.reshape([batch * seq, vocab]),
        targets.reshape([batch * seq]),
    );
    (per_token * weights).sum().div_scalar(count.max(1) as f64)
}

impl<B: FusedOps> TaskModel<B> for LlamaForCausalLM<B> {
    type Batch = TokenBatch;

    fn forward_step(&self, batch: &TokenBatch) -> StepOutput<B> {
        let tokens = self.batch_tokens(batch);
        let hidden = self.hidden_states(tokens.clone());
        let [batch_size, _, width] = hidden.dims();
        // Pooled features for feature distillation: the mean final hidden state of each row.
        let features = hidden.clone().mean_dim(1).reshape([batch_size, width]);
        let logits = self.project(hidden);
        // Without a loss mask the weights and count are `causal_lm_loss`'s: every position but
        // each row's last, over `batch × (seq − 1)` targets.
        let loss = weighted_causal_lm_loss(
            logits.clone(),
            tokens,
            batch.target_weights(),
            batch.predicted_tokens(),
        );
        StepOutput {
            loss,
            logits: Some(logits),
            features: Some(features),
            count: batch.predicted_tokens(),
        }
    }
}

impl<B: Backend> LoraLinears<B> for LlamaAttention<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        self.q_proj = f(&child(prefix, "q_proj"), "q_proj", self.q_proj);
        self.k_proj = f(&child(prefix, "k_proj"), "k_proj", self.k_proj);
        self.v_proj = f(&child(prefix, "v_proj"), "v_proj", self.v_proj);
        self.o_proj = f(&child(prefix, "o_proj"), "o_proj", self.o_proj);
        self
    }
}

impl<B: Backend> LoraLinears<B> for LlamaMlp<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        self.gate_proj = f(&child(prefix, "gate_proj"), "gate_proj", self.gate_proj);
        self.up_proj = f(&child(prefix, "up_proj"), "up_proj", self.up_proj);
        self.down_proj = f(&child(prefix, "down_proj"), "down_proj", self.down_proj);
        self
    }
}

/// Every projection of every decoder layer; the LM head and embeddings carry no adapter.
impl<B: Backend> LoraLinears<B> for LlamaForCausalLM<B> {
    fn map_linears(mut self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self {
        let layers = child(&child(prefix, "model"), "layers");
        self.model.layers = std::mem::take(&mut self.model.layers)
            .into_iter()
            .enumerate()
            .map(|(i, mut layer)| {
                let at = child(&layers, i);
                layer.self_attn = layer.self_attn.map_linears(&child(&at, "self_attn"), f);
                layer.mlp = layer.mlp.map_linears(&child(&at, "mlp"), f);
                layer
            })
            .collect();
        self
    }
}

impl<B: Backend> cpt_core::AdapterModel for LlamaForCausalLM<B> {
    type Spec = crate::linear::LoraSpec;

    fn with_adapters(self, spec: &Self::Spec, seed: u64) -> Self {
        adapters::add_adapters(self, spec, seed)
    }

    fn merge_adapters(self) -> Self {
        adapters::merge_adapters(self)
    }

    fn drop_adapters(self) -> Self {
        adapters::drop_adapters(self)
    }
}
