//! The strategies, one per file.

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

pub use distill::{Distill, DistillConfig, FeatureDistance, feature_loss, kd_loss};
pub use ema::Ema;
pub use ewc::{Ewc, EwcConfig, FisherKind, estimate_fisher};
pub use lora::{Lora, LoraMode};
pub use merge::Merge;
pub use naive::Naive;
pub use replay::Replay;
pub use slow_learner::{SlowLearner, glob_match};
pub use weight_ensemble::WeightEnsemble;
pub use wise::{Wise, interpolate};
