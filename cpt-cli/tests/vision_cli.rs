//! The vision examples through the `cpt` binary at toy size (a few steps, few images), and the
//! errors a vision config can hit, each naming its culprit.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::repo;

/// `cpt run <example> --out <out> --set ...` from the repository root.
fn run_example(example: &str, out: &Path, sets: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cpt"));
    command
        .current_dir(repo())
        .args(["run", example, "--out"])
        .arg(out);
    for set in sets {
        command.args(["--set", set]);
    }
    command.output().expect("the binary runs")
}

/// Overrides that shrink an example to seconds.
fn toy(experiences: usize) -> Vec<String> {
    let mut sets: Vec<String> = (0..experiences)
        .map(|i| format!("experiences[{i}].steps=2"))
        .collect();
    sets.extend(
        [
            "train.batch_size=8",
            "eval.max_images=20",
            "eval.batch_size=10",
            "eval.support_images=20",
            "schedule.warmup_steps=1",
        ]
        .map(String::from),
    );
    sets
}

fn summary(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn class_incremental_vit_runs_with_probes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit");
    let sets = toy(5);
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let output = run_example("examples/vit_class_incremental.toml", &out, &sets);
    assert!(output.status.success(), "{}", stderr(&output));
    let s = summary(&out);
    assert_eq!(s["metric"], "accuracy");
    assert_eq!(s["eval_matrix"].as_array().unwrap().len(), 5);
    let extras = &s["final_extras"]["bag+boot"];
    assert!(extras["nmc_accuracy"].as_f64().unwrap() >= 0.0);
    assert!(extras["probe_accuracy"].as_f64().unwrap() <= 1.0);
    // Two steps of 8 images per experience.
    assert_eq!(s["tokens_seen"], 5 * 2 * 8);
}

#[test]
fn mae_runs_under_both_schedules() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("wsd", vec![]),
        (
            "cosine",
            vec!["schedule.kind=cosine", "schedule.rewarm=true"],
        ),
    ] {
        let out = dir.path().join(name);
        let mut sets = toy(2);
        sets.extend(extra.into_iter().map(String::from));
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let output = run_example("examples/mae_digits_fashion.toml", &out, &sets);
        assert!(output.status.success(), "{}", stderr(&output));
        let s = summary(&out);
        assert_eq!(s["metric"], "reconstruction_loss");
        assert_eq!(s["lower_is_better"], true);
        let loss = s["eval_matrix"][1][0].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0);
    }
}

#[test]
fn clip_reports_zero_shot_retention_and_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip");
    let mut sets = toy(2);
    sets.push("distill.reference_batch_size=4".into());
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let output = run_example("examples/clip_continual.toml", &out, &sets);
    assert!(output.status.success(), "{}", stderr(&output));
    let s = summary(&out);
    assert_eq!(s["metric"], "zero_shot_accuracy");
    let held_out = &s["held_out"][0];
    assert_eq!(held_out["name"], "fashion-b");
    // Initial, then after each of the two experiences.
    assert_eq!(held_out["values"].as_array().unwrap().len(), 3);
    let extras = &s["final_extras"]["digits"];
    for k in ["i2t_recall@1", "t2i_recall@5", "nmc_accuracy"] {
        let v = extras[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let csv = std::fs::read_to_string(out.join("eval_matrix.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",fashion-b"), "{csv}");
}

#[test]
fn vision_config_errors_name_their_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "examples/vit_class_incremental.toml",
            &["data.image.image_column=pixels"],
            "pixels",
        ),
        (
            "examples/vit_class_incremental.toml",
            &["experiences[0].tokens=100", "experiences[0].steps=0"],
            "experiences[0]",
        ),
        (
            "examples/vit_class_incremental.toml",
            &["model.config.num_labels=4"],
            "experiences[2].classes",
        ),
        (
            "examples/clip_continual.toml",
            &["data.image.text_len=40"],
            "data.image.text_len",
        ),
        (
            "examples/vit_class_incremental.toml",
            &["lora.target_modules=[\"gate\"]", "strategies=[\"lora\"]"],
            "unknown module `gate`",
        ),
        (
            "examples/mae_digits_fashion.toml",
            &["eval.probe_scope=everything"],
            "eval.probe_scope",
        ),
        (
            "examples/vit_class_incremental.toml",
            &["train.activation_checkpointing=layers"],
            "`layers` recomputes LLaMA decoder layers",
        ),
    ];
    for (i, (example, sets, expected)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("case{i}"));
        let output = run_example(example, &out, sets);
        let err = stderr(&output);
        assert!(!output.status.success(), "case {i} succeeded");
        assert!(err.contains(expected), "case {i}: {err}");
        assert!(!out.join("summary.json").exists());
    }
}

/// `cpt export hf` on a vision run: the folder loads back (through the Hugging Face loaders) to
/// exactly the checkpoint's weights.
#[test]
fn vision_runs_export_to_hugging_face_folders() {
    use burn::backend::Flex;
    use cpt_core::params::named_tensors;
    let dir = tempfile::tempdir().unwrap();
    for (example, experiences) in [
        ("examples/vit_class_incremental.toml", 5),
        ("examples/mae_digits_fashion.toml", 2),
        ("examples/clip_continual.toml", 2),
    ] {
        let name = Path::new(example).file_stem().unwrap().to_str().unwrap();
        let out = dir.path().join(name);
        let mut sets = toy(experiences);
        sets.push("distill.reference_batch_size=4".into());
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let output = run_example(example, &out, &sets);
        assert!(output.status.success(), "{}", stderr(&output));
        let hf = dir.path().join(format!("{name}-hf"));
        // Paths in a run's config are relative to where the run was started.
        let export = Command::new(env!("CARGO_BIN_EXE_cpt"))
            .current_dir(repo())
            .args(["export", "hf"])
            .arg(&out)
            .arg("--out")
            .arg(&hf)
            .output()
            .unwrap();
        assert!(export.status.success(), "{}", stderr(&export));
        let checkpoint = std::fs::read_dir(out.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        let (saved, _) =
            cpt_core::tensor_file::read_tensors(&checkpoint.join("model.safetensors")).unwrap();
        let device = Default::default();
        let loaded = match name {
            "vit_class_incremental" => named_tensors(
                &cpt_models::hf_vit::load_vit::<Flex>(&hf, &device)
                    .unwrap()
                    .1,
            ),
            "mae_digits_fashion" => named_tensors(
                &cpt_models::hf_vit::load_vit_mae::<Flex>(&hf, &device)
                    .unwrap()
                    .1,
            ),
            _ => {
                assert!(hf.join("tokenizer.json").exists());
                named_tensors(
                    &cpt_models::hf_clip::load_clip::<Flex>(&hf, &device)
                        .unwrap()
                        .1,
                )
            }
        };
        assert_eq!(loaded.len(), saved.len(), "{name}");
        for (path, tensor) in &saved {
            assert_eq!(loaded[path].values, tensor.values, "{name}: {path}");
        }
    }
}

/// `distill` before a continued `lora` would restore its teacher without adapters on resume:
/// refused up front, naming the key.
#[test]
fn distill_before_continued_lora_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("order");
    let output = run_example(
        "examples/vit_class_incremental.toml",
        &out,
        &[
            r#"strategies=["distill","lora"]"#,
            r#"lora.target_modules=["query"]"#,
            "lora.mode=continue",
        ],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("config key `strategies`") && err.contains("before `distill`"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}
