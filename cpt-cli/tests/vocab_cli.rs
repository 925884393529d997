//! Vocabulary extension end to end: `cpt tokenizer extend` on the bundled tokenizer, a run that
//! grows a Hugging Face model to the extended tokenizer (`[model.resize_vocab]`), its exact
//! resume and its export, and the errors of a resize that cannot be done.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{cpt, data, repo, run, stderr};

fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure: {}", stderr(o));
    stderr(o)
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {}", stderr(o)))
        .to_string()
}

/// A two-experience LLaMA config on the bundled data; `model` is the `[model]` section's body.
fn config(dir: &Path, name: &str, model: &str, tokenizer: &str, steps: usize) -> PathBuf {
    let text = format!(
        r#"
seed = 5
strategies = ["replay"]
[model]
architecture = "llama"
{model}
[data]
tokenizer = "{tokenizer}"
seq_len = 16
[[experiences]]
name = "austen"
train = ["{a_train}"]
eval = ["{a_eval}"]
steps = {steps}
[[experiences]]
name = "rust"
train = ["{r_train}"]
eval = ["{r_eval}"]
steps = {steps}
[train]
batch_size = 2
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
every_steps = 2
keep_last = 20
"#,
        a_train = data("austen/train.parquet"),
        a_eval = data("austen/eval.parquet"),
        r_train = data("rust/train.parquet"),
        r_eval = data("rust/eval.parquet"),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

const FRESH: &str = "[model.config]
vocab_size = 1024
hidden_size = 16
intermediate_size = 32
num_hidden_layers = 1
num_attention_heads = 2
tie_word_embeddings = false";

/// The bundled tokenizer extended by `add` Rust tokens, at `dir/extended.json`, and the
/// command's standard output.
fn extend(dir: &Path, add: usize) -> (PathBuf, String) {
    let out = dir.join("extended.json");
    let o = cpt(&[
        "tokenizer",
        "extend",
        "--tokenizer",
        &data("tokenizer.json"),
        "--input",
        &data("rust/train.parquet"),
        "--add",
        &add.to_string(),
        "--compare",
        &data("austen/eval.parquet"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    (out, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A tiny LLaMA trained one step on the bundled data and exported as a Hugging Face folder.
fn base_model(dir: &Path) -> PathBuf {
    let cfg = config(dir, "base", FRESH, &data("tokenizer.json"), 1);
    let out = dir.join("base-run");
    let o = run(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hf = dir.join("base-hf");
    let o = cpt(&[
        "export",
        "hf",
        out.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    hf
}

fn vocab(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["model"]["vocab"].as_object().unwrap().clone()
}

#[test]
fn tokenizer_extend_keeps_every_id_adds_exactly_n_and_prints_tokens_per_char() {
    let dir = tempfile::tempdir().unwrap();
    let (out, stdout) = extend(dir.path(), 40);
    let (old, new) = (vocab(Path::new(&data("tokenizer.json"))), vocab(&out));
    for (token, id) in &old {
        assert_eq!(new.get(token), Some(id), "{token}");
    }
    assert_eq!(new.len(), old.len() + 40);
    let mut added: Vec<u64> = new
        .iter()
        .filter(|(t, _)| !old.contains_key(*t))
        .map(|(_, id)| id.as_u64().unwrap())
        .collect();
    added.sort_unstable();
    assert_eq!(added, (1024..1064).collect::<Vec<u64>>());
    // The table: the new corpus compresses, the compared one does not get longer.
    let row = |name: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` row: {stdout}"));
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (input, compare) = (row("input"), row("compare"));
    assert!(
        input[2] < input[1],
        "rust text takes fewer tokens: {stdout}"
    );
    assert!(compare[2] <= compare[1], "{stdout}");
    assert!(stdout.contains("ids 1024..1064"), "{stdout}");
}

fn final_weights(run: &Path) -> Vec<u8> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    std::fs::read(dirs.last().unwrap().join("model.safetensors")).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A run that grows a model to an extended tokenizer, cut back to its first checkpoint and
/// resumed, ends with the uninterrupted run's weights and logs; its export carries the new
/// size and the extended tokenizer.
#[test]
fn a_resized_run_resumes_exactly_and_exports_the_new_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let hf = base_model(dir.path());
    let (tokenizer, _) = extend(dir.path(), 24);
    let model = format!(
        "from = \"{}\"\n[model.resize_vocab]\ninit = \"subword_mean\"",
        hf.display()
    );
    let cfg = config(
        dir.path(),
        "resized",
        &model,
        tokenizer.to_str().unwrap(),
        3,
    );
    let reference = dir.path().join("reference");
    let o = run(&cfg, &reference, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The same run, as if killed after its first checkpoint (step 2 of 6).
    let cut = dir.path().join("cut");
    copy_dir(&reference, &cut);
    std::fs::remove_file(cut.join("summary.json")).unwrap();
    for entry in std::fs::read_dir(cut.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "step-000000002" {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    let o = run(&cfg, &cut, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        final_weights(&cut),
        final_weights(&reference),
        "resumed weights differ"
    );
    for file in ["metrics.jsonl", "eval.jsonl", "eval_matrix.csv"] {
        let read = |run: &Path| std::fs::read_to_string(run.join(file)).unwrap();
        let strip = |s: String| -> Vec<serde_json::Value> {
            s.lines()
                .map(|l| {
                    let mut v: serde_json::Value =
                        serde_json::from_str(l).unwrap_or(serde_json::Value::String(l.into()));
                    if let Some(o) = v.as_object_mut() {
                        for k in [
                            "wall_time_secs",
                            "tokens_per_sec",
                            "peak_rss_mib",
                            "step_secs",
                        ] {
                            o.remove(k);
                        }
                    }
                    v
                })
                .collect()
        };
        assert_eq!(strip(read(&cut)), strip(read(&reference)), "{file}");
    }

    let exported = dir.path().join("resized-hf");
    let o = cpt(&[
        "export",
        "hf",
        reference.to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exported.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 1024 + 24);
    assert_eq!(vocab(&exported.join("tokenizer.json")).len(), 1024 + 24);
}

#[test]
fn resize_errors_name_both_sizes_the_key_and_the_init() {
    let dir = tempfile::tempdir().unwrap();
    let hf = base_model(dir.path());
    let (extended, _) = extend(dir.path(), 8);
    let cases: [(&str, String, &str, &[&str]); 4] = [
        // A larger tokenizer without a resize.
        (
            "larger",
            format!("from = \"{}\"", hf.display()),
            extended.to_str().unwrap(),
            &["model.config.vocab_size", "1024", "1032", "resize_vocab"],
        ),
        // A resize to a tokenizer that is the model's size.
        (
            "same",
            format!(
                "from = \"{}\"\n[model.resize_vocab]\ninit = \"mean\"",
                hf.display()
            ),
            &data("tokenizer.json"),
            &["model.resize_vocab", "1024", "nothing to add"],
        ),
        // An unknown init.
        (
            "bad-init",
            format!(
                "from = \"{}\"\n[model.resize_vocab]\ninit = \"zeros\"",
                hf.display()
            ),
            extended.to_str().unwrap(),
            &["zeros", "subword_mean"],
        ),
        // A resize of a fresh model.
        (
            "fresh",
            format!("{FRESH}\n[model.resize_vocab]\ninit = \"mean\""),
            extended.to_str().unwrap(),
            &["model.resize_vocab", "model.from"],
        ),
    ];
    for (name, model, tokenizer, expected) in cases {
        let cfg = config(dir.path(), name, &model, tokenizer, 1);
        let out = dir.path().join(name);
        let line = error_line(&run(&cfg, &out, &[]));
        for e in expected {
            assert!(line.contains(e), "{name}: `{e}` not in {line}");
        }
        assert!(!out.join("summary.json").exists(), "{name}");
    }
}

/// A tokenizer smaller than the model under a resize, and one that moves an existing id.
#[test]
fn a_smaller_or_reordered_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hf = base_model(dir.path());
    // Smaller: the bundled tokenizer without its last 4 merges and tokens.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("tokenizer.json")).unwrap()).unwrap();
    let mut shrunk = json.clone();
    let vocab = shrunk["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|_, id| id.as_u64().unwrap() < 1020);
    let merges = shrunk["model"]["merges"].as_array_mut().unwrap();
    let keep = merges.len() - 4;
    merges.truncate(keep);
    let small = dir.path().join("small.json");
    std::fs::write(&small, serde_json::to_vec(&shrunk).unwrap()).unwrap();
    // Reordered: two single-byte tokens swap ids, plus one new token.
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["a"].clone(), vocab["b"].clone());
    vocab.insert("a".into(), b);
    vocab.insert("b".into(), a);
    vocab.insert("zzzz_new".into(), 1024.into());
    let swapped = dir.path().join("swapped.json");
    std::fs::write(&swapped, serde_json::to_vec(&json).unwrap()).unwrap();

    let resize = format!(
        "from = \"{}\"\n[model.resize_vocab]\ninit = \"mean\"",
        hf.display()
    );
    for (name, tokenizer, expected) in [
        (
            "small",
            &small,
            ["model.resize_vocab", "1020", "1024", "smaller"],
        ),
        (
            "swapped",
            &swapped,
            [
                "data.tokenizer",
                "swapped.json",
                "keep every existing id",
                "`a`",
            ],
        ),
    ] {
        let cfg = config(dir.path(), name, &resize, tokenizer.to_str().unwrap(), 1);
        let line = error_line(&run(&cfg, &dir.path().join(name), &[]));
        for e in expected {
            assert!(line.contains(e), "{name}: `{e}` not in {line}");
        }
    }
}

/// CLIP: a run grows the text token embedding to an extended tokenizer and the text position
/// table to a longer one; the export carries both sizes.
#[test]
fn a_clip_run_grows_its_text_vocabulary_and_positions_and_exports_them() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("examples/clip_continual.toml")).unwrap();
    let toy = [
        "experiences[0].steps=2",
        "experiences[1].steps=2",
        "train.batch_size=8",
        "eval.max_images=20",
        "eval.batch_size=10",
        "schedule.warmup_steps=1",
        "strategies=[\"naive\"]",
    ];
    let run_clip = |config: &Path, out: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cpt"));
        command.current_dir(repo()).env("CPT_LOG", "warn");
        command.args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        for set in toy {
            command.args(["--set", set]);
        }
        command.output().unwrap()
    };
    let export = |run: &Path, out: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_cpt"))
            .current_dir(repo())
            .args([
                "export",
                "hf",
                run.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let base_cfg = dir.path().join("clip.toml");
    std::fs::write(&base_cfg, &example).unwrap();
    let base_run = dir.path().join("clip-run");
    let o = run_clip(&base_cfg, &base_run);
    assert!(o.status.success(), "{}", stderr(&o));
    let base_hf = dir.path().join("clip-hf");
    export(&base_run, &base_hf);

    let (tokenizer, _) = extend(dir.path(), 8);
    let start = example.find("[model.config]").unwrap();
    let end = example.find("[data]\n").unwrap();
    let resized = format!(
        "{}from = \"{}\"\n[model.resize_vocab]\ninit = \"mean\"\n[model.resize_text_positions]\nmax_position_embeddings = 24\ninit = \"interpolate\"\nkeep_positions = 4\n\n{}",
        &example[..start],
        base_hf.display(),
        example[end..].replace(
            "tokenizer = \"examples/data/tokenizer.json\"",
            &format!("tokenizer = \"{}\"", tokenizer.display())
        ),
    );
    let cfg = dir.path().join("clip-resized.toml");
    std::fs::write(&cfg, resized).unwrap();
    let out = dir.path().join("clip-resized-run");
    let o = run_clip(&cfg, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let hf = dir.path().join("clip-resized-hf");
    export(&out, &hf);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["text_config"]["vocab_size"], 1024 + 8);
    assert_eq!(config["text_config"]["max_position_embeddings"], 24);
}
