//! `cpt plan CONFIG`: the memory a run will need, from its config alone — parameters per
//! component, fp32 weights, gradients and AdamW moments, and (for LLaMA) the activations one
//! micro-batch keeps for its backward pass.
//!
//! The activation estimate follows the accounting of Korthikanti et al., "Reducing Activation
//! Recomputation in Large Transformer Models" (2022), §4.1 — count every tensor the backward
//! pass reads, per layer — applied to what cpt's LLaMA actually saves (fused RMS norm, SwiGLU,
//! causal softmax and cross-entropy keep one tensor each) in fp32 rather than fp16.

use burn::module::Module;
use burn::tensor::backend::Backend;
use cpt_core::RunConfig;
use cpt_core::config::ActivationCheckpointing;
use cpt_core::params::visit_named;
use cpt_models::LlamaConfig;
use std::collections::BTreeMap;

/// Bytes of one fp32 value.
const F32: u64 = 4;

/// What a run holds in memory, before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Parameter count per component, in model order.
    pub components: Vec<(String, u64)>,
    /// Activations kept per micro-batch, where the architecture has an estimate.
    pub activations: Option<ActivationEstimate>,
}

/// Activations one micro-batch keeps for the backward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationEstimate {
    /// fp32 values kept per decoder layer.
    pub per_layer_values: u64,
    /// fp32 values of a decoder layer's input: all that `layers` checkpointing keeps of it.
    pub layer_input_values: u64,
    /// Decoder layers.
    pub layers: u64,
    /// fp32 values kept outside the layers (embeddings, final norm, logits).
    pub other_values: u64,
    /// The formula, in words, for the printout.
    pub formula: String,
}

impl ActivationEstimate {
    /// Bytes over the whole model.
    pub fn bytes(&self) -> u64 {
        (self.per_layer_values * self.layers + self.other_values) * F32
    }

    /// Bytes when every layer is recomputed in the backward pass (`layers`): each layer's
    /// input, one layer's activations at a time, and what lies outside the layers.
    pub fn recomputed_bytes(&self) -> u64 {
        (self.layer_input_values * self.layers + self.per_layer_values + self.other_values) * F32
    }
}

impl Plan {
    /// Parameters over all components.
    pub fn parameters(&self) -> u64 {
        self.components.iter().map(|(_, n)| n).sum()
    }

    /// Bytes of fp32 weights, gradients and both AdamW moments.
    pub fn state_bytes(&self) -> u64 {
        4 * self.parameters() * F32
    }

    /// Bytes of the activations one micro-batch keeps under `run`'s checkpointing, where the
    /// architecture has an estimate.
    pub fn activation_bytes(&self, run: &RunConfig) -> Option<u64> {
        self.activations.as_ref().map(|a| {
            if run.train.activation_checkpointing == ActivationCheckpointing::Layers {
                a.recomputed_bytes()
            } else {
                a.bytes()
            }
        })
    }

    /// Refuse a run whose estimate exceeds `available_bytes` of memory, naming the settings that
    /// shrink it. The estimate is a lower bound (no allocator slack, no teacher copies), so a run
    /// it passes may still not fit, but one it refuses cannot.
    pub fn check_fits(&self, run: &RunConfig, available_bytes: u64) -> Result<(), String> {
        let state = self.state_bytes();
        let activations = self.activation_bytes(run).unwrap_or(0);
        let needed = state + activations;
        if needed <= available_bytes {
            return Ok(());
        }
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        Err(format!(
            "this run needs at least {:.1} GiB of memory ({:.1} GiB of fp32 weights, gradients and \
             AdamW moments, {:.1} GiB of activations per micro-batch; `cpt plan` itemises it) but \
             {:.1} GiB are available. Lower `train.batch_size` (raise `train.grad_accum_steps` to \
             keep the batch), shorten `data.seq_len`, or set `train.activation_checkpointing = \
             \"layers\"`; `--skip-memory-check` runs it anyway",
            gib(needed),
            gib(state),
            gib(activations),
            gib(available_bytes)
        ))
    }

    /// The plan as the lines `cpt plan` prints.
    pub fn render(&self, run: &RunConfig) -> String {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let params = self.parameters();
        let mut out = String::new();
        out.push_str(&format!(
            "model: {}, micro-batch {}",
            run.model.architecture, run.train.batch_size
        ));
        if self.activations.is_some() {
            out.push_str(&format!(" × {} tokens", run.data.seq_len));
        }
        out.push('\n');
        out.push_str("parameters:\n");
        for (name, n) in &self.components {
            out.push_str(&format!("  {name:<32} {n:>14}\n"));
        }
        out.push_str(&format!("  {:<32} {params:>14}\n", "total"));
        let weights = params * F32;
        let rows = [
            ("weights (fp32)", weights),
            ("gradients (fp32)", weights),
            ("AdamW moments (2 × fp32)", 2 * weights),
        ];
        let mut total = 0;
        out.push_str("memory:\n");
        for (name, bytes) in rows {
            total += bytes;
            out.push_str(&format!("  {name:<32} {:>10.1} MiB\n", mib(bytes)));
        }
        let checkpointing = run.train.activation_checkpointing;
        match &self.activations {
            Some(a) if checkpointing == ActivationCheckpointing::Layers => {
                total += a.recomputed_bytes();
                out.push_str(&format!(
                    "  {:<32} {:>10.1} MiB\n",
                    "activations per micro-batch",
                    mib(a.recomputed_bytes())
                ));
                out.push_str(&format!(
                    "    layers checkpointing: each layer's input (s·b·h) × {} layers, one \
                     layer's activations at a time ({:.1} MiB without it: {}), and what lies \
                     outside the layers\n",
                    a.layers,
                    mib(a.bytes()),
                    a.formula
                ));
            }
            Some(a) => {
                total += a.bytes();
                out.push_str(&format!(
                    "  {:<32} {:>10.1} MiB\n",
                    "activations per micro-batch",
                    mib(a.bytes())
                ));
                out.push_str(&format!("    {}\n", a.formula));
                if checkpointing == ActivationCheckpointing::Balanced {
                    out.push_str(
                        "    balanced checkpointing recomputes memory-bound (element-wise) ops only; \
                         the tensors counted here are outputs of matmuls and fused kernels, which \
                         it keeps, so the estimate does not change\n",
                    );
                }
            }
            None => out.push_str("  activations: no estimate for this architecture\n"),
        }
        out.push_str(&format!("  {:<32} {:>10.1} MiB\n", "total", mib(total)));
        out
    }
}

/// LLaMA's parameters per component and its activations per micro-batch of `batch` sequences
/// of `seq` tokens, from the config alone.
pub fn llama(config: &LlamaConfig, batch: usize, seq: usize) -> Plan {
    let [v, h, i, l] = [
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
    ]
    .map(|x| x as u64);
    let (a, kv, d) = (
        config.num_attention_heads as u64,
        config.kv_heads() as u64,
        config.head_width() as u64,
    );
    let attention_bias = if config.attention_bias {
        a * d + 2 * kv * d + h
    } else {
        0
    };
    let mlp_bias = if config.mlp_bias { 2 * i + h } else { 0 };
    let mut components = vec![
        ("embed_tokens".to_string(), v * h),
        (
            "attention".to_string(),
            l * (2 * h * a * d + 2 * h * kv * d + attention_bias),
        ),
        ("mlp".to_string(), l * (3 * h * i + mlp_bias)),
        ("norms".to_string(), l * 2 * h + h),
    ];
    if !config.tie_word_embeddings {
        components.push(("lm_head".to_string(), v * h));
    }
    let (b, s) = (batch as u64, seq as u64);
    let activations = ActivationEstimate {
        // Two RMS norms (input and output each) 4h; q, k, v before and after RoPE and the
        // attention context 3ad + 3kv·d; softmax probabilities a·s per token; SwiGLU's gate, up
        // and output 3i.
        per_layer_values: s * b * (4 * h + 3 * a * d + 3 * kv * d + 3 * i) + b * a * s * s,
        layer_input_values: s * b * h,
        layers: l,
        // Embedding output, final norm (input and output), logits.
        other_values: s * b * (3 * h + v),
        formula: format!(
            "per layer s·b·(4h + 3a·d + 3kv·d + 3i) + a·b·s² fp32 values (s={s}, b={b}, h={h}, \
             a={a}, kv={kv}, d={d}, i={i}), × {l} layers, plus s·b·(3h + V) for embeddings, \
             final norm and logits (V={v})"
        ),
    };
    Plan {
        components,
        activations: Some(activations),
    }
}

/// Parameters of a built model per component: the first path segments up to the first
/// repeated-layer index or leaf (`vit.embeddings`, `vit.encoder`, `classifier`), in model order.
pub fn counted<B: Backend, M: Module<B>>(model: &M) -> Plan {
    let mut order: Vec<String> = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    visit_named(model, |path, _, shape| {
        let parts: Vec<&str> = path.split('.').collect();
        let component = parts[..parts.len() - 1]
            .iter()
            .take_while(|p| p.parse::<usize>().is_err())
            .take(2)
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        let component = if component.is_empty() {
            path.to_string()
        } else {
            component
        };
        if !counts.contains_key(&component) {
            order.push(component.clone());
        }
        *counts.entry(component).or_default() += shape.iter().product::<usize>() as u64;
    });
    Plan {
        components: order
            .into_iter()
            .map(|c| {
                let n = counts[&c];
                (c, n)
            })
            .collect(),
        activations: None,
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use cpt_models::LlamaForCausalLM;

    fn tiny(tied: bool, attention_bias: bool, mlp_bias: bool) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 64,
            hidden_size: 16,
            intermediate_size: 40,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: Some(6),
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 64,
            tie_word_embeddings: tied,
            attention_bias,
            mlp_bias,
            initializer_range: 0.02,
            rope_scaling: None,
        }
    }

    #[test]
    fn llama_parameter_count_equals_the_built_model() {
        for (tied, attention_bias, mlp_bias) in [
            (false, false, false),
            (true, false, false),
            (false, true, true),
        ] {
            let config = tiny(tied, attention_bias, mlp_bias);
            let model: LlamaForCausalLM<Flex> = config.init_seeded(1, &Default::default());
            let plan = llama(&config, 2, 8);
            assert_eq!(plan.parameters() as usize, model.num_params(), "{config:?}");
            assert_eq!(counted(&model).parameters(), plan.parameters());
        }
    }

    #[test]
    fn activation_estimate_by_hand() {
        // h=16, a=4, kv=2, d=6, i=40, s=8, b=2: per layer 16·(64 + 72 + 36 + 120) + 2·4·64.
        let plan = llama(&tiny(false, false, false), 2, 8);
        let a = plan.activations.unwrap();
        assert_eq!(a.per_layer_values, 16 * 292 + 512);
        assert_eq!(a.other_values, 16 * (48 + 64));
        assert_eq!(a.bytes(), (2 * (16 * 292 + 512) + 16 * 112) * 4);
        // Recomputed: two layer inputs (s·b·h = 16·16 values each), one layer's activations.
        assert_eq!(
            a.recomputed_bytes(),
            (2 * 16 * 16 + (16 * 292 + 512) + 16 * 112) * 4
        );
    }
}
