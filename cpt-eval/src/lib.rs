//! cpt-eval: evaluation metrics and continual-learning summaries of the eval matrix.

pub mod loss;
pub mod matrix;

pub use loss::{EvalSet, PerplexityEvaluator, mean_loss};
pub use matrix::{MatrixSummary, matrix_csv, matrix_table, summarize};
