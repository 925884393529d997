//! Zero-shot evaluation of an image–text model (CLIP): classification by the nearest class
//! prompt, and image↔text retrieval recall@k on a set's image–caption pairs. Zero-shot accuracy
//! on sets never trained on is the retention the seed's CLIP papers track (ZSCL, 2023).

use crate::vision::{ImageEvalSet, ProbeSettings, argmax, host_rows, probe_extras};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use cpt_core::{CoreError, EvalScores, Evaluator, ImageBatch, ImageTextModel, Result, TaskModel};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// Retrieval depths reported as extras.
pub const RECALL_AT: [usize; 3] = [1, 5, 10];

/// Zero-shot accuracy per set (the matrix metric), contrastive loss, retrieval recalls and
/// probes as extras.
pub struct ZeroShotEvaluator<B: Backend, M: ImageTextModel<B>> {
    sets: Vec<ImageEvalSet>,
    probe: ProbeSettings,
    backend: PhantomData<fn(&M) -> B>,
}

impl<B: Backend, M: ImageTextModel<B>> ZeroShotEvaluator<B, M> {
    /// An evaluator over `sets`; every set needs class prompts.
    pub fn new(sets: Vec<ImageEvalSet>, probe: ProbeSettings) -> Result<Self> {
        if let Some(set) = sets.iter().find(|s| s.prompts.is_none()) {
            return Err(CoreError::Data(format!(
                "eval set `{}`: zero-shot evaluation needs class prompts",
                set.name
            )));
        }
        Ok(Self {
            sets,
            probe,
            backend: PhantomData,
        })
    }
}

/// Cosine similarities `[rows of a, rows of b]` of two L2-normalised embedding matrices.
fn similarities<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<(Vec<f64>, usize)> {
    let cols = b.dims()[0];
    Ok((host_rows(a.matmul(b.transpose()))?, cols))
}

/// Recall@k of retrieval where query `q` is answered correctly by any candidate in
/// `relevant(q)`: the fraction of queries with a relevant candidate among the k most similar.
pub fn recall_at_k(
    similarity: &[f64],
    candidates: usize,
    k: usize,
    relevant: impl Fn(usize, usize) -> bool,
) -> f64 {
    let queries = similarity.len() / candidates.max(1);
    if queries == 0 {
        return f64::NAN;
    }
    let hits = (0..queries)
        .filter(|&q| {
            let row = &similarity[q * candidates..(q + 1) * candidates];
            let mut order: Vec<usize> = (0..candidates).collect();
            // Stable sort by descending similarity: ties keep candidate order.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order.iter().take(k).any(|&c| relevant(q, c))
        })
        .count();
    hits as f64 / queries as f64
}

impl<B: Backend, M> Evaluator<M> for ZeroShotEvaluator<B, M>
where
    M: ImageTextModel<B> + TaskModel<B, Batch = ImageBatch>,
{
    fn metric_name(&self) -> &str {
        "zero_shot_accuracy"
    }

    fn lower_is_better(&self) -> bool {
        false
    }

    fn evaluate(&mut self, model: &M) -> Result<Vec<EvalScores>> {
        let probes = probe_extras(model, &self.sets, &self.probe)?;
        let mut scores = Vec::with_capacity(self.sets.len());
        for (set, mut extras) in self.sets.iter().zip(probes) {
            let prompts = set.prompts.as_ref().expect("checked in new");
            let class_embeds = model.text_embeds(&prompts.tokens, prompts.text_len);
            let (mut hits, mut count, mut loss, mut loss_count) = (0usize, 0usize, 0.0, 0usize);
            let mut image_embeds = Vec::new();
            let mut captions: Vec<&[u32]> = Vec::new();
            for batch in &set.batches {
                let images = model.image_embeds(batch);
                let (sim, classes) = similarities(images.clone(), class_embeds.clone())?;
                for (row, label) in sim.chunks(classes).zip(&batch.labels) {
                    hits += usize::from(prompts.labels[argmax(row)] == *label);
                    count += 1;
                }
                image_embeds.push(images);
                if batch.text_len > 0 {
                    let out = model.forward_step(batch);
                    loss += out.loss.into_scalar().elem::<f64>() * batch.batch_size as f64;
                    loss_count += batch.batch_size;
                    captions.extend(batch.text.chunks(batch.text_len));
                }
            }
            if !captions.is_empty() && !image_embeds.is_empty() {
                retrieval_extras(model, image_embeds, &captions, &mut extras)?;
            }
            let mean = |total: f64, n: usize| if n == 0 { f64::NAN } else { total / n as f64 };
            scores.push(EvalScores {
                experience: set.name.clone(),
                loss: mean(loss, loss_count),
                metric: mean(hits as f64, count),
                count,
                extras,
            });
        }
        Ok(scores)
    }
}

/// Image→text and text→image recall@k over a set's pairs. Captions built from a class template
/// repeat, so a retrieved item counts as correct when its caption is identical to the query's:
/// image→text ranks the distinct captions, text→image asks each distinct caption for an image
/// that carries it.
fn retrieval_extras<B: Backend, M: ImageTextModel<B>>(
    model: &M,
    image_embeds: Vec<Tensor<B, 2>>,
    captions: &[&[u32]],
    extras: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let mut distinct: Vec<&[u32]> = captions.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let caption_of: Vec<usize> = captions
        .iter()
        .map(|c| distinct.binary_search(c).expect("present"))
        .collect();
    let text_len = distinct[0].len();
    let tokens: Vec<u32> = distinct.iter().flat_map(|c| c.iter().copied()).collect();
    let texts = model.text_embeds(&tokens, text_len);
    let images = Tensor::cat(image_embeds, 0);
    let (i2t, n_texts) = similarities(images.clone(), texts.clone())?;
    let (t2i, n_images) = similarities(texts, images)?;
    for k in RECALL_AT {
        extras.insert(
            format!("i2t_recall@{k}"),
            recall_at_k(&i2t, n_texts, k, |q, c| caption_of[q] == c),
        );
        extras.insert(
            format!("t2i_recall@{k}"),
            recall_at_k(&t2i, n_images, k, |q, c| caption_of[c] == q),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_relevant_candidates_in_the_top_k() {
        // Two queries over three candidates. Query 0 ranks candidates 2, 0, 1; query 1 ranks 1, 2, 0.
        let similarity = [0.5, 0.1, 0.9, 0.0, 0.8, 0.3];
        let relevant = |q: usize, c: usize| q == c;
        assert_eq!(recall_at_k(&similarity, 3, 1, relevant), 0.5);
        assert_eq!(recall_at_k(&similarity, 3, 2, relevant), 1.0);
        assert_eq!(recall_at_k(&similarity, 3, 3, |_, c| c == 0), 1.0);
        assert_eq!(recall_at_k(&similarity, 3, 2, |_, c| c == 0), 0.5);
    }
}
