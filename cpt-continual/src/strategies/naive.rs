//! Naive continual training: plain fine-tuning on each experience in turn, the baseline every
//! other strategy is measured against.

use crate::error::Result;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
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

/// `naive` has no settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaiveSettings {}

impl StrategySettings for NaiveSettings {
    const NAME: &'static str = "naive";

    fn build<B, M>(self, _cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(Naive))
    }
}
