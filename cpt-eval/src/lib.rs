//! cpt-eval: evaluation metrics and continual-learning summaries of the eval matrix.

pub mod classify;
pub mod law;
pub mod loglik;
pub mod loss;
pub mod masked;
pub mod matrix;
pub mod probe;
pub mod report;
pub mod tasks;
pub mod vision;
pub mod zero_shot;

pub use classify::ClassificationEvaluator;
pub use loglik::{ContinuationScore, score_continuation};
pub use loss::{EvalSet, PerplexityEvaluator, mean_loss};
pub use masked::ReconstructionEvaluator;
pub use matrix::{MatrixSummary, matrix_csv, matrix_table, scores_csv, summarize};
pub use probe::{LabelledFeatures, NearestMean, RidgeProbe};
pub use tasks::{
    DocScore, LanguageEvaluator, OutputType, ScoreSettings, Task, TaskError, TaskOptions,
    TaskProgress, TaskResult, TextEncoder, evaluate_task, score_task,
};
pub use vision::{ClassPrompts, ImageEvalSet, ProbeScope, ProbeSettings};
pub use zero_shot::ZeroShotEvaluator;
