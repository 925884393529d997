//! The `cpt` binary end to end: a tiny run on the bundled data, resume rules, and bad input that
//! must give a one-line error naming the culprit, a non-zero exit, and no complete-looking output.

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

mod common;
use common::{cpt, data, error_line, repo, run, stderr, tiny_llama};

/// A tiny two-experience config over the bundled data.
fn config(dir: &Path, tweak: impl FnOnce(String) -> String) -> PathBuf {
    let text = format!(
        r#"
seed = 5
strategies = ["replay"]
{tiny}[[experiences]]
name = "austen"
train = ["{a_train}"]
eval = ["{a_eval}"]
steps = 3
[[experiences]]
name = "rust"
train = ["{r_train}"]
eval = ["{r_eval}"]
steps = 3
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
every_steps = 2
max_sequences = 2
batch_size = 2
[checkpoint]
every_steps = 2
keep_last = 2
"#,
        tiny = tiny_llama(),
        a_train = data("austen/train.parquet"),
        a_eval = data("austen/eval.parquet"),
        r_train = data("rust/train.parquet"),
        r_eval = data("rust/eval.parquet"),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, tweak(text)).unwrap();
    path
}

#[test]
fn a_tiny_run_writes_the_whole_run_directory_and_resumes_to_the_same_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let out = dir.path().join("run");
    let o = run(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "config.toml",
        "metrics.jsonl",
        "eval.jsonl",
        "eval_matrix.csv",
        "summary.json",
    ] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let csv = std::fs::read_to_string(out.join("eval_matrix.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "after,austen,rust");
    assert_eq!(csv.lines().count(), 4);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    for line in metrics.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["peak_rss_mib"].as_f64().unwrap() > 0.0, "{line}");
        // The CPU has no device memory: the fields are there, and null.
        for key in ["device_memory_mib", "device_reserved_mib"] {
            assert_eq!(record.get(key), Some(&serde_json::Value::Null), "{line}");
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();

    // Running again into the same directory without --resume is refused...
    assert!(error_line(&run(&cfg, &out, &[])).contains("--resume"));
    // ...and a resume of the finished run redoes nothing and reaches the same summary.
    let o = run(&cfg, &out, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let strip = |s: &str| {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
        for k in ["wall_time_secs", "tokens_per_sec", "peak_rss_mib"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!(strip(&summary), strip(&again));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        metrics
    );
}

#[test]
fn resume_refuses_a_changed_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let out = dir.path().join("run");
    assert!(run(&cfg, &out, &[]).status.success());
    let line = error_line(&run(&cfg, &out, &["--resume", "--set", "seed=6"]));
    assert!(line.contains("`seed`"), "{line}");
    // Forced, it continues and records the new config.
    let o = run(&cfg, &out, &["--resume", "--force", "--set", "seed=6"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(out.join("config.toml"))
            .unwrap()
            .contains("seed = 6")
    );
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| {
        t.replace(
            "batch_size = 2\n[schedule]",
            "batch_size = 2\nbatch_sise = 3\n[schedule]",
        )
    });
    let out = dir.path().join("run");
    let line = error_line(&run(&cfg, &out, &[]));
    assert!(
        line.contains("batch_sise") && line.contains("run.toml"),
        "{line}"
    );
    assert!(!out.exists(), "nothing may be written for a bad config");
}

#[test]
fn unknown_model_key_and_bad_override_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| {
        t.replace(
            "tie_word_embeddings = true",
            "tie_word_embeddings = true\nhidden_sise = 3",
        )
    });
    let line = error_line(&run(&cfg, &dir.path().join("run"), &[]));
    assert!(
        line.contains("hidden_sise") && line.contains("model.config"),
        "{line}"
    );
    let cfg = config(dir.path(), |t| t);
    let line = error_line(&run(
        &cfg,
        &dir.path().join("run"),
        &["--set", "strategies=[\"repaly\"]"],
    ));
    assert!(line.contains("repaly"), "{line}");
}

#[test]
fn missing_data_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| {
        t.replace(&data("rust/train.parquet"), "/nonexistent/rust.parquet")
    });
    let out = dir.path().join("run");
    let line = error_line(&run(&cfg, &out, &[]));
    assert!(line.contains("/nonexistent/rust.parquet"), "{line}");
    assert!(!out.exists());
}

fn write_parquet(path: &Path, field: Field, column: Arc<dyn arrow_array::Array>) {
    let schema = Arc::new(Schema::new(vec![field]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn missing_column_non_text_column_and_empty_corpus_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "nocol.parquet",
            Field::new("body", DataType::Utf8, false),
            Arc::new(StringArray::from(vec!["a b c"])) as Arc<dyn arrow_array::Array>,
            "no column",
        ),
        (
            "ints.parquet",
            Field::new("text", DataType::Int64, false),
            Arc::new(Int64Array::from(vec![1, 2])) as _,
            "text",
        ),
        (
            "empty.parquet",
            Field::new("text", DataType::Utf8, false),
            Arc::new(StringArray::from(Vec::<&str>::new())) as _,
            "empty",
        ),
    ];
    for (name, field, column, needle) in cases {
        let file = dir.path().join(name);
        write_parquet(&file, field, column);
        let cfg = config(dir.path(), |t| {
            t.replace(&data("rust/train.parquet"), file.to_str().unwrap())
        });
        let out = dir.path().join(format!("run-{name}"));
        let line = error_line(&run(&cfg, &out, &[]));
        assert!(
            line.contains(name) && line.to_lowercase().contains(needle),
            "{name}: {line}"
        );
        assert!(!out.exists(), "{name}: nothing may be written");
    }
}

#[test]
fn malformed_tokenizer_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{\"model\": 42").unwrap();
    let cfg = config(dir.path(), |t| {
        t.replace(&data("tokenizer.json"), bad.to_str().unwrap())
    });
    let line = error_line(&run(&cfg, &dir.path().join("run"), &[]));
    assert!(line.contains("tokenizer.json"), "{line}");
}

#[test]
fn a_backend_that_is_not_compiled_in_says_so() {
    if cfg!(feature = "cuda") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let line = error_line(&run(&cfg, &dir.path().join("run"), &["--backend", "cuda"]));
    assert!(
        line.contains("not compiled") && line.contains("--features cuda"),
        "{line}"
    );
}

#[test]
fn data_prepare_then_tokenizer_train() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    for i in 0..30 {
        std::fs::write(
            corpus.join(format!("doc{i}.txt")),
            format!("Document {i} says hello to the world of continual learning."),
        )
        .unwrap();
    }
    let out = dir.path().join("prepared");
    let o = cpt(&[
        "data",
        "prepare",
        "--input",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--eval-fraction",
        "0.2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("train.parquet").is_file() && out.join("eval.parquet").is_file());
    let tok = dir.path().join("tok.json");
    let glob = format!("{}/*.parquet", out.display());
    let o = cpt(&[
        "tokenizer",
        "train",
        "--input",
        &glob,
        "--vocab-size",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    assert_eq!(json["model"]["type"], "BPE");

    let missing = dir.path().join("nope.txt");
    let line = error_line(&cpt(&[
        "data",
        "prepare",
        "--input",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(line.contains("nope.txt"), "{line}");
}

/// Weights of a run's newest checkpoint, bit for bit.
fn final_weights(run: &Path) -> Vec<u8> {
    let root = run.join("checkpoints");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    std::fs::read(dirs.last().unwrap().join("model.safetensors")).unwrap()
}

#[test]
fn sigterm_checkpoints_and_exits_then_resume_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough to be signalled mid-run, small enough to finish quickly.
    let cfg = config(dir.path(), |t| {
        t.replace("steps = 3", "steps = 600").replace(
            "every_steps = 2\nkeep_last",
            "every_steps = 1000\nkeep_last",
        )
    });
    let reference = dir.path().join("reference");
    assert!(run(&cfg, &reference, &[]).status.success());

    let out = dir.path().join("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("CPT_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until training is under way, then send one SIGTERM.
    let metrics = out.join("metrics.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 5 {
        assert!(started.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a stopped run exits with status 3");
    assert!(
        !out.join("summary.json").exists(),
        "an interrupted run has no summary"
    );

    let o = run(&cfg, &out, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        final_weights(&out),
        final_weights(&reference),
        "resumed weights differ"
    );
    let lines = |p: &Path| {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        lines(&out),
        lines(&reference),
        "metrics.jsonl must not repeat or lose steps"
    );
}

#[test]
fn bench_prints_one_json_line_of_throughput_for_every_mode() {
    for mode in ["train", "forward", "generate"] {
        let out = cpt(&[
            "bench", "--shape", "quick", "--steps", "1", "--warmup", "0", "--mode", mode,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let record: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        assert_eq!(record["shape"], "quick");
        assert_eq!(record["mode"], mode);
        assert!(record["tokens_per_sec"].as_f64().unwrap() > 0.0, "{record}");
        assert!(record["peak_rss_mib"].as_f64().unwrap() > 0.0, "{record}");
        for key in ["device_memory_mib", "device_reserved_mib"] {
            assert_eq!(record.get(key), Some(&serde_json::Value::Null), "{record}");
        }
    }
    let bad = cpt(&["bench", "--shape", "huge"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("quick"));
}

/// The final eval matrix of a finished run.
fn eval_matrix(run: &Path) -> Vec<Vec<f64>> {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    serde_json::from_value(summary["eval_matrix"].clone()).unwrap()
}

#[test]
fn two_devices_train_like_one_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    assert!(run(&cfg, &one, &[]).status.success());
    let out = run(&cfg, &two, &["--devices", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (a, b) in eval_matrix(&one)
        .iter()
        .flatten()
        .zip(eval_matrix(&two).iter().flatten())
    {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "{a} vs {b}");
    }
    // A global batch that does not split over the peers is refused before anything is written.
    let odd = dir.path().join("odd");
    let line = error_line(&run(&cfg, &odd, &["--devices", "3"]));
    assert!(line.contains("train.batch_size"), "{line}");
    assert!(!odd.exists());
}

/// Ports nobody listens on now (held together, so they differ): the orchestrator's and each
/// node's tensor server.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Start node `rank` of a two-node run of `config` into `out` over loopback (both nodes of one
/// machine share the run directory, as nodes of several machines share it on a network disk);
/// its output goes to `out`'s sibling `node{rank}.log`.
fn start_node(
    config: &Path,
    out: &Path,
    rank: usize,
    ports: &[u16],
    extra: &[&str],
) -> std::process::Child {
    let log = out.with_file_name(format!("node{rank}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let (coordinator, node) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1 + rank]),
    );
    let rank = rank.to_string();
    let mut args = vec![
        "run",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--nodes",
        "2",
        "--node-rank",
        &rank,
        "--coordinator",
        &coordinator,
        "--node-address",
        &node,
        "--peer-timeout",
        "10",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(&args)
        .env("CPT_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Wait for `child` at most `limit`; kill it past that. Its exit status, or None if killed.
fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Run both nodes of a two-node run to the end; panics with their logs unless both succeed.
fn run_two_nodes(config: &Path, out: &Path, extra: &[&str]) {
    let ports = free_ports(3);
    let mut nodes: Vec<_> = (0..2)
        .map(|rank| start_node(config, out, rank, &ports, extra))
        .collect();
    let limit = std::time::Duration::from_secs(300);
    let statuses: Vec<_> = nodes.iter_mut().map(|n| wait_at_most(n, limit)).collect();
    for (rank, status) in statuses.iter().enumerate() {
        let log = std::fs::read_to_string(out.with_file_name(format!("node{rank}.log")))
            .unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "node {rank} ended with {status:?}:\n{log}"
        );
    }
}

/// The training loss of every step of a run, from its `metrics.jsonl`.
fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn two_nodes_reproduce_the_two_device_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let (devices, nodes) = (dir.path().join("devices"), dir.path().join("nodes"));
    let out = run(&cfg, &devices, &["--devices", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    run_two_nodes(&cfg, &nodes, &[]);
    // Same peers, same shards, same reduction: the same numbers, bit for bit.
    assert_eq!(losses(&nodes), losses(&devices));
    assert_eq!(losses(&nodes).len(), 6);
    assert_eq!(eval_matrix(&nodes), eval_matrix(&devices));
    assert_eq!(final_weights(&nodes), final_weights(&devices));
}

#[test]
fn a_killed_node_ends_the_other_and_both_resume_to_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough to be killed mid-run, with checkpoints to resume from.
    let cfg = config(dir.path(), |t| {
        t.replace("steps = 3", "steps = 150")
            .replace("every_steps = 2\nkeep_last", "every_steps = 20\nkeep_last")
    });
    let reference = dir.path().join("reference");
    let out = run(&cfg, &reference, &["--devices", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let cut = dir.path().join("cut");
    let ports = free_ports(3);
    let mut nodes: Vec<_> = (0..2)
        .map(|rank| start_node(&cfg, &cut, rank, &ports, &[]))
        .collect();
    // Once a checkpoint exists and training goes on, kill node 1 outright.
    let started = std::time::Instant::now();
    let metrics = cut.join("metrics.jsonl");
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 30 {
        assert!(started.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nodes[1].kill().unwrap();
    nodes[1].wait().unwrap();
    let status = wait_at_most(&mut nodes[0], std::time::Duration::from_secs(60));
    let log = std::fs::read_to_string(dir.path().join("node0.log")).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("node 0 still ran 60 s after node 1 died:\n{log}"));
    // Node 0 notices at once when a download from node 1 finds the connection closed, or
    // else after --peer-timeout; either way it ends with an error naming --resume.
    assert!(!status.success(), "node 0 succeeded without node 1:\n{log}");
    assert!(log.contains("--resume"), "{log}");
    assert!(
        !cut.join("summary.json").exists(),
        "an interrupted run has no summary"
    );

    // A node started afresh beside a resumed one would train out of step: both refuse.
    let ports = free_ports(3);
    let mut nodes: Vec<_> = [&["--resume"][..], &[]]
        .iter()
        .enumerate()
        .map(|(rank, extra)| start_node(&cfg, &cut, rank, &ports, extra))
        .collect();
    for (rank, node) in nodes.iter_mut().enumerate() {
        let status = wait_at_most(node, std::time::Duration::from_secs(60));
        let log = std::fs::read_to_string(dir.path().join(format!("node{rank}.log"))).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "node {rank}: {status:?}\n{log}"
        );
        assert!(log.contains("starts from step"), "node {rank}:\n{log}");
    }

    run_two_nodes(&cfg, &cut, &["--resume"]);
    assert_eq!(
        final_weights(&cut),
        final_weights(&reference),
        "resumed weights differ"
    );
    assert_eq!(eval_matrix(&cut), eval_matrix(&reference));
    assert_eq!(
        losses(&cut),
        losses(&reference),
        "metrics.jsonl must not repeat or lose steps"
    );
}

#[test]
fn downstream_tasks_are_scored_in_runs_and_by_cpt_eval_and_score_encodes_pairs_as_lm_eval() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = repo().join("examples/tasks");
    let cfg = config(dir.path(), |t| {
        format!(
            "{t}\n[[eval.tasks]]\nfile = \"{}\"\nlimit = 4\n[[eval.tasks]]\nname = \"rolling\"\nfile = \"{}\"\nlimit = 2\n",
            tasks.join("cloze_austen.yaml").display(),
            tasks.join("rust_docs_rolling.yaml").display()
        )
    });
    let out = dir.path().join("run");
    let o = run(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // One column per task after the stream's sets, in every evaluation...
    let last_eval = std::fs::read_to_string(out.join("eval.jsonl")).unwrap();
    let record: serde_json::Value =
        serde_json::from_str(last_eval.lines().last().unwrap()).unwrap();
    let names: Vec<&str> = record["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["experience"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["austen", "rust", "cloze_austen", "rolling"]);
    assert!(record["scores"][2]["extras"]["acc_norm"].is_number());
    // ...a task matrix, and per-task forgetting in the summary.
    let matrix = std::fs::read_to_string(out.join("task_matrix.csv")).unwrap();
    assert!(
        matrix.starts_with("after,cloze_austen (acc),rolling (word_perplexity)\ninitial,"),
        "{matrix}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["tasks"][1]["name"], "rolling");
    assert_eq!(summary["tasks"][1]["values"].as_array().unwrap().len(), 2);

    // `cpt eval --tasks` on the run: the table and the JSON file.
    let json = dir.path().join("results.json");
    let o = cpt(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--tasks",
        tasks.join("cloze_austen.yaml").to_str().unwrap(),
        "--limit",
        "4",
        "--num-fewshot",
        "1",
        "--output",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("|cloze_austen|1|acc|↑|"), "{table}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(results["results"]["cloze_austen"]["samples"], 4);

    // `cpt score` splits a context cut mid-word as lm-eval does: the continuation is scored on
    // the tokens of the whole text after the context's own.
    let tokenizer = cpt_data::Tokenizer::from_file(data("tokenizer.json")).unwrap();
    let (context, continuation) = (
        "It is a truth universally acknow",
        "ledged, that a single man",
    );
    let whole = tokenizer
        .encode(&format!("{context}{continuation}"))
        .unwrap()
        .len();
    let expected = whole - tokenizer.encode(context).unwrap().len();
    let input = dir.path().join("score.jsonl");
    std::fs::write(
        &input,
        serde_json::json!({"context": context, "continuation": continuation}).to_string(),
    )
    .unwrap();
    let o = cpt(&[
        "score",
        "--model",
        out.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["tokens"], expected);

    // A bad task file is named with the config key, before anything is written.
    let bad = config(dir.path(), |t| {
        format!("{t}\n[[eval.tasks]]\nfile = \"nowhere.yaml\"\n")
    });
    let line = error_line(&run(&bad, &dir.path().join("bad"), &[]));
    assert!(
        line.contains("eval.tasks[0]") && line.contains("nowhere.yaml"),
        "{line}"
    );
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn held_out_text_is_scored_beside_the_stream_as_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| {
        format!(
            "{t}\n[[eval.held_out]]\nname = \"shakespeare\"\nfiles = [\"{}\"]\n",
            data("shakespeare/eval.parquet")
        )
    });
    let out = dir.path().join("run");
    let o = run(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let matrix = std::fs::read_to_string(out.join("eval_matrix.csv")).unwrap();
    assert!(
        matrix.starts_with("after,austen,rust,shakespeare\n"),
        "{matrix}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["held_out"][0]["name"], "shakespeare");
    assert_eq!(
        summary["held_out"][0]["values"].as_array().unwrap().len(),
        3
    );
    // The square matrix (and so forgetting and transfer) stays the stream's.
    assert_eq!(summary["eval_matrix"][0].as_array().unwrap().len(), 2);
}

#[test]
fn activation_checkpointing_trains_to_the_same_eval_matrix_and_losses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let plain = dir.path().join("plain");
    let o = run(&cfg, &plain, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |p: &Path, f: &str| std::fs::read_to_string(p.join(f)).unwrap();
    let losses = |p: &Path| -> Vec<(f64, f64)> {
        read(p, "metrics.jsonl")
            .lines()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    r["loss"].as_f64().unwrap(),
                    r["grad_norm"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(losses(&plain).len(), 6);
    for setting in ["balanced", "layers"] {
        let out = dir.path().join(setting);
        let set = format!("train.activation_checkpointing={setting}");
        let o = run(&cfg, &out, &["--set", &set]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            read(&plain, "eval_matrix.csv"),
            read(&out, "eval_matrix.csv"),
            "{setting}"
        );
        assert_eq!(losses(&plain), losses(&out), "{setting}");
        let line = format!("activation_checkpointing = \"{setting}\"");
        assert!(read(&out, "config.toml").contains(&line));
    }
}

#[test]
fn a_run_that_cannot_fit_in_memory_is_refused_before_it_writes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let out = dir.path().join("huge");
    // A 2^20 × 2^20 embedding: 4 TiB of fp32 weights alone, more than any machine has.
    let o = run(
        &cfg,
        &out,
        &[
            "--set",
            "model.config.vocab_size=1048576",
            "--set",
            "model.config.hidden_size=1048576",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    for expected in [
        "needs at least",
        "train.batch_size",
        "train.activation_checkpointing",
        "--skip-memory-check",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn plan_prints_parameters_and_memory_of_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t);
    let o = cpt(&["plan", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    // vocab 1024, hidden 16, FFN 32, 1 layer, 2 heads of 8, tied: embeddings 16,384; attention
    // 4 · 16 · 16 = 1,024; MLP 3 · 16 · 32 = 1,536; norms 3 · 16 = 48.
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("total") && !l.contains("MiB"))
        .unwrap_or_else(|| panic!("no parameter total: {text}"));
    assert!(total.ends_with(" 18992"), "{text}");
    for row in [
        "weights (fp32)",
        "AdamW moments",
        "activations per micro-batch",
    ] {
        assert!(text.contains(row), "{row}: {text}");
    }
    // Nothing is written: a plan is not a run.
    assert!(!dir.path().join("runs").exists());
    let bad = cpt(&["plan", cfg.to_str().unwrap(), "--set", "train.batch_size=0"]);
    assert!(!bad.status.success());
}

/// Copy a run directory, keeping only the checkpoints up to `step` and no summary: the state a
/// run stopped right after that checkpoint leaves behind.
fn cut_run_at(reference: &Path, out: &Path, step: u64) {
    let copy = Command::new("cp")
        .args(["-r", reference.to_str().unwrap(), out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_file(out.join("summary.json"));
    for entry in std::fs::read_dir(out.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let saved: u64 = name["step-".len().."step-".len() + 9].parse().unwrap();
        if saved > step {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
}

fn config_json(folder: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap()
}

#[test]
fn a_longer_context_stage_changes_seq_len_and_rope_and_resumes_exactly_across_it() {
    let dir = tempfile::tempdir().unwrap();
    // Stage 2: sequences twice as long, a new RoPE base and YaRN, long documents upsampled;
    // replay carries stage-1 sequences (16 tokens) into 32-token batches.
    let rust_stage = format!("eval = [\"{}\"]\nsteps = 3", data("rust/eval.parquet"));
    let longer = format!(
        "{rust_stage}\nseq_len = 32\nrope_theta = 50000.0\nlong_doc_ratio = 0.5\n\
         rope_scaling = {{ rope_type = \"yarn\", factor = 2.0, original_max_position_embeddings = 16 }}"
    );
    let cfg = config(dir.path(), |t| {
        t.replace(&rust_stage, &longer).replace(
            "every_steps = 2\nkeep_last = 2",
            "every_steps = 1\nkeep_last = 0",
        )
    });
    let reference = dir.path().join("reference");
    let o = run(&cfg, &reference, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The stage's held-out sequences are 32 tokens: its column counts 31 predicted tokens each.
    let evals = std::fs::read_to_string(reference.join("eval.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(evals.lines().last().unwrap()).unwrap();
    let tokens = |name: &str| {
        last["scores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["experience"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {last}"))["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(tokens("austen") % 15, 0, "{last}");
    assert_eq!(tokens("rust") % 31, 0, "{last}");

    // Resumed at the stage boundary (step 3, the end of stage 1) and inside stage 2 (step 4).
    for step in [3, 4] {
        let out = dir.path().join(format!("cut-{step}"));
        cut_run_at(&reference, &out, step);
        let o = run(&cfg, &out, &["--resume"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            final_weights(&out),
            final_weights(&reference),
            "resumed at step {step}: weights differ"
        );
    }

    // The export carries the RoPE the weights were trained under: stage 2's at the end, the
    // original one for the checkpoint at the end of stage 1.
    let hf = dir.path().join("hf");
    let o = cpt(&[
        "export",
        "hf",
        reference.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = config_json(&hf);
    assert_eq!(json["rope_theta"], 50000.0, "{json}");
    assert_eq!(json["rope_scaling"]["rope_type"], "yarn", "{json}");
    assert_eq!(json["rope_scaling"]["factor"], 2.0, "{json}");
    let stage_one = reference.join("checkpoints/step-000000003-end");
    let hf1 = dir.path().join("hf1");
    let o = cpt(&[
        "export",
        "hf",
        stage_one.to_str().unwrap(),
        "--out",
        hf1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = config_json(&hf1);
    assert_eq!(json["rope_theta"], 10000.0, "{json}");
    assert!(json["rope_scaling"].is_null(), "{json}");
}

#[test]
fn bad_stage_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (set, key) in [
        ("experiences[1].seq_len=1", "experiences[1].seq_len"),
        (
            "experiences[1].rope_scaling={rope_type=\"ntk\",factor=2.0}",
            "experiences[1].rope_scaling",
        ),
        (
            "experiences[1].long_doc_ratio=1.5",
            "experiences[1].long_doc_ratio",
        ),
        (
            "experiences[0].long_doc_min_tokens=64",
            "experiences[0].long_doc_min_tokens",
        ),
    ] {
        let cfg = config(dir.path(), |t| t);
        let line = error_line(&run(&cfg, &out, &["--set", set]));
        assert!(line.contains(key), "{set}: {line}");
        assert!(!out.exists(), "{set}: nothing is written");
    }
    // No document of the bundled Austen text is a million tokens long.
    let cfg = config(dir.path(), |t| t);
    let line = error_line(&run(
        &cfg,
        &out,
        &[
            "--set",
            "experiences[0].long_doc_ratio=0.5",
            "--set",
            "experiences[0].long_doc_min_tokens=1000000",
        ],
    ));
    assert!(line.contains("at least 1000000 tokens"), "{line}");
}

/// The float32 or int64 tensor `name` of a safetensors file, flattened to f64.
fn safetensor(path: &Path, name: &str) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let entry = &header[name];
    let [start, end] = [0, 1].map(|i| entry["data_offsets"][i].as_u64().unwrap() as usize);
    let data = &bytes[8 + header_len + start..8 + header_len + end];
    match entry["dtype"].as_str().unwrap() {
        "F32" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "I64" => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{name}: unexpected dtype {other}"),
    }
}

#[test]
fn score_prints_per_token_log_probs_that_match_transformers() {
    let fixture = repo().join("tests/fixtures/hf/llama-gqa-untied");
    let reference = fixture.join("reference.safetensors");
    let ids: Vec<u64> = safetensor(&reference, "score_ids")
        .iter()
        .map(|&v| v as u64)
        .collect();
    let want = safetensor(&reference, "score_logprobs");
    let start = ids.len() - want.len();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    let request =
        serde_json::json!({"context_ids": ids[..start], "continuation_ids": ids[start..]});
    std::fs::write(&input, format!("{request}\n")).unwrap();
    let o = cpt(&[
        "score",
        "--model",
        fixture.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<f64> = line["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{line}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4, "{got:?} vs transformers' {want:?}");
    }
    let total = line["logprob"].as_f64().unwrap();
    assert!((total - got.iter().sum::<f64>()).abs() < 1e-9, "{line}");
}
