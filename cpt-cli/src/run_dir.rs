//! The run directory: `config.toml`, `metrics.jsonl`, `eval.jsonl`, `eval_matrix.csv`,
//! `summary.json`, `checkpoints/`, and the terminal progress of a run.

use anyhow::Result;
use cpt_continual::RunObserver;
use cpt_core::atomic::{append_line, write_atomic};
use cpt_core::{EvalPoint, EvalRecord, StepRecord};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Writes a run's logs and draws its progress.
pub struct RunDirObserver {
    dir: PathBuf,
    bar: Option<ProgressBar>,
    last_loss: f64,
}

impl RunDirObserver {
    /// An observer writing into `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            bar: None,
            last_loss: f64::NAN,
        }
    }

    fn log(&self, file: &str, line: String) {
        if let Err(e) = append_line(&self.dir.join(file), &line) {
            tracing::error!("{e}");
        }
    }
}

impl RunObserver for RunDirObserver {
    fn experience_started(&mut self, index: usize, name: &str, steps: u64, step: u64) {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("experience {} `{name}`", index + 1));
        bar.set_position(step);
        self.bar = Some(bar);
    }

    fn step(&mut self, record: &StepRecord) {
        self.last_loss = record.loss;
        if let Some(bar) = &self.bar {
            bar.set_position(record.step);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} tok/s",
                record.loss, record.lr, record.tokens_per_sec
            ));
        }
        self.log(
            "metrics.jsonl",
            serde_json::to_string(record).expect("records serialise"),
        );
    }

    fn eval(&mut self, record: &EvalRecord) {
        self.log(
            "eval.jsonl",
            serde_json::to_string(record).expect("records serialise"),
        );
        let cells: Vec<String> = record
            .scores
            .iter()
            .map(|s| format!("{} {:.2}", s.experience, s.metric))
            .collect();
        let when = match record.point {
            EvalPoint::Initial => "initial model".to_string(),
            EvalPoint::Periodic => format!("step {}", record.global_step),
            EvalPoint::ExperienceEnd => {
                format!("end of experience {}", record.experience.unwrap_or(0) + 1)
            }
        };
        let line = format!("{} at {when}: {}", record.metric, cells.join(", "));
        match &self.bar {
            // A hidden bar (no terminal) would swallow the line.
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn checkpoint(&mut self, path: &Path) {
        tracing::debug!("checkpoint written: {}", path.display());
    }

    fn experience_finished(&mut self, _index: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// On resume, drop log lines written after the checkpoint being resumed (they will be written
/// again): metrics and periodic evaluations after `global_step`, and experience-end
/// evaluations beyond the `finished` experiences the checkpoint holds.
pub fn trim_logs(dir: &Path, global_step: u64, finished: usize) -> Result<()> {
    let keep_metric = |line: &str| {
        serde_json::from_str::<StepRecord>(line).is_ok_and(|r| r.global_step <= global_step)
    };
    let keep_eval = |line: &str| {
        serde_json::from_str::<EvalRecord>(line).is_ok_and(|r| match r.point {
            EvalPoint::ExperienceEnd => r.experience.is_some_and(|e| e < finished),
            _ => r.global_step <= global_step,
        })
    };
    trim(&dir.join("metrics.jsonl"), keep_metric)?;
    trim(&dir.join("eval.jsonl"), keep_eval)
}

fn trim(path: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    let kept: String = text
        .lines()
        .filter(|l| keep(l))
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())?;
    Ok(())
}
