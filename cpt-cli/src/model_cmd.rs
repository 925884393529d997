//! Commands on a trained or published model: `cpt eval`, `cpt score`, `cpt generate`,
//! `cpt export hf|peft|gguf` and `cpt import gguf`. The model may be a GGUF file, a Hugging Face
//! folder, a run directory or a checkpoint.

use crate::arch::llama::{self, LoadedModel};
use crate::backend::BackendJob;
use crate::model_source::RunCheckpoint;
use crate::task_eval::{FEWSHOT_SEED, TokenizerEncoder, load_task, progress_bars, results_table};
use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::AutodiffBackend;
use cpt_core::TokenBatch;
use cpt_core::TrainBackend;
use cpt_data::{ParquetTextSource, TextSourceOptions, Tokenizer, eval_sequences, expand_paths};
use cpt_eval::tasks::encode_pair;
use cpt_eval::{ScoreSettings, TaskOptions, evaluate_task, mean_loss, score_continuation};
use cpt_models::generate::{Sampling, generate};
use cpt_models::gguf::GgmlType;
use cpt_models::hf_llama;
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::PathBuf;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

fn load<B: AutodiffBackend>(path: &std::path::Path) -> Result<(LoadedModel<Inner<B>>, Tokenizer)> {
    let device: burn::tensor::Device<Inner<B>> = Default::default();
    let loaded = llama::load::<Inner<B>>(path, &device)?;
    let tokenizer = llama::open_tokenizer(&loaded.tokenizer)
        .with_context(|| format!("the tokenizer of {}", path.display()))?;
    Ok((loaded, tokenizer))
}

/// `cpt eval`: held-out loss and perplexity of a model on Parquet text, and downstream tasks.
pub struct EvalJob {
    /// Model folder, run directory or checkpoint.
    pub model: PathBuf,
    /// Parquet files or globs (perplexity; may be empty when tasks are given).
    pub data: Vec<String>,
    /// Task files.
    pub tasks: Vec<PathBuf>,
    /// Few-shot examples per prompt (overrides the files).
    pub num_fewshot: Option<usize>,
    /// Documents per task.
    pub limit: Option<usize>,
    /// Where to write the task results as JSON.
    pub output: Option<PathBuf>,
    /// Text column.
    pub column: String,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Sequences to score.
    pub max_sequences: usize,
    /// Sequences per batch.
    pub batch_size: usize,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: TrainBackend>(self, _device: burn::tensor::Device<B>) -> Result<()> {
        let (loaded, tokenizer) = load::<B>(&self.model)?;
        // Every task file is read and rendered before any model runs.
        let options = TaskOptions {
            num_fewshot: self.num_fewshot,
            limit: self.limit,
            seed: FEWSHOT_SEED,
        };
        let tasks = self
            .tasks
            .iter()
            .map(|path| load_task(path, None, &options))
            .collect::<Result<Vec<_>>>()?;
        if !self.data.is_empty() {
            self.perplexity(&loaded, &tokenizer)?;
        }
        if tasks.is_empty() {
            return Ok(());
        }
        let encoder = TokenizerEncoder(std::sync::Arc::new(tokenizer));
        let settings = ScoreSettings {
            batch_size: self.batch_size.max(1),
            max_length: loaded.config.max_position_embeddings,
        };
        let mut progress = progress_bars();
        let results = tasks
            .iter()
            .map(|task| {
                evaluate_task(
                    &loaded.model,
                    task,
                    &encoder,
                    &settings,
                    &mut |done, total| progress(&task.name, done, total),
                )
                .with_context(|| format!("task `{}` ({})", task.name, task.path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        println!("{}", results_table(&results));
        if let Some(path) = &self.output {
            let json = json!({
                "model": loaded.source,
                "num_fewshot": self.num_fewshot,
                "limit": self.limit,
                "results": results.iter().map(|r| (r.name.clone(), json!({
                    "task_file": tasks.iter().find(|t| t.name == r.name).map(|t| t.path.clone()),
                    "num_fewshot": r.num_fewshot,
                    "samples": r.samples,
                    "primary": r.primary,
                    "higher_is_better": r.higher_is_better,
                    "metrics": r.metrics,
                    "stderr": r.stderr,
                }))).collect::<serde_json::Map<_, _>>(),
            });
            let bytes = serde_json::to_vec_pretty(&json).expect("results serialise");
            cpt_core::atomic::write_atomic(path, &bytes)?;
            println!("results written to {}", path.display());
        }
        Ok(())
    }
}

impl EvalJob {
    /// Held-out perplexity on `--data`, one JSON line.
    fn perplexity<B: cpt_core::FusedOps>(
        &self,
        loaded: &LoadedModel<B>,
        tokenizer: &Tokenizer,
    ) -> Result<()> {
        let paths = expand_paths(&self.data)?;
        let options = TextSourceOptions {
            column: self.column.clone(),
            shuffle: false,
            seed: 0,
            ..Default::default()
        };
        let source = ParquetTextSource::open(&paths, options)?;
        let sequences = eval_sequences(source, tokenizer, self.seq_len, self.max_sequences)?;
        let batches: Vec<TokenBatch> = sequences
            .chunks(self.batch_size.max(1))
            .map(TokenBatch::from_sequences)
            .collect();
        let (loss, tokens) = mean_loss(&loaded.model, &batches);
        let line = json!({"model": loaded.source, "loss": loss, "perplexity": loss.exp(), "tokens": tokens});
        println!("{line}");
        Ok(())
    }
}

/// `cpt score`: log-probability of texts or continuations, one JSON line in, one out.
pub struct ScoreJob {
    /// Model folder, run directory or checkpoint.
    pub model: PathBuf,
    /// JSONL input.
    pub input: PathBuf,
}

/// Token ids of one score request and where the scored part starts.
fn request_ids(request: &Value, encoder: &TokenizerEncoder) -> Result<(Vec<u32>, usize)> {
    let tokenizer = encoder.0.as_ref();
    let text = |key: &str| request.get(key).and_then(Value::as_str);
    let ids = |key: &str| -> Option<Result<Vec<u32>>> {
        let list = request.get(key)?.as_array()?;
        Some(
            list.iter()
                .map(|v| {
                    v.as_u64()
                        .map(|n| n as u32)
                        .ok_or_else(|| anyhow!("`{key}` must hold token ids"))
                })
                .collect(),
        )
    };
    let bos: Vec<u32> = tokenizer.bos_id().into_iter().collect();
    let eos = tokenizer.eos_id();
    if let (Some(context), Some(continuation)) = (text("context"), text("continuation")) {
        // As the LM evaluation harness encodes a pair: the context's trailing whitespace moves
        // to the continuation, whose tokens are those of context + continuation after the
        // context's (so a context cut mid-word scores what the model would read), and an empty
        // context becomes the prefix token (BOS, else EOS).
        let pair = encode_pair(encoder, context, continuation)?;
        let start = pair.context.len();
        let mut all = pair.context;
        all.extend(pair.continuation);
        return Ok((all, start));
    }
    if let (Some(context), Some(continuation)) = (ids("context_ids"), ids("continuation_ids")) {
        let mut all = context?;
        let start = all.len();
        all.extend(continuation?);
        return Ok((all, start));
    }
    if let Some(text) = text("text") {
        // A whole text is scored after a document boundary, as it would be met in training.
        let mut all: Vec<u32> = if bos.is_empty() {
            eos.into_iter().collect()
        } else {
            bos
        };
        all.extend(tokenizer.encode(text)?);
        return Ok((all, 1));
    }
    if let Some(all) = ids("ids") {
        return Ok((all?, 1));
    }
    bail!(
        "expected {{\"text\"}}, {{\"context\", \"continuation\"}}, {{\"ids\"}} or {{\"context_ids\", \"continuation_ids\"}}"
    )
}

impl BackendJob for ScoreJob {
    type Output = ();

    fn run<B: TrainBackend>(self, _device: burn::tensor::Device<B>) -> Result<()> {
        let (loaded, tokenizer) = load::<B>(&self.model)?;
        let encoder = TokenizerEncoder(std::sync::Arc::new(tokenizer));
        let file = std::fs::File::open(&self.input)
            .with_context(|| format!("{}", self.input.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let at = || format!("{} line {}", self.input.display(), n + 1);
            let line = line.with_context(at)?;
            if line.trim().is_empty() {
                continue;
            }
            let request: Value = serde_json::from_str(&line).with_context(at)?;
            let (ids, start) = request_ids(&request, &encoder).with_context(at)?;
            if start == 0 || start >= ids.len() {
                bail!("{}: nothing to score (empty context or continuation)", at());
            }
            if ids.len() > loaded.config.max_position_embeddings {
                bail!(
                    "{}: {} tokens exceed max_position_embeddings {}",
                    at(),
                    ids.len(),
                    loaded.config.max_position_embeddings
                );
            }
            let score = score_continuation(&loaded.model, &ids, start);
            let out = json!({
                "logprob": score.total(),
                "tokens": score.logprobs.len(),
                "greedy": score.greedy,
                "logprobs": score.logprobs,
            });
            println!("{out}");
        }
        Ok(())
    }
}

/// `cpt generate`: continue a prompt.
pub struct GenerateJob {
    /// Model folder, run directory or checkpoint.
    pub model: PathBuf,
    /// Prompt text.
    pub prompt: String,
    /// Tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling settings (temperature 0: greedy).
    pub sampling: Sampling,
}

impl BackendJob for GenerateJob {
    type Output = ();

    fn run<B: TrainBackend>(self, _device: burn::tensor::Device<B>) -> Result<()> {
        let (loaded, tokenizer) = load::<B>(&self.model)?;
        let mut prompt: Vec<u32> = tokenizer.bos_id().into_iter().collect();
        prompt.extend(tokenizer.encode(&self.prompt)?);
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        if prompt.len() + self.max_new_tokens > loaded.config.max_position_embeddings {
            bail!(
                "prompt ({} tokens) + --max-new-tokens {} exceed max_position_embeddings {}",
                prompt.len(),
                self.max_new_tokens,
                loaded.config.max_position_embeddings
            );
        }
        let new = generate(
            &loaded.model,
            &prompt,
            self.max_new_tokens,
            &self.sampling,
            tokenizer.eos_id(),
        );
        println!("{}{}", self.prompt, tokenizer.decode(&new)?);
        Ok(())
    }
}

/// `cpt export hf`: a Hugging Face folder from any model reference.
pub struct ExportJob {
    /// Model folder, run directory or checkpoint.
    pub model: PathBuf,
    /// Output folder.
    pub out: PathBuf,
}

impl BackendJob for ExportJob {
    type Output = ();

    fn run<B: TrainBackend>(self, _device: burn::tensor::Device<B>) -> Result<()> {
        let device: burn::tensor::Device<Inner<B>> = Default::default();
        // A Hugging Face folder is a language model (re-written through LLaMA's loader); a run
        // or checkpoint is exported by the architecture its config names.
        if self.model.join("config.json").exists() || cpt_models::gguf::is_gguf(&self.model) {
            let loaded = llama::load::<Inner<B>>(&self.model, &device)?;
            llama::save_hf(&loaded, &self.out)?;
            println!("{} → {}", loaded.source.display(), self.out.display());
            return Ok(());
        }
        crate::arch::export_checkpoint::<Inner<B>>(&self.model, &self.out, &device)
    }
}

/// `cpt export peft`: the LoRA adapter in PEFT's format plus its frozen base.
pub struct ExportPeftJob {
    /// A run directory or checkpoint whose model carries adapters.
    pub model: PathBuf,
    /// Output folder.
    pub out: PathBuf,
}

impl BackendJob for ExportPeftJob {
    type Output = ();

    fn run<B: TrainBackend>(self, _device: burn::tensor::Device<B>) -> Result<()> {
        let (loaded, tokenizer) = load::<B>(&self.model)?;
        crate::model_source::run_dir_of(&self.model)
            .ok_or_else(|| anyhow!("{}: PEFT export needs a run directory or checkpoint (its config holds the adapter settings)", self.model.display()))?;
        let spec = RunCheckpoint::open(&self.model)?.adapter_spec(llama::LORA_TARGETS)?;
        let ids = (tokenizer.bos_id(), tokenizer.eos_id());
        hf_llama::save_peft(
            &loaded.model,
            &loaded.config,
            &spec,
            Some(&loaded.tokenizer),
            ids,
            &self.out,
        )?;
        println!(
            "{} → {} (adapter) and {}/base (frozen base)",
            loaded.source.display(),
            self.out.display(),
            self.out.display()
        );
        Ok(())
    }
}

/// `cpt export gguf`: a GGUF file for llama.cpp and Ollama from any model reference.
pub struct ExportGgufJob {
    /// GGUF file, model folder, run directory or checkpoint.
    pub model: PathBuf,
    /// Output file.
    pub out: PathBuf,
    /// Storage type of the matrices.
    pub dtype: GgufDtype,
}

/// Storage types `cpt export gguf` offers.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GgufDtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// llama.cpp's 8-bit blocks (an f16 scale per 32 values).
    #[value(name = "q8_0")]
    Q8_0,
}

impl BackendJob for ExportGgufJob {
    type Output = ();

    fn run<B: TrainBackend>(self, _device: burn::tensor::Device<B>) -> Result<()> {
        let device: burn::tensor::Device<Inner<B>> = Default::default();
        let loaded = llama::load::<Inner<B>>(&self.model, &device)?;
        let dtype = match self.dtype {
            GgufDtype::F16 => GgmlType::F16,
            GgufDtype::Bf16 => GgmlType::BF16,
            GgufDtype::Q8_0 => GgmlType::Q8_0,
        };
        llama::save_gguf(&loaded, &self.out, dtype)?;
        println!("{} → {}", loaded.source.display(), self.out.display());
        Ok(())
    }
}

/// `cpt import gguf`: a GGUF file as a Hugging Face folder (config.json, model.safetensors in
/// f32, tokenizer.json), written whole or not at all.
pub fn import_gguf(file: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let config = cpt_models::gguf::import_gguf(file, out)?;
    println!(
        "{} → {} ({} layers, width {}, vocabulary {})",
        file.display(),
        out.display(),
        config.num_hidden_layers,
        config.hidden_size,
        config.vocab_size
    );
    Ok(())
}
