//! What can stop a report: a path that is not a run, a file that cannot be read, a chart that
//! cannot be drawn. Missing or malformed parts of a run are not errors; they become notes.

use std::path::PathBuf;

/// Errors raised while building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `path` is not a run directory.
    #[error("{path}: not a run directory ({reason})")]
    NotARun {
        /// The path given as a run.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// Reading `path` failed for a reason other than its absence.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// plotters could not draw a chart.
    #[error("chart `{chart}`: {message}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// plotters' error.
        message: String,
    },
}
