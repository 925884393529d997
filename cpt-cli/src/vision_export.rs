//! `cpt export hf` for vision runs: a ViT, ViT-MAE or CLIP checkpoint as a Hugging Face folder
//! (live LoRA adapters folded in), loadable by transformers' `from_pretrained`.

use crate::model_source::RunCheckpoint;
use crate::vision_run::{clip_config, mae_config, vit_classifier_lora_targets, vit_config};
use anyhow::Result;
use burn::tensor::backend::Backend;
use cpt_core::{AdapterModel, RunConfig};
use cpt_models::{clip, hf_clip, hf_vit, vit};
use std::path::Path;

/// The architecture of the run behind `path` (a run directory or checkpoint), if it has one.
pub fn run_architecture(path: &Path) -> Option<String> {
    let run_dir = crate::model_source::run_dir_of(path)?;
    let run = RunConfig::load(&run_dir.join("config.toml"), &[]).ok()?;
    Some(run.model.architecture)
}

/// Export the vision model of the run or checkpoint `path` to the Hugging Face folder `out`.
pub fn export_vision<B: Backend>(path: &Path, out: &Path, device: &B::Device) -> Result<()> {
    let saved = RunCheckpoint::open(path)?;
    let run = &saved.run;
    match run.model.architecture.as_str() {
        "vit" => {
            let config = vit_config(run)?;
            let model = saved
                .load_into(config.init::<B>(device), &vit_classifier_lora_targets())?
                .merge_adapters();
            hf_vit::save_vit(&model, &config, out)?;
        }
        "vit_mae" => {
            let config = mae_config(run)?;
            let model = saved
                .load_into(config.init::<B>(device), vit::VIT_LORA_TARGETS)?
                .merge_adapters();
            hf_vit::save_vit_mae(&model, &config, out)?;
        }
        "clip" => {
            let config = clip_config(run)?;
            let model = saved
                .load_into(config.init::<B>(device), clip::CLIP_LORA_TARGETS)?
                .merge_adapters();
            let tokenizer = run.tokenizer_path();
            hf_clip::save_clip(&model, &config, Some(&tokenizer), out)?;
        }
        other => anyhow::bail!("{}: `{other}` is not a vision architecture", path.display()),
    }
    println!("{} → {}", saved.checkpoint.path.display(), out.display());
    Ok(())
}
