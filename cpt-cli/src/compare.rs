//! `cpt compare RUN...`: one Markdown table row per finished run, from its `summary.json`.

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::PathBuf;

/// Print the comparison table of `runs`.
pub fn compare(runs: &[PathBuf]) -> Result<()> {
    println!(
        "| run | strategies | final avg perplexity | avg forgetting | backward transfer | tokens/s | peak memory (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for run in runs {
        let summary_path = run.join("summary.json");
        let text = std::fs::read_to_string(&summary_path)
            .with_context(|| format!("{}: not a finished run", run.display()))?;
        let summary: Value =
            serde_json::from_str(&text).with_context(|| format!("{}", summary_path.display()))?;
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap_or_default();
        let strategies = toml::from_str::<toml::Table>(&config)
            .ok()
            .and_then(|t| t.get("strategies").cloned())
            .map(|v| v.to_string())
            .unwrap_or_default();
        let number = |key: &str| summary.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let name = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "| {name} | {strategies} | {:.2} | {:+.2} | {:+.2} | {:.0} | {:.0} |",
            number("final_average"),
            number("average_forgetting"),
            number("backward_transfer"),
            number("tokens_per_sec"),
            number("peak_rss_mib"),
        );
    }
    Ok(())
}
