//! Data recipes through the `cpt` binary: a MeCo run (metadata-conditioned mixture, then a plain
//! cooldown) with per-source token counts, and recipe mistakes named before anything is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{data, stderr, tiny_llama};

/// A tiny MeCo stream: Austen and Shakespeare mixed, each behind its own source line, then a
/// plain cooldown on Austen.
fn meco_config(dir: &Path, tweak: impl FnOnce(String) -> String) -> PathBuf {
    let text = format!(
        r#"
seed = 3
strategies = ["replay"]
{tiny}[[experiences]]
name = "meco"
eval = ["{a_eval}"]
steps = 4
[[experiences.mixture]]
name = "austen"
files = ["{a_train}"]
weight = 1.0
metadata = "source: austen"
[[experiences.mixture]]
name = "shakespeare"
files = ["{s_train}"]
weight = 1.0
metadata = "source: shakespeare"
[[experiences]]
name = "cooldown"
train = ["{a_train}"]
eval = ["{a_eval}"]
metadata = false
steps = 2
[train]
batch_size = 4
[schedule]
kind = "wsd"
peak_lr = 1e-3
warmup_steps = 1
[replay]
capacity = 8
ratio = 0.5
[eval]
max_sequences = 2
batch_size = 2
[checkpoint]
every_steps = 3
keep_last = 2
"#,
        tiny = tiny_llama(),
        a_train = data("austen/train.parquet"),
        a_eval = data("austen/eval.parquet"),
        s_train = data("shakespeare/train.parquet"),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, tweak(text)).unwrap();
    path
}

fn run(config: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("CPT_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_meco_run_with_a_cooldown_counts_tokens_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = meco_config(dir.path(), |t| t);
    let out = dir.path().join("run");
    let o = run(&cfg, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    let mut previous_total = 0;
    for record in &records {
        let counts = record["tokens_by_source"].as_object().unwrap();
        let total: u64 = counts.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(total, record["tokens_seen"].as_u64().unwrap(), "{record}");
        assert!(total > previous_total);
        previous_total = total;
    }
    let last = records.last().unwrap()["tokens_by_source"].clone();
    // Both mixture components were drawn, the cooldown's plain stream counts under its name,
    // and replayed items under `(replay)`: 6 steps of 4 sequences of 16 tokens in all.
    for key in ["meco/austen", "meco/shakespeare", "cooldown", "(replay)"] {
        assert!(last[key].as_u64().unwrap() > 0, "{key} in {last}");
    }
    // Before the cooldown no count names it.
    assert!(records[3]["tokens_by_source"].get("cooldown").is_none());
    assert_eq!(records[5]["tokens_seen"].as_u64().unwrap(), 6 * 4 * 16);
    // The resolved config written into the run keeps the recipe keys.
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(written.contains("source: shakespeare") && written.contains("metadata = false"));
}

/// A change to the MeCo config text.
type Tweak = Box<dyn FnOnce(String) -> String>;

#[test]
fn recipe_mistakes_are_named_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Tweak, Vec<&str>)> = vec![
        (
            Box::new(|t: String| {
                t.replacen(
                    "metadata = \"source: austen\"",
                    "metadata = \"source: austen\"\nfilter = \"quality >= 0.5\"",
                    1,
                )
            }),
            vec![
                "experiences[0].mixture[0].filter",
                "quality",
                "train.parquet",
            ],
        ),
        (
            Box::new(|t: String| {
                t.replacen("weight = 1.0\n", "weight = 1.0\nfilter = \"score >>\"\n", 1)
            }),
            vec!["experiences[0].mixture[0].filter", "score >>"],
        ),
        (
            Box::new(|t: String| {
                t.replace("seq_len = 16", "seq_len = 16\nmetadata_loss = true")
                    .replace("metadata = \"source: austen\"\n", "")
                    .replace("metadata = \"source: shakespeare\"\n", "")
            }),
            vec!["data.metadata_loss"],
        ),
        (
            Box::new(|t: String| {
                t.replace(
                    "metadata = false\nsteps = 2",
                    "subset_docs = 3\nepochs = 1\nsteps = 2000",
                )
            }),
            vec!["experiences[1].epochs = 1", "subset of 3 documents"],
        ),
        (
            Box::new(|t: String| t.replace("metadata = false", "subset_docs = 100000")),
            vec!["experiences[1].subset_docs", "usable"],
        ),
    ];
    for (i, (tweak, needles)) in cases.into_iter().enumerate() {
        let case_dir = dir.path().join(i.to_string());
        std::fs::create_dir_all(&case_dir).unwrap();
        let cfg = meco_config(&case_dir, tweak);
        let out = case_dir.join("run");
        let o = run(&cfg, &out);
        assert!(!o.status.success(), "case {i} should fail");
        let err = stderr(&o);
        for needle in needles {
            assert!(err.contains(needle), "case {i}: `{needle}` not in {err}");
        }
        assert!(!out.exists(), "case {i} left a run directory");
    }
}
