//! cpt-continual: the continual trainer and the strategies that fight forgetting.
//!
//! The trainer knows models only through [`cpt_core::TaskModel`], data only through
//! [`cpt_core::ItemSource`], and evaluation only through [`cpt_core::Evaluator`]; strategies act
//! through the hooks of [`Strategy`].

pub mod distributed;
pub mod error;
pub mod optim;
pub mod registry;
pub mod strategies;
pub mod strategy;
pub mod trainer;
pub mod weights;

pub use error::{ContinualError, Result};
pub use optim::{AdamW, AdamWConfig, GradStore};
pub use registry::{
    BuildContext, ContinualModel, STRATEGIES, StrategySettings, build_strategies, resolve_settings,
    settings,
};
pub use strategy::{Context, InnerDevice, ItemOf, Strategy, StrategyState};
pub use trainer::{
    ContinualTrainer, Experience, NonFinitePolicy, REPLAY_SOURCE, RunObserver, RunOutcome,
    SilentObserver, SpikeGuard, StageSetup, TrainerSettings, TrainerState,
};
