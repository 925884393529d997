//! `[model.grow]` end to end: a trained model exported, grown by a layer before the next stage
//! with the old parameters frozen, exported again, and resumed exactly from a mid-run checkpoint.

use cpt_core::params::NamedTensors;
use cpt_core::tensor_file::read_tensors;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{cpt, data, run};

/// A one-experience config; `model` is the `[model]` table's body and what follows it.
fn config(dir: &Path, name: &str, model: &str, experience: &str) -> PathBuf {
    let text = format!(
        r#"
seed = 3
[model]
architecture = "llama"
{model}
[data]
tokenizer = "{tok}"
seq_len = 16
[[experiences]]
name = "{experience}"
train = ["{train}"]
eval = ["{eval}"]
steps = 4
[train]
batch_size = 2
weight_decay = 0.1
[schedule]
kind = "constant"
peak_lr = 1e-2
warmup_steps = 0
[eval]
every_steps = 100
max_sequences = 2
batch_size = 2
[checkpoint]
every_steps = 2
keep_last = 10
"#,
        tok = data("tokenizer.json"),
        train = data(&format!("{experience}/train.parquet")),
        eval = data(&format!("{experience}/eval.parquet")),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Checkpoint directories of a run, oldest first.
fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn final_weights(run: &Path) -> NamedTensors {
    let last = checkpoints(run).pop().unwrap();
    read_tensors(&last.join("model.safetensors")).unwrap().0
}

const SMALL: &str = r#"[model.config]
vocab_size = 1024
hidden_size = 16
intermediate_size = 32
num_hidden_layers = 2
num_attention_heads = 2
tie_word_embeddings = true"#;

#[test]
fn a_grown_model_trains_only_its_new_layers_exports_the_grown_config_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let first = dir.join("first");
    ok(run(
        &config(dir, "first.toml", SMALL, "austen"),
        &first,
        &[],
    ));
    let folder = dir.join("first-hf");
    ok(cpt(&[
        "export",
        "hf",
        first.to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
    ]));

    // Grow the exported model by one layer after original layer 0, old parameters frozen.
    let grow = format!(
        "from = \"{}\"\n[model.grow]\nkind = \"depth\"\nadd_layers = 1\npositions = [0]\nfreeze = \"old\"",
        folder.display()
    );
    let cfg = config(dir, "grown.toml", &grow, "rust");
    let grown = dir.join("grown");
    ok(run(&cfg, &grown, &[]));

    // Old layer i is grown layer i (0) or i + 1 (1); embeddings and norms keep their path.
    let (before, after) = (final_weights(&first), final_weights(&grown));
    let grown_path = |path: &str| path.replace("model.layers.1.", "model.layers.2.");
    for (path, value) in &before {
        assert_eq!(
            &after[&grown_path(path)],
            value,
            "`{path}` changed although frozen"
        );
    }
    let inserted: Vec<&String> = after
        .keys()
        .filter(|p| p.starts_with("model.layers.1."))
        .collect();
    assert_eq!(
        inserted.len(),
        before.len() / 2 - 1,
        "one layer's parameters"
    );
    // The inserted layer started as layer 0 with zero output projections, and trained.
    let o_proj = &after["model.layers.1.self_attn.o_proj.weight"];
    assert!(
        o_proj.values.iter().any(|&v| v != 0.0),
        "o_proj did not train"
    );
    assert_ne!(
        after["model.layers.1.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"],
        "up_proj did not train"
    );

    // The export carries the grown config.
    let exported = dir.join("grown-hf");
    ok(cpt(&[
        "export",
        "hf",
        grown.to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]));
    let config_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exported.join("config.json")).unwrap()).unwrap();
    assert_eq!(config_json["num_hidden_layers"], 3);

    // Cut the run back to its first checkpoint (as if killed there) and resume: the grown
    // model is rebuilt and loaded, not grown again, and ends bit-identical.
    let cut = dir.join("cut");
    std::fs::create_dir_all(cut.join("checkpoints")).unwrap();
    for file in ["config.toml", "metrics.jsonl", "eval.jsonl"] {
        std::fs::copy(grown.join(file), cut.join(file)).unwrap();
    }
    let first_checkpoint = &checkpoints(&grown)[0];
    let target = cut
        .join("checkpoints")
        .join(first_checkpoint.file_name().unwrap());
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(first_checkpoint).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    ok(run(&cfg, &cut, &["--resume"]));
    assert_eq!(final_weights(&cut), after, "resumed weights differ");
    // Losses and gradient norms per step (timings and memory differ between processes).
    let steps = |run: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
                let fields = record.as_object_mut().unwrap();
                fields.remove("tokens_per_sec");
                fields.remove("peak_rss_mib");
                record
            })
            .collect()
    };
    assert_eq!(steps(&cut), steps(&grown));
}

#[test]
fn width_growth_trains_and_bad_growth_settings_are_named_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let wide = format!(
        "{SMALL}\n[model.grow]\nkind = \"width\"\nhidden_size = 32\nintermediate_size = 40"
    );
    let out = dir.join("wide");
    ok(run(&config(dir, "wide.toml", &wide, "austen"), &out, &[]));
    let weights = final_weights(&out);
    assert_eq!(weights["model.embed_tokens.weight"].shape, [1024, 32]);
    assert_eq!(weights["model.layers.0.mlp.up_proj.weight"].shape, [32, 40]);

    for (grow, key) in [
        (
            "kind = \"depth\"\nadd_layers = 1\npositions = [5]",
            "`model.grow.positions`",
        ),
        (
            "kind = \"depth\"\nadd_layers = 0",
            "`model.grow.add_layers`",
        ),
        (
            "kind = \"width\"\nhidden_size = 8",
            "`model.grow.hidden_size`",
        ),
        ("kind = \"deep\"", "`model.grow.kind`"),
    ] {
        let cfg = config(
            dir,
            "bad.toml",
            &format!("{SMALL}\n[model.grow]\n{grow}"),
            "austen",
        );
        let out = dir.join("bad");
        let o = run(&cfg, &out, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && stderr.contains(key),
            "{grow}: {stderr}"
        );
        assert!(!out.exists(), "{grow}: nothing may be written");
    }
}
