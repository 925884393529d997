//! Classification accuracy of an image classifier on each held-out set (the eval-matrix metric
//! of class-incremental and domain-incremental vision streams), with cross-entropy as the loss
//! and the frozen-feature probes as extras.

use crate::vision::{ImageEvalSet, ProbeSettings, argmax, host_rows, log_sum_exp, probe_extras};
use burn::tensor::backend::Backend;
use cpt_core::{CoreError, EvalScores, Evaluator, ImageClassifier, Result};
use std::marker::PhantomData;

/// Accuracy of the model's own head, per set.
pub struct ClassificationEvaluator<B: Backend, M: ImageClassifier<B>> {
    sets: Vec<ImageEvalSet>,
    probe: ProbeSettings,
    backend: PhantomData<fn(&M) -> B>,
}

impl<B: Backend, M: ImageClassifier<B>> ClassificationEvaluator<B, M> {
    /// An evaluator over `sets`, in stream order (held-out retention sets after the stream's).
    pub fn new(sets: Vec<ImageEvalSet>, probe: ProbeSettings) -> Self {
        Self {
            sets,
            probe,
            backend: PhantomData,
        }
    }
}

/// Mean cross-entropy and accuracy of `model` on one set. A label outside the head is an
/// error that names the set: the run's `num_labels` is too small for its data.
pub fn classify_set<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    set: &ImageEvalSet,
) -> Result<(f64, f64, usize)> {
    let (mut loss, mut hits, mut count) = (0.0, 0usize, 0usize);
    for batch in &set.batches {
        let logits = model.class_logits(batch);
        let classes = logits.dims()[1];
        let values = host_rows(logits)?;
        for (row, &label) in values.chunks(classes).zip(&batch.labels) {
            let Some(target) = usize::try_from(label).ok().filter(|&l| l < classes) else {
                return Err(CoreError::Data(format!(
                    "eval set `{}`: label {label} is outside the classifier's {classes} classes",
                    set.name
                )));
            };
            loss += log_sum_exp(row) - row[target];
            hits += usize::from(argmax(row) == target);
            count += 1;
        }
    }
    if count == 0 {
        return Ok((f64::NAN, f64::NAN, 0));
    }
    Ok((loss / count as f64, hits as f64 / count as f64, count))
}

impl<B: Backend, M: ImageClassifier<B>> Evaluator<M> for ClassificationEvaluator<B, M> {
    fn metric_name(&self) -> &str {
        "accuracy"
    }

    fn lower_is_better(&self) -> bool {
        false
    }

    fn evaluate(&mut self, model: &M) -> Result<Vec<EvalScores>> {
        let extras = probe_extras(model, &self.sets, &self.probe)?;
        self.sets
            .iter()
            .zip(extras)
            .map(|(set, extras)| {
                let (loss, metric, count) = classify_set(model, set)?;
                Ok(EvalScores {
                    experience: set.name.clone(),
                    loss,
                    metric,
                    count,
                    extras,
                })
            })
            .collect()
    }
}
