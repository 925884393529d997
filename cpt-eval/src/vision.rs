//! What the vision evaluators share: held-out image sets, features on the host, and the
//! frozen-feature probes (nearest-mean classifier, ridge linear probe) every vision model gets
//! as extra metrics beside its own matrix metric.

use crate::probe::{LabelledFeatures, NearestMean, RidgeProbe, accuracy};
use burn::tensor::backend::Backend;
use cpt_core::{CoreError, ImageBatch, ImageEncoder, Result};
use std::collections::BTreeMap;

/// One held-out image set: an experience's eval images, or a retention set never trained on.
#[derive(Debug, Clone, Default)]
pub struct ImageEvalSet {
    /// Set name (the experience's, for matrix columns).
    pub name: String,
    /// Held-out batches.
    pub batches: Vec<ImageBatch>,
    /// Labelled images the probes fit on (training images of this set's classes); empty: no
    /// probe metrics for this set.
    pub support: Vec<ImageBatch>,
    /// Class prompts for zero-shot classification (image–text models).
    pub prompts: Option<ClassPrompts>,
}

/// Tokenised prompts, one per class ("a photo of a {class}").
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPrompts {
    /// The label each prompt stands for.
    pub labels: Vec<i64>,
    /// Token rows, row-major `[labels, text_len]`.
    pub tokens: Vec<u32>,
    /// Tokens per prompt.
    pub text_len: usize,
}

/// Which support sets a probe fits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeScope {
    /// Each set is classified among its own classes (task-aware; right when sets reuse labels,
    /// as domain streams do).
    #[default]
    PerSet,
    /// Every set is classified among the classes of all sets (class-incremental: labels are
    /// disjoint across experiences).
    AllSets,
}

/// Settings of the frozen-feature probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSettings {
    /// Which classes a set's images compete among.
    pub scope: ProbeScope,
    /// Ridge strength of the linear probe.
    pub ridge_lambda: f64,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            scope: ProbeScope::PerSet,
            ridge_lambda: 1e-2,
        }
    }
}

/// Pooled features of every image of `batches`, on the host.
pub fn features_of<B: Backend, M: ImageEncoder<B>>(
    model: &M,
    batches: &[ImageBatch],
) -> Result<LabelledFeatures> {
    let mut all = LabelledFeatures::default();
    for batch in batches {
        let features = model.image_features(batch);
        let [rows, width] = features.dims();
        debug_assert_eq!(rows, batch.batch_size);
        all.extend(&LabelledFeatures {
            values: host_rows(features)?,
            width,
            labels: batch.labels.clone(),
        });
    }
    Ok(all)
}

/// `nmc_accuracy` and `probe_accuracy` of every set with a support set, in set order (an empty
/// map for a set without one).
pub fn probe_extras<B: Backend, M: ImageEncoder<B>>(
    model: &M,
    sets: &[ImageEvalSet],
    settings: &ProbeSettings,
) -> Result<Vec<BTreeMap<String, f64>>> {
    let mut supports = Vec::with_capacity(sets.len());
    for set in sets {
        supports.push(features_of(model, &set.support)?);
    }
    let mut union = LabelledFeatures::default();
    if settings.scope == ProbeScope::AllSets {
        for support in supports.iter().filter(|s| s.rows() > 0) {
            union.extend(support);
        }
    }
    let mut extras = Vec::with_capacity(sets.len());
    for (set, support) in sets.iter().zip(&supports) {
        let mut metrics = BTreeMap::new();
        if support.rows() > 0 {
            let fit_on = match settings.scope {
                ProbeScope::PerSet => support,
                ProbeScope::AllSets => &union,
            };
            let queries = features_of(model, &set.batches)?;
            let nmc = NearestMean::fit(fit_on);
            metrics.insert(
                "nmc_accuracy".to_string(),
                accuracy(&nmc.predict(&queries), &queries.labels),
            );
            let probe = RidgeProbe::fit(fit_on, settings.ridge_lambda);
            metrics.insert(
                "probe_accuracy".to_string(),
                accuracy(&probe.predict(&queries), &queries.labels),
            );
        }
        extras.push(metrics);
    }
    Ok(extras)
}

/// A 2-D tensor's values on the host, row-major.
pub(crate) fn host_rows<B: Backend>(tensor: burn::tensor::Tensor<B, 2>) -> Result<Vec<f64>> {
    tensor
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .map_err(|e| CoreError::Training(format!("reading model outputs: {e:?}")))
}

/// Index of the largest value of `row` (the first on ties).
pub(crate) fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// `log Σ exp(row)`, stable.
pub(crate) fn log_sum_exp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}
