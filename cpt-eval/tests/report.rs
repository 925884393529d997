//! `cpt report` pages built from run directories written here by hand: which charts appear, that
//! the heatmap writes the matrix's values, that missing parts degrade to notes, and that a
//! directory that is no run is an error naming it.

use cpt_eval::report::{ReportError, build_report};
use std::path::{Path, PathBuf};

const SETS: [&str; 3] = ["austen", "shakespeare", "rust"];
/// Steps per experience.
const STEPS: u64 = 10;

/// The matrix metric on set `j` after `stage` experiences (0: initial): falls while a set is
/// trained on, rises a little after.
fn perplexity(stage: usize, j: usize) -> f64 {
    let base = 1000.0 + 10.0 * j as f64;
    match stage {
        0 => base,
        s if s <= j => base - 50.0 * s as f64,
        s => 300.0 + 20.0 * (s - j - 1) as f64 + j as f64,
    }
}

/// A task's accuracy after `stage` experiences.
fn task_accuracy(stage: usize) -> f64 {
    0.25 + 0.05 * stage as f64
}

/// What of a run directory to write.
#[derive(Clone, Copy)]
struct Parts {
    config: bool,
    metrics: bool,
    eval: bool,
    summary: bool,
    /// Experiences finished (the run is in progress when fewer than three).
    finished: usize,
    /// A downstream task column after the stream's sets.
    task: bool,
}

const WHOLE: Parts = Parts {
    config: true,
    metrics: true,
    eval: true,
    summary: true,
    finished: 3,
    task: true,
};

fn write_run(dir: &Path, strategy: &str, parts: Parts) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    if parts.config {
        let mut config = format!("seed = 1\nstrategies = [\"{strategy}\"]\n");
        for set in SETS {
            config.push_str(&format!(
                "[[experiences]]\nname = \"{set}\"\nsteps = {STEPS}\n"
            ));
        }
        config.push_str("[schedule]\nkind = \"cosine\"\npeak_lr = 0.003\n");
        std::fs::write(dir.join("config.toml"), config).unwrap();
    }
    // A run in progress is 4 steps into its next experience.
    let steps_taken = STEPS * parts.finished as u64 + if parts.finished < 3 { 4 } else { 0 };
    if parts.metrics {
        let mut lines = String::new();
        for global in 1..=steps_taken {
            let e = ((global - 1) / STEPS) as usize;
            let loss = 7.0 - 0.02 * global as f64;
            let total = if strategy == "ewc" { loss + 0.1 } else { loss };
            lines.push_str(&format!(
                "{{\"experience\":{e},\"experience_name\":\"{}\",\"step\":{},\"experience_steps\":{STEPS},\
                 \"global_step\":{global},\"loss\":{loss},\"total_loss\":{total},\"lr\":0.001,\
                 \"grad_norm\":0.5,\"tokens_seen\":{},\"tokens_per_sec\":1000.0,\"skipped\":false}}\n",
                SETS[e],
                (global - 1) % STEPS + 1,
                global * 128,
            ));
        }
        // A crash can leave half a line behind.
        lines.push_str("{\"experience\":0,\"glob");
        std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    }
    let scores = |stage: usize| {
        let mut scores: Vec<String> = SETS
            .iter()
            .enumerate()
            .map(|(j, set)| {
                format!(
                    "{{\"experience\":\"{set}\",\"loss\":6.0,\"metric\":{},\"count\":64}}",
                    perplexity(stage, j)
                )
            })
            .collect();
        if parts.task {
            scores.push(format!(
                "{{\"experience\":\"hellaswag\",\"loss\":0.0,\"metric\":{},\"count\":100,\
                 \"extras\":{{\"acc\":{0},\"acc_norm\":0.3}}}}",
                task_accuracy(stage)
            ));
        }
        scores.join(",")
    };
    if parts.eval {
        let mut lines = format!(
            "{{\"point\":\"initial\",\"experience\":null,\"step\":0,\"global_step\":0,\
             \"metric\":\"perplexity\",\"scores\":[{}]}}\n",
            scores(0)
        );
        for e in 0..parts.finished {
            let end = (e as u64 + 1) * STEPS;
            lines.push_str(&format!(
                "{{\"point\":\"periodic\",\"experience\":{e},\"step\":5,\"global_step\":{},\
                 \"metric\":\"perplexity\",\"scores\":[{}]}}\n",
                end - 5,
                scores(e + 1)
            ));
            lines.push_str(&format!(
                "{{\"point\":\"experience_end\",\"experience\":{e},\"step\":{STEPS},\
                 \"global_step\":{end},\"metric\":\"perplexity\",\"scores\":[{}]}}\n",
                scores(e + 1)
            ));
        }
        std::fs::write(dir.join("eval.jsonl"), lines).unwrap();
    }
    if parts.summary {
        let row = |stage: usize| -> Vec<f64> { (0..3).map(|j| perplexity(stage, j)).collect() };
        let mut summary = serde_json::json!({
            "metric": "perplexity",
            "lower_is_better": true,
            "experiences": SETS,
            "final_average": 400.0,
            "forgetting": [12.5, -3.0, null],
            "average_forgetting": 4.75,
            "backward_transfer": -4.75,
            "forward_transfer": 25.0,
            "initial": row(0),
            "eval_matrix": [row(1), row(2), row(3)],
            "tokens_seen": 3840,
            "steps": 30,
            "wall_time_secs": 12.5,
            "tokens_per_sec": 307.2,
            "peak_rss_mib": 64.0,
        });
        if parts.task {
            summary["tasks"] = serde_json::json!([{
                "name": "hellaswag",
                "metric": "acc",
                "higher_is_better": true,
                "initial": task_accuracy(0),
                "values": [task_accuracy(1), task_accuracy(2), task_accuracy(3)],
                "forgetting": 0.0,
                "backward_transfer": 0.1,
            }]);
        }
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    }
    dir.to_path_buf()
}

/// How plotters writes a text element's content.
fn text(content: &str) -> String {
    format!(">\n{content}\n</text>")
}

fn svg_count(html: &str) -> usize {
    html.matches("<svg ").count()
}

/// The `<svg>` element following the section `id`'s opening tag.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = html[start..].find("</section>").unwrap() + start;
    &html[start..end]
}

#[test]
fn a_finished_run_gets_every_chart_and_a_self_contained_page() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(&dir.path().join("replay-run"), "replay", WHOLE);
    let html = build_report(&[run]).unwrap();

    // Training, heatmap, the sets through training, one task.
    assert_eq!(svg_count(&html), 4);
    for id in ["runs", "training", "matrix", "curves", "tasks", "configs"] {
        assert_eq!(
            svg_count(section(&html, id)),
            usize::from(id != "runs" && id != "configs")
        );
    }
    assert!(
        !html.contains("id=\"transfer\""),
        "one run has no comparison"
    );
    // Summary numbers and the config.
    let runs = section(&html, "runs");
    for shown in [
        "replay-run",
        "replay",
        "finished",
        "3,840",
        "12.5 s",
        "307",
        "64 MiB",
    ] {
        assert!(runs.contains(shown), "runs table lacks {shown}");
    }
    assert!(section(&html, "configs").contains("peak_lr = 0.003"));
    assert!(section(&html, "tasks").contains("hellaswag: acc (higher is better)"));
    // Self-contained: no script, stylesheet link, image or URL other than SVG's namespace.
    for foreign in ["<script", "<link", "<img", "@import", "url("] {
        assert!(!html.contains(foreign), "page holds {foreign}");
    }
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
}

#[test]
fn the_heatmap_writes_every_value_of_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(&dir.path().join("run"), "naive", WHOLE);
    let html = build_report(&[run]).unwrap();
    let matrix = section(&html, "matrix");
    for stage in 0..=3 {
        for j in 0..3 {
            let value = perplexity(stage, j);
            let written = if value >= 1000.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            };
            assert!(
                matrix.contains(&text(&written)),
                "no cell {written} (stage {stage}, set {j})"
            );
        }
    }
    for label in [
        "initial",
        "austen",
        "shakespeare",
        "rust",
        "perplexity: lower is better",
    ] {
        assert!(matrix.contains(&format!(">\n{label}")), "no {label}");
    }
    // The task is a column of its own panel, not of the matrix.
    assert!(!matrix.contains("hellaswag"));
}

#[test]
fn runs_sharing_a_stream_are_overlaid_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_run(&dir.path().join("a"), "replay", WHOLE);
    let b = write_run(&dir.path().join("b"), "ewc", WHOLE);
    let html = build_report(&[a, b]).unwrap();
    // One overlaid training chart, two heatmaps, one chart per set, the bars, one task chart.
    assert_eq!(svg_count(section(&html, "training")), 1);
    assert_eq!(svg_count(section(&html, "matrix")), 2);
    assert_eq!(svg_count(section(&html, "curves")), 3);
    assert_eq!(svg_count(section(&html, "transfer")), 1);
    assert_eq!(svg_count(section(&html, "tasks")), 1);
    assert_eq!(svg_count(&html), 8);
    // Bars labelled by run and strategy, values written; the configs' difference tabled.
    let transfer = section(&html, "transfer");
    assert!(transfer.contains("a · replay") && transfer.contains("b · ewc"));
    assert!(transfer.contains(&text("+12.50")) && transfer.contains(&text("−4.750")));
    assert!(section(&html, "configs").contains("<code>strategies</code>"));
    // ewc's penalties make its total loss differ: a dashed line and its legend.
    assert!(section(&html, "training").contains("with strategy penalties"));
}

#[test]
fn missing_parts_become_notes_and_a_run_in_progress_renders() {
    let dir = tempfile::tempdir().unwrap();
    let in_progress = Parts {
        summary: false,
        finished: 1,
        ..WHOLE
    };
    let run = write_run(&dir.path().join("live"), "replay", in_progress);
    let html = build_report(&[run]).unwrap();
    assert!(section(&html, "runs").contains("in progress (step 14)"));
    assert!(html.contains("no summary.json"));
    assert!(html.contains("1 malformed line(s) of metrics.jsonl skipped"));
    // The matrix so far: the initial row and one experience.
    let matrix = section(&html, "matrix");
    assert_eq!(svg_count(matrix), 1);
    assert!(matrix.contains(&text(&format!("{:.1}", perplexity(1, 0)))));
    assert!(!matrix.contains(&text(&format!("{:.1}", perplexity(2, 1)))));

    // Only a config and a training log: the training chart, and notes for the rest.
    let bare = Parts {
        eval: false,
        summary: false,
        ..in_progress
    };
    let run = write_run(&dir.path().join("bare"), "replay", bare);
    let html = build_report(&[run]).unwrap();
    assert_eq!(svg_count(&html), 1);
    assert_eq!(svg_count(section(&html, "training")), 1);
    assert!(section(&html, "matrix").contains("no evaluation yet"));
    assert!(html.contains("no eval.jsonl"));

    // Only a summary: the heatmap and the task from it.
    let summary_only = Parts {
        config: false,
        metrics: false,
        eval: false,
        ..WHOLE
    };
    let run = write_run(&dir.path().join("summary-only"), "replay", summary_only);
    let html = build_report(&[run]).unwrap();
    assert_eq!(svg_count(section(&html, "matrix")), 1);
    assert_eq!(svg_count(section(&html, "tasks")), 1);
    assert!(section(&html, "training").contains("no training steps logged yet"));
    assert!(section(&html, "configs").contains("(no config.toml)"));
}

#[test]
fn a_directory_that_is_not_a_run_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(&dir.path().join("run"), "naive", WHOLE);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    let missing = dir.path().join("missing");
    for (path, reason) in [
        (&empty, "holds none of config.toml"),
        (&file, "not a directory"),
        (&missing, "does not exist"),
    ] {
        let err = build_report(&[run.clone(), path.clone()]).unwrap_err();
        assert!(matches!(err, ReportError::NotARun { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}
