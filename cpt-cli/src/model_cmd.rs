//! Commands on a trained or published model: `cpt eval`, `cpt score`, `cpt generate`,
//! `cpt export hf|peft|gguf` and `cpt import gguf`. The model may be a GGUF file, a Hugging Face
//! folder, a run directory or a checkpoint.

use crate::arch::llama::{self, LoadedModel};
use crate::backend::BackendJob;
use crate::model_source::RunCheckpoint;
use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::AutodiffBackend;
use cpt_core::TokenBatch;
use cpt_core::TrainBackend;
use cpt_data::{ParquetTextSource, TextSourceOptions, Tokenizer, eval_sequences, expand_paths};
use cpt_eval::{mean_loss, score_continuation};
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

/// `cpt eval`: held-out loss and perplexity of a model on Parquet text.
pub struct EvalJob {
    /// Model folder, run directory or checkpoint.
    pub model: PathBuf,
    /// Parquet files or globs.
    pub data: Vec<String>,
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
        let paths = expand_paths(&self.data)?;
        let options = TextSourceOptions {
            column: self.column.clone(),
            shuffle: false,
            seed: 0,
            ..Default::default()
        };
        let source = ParquetTextSource::open(&paths, options)?;
        let sequences = eval_sequences(source, &tokenizer, self.seq_len, self.max_sequences)?;
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
fn request_ids(request: &Value, tokenizer: &Tokenizer) -> Result<(Vec<u32>, usize)> {
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
        // Encoded separately and joined, as the LM evaluation harness does.
        let mut all = bos.clone();
        all.extend(tokenizer.encode(context)?);
        let start = all.len();
        all.extend(tokenizer.encode(continuation)?);
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
        let file = std::fs::File::open(&self.input)
            .with_context(|| format!("{}", self.input.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let at = || format!("{} line {}", self.input.display(), n + 1);
            let line = line.with_context(at)?;
            if line.trim().is_empty() {
                continue;
            }
            let request: Value = serde_json::from_str(&line).with_context(at)?;
            let (ids, start) = request_ids(&request, &tokenizer).with_context(at)?;
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
            let out = json!({"logprob": score.total(), "tokens": score.logprobs.len(), "greedy": score.greedy});
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
