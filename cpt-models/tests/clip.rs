//! CLIP: numerical parity with transformers' `CLIPModel` on the tiny random model written by
//! `scripts/make_clip_fixtures.py` (tests/fixtures/hf/clip-tiny/), the InfoNCE loss by hand,
//! EOS pooling (both rules) and padding, the Hugging Face round trip, config errors and LoRA.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cpt_core::params::{NamedTensors, named_tensors};
use cpt_core::{AdapterModel, ImageBatch, ImageEncoder, ImageTextModel, TaskModel};
use cpt_models::clip::{ClipActivation, clip_loss, eos_positions};
use cpt_models::hf_clip::{hf_tensors, load_clip, parse_config, save_clip, transposed};
use cpt_models::hf_llama::transpose;
use cpt_models::linear::LoraSpec;
use cpt_models::{CLIP_LORA_TARGETS, ClipConfig, ClipModel, ModelError};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

type A = Autodiff<Flex>;

mod vision_common;
use vision_common::{Reference, gradients, max_abs_diff, relative, values};

fn fixture() -> PathBuf {
    vision_common::fixture("clip-tiny")
}

fn reference() -> Reference {
    Reference::open(&fixture())
}

/// The reference captions: their length and token ids.
fn caption_ids(reference: &Reference) -> (usize, Vec<u32>) {
    let (shape, ids) = reference.ints("input_ids");
    (shape[1], ids.into_iter().map(|i| i as u32).collect())
}

/// The reference inputs as one image–caption batch.
fn reference_batch(reference: &Reference) -> ImageBatch {
    let (shape, pixels) = reference.floats("pixel_values");
    let (text_len, text) = caption_ids(reference);
    ImageBatch {
        pixels,
        batch_size: shape[0],
        shape: [shape[1], shape[2], shape[3]],
        labels: vec![-1; shape[0]],
        text,
        text_len,
    }
}

fn load<B: Backend>() -> (ClipConfig, ClipModel<B>) {
    load_clip::<B>(&fixture(), &Default::default()).unwrap()
}

#[test]
fn outputs_and_loss_match_transformers() {
    let (_, model) = load::<Flex>();
    let reference = reference();
    let batch = reference_batch(&reference);
    let out = model.forward_batch(&batch);
    for (name, got) in [
        ("logits_per_image", values(out.logits_per_image.clone())),
        ("text_embeds", values(out.text_embeds.clone())),
        ("image_embeds", values(out.image_embeds.clone())),
    ] {
        let diff = max_abs_diff(&got, &reference.floats(name).1);
        eprintln!("{name}: max abs diff {diff:e}");
        assert!(diff <= 1e-4, "{name} differs by {diff}");
    }
    let loss = clip_loss(out.logits_per_text).into_scalar() as f64;
    let want = reference.floats("loss").1[0] as f64;
    eprintln!("loss {loss} vs {want}: relative {:e}", relative(loss, want));
    assert!(relative(loss, want) <= 1e-5, "loss {loss} vs {want}");
    // The trainer's entry point computes the same loss.
    let step = model.forward_step(&batch);
    assert_eq!(step.loss.into_scalar() as f64, loss);
}

#[test]
fn gradients_match_torch() {
    let (_, model) = load::<A>();
    let reference = reference();
    let loss = clip_loss(
        model
            .forward_batch(&reference_batch(&reference))
            .logits_per_text,
    );
    let grads = gradients(&model, &loss.backward());
    assert_eq!(
        grads.len(),
        named_tensors(&model).len(),
        "a parameter got no gradient"
    );

    let norm = grads
        .iter()
        .flat_map(|(_, (_, g))| g.iter().map(|&v| (v as f64) * (v as f64)))
        .sum::<f64>()
        .sqrt();
    let want = reference.floats("grad_norm").1[0] as f64;
    eprintln!(
        "grad norm {norm} vs {want}: relative {:e}",
        relative(norm, want)
    );
    assert!(relative(norm, want) <= 1e-5, "grad norm {norm} vs {want}");

    let mut checked = 0;
    for (path, (shape, got)) in &grads {
        let name = format!("grad.{path}");
        if !reference.names().contains(&name) {
            continue;
        }
        let (_, hf) = reference.floats(&name);
        let ours = if transposed(path, shape) {
            transpose(&cpt_core::HostTensor {
                shape: shape.clone(),
                values: got.clone(),
            })
            .values
        } else {
            got.clone()
        };
        let scale = hf.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&ours, &hf);
        eprintln!("{path}: max abs diff {diff:e} (scale {scale:e})");
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "grad of {path} differs by {diff}"
        );
        checked += 1;
    }
    // The fixture stores 15 of them, logit_scale among them.
    assert_eq!(checked, 15);
}

#[test]
fn legacy_eos_rule_pools_at_the_highest_id() {
    let (_, mut model) = load::<Flex>();
    model.text_model.eos_token_id = 2;
    let reference = reference();
    let (text_len, ids) = caption_ids(&reference);
    let got = values(model.text_embeds(&ids, text_len));
    let diff = max_abs_diff(&got, &reference.floats("legacy_text_embeds").1);
    assert!(diff <= 1e-4, "legacy text_embeds differ by {diff}");
}

#[test]
fn eos_positions_follow_both_rules() {
    let rows = [1, 50, 3, 0, 1, 3, 90, 3, 1, 7, 7, 0];
    // First EOS (3); a row without one pools at 0, as torch's argmax of an all-false row.
    assert_eq!(eos_positions(&rows, 4, 3), vec![2, 1, 0]);
    // Legacy (eos_token_id == 2): the first position of the highest id.
    assert_eq!(eos_positions(&rows, 4, 2), vec![1, 2, 1]);
}

#[test]
fn info_nce_matches_a_hand_computation() {
    // Similarities of 3 texts (rows) against 3 images (columns); pair i matches i.
    let l = [[2.0f64, 0.5, -1.0], [0.0, 1.0, 3.0], [1.5, -0.5, 0.25]];
    let lse = |a: f64, b: f64, c: f64| (a.exp() + b.exp() + c.exp()).ln();
    // Text→image: each row's cross-entropy against its diagonal element.
    let caption =
        ((lse(2.0, 0.5, -1.0) - 2.0) + (lse(0.0, 1.0, 3.0) - 1.0) + (lse(1.5, -0.5, 0.25) - 0.25))
            / 3.0;
    // Image→text: each column's.
    let image =
        ((lse(2.0, 0.0, 1.5) - 2.0) + (lse(0.5, 1.0, -0.5) - 1.0) + (lse(-1.0, 3.0, 0.25) - 0.25))
            / 3.0;
    let expected = (caption + image) / 2.0;
    let flat: Vec<f32> = l.iter().flatten().map(|&v| v as f32).collect();
    let logits = Tensor::<Flex, 2>::from_data(TensorData::new(flat, [3, 3]), &Default::default());
    let got = clip_loss(logits).into_scalar() as f64;
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
}

#[test]
fn padding_after_eos_cannot_change_the_pooled_text() {
    let (_, model) = load::<Flex>();
    let caption = [1u32, 75, 55, 3];
    let padded = |pad: &[u32]| -> Vec<u32> { caption.iter().chain(pad).copied().collect() };
    let embed = |tokens: &[u32], len| values(model.text_embeds(tokens, len));
    let unpadded = embed(&caption, 4);
    // Pad ids, other words, even the EOS id again: later positions are masked out of the EOS
    // state and pooling takes the first EOS.
    for pad in [[0u32, 0, 0, 0], [99, 42, 7, 3], [3, 3, 3, 3]] {
        let got = embed(&padded(&pad), 8);
        let diff = max_abs_diff(&got, &unpadded);
        assert!(
            diff <= 1e-6,
            "padding {pad:?} moved the embedding by {diff}"
        );
    }
    // Batched with other captions, same length: bit-identical.
    let pair: Vec<u32> = padded(&[0, 0, 0, 0])
        .into_iter()
        .chain(padded(&[99, 42, 7, 3]))
        .collect();
    let both = embed(&pair, 8);
    assert_eq!(both[..16], both[16..], "rows differing only after EOS");
    // Whereas a token before the EOS does matter.
    let changed = embed(&[1, 76, 55, 3, 0, 0, 0, 0], 8);
    assert!(max_abs_diff(&changed, &unpadded) > 1e-3);
}

#[test]
fn export_then_import_is_bit_identical() {
    let dir = fixture();
    let (config, model) = load::<Flex>();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("exported");
    save_clip(&model, &config, None, &target).unwrap();
    let (config2, model2) = load_clip::<Flex>(&target, &Default::default()).unwrap();
    assert_eq!(config2, config);
    assert!(named_tensors(&model2) == named_tensors(&model));
    // The file holds exactly transformers' tensors: same names, shapes (0-d logit_scale) and
    // bits, and no position_ids buffers.
    let read = |p: &Path| cpt_core::tensor_file::read_tensors(p).unwrap().0;
    let ours = read(&target.join("model.safetensors"));
    let theirs = read(&dir.join("model.safetensors"));
    assert_eq!(ours["logit_scale"].shape, Vec::<usize>::new());
    assert!(
        ours == theirs,
        "exported tensors differ from the checkpoint"
    );
    assert!(hf_tensors(&model) == theirs);
    assert!(!target.with_file_name(".exported.tmp").exists());
}

#[test]
fn position_id_buffers_of_older_checkpoints_are_ignored() {
    let dir = fixture();
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), out.path().join("config.json")).unwrap();
    // Rewrite the weights with int64 buffers beside them, as transformers 4 saved them.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let text_ids: Vec<u8> = (0..8i64).flat_map(|i| i.to_le_bytes()).collect();
    let vision_ids: Vec<u8> = (0..17i64).flat_map(|i| i.to_le_bytes()).collect();
    let mut views = file.tensors();
    views.push((
        "text_model.embeddings.position_ids".into(),
        safetensors::tensor::TensorView::new(Dtype::I64, vec![1, 8], &text_ids).unwrap(),
    ));
    views.push((
        "vision_model.embeddings.position_ids".into(),
        safetensors::tensor::TensorView::new(Dtype::I64, vec![1, 17], &vision_ids).unwrap(),
    ));
    let rewritten = safetensors::serialize(views, None).unwrap();
    std::fs::write(out.path().join("model.safetensors"), rewritten).unwrap();
    let (_, with_buffers) = load_clip::<Flex>(out.path(), &Default::default()).unwrap();
    let (_, model) = load::<Flex>();
    assert!(named_tensors(&with_buffers) == named_tensors(&model));
}

#[test]
fn export_loads_in_transformers_where_installed() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import transformers, torch"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("skipped: python3 with transformers and torch is not installed");
        return;
    }
    let (config, model) = load::<Flex>();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("exported");
    save_clip(&model, &config, None, &target).unwrap();
    // transformers must load our folder with no missing, unexpected or mismatched key and no
    // warning, and reproduce the reference similarities.
    let script = r#"
import sys, warnings
import torch
from safetensors.torch import load_file
from transformers import CLIPModel
from transformers.utils import logging
logging.set_verbosity_warning()
with warnings.catch_warnings():
    warnings.simplefilter("error")
    model, info = CLIPModel.from_pretrained(sys.argv[1], output_loading_info=True, dtype=torch.float32)
bad = {k: v for k, v in info.items() if v}
assert not bad, bad
ref = load_file(sys.argv[2])
with torch.no_grad():
    out = model(input_ids=ref["input_ids"], pixel_values=ref["pixel_values"])
diff = (out.logits_per_image - ref["logits_per_image"]).abs().max().item()
assert diff <= 1e-4, diff
print("ok", diff)
"#;
    let result = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&target)
        .arg(fixture().join("reference.safetensors"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "transformers rejected the export:\n{}\n{stderr}",
        String::from_utf8_lossy(&result.stdout)
    );
    // transformers logs missing or unexpected weights as warnings rather than failing.
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("missing")
            && !lower.contains("unexpected")
            && !lower.contains("newly initialized"),
        "transformers warned:\n{stderr}"
    );
}

fn config_error(json: serde_json::Value) -> (String, String) {
    match parse_config(&json, Path::new("config.json")) {
        Err(ModelError::Config { field, message, .. }) => (field, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn fixture_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap()
}

#[test]
fn config_errors_name_the_field() {
    let base = fixture_json();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = base.clone();
        edit(&mut json);
        config_error(json)
    };
    let (field, message) = with(&|j| j["text_config"]["hidden_act"] = "relu".into());
    assert_eq!(field, "text_config.hidden_act");
    assert!(message.contains("quick_gelu or gelu"), "{message}");
    let (field, _) = with(&|j| j["vision_config"]["hidden_act"] = "gelu_new".into());
    assert_eq!(field, "vision_config.hidden_act");
    let (field, _) = with(&|j| j["model_type"] = "llama".into());
    assert_eq!(field, "model_type");
    let (field, _) = with(&|j| j["text_config"]["vocab_size"] = "many".into());
    assert_eq!(field, "text_config.vocab_size");
    let (field, _) = with(&|j| j["vision_config"]["num_attention_heads"] = 5.into());
    assert_eq!(field, "vision_config.hidden_size");
    let (field, _) = with(&|j| j["vision_config"]["patch_size"] = 5.into());
    assert_eq!(field, "vision_config.patch_size");
    let (field, _) = with(&|j| j["projection_dim"] = 0.into());
    assert_eq!(field, "projection_dim");
    let (field, _) = with(&|j| j["text_config"]["eos_token_id"] = serde_json::Value::Null);
    assert_eq!(field, "text_config.eos_token_id");
    let (field, _) = with(&|j| j["text_config"]["eos_token_id"] = 100.into());
    assert_eq!(field, "text_config.eos_token_id");

    // The config parses otherwise, and old `text_config_dict` overrides win as in transformers.
    let mut json = base.clone();
    json["text_config_dict"] = serde_json::json!({"eos_token_id": 2});
    let config = parse_config(&json, Path::new("config.json")).unwrap();
    assert_eq!(config.text_config.eos_token_id, 2);
    assert_eq!(config.vision_config.hidden_act, ClipActivation::Gelu);

    // The TOML/serde form refuses unknown fields and activations, naming them.
    let serde_err = |v: serde_json::Value| serde_json::from_value::<ClipConfig>(v).unwrap_err();
    let err = serde_err(serde_json::json!({"text_config": {"hiden_size": 3}}));
    assert!(err.to_string().contains("hiden_size"), "{err}");
    let err = serde_err(serde_json::json!({"vision_config": {"hidden_act": "relu"}}));
    assert!(err.to_string().contains("relu"), "{err}");
    let err = serde_err(serde_json::json!({"projection": 3}));
    assert!(err.to_string().contains("projection"), "{err}");
}

#[test]
fn lora_at_init_leaves_outputs_unchanged() {
    let (_, model) = load::<Flex>();
    let batch = reference_batch(&reference());
    let before = model.forward_batch(&batch);
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        rslora: false,
        target_modules: CLIP_LORA_TARGETS.iter().map(|t| t.to_string()).collect(),
        dropout: 0.0,
    };
    let adapted = model.with_adapters(&spec, 7);
    let names = named_tensors(&adapted);
    let adapters = names.keys().filter(|n| n.contains(".lora_")).count();
    // 2 towers × 2 layers × 6 projections, each with lora_a and lora_b.
    assert_eq!(adapters, 2 * 2 * 6 * 2);
    assert!(names.contains_key("text_model.encoder.layers.1.self_attn.out_proj.lora_a"));
    assert!(names.contains_key("vision_model.encoder.layers.0.mlp.fc2.lora_b"));
    let after = adapted.forward_batch(&batch);
    assert_eq!(
        values(before.logits_per_image.clone()),
        values(after.logits_per_image)
    );
    assert_eq!(values(before.text_embeds), values(after.text_embeds));
    let merged = adapted.clone().merge_adapters();
    assert!(!named_tensors(&merged).keys().any(|n| n.contains(".lora_")));
    assert_eq!(
        values(before.logits_per_image),
        values(merged.forward_batch(&batch).logits_per_image)
    );
    let dropped = adapted.drop_adapters();
    assert_eq!(named_tensors(&dropped).len(), names.len() - adapters);

    // The long names select the same projections; llama's names select none of CLIP's MLP.
    let long = LoraSpec {
        target_modules: vec!["q_proj".into(), "out_proj".into()],
        ..spec.clone()
    };
    let adapted = load::<Flex>().1.with_adapters(&long, 7);
    let count = named_tensors(&adapted)
        .keys()
        .filter(|n| n.contains(".lora_"))
        .count();
    assert_eq!(count, 2 * 2 * 2 * 2);
}

#[test]
fn task_model_and_encoder_views_agree() {
    let (_, model) = load::<Flex>();
    let reference = reference();
    let batch = reference_batch(&reference);
    let step = model.forward_step(&batch);
    assert_eq!(step.count, 4);
    let logits = step.logits.unwrap();
    assert_eq!(logits.dims(), [4, 1, 4]);
    let diff = max_abs_diff(&values(logits), &reference.floats("logits_per_image").1);
    assert!(diff <= 1e-4);
    let features = step.features.unwrap();
    assert_eq!(features.dims(), [4, 16]);
    let image = values(ImageTextModel::image_embeds(&model, &batch));
    assert_eq!(values(features), image);
    assert_eq!(values(ImageEncoder::image_features(&model, &batch)), image);
    let norms: Vec<f32> = image
        .chunks(16)
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
}

#[test]
fn seeded_init_is_reproducible_and_follows_the_config() {
    let (config, _) = load::<Flex>();
    let device = Default::default();
    let a: ClipModel<Flex> = config.init_seeded(11, &device);
    let b: ClipModel<Flex> = config.init_seeded(11, &device);
    let c: ClipModel<Flex> = config.init_seeded(12, &device);
    let (ta, tb, tc) = (named_tensors(&a), named_tensors(&b), named_tensors(&c));
    assert!(ta == tb);
    assert!(ta != tc);
    assert_eq!(ta["logit_scale"].values, vec![2.6592f32]);
    assert!(
        ta["vision_model.pre_layrnorm.weight"]
            .values
            .iter()
            .all(|&v| v == 1.0)
    );
    assert!(
        ta["text_model.encoder.layers.0.mlp.fc1.bias"]
            .values
            .iter()
            .all(|&v| v == 0.0)
    );
    // Same parameter names and shapes as the transformers checkpoint.
    let theirs = cpt_core::tensor_file::read_tensors(&fixture().join("model.safetensors"))
        .unwrap()
        .0;
    let ours: NamedTensors = hf_tensors(&a);
    assert_eq!(
        ours.iter().map(|(k, v)| (k, &v.shape)).collect::<Vec<_>>(),
        theirs
            .iter()
            .map(|(k, v)| (k, &v.shape))
            .collect::<Vec<_>>()
    );
    let loss = a
        .forward_step(&reference_batch(&reference()))
        .loss
        .into_scalar();
    assert!(loss.is_finite());
}

#[test]
fn lora_target_names_cover_clip_and_keep_llama_forms() {
    let spec = |targets: &[&str]| LoraSpec {
        rank: 1,
        alpha: 1.0,
        rslora: false,
        target_modules: targets.iter().map(|t| t.to_string()).collect(),
        dropout: 0.0,
    };
    let clip = spec(CLIP_LORA_TARGETS);
    for name in ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"] {
        assert!(clip.targets(name), "{name}");
    }
    // llama's short `o` names o_proj only, not CLIP's out_proj; its forms still work.
    let llama = spec(&["q", "o", "down_proj"]);
    assert!(llama.targets("q_proj") && llama.targets("o_proj") && llama.targets("down_proj"));
    assert!(!llama.targets("out_proj") && !llama.targets("fc1"));
}
