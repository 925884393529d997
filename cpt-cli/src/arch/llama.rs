//! LLaMA: causal language modelling on packed Parquet text, perplexity per experience. Also the
//! model the language commands (`cpt eval`, `score`, `generate`, `export peft`) load.
//!
//! `model.from` may name a GGUF file (llama.cpp, Ollama): its weights are dequantised on load
//! and, unless `data.tokenizer` is given, its embedded tokenizer is built in memory each time it
//! is needed, so nothing is written beside the model file and a run stays tied to that file.

use super::Architecture;
use crate::model_source::{RunCheckpoint, model_table};
use crate::plan::Plan;
use crate::run::{RunEnd, RunJob, Stream, TaskColumn};
use crate::sources::{eval_batches, held_out_batches, reference_source, training_source};
use crate::task_eval::{TokenizerEncoder, progress_bars, run_tasks};
use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::Backend;
use cpt_continual::strategies::DistillSettings;
use cpt_continual::{Experience, StageSetup};
use cpt_core::{AdapterModel, Evaluator, RunConfig, TrainBackend};
use cpt_data::Tokenizer;
use cpt_eval::{EvalSet, LanguageEvaluator, PerplexityEvaluator, ScoreSettings};
use cpt_models::gguf::{self, GgmlType, is_gguf};
use cpt_models::llama::RopeScaling;
use cpt_models::{LlamaConfig, LlamaForCausalLM, hf_llama, resize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The LLaMA architecture (`model.architecture = "llama"`).
pub struct Llama;

/// Projections of LLaMA that `lora.target_modules` may name.
pub const LORA_TARGETS: &[&str] = &["q", "k", "v", "o", "gate", "up", "down"];

impl Architecture for Llama {
    const NAME: &'static str = "llama";
    const READS_TEXT: bool = true;

    fn lora_targets() -> Vec<&'static str> {
        LORA_TARGETS.to_vec()
    }

    fn validate(run: &RunConfig) -> Result<()> {
        if run.model.resize_text_positions.is_some() {
            bail!(
                "config key `model.resize_text_positions`: CLIP's learned text positions only (LLaMA's rotary positions are extended with `rope_scaling`)"
            );
        }
        if run.data.seq_len < 2 {
            bail!("config key `data.seq_len`: must be at least 2");
        }
        for (i, e) in run.experiences.iter().enumerate() {
            if !(e.classes.is_empty() && e.class_names.is_empty()) {
                bail!(
                    "config key `experiences[{i}].classes`: class filters apply to image streams only"
                );
            }
            if let Some(table) = &e.rope_scaling {
                rope_scaling(table, i)?;
            }
        }
        for (i, h) in run.eval.held_out.iter().enumerate() {
            if run.experiences.iter().any(|e| e.name == h.name) {
                bail!(
                    "config key `eval.held_out[{i}].name`: `{}` is already an experience's name",
                    h.name
                );
            }
            if !(h.classes.is_empty() && h.class_names.is_empty()) {
                bail!(
                    "config key `eval.held_out[{i}].classes`: class filters apply to image sets only"
                );
            }
        }
        Ok(())
    }

    fn train<B: TrainBackend>(job: RunJob) -> Result<RunEnd> {
        let config = job.config.clone();
        job.execute(|device| stream::<B>(&config, device))
    }

    fn export<B: Backend>(saved: &RunCheckpoint, out: &Path, device: &B::Device) -> Result<()> {
        let loaded = from_checkpoint::<B>(saved, device)?;
        save_hf(&loaded, out)
    }

    fn plan<B: Backend>(run: &RunConfig, _device: &B::Device) -> Result<Plan> {
        // Activations are sized by the longest stage.
        let seq_len = (0..run.experiences.len())
            .map(|i| run.seq_len_of(i))
            .max()
            .unwrap_or(run.data.seq_len);
        Ok(crate::plan::llama(
            &model_config(run)?,
            run.train.batch_size,
            seq_len,
        ))
    }
}

/// The `rope_scaling` table of experience `index` as a scaling rule (`rope_type = "default"`:
/// none), in transformers' field names; errors name the key.
fn rope_scaling(table: &toml::Table, index: usize) -> Result<Option<RopeScaling>> {
    if table.get("rope_type").and_then(toml::Value::as_str) == Some("default") {
        return Ok(None);
    }
    toml::Value::Table(table.clone())
        .try_into::<RopeScaling>()
        .map(Some)
        .map_err(|e| {
            anyhow!(
                "config key `experiences[{index}].rope_scaling`: {} (rope_type: linear, dynamic, yarn, llama3 or default)",
                e.message()
            )
        })
}

/// `base` as trained in experience `stage` (`None`: before the first): every RoPE change of the
/// experiences up to it applied in order. A stage that changes nothing keeps the previous one's.
fn stage_config(run: &RunConfig, base: LlamaConfig, stage: Option<usize>) -> Result<LlamaConfig> {
    let mut config = base;
    let Some(stage) = stage else {
        return Ok(config);
    };
    for (i, e) in run.experiences.iter().enumerate().take(stage + 1) {
        if let Some(theta) = e.rope_theta {
            config.rope_theta = theta;
        }
        if let Some(table) = &e.rope_scaling {
            config.rope_scaling = rope_scaling(table, i)?;
        }
    }
    Ok(config)
}

/// Sets each stage's RoPE on the model as it starts; `None` when no experience changes it.
fn rope_stages<B: Backend>(
    run: &RunConfig,
    base: &LlamaConfig,
) -> Result<Option<StageSetup<LlamaForCausalLM<B>>>> {
    if run
        .experiences
        .iter()
        .all(|e| e.rope_theta.is_none() && e.rope_scaling.is_none())
    {
        return Ok(None);
    }
    let stages = (0..run.experiences.len())
        .map(|i| Ok(stage_config(run, base.clone(), Some(i))?.rope()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Box::new(move |e, model: LlamaForCausalLM<B>| {
        model.with_rope(stages[e].clone())
    })))
}

/// The model config a run trains: its starting model's, its vocabulary resized as
/// `[model.resize_vocab]` says, then grown as `[model.grow]` says.
fn model_config(run: &RunConfig) -> Result<LlamaConfig> {
    let mut model = original_config(run)?;
    if run.model.resize_vocab.is_some() {
        let tokenizer = open_tokenizer(&tokenizer_path(run))?;
        model.vocab_size = crate::vocab_resize::resized_vocab(run, &tokenizer, model.vocab_size);
    }
    match super::grow_spec(run)? {
        Some(spec) => Ok(spec.llama_config(&model)?),
        None => Ok(model),
    }
}

/// With `[model.grow] freeze = "old"`: patterns of the parameters that train.
fn trainable(run: &RunConfig) -> Result<Option<Vec<String>>> {
    match super::grow_spec(run)? {
        Some(spec) => Ok(spec.llama_trainable(original_config(run)?.num_hidden_layers)?),
        None => Ok(None),
    }
}

/// The starting model's config: `[model.config]`, or the config.json of `model.from`.
fn original_config(run: &RunConfig) -> Result<LlamaConfig> {
    let model = match (&run.model.config, &run.model.from) {
        (Some(table), _) => model_table::<LlamaConfig>(table)?,
        (None, Some(file)) if is_gguf(file) => gguf::llama_config(&mut gguf::open(file)?)?,
        (None, Some(dir)) => hf_llama::read_config(dir)?,
        (None, None) => unreachable!("RunConfig::validate requires one"),
    };
    model
        .validate()
        .map_err(|m| anyhow!("config key `model.config`: {m}"))?;
    Ok(model)
}

/// The model a run starts from: its Hugging Face folder, or a fresh initialisation seeded by the
/// run's seed; its vocabulary resized under `[model.resize_vocab]` (the model must otherwise
/// cover the tokenizer's), then grown under `[model.grow]`.
fn initial_model<B: Backend>(
    run: &RunConfig,
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<(LlamaConfig, LlamaForCausalLM<B>)> {
    let (config, model) = super::starting_model(
        run,
        |from| match is_gguf(from) {
            true => Ok(gguf::load_llama_gguf::<B>(from, device)?),
            false => Ok(hf_llama::load_llama::<B>(from, device)?),
        },
        original_config,
        |c, seed| c.init_seeded(seed, device),
    )?;
    let growth = crate::vocab_resize::plan_growth(
        run,
        tokenizer,
        config.vocab_size,
        "model.config.vocab_size",
        config.initializer_range,
    )?;
    let (config, model) = match growth {
        Some(g) => resize::resize_llama_vocab(model, &config, g.new_vocab, &g.init)?,
        None => (config, model),
    };
    super::grown(run, config, model, |spec, c, m| {
        spec.grow_llama(c, m, run.seed, device)
    })
}

/// Model, packed token streams and perplexity evaluation of a run.
fn stream<B: TrainBackend>(
    run: &RunConfig,
    device: &B::Device,
) -> Result<Stream<B, LlamaForCausalLM<B>>> {
    let tokenizer = Arc::new(open_tokenizer(&tokenizer_path(run))?);
    // Checks the model config (or folder) before anything is written.
    let (model_config, model) = initial_model::<B>(run, &tokenizer, device)?;
    let mut experiences = Vec::new();
    let mut eval_sets = Vec::new();
    for (i, (e, steps)) in run
        .experiences
        .iter()
        .zip(run.experience_steps())
        .enumerate()
    {
        let source = training_source(run, i, &tokenizer)
            .with_context(|| format!("training data of experience `{}`", e.name))?;
        experiences.push(Experience {
            name: e.name.clone(),
            steps,
            source,
        });
        eval_sets.push(EvalSet {
            name: e.name.clone(),
            batches: eval_batches(run, i, &tokenizer)?,
        });
    }
    // Held-out text never trained on (general prose while adapting to code, say): retention
    // columns after the stream's.
    let mut held_out = Vec::new();
    for h in &run.eval.held_out {
        eval_sets.push(EvalSet {
            name: h.name.clone(),
            batches: held_out_batches(run, &h.files, &tokenizer, run.data.seq_len)
                .with_context(|| format!("held-out set `{}`", h.name))?,
        });
        held_out.push(h.name.clone());
    }
    let distill: DistillSettings = cpt_continual::settings(run)?;
    let reference = match distill.reference.is_empty() {
        true => None,
        false => Some(reference_source(run, &distill.reference, &tokenizer)?),
    };
    let perplexity =
        PerplexityEvaluator::<B::InnerBackend, LlamaForCausalLM<B::InnerBackend>>::new(eval_sets);
    let tasks = run_tasks(run)?;
    let columns = tasks
        .iter()
        .map(|t| {
            let (metric, higher_is_better) = t.metrics().next().expect("a task has a metric");
            TaskColumn {
                name: t.name.clone(),
                metric: metric.to_string(),
                higher_is_better,
            }
        })
        .collect();
    let evaluator: Box<dyn Evaluator<LlamaForCausalLM<B::InnerBackend>>> = if tasks.is_empty() {
        Box::new(perplexity)
    } else {
        let settings = ScoreSettings {
            batch_size: run.eval.batch_size.max(1),
            max_length: model_config.max_position_embeddings,
        };
        Box::new(LanguageEvaluator::new(
            perplexity,
            tasks,
            Box::new(TokenizerEncoder(tokenizer.clone())),
            settings,
            progress_bars(),
        ))
    };
    Ok(Stream {
        model,
        experiences,
        evaluator,
        reference,
        lora_targets: LORA_TARGETS.to_vec(),
        held_out,
        tasks: columns,
        unit: "tokens",
        stage_setup: rope_stages::<B>(run, &model_config)?,
        trainable: trainable(run)?,
    })
}

/// A language model ready to use, with the tokenizer that goes with it.
pub struct LoadedModel<B: Backend> {
    /// Its hyperparameters.
    pub config: LlamaConfig,
    /// The weights.
    pub model: LlamaForCausalLM<B>,
    /// Its `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Where the weights were read from, for messages.
    pub source: PathBuf,
}

/// The tokenizer of a run: `data.tokenizer`, the GGUF file of `model.from`, or the
/// `tokenizer.json` in its folder.
fn tokenizer_path(run: &RunConfig) -> PathBuf {
    match (&run.data.tokenizer, &run.model.from) {
        (None, Some(file)) if is_gguf(file) => file.clone(),
        _ => run.tokenizer_path(),
    }
}

/// The tokenizer at `path`: a `tokenizer.json`, or the one a GGUF file embeds.
pub fn open_tokenizer(path: &Path) -> Result<Tokenizer> {
    if is_gguf(path) {
        let json = gguf::read_tokenizer_json(path)?;
        return Ok(Tokenizer::from_json_bytes(&json, path)?);
    }
    Ok(Tokenizer::from_file(path)?)
}

/// Load `path`: a GGUF file, a Hugging Face folder (`config.json`), a run directory (its newest
/// complete checkpoint) or a checkpoint directory (`manifest.json`).
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    if is_gguf(path) {
        let (config, model) = gguf::load_llama_gguf::<B>(path, device)?;
        return Ok(LoadedModel {
            config,
            model,
            tokenizer: path.into(),
            source: path.into(),
        });
    }
    if path.join("config.json").exists() {
        let (config, model) = hf_llama::load_llama::<B>(path, device)?;
        return Ok(LoadedModel {
            config,
            model,
            tokenizer: path.join("tokenizer.json"),
            source: path.into(),
        });
    }
    from_checkpoint(&RunCheckpoint::open(path)?, device)
}

fn from_checkpoint<B: Backend>(
    saved: &RunCheckpoint,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    if saved.run.model.architecture != Llama::NAME {
        bail!(
            "config key `model.architecture`: unknown architecture `{}` (known: {})",
            saved.run.model.architecture,
            Llama::NAME
        );
    }
    // The RoPE of the stage the checkpoint was saved in, which is what the weights were
    // trained under (and what an export's config.json must say).
    let config = stage_config(&saved.run, model_config(&saved.run)?, saved.stage()?)?;
    let model = saved.load_into(config.init::<B>(device), LORA_TARGETS)?;
    Ok(LoadedModel {
        config,
        model,
        tokenizer: tokenizer_path(&saved.run),
        source: saved.checkpoint.path.clone(),
    })
}

/// Write `loaded` as a Hugging Face folder at `out`, live LoRA adapters folded in: the folder
/// holds the function the run ended with.
pub fn save_hf<B: Backend>(loaded: &LoadedModel<B>, out: &Path) -> Result<()> {
    let tokenizer = open_tokenizer(&loaded.tokenizer)
        .with_context(|| format!("the tokenizer of {}", loaded.source.display()))?;
    let ids = special_ids(loaded, &tokenizer)?;
    let model = loaded.model.clone().merge_adapters();
    if !is_gguf(&loaded.tokenizer) {
        hf_llama::save_llama(&model, &loaded.config, Some(&loaded.tokenizer), ids, out)?;
        return Ok(());
    }
    // A GGUF file's tokenizer exists in memory only: write it to a scratch file beside the
    // output for the folder writer to copy, and remove it afterwards.
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    let scratch = out.with_file_name(format!(".{}.tokenizer.json", name.unwrap_or_default()));
    tokenizer.save(&scratch)?;
    let saved = hf_llama::save_llama(&model, &loaded.config, Some(&scratch), ids, out);
    let _ = std::fs::remove_file(&scratch);
    Ok(saved?)
}

/// Beginning- and end-of-text ids of a model: those a GGUF file states, or the tokenizer's.
fn special_ids<B: Backend>(
    loaded: &LoadedModel<B>,
    tokenizer: &Tokenizer,
) -> Result<(Option<u32>, Option<u32>)> {
    if is_gguf(&loaded.tokenizer) {
        let file = gguf::open(&loaded.tokenizer)?;
        let id = |key: &str| {
            file.get(key)
                .and_then(gguf::MetaValue::as_u64)
                .map(|v| v as u32)
        };
        return Ok((
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
        ));
    }
    Ok((tokenizer.bos_id(), tokenizer.eos_id()))
}

/// Write `loaded` as a GGUF file at `out` that llama.cpp and Ollama read: live LoRA adapters
/// folded in, matrices stored as `dtype` (`f16`, `bf16` or `q8_0`), its tokenizer embedded.
pub fn save_gguf<B: Backend>(loaded: &LoadedModel<B>, out: &Path, dtype: GgmlType) -> Result<()> {
    let tokenizer = open_tokenizer(&loaded.tokenizer)
        .with_context(|| format!("the tokenizer of {}", loaded.source.display()))?;
    let json: serde_json::Value = if is_gguf(&loaded.tokenizer) {
        gguf::tokenizer_json(&gguf::open(&loaded.tokenizer)?)?
    } else {
        let bytes = std::fs::read(&loaded.tokenizer)
            .with_context(|| format!("{}", loaded.tokenizer.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not valid JSON", loaded.tokenizer.display()))?
    };
    let export = gguf::ExportTokenizer {
        json: &json,
        path: &loaded.tokenizer,
        special_ids: special_ids(loaded, &tokenizer)?,
    };
    let name = loaded
        .source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cpt".into());
    let model = loaded.model.clone().merge_adapters();
    gguf::save_llama_gguf(&model, &loaded.config, &export, dtype, &name, out)?;
    Ok(())
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Module;

    /// `cpt plan`'s parameter count is the trained model's, on the bundled examples.
    #[test]
    fn plan_counts_the_parameters_of_the_built_model() {
        for example in ["quickstart.toml", "tiny.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(example);
            let run = crate::model_source::load_run_config(&path, &[]).unwrap();
            let device = Default::default();
            let plan = Llama::plan::<Flex>(&run, &device).unwrap();
            let model = model_config(&run)
                .unwrap()
                .init_seeded::<Flex>(run.seed, &device);
            assert_eq!(plan.parameters() as usize, model.num_params(), "{example}");
        }
    }
}
