//! `cpt report RUN_DIR... --out report.html`: one self-contained HTML page of one or more runs,
//! written whole or not at all.

use anyhow::{Context, Result};
use cpt_core::atomic::write_atomic;
use std::path::{Path, PathBuf};

/// Build the report of `runs` and write it to `out`.
pub fn report(runs: &[PathBuf], out: &Path) -> Result<()> {
    let html = cpt_eval::report::build_report(runs)?;
    write_atomic(out, html.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    println!("report: {} ({} run(s))", out.display(), runs.len());
    Ok(())
}
