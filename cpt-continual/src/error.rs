//! The error type of cpt-continual.

use cpt_core::CoreError;

/// Errors of the continual trainer and its strategies.
#[derive(Debug, thiserror::Error)]
pub enum ContinualError {
    /// Config, checkpoint, file or data error from below.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The loss or gradient norm of a step was NaN or infinite; the update was not applied.
    #[error(
        "non-finite {what} ({value}) at experience `{experience}` step {step}: update not applied"
    )]
    NonFinite {
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The offending value.
        value: f64,
        /// Experience name.
        experience: String,
        /// Step inside the experience.
        step: u64,
    },
    /// More steps were skipped for non-finite values than the policy allows.
    #[error("more than {limit} steps skipped for non-finite values; the last: {last}")]
    TooManySkipped {
        /// The configured cap.
        limit: u64,
        /// The fault that crossed it.
        last: Box<ContinualError>,
    },
    /// A step's loss jumped far above the running mean (loss-spike guard).
    #[error("{0}")]
    LossSpike(String),
    /// A strategy could not run or restore its state.
    #[error("strategy `{strategy}`: {message}")]
    Strategy {
        /// Strategy name.
        strategy: String,
        /// What went wrong.
        message: String,
    },
    /// A checkpoint does not fit this run.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The data-parallel engine failed or lost a peer.
    #[error("data parallel: {0}")]
    Collective(String),
}

impl ContinualError {
    /// A config value that is out of range or unknown, naming its key; the message is kept on
    /// one line (serde's can span several).
    pub fn invalid(key: impl Into<String>, message: &str) -> Self {
        Self::Core(CoreError::Invalid {
            key: key.into(),
            message: message.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }
}

/// Result alias for cpt-continual.
pub type Result<T> = std::result::Result<T, ContinualError>;
