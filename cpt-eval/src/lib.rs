//! cpt-eval: evaluation metrics and continual-learning summaries of the eval matrix.

pub mod loglik;
pub mod loss;
pub mod matrix;

pub use loglik::{ContinuationScore, score_continuation};
pub use loss::{EvalSet, PerplexityEvaluator, mean_loss};
pub use matrix::{MatrixSummary, matrix_csv, matrix_table, summarize};
