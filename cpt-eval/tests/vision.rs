//! The vision evaluators on a transparent stand-in model whose features are its pixels, so
//! every expected number is a hand computation.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use cpt_core::{Evaluator, ImageBatch, ImageClassifier, ImageEncoder, ImageItem};
use cpt_eval::{ClassificationEvaluator, ImageEvalSet, ProbeScope, ProbeSettings};

type B = Flex;

/// Features = the two pixels; logits = the pixels themselves (class 0 wins when pixel 0 is
/// larger).
struct PixelModel;

fn pixels(batch: &ImageBatch) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(batch.pixels.clone(), [batch.batch_size, 2]),
        &Default::default(),
    )
}

impl ImageEncoder<B> for PixelModel {
    fn image_features(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        pixels(batch)
    }
}

impl ImageClassifier<B> for PixelModel {
    fn class_logits(&self, batch: &ImageBatch) -> Tensor<B, 2> {
        pixels(batch)
    }
}

fn batch(rows: &[([f32; 2], i64)]) -> ImageBatch {
    ImageBatch::from_images(
        &rows
            .iter()
            .map(|(p, label)| ImageItem {
                pixels: p.to_vec(),
                shape: [1, 1, 2],
                label: *label,
                text: Vec::new(),
            })
            .collect::<Vec<_>>(),
    )
}

#[test]
fn accuracy_loss_and_probes_match_hand_computation() {
    let set = ImageEvalSet {
        name: "a".into(),
        // Predictions: 0, 1, 0 (tie goes to the first class), 1 — labels 0, 1, 1, 0: 2 of 4.
        batches: vec![
            batch(&[([2.0, 0.0], 0), ([0.0, 1.0], 1)]),
            batch(&[([1.0, 1.0], 1), ([0.0, 3.0], 0)]),
        ],
        support: vec![batch(&[([1.0, 0.0], 0), ([0.0, 1.0], 1)])],
        prompts: None,
    };
    let mut evaluator =
        ClassificationEvaluator::<B, PixelModel>::new(vec![set], ProbeSettings::default());
    let scores = evaluator.evaluate(&PixelModel).unwrap();
    let s = &scores[0];
    assert_eq!(s.count, 4);
    assert_eq!(s.metric, 0.5);
    // Cross-entropy rows: log(e²+1)−2, log(1+e)−1, log 2, log(1+e³)−0.
    let ln = f64::ln;
    let e = std::f64::consts::E;
    let expected =
        ((ln(e * e + 1.0) - 2.0) + (ln(1.0 + e) - 1.0) + ln(2.0) + ln(1.0 + e.powi(3))) / 4.0;
    assert!((s.loss - expected).abs() < 1e-6, "{} vs {expected}", s.loss);
    // Prototypes are the axes: NMC agrees with the head except on the tie (1,1), which NMC
    // also sends to class 0 — so 2 of 4 again.
    assert_eq!(s.extras["nmc_accuracy"], 0.5);
    assert!(s.extras.contains_key("probe_accuracy"));
}

#[test]
fn class_incremental_probes_compete_across_sets() {
    // Set `a` holds class 0 and 1, set `b` class 2; under AllSets, `b`'s images may be
    // mistaken for `a`'s classes, under PerSet they cannot be wrong (one class).
    let a = ImageEvalSet {
        name: "a".into(),
        batches: vec![batch(&[([1.0, 0.0], 0)])],
        support: vec![batch(&[([1.0, 0.0], 0), ([0.0, 1.0], 1)])],
        prompts: None,
    };
    let b = ImageEvalSet {
        name: "b".into(),
        // Closer to class 0's prototype than to class 2's.
        batches: vec![batch(&[([1.0, 0.1], 2)])],
        support: vec![batch(&[([1.0, 1.0], 2)])],
        prompts: None,
    };
    let run = |scope| {
        let settings = ProbeSettings {
            scope,
            ..ProbeSettings::default()
        };
        let mut ev =
            ClassificationEvaluator::<B, PixelModel>::new(vec![a.clone(), b.clone()], settings);
        // The head only has 2 classes: label 2 is outside it, which is an error naming the set.
        let err = ev.evaluate(&PixelModel).unwrap_err().to_string();
        assert!(
            err.contains("eval set `b`") && err.contains("label 2"),
            "{err}"
        );
        cpt_eval::vision::probe_extras::<B, PixelModel>(
            &PixelModel,
            &[a.clone(), b.clone()],
            &settings,
        )
        .unwrap()
    };
    assert_eq!(run(ProbeScope::PerSet)[1]["nmc_accuracy"], 1.0);
    assert_eq!(run(ProbeScope::AllSets)[1]["nmc_accuracy"], 0.0);
}
