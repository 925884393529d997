//! The strategies, one per file.

mod naive;
mod replay;

pub use naive::Naive;
pub use replay::Replay;
