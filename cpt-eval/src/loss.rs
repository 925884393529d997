//! Held-out loss and perplexity of a model on each experience's eval set.

use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;
use cpt_core::{EvalScores, Evaluator, Result, TaskModel};
use std::marker::PhantomData;

/// One experience's held-out set, already batched.
pub struct EvalSet<T> {
    /// Experience name.
    pub name: String,
    /// Held-out batches.
    pub batches: Vec<T>,
}

/// Token-weighted mean loss over each eval set, with perplexity `exp(loss)` as the matrix
/// metric.
pub struct PerplexityEvaluator<B: Backend, M: TaskModel<B>> {
    sets: Vec<EvalSet<M::Batch>>,
    backend: PhantomData<B>,
}

impl<B: Backend, M: TaskModel<B>> PerplexityEvaluator<B, M> {
    /// An evaluator over `sets`, in stream order.
    pub fn new(sets: Vec<EvalSet<M::Batch>>) -> Self {
        Self {
            sets,
            backend: PhantomData,
        }
    }
}

/// Mean loss of `model` over `batches`, weighting each batch by the units behind its loss.
pub fn mean_loss<B: Backend, M: TaskModel<B>>(model: &M, batches: &[M::Batch]) -> (f64, usize) {
    let (mut weighted, mut count) = (0.0, 0usize);
    for batch in batches {
        let out = model.forward_step(batch);
        weighted += out.loss.into_scalar().elem::<f64>() * out.count as f64;
        count += out.count;
    }
    (
        if count == 0 {
            f64::NAN
        } else {
            weighted / count as f64
        },
        count,
    )
}

impl<B: Backend, M: TaskModel<B>> Evaluator<M> for PerplexityEvaluator<B, M>
where
    M::Batch: Sync,
{
    fn metric_name(&self) -> &str {
        "perplexity"
    }

    fn lower_is_better(&self) -> bool {
        true
    }

    fn evaluate(&mut self, model: &M) -> Result<Vec<EvalScores>> {
        Ok(self
            .sets
            .iter()
            .map(|set| {
                let (loss, count) = mean_loss(model, &set.batches);
                EvalScores {
                    experience: set.name.clone(),
                    loss,
                    metric: loss.exp(),
                    count,
                    extras: Default::default(),
                }
            })
            .collect())
    }
}
