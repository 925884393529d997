//! ViT image classification against Hugging Face transformers (tests/fixtures/hf/vit-tiny,
//! written by scripts/make_vit_fixtures.py): logits, CLS features, loss and gradients; the HF
//! folder round trip; config errors; LoRA; the TaskModel/ImageClassifier entry points.

mod vision_common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use cpt_core::params::named_tensors;
use cpt_core::{AdapterModel, ImageBatch, ImageClassifier, ImageEncoder, TaskModel};
use cpt_models::ModelError;
use cpt_models::hf_vit::{load_vit, parse_config, parse_vit_config, read_config, save_vit};
use cpt_models::linear::LoraSpec;
use cpt_models::vit::{CLASSIFIER_TARGET, classification_loss};
use cpt_models::{VIT_LORA_TARGETS, ViTConfig, ViTForImageClassification};
use serde_json::json;
use std::path::Path;
use vision_common::*;

type A = Autodiff<Flex>;

fn labels<B: burn::tensor::backend::Backend>(reference: &Reference) -> Tensor<B, 2, Int> {
    let (shape, ids) = reference.ints("labels");
    Tensor::from_data(TensorData::new(ids, [shape[0], 1]), &Default::default())
}

#[test]
fn logits_features_and_loss_match_transformers() {
    let dir = fixture("vit-tiny");
    let (config, model) = load_vit::<Flex>(&dir, &Default::default()).unwrap();
    assert_eq!(config.num_labels, 5);
    let reference = Reference::open(&dir);
    let pixels = reference.tensor::<Flex, 4>("pixel_values");

    let hidden = model.hidden_states(pixels.clone());
    let diff = max_abs_diff(&values(hidden), &reference.floats("last_hidden_state").1);
    assert!(diff <= 1e-4, "last hidden state differs by {diff}");
    let features = model.cls_features(pixels.clone());
    let diff = max_abs_diff(&values(features), &reference.floats("cls_features").1);
    assert!(diff <= 1e-4, "CLS features differ by {diff}");
    let logits = model.forward(pixels);
    let diff = max_abs_diff(&values(logits.clone()), &reference.floats("logits").1);
    assert!(diff <= 1e-4, "logits differ by {diff}");
    let loss = classification_loss(logits, labels(&reference)).into_scalar() as f64;
    let want = reference.floats("loss").1[0] as f64;
    assert!(relative(loss, want) <= 1e-5, "loss {loss} vs {want}");
    eprintln!(
        "vit-tiny: logits {diff:.2e}, loss rel {:.2e}",
        relative(loss, want)
    );
}

#[test]
fn gradients_match_torch() {
    let dir = fixture("vit-tiny");
    let (_, model) = load_vit::<A>(&dir, &Default::default()).unwrap();
    let reference = Reference::open(&dir);
    let logits = model.forward(reference.tensor::<A, 4>("pixel_values"));
    let loss = classification_loss(logits, labels(&reference));
    let grads = gradients(&model, &loss.backward());
    let (norm, worst) = check_gradients(&grads, &reference, str::to_string);
    let want = reference.floats("grad_norm").1[0] as f64;
    eprintln!(
        "vit-tiny: grad norm rel {:.2e}, worst per-parameter {worst:.2e}",
        relative(norm, want)
    );
    assert!(relative(norm, want) <= 1e-5, "grad norm {norm} vs {want}");
    assert!(worst <= 1e-5, "a parameter gradient differs by {worst}");
}

#[test]
fn forward_step_trains_on_an_image_batch() {
    let dir = fixture("vit-tiny");
    let (_, model) = load_vit::<Flex>(&dir, &Default::default()).unwrap();
    let reference = Reference::open(&dir);
    let (shape, pixels) = reference.floats("pixel_values");
    let batch = ImageBatch {
        pixels,
        batch_size: shape[0],
        shape: [shape[1], shape[2], shape[3]],
        labels: reference.ints("labels").1,
        text: Vec::new(),
        text_len: 0,
    };
    let out = model.forward_step(&batch);
    assert_eq!(out.count, 3);
    let logits = out.logits.unwrap();
    assert_eq!(logits.dims(), [3, 1, 5]);
    assert_eq!(out.features.as_ref().unwrap().dims(), [3, 32]);
    let want = reference.floats("loss").1[0] as f64;
    let loss = out.loss.into_scalar() as f64;
    assert!(relative(loss, want) <= 1e-5, "loss {loss} vs {want}");
    let diff = max_abs_diff(&values(logits), &reference.floats("logits").1);
    assert!(diff <= 1e-4, "step logits differ by {diff}");

    let diff = max_abs_diff(
        &values(model.image_features(&batch)),
        &reference.floats("cls_features").1,
    );
    assert!(diff <= 1e-4, "ImageEncoder features differ by {diff}");
    let diff = max_abs_diff(
        &values(model.class_logits(&batch)),
        &reference.floats("logits").1,
    );
    assert!(diff <= 1e-4, "ImageClassifier logits differ by {diff}");
}

#[test]
#[should_panic(expected = "outside the classifier")]
fn a_label_outside_the_head_is_refused() {
    let model = tiny_config().init_seeded::<Flex>(1, &Default::default());
    let batch = ImageBatch {
        pixels: vec![0.0; 3 * 16 * 16],
        batch_size: 1,
        shape: [3, 16, 16],
        labels: vec![7],
        text: Vec::new(),
        text_len: 0,
    };
    model.forward_step(&batch);
}

#[test]
fn save_then_load_is_bit_identical() {
    let dir = fixture("vit-tiny");
    let (config, model) = load_vit::<Flex>(&dir, &Default::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("exported");
    save_vit(&model, &config, &target).unwrap();
    // Nothing but the folder itself is left beside it (no temporary folder).
    let entries: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
    let (config2, model2) = load_vit::<Flex>(&target, &Default::default()).unwrap();
    assert_eq!(config, config2);
    assert_eq!(named_tensors(&model), named_tensors(&model2));
    // The written file holds transformers' names and values bit for bit.
    let original = cpt_core::tensor_file::read_tensors(&dir.join("model.safetensors"))
        .unwrap()
        .0;
    let written = cpt_core::tensor_file::read_tensors(&target.join("model.safetensors"))
        .unwrap()
        .0;
    assert_eq!(original, written);
    assert!(matches!(
        read_config(&target).unwrap(),
        cpt_models::hf_vit::VisionConfig::ViT(_)
    ));
}

fn fixture_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("vit-tiny").join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn field_of(result: Result<impl std::fmt::Debug, ModelError>) -> String {
    match result {
        Err(ModelError::Config { field, path, .. }) => {
            assert_eq!(path, Path::new("cfg/config.json"));
            field
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn config_errors_name_the_field() {
    let path = Path::new("cfg/config.json");
    let parsed = parse_vit_config(&fixture_json(), path).unwrap();
    assert_eq!(parsed, tiny_config_with_eps(parsed.initializer_range));

    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("hidden_act", json!("gelu_new"), "hidden_act"),
        ("hidden_act", json!(3), "hidden_act"),
        ("hidden_size", json!(30), "hidden_size"),
        ("hidden_size", json!(-1), "hidden_size"),
        ("num_attention_heads", json!(0), "num_attention_heads"),
        ("image_size", json!([16, 32]), "image_size"),
        ("patch_size", json!(5), "image_size"),
        ("layer_norm_eps", json!("small"), "layer_norm_eps"),
        ("qkv_bias", json!(1), "qkv_bias"),
        ("id2label", json!({"0": "cat"}), "num_labels"),
        ("id2label", json!(["cat", "dog"]), "id2label"),
        ("model_type", json!("llama"), "model_type"),
    ];
    for (key, value, field) in cases {
        let mut json = fixture_json();
        json[*key] = value.clone();
        assert_eq!(
            &field_of(parse_vit_config(&json, path)),
            field,
            "{key} = {value}"
        );
    }
    let mut json = fixture_json();
    json["model_type"] = json!("clip");
    assert_eq!(field_of(parse_config(&json, path)), "model_type");
    // A list image size of equal sides is a square image.
    let mut json = fixture_json();
    json["image_size"] = json!([16, 16]);
    assert_eq!(parse_vit_config(&json, path).unwrap().image_size, 16);
}

#[test]
fn toml_form_refuses_unknown_fields() {
    let mut value = serde_json::to_value(tiny_config()).unwrap();
    let back: ViTConfig = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(back, tiny_config());
    value["hidden_dropout"] = json!(0.1);
    assert!(serde_json::from_value::<ViTConfig>(value).is_err());
}

fn tiny_config() -> ViTConfig {
    tiny_config_with_eps(0.02)
}

fn tiny_config_with_eps(initializer_range: f64) -> ViTConfig {
    ViTConfig {
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-12,
        image_size: 16,
        patch_size: 4,
        num_channels: 3,
        qkv_bias: true,
        num_labels: 5,
        initializer_range,
    }
}

fn spec(targets: &[&str]) -> LoraSpec {
    LoraSpec {
        rank: 2,
        alpha: 4.0,
        rslora: false,
        target_modules: targets.iter().map(|t| t.to_string()).collect(),
        dropout: 0.0,
    }
}

fn adapter_paths(model: &ViTForImageClassification<Flex>) -> Vec<String> {
    named_tensors(model)
        .into_keys()
        .filter(|p| p.contains(cpt_core::ADAPTER_MARKER))
        .collect()
}

#[test]
fn lora_adapters_start_as_a_no_op_and_merge_back() {
    let dir = fixture("vit-tiny");
    let (_, model) = load_vit::<Flex>(&dir, &Default::default()).unwrap();
    let pixels = Reference::open(&dir).tensor::<Flex, 4>("pixel_values");
    let base = values(model.forward(pixels.clone()));

    let mut targets = VIT_LORA_TARGETS.to_vec();
    targets.push(CLASSIFIER_TARGET);
    let adapted = model.with_adapters(&spec(&targets), 9);
    // 2 layers × 6 projections + the head, each with lora_a and lora_b.
    assert_eq!(adapter_paths(&adapted).len(), 2 * (2 * 6 + 1));
    for path in [
        "vit.encoder.layer.1.attention.attention.query.lora_a",
        "vit.encoder.layer.0.attention.output.dense.lora_b",
        "vit.encoder.layer.0.intermediate.dense.lora_a",
        "vit.encoder.layer.1.output.dense.lora_a",
        "classifier.lora_b",
    ] {
        assert!(adapter_paths(&adapted).iter().any(|p| p == path), "{path}");
    }
    let diff = max_abs_diff(&values(adapted.forward(pixels.clone())), &base);
    assert!(diff <= 1e-6, "fresh adapters changed the logits by {diff}");

    // Give the adapters a non-zero up-projection, then merging must keep the function.
    let trained = cpt_core::params::map_named(adapted, |path, value| {
        if path.ends_with("lora_b") {
            value.ones_like().mul_scalar(0.01)
        } else {
            value
        }
    });
    let with = values(trained.forward(pixels.clone()));
    assert!(max_abs_diff(&with, &base) > 1e-4, "adapters had no effect");
    let merged = trained.merge_adapters();
    assert!(adapter_paths(&merged).is_empty());
    let diff = max_abs_diff(&values(merged.forward(pixels)), &with);
    assert!(diff <= 1e-4, "merging changed the logits by {diff}");
}

#[test]
fn llama_short_names_select_the_attention_projections() {
    let model = tiny_config().init_seeded::<Flex>(3, &Default::default());
    let adapted = model.with_adapters(&spec(&["q", "v"]), 1);
    let paths = adapter_paths(&adapted);
    assert_eq!(paths.len(), 2 * 2 * 2);
    assert!(
        paths
            .iter()
            .all(|p| p.contains(".query.") || p.contains(".value.")),
        "{paths:?}"
    );
    let dropped = adapted.drop_adapters();
    assert!(adapter_paths(&dropped).is_empty());
}

#[test]
fn seeded_init_is_reproducible_and_named_as_transformers() {
    let device = Default::default();
    let a = named_tensors(&tiny_config().init_seeded::<Flex>(5, &device));
    let b = named_tensors(&tiny_config().init_seeded::<Flex>(5, &device));
    let c = named_tensors(&tiny_config().init_seeded::<Flex>(6, &device));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The same names (and shapes, after transposition) as the transformers checkpoint.
    let hf = cpt_core::tensor_file::read_tensors(&fixture("vit-tiny").join("model.safetensors"))
        .unwrap()
        .0;
    let ours = cpt_models::hf_vit::hf_tensors(&tiny_config().init_seeded::<Flex>(5, &device));
    assert_eq!(
        ours.iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect::<Vec<_>>(),
        hf.iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect::<Vec<_>>()
    );
    assert!(a["vit.layernorm.weight"].values.iter().all(|&v| v == 1.0));
    assert!(
        a["vit.encoder.layer.0.attention.attention.query.bias"]
            .values
            .iter()
            .all(|&v| v == 0.0)
    );
}
