//! LLaMA mechanics: shapes, causal masking, rotate-half RoPE, the loss, tied embeddings and the
//! Hugging Face parameter names.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use cpt_core::params::named_tensors;
use cpt_core::{TaskModel, TokenBatch};
use cpt_models::llama::{Rope, causal_lm_loss};
use cpt_models::{LlamaConfig, LlamaForCausalLM};

type B = Flex;

fn config(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 64,
        hidden_size: 16,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
        attention_bias: false,
        mlp_bias: false,
        initializer_range: 0.2,
        rope_scaling: None,
    }
}

fn model(tied: bool) -> LlamaForCausalLM<B> {
    config(tied).init_seeded(3, &Default::default())
}

fn tokens(rows: &[&[i64]]) -> Tensor<B, 2, Int> {
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), rows[0].len()]),
        &Default::default(),
    )
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

#[test]
fn logits_have_batch_seq_vocab_shape() {
    let logits = model(false).forward(tokens(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]));
    assert_eq!(logits.dims(), [2, 5, 64]);
}

#[test]
fn a_position_never_sees_later_tokens() {
    let m = model(false);
    let a = m.forward(tokens(&[&[1, 2, 3, 4, 5, 6]]));
    let b = m.forward(tokens(&[&[1, 2, 3, 40, 50, 60]]));
    let prefix = |t: Tensor<B, 3>| values(t.narrow(1, 0, 3));
    let suffix = |t: Tensor<B, 3>| values(t.narrow(1, 3, 3));
    assert_eq!(
        prefix(a.clone()),
        prefix(b.clone()),
        "positions 0..3 changed with later tokens"
    );
    assert_ne!(
        suffix(a),
        suffix(b),
        "later positions must depend on their own tokens"
    );
}

#[test]
fn rope_rotates_element_i_with_element_i_plus_half() {
    // One head of width 4 at position 3: pairs (0, 2) and (1, 3), angles 3·θ^(-2i/4).
    let device = Default::default();
    let rope = Rope::<B>::new(4, 0, &[1.0, 1.0 / 10.0], 1.0, &device);
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 4]),
        &device,
    );
    let x = x.unsqueeze::<3>().repeat_dim(1, 4).unsqueeze_dim::<4>(2); // [1, 4 positions, 1, 4]
    let out = values(rope.apply(x).narrow(1, 3, 1));
    let (a0, a1) = (3.0f32, 3.0f32 / 100f32.powf(0.5));
    let expected = [
        1.0 * a0.cos() - 3.0 * a0.sin(),
        2.0 * a1.cos() - 4.0 * a1.sin(),
        3.0 * a0.cos() + 1.0 * a0.sin(),
        4.0 * a1.cos() + 2.0 * a1.sin(),
    ];
    for (got, want) in out.iter().zip(expected) {
        assert!((got - want).abs() < 1e-5, "{out:?} vs {expected:?}");
    }
}

#[test]
fn loss_is_mean_next_token_cross_entropy() {
    let device = Default::default();
    // Batch 1, 3 positions, vocab 2: position t predicts token t+1.
    let logits = Tensor::<B, 1>::from_data(
        TensorData::new(vec![0.0f32, 1.0, 2.0, 0.0, 5.0, 5.0], [6]),
        &device,
    )
    .reshape([1, 3, 2]);
    let loss = values(causal_lm_loss(logits, tokens(&[&[0, 1, 0]])))[0];
    let lse = |a: f32, b: f32| (a.exp() + b.exp()).ln();
    let expected = ((lse(0.0, 1.0) - 1.0) + (lse(2.0, 0.0) - 2.0)) / 2.0;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
}

#[test]
fn forward_step_counts_predicted_tokens() {
    let batch = TokenBatch::from_sequences(&[vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
    let out = model(false).forward_step(&batch);
    assert_eq!(out.count, 6);
    assert!(values(out.loss)[0].is_finite());
}

#[test]
fn parameter_names_are_the_transformers_names() {
    let names: Vec<String> = named_tensors(&model(false)).into_keys().collect();
    for expected in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing {expected} in {names:?}"
        );
    }
    // 2 layers × (4 attention + 3 MLP + 2 norms) + embedding + final norm + head.
    assert_eq!(names.len(), 2 * 9 + 3);
}

#[test]
fn tied_embeddings_project_with_the_input_embedding() {
    let m = model(true);
    assert!(m.lm_head.is_none());
    let names = named_tensors(&m);
    assert!(!names.contains_key("lm_head.weight"));
    // Logits are hidden states times the embedding transposed.
    let t = tokens(&[&[3, 1, 4]]);
    let hidden = m.hidden_states(t.clone());
    let manual = hidden.matmul(
        m.model
            .embed_tokens
            .weight
            .val()
            .transpose()
            .unsqueeze::<3>(),
    );
    // Equal up to summation order (the model multiplies one 2-D [batch·seq, hidden] block).
    for (got, want) in values(m.forward(t)).iter().zip(values(manual)) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

#[test]
fn seeded_init_is_reproducible_and_follows_transformers_rules() {
    let (a, b) = (named_tensors(&model(false)), named_tensors(&model(false)));
    assert!(a == b, "same seed, same weights");
    let other = named_tensors(&config(false).init_seeded::<B>(4, &Default::default()));
    assert!(other["lm_head.weight"] != a["lm_head.weight"]);
    assert!(a["model.norm.weight"].values.iter().all(|&v| v == 1.0));
    let q = &a["model.layers.0.self_attn.q_proj.weight"].values;
    let std = (q.iter().map(|v| v * v).sum::<f32>() / q.len() as f32).sqrt();
    assert!((std - 0.2).abs() < 0.03, "std {std}");
}

#[test]
fn gqa_shapes_are_checked_by_validate() {
    let mut c = config(false);
    c.num_key_value_heads = Some(3);
    assert!(c.validate().unwrap_err().contains("num_key_value_heads"));
    assert!(config(false).validate().is_ok());
}

#[test]
fn cached_decoding_equals_the_full_forward_pass() {
    use cpt_models::llama::KvCache;
    let m = model(false);
    let ids: &[i64] = &[5, 9, 2, 33, 17, 8, 60];
    let full = values(m.forward(tokens(&[ids])));
    let mut cache = KvCache::new(2);
    let mut cached = values(m.forward_cached(tokens(&[&ids[..3]]), &mut cache));
    for &id in &ids[3..] {
        cached.extend(values(m.forward_cached(tokens(&[&[id]]), &mut cache)));
    }
    assert_eq!(cache.len(), ids.len());
    let worst = full
        .iter()
        .zip(&cached)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "max difference {worst}");
}

#[test]
fn rope_scaling_rules_change_only_what_they_should() {
    use cpt_models::llama::RopeScaling;
    let mut c = config(false);
    let base = c.inv_freq();
    c.rope_scaling = Some(RopeScaling::Linear { factor: 4.0 });
    assert!(
        c.inv_freq()
            .iter()
            .zip(&base)
            .all(|(s, b)| (s * 4.0 - b).abs() < 1e-9)
    );
    // Llama 3: the highest frequency (shortest wavelength, 2π) is kept, the lowest divided.
    c.rope_scaling = Some(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    });
    let scaled = c.inv_freq();
    assert_eq!(scaled[0], base[0]);
    let last = base.len() - 1;
    let wavelen = 2.0 * std::f32::consts::PI / base[last];
    assert!(
        wavelen > 64.0,
        "test needs a long wavelength, got {wavelen}"
    );
    assert!((scaled[last] - base[last] / 8.0).abs() < 1e-9);
}

#[test]
fn dynamic_rope_leaves_the_original_context_alone_and_yarn_scales_cos_and_sin() {
    use cpt_models::llama::RopeScaling;
    let mut c = config(false);
    let base = c.rope().frequencies(8);
    c.rope_scaling = Some(RopeScaling::Dynamic { factor: 2.0 });
    let rope = c.rope();
    // Within `max_position_embeddings` nothing changes; past it every frequency but the first
    // (the base's power 0) drops as the base grows.
    assert_eq!(rope.frequencies(c.max_position_embeddings), base);
    let (longer, scale) = rope.frequencies(4 * c.max_position_embeddings);
    assert_eq!((longer[0], scale), (base.0[0], 1.0));
    assert!(longer[1..].iter().zip(&base.0[1..]).all(|(l, b)| l < b));
    c.rope_scaling = Some(RopeScaling::Yarn {
        factor: 4.0,
        original_max_position_embeddings: None,
        beta_fast: None,
        beta_slow: None,
        attention_factor: None,
        mscale: None,
        mscale_all_dim: None,
        truncate: None,
    });
    let (_, scale) = c.rope().frequencies(8);
    assert!((scale - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6, "{scale}");
}

/// Row `[m, m, t, t, t, t]` whose first two tokens are metadata: out of the loss as targets.
fn metadata_batch() -> TokenBatch {
    TokenBatch::from_token_sequences(&[
        cpt_core::TokenSequence {
            tokens: vec![7, 8, 20, 21, 22, 23],
            loss_mask: Some(vec![false, false, true, true, true, true]),
        },
        vec![30, 31, 32, 33, 34, 35].into(),
    ])
}

/// `-log softmax(logits[row, t])[target]`, in f64 from the host logits.
fn token_nll(logits: &[f32], vocab: usize, row_start: usize, t: usize, target: u32) -> f64 {
    let at = &logits[(row_start + t) * vocab..(row_start + t + 1) * vocab];
    let max = at.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
    let lse = max + at.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    lse - at[target as usize] as f64
}

#[test]
fn metadata_targets_carry_no_loss() {
    let m = model(false);
    let batch = metadata_batch();
    let out = m.forward_step(&batch);
    // Row 0 predicts its four text tokens but not the second metadata token; row 1 all five.
    assert_eq!(out.count, 4 + 5);
    let logits = values(out.logits.unwrap());
    let mut expected = 0.0;
    for (row, first_target) in [(0usize, 2usize), (1, 1)] {
        for t in first_target..6 {
            expected += token_nll(&logits, 64, row * 6, t - 1, batch.tokens[row * 6 + t]);
        }
    }
    expected /= 9.0;
    let loss = values(out.loss)[0] as f64;
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    // Without the mask the metadata target counts: the loss differs.
    let plain =
        TokenBatch::from_sequences(&[batch.sequence(0).to_vec(), batch.sequence(1).to_vec()]);
    let unmasked = values(m.forward_step(&plain).loss)[0] as f64;
    assert!((unmasked - loss).abs() > 1e-4);
}

#[test]
fn metadata_targets_get_no_gradient() {
    type A = burn::backend::Autodiff<B>;
    let m: LlamaForCausalLM<A> = config(false).init_seeded(3, &Default::default());
    let batch = metadata_batch();
    let tokens = m.batch_tokens(&batch);
    let logits = m.forward(tokens.clone()).detach().require_grad();
    let loss = cpt_models::llama::weighted_causal_lm_loss(
        logits.clone(),
        tokens,
        batch.target_weights(),
        batch.predicted_tokens(),
    );
    let grads = loss.backward();
    let grad = logits
        .grad(&grads)
        .unwrap()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    let norm = |position: usize| -> f32 {
        grad[position * 64..(position + 1) * 64]
            .iter()
            .map(|g| g.abs())
            .sum()
    };
    // Position 0 predicts the metadata token 8: no gradient; position 1 predicts text.
    assert_eq!(norm(0), 0.0);
    assert!(norm(1) > 0.0);
    // The last position of each row predicts nothing.
    assert_eq!(norm(5), 0.0);
    assert!(norm(6) > 0.0);
}
