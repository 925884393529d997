//! cpt-models: one model per file with its config beside it, built from burn-nn pieces, plus
//! the Hugging Face folder format of each. Models know nothing of strategies, data files or the
//! command line.

pub mod error;
pub mod generate;
pub mod hf_llama;
pub mod linear;
pub mod llama;

pub use error::{ModelError, Result};
pub use llama::{LlamaConfig, LlamaForCausalLM};
