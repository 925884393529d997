//! `cpt report`: one self-contained HTML page from one or more run directories — training loss
//! and learning rate, the eval matrix as a heatmap, each set's metric through training,
//! forgetting and transfer across runs, downstream tasks, the configs and the summary numbers.
//! Charts are inline SVG drawn with plotters; the page has no script, font or network request.
//!
//! Runs are read leniently: a run in progress renders what it has, and each missing part becomes
//! a note on the page rather than an error.

mod chart;
mod configs;
mod curves;
mod error;
mod format;
mod heatmap;
mod page;
mod run;
mod stream;
mod training;
mod transfer;

pub use error::ReportError;
pub use run::{Run, read_run};

use std::path::PathBuf;

/// The report page of the run directories `dirs`, in the order given.
pub fn build_report(dirs: &[PathBuf]) -> Result<String, ReportError> {
    let runs = dirs
        .iter()
        .map(|dir| read_run(dir))
        .collect::<Result<Vec<Run>, ReportError>>()?;
    page::render(&runs)
}
