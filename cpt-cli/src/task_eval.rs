//! Downstream tasks from the command line and in runs: task files (`[[eval.tasks]]`,
//! `cpt eval --tasks`) read against the model's tokenizer, their progress drawn on a terminal,
//! and `cpt eval`'s lm-eval-style results table.

use anyhow::{Context, Result};
use cpt_core::RunConfig;
use cpt_data::Tokenizer;
use cpt_eval::tasks::TaskError;
use cpt_eval::{Task, TaskOptions, TaskProgress, TaskResult, TextEncoder};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::Arc;

/// lm-eval's default few-shot seed (`--fewshot_random_seed`).
pub const FEWSHOT_SEED: u64 = 1234;

/// The model's Hugging Face tokenizer as the task scorer's encoder.
pub struct TokenizerEncoder(pub Arc<Tokenizer>);

impl TextEncoder for TokenizerEncoder {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TaskError> {
        self.0
            .encode(text)
            .map_err(|e| TaskError::Encode(e.to_string()))
    }

    /// lm-eval's `prefix_token_id`: the tokenizer's BOS, else its EOS.
    fn prefix_token(&self) -> u32 {
        self.0.bos_id().or(self.0.eos_id()).unwrap_or(0)
    }
}

/// Load one task file; `name` renames it (the column name in reports).
pub fn load_task(path: &Path, name: Option<&str>, options: &TaskOptions) -> Result<Task> {
    let mut task = Task::load(path, options)?;
    if let Some(name) = name {
        task.name = name.to_string();
    }
    Ok(task)
}

/// The tasks of a run's `[[eval.tasks]]`, every file read and every prompt rendered (so a bad
/// file fails before training starts).
pub fn run_tasks(run: &RunConfig) -> Result<Vec<Task>> {
    let tasks = run
        .eval
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let options = TaskOptions {
                num_fewshot: t.num_fewshot,
                limit: t.limit,
                seed: FEWSHOT_SEED,
            };
            load_task(&t.file, t.name.as_deref(), &options)
                .with_context(|| format!("config key `eval.tasks[{i}]`"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!(
            "config key `eval.tasks`: two tasks are named `{}` (give one a `name`)",
            twice[0]
        );
    }
    Ok(tasks)
}

/// A progress bar per task, drawn only on a terminal and cleared when the task is scored.
pub fn progress_bars() -> TaskProgress {
    let mut current: Option<(String, ProgressBar)> = None;
    Box::new(move |task: &str, done: usize, total: usize| {
        if current.as_ref().is_none_or(|(name, _)| name != task) {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} sequences ({elapsed})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("task {task}"));
            current = Some((task.to_string(), bar));
        }
        let (_, bar) = current.as_ref().expect("set above");
        bar.set_position(done as u64);
        if done >= total {
            bar.finish_and_clear();
            current = None;
        }
    })
}

/// lm-eval's results table (Markdown): one row per metric of each task.
pub fn results_table(results: &[TaskResult]) -> String {
    let mut out = String::from(
        "|Tasks|n-shot|Metric| |Value| |Stderr|\n|-----|-----:|------|---|-----:|---|-----:|\n",
    );
    for r in results {
        for (i, (metric, value)) in r.metrics.iter().enumerate() {
            let task = if i == 0 { r.name.as_str() } else { "" };
            let shots = if i == 0 {
                r.num_fewshot.to_string()
            } else {
                String::new()
            };
            let arrow = match (metric == &r.primary, r.higher_is_better) {
                (true, true) => "↑",
                (true, false) => "↓",
                _ => " ",
            };
            let stderr = r
                .stderr
                .get(metric)
                .map_or("N/A".to_string(), |s| format!("{s:.4}"));
            out += &format!("|{task}|{shots}|{metric}|{arrow}|{value:.4}|±|{stderr}|\n");
        }
    }
    out
}
