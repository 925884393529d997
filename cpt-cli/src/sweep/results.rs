//! `sweep.csv`: one row per finished point — its axis values, then what its run measured (the
//! parameter count, tokens, steps, wall time, each stage's token budget, and the final loss and
//! metric of every evaluated set).

use super::PlannedPoint;
use anyhow::{Context, Result};
use cpt_core::atomic::write_atomic;
use cpt_core::{EvalPoint, EvalRecord};
use std::path::Path;

/// A finished point's cells, `(column, value)` in column order.
pub type Row = Vec<(String, String)>;

/// The row of a finished point (one whose run directory holds `summary.json`).
pub fn point_row(dir: &Path, point: &PlannedPoint) -> Result<Row> {
    let summary_path = dir.join("summary.json");
    let text = std::fs::read_to_string(&summary_path)
        .with_context(|| format!("reading {}", summary_path.display()))?;
    let summary: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", summary_path.display()))?;
    let number = |key: &str| {
        summary
            .get(key)
            .map(|v| v.to_string())
            .with_context(|| format!("{}: no `{key}`", summary_path.display()))
    };
    let mut row: Row = vec![("point".into(), point.spec.name.clone())];
    row.extend(point.spec.values.iter().cloned());
    row.push(("params".into(), point.params.to_string()));
    row.push(("tokens".into(), number("tokens_seen")?));
    row.push(("steps".into(), number("steps")?));
    row.push(("wall_time_secs".into(), number("wall_time_secs")?));
    for (i, (experience, steps)) in point
        .config
        .experiences
        .iter()
        .zip(point.config.experience_steps())
        .enumerate()
    {
        row.push((
            format!("tokens_{}", experience.name),
            (steps * point.config.tokens_per_step(i)).to_string(),
        ));
    }
    let last = final_evaluation(dir)?;
    for score in &last.scores {
        if score.loss.is_finite() {
            row.push((format!("loss_{}", score.experience), score.loss.to_string()));
            row.push((
                format!("{}_{}", last.metric, score.experience),
                score.metric.to_string(),
            ));
        } else {
            // Downstream tasks score no loss; their metric is their own (accuracy, ...).
            row.push((
                format!("task_{}", score.experience),
                score.metric.to_string(),
            ));
        }
    }
    Ok(row)
}

/// The evaluation at the end of the last experience, from `eval.jsonl`.
fn final_evaluation(dir: &Path) -> Result<EvalRecord> {
    let path = dir.join("eval.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut last = None;
    for (i, line) in text.lines().enumerate() {
        let record: EvalRecord = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if record.point == EvalPoint::ExperienceEnd {
            last = Some(record);
        }
    }
    last.with_context(|| format!("{}: no end-of-experience evaluation", path.display()))
}

/// Write the rows as CSV (columns: the union of the rows', in order of first appearance),
/// atomically.
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for (column, _) in row {
            if !columns.contains(&column.as_str()) {
                columns.push(column);
            }
        }
    }
    let mut text = columns
        .iter()
        .map(|c| field(c))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                row.iter()
                    .find(|(column, _)| column == c)
                    .map(|(_, v)| field(v))
                    .unwrap_or_default()
            })
            .collect();
        text += &cells.join(",");
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
