//! Downstream tasks in the eval matrix: a language model's evaluation at every point of a run
//! is its perplexity on each experience's held-out text, then each task's metrics.

use super::{ScoreSettings, Task, TextEncoder, evaluate_task};
use crate::loss::PerplexityEvaluator;
use burn::tensor::backend::Backend;
use cpt_core::{CoreError, EvalScores, Evaluator, Result, TaskModel, TokenBatch};

/// Reports a task's scoring: (task name, sequences done, sequences in all).
pub type TaskProgress = Box<dyn FnMut(&str, usize, usize) + Send>;

/// Perplexity per experience, then one score column per task: `metric` is the task's primary
/// metric, `extras` all its metrics (and `<metric>_stderr`), `loss` NaN (a task has none).
pub struct LanguageEvaluator<B: Backend, M: TaskModel<B>> {
    perplexity: PerplexityEvaluator<B, M>,
    tasks: Vec<Task>,
    encoder: Box<dyn TextEncoder + Send>,
    settings: ScoreSettings,
    progress: TaskProgress,
}

impl<B: Backend, M: TaskModel<B, Batch = TokenBatch>> LanguageEvaluator<B, M> {
    /// `perplexity` followed by `tasks`, tokenised by `encoder`.
    pub fn new(
        perplexity: PerplexityEvaluator<B, M>,
        tasks: Vec<Task>,
        encoder: Box<dyn TextEncoder + Send>,
        settings: ScoreSettings,
        progress: TaskProgress,
    ) -> Self {
        Self {
            perplexity,
            tasks,
            encoder,
            settings,
            progress,
        }
    }
}

impl<B: Backend, M: TaskModel<B, Batch = TokenBatch>> Evaluator<M> for LanguageEvaluator<B, M> {
    fn metric_name(&self) -> &str {
        self.perplexity.metric_name()
    }

    fn lower_is_better(&self) -> bool {
        self.perplexity.lower_is_better()
    }

    fn evaluate(&mut self, model: &M) -> Result<Vec<EvalScores>> {
        let mut scores = self.perplexity.evaluate(model)?;
        for task in &self.tasks {
            let progress = &mut self.progress;
            let result = evaluate_task(
                model,
                task,
                self.encoder.as_ref(),
                &self.settings,
                &mut |done, total| progress(&task.name, done, total),
            )
            .map_err(|e| CoreError::Data(format!("task `{}`: {e}", task.name)))?;
            let mut extras = result.metrics.clone();
            for (metric, stderr) in &result.stderr {
                extras.insert(format!("{metric}_stderr"), *stderr);
            }
            scores.push(EvalScores {
                experience: task.name.clone(),
                loss: f64::NAN,
                metric: result.metrics[&result.primary],
                count: result.samples,
                extras,
            });
        }
        Ok(scores)
    }
}
