//! What the charts draw, derived from a run as read: the experiences' spans over the global
//! steps, the eval matrix, each set's metric through training, and downstream tasks.
//!
//! An evaluation scores the stream's sets first, then any extra columns: held-out sets (named in
//! the config's `[[eval.held_out]]` or the summary's `held_out`) and downstream tasks (every
//! other extra column).

use super::run::{EvalLine, MatrixCsv, Run};
use std::collections::BTreeMap;

/// One experience's span: global steps `(previous end, end]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Experience name.
    pub name: String,
    /// Its last global step (so far, for an unfinished experience).
    pub end: u64,
}

/// The eval matrix of a run: the initial row, then one row after each finished experience.
#[derive(Debug, Clone)]
pub struct EvalMatrix {
    /// Metric name.
    pub metric: String,
    /// Its direction.
    pub lower_is_better: bool,
    /// The stream's sets, then held-out sets.
    pub columns: Vec<String>,
    /// How many of `columns` are the stream's.
    pub stream_len: usize,
    /// `("initial", values)`, then `(experience, values)`.
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

/// A set's metric through training: `(global step, value)` at every evaluation.
#[derive(Debug, Clone)]
pub struct Series {
    /// The set (or task) scored.
    pub name: String,
    /// Points in step order.
    pub points: Vec<(f64, f64)>,
}

/// A downstream task's primary metric through training.
#[derive(Debug, Clone)]
pub struct TaskSeries {
    /// Task name and points.
    pub series: Series,
    /// Its metric's name.
    pub metric: String,
    /// Its direction, when known.
    pub higher_is_better: Option<bool>,
}

/// Architectures whose training units are images.
const IMAGE_ARCHITECTURES: [&str; 3] = ["vit", "vit_mae", "clip"];

/// A guess at a metric's direction from its name, for runs without a summary.
fn lower_is_better_by_name(metric: &str) -> bool {
    metric.contains("perplexity") || metric.contains("loss")
}

impl Run {
    /// The `strategies` of the config.
    pub fn strategies(&self) -> Vec<String> {
        self.config
            .as_ref()
            .and_then(|c| c.get("strategies"))
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The run's name and strategies, as legends show it.
    pub fn label(&self) -> String {
        let strategies = self.strategies();
        if strategies.is_empty() {
            self.name.clone()
        } else {
            format!("{} · {}", self.name, strategies.join("+"))
        }
    }

    /// What the run counts as training units.
    pub fn unit(&self) -> &'static str {
        let architecture = self.config.as_ref().and_then(|c| {
            c.get("model")?
                .get("architecture")?
                .as_str()
                .map(str::to_string)
        });
        match architecture {
            Some(a) if IMAGE_ARCHITECTURES.contains(&a.as_str()) => "images",
            _ => "tokens",
        }
    }

    /// The stream's experience names, from the config, else the summary, else the logs.
    pub fn experience_names(&self) -> Vec<String> {
        let from_config: Vec<String> = self
            .config
            .as_ref()
            .and_then(|c| c.get("experiences"))
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("name")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !from_config.is_empty() {
            return from_config;
        }
        if let Some(summary) = self.summary.as_ref().filter(|s| !s.experiences.is_empty()) {
            return summary.experiences.clone();
        }
        let mut names: Vec<String> = Vec::new();
        for name in self.steps.iter().filter_map(|s| s.experience_name.as_ref()) {
            if names.last() != Some(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Held-out sets (scored, never trained on), from the config, else the summary.
    pub fn held_out_names(&self) -> Vec<String> {
        let from_config: Option<Vec<String>> = self
            .config
            .as_ref()
            .and_then(|c| c.get("eval")?.get("held_out")?.as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("name")?.as_str().map(str::to_string))
                    .collect()
            });
        match from_config {
            Some(names) if !names.is_empty() => names,
            _ => self
                .summary
                .as_ref()
                .map(|s| s.held_out.iter().map(|h| h.name.clone()).collect())
                .unwrap_or_default(),
        }
    }

    /// The matrix metric and its direction.
    pub fn metric(&self) -> Option<(String, bool)> {
        let summary_metric = self.summary.as_ref().and_then(|s| s.metric.clone());
        let name = summary_metric.or_else(|| self.evals.iter().find_map(|e| e.metric.clone()))?;
        let lower = self
            .summary
            .as_ref()
            .and_then(|s| s.lower_is_better)
            .unwrap_or_else(|| lower_is_better_by_name(&name));
        Some((name, lower))
    }

    /// Each experience's span over the global steps: ends from the `experience_end`
    /// evaluations, and for an experience still running, its last logged step.
    pub fn segments(&self) -> Vec<Segment> {
        let names = self.experience_names();
        let mut ends: BTreeMap<usize, u64> = BTreeMap::new();
        for step in &self.steps {
            let Some(index) = step.experience else {
                continue;
            };
            let end = ends.entry(index).or_insert(step.global_step);
            *end = (*end).max(step.global_step);
        }
        for eval in self.evals.iter().filter(|e| e.point == "experience_end") {
            if let Some(index) = eval.experience {
                ends.insert(index, eval.global_step);
            }
        }
        ends.into_iter()
            .map(|(index, end)| Segment {
                name: names
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| format!("experience {}", index + 1)),
                end,
            })
            .collect()
    }

    /// Which columns of an evaluation are the stream's sets and held-out sets (the matrix), by
    /// position; the rest are tasks.
    fn matrix_columns(&self, line: &EvalLine) -> Vec<usize> {
        let stream_len = match self.experience_names().len() {
            0 => line.scores.len(),
            n => n,
        };
        let held_out = self.held_out_names();
        (0..line.scores.len())
            .filter(|&k| k < stream_len || held_out.contains(&line.scores[k].experience))
            .collect()
    }

    /// The eval matrix from `eval.jsonl`, else `summary.json`, else `eval_matrix.csv`.
    pub fn eval_matrix(&self) -> Option<EvalMatrix> {
        let (metric, lower_is_better) = self
            .metric()
            .unwrap_or_else(|| ("metric".to_string(), false));
        let names = self.experience_names();
        let stream_len = |columns: usize| {
            if names.is_empty() {
                columns
            } else {
                names.len().min(columns)
            }
        };
        let row_name = |i: usize| {
            names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("experience {}", i + 1))
        };
        if let Some(first) = self.evals.first() {
            let picked = self.matrix_columns(first);
            let columns: Vec<String> = picked
                .iter()
                .map(|&k| first.scores[k].experience.clone())
                .collect();
            let values = |line: &EvalLine| {
                columns
                    .iter()
                    .map(|c| line.scores.iter().find(|s| &s.experience == c)?.metric)
                    .collect::<Vec<_>>()
            };
            let mut rows = Vec::new();
            if let Some(initial) = self.evals.iter().find(|e| e.point == "initial") {
                rows.push(("initial".to_string(), values(initial)));
            }
            let mut ends: BTreeMap<usize, &EvalLine> = BTreeMap::new();
            for line in self.evals.iter().filter(|e| e.point == "experience_end") {
                ends.insert(line.experience.unwrap_or(0), line);
            }
            rows.extend(
                ends.into_iter()
                    .map(|(i, line)| (row_name(i), values(line))),
            );
            return Some(EvalMatrix {
                metric,
                lower_is_better,
                stream_len: stream_len(columns.len()),
                columns,
                rows,
            });
        }
        if let Some(summary) = self.summary.as_ref().filter(|s| !s.initial.is_empty()) {
            let held = |stage: usize| {
                summary
                    .held_out
                    .iter()
                    .map(move |h| h.values.get(stage).copied().flatten())
            };
            let mut columns = summary.experiences.clone();
            columns.extend(summary.held_out.iter().map(|h| h.name.clone()));
            let mut rows = vec![(
                "initial".to_string(),
                summary.initial.iter().copied().chain(held(0)).collect(),
            )];
            for (i, row) in summary.eval_matrix.iter().enumerate() {
                let values = row.iter().copied().chain(held(i + 1)).collect();
                rows.push((row_name(i), values));
            }
            return Some(EvalMatrix {
                metric,
                lower_is_better,
                stream_len: summary.experiences.len(),
                columns,
                rows,
            });
        }
        let MatrixCsv { header, rows } = self.matrix_csv.clone()?;
        Some(EvalMatrix {
            metric,
            lower_is_better,
            stream_len: stream_len(header.len()),
            columns: header,
            rows,
        })
    }

    /// Each stream and held-out set's metric at every evaluation.
    pub fn metric_series(&self) -> Vec<Series> {
        let Some(first) = self.evals.first() else {
            return Vec::new();
        };
        let columns: Vec<String> = self
            .matrix_columns(first)
            .into_iter()
            .map(|k| first.scores[k].experience.clone())
            .collect();
        columns
            .into_iter()
            .map(|name| self.series_of(&name))
            .collect()
    }

    /// Downstream tasks through training: from `eval.jsonl`'s extra columns, else from the
    /// summary's `tasks` (at the experience ends).
    pub fn task_series(&self) -> Vec<TaskSeries> {
        let described = |name: &str| {
            self.summary
                .as_ref()
                .and_then(|s| s.tasks.iter().find(|t| t.name == name))
        };
        let describe = |series: Series| {
            let task = described(&series.name);
            TaskSeries {
                metric: task
                    .and_then(|t| t.metric.clone())
                    .unwrap_or_else(|| "score".to_string()),
                higher_is_better: task.and_then(|t| t.higher_is_better),
                series,
            }
        };
        if let Some(first) = self.evals.first() {
            let matrix = self.matrix_columns(first);
            let tasks: Vec<TaskSeries> = (0..first.scores.len())
                .filter(|k| !matrix.contains(k))
                .map(|k| describe(self.series_of(&first.scores[k].experience)))
                .collect();
            if !tasks.is_empty() {
                return tasks;
            }
        }
        let Some(summary) = &self.summary else {
            return Vec::new();
        };
        let ends: Vec<f64> = std::iter::once(0.0)
            .chain(self.segments().iter().map(|s| s.end as f64))
            .collect();
        summary
            .tasks
            .iter()
            .map(|task| {
                let values = std::iter::once(task.initial).chain(task.values.iter().copied());
                let points = values
                    .enumerate()
                    .filter_map(|(stage, v)| Some((*ends.get(stage)?, v?)))
                    .collect();
                describe(Series {
                    name: task.name.clone(),
                    points,
                })
            })
            .collect()
    }

    /// The set `name`'s metric at every evaluation that scored it.
    fn series_of(&self, name: &str) -> Series {
        let points = self
            .evals
            .iter()
            .filter_map(|line| {
                let value = line.scores.iter().find(|s| s.experience == name)?.metric?;
                Some((line.global_step as f64, value))
            })
            .collect();
        Series {
            name: name.to_string(),
            points,
        }
    }

    /// Training units seen and steps taken: the summary's, else the last logged step's.
    pub fn progress(&self) -> (Option<u64>, Option<u64>) {
        let last = self.steps.last();
        let summary = self.summary.as_ref();
        (
            summary
                .and_then(|s| s.tokens_seen)
                .or_else(|| last.and_then(|s| s.tokens_seen)),
            summary
                .and_then(|s| s.steps)
                .or_else(|| last.map(|s| s.global_step)),
        )
    }
}
