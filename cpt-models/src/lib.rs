//! cpt-models: one model per file with its config beside it, built from burn-nn pieces, plus
//! the Hugging Face folder format of each. Models know nothing of strategies, data files or the
//! command line.

pub mod adapters;
pub mod blocks;
pub mod clip;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod grow;
pub mod hf_clip;
pub mod hf_folder;
pub mod hf_llama;
pub mod hf_vit;
pub mod linear;
pub mod llama;
pub mod resize;
pub mod rope;
pub mod vit;
pub mod vit_mae;

#[cfg(test)]
mod tiny;

pub use clip::{CLIP_LORA_TARGETS, ClipConfig, ClipModel};
pub use error::{ModelError, Result};
pub use llama::{LlamaConfig, LlamaForCausalLM};
pub use vit::{VIT_LORA_TARGETS, ViTConfig, ViTForImageClassification};
pub use vit_mae::{ViTMAEConfig, ViTMAEForPreTraining};
