//! `cpt sweep` and `cpt law fit` end to end: a two-point sweep of tiny runs that skips its
//! finished point and resumes an interrupted one exactly, bad sweep files and bad law-fit
//! inputs named in one error line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{data, stderr, stdout, tiny_llama};

/// A tiny two-experience base config over the bundled data (runs in about a second).
fn base_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
seed = 5
{tiny}[[experiences]]
name = "austen"
train = ["{a_train}"]
eval = ["{a_eval}"]
steps = 3
[[experiences]]
name = "rust"
eval = ["{r_eval}"]
steps = 3
mixture = [{{ files = ["{r_train}"], weight = 0.5 }}, {{ files = ["{a_train}"], weight = 0.5 }}]
[train]
batch_size = 2
[schedule]
kind = "wsd"
peak_lr = 1e-3
warmup_steps = 1
[eval]
max_sequences = 2
batch_size = 2
[checkpoint]
every_steps = 2
keep_last = 3
"#,
        tiny = tiny_llama(),
        a_train = data("austen/train.parquet"),
        a_eval = data("austen/eval.parquet"),
        r_train = data("rust/train.parquet"),
        r_eval = data("rust/eval.parquet"),
    );
    let path = dir.join("base.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A sweep file over `base.toml` in `dir` with this body.
fn sweep_file(dir: &Path, body: &str) -> PathBuf {
    base_config(dir);
    let path = dir.join("sweep.toml");
    std::fs::write(&path, format!("base = \"base.toml\"\n{body}")).unwrap();
    path
}

fn cpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(args)
        .env("CPT_LOG", "info")
        .output()
        .unwrap()
}

/// The error line of a failed command.
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure: {}", stdout(o));
    stderr(o)
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {}", stderr(o)))
        .to_string()
}

fn sweep(file: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cpt(&args)
}

fn eval_matrix(summary: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    v["eval_matrix"].clone()
}

#[test]
fn a_sweep_skips_finished_points_and_resumes_an_interrupted_one_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let file = sweep_file(
        dir.path(),
        "[grid]\n\"experiences[1].mixture[0].weight\" = [0.05, 20.0]\n",
    );
    let out = dir.path().join("sweep");
    let o = sweep(&file, &out, &["--jobs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names = ["0_weight-0.05", "1_weight-20.0"];
    for name in names {
        for file in ["point.json", "config.toml", "summary.json", "run.log"] {
            assert!(out.join(name).join(file).is_file(), "{name}: no {file}");
        }
    }
    let point: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(names[1]).join("point.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(point["values"]["experiences[1].mixture[0].weight"], "20.0");
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    for column in [
        "point",
        "experiences[1].mixture[0].weight",
        "params",
        "tokens",
        "steps",
        "wall_time_secs",
        "tokens_rust",
        "loss_austen",
        "perplexity_austen",
        "loss_rust",
        "perplexity_rust",
    ] {
        assert!(header.contains(&column), "no column {column}: {header:?}");
    }
    assert!(lines[1].starts_with("0_weight-0.05,0.05,"), "{}", lines[1]);
    // The two mixtures (9% and 98% Rust) train differently.
    let rust = header.iter().position(|c| *c == "loss_rust").unwrap();
    assert_ne!(
        lines[1].split(',').nth(rust),
        lines[2].split(',').nth(rust),
        "{csv}"
    );

    // Interrupt point 1 after the fact: no summary, and its newest checkpoint gone, so it must
    // resume from the one before and redo the last steps.
    let finished = out.join(names[0]).join("summary.json");
    let finished_mtime = std::fs::metadata(&finished).unwrap().modified().unwrap();
    let interrupted = out.join(names[1]);
    let expected = eval_matrix(&interrupted.join("summary.json"));
    std::fs::remove_file(interrupted.join("summary.json")).unwrap();
    let mut checkpoints: Vec<PathBuf> = std::fs::read_dir(interrupted.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    checkpoints.sort();
    std::fs::remove_dir_all(checkpoints.last().unwrap()).unwrap();

    let o = sweep(&file, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("skipping finished point `0_weight-0.05`"),
        "{log}"
    );
    assert!(log.contains("resuming point `1_weight-20.0`"), "{log}");
    assert_eq!(
        std::fs::metadata(&finished).unwrap().modified().unwrap(),
        finished_mtime,
        "the finished point ran again"
    );
    let run_log = std::fs::read_to_string(interrupted.join("run.log")).unwrap();
    assert!(run_log.contains("resuming from"), "{run_log}");
    assert_eq!(eval_matrix(&interrupted.join("summary.json")), expected);
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn dry_run_lists_points_and_coupled_axes_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = sweep_file(
        dir.path(),
        r#"
[set]
"experiences[0].steps" = 2
[grid]
train.batch_size = [1, 2]
[[axis]]
name = "size"
keys = ["model.config.hidden_size", "model.config.intermediate_size"]
values = [[16, 32], [32, 64]]
labels = ["small", "large"]
"#,
    );
    let out = dir.path().join("sweep");
    let o = sweep(&file, &out, &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for line in [
        "4 points",
        "0_batch_size-1_size-small",
        "3_batch_size-2_size-large",
        "--set experiences[0].steps=2",
        "--set model.config.intermediate_size=64",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(!out.exists(), "a dry run wrote {}", out.display());
}

#[test]
fn bad_sweep_files_are_named() {
    let cases = [
        ("bse = 1\n[grid]\n\"train.batch_size\" = [1]\n", "bse"),
        (
            "[grid]\n\"experiences[7].steps\" = [1, 2]\n",
            "sweep point `0_steps-1`",
        ),
        (
            "[grid]\n\"train.batch_size\" = []\n",
            "list of values is empty",
        ),
        (
            "[grid]\n\"train.batch_size\" = [\"big\", \"small\"]\n",
            "batch_size",
        ),
        (
            "[grid]\n\"train.batch_size\" = 4\n",
            "expected a list of values",
        ),
        (
            "[[axis]]\nname = \"size\"\nkeys = [\"model.config.hidden_size\", \"model.config.intermediate_size\"]\nvalues = [[16]]\n",
            "values[0] has 1 values for 2 keys",
        ),
        (
            "[[axis]]\nname = \"x\"\nkeys = [\"train.batch_size\"]\nvalues = [[1]]\ncolour = 3\n",
            "colour",
        ),
        (
            "[grid]\n\"model.config.hiden_size\" = [16, 32]\n",
            "hiden_size",
        ),
        ("[set]\n\"train.batch_size\" = 2\n", "no axes"),
    ];
    for (body, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = sweep_file(dir.path(), body);
        let line = error_line(&sweep(&file, &dir.path().join("out"), &["--dry-run"]));
        assert!(
            line.contains(expected),
            "expected `{expected}` in: {line}\n(sweep file: {body})"
        );
    }
    // The bad value of `experiences[7]` names the point and the key.
    let dir = tempfile::tempdir().unwrap();
    let file = sweep_file(dir.path(), "[grid]\n\"experiences[7].steps\" = [1, 2]\n");
    let line = error_line(&sweep(&file, &dir.path().join("out"), &[]));
    assert!(
        line.contains("experiences[7].steps") && line.contains("no element 7"),
        "{line}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "nothing may run before every point is checked"
    );
}

/// `sweep.csv`-like rows from `L = 1.5 + 300/N^0.4 + 2000/D^0.5` at 3 × 3 budgets.
fn chinchilla_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("point,params,tokens,loss_x\n");
    for (i, n) in [1e4f64, 1e5, 1e6].iter().enumerate() {
        for (j, d) in [1e5f64, 1e6, 1e7].iter().enumerate() {
            let loss = 1.5 + 300.0 / n.powf(0.4) + 2000.0 / d.powf(0.5);
            text += &format!("p{i}{j},{n},{d},{loss}\n");
        }
    }
    let path = dir.join("sweep.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn law_fit_reports_parameters_and_held_out_points() {
    let dir = tempfile::tempdir().unwrap();
    chinchilla_csv(dir.path());
    let o = cpt(&[
        "law",
        "fit",
        dir.path().to_str().unwrap(),
        "--law",
        "chinchilla",
        "--loss",
        "loss_x",
        "--hold-out",
        "point=p22",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("8 points fitted, 1 held out"), "{text}");
    assert!(text.contains("alpha = 4.0000e-1"), "{text}");
    assert!(text.contains("beta = 5.0000e-1"), "{text}");
    assert!(text.contains("held out") && text.contains("p22"), "{text}");
}

#[test]
fn bad_law_fit_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let csv = chinchilla_csv(dir.path());
    let path = csv.to_str().unwrap();
    let fit = |extra: &[&str]| {
        let mut args = vec!["law", "fit", path];
        args.extend_from_slice(extra);
        error_line(&cpt(&args))
    };
    let line = fit(&["--law", "chinchilla", "--loss", "loss_y"]);
    assert!(
        line.contains("no column `loss_y`") && line.contains("loss_x"),
        "{line}"
    );
    let line = fit(&[
        "--law",
        "chinchilla",
        "--loss",
        "loss_x",
        "--hold-out",
        "params=10000,params=100000",
    ]);
    assert!(line.contains("matches no row"), "{line}");
    let line = fit(&[
        "--law",
        "chinchilla",
        "--loss",
        "loss_x",
        "--hold-out",
        "params=10000",
        "--hold-out",
        "params=100000",
    ]);
    assert!(
        line.contains("too few points") && line.contains("3 given"),
        "{line}"
    );
    let line = fit(&["--law", "dcpt", "--domain-loss", "loss_x"]);
    assert!(line.contains("--general-ratio"), "{line}");
    let line = fit(&[
        "--law",
        "dcpt",
        "--domain-loss",
        "loss_x",
        "--domain-ratio",
        "ratio",
    ]);
    assert!(line.contains("no column `ratio`"), "{line}");
}
