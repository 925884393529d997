//! cpt-models: one model per file with its config beside it, built from burn-nn pieces.
//! Models know nothing of strategies, data files or the command line.

pub mod llama;

pub use llama::{LlamaConfig, LlamaForCausalLM};
