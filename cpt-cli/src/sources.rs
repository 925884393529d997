//! Builds the data side of a run from its config: training streams (plain or mixtures), held-out
//! sets, and the adapter from cpt-data's sequence sources to the trainer's item sources.

use anyhow::{Context, Result};
use cpt_core::config::{ExperienceConfig, RunConfig};
use cpt_core::rng::domain;
use cpt_core::{CoreError, ItemSource, SplitMix64, TokenBatch};
use cpt_data::{
    Mixture, PackedSource, ParquetTextSource, SequenceSource, SourceCursor, TextSourceOptions,
    Tokenizer, eval_sequences, expand_paths,
};
use std::sync::Arc;

/// A [`SequenceSource`] seen by the trainer as a stream of token-sequence items.
pub struct SequenceItems(pub Box<dyn SequenceSource>);

impl ItemSource<Vec<u32>> for SequenceItems {
    fn next_item(&mut self) -> cpt_core::Result<Vec<u32>> {
        self.0
            .next_sequence()
            .map_err(|e| CoreError::Data(e.to_string()))
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(self.0.cursor()).expect("cursors serialise")
    }

    fn seek(&mut self, cursor: &serde_json::Value) -> cpt_core::Result<()> {
        let cursor: SourceCursor = serde_json::from_value(cursor.clone())
            .map_err(|e| CoreError::Data(format!("malformed data cursor in checkpoint: {e}")))?;
        self.0
            .seek(&cursor)
            .map_err(|e| CoreError::Data(e.to_string()))
    }
}

fn text_options(config: &RunConfig, seed: u64) -> TextSourceOptions {
    TextSourceOptions {
        column: config.data.text_column.clone(),
        shuffle: config.data.shuffle,
        seed,
        quarantine_bad_shards: config.data.bad_shards == cpt_core::config::BadShards::Quarantine,
    }
}

/// Packed `seq_len`-token sequences of `files`, from documents of at least
/// `min_document_tokens` tokens (0: all).
fn packed(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Arc<Tokenizer>,
    seed: u64,
    seq_len: usize,
    min_document_tokens: usize,
) -> Result<PackedSource> {
    let paths = expand_paths(files)?;
    let text = ParquetTextSource::open(&paths, text_options(config, seed))?;
    let mut source = PackedSource::new(text, tokenizer.clone(), seq_len)?
        .with_min_document_tokens(min_document_tokens);
    // Draw one sequence and rewind, so that an empty corpus fails now, before the run
    // directory is created, instead of at its first training step.
    let start = source.cursor();
    source.next_sequence()?;
    source.seek(&start)?;
    Ok(source)
}

/// The training stream of experience `index`: its files, or its weighted mixture; with
/// `long_doc_ratio`, its files twice, as a mixture of all documents and long ones only.
pub fn training_source(
    config: &RunConfig,
    index: usize,
    tokenizer: &Arc<Tokenizer>,
) -> Result<Box<dyn ItemSource<Vec<u32>>>> {
    let experience: &ExperienceConfig = &config.experiences[index];
    let seed = |k: u64| {
        SplitMix64::derive(config.seed, &[domain::TRAINING_DATA, index as u64, k]).next_u64()
    };
    let seq_len = config.seq_len_of(index);
    let files = |files: &[String], k: u64, min_tokens: usize| -> Result<Box<dyn SequenceSource>> {
        Ok(Box::new(packed(
            config,
            files,
            tokenizer,
            seed(k),
            seq_len,
            min_tokens,
        )?))
    };
    let source: Box<dyn SequenceSource> = match experience.long_doc_ratio {
        _ if !experience.mixture.is_empty() => {
            let components = experience
                .mixture
                .iter()
                .enumerate()
                .map(|(k, c)| Ok((files(&c.files, k as u64 + 1, 0)?, c.weight)))
                .collect::<Result<Vec<_>>>()?;
            Box::new(Mixture::new(components, seed(0))?)
        }
        None => files(&experience.train, 0, 0)?,
        // Upsampling long documents ("Effective Long-Context Scaling of Foundation Models",
        // 2023): a share of the sequences comes from a second pass over the same files that
        // keeps long documents only, drawn with its own order.
        Some(ratio) => {
            let min_tokens = experience.long_doc_min_tokens.unwrap_or(seq_len);
            let long = files(&experience.train, 2, min_tokens)
                .context("the long documents of `long_doc_ratio`")?;
            match ratio < 1.0 {
                true => Box::new(Mixture::new(
                    vec![
                        (files(&experience.train, 0, 0)?, 1.0 - ratio),
                        (long, ratio),
                    ],
                    seed(1),
                )?),
                false => long,
            }
        }
    };
    Ok(Box::new(SequenceItems(source)))
}

/// A stream over reference data (for distillation on general or earlier data), seeded apart
/// from every training stream.
pub fn reference_source(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Arc<Tokenizer>,
) -> Result<Box<dyn ItemSource<Vec<u32>>>> {
    let seed = SplitMix64::derive(config.seed, &[domain::DISTILL_REFERENCE, 0]).next_u64();
    let source = packed(config, files, tokenizer, seed, config.data.seq_len, 0)
        .context("distillation reference data")?;
    Ok(Box::new(SequenceItems(Box::new(source))))
}

/// Held-out batches of experience `index`: the first `eval.max_sequences` packed sequences of its
/// eval files in file order.
pub fn eval_batches(
    config: &RunConfig,
    index: usize,
    tokenizer: &Tokenizer,
) -> Result<Vec<TokenBatch>> {
    let experience = &config.experiences[index];
    held_out_batches(
        config,
        &experience.eval,
        tokenizer,
        config.seq_len_of(index),
    )
    .with_context(|| format!("eval set of experience `{}`", experience.name))
}

/// The first `eval.max_sequences` packed `seq_len`-token sequences of `files` in file order,
/// batched.
pub fn held_out_batches(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Tokenizer,
    seq_len: usize,
) -> Result<Vec<TokenBatch>> {
    let paths = expand_paths(files)?;
    let options = TextSourceOptions {
        shuffle: false,
        ..text_options(config, 0)
    };
    let source = ParquetTextSource::open(&paths, options)?;
    let sequences = eval_sequences(source, tokenizer, seq_len, config.eval.max_sequences)?;
    Ok(sequences
        .chunks(config.eval.batch_size.max(1))
        .map(TokenBatch::from_sequences)
        .collect())
}
