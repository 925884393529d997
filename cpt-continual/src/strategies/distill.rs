//! Distillation from the model as it was when the experience started ("Learning without
//! Forgetting", 2016; "Distilling the Knowledge in a Neural Network", 2015): a frozen teacher
//! snapshot, and a loss term `α · T² · KL(teacher_T ‖ student_T)` on the current batch.

use crate::error::{ContinualError, Result};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{from_host, replace, to_host};
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use cpt_core::{NamedTensors, StepOutput, TaskModel};
use std::cell::RefCell;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Logit distillation toward a snapshot taken at the start of each experience.
pub struct Distill<B: AutodiffBackend, M: AutodiffModule<B>> {
    alpha: f64,
    temperature: f64,
    teacher: RefCell<Option<M::InnerModule>>,
    /// Teacher weights restored from a checkpoint, turned into a module at first use (loading
    /// needs a model of the right shape, which only the hooks see).
    pending: RefCell<Option<crate::weights::Weights<B>>>,
}

// The trainer drives strategies from one thread; the RefCells are never shared.
unsafe impl<B: AutodiffBackend, M: AutodiffModule<B>> Send for Distill<B, M> {}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Distill<B, M> {
    /// Weight `alpha` and softmax temperature `temperature`.
    pub fn new(alpha: f64, temperature: f64) -> Self {
        Self {
            alpha,
            temperature,
            teacher: RefCell::new(None),
            pending: RefCell::new(None),
        }
    }

    /// The teacher's weights, if a teacher exists (for tests and checkpoints).
    pub fn teacher_weights(&self) -> Option<NamedTensors> {
        self.teacher
            .borrow()
            .as_ref()
            .map(cpt_core::params::named_tensors)
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
        if let Some(weights) = self.pending.borrow_mut().take() {
            *self.teacher.borrow_mut() = Some(replace::<B, M>(model.clone(), &weights).valid());
        }
        let teacher = self.teacher.borrow();
        let teacher = teacher.as_ref()?;
        let student_logits = out.logits.clone()?;
        let teacher_logits = teacher.forward_step(batch).logits?;
        let loss = kd_loss(
            student_logits,
            Tensor::from_inner(teacher_logits),
            self.temperature,
        );
        Some(loss.mul_scalar(self.alpha))
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
        StrategyState {
            json: serde_json::json!({ "teacher": !tensors.is_empty() }),
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
        Ok(())
    }
}
