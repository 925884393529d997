//! The strategies, one per file: each with its settings type (the `[name]` table of a run
//! config), registered in [`crate::registry`].

mod distill;
mod ema;
mod ewc;
mod lora;
mod merge;
mod naive;
mod replay;
mod slow_learner;
mod weight_ensemble;
mod wise;

pub use distill::{
    Distill, DistillConfig, DistillSettings, FeatureDistance, feature_loss, kd_loss,
};
pub use ema::{Ema, EmaSettings};
pub use ewc::{Ewc, EwcConfig, EwcSettings, FisherKind, L2Settings, estimate_fisher};
pub use lora::{Lora, LoraMode, LoraSettings};
pub use merge::{Merge, MergeSettings};
pub use naive::{Naive, NaiveSettings};
pub use replay::{Replay, ReplaySettings};
pub use slow_learner::{SlowLearner, SlowLearnerSettings, glob_match};
pub use weight_ensemble::{WeightEnsemble, WeightEnsembleSettings};
pub use wise::{Wise, WiseSettings, interpolate};
