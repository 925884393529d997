//! cpt-core: the vocabulary every cpt crate shares — the model trait, batch and output types, the
//! run configuration, learning-rate schedules, checkpoints, a seeded RNG and metric records.

pub mod atomic;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fused;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod params;
pub mod precision;
pub mod recipes;
pub mod reservoir;
pub mod rng;
pub mod row_filter;
pub mod schedule;
pub mod tensor_file;

pub use batch::{ImageBatch, ImageItem, TokenBatch, TokenSequence};
pub use config::RunConfig;
pub use error::{CoreError, Result};
pub use fused::{FusedOps, TrainBackend};
pub use metrics::{EvalPoint, EvalRecord, StepRecord};
pub use model::{
    ADAPTER_MARKER, AdapterModel, Batch, EvalScores, Evaluator, ImageClassifier, ImageEncoder,
    ImageTextModel, ItemSource, LoraSpec, MaskedImageModel, StepOutput, TaskModel,
};
pub use params::{HostTensor, NamedTensors};
pub use precision::{LossScaler, LossScalerConfig, Precision};
pub use rng::SplitMix64;
pub use schedule::{ScheduleConfig, ScheduleKind};
