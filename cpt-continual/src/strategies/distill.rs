//! Distillation from the model as it was when the experience started ("Learning without
//! Forgetting", 2016; "Distilling the Knowledge in a Neural Network", 2015), and feature
//! distillation on a reference source (ZSCL, "Preventing Zero-Shot Transfer Degradation in
//! Continual Learning of Vision-Language Models", 2023).
//!
//! A frozen teacher snapshot is taken at each experience start (from the second on). The loss
//! gains `α · T² · KL(teacher_T ‖ student_T)` on the logits and, optionally,
//! `β · d(teacher features, student features)` with `d` the mean squared (L2) or cosine distance
//! of pooled features. Both are computed on the current batch, or on a batch drawn from a
//! reference source (general data, earlier experiences) when one is given.

use crate::error::{ContinualError, Result};
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, ItemOf, Strategy, StrategyState};
use crate::weights::{Weights, from_host, replace, to_host};
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use cpt_core::{Batch, ItemSource, NamedTensors, StepOutput, TaskModel};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A stream of the model's training items.
type Source<B, M> = Box<dyn ItemSource<ItemOf<B, M>>>;

/// How pooled features are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureDistance {
    /// Mean squared difference.
    L2,
    /// One minus cosine similarity, averaged over rows.
    Cosine,
}

/// Distillation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillConfig {
    /// Weight α of the logit term (0 disables it).
    pub alpha: f64,
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight β of the feature term (0 disables it).
    pub feature_weight: f64,
    /// Feature distance.
    pub feature_distance: FeatureDistance,
    /// Reference batches' size (used when a reference source is given).
    pub reference_batch_size: usize,
}

/// Distillation toward a snapshot taken at the start of each experience.
pub struct Distill<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> {
    config: DistillConfig,
    teacher: RefCell<Option<M::InnerModule>>,
    /// Teacher weights restored from a checkpoint, turned into a module on the model's
    /// structure in [`Strategy::rebuild_model`].
    pending: RefCell<Option<Weights<B>>>,
    reference: Option<RefCell<Source<B, M>>>,
}

// The trainer drives strategies from one thread; the RefCells are never shared.
unsafe impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Send for Distill<B, M> {}

impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Distill<B, M> {
    /// Logit distillation with weight `alpha` at temperature `temperature`, on current batches.
    pub fn new(alpha: f64, temperature: f64) -> Self {
        Self::with_config(
            DistillConfig {
                alpha,
                temperature,
                feature_weight: 0.0,
                feature_distance: FeatureDistance::L2,
                reference_batch_size: 0,
            },
            None,
        )
    }

    /// Full settings; `reference` supplies the batches distilled on instead of the current one.
    pub fn with_config(
        config: DistillConfig,
        reference: Option<Box<dyn ItemSource<ItemOf<B, M>>>>,
    ) -> Self {
        Self {
            config,
            teacher: RefCell::new(None),
            pending: RefCell::new(None),
            reference: reference.map(RefCell::new),
        }
    }

    /// The teacher's weights, if a teacher exists (for tests and checkpoints).
    pub fn teacher_weights(&self) -> Option<NamedTensors> {
        self.teacher
            .borrow()
            .as_ref()
            .map(cpt_core::params::named_tensors)
    }

    fn reference_batch(&self) -> Option<M::Batch> {
        let source = self.reference.as_ref()?;
        let mut source = source.borrow_mut();
        let size = self.config.reference_batch_size.max(1);
        let items: cpt_core::Result<Vec<_>> = (0..size).map(|_| source.next_item()).collect();
        match items {
            Ok(items) => Some(M::Batch::from_items(items)),
            Err(e) => {
                tracing::error!("reference data for distillation failed, skipping the term: {e}");
                None
            }
        }
    }
}

/// `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over positions.
///
/// # Shapes
/// `student`, `teacher`: `[batch, positions, classes]` → `[1]`.
pub fn kd_loss<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, positions, _] = student.dims();
    let log_student = log_softmax(student.div_scalar(temperature), 2);
    let log_teacher = log_softmax(teacher.clone().div_scalar(temperature), 2);
    let teacher_probs = softmax(teacher.div_scalar(temperature), 2);
    let kl = (teacher_probs * (log_teacher - log_student)).sum();
    kl.div_scalar((batch * positions) as f64)
        .mul_scalar(temperature * temperature)
}

/// Distance between pooled features `[batch, width]` → `[1]`.
pub fn feature_loss<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    distance: FeatureDistance,
) -> Tensor<B, 1> {
    match distance {
        FeatureDistance::L2 => (student - teacher).square().mean(),
        FeatureDistance::Cosine => {
            let dot = (student.clone() * teacher.clone()).sum_dim(1);
            let norms = (student.square().sum_dim(1) * teacher.square().sum_dim(1))
                .sqrt()
                .add_scalar(1e-12);
            (dot / norms).mean().neg().add_scalar(1.0)
        }
    }
}

impl<B, M> Strategy<B, M> for Distill<B, M>
where
    B: AutodiffBackend,
    M: TaskModel<B> + AutodiffModule<B>,
    M::InnerModule: TaskModel<Inner<B>, Batch = M::Batch>,
{
    fn name(&self) -> &str {
        "distill"
    }

    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        // No teacher for the first experience: there is nothing to preserve yet.
        if cx.experience > 0 {
            *self.teacher.get_mut() = Some(cx.model.valid());
            *self.pending.get_mut() = None;
        }
        Ok(())
    }

    fn rebuild_model(&self, model: M) -> M {
        // Build the restored teacher on the model's structure as it was when the teacher was
        // taken: strategies rebuild in config order, so adapters added by a later strategy are
        // not there yet, exactly as at the snapshot.
        if let Some(weights) = self.pending.borrow_mut().take() {
            *self.teacher.borrow_mut() = Some(replace::<B, M>(model.clone(), &weights).valid());
        }
        model
    }

    fn penalty(&self, model: &M, batch: &M::Batch, out: &StepOutput<B>) -> Option<Tensor<B, 1>> {
        let teacher = self.teacher.borrow();
        let teacher = teacher.as_ref()?;
        let reference = self.reference_batch();
        let (student, batch) = match &reference {
            Some(reference) => (model.forward_step(reference), reference),
            None => (out.clone(), batch),
        };
        let taught = teacher.forward_step(batch);
        let c = &self.config;
        let mut total: Option<Tensor<B, 1>> = None;
        let mut add = |term: Tensor<B, 1>| {
            total = Some(match total.take() {
                Some(t) => t + term,
                None => term,
            })
        };
        if c.alpha > 0.0
            && let (Some(s), Some(t)) = (student.logits.clone(), taught.logits.clone())
        {
            add(kd_loss(s, Tensor::from_inner(t), c.temperature).mul_scalar(c.alpha));
        }
        if c.feature_weight > 0.0
            && let (Some(s), Some(t)) = (student.features.clone(), taught.features.clone())
        {
            add(feature_loss(s, Tensor::from_inner(t), c.feature_distance)
                .mul_scalar(c.feature_weight));
        }
        total
    }

    fn state(&self) -> StrategyState {
        let mut tensors = NamedTensors::new();
        if let Some(teacher) = self.teacher.borrow().as_ref() {
            tensors = cpt_core::params::named_tensors(teacher)
                .into_iter()
                .map(|(path, t)| (format!("teacher.{path}"), t))
                .collect();
        } else if let Some(pending) = self.pending.borrow().as_ref() {
            to_host::<B>(pending, "teacher", &mut tensors);
        }
        let reference = self.reference.as_ref().map(|r| r.borrow().cursor());
        StrategyState {
            json: serde_json::json!({ "teacher": !tensors.is_empty(), "reference": reference }),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        let has = state
            .json
            .get("teacher")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| ContinualError::Strategy {
                strategy: "distill".into(),
                message: "checkpoint lacks `teacher`".into(),
            })?;
        *self.teacher.get_mut() = None;
        *self.pending.get_mut() = has.then(|| from_host::<B>(&state.tensors, "teacher", device));
        if let (Some(source), Some(cursor)) = (
            &self.reference,
            state.json.get("reference").filter(|c| !c.is_null()),
        ) {
            source.borrow_mut().seek(cursor)?;
        }
        Ok(())
    }
}

/// The `[distill]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSettings {
    /// Weight α of the logit (KL) term; 0 disables it.
    pub alpha: f64,
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight β of the pooled-feature term (ZSCL-style); 0 disables it.
    pub feature_weight: f64,
    /// Feature distance: `l2` or `cosine`.
    pub feature_distance: FeatureDistance,
    /// Reference data (Parquet files or globs) to distill on instead of the current batch; the
    /// architecture reads it into the items its model trains on.
    pub reference: Vec<String>,
    /// Items per reference batch.
    pub reference_batch_size: usize,
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            temperature: 2.0,
            feature_weight: 0.0,
            feature_distance: FeatureDistance::L2,
            reference: Vec::new(),
            reference_batch_size: 4,
        }
    }
}

impl StrategySettings for DistillSettings {
    const NAME: &'static str = "distill";

    fn build<B, M>(self, cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        let config = DistillConfig {
            alpha: self.alpha,
            temperature: self.temperature,
            feature_weight: self.feature_weight,
            feature_distance: self.feature_distance,
            reference_batch_size: self.reference_batch_size,
        };
        // One distill strategy per run takes the reference stream.
        let reference = cx.reference.take();
        Ok(Box::new(Distill::<B, M>::with_config(config, reference)))
    }
}
