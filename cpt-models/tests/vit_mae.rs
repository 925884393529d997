//! ViT-MAE pre-training against Hugging Face transformers (tests/fixtures/hf/mae-tiny and
//! mae-normpix, written by scripts/make_vit_fixtures.py): masking from noise, reconstruction
//! logits, loss (plain and norm_pix) and gradients, unmasked features, the fixed sin-cos tables,
//! the HF folder round trip and both decoder-layer spellings, LoRA, and the TaskModel entry point.

mod vision_common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use cpt_core::params::named_tensors;
use cpt_core::{AdapterModel, ImageBatch, ImageEncoder, MaskedImageModel, TaskModel};
use cpt_models::ModelError;
use cpt_models::hf_vit::{VisionConfig, load_vit_mae, parse_mae_config, read_config, save_vit_mae};
use cpt_models::linear::LoraSpec;
use cpt_models::vit_mae::{Masking, sincos_position_table};
use cpt_models::{VIT_LORA_TARGETS, ViTMAEConfig};
use serde_json::json;
use std::path::Path;
use std::sync::Mutex;
use vision_common::*;

type A = Autodiff<Flex>;

const FIXTURES: &[&str] = &["mae-tiny", "mae-normpix"];

/// burn's backend RNG is process-global: tests that seed and draw from it take turns.
static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// The fixture's names for our paths: mae-normpix keeps transformers 5's decoder spelling.
fn hf_name(fixture: &str) -> impl Fn(&str) -> String {
    let v5 = fixture == "mae-normpix";
    move |path: &str| {
        if v5 {
            path.replace("decoder.decoder_layers.", "decoder.decoder_encoder.layer.")
        } else {
            path.to_string()
        }
    }
}

fn image_batch(reference: &Reference) -> ImageBatch {
    let (shape, pixels) = reference.floats("pixel_values");
    ImageBatch {
        pixels,
        batch_size: shape[0],
        shape: [shape[1], shape[2], shape[3]],
        labels: vec![-1; shape[0]],
        text: Vec::new(),
        text_len: 0,
    }
}

#[test]
fn masking_matches_transformers_random_masking() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (config, _) = load_vit_mae::<Flex>(&dir, &Default::default()).unwrap();
        let reference = Reference::open(&dir);
        let (shape, noise) = reference.floats("noise");
        let masking = Masking::from_noise(&noise, shape[0], shape[1], config.kept_patches());
        assert_eq!(
            masking.ids_restore,
            reference.ints("ids_restore").1,
            "{name}"
        );
        assert_eq!(masking.mask, reference.floats("mask").1, "{name}");
        // Same noise, same masking.
        assert_eq!(
            masking,
            Masking::from_noise(&noise, shape[0], shape[1], config.kept_patches())
        );
        let kept = masking.mask.iter().filter(|&&m| m == 0.0).count();
        assert_eq!(kept, shape[0] * config.kept_patches(), "{name}");
    }
}

#[test]
fn reconstruction_and_loss_match_transformers() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (config, model) = load_vit_mae::<Flex>(&dir, &Default::default()).unwrap();
        assert_eq!(config.norm_pix_loss, *name == "mae-normpix");
        let reference = Reference::open(&dir);
        let out = model.forward_with_noise(
            reference.tensor::<Flex, 4>("pixel_values"),
            reference.tensor::<Flex, 2>("noise"),
        );
        let hidden = max_abs_diff(
            &values(out.last_hidden_state),
            &reference.floats("last_hidden_state").1,
        );
        assert!(hidden <= 1e-4, "{name}: encoder output differs by {hidden}");
        let logits = max_abs_diff(&values(out.logits), &reference.floats("logits").1);
        assert!(logits <= 1e-4, "{name}: logits differ by {logits}");
        let loss = out.loss.into_scalar() as f64;
        let want = reference.floats("loss").1[0] as f64;
        eprintln!(
            "{name}: encoder {hidden:.2e}, logits {logits:.2e}, loss rel {:.2e}",
            relative(loss, want)
        );
        assert!(
            relative(loss, want) <= 1e-5,
            "{name}: loss {loss} vs {want}"
        );
    }
}

#[test]
fn gradients_match_torch_and_skip_the_fixed_tables() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (_, model) = load_vit_mae::<A>(&dir, &Default::default()).unwrap();
        let reference = Reference::open(&dir);
        let out = model.forward_with_noise(
            reference.tensor::<A, 4>("pixel_values"),
            reference.tensor::<A, 2>("noise"),
        );
        let grads = gradients(&model, &out.loss.backward());
        assert!(!grads.contains_key("vit.embeddings.position_embeddings"));
        assert!(!grads.contains_key("decoder.decoder_pos_embed"));
        let (norm, worst) = check_gradients(&grads, &reference, hf_name(name));
        let want = reference.floats("grad_norm").1[0] as f64;
        eprintln!(
            "{name}: grad norm rel {:.2e}, worst per-parameter {worst:.2e}",
            relative(norm, want)
        );
        assert!(
            relative(norm, want) <= 1e-5,
            "{name}: grad norm {norm} vs {want}"
        );
        assert!(
            worst <= 1e-5,
            "{name}: a parameter gradient differs by {worst}"
        );
    }
}

#[test]
fn unmasked_features_match_transformers() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (_, model) = load_vit_mae::<Flex>(&dir, &Default::default()).unwrap();
        let reference = Reference::open(&dir);
        let batch = image_batch(&reference);
        let features = values(model.image_features(&batch));
        let diff = max_abs_diff(&features, &reference.floats("mean_features").1);
        assert!(diff <= 1e-4, "{name}: features differ by {diff}");
        let masking = Masking::none(batch.batch_size, model.num_patches());
        let hidden = model.encode(reference.tensor::<Flex, 4>("pixel_values"), &masking);
        let diff = max_abs_diff(
            &values(hidden),
            &reference.floats("unmasked_hidden_state").1,
        );
        assert!(
            diff <= 1e-4,
            "{name}: unmasked encoder output differs by {diff}"
        );
    }
}

#[test]
fn sincos_tables_equal_the_checkpoint() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (config, model) = load_vit_mae::<Flex>(&dir, &Default::default()).unwrap();
        let loaded = named_tensors(&model);
        let grid = config.image_size / config.patch_size;
        for (path, width) in [
            ("vit.embeddings.position_embeddings", config.hidden_size),
            ("decoder.decoder_pos_embed", config.decoder_hidden_size),
        ] {
            let ours = sincos_position_table(grid, width);
            let diff = max_abs_diff(&ours, &loaded[path].values);
            assert!(diff <= 1e-6, "{name}: {path} differs by {diff}");
        }
        // A freshly built model carries the same tables.
        let fresh = named_tensors(&config.init_seeded::<Flex>(1, &Default::default()));
        assert_eq!(
            fresh["decoder.decoder_pos_embed"].values,
            sincos_position_table(grid, config.decoder_hidden_size)
        );
    }
}

#[test]
fn save_then_load_is_bit_identical_under_the_published_names() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (config, model) = load_vit_mae::<Flex>(&dir, &Default::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("exported");
        save_vit_mae(&model, &config, &target).unwrap();
        let (config2, model2) = load_vit_mae::<Flex>(&target, &Default::default()).unwrap();
        assert_eq!(config, config2);
        assert_eq!(named_tensors(&model), named_tensors(&model2), "{name}");
        assert!(matches!(
            read_config(&target).unwrap(),
            VisionConfig::ViTMAE(_)
        ));
        // Written under the published names (`decoder.decoder_layers.N`), values bit for bit.
        let original = cpt_core::tensor_file::read_tensors(&dir.join("model.safetensors"))
            .unwrap()
            .0;
        let written = cpt_core::tensor_file::read_tensors(&target.join("model.safetensors"))
            .unwrap()
            .0;
        let renamed: cpt_core::NamedTensors = original
            .into_iter()
            .map(|(k, v)| {
                (
                    k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."),
                    v,
                )
            })
            .collect();
        assert_eq!(renamed, written, "{name}");
    }
}

#[test]
fn config_errors_name_the_field() {
    let text = std::fs::read_to_string(fixture("mae-tiny").join("config.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let path = Path::new("m/config.json");
    let parsed = parse_mae_config(&base, path).unwrap();
    assert_eq!(parsed.kept_patches(), 4);
    for (key, value, field) in [
        ("mask_ratio", json!(1.0), "mask_ratio"),
        ("mask_ratio", json!("most"), "mask_ratio"),
        ("decoder_hidden_size", json!(18), "decoder_hidden_size"),
        (
            "decoder_num_attention_heads",
            json!(0),
            "decoder_num_attention_heads",
        ),
        ("norm_pix_loss", json!("yes"), "norm_pix_loss"),
        ("hidden_act", json!("relu"), "hidden_act"),
        ("model_type", json!("vit"), "model_type"),
    ] {
        let mut json = base.clone();
        json[key] = value.clone();
        match parse_mae_config(&json, path) {
            Err(ModelError::Config { field: got, .. }) => {
                assert_eq!(got, field, "{key} = {value}")
            }
            other => panic!("{key} = {value}: expected a config error, got {other:?}"),
        }
    }
    let mut value = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        serde_json::from_value::<ViTMAEConfig>(value.clone()).unwrap(),
        parsed
    );
    value["mask_ratios"] = json!(0.5);
    assert!(serde_json::from_value::<ViTMAEConfig>(value).is_err());
}

#[test]
fn forward_step_draws_reproducible_masks_from_the_backend_rng() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = fixture("mae-tiny");
    let device = Default::default();
    let (_, model) = load_vit_mae::<Flex>(&dir, &device).unwrap();
    let batch = image_batch(&Reference::open(&dir));
    let step = |seed| {
        Flex::seed(&device, seed);
        let out = model.forward_step(&batch);
        assert_eq!(out.count, 3);
        assert!(out.logits.is_none());
        assert_eq!(out.features.as_ref().unwrap().dims(), [3, 32]);
        out.loss.into_scalar()
    };
    let (a, b, c) = (step(7), step(7), step(8));
    assert!(a.is_finite());
    assert_eq!(a, b, "same backend seed, same mask, same loss");
    assert_ne!(a, c, "another seed draws another mask");
    // MaskedImageModel with the fixture's noise is the parity-checked loss.
    let reference = Reference::open(&dir);
    let loss = model
        .masked_loss(&batch, reference.tensor::<Flex, 2>("noise"))
        .into_scalar() as f64;
    let want = reference.floats("loss").1[0] as f64;
    assert!(relative(loss, want) <= 1e-5, "masked_loss {loss} vs {want}");
}

#[test]
fn forward_step_trains_through_autodiff() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let config = parse_mae_config(
        &serde_json::from_str(
            &std::fs::read_to_string(fixture("mae-tiny").join("config.json")).unwrap(),
        )
        .unwrap(),
        Path::new("config.json"),
    )
    .unwrap();
    let model = config.init_seeded::<A>(3, &device);
    let batch = image_batch(&Reference::open(&fixture("mae-tiny")));
    A::seed(&device, 1);
    let grads = gradients(&model, &model.forward_step(&batch).loss.backward());
    assert!(grads.contains_key("vit.embeddings.cls_token"));
    assert!(grads.contains_key("decoder.mask_token"));
    assert!(!grads.contains_key("decoder.decoder_pos_embed"));
}

#[test]
fn lora_adapters_start_as_a_no_op_on_encoder_and_decoder() {
    let dir = fixture("mae-tiny");
    let (_, model) = load_vit_mae::<Flex>(&dir, &Default::default()).unwrap();
    let reference = Reference::open(&dir);
    let run = |m: &cpt_models::ViTMAEForPreTraining<Flex>| {
        values(
            m.forward_with_noise(
                reference.tensor::<Flex, 4>("pixel_values"),
                reference.tensor::<Flex, 2>("noise"),
            )
            .logits,
        )
    };
    let base = run(&model);
    let spec = LoraSpec {
        rank: 2,
        alpha: 2.0,
        rslora: true,
        target_modules: VIT_LORA_TARGETS.iter().map(|t| t.to_string()).collect(),
        dropout: 0.0,
    };
    let adapted = model.with_adapters(&spec, 4);
    let adapters: Vec<String> = named_tensors(&adapted)
        .into_keys()
        .filter(|p| p.contains(cpt_core::ADAPTER_MARKER))
        .collect();
    // (2 encoder + 2 decoder layers) × 6 projections × (lora_a, lora_b).
    assert_eq!(adapters.len(), 4 * 6 * 2);
    assert!(
        adapters
            .iter()
            .any(|p| p == "decoder.decoder_layers.1.intermediate.dense.lora_a")
    );
    let diff = max_abs_diff(&run(&adapted), &base);
    assert!(diff <= 1e-6, "fresh adapters changed the logits by {diff}");
    let merged = adapted.merge_adapters();
    let diff = max_abs_diff(&run(&merged), &base);
    assert!(
        diff <= 1e-6,
        "merging zero adapters changed the logits by {diff}"
    );
    assert_eq!(
        named_tensors(&merged.drop_adapters()).len(),
        named_tensors(&load_vit_mae::<Flex>(&dir, &Default::default()).unwrap().1).len()
    );
}
