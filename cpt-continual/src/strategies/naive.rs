//! Naive continual training: plain fine-tuning on each experience in turn, the baseline every
//! other strategy is measured against.

use crate::strategy::Strategy;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::TaskModel;

/// Plain fine-tuning: every hook keeps its neutral default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Naive;

impl<B: AutodiffBackend, M: TaskModel<B>> Strategy<B, M> for Naive {
    fn name(&self) -> &str {
        "naive"
    }
}
