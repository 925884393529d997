//! Scaling laws fitted to sweep results (`cpt law fit`): Chinchilla's `L(N, D)` and the D-CPT
//! law `L(N, D, r)` of domain-specific continual pre-training, the loss-optimal mixture ratio
//! they predict, and the results table they are read from. Plain numerics: nothing here
//! touches a model.

mod fit;
mod forms;
mod optimum;
mod table;

pub use fit::{Fit, HUBER_DELTA, Observation, Residual, fit, r_squared, rmse};
pub use forms::{LawKind, Point};
pub use optimum::{RatioChoice, RatioObjective, best_of, best_ratio, ratio_grid};
pub use table::ResultsTable;

use std::path::PathBuf;

/// What can go wrong reading results or fitting a law.
#[derive(Debug, thiserror::Error)]
pub enum LawError {
    /// A results file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A results file is not valid CSV.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The CSV reader's message.
        message: String,
    },
    /// A column the fit needs is not in the table.
    #[error("{path}: no column `{column}` (columns: {available})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns there are.
        available: String,
    },
    /// A cell that should hold a number does not.
    #[error("{path}: row {row}, column `{column}`: `{value}` is not a number")]
    NotANumber {
        /// The file.
        path: PathBuf,
        /// Row (1 = the first below the header).
        row: usize,
        /// The column.
        column: String,
        /// The cell.
        value: String,
    },
    /// Fewer observations than a fit can determine.
    #[error(
        "too few points for the {law} law: {given} given, but it has {parameters} parameters and needs at least {} points", parameters + 1
    )]
    TooFewPoints {
        /// The law.
        law: &'static str,
        /// Observations given.
        given: usize,
        /// The law's parameter count.
        parameters: usize,
    },
    /// An observation outside the law's domain.
    #[error("point `{label}`: {what} is {value}")]
    BadValue {
        /// The observation's label.
        label: String,
        /// Which quantity, and what it must be.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// No starting point led to a finite optimum.
    #[error("the {law} fit did not converge from any of its {starts} starting points")]
    NoConvergence {
        /// The law.
        law: &'static str,
        /// Starting points tried.
        starts: usize,
    },
}

#[cfg(test)]
mod tests;
