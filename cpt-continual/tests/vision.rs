//! The continual trainer and every strategy on the vision models (ViT classifier, CLIP, ViT-MAE):
//! tiny models over a two-experience synthetic image stream train with finite losses and fill
//! the eval matrix; LoRA freezes the base and replay mixes earlier items into later batches;
//! a resumed run equals an uninterrupted one bit for bit, ViT-MAE's backend-RNG masks included.

mod common;

use common::{B, Inner, backend_rng_lock, settings};
use cpt_continual::strategies::{
    Distill, DistillConfig, Ema, Ewc, EwcConfig, FeatureDistance, FisherKind, Lora, LoraMode,
    Merge, Naive, Replay, SlowLearner, WeightEnsemble, Wise,
};
use cpt_continual::{
    Context, ContinualTrainer, Experience, RunObserver, RunOutcome, SilentObserver, Strategy,
};
use cpt_core::checkpoint::latest_checkpoint;
use cpt_core::params::named_tensors;
use cpt_core::{
    AdapterModel, EvalScores, Evaluator, ImageBatch, ImageItem, ItemSource, SplitMix64, StepOutput,
    StepRecord, TaskModel,
};
use cpt_eval::{ImageEvalSet, ProbeSettings, ReconstructionEvaluator};
use cpt_models::clip::{ClipActivation, ClipTextConfig, ClipVisionConfig};
use cpt_models::linear::LoraSpec;
use cpt_models::{
    ClipConfig, ClipModel, ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Vit = ViTForImageClassification<B>;
type Clip = ClipModel<B>;
type Mae = ViTMAEForPreTraining<B>;
type Strategies<M> = Vec<Box<dyn Strategy<B, M>>>;

const SIDE: usize = 8;
const TEXT_LEN: usize = 4;
const VOCAB: usize = 16;
const EOS: u32 = 15;
/// Classes per experience (class-incremental: experience `e` has labels `2e`, `2e + 1`).
const CLASSES: i64 = 2;
const STEPS: [u64; 2] = [4, 3];

// ---------------------------------------------------------------------------------------------
// Tiny models.

fn vit(seed: u64) -> Vit {
    ViTConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-12,
        image_size: SIDE,
        patch_size: 4,
        num_channels: 1,
        qkv_bias: true,
        num_labels: 4,
        initializer_range: 0.1,
    }
    .init_seeded(seed, &Default::default())
}

fn clip(seed: u64) -> Clip {
    ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: VOCAB,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 8,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(0),
            bos_token_id: None,
            eos_token_id: EOS,
        },
        vision_config: ClipVisionConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_channels: 1,
            image_size: SIDE,
            patch_size: 4,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            initializer_range: 0.1,
        },
        projection_dim: 8,
        logit_scale_init_value: 2.6592,
        initializer_factor: 1.0,
    }
    .init_seeded(seed, &Default::default())
}

fn mae(seed: u64) -> Mae {
    ViTMAEConfig {
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 32,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-12,
        image_size: SIDE,
        patch_size: 4,
        num_channels: 1,
        qkv_bias: true,
        initializer_range: 0.1,
        decoder_num_attention_heads: 2,
        decoder_hidden_size: 8,
        decoder_num_hidden_layers: 1,
        decoder_intermediate_size: 16,
        mask_ratio: 0.5,
        norm_pix_loss: false,
    }
    .init_seeded(seed, &Default::default())
}

// ---------------------------------------------------------------------------------------------
// A synthetic, resumable image stream.

/// Images of experience `experience`'s classes: a bright quadrant chosen by the class, plus
/// noise; with `captions`, token rows `[class word, noise word, EOS, pad]`.
struct ImageSource {
    rng: SplitMix64,
    experience: i64,
    captions: bool,
}

impl ImageSource {
    fn new(seed: u64, experience: usize, captions: bool) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            experience: experience as i64,
            captions,
        }
    }
}

impl ItemSource<ImageItem> for ImageSource {
    fn next_item(&mut self) -> cpt_core::Result<ImageItem> {
        let label = self.experience * CLASSES + self.rng.below(CLASSES as u64) as i64;
        let quadrant = label as usize % 4;
        let pixels = (0..SIDE * SIDE)
            .map(|i| {
                let (y, x) = (i / SIDE, i % SIDE);
                let lit = (y / 4) * 2 + x / 4 == quadrant;
                let base = if lit { 1.0 } else { -0.5 } + 0.3 * self.experience as f64;
                (base + 0.2 * self.rng.next_normal()) as f32
            })
            .collect();
        let text = if self.captions {
            let text = vec![1 + label as u32, 8 + self.rng.below(6) as u32, EOS, 0];
            debug_assert_eq!(text.len(), TEXT_LEN);
            text
        } else {
            Vec::new()
        };
        Ok(ImageItem {
            pixels,
            shape: [1, SIDE, SIDE],
            label,
            text,
        })
    }
    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(self.rng).unwrap()
    }
    fn seek(&mut self, cursor: &serde_json::Value) -> cpt_core::Result<()> {
        self.rng = serde_json::from_value(cursor.clone()).unwrap();
        Ok(())
    }
}

fn experiences(captions: bool) -> Vec<Experience<ImageItem>> {
    (0..STEPS.len())
        .map(|e| Experience {
            name: format!("task{e}"),
            steps: STEPS[e],
            source: Box::new(ImageSource::new(100 + e as u64, e, captions))
                as Box<dyn ItemSource<ImageItem>>,
        })
        .collect()
}

/// Four held-out images of each experience.
fn eval_batches(captions: bool) -> Vec<(String, ImageBatch)> {
    (0..STEPS.len())
        .map(|e| {
            let mut source = ImageSource::new(900 + e as u64, e, captions);
            let items: Vec<ImageItem> = (0..4).map(|_| source.next_item().unwrap()).collect();
            (format!("task{e}"), ImageBatch::from_images(&items))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Evaluators.

/// The model's own loss on fixed held-out batches (ViT: cross-entropy, CLIP: InfoNCE).
struct LossEvaluator {
    sets: Vec<(String, ImageBatch)>,
}

impl<M: TaskModel<Inner, Batch = ImageBatch>> Evaluator<M> for LossEvaluator {
    fn metric_name(&self) -> &str {
        "loss"
    }
    fn lower_is_better(&self) -> bool {
        true
    }
    fn evaluate(&mut self, model: &M) -> cpt_core::Result<Vec<EvalScores>> {
        use burn::tensor::ElementConversion;
        Ok(self
            .sets
            .iter()
            .map(|(name, batch)| {
                let out = model.forward_step(batch);
                let loss = out.loss.into_scalar().elem::<f64>();
                EvalScores {
                    experience: name.clone(),
                    loss,
                    metric: loss,
                    count: out.count,
                    extras: Default::default(),
                }
            })
            .collect())
    }
}

fn loss_evaluator<M>(captions: bool) -> Box<dyn Evaluator<M>>
where
    M: TaskModel<Inner, Batch = ImageBatch>,
{
    Box::new(LossEvaluator {
        sets: eval_batches(captions),
    })
}

/// MAE: the pipeline's reconstruction evaluator (masks fixed per eval batch, not drawn from the
/// backend RNG).
fn mae_evaluator() -> Box<dyn Evaluator<ViTMAEForPreTraining<Inner>>> {
    let sets = eval_batches(false)
        .into_iter()
        .map(|(name, batch)| ImageEvalSet {
            name,
            batches: vec![batch],
            ..Default::default()
        })
        .collect();
    Box::new(ReconstructionEvaluator::new(
        sets,
        ProbeSettings::default(),
        3,
    ))
}

/// How to build a run of one model kind.
struct Kind<M: TaskModel<B> + burn::module::AutodiffModule<B>> {
    model: fn(u64) -> M,
    evaluator: fn() -> Box<dyn Evaluator<M::InnerModule>>,
    captions: bool,
    /// LoRA targets.
    targets: &'static [&'static str],
    /// A parameter group for slow_learner.
    slow_group: &'static str,
}

fn vit_kind() -> Kind<Vit> {
    Kind {
        model: vit,
        evaluator: || loss_evaluator(false),
        captions: false,
        targets: &["query", "value"],
        slow_group: "vit.embeddings.*",
    }
}

fn clip_kind() -> Kind<Clip> {
    Kind {
        model: clip,
        evaluator: || loss_evaluator(true),
        captions: true,
        targets: &["q", "v"],
        slow_group: "vision_model.embeddings.*",
    }
}

fn mae_kind() -> Kind<Mae> {
    Kind {
        model: mae,
        evaluator: mae_evaluator,
        captions: false,
        targets: &["query", "value"],
        slow_group: "vit.embeddings.*",
    }
}

fn trainer<M>(
    kind: &Kind<M>,
    seed: u64,
    strategies: Strategies<M>,
    checkpoint_every: u64,
) -> ContinualTrainer<B, M>
where
    M: TaskModel<B, Batch = ImageBatch> + burn::module::AutodiffModule<B>,
{
    ContinualTrainer::new(
        (kind.model)(seed),
        strategies,
        experiences(kind.captions),
        (kind.evaluator)(),
        settings(checkpoint_every),
    )
}

// ---------------------------------------------------------------------------------------------
// Strategies, built without naming a model.

fn lora_spec(targets: &[&str], dropout: f64) -> LoraSpec {
    LoraSpec {
        rank: 2,
        alpha: 4.0,
        rslora: false,
        target_modules: targets.iter().map(|t| t.to_string()).collect(),
        dropout,
    }
}

fn ewc(fisher: FisherKind) -> EwcConfig {
    EwcConfig {
        lambda: 10.0,
        fisher_batches: 2,
        online: false,
        gamma: 1.0,
        fisher,
    }
}

/// Logit and feature distillation, on the current batch or on a reference stream (earlier
/// classes).
fn distill<M>(captions: bool, reference: bool) -> Box<dyn Strategy<B, M>>
where
    M: TaskModel<B, Batch = ImageBatch> + burn::module::AutodiffModule<B> + 'static,
    M::InnerModule: TaskModel<Inner, Batch = ImageBatch>,
{
    let config = DistillConfig {
        alpha: 0.5,
        temperature: 2.0,
        feature_weight: 0.3,
        feature_distance: FeatureDistance::Cosine,
        reference_batch_size: 2,
    };
    let source = reference
        .then(|| Box::new(ImageSource::new(77, 0, captions)) as Box<dyn ItemSource<ImageItem>>);
    Box::new(Distill::<B, M>::with_config(config, source))
}

/// The strategy `name` for model kind `kind`.
fn strategy<M>(kind: &Kind<M>, name: &str) -> Box<dyn Strategy<B, M>>
where
    M: TaskModel<B, Batch = ImageBatch>
        + burn::module::AutodiffModule<B>
        + AdapterModel<Spec = LoraSpec>
        + 'static,
    M::InnerModule: TaskModel<Inner, Batch = ImageBatch>,
{
    match name {
        "naive" => Box::new(Naive),
        "replay" => Box::new(Replay::<ImageItem>::new(6, 0.5, 7)),
        "ewc" => Box::new(Ewc::<B>::new(ewc(FisherKind::Empirical))),
        "l2" => Box::new(Ewc::<B>::new(ewc(FisherKind::Identity))),
        "distill" => distill::<M>(kind.captions, false),
        "ema" => Box::new(Ema::<B>::new(0.8)),
        "wise" => Box::new(Wise::<B>::new(0.7)),
        "merge" => Box::new(Merge::<B>::new(0.9)),
        "weight_ensemble" => Box::new(WeightEnsemble::<B>::new(2)),
        "lora" => Box::new(Lora::<B, M>::new(
            lora_spec(kind.targets, 0.0),
            LoraMode::Continue,
            3,
        )),
        "slow_learner" => Box::new(SlowLearner::new(vec![(kind.slow_group.into(), 0.1)])),
        other => panic!("unknown strategy {other}"),
    }
}

const ALL: [&str; 11] = [
    "naive",
    "replay",
    "ewc",
    "l2",
    "distill",
    "ema",
    "wise",
    "merge",
    "weight_ensemble",
    "lora",
    "slow_learner",
];

// ---------------------------------------------------------------------------------------------
// Every strategy trains every model.

/// Records every step's losses; raises the stop flag after global step `stop_at`.
struct Steps {
    stop_at: Option<u64>,
    flag: Option<Arc<AtomicBool>>,
    records: Vec<StepRecord>,
}

impl Steps {
    fn new() -> Self {
        Self {
            stop_at: None,
            flag: None,
            records: Vec::new(),
        }
    }
    fn stopping(stop_at: u64, flag: Arc<AtomicBool>) -> Self {
        Self {
            stop_at: Some(stop_at),
            flag: Some(flag),
            records: Vec::new(),
        }
    }
    fn loss_bits(&self) -> Vec<(u64, u64, u64)> {
        self.records
            .iter()
            .map(|r| (r.global_step, r.loss.to_bits(), r.total_loss.to_bits()))
            .collect()
    }
}

impl RunObserver for Steps {
    fn step(&mut self, record: &StepRecord) {
        self.records.push(record.clone());
        if Some(record.global_step) == self.stop_at {
            self.flag.as_ref().unwrap().store(true, Ordering::SeqCst);
        }
    }
}

fn trains_with_every_strategy<M>(kind: &Kind<M>, names: &[&str])
where
    M: TaskModel<B, Batch = ImageBatch>
        + burn::module::AutodiffModule<B>
        + AdapterModel<Spec = LoraSpec>
        + 'static,
    M::InnerModule: TaskModel<Inner, Batch = ImageBatch>,
{
    let _serial = backend_rng_lock();
    for &name in names {
        let mut t = trainer(kind, 1, vec![strategy(kind, name)], 0);
        let before = named_tensors(t.model());
        let mut steps = Steps::new();
        assert_eq!(t.run(&mut steps).unwrap(), RunOutcome::Finished, "{name}");
        let total: u64 = STEPS.iter().sum();
        assert_eq!(
            steps.records.len() as u64,
            total,
            "{name}: one record a step"
        );
        for r in &steps.records {
            assert!(
                r.loss.is_finite() && r.total_loss.is_finite() && r.grad_norm.is_finite(),
                "{name}: step {} loss {} total {} grad norm {}",
                r.global_step,
                r.loss,
                r.total_loss,
                r.grad_norm
            );
            assert!(!r.skipped, "{name}: step {} skipped", r.global_step);
        }
        let state = t.state();
        assert_eq!(state.global_step, total, "{name}");
        assert_eq!(state.tokens_seen, total * 4 * 2, "{name}: units are images");
        let initial = state.initial_scores.as_ref().expect("initial scores");
        assert_eq!(initial.len(), STEPS.len());
        assert_eq!(
            state.matrix.len(),
            STEPS.len(),
            "{name}: one row per experience"
        );
        for row in &state.matrix {
            assert_eq!(row.len(), STEPS.len(), "{name}");
            for s in row {
                assert!(s.loss.is_finite() && s.metric.is_finite(), "{name}: {s:?}");
                assert_eq!(s.count, 4, "{name}");
            }
        }
        assert!(
            named_tensors(t.model()) != before,
            "{name}: the weights must have moved"
        );
        // The matrix summary accepts what the trainer produced.
        let names: Vec<String> = initial.iter().map(|s| s.experience.clone()).collect();
        let metric = |row: &[EvalScores]| row.iter().map(|s| s.metric).collect::<Vec<f64>>();
        let rows: Vec<Vec<f64>> = state.matrix.iter().map(|r| metric(r)).collect();
        let summary = cpt_eval::summarize("loss", true, &names, &metric(initial), &rows);
        assert!(
            summary.final_average.is_finite() && summary.backward_transfer.is_finite(),
            "{name}: {summary:?}"
        );
    }
}

#[test]
fn every_strategy_trains_a_vit_classifier() {
    trains_with_every_strategy(&vit_kind(), &ALL);
}

#[test]
fn every_strategy_trains_clip() {
    trains_with_every_strategy(&clip_kind(), &ALL);
}

#[test]
fn vit_mae_trains_with_naive_replay_ewc_distill_and_lora() {
    trains_with_every_strategy(&mae_kind(), &["naive", "replay", "ewc", "distill", "lora"]);
}

/// Distillation with a reference stream and a feature-only term (MAE has no logits: its term is
/// the feature distance alone), on every model.
#[test]
fn distillation_on_a_reference_stream_trains_every_model() {
    fn run<M>(kind: &Kind<M>)
    where
        M: TaskModel<B, Batch = ImageBatch> + burn::module::AutodiffModule<B> + 'static,
        M::InnerModule: TaskModel<Inner, Batch = ImageBatch>,
    {
        let _serial = backend_rng_lock();
        let mut t = trainer(kind, 1, vec![distill::<M>(kind.captions, true)], 0);
        let mut steps = Steps::new();
        assert_eq!(t.run(&mut steps).unwrap(), RunOutcome::Finished);
        for r in &steps.records {
            assert!(r.total_loss.is_finite());
            if r.experience == 0 {
                assert_eq!(r.total_loss, r.loss, "no teacher in the first experience");
            }
        }
        // From the second experience on the student drifts from its teacher: the term is
        // positive (the first step starts at the teacher, so look at the last).
        let last = steps.records.last().unwrap();
        assert!(
            last.total_loss > last.loss,
            "a distillation term: {} vs {}",
            last.total_loss,
            last.loss
        );
    }
    run(&vit_kind());
    run(&clip_kind());
    run(&mae_kind());
}

// ---------------------------------------------------------------------------------------------
// Mechanisms.

fn lora_leaves_the_base_bit_identical<M>(kind: &Kind<M>, adapters: usize)
where
    M: TaskModel<B, Batch = ImageBatch>
        + burn::module::AutodiffModule<B>
        + AdapterModel<Spec = LoraSpec>
        + 'static,
    M::InnerModule: TaskModel<Inner, Batch = ImageBatch>,
{
    let _serial = backend_rng_lock();
    let base = named_tensors(&(kind.model)(1));
    let mut t = trainer(kind, 1, vec![strategy(kind, "lora")], 0);
    assert_eq!(t.run(&mut SilentObserver).unwrap(), RunOutcome::Finished);
    let after = named_tensors(t.model());
    for (path, value) in &base {
        assert!(after[path] == *value, "base weight {path} moved");
    }
    let lora_b: Vec<&String> = after.keys().filter(|k| k.ends_with(".lora_b")).collect();
    assert_eq!(lora_b.len(), adapters, "{lora_b:?}");
    assert_eq!(after.len(), base.len() + 2 * adapters);
    for path in lora_b {
        assert!(
            after[path].values.iter().any(|&v| v != 0.0),
            "{path} did not train"
        );
    }
}

#[test]
fn lora_on_vit_trains_only_adapters_and_leaves_the_base_bit_identical() {
    // query and value in 2 layers.
    lora_leaves_the_base_bit_identical(&vit_kind(), 2 * 2);
}

#[test]
fn lora_on_clip_and_vit_mae_leaves_the_base_bit_identical() {
    // q and v in 1 text and 1 vision layer.
    lora_leaves_the_base_bit_identical(&clip_kind(), 2 * 2);
    // query and value in 1 encoder and 1 decoder layer.
    lora_leaves_the_base_bit_identical(&mae_kind(), 2 * 2);
}

/// Training batches as items, each with the experience it was drawn in.
type BatchRecords = Arc<Mutex<Vec<(usize, Vec<ImageItem>)>>>;

/// Records every training batch the trainer builds (penalty sees the whole batch), with the
/// experience it belongs to.
struct BatchLog {
    experience: usize,
    batches: BatchRecords,
}

impl<M: TaskModel<B, Batch = ImageBatch>> Strategy<B, M> for BatchLog {
    fn name(&self) -> &str {
        "batch_log"
    }
    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> cpt_continual::Result<()> {
        self.experience = cx.experience;
        Ok(())
    }
    fn penalty(
        &self,
        _model: &M,
        batch: &ImageBatch,
        _out: &StepOutput<B>,
    ) -> Option<burn::tensor::Tensor<B, 1>> {
        use cpt_core::Batch;
        self.batches
            .lock()
            .unwrap()
            .push((self.experience, batch.clone().into_items()));
        None
    }
}

fn replay_mixes_earlier_items_into_later_batches<M>(kind: &Kind<M>)
where
    M: TaskModel<B, Batch = ImageBatch>
        + burn::module::AutodiffModule<B>
        + AdapterModel<Spec = LoraSpec>
        + 'static,
    M::InnerModule: TaskModel<Inner, Batch = ImageBatch>,
{
    let _serial = backend_rng_lock();
    let log = Arc::new(Mutex::new(Vec::new()));
    let strategies: Strategies<M> = vec![
        strategy(kind, "replay"),
        Box::new(BatchLog {
            experience: 0,
            batches: log.clone(),
        }),
    ];
    let mut t = trainer(kind, 1, strategies, 0);
    assert_eq!(t.run(&mut SilentObserver).unwrap(), RunOutcome::Finished);
    let log = log.lock().unwrap();
    assert_eq!(
        log.len() as u64,
        2 * STEPS.iter().sum::<u64>(),
        "micro-batches"
    );
    // Batch 0 is all fresh (the buffer starts empty); later batches are half fresh.
    let fresh = |j: usize| {
        if j == 0 {
            &log[0].1[..]
        } else {
            &log[j].1[..2]
        }
    };
    let mut replayed_from_first = 0;
    for (i, (e, items)) in log.iter().enumerate() {
        assert_eq!(items.len(), 4, "full batches");
        let own = |item: &ImageItem| item.label / CLASSES == *e as i64;
        if i == 0 {
            assert!(items.iter().all(own), "an empty buffer replays nothing");
            continue;
        }
        // Half of every later batch is fresh (this experience), half replayed (the past).
        assert!(items[..2].iter().all(own), "fresh items first: batch {i}");
        for item in &items[2..] {
            assert!(
                (0..i).any(|j| fresh(j).contains(item)),
                "batch {i}: a replayed item is a fresh item of an earlier batch, bit for bit"
            );
        }
        if *e == 1 {
            replayed_from_first += items[2..].iter().filter(|it| it.label < CLASSES).count();
        }
    }
    assert!(
        replayed_from_first > 0,
        "the second experience's batches replay first-experience images"
    );
}

#[test]
fn replay_puts_earlier_experience_images_in_later_batches() {
    replay_mixes_earlier_items_into_later_batches(&vit_kind());
    replay_mixes_earlier_items_into_later_batches(&clip_kind());
    replay_mixes_earlier_items_into_later_batches(&mae_kind());
}

// ---------------------------------------------------------------------------------------------
// Resume.

fn bits<M: burn::module::Module<B>>(model: &M) -> Vec<(String, Vec<u32>)> {
    named_tensors(model)
        .into_iter()
        .map(|(k, t)| (k, t.values.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn matrix_bits<M>(trainer: &ContinualTrainer<B, M>) -> Vec<Vec<(u64, u64)>>
where
    M: TaskModel<B> + burn::module::AutodiffModule<B>,
{
    trainer
        .state()
        .matrix
        .iter()
        .map(|row| {
            row.iter()
                .map(|s| (s.loss.to_bits(), s.metric.to_bits()))
                .collect()
        })
        .collect()
}

/// A run stopped after global step `stop_at` and resumed (into a model built from another
/// seed) equals an uninterrupted run: per-step losses, eval matrix and final weights.
fn resume_matches_uninterrupted<M>(kind: &Kind<M>, strategies: fn() -> Strategies<M>, stop_at: u64)
where
    M: TaskModel<B, Batch = ImageBatch> + burn::module::AutodiffModule<B>,
{
    let mut reference = trainer(kind, 1, strategies(), 0);
    let mut seen = Steps::new();
    assert_eq!(reference.run(&mut seen).unwrap(), RunOutcome::Finished);

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(kind, 1, strategies(), 3).with_checkpoints(dir.path().to_path_buf());
    let mut cut = Steps::stopping(stop_at, first.stop_flag());
    assert!(matches!(
        first.run(&mut cut).unwrap(),
        RunOutcome::Interrupted { .. }
    ));
    drop(first);

    let mut second = trainer(kind, 99, strategies(), 3).with_checkpoints(dir.path().to_path_buf());
    let checkpoint = latest_checkpoint(dir.path())
        .unwrap()
        .expect("a checkpoint was written");
    assert_eq!(checkpoint.manifest.step, stop_at);
    second.resume(&checkpoint).unwrap();
    let mut rest = Steps::new();
    assert_eq!(second.run(&mut rest).unwrap(), RunOutcome::Finished);

    let mut joined = cut.loss_bits();
    joined.extend(rest.loss_bits());
    assert_eq!(
        joined,
        seen.loss_bits(),
        "per-step losses differ (cut at {stop_at})"
    );
    assert_eq!(
        matrix_bits(&second),
        matrix_bits(&reference),
        "eval matrix differs (cut at {stop_at})"
    );
    assert_eq!(
        bits(second.model()),
        bits(reference.model()),
        "final weights differ (cut at {stop_at})"
    );
    assert_eq!(second.state().tokens_seen, reference.state().tokens_seen);
}

fn vit_lora(mode: LoraMode) -> Box<dyn Strategy<B, Vit>> {
    Box::new(Lora::<B, Vit>::new(
        lora_spec(&["query", "value", "classifier"], 0.1),
        mode,
        11,
    ))
}

/// Replay + EWC + LoRA with adapter dropout + distillation (logit and feature terms, on a
/// reference stream). LoRA comes before distillation: see
/// `distill_listed_before_continued_lora_resumes_bit_identically` for the other order.
fn vit_stack(mode: LoraMode) -> Strategies<Vit> {
    vec![
        Box::new(Replay::<ImageItem>::new(6, 0.5, 7)),
        Box::new(Ewc::<B>::new(ewc(FisherKind::Empirical))),
        vit_lora(mode),
        distill::<Vit>(false, true),
    ]
}

#[test]
fn vit_replay_ewc_distill_lora_resume_bit_identically_mid_experience() {
    let _serial = backend_rng_lock();
    resume_matches_uninterrupted(&vit_kind(), || vit_stack(LoraMode::Continue), STEPS[0] + 1);
    resume_matches_uninterrupted(&vit_kind(), || vit_stack(LoraMode::Merge), STEPS[0] + 1);
    resume_matches_uninterrupted(&vit_kind(), || vit_stack(LoraMode::Continue), 2);
}

#[test]
fn vit_replay_ewc_distill_lora_resume_bit_identically_at_a_boundary() {
    let _serial = backend_rng_lock();
    resume_matches_uninterrupted(&vit_kind(), || vit_stack(LoraMode::Continue), STEPS[0]);
    resume_matches_uninterrupted(&vit_kind(), || vit_stack(LoraMode::Merge), STEPS[0]);
}

/// MAE draws its masks from the backend RNG, in steps and in the EWC Fisher estimate at an
/// experience end.
fn mae_stack() -> Strategies<Mae> {
    vec![
        Box::new(Replay::<ImageItem>::new(6, 0.5, 7)),
        Box::new(Ewc::<B>::new(ewc(FisherKind::Empirical))),
    ]
}

#[test]
fn vit_mae_replay_resumes_bit_identically() {
    let _serial = backend_rng_lock();
    resume_matches_uninterrupted(&mae_kind(), || vec![strategy(&mae_kind(), "replay")], 2);
    resume_matches_uninterrupted(&mae_kind(), mae_stack, STEPS[0] + 1);
    resume_matches_uninterrupted(&mae_kind(), mae_stack, STEPS[0]);
}

// ---------------------------------------------------------------------------------------------
// Known library bugs, reproduced (ignored until fixed in the library).

/// Distillation listed *before* a continued LoRA: the teacher snapshot taken at the second
/// experience's start includes the adapters, but on resume `Distill::rebuild_model` runs before
/// `Lora::rebuild_model` has re-attached them, so `weights::replace` silently drops the
/// teacher's adapter weights and the restored teacher is the bare base model. The losses of the
/// resumed run diverge from the first step with a distillation term after the cut.
#[test]
#[ignore = "library bug: Distill restores its teacher on the structure before later strategies rebuild it"]
fn distill_listed_before_continued_lora_resumes_bit_identically() {
    let _serial = backend_rng_lock();
    fn stack() -> Strategies<Vit> {
        vec![distill::<Vit>(false, false), vit_lora(LoraMode::Continue)]
    }
    resume_matches_uninterrupted(&vit_kind(), stack, STEPS[0] + 1);
}

/// At the first step of an experience the student is its teacher, so a distillation term must
/// vanish. ViT-MAE's `forward_step` draws a fresh random mask per call, so the teacher's pass in
/// `Distill::penalty` sees other patches than the student's and the feature term compares
/// features of different inputs: it is positive even for identical weights.
#[test]
#[ignore = "library bug: MAE feature distillation compares differently masked passes"]
fn mae_feature_distillation_vanishes_when_the_student_is_the_teacher() {
    let _serial = backend_rng_lock();
    let kind = mae_kind();
    for reference in [false, true] {
        let mut t = trainer(&kind, 1, vec![distill::<Mae>(false, reference)], 0);
        let mut steps = Steps::new();
        assert_eq!(t.run(&mut steps).unwrap(), RunOutcome::Finished);
        let first = &steps.records[STEPS[0] as usize];
        assert_eq!((first.experience, first.step), (1, 1));
        assert!(
            (first.total_loss - first.loss).abs() < 1e-6,
            "reference {reference}: term {} at the teacher",
            first.total_loss - first.loss
        );
    }
}

/// The same check passes for ViT (deterministic forward): the first term of the second
/// experience is zero up to rounding.
#[test]
fn vit_distillation_vanishes_when_the_student_is_the_teacher() {
    let _serial = backend_rng_lock();
    let kind = vit_kind();
    for reference in [false, true] {
        let mut t = trainer(&kind, 1, vec![distill::<Vit>(false, reference)], 0);
        let mut steps = Steps::new();
        assert_eq!(t.run(&mut steps).unwrap(), RunOutcome::Finished);
        let first = &steps.records[STEPS[0] as usize];
        assert_eq!((first.experience, first.step), (1, 1));
        assert!(
            (first.total_loss - first.loss).abs() < 1e-6,
            "reference {reference}: term {} at the teacher",
            first.total_loss - first.loss
        );
    }
}
