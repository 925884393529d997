//! `cpt report` end to end: two tiny runs of one stream on the bundled data, then one page of
//! both, written whole; a path that is no run fails naming it and writes nothing.

use std::path::{Path, PathBuf};

mod common;
use common::{cpt, data, stderr, tiny_llama};

/// A tiny two-experience config over the bundled data, evaluated mid-experience too.
fn config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
seed = 5
strategies = ["replay"]
{tiny}[[experiences]]
name = "austen"
train = ["{a_train}"]
eval = ["{a_eval}"]
steps = 4
[[experiences]]
name = "rust"
train = ["{r_train}"]
eval = ["{r_eval}"]
steps = 4
[train]
batch_size = 2
[schedule]
kind = "cosine"
peak_lr = 1e-3
warmup_steps = 1
[replay]
capacity = 8
ratio = 0.5
[eval]
every_steps = 2
max_sequences = 2
batch_size = 2
"#,
        tiny = tiny_llama(),
        a_train = data("austen/train.parquet"),
        a_eval = data("austen/eval.parquet"),
        r_train = data("rust/train.parquet"),
        r_eval = data("rust/eval.parquet"),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_report_of_two_runs_holds_their_charts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let replay = dir.path().join("replay");
    let naive = dir.path().join("naive");
    let o = cpt(&["run", cfg, "--out", replay.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let set = "strategies=[\"naive\"]";
    let o = cpt(&["run", cfg, "--out", naive.to_str().unwrap(), "--set", set]);
    assert!(o.status.success(), "{}", stderr(&o));

    let out = dir.path().join("report.html");
    let (r, n, page) = (
        replay.to_str().unwrap(),
        naive.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let o = cpt(&["report", r, n, "--out", page]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    // One overlaid training chart, two heatmaps, one chart per set, the transfer bars.
    assert_eq!(html.matches("<svg ").count(), 1 + 2 + 2 + 1);
    for shown in [
        "replay · replay",
        "naive · naive",
        "austen",
        "rust",
        "finished",
    ] {
        assert!(html.contains(shown), "report lacks {shown}");
    }
    // Nothing but the page was left beside it.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("report"))
        .collect();
    assert_eq!(left, ["report.html"]);

    // One run alone: its training chart, heatmap and curves.
    let o = cpt(&["report", r, "--out", page]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(html.matches("<svg ").count(), 3);
}

#[test]
fn a_path_that_is_no_run_fails_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_run = dir.path().join("empty");
    std::fs::create_dir(&not_a_run).unwrap();
    let out = dir.path().join("report.html");
    let o = cpt(&[
        "report",
        not_a_run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let error = stderr(&o);
    assert!(error.contains("not a run directory"), "{error}");
    assert!(error.contains(&not_a_run.display().to_string()), "{error}");
    assert!(!out.exists());
}
