//! Experience replay: a reservoir buffer of past items mixed into every batch ("Experience
//! Replay for Continual Learning", 2019; replay of general data in continual pre-training, e.g.
//! "Simple and Scalable Strategies to Continually Pre-train Large Language Models", 2024).

use crate::error::{ContinualError, Result};
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{InnerDevice, ItemOf, Strategy, StrategyState};
use burn::tensor::backend::AutodiffBackend;
use cpt_core::reservoir::Reservoir;
use cpt_core::{Batch, TaskModel};

/// Replay: once the buffer holds data, `round(ratio × batch_size)` items of each batch come
/// from it (drawn uniformly); every fresh item is offered to the buffer afterwards, so a batch
/// never replays itself.
pub struct Replay<I> {
    ratio: f64,
    buffer: Reservoir<I>,
}

impl<I: Clone> Replay<I> {
    /// A buffer of `capacity` items, replaying `ratio` of each batch, seeded by `seed`.
    pub fn new(capacity: usize, ratio: f64, seed: u64) -> Self {
        Self {
            ratio,
            buffer: Reservoir::new(capacity, seed),
        }
    }

    /// The buffer.
    pub fn buffer(&self) -> &Reservoir<I> {
        &self.buffer
    }
}

impl<B, M> Strategy<B, M> for Replay<ItemOf<B, M>>
where
    B: AutodiffBackend,
    M: TaskModel<B>,
{
    fn name(&self) -> &str {
        "replay"
    }

    fn reserved_slots(&self, batch_size: usize) -> usize {
        if self.buffer.is_empty() {
            return 0;
        }
        // At least one fresh item per batch, so the stream always advances.
        ((self.ratio * batch_size as f64).round() as usize).min(batch_size.saturating_sub(1))
    }

    fn extend_batch(
        &mut self,
        batch_size: usize,
        fresh: &[ItemOf<B, M>],
        batch: &mut Vec<ItemOf<B, M>>,
    ) {
        let slots = <Self as Strategy<B, M>>::reserved_slots(self, batch_size);
        if let Some(like) = fresh.first() {
            for _ in 0..slots {
                let Some(item) = self.buffer.sample(1).pop() else {
                    break;
                };
                // Items of a stage with another shape (a longer `seq_len`) are fitted to this
                // one's; items that fit are kept as drawn, with no further draw.
                let mut more = || self.buffer.sample(1).pop().expect("the buffer holds items");
                batch.push(<M::Batch as Batch>::fit(item, like, &mut more));
            }
        }
        fresh.iter().for_each(|item| self.buffer.offer(item));
    }

    fn state(&self) -> StrategyState {
        StrategyState {
            json: serde_json::to_value(&self.buffer).expect("a reservoir serialises"),
            tensors: Default::default(),
        }
    }

    fn load_state(&mut self, state: StrategyState, _device: &InnerDevice<B>) -> Result<()> {
        self.buffer = serde_json::from_value(state.json).map_err(|e| ContinualError::Strategy {
            strategy: "replay".into(),
            message: format!("checkpointed buffer is malformed: {e}"),
        })?;
        Ok(())
    }
}

/// The `[replay]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySettings {
    /// Buffer size in items (reservoir sampling over everything seen).
    pub capacity: usize,
    /// Fraction of each batch drawn from the buffer once it holds data.
    pub ratio: f64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            capacity: 1024,
            ratio: 0.25,
        }
    }
}

impl StrategySettings for ReplaySettings {
    const NAME: &'static str = "replay";

    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(("ratio", "must lie in [0, 1)".into()));
        }
        Ok(())
    }

    fn build<B, M>(self, cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(Replay::new(self.capacity, self.ratio, cx.seed())))
    }
}
