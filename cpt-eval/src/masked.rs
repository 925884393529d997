//! Held-out reconstruction loss of a masked image model (MAE), with masks fixed per eval image so
//! that every row of the eval matrix compares the same task.

use crate::vision::{ImageEvalSet, ProbeSettings, probe_extras};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use cpt_core::{EvalScores, Evaluator, MaskedImageModel, Result, SplitMix64};
use std::marker::PhantomData;

/// Mean masked-patch reconstruction loss per set (lower is better), probes as extras.
pub struct ReconstructionEvaluator<B: Backend, M: MaskedImageModel<B>> {
    sets: Vec<ImageEvalSet>,
    probe: ProbeSettings,
    seed: u64,
    backend: PhantomData<fn(&M) -> B>,
}

impl<B: Backend, M: MaskedImageModel<B>> ReconstructionEvaluator<B, M> {
    /// An evaluator over `sets`; masks derive from `seed`, the set and the batch.
    pub fn new(sets: Vec<ImageEvalSet>, probe: ProbeSettings, seed: u64) -> Self {
        Self {
            sets,
            probe,
            seed,
            backend: PhantomData,
        }
    }
}

/// The noise `[batch, patches]` whose order decides the mask of batch `batch_index` of set
/// `set_index`: drawn on the host, so it is the same on every backend and at every evaluation.
pub fn eval_noise<B: Backend>(
    seed: u64,
    set_index: usize,
    batch_index: usize,
    batch: usize,
    patches: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut rng = SplitMix64::derive(seed, &[set_index as u64, batch_index as u64]);
    let values: Vec<f32> = (0..batch * patches)
        .map(|_| rng.next_f64() as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, [batch, patches]), device)
}

impl<B: Backend, M: MaskedImageModel<B> + Module<B>> Evaluator<M>
    for ReconstructionEvaluator<B, M>
{
    fn metric_name(&self) -> &str {
        "reconstruction_loss"
    }

    fn lower_is_better(&self) -> bool {
        true
    }

    fn evaluate(&mut self, model: &M) -> Result<Vec<EvalScores>> {
        let extras = probe_extras(model, &self.sets, &self.probe)?;
        let device = model.devices().into_iter().next().unwrap_or_default();
        let mut scores = Vec::with_capacity(self.sets.len());
        for ((s, set), extras) in self.sets.iter().enumerate().zip(extras) {
            let (mut weighted, mut count) = (0.0, 0usize);
            for (b, batch) in set.batches.iter().enumerate() {
                let noise = eval_noise::<B>(
                    self.seed,
                    s,
                    b,
                    batch.batch_size,
                    model.num_patches(),
                    &device,
                );
                let loss = model.masked_loss(batch, noise).into_scalar().elem::<f64>();
                weighted += loss * batch.batch_size as f64;
                count += batch.batch_size;
            }
            let loss = if count == 0 {
                f64::NAN
            } else {
                weighted / count as f64
            };
            scores.push(EvalScores {
                experience: set.name.clone(),
                loss,
                metric: loss,
                count,
                extras,
            });
        }
        Ok(scores)
    }
}
