//! Reading a run directory leniently: whatever of `config.toml`, `metrics.jsonl`, `eval.jsonl`,
//! `eval_matrix.csv` and `summary.json` exists, with a note for each part missing or unreadable,
//! so a run still in progress (or an older one) renders what it has.

use super::ReportError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Files of which at least one must exist for a directory to count as a run.
const RUN_FILES: [&str; 5] = [
    "config.toml",
    "metrics.jsonl",
    "eval.jsonl",
    "eval_matrix.csv",
    "summary.json",
];

/// One run directory as read.
#[derive(Debug, Clone)]
pub struct Run {
    /// The directory.
    pub dir: PathBuf,
    /// Its file name (what the report calls the run).
    pub name: String,
    /// `config.toml` as written.
    pub config_text: Option<String>,
    /// `config.toml` parsed.
    pub config: Option<toml::Table>,
    /// `metrics.jsonl`, one entry per logged step.
    pub steps: Vec<StepLine>,
    /// `eval.jsonl`, one entry per evaluation.
    pub evals: Vec<EvalLine>,
    /// `eval_matrix.csv`.
    pub matrix_csv: Option<MatrixCsv>,
    /// `summary.json`, present once the run finished.
    pub summary: Option<Summary>,
    /// What was missing or skipped, for the reader of the report.
    pub notes: Vec<String>,
}

/// `eval_matrix.csv`: the sets named in its header, then one row per stage.
#[derive(Debug, Clone)]
pub struct MatrixCsv {
    /// The sets (the header without its first cell).
    pub header: Vec<String>,
    /// Each row's label (`initial`, then experiences) and values.
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

/// One line of `metrics.jsonl` (the fields the report draws).
#[derive(Debug, Clone, Deserialize)]
pub struct StepLine {
    /// Experience index.
    pub experience: Option<usize>,
    /// Experience name.
    pub experience_name: Option<String>,
    /// Steps over the whole run.
    pub global_step: u64,
    /// Training loss (null when it was not finite).
    pub loss: Option<f64>,
    /// Loss with strategy penalties.
    pub total_loss: Option<f64>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Training units seen so far.
    pub tokens_seen: Option<u64>,
}

/// One line of `eval.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalLine {
    /// `initial`, `periodic` or `experience_end`.
    pub point: String,
    /// Experience being trained or just finished.
    pub experience: Option<usize>,
    /// Steps over the whole run.
    pub global_step: u64,
    /// The matrix metric's name.
    pub metric: Option<String>,
    /// One score per set: the stream's, then held-out sets and tasks.
    pub scores: Vec<ScoreLine>,
}

/// One set's score in an evaluation.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoreLine {
    /// The set (experience, held-out set or task) scored.
    pub experience: String,
    /// Its metric (null when it was not finite).
    pub metric: Option<f64>,
}

/// `summary.json`; every field optional so older or partial summaries still read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Matrix metric.
    pub metric: Option<String>,
    /// Its direction.
    pub lower_is_better: Option<bool>,
    /// Experience names.
    pub experiences: Vec<String>,
    /// Mean final metric.
    pub final_average: Option<f64>,
    /// Per-experience forgetting (> 0 is worse).
    pub forgetting: Vec<Option<f64>>,
    /// Mean forgetting.
    pub average_forgetting: Option<f64>,
    /// Backward transfer (< 0 is forgetting).
    pub backward_transfer: Option<f64>,
    /// Forward transfer (> 0 is help).
    pub forward_transfer: Option<f64>,
    /// The untrained model's row.
    pub initial: Vec<Option<f64>>,
    /// Rows after each experience.
    pub eval_matrix: Vec<Vec<Option<f64>>>,
    /// Held-out sets: initial, then after each experience.
    pub held_out: Vec<NamedSeries>,
    /// Extra metrics per set after the last experience.
    pub final_extras: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    /// Downstream tasks over the stream.
    pub tasks: Vec<TaskSummary>,
    /// Training units seen.
    pub tokens_seen: Option<u64>,
    /// Optimizer steps.
    pub steps: Option<u64>,
    /// Wall time of training.
    pub wall_time_secs: Option<f64>,
    /// Throughput.
    pub tokens_per_sec: Option<f64>,
    /// Peak resident memory.
    pub peak_rss_mib: Option<f64>,
}

/// A named series of values: initial, then after each experience.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedSeries {
    /// Set name.
    pub name: String,
    /// Values.
    #[serde(default)]
    pub values: Vec<Option<f64>>,
}

/// A downstream task's entry in `summary.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskSummary {
    /// Task name.
    pub name: String,
    /// Its primary metric.
    #[serde(default)]
    pub metric: Option<String>,
    /// Its direction.
    #[serde(default)]
    pub higher_is_better: Option<bool>,
    /// Before training.
    #[serde(default)]
    pub initial: Option<f64>,
    /// After each experience.
    #[serde(default)]
    pub values: Vec<Option<f64>>,
}

/// Read the run directory `dir`. Missing files and malformed lines become notes; a path that is
/// not a directory, or a directory holding none of a run's files, is an error naming it.
pub fn read_run(dir: &Path) -> Result<Run, ReportError> {
    let not_a_run = |reason: &str| ReportError::NotARun {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if !dir.exists() {
        return Err(not_a_run("it does not exist"));
    }
    if !dir.is_dir() {
        return Err(not_a_run("it is not a directory"));
    }
    if !RUN_FILES.iter().any(|f| dir.join(f).is_file()) {
        return Err(not_a_run(&format!(
            "it holds none of {}",
            RUN_FILES.join(", ")
        )));
    }
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut notes = Vec::new();

    let config_text = read_optional(&dir.join("config.toml"), &mut notes)?;
    let config =
        config_text
            .as_deref()
            .and_then(|text| match toml::from_str::<toml::Table>(text) {
                Ok(table) => Some(table),
                Err(e) => {
                    notes.push(format!("config.toml does not parse: {}", e.message()));
                    None
                }
            });
    let steps = read_jsonl(&dir.join("metrics.jsonl"), &mut notes)?;
    let evals = read_jsonl(&dir.join("eval.jsonl"), &mut notes)?;
    let matrix_csv =
        read_optional(&dir.join("eval_matrix.csv"), &mut Vec::new())?.and_then(|t| parse_csv(&t));
    let summary = read_optional(&dir.join("summary.json"), &mut Vec::new())?.and_then(|text| {
        match serde_json::from_str::<Summary>(&text) {
            Ok(summary) => Some(summary),
            Err(e) => {
                notes.push(format!("summary.json does not parse: {e}"));
                None
            }
        }
    });
    if summary.is_none() {
        notes.push("no summary.json: the run is unfinished (or was stopped)".to_string());
    }
    Ok(Run {
        dir: dir.to_path_buf(),
        name,
        config_text,
        config,
        steps,
        evals,
        matrix_csv,
        summary,
        notes,
    })
}

/// A file's text, `None` (with a note) when it does not exist.
fn read_optional(path: &Path, notes: &mut Vec<String>) -> Result<Option<String>, ReportError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            notes.push(format!("no {file}"));
            Ok(None)
        }
        Err(source) => Err(ReportError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The lines of a JSONL log that parse; the others are counted in a note (a crash can leave a
/// partial last line).
fn read_jsonl<T: for<'de> Deserialize<'de>>(
    path: &Path,
    notes: &mut Vec<String>,
) -> Result<Vec<T>, ReportError> {
    let Some(text) = read_optional(path, notes)? else {
        return Ok(Vec::new());
    };
    let mut skipped = 0;
    let lines: Vec<T> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let parsed = serde_json::from_str(line).ok();
            skipped += usize::from(parsed.is_none());
            parsed
        })
        .collect();
    if skipped > 0 {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        notes.push(format!("{skipped} malformed line(s) of {file} skipped"));
    }
    Ok(lines)
}

/// `eval_matrix.csv`: a header (`after,<set>...`) and rows (`<label>,<value>...`).
fn parse_csv(text: &str) -> Option<MatrixCsv> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()?
        .split(',')
        .skip(1)
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|line| {
            let mut cells = line.split(',');
            let label = cells.next().unwrap_or_default().to_string();
            (label, cells.map(|c| c.trim().parse().ok()).collect())
        })
        .collect();
    Some(MatrixCsv { header, rows })
}
