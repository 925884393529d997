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

fn packed(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Arc<Tokenizer>,
    seed: u64,
) -> Result<PackedSource> {
    let paths = expand_paths(files)?;
    let text = ParquetTextSource::open(&paths, text_options(config, seed))?;
    let mut source = PackedSource::new(text, tokenizer.clone(), config.data.seq_len)?;
    // Draw one sequence and rewind, so that an empty corpus fails now, before the run
    // directory is created, instead of at its first training step.
    let start = source.cursor();
    source.next_sequence()?;
    source.seek(&start)?;
    Ok(source)
}

/// The training stream of experience `index`: its files, or its weighted mixture.
pub fn training_source(
    config: &RunConfig,
    index: usize,
    tokenizer: &Arc<Tokenizer>,
) -> Result<Box<dyn ItemSource<Vec<u32>>>> {
    let experience: &ExperienceConfig = &config.experiences[index];
    let seed = |k: u64| {
        SplitMix64::derive(config.seed, &[domain::TRAINING_DATA, index as u64, k]).next_u64()
    };
    let source: Box<dyn SequenceSource> = if experience.mixture.is_empty() {
        Box::new(packed(config, &experience.train, tokenizer, seed(0))?)
    } else {
        let components = experience
            .mixture
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let source: Box<dyn SequenceSource> =
                    Box::new(packed(config, &c.files, tokenizer, seed(k as u64 + 1))?);
                Ok((source, c.weight))
            })
            .collect::<Result<Vec<_>>>()?;
        Box::new(Mixture::new(components, seed(0))?)
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
    let source = packed(config, files, tokenizer, seed).context("distillation reference data")?;
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
    held_out_batches(config, &experience.eval, tokenizer)
        .with_context(|| format!("eval set of experience `{}`", experience.name))
}

/// The first `eval.max_sequences` packed sequences of `files` in file order, batched.
pub fn held_out_batches(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Tokenizer,
) -> Result<Vec<TokenBatch>> {
    let paths = expand_paths(files)?;
    let options = TextSourceOptions {
        shuffle: false,
        ..text_options(config, 0)
    };
    let source = ParquetTextSource::open(&paths, options)?;
    let sequences = eval_sequences(
        source,
        tokenizer,
        config.data.seq_len,
        config.eval.max_sequences,
    )?;
    Ok(sequences
        .chunks(config.eval.batch_size.max(1))
        .map(TokenBatch::from_sequences)
        .collect())
}
