//! `cpt export hf` for vision runs: a ViT, ViT-MAE or CLIP checkpoint as a Hugging Face folder
//! (live LoRA adapters folded in), loadable by transformers' `from_pretrained`.

use crate::model_source::run_checkpoint;
use crate::vision_run::{clip_config, mae_config, vit_classifier_lora_targets, vit_config};
use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use cpt_core::params::load_named;
use cpt_core::tensor_file::read_tensors;
use cpt_core::{ADAPTER_MARKER, AdapterModel, NamedTensors, RunConfig};
use cpt_models::{clip, hf_clip, hf_vit, vit};
use std::path::Path;

/// The architecture of the run behind `path` (a run directory or checkpoint), if it has one.
pub fn run_architecture(path: &Path) -> Option<String> {
    let run_dir = crate::model_source::run_dir_of(path)?;
    let run = RunConfig::load(&run_dir.join("config.toml"), &[]).ok()?;
    Some(run.model.architecture)
}

/// Give `model` the adapters a checkpoint's weights carry (saved mid-experience with live LoRA
/// adapters), load the weights, then fold the adapters in.
fn restore<B: Backend, M>(
    model: M,
    weights: &NamedTensors,
    weights_path: &Path,
    run: &RunConfig,
    targets: &[&str],
) -> Result<M>
where
    M: burn::module::Module<B> + AdapterModel<Spec = cpt_models::linear::LoraSpec>,
{
    let model = if weights.keys().any(|k| k.contains(ADAPTER_MARKER)) {
        model.with_adapters(&crate::run::lora_spec(run, targets)?, 0)
    } else {
        model
    };
    Ok(load_named(model, weights, weights_path)?.merge_adapters())
}

/// Export the vision model of the run or checkpoint `path` to the Hugging Face folder `out`.
pub fn export_vision<B: Backend>(path: &Path, out: &Path, device: &B::Device) -> Result<()> {
    let (run_dir, checkpoint) = run_checkpoint(path)?;
    let run = RunConfig::load(&run_dir.join("config.toml"), &[])
        .with_context(|| format!("reading the run config of {}", path.display()))?;
    let weights_path = checkpoint.path.join("model.safetensors");
    let (weights, _) = read_tensors(&weights_path)?;
    match run.model.architecture.as_str() {
        "vit" => {
            let config = vit_config(&run)?;
            let model = restore(
                config.init::<B>(device),
                &weights,
                &weights_path,
                &run,
                &vit_classifier_lora_targets(),
            )?;
            hf_vit::save_vit(&model, &config, out)?;
        }
        "vit_mae" => {
            let config = mae_config(&run)?;
            let model = restore(
                config.init::<B>(device),
                &weights,
                &weights_path,
                &run,
                vit::VIT_LORA_TARGETS,
            )?;
            hf_vit::save_vit_mae(&model, &config, out)?;
        }
        "clip" => {
            let config = clip_config(&run)?;
            let model = restore(
                config.init::<B>(device),
                &weights,
                &weights_path,
                &run,
                clip::CLIP_LORA_TARGETS,
            )?;
            let tokenizer = run.tokenizer_path();
            hf_clip::save_clip(&model, &config, Some(&tokenizer), out)?;
        }
        other => anyhow::bail!("{}: `{other}` is not a vision architecture", path.display()),
    }
    println!("{} → {}", checkpoint.path.display(), out.display());
    Ok(())
}
