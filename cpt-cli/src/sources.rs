//! Builds the data side of a run from its config: training streams (plain, mixtures or
//! repeated subsets, with their metadata and row filters), held-out sets, and the adapter from
//! cpt-data's sequence sources to the trainer's item sources.

use anyhow::{Context, Result, bail};
use cpt_core::config::{ExperienceConfig, MetadataSource, RunConfig};
use cpt_core::rng::domain;
use cpt_core::row_filter::RowFilter;
use cpt_core::{CoreError, ItemSource, SplitMix64, TokenBatch, TokenSequence};
use cpt_data::{
    Conditioning, DocumentColumns, Mixture, PackedSource, ParquetTextSource, SequenceSource,
    SourceCursor, SubsetSource, TextSourceOptions, Tokenizer, eval_token_sequences, expand_paths,
};
use std::sync::Arc;

/// A [`SequenceSource`] seen by the trainer as a stream of token-sequence items, with the names
/// of its components (a mixture's) for per-source token counts.
pub struct SequenceItems {
    source: Box<dyn SequenceSource>,
    components: Vec<String>,
}

impl SequenceItems {
    /// A stream of one part.
    pub fn new(source: Box<dyn SequenceSource>) -> Self {
        Self {
            source,
            components: Vec::new(),
        }
    }
}

impl ItemSource<TokenSequence> for SequenceItems {
    fn next_item(&mut self) -> cpt_core::Result<TokenSequence> {
        self.source
            .next_sequence()
            .map_err(|e| CoreError::Data(e.to_string()))
    }

    fn last_part(&self) -> Option<&str> {
        let component = self.source.last_component()?;
        self.components.get(component).map(String::as_str)
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(self.source.cursor()).expect("cursors serialise")
    }

    fn seek(&mut self, cursor: &serde_json::Value) -> cpt_core::Result<()> {
        let cursor: SourceCursor = serde_json::from_value(cursor.clone())
            .map_err(|e| CoreError::Data(format!("malformed data cursor in checkpoint: {e}")))?;
        self.source
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

/// How documents of a source with this metadata are conditioned.
fn conditioning(config: &RunConfig, metadata: MetadataSource<'_>) -> Conditioning {
    let constant = match metadata {
        MetadataSource::None => return Conditioning::none(),
        MetadataSource::Column(_) => None,
        MetadataSource::Constant(text) => Some(text.to_string()),
    };
    Conditioning {
        constant,
        separator: config.metadata_separator().to_string(),
        mask_metadata: !config.metadata_loss(),
    }
}

/// The metadata and filter columns a source reads.
fn document_columns(
    metadata: MetadataSource<'_>,
    filter: Option<&str>,
    key: &str,
) -> Result<DocumentColumns> {
    Ok(DocumentColumns {
        metadata: match metadata {
            MetadataSource::Column(column) => Some(column.to_string()),
            _ => None,
        },
        filter: filter
            .map(RowFilter::parse)
            .transpose()
            .map_err(|message| anyhow::anyhow!("`{key}.filter`: {message}"))?,
    })
}

/// What one training source reads: its files, metadata and filter, and the config key that
/// sets them (for errors).
struct SourceSpec<'a> {
    files: &'a [String],
    metadata: MetadataSource<'a>,
    filter: Option<&'a str>,
    key: String,
}

/// The Parquet source of `spec` (metadata and filter columns checked in every file).
fn open_text(spec: &SourceSpec<'_>, options: TextSourceOptions) -> Result<ParquetTextSource> {
    let paths = expand_paths(spec.files)?;
    let columns = document_columns(spec.metadata, spec.filter, &spec.key)?;
    let text = ParquetTextSource::open_with(&paths, options, columns);
    Ok(match spec.filter {
        Some(filter) => text.with_context(|| format!("`{}.filter = \"{filter}\"`", spec.key))?,
        None => text?,
    })
}

/// Packed `seq_len`-token sequences of `spec`, from documents of at least `min_document_tokens`
/// tokens (0: all).
fn packed(
    config: &RunConfig,
    spec: &SourceSpec<'_>,
    tokenizer: &Arc<Tokenizer>,
    seed: u64,
    seq_len: usize,
    min_document_tokens: usize,
) -> Result<PackedSource> {
    let text = open_text(spec, text_options(config, seed))?;
    let mut source = PackedSource::conditioned(
        text,
        tokenizer.clone(),
        seq_len,
        conditioning(config, spec.metadata),
    )?
    .with_min_document_tokens(min_document_tokens);
    // Draw one sequence and rewind, so that an empty corpus fails now, before the run
    // directory is created, instead of at its first training step.
    let start = source.cursor();
    source.next_sequence()?;
    source.seek(&start)?;
    Ok(source)
}

/// The training stream of experience `index`: its files (or a repeated subset of them), or its
/// weighted mixture; with `long_doc_ratio`, its files twice, as a mixture of all documents and
/// long ones only.
pub fn training_source(
    config: &RunConfig,
    index: usize,
    tokenizer: &Arc<Tokenizer>,
) -> Result<Box<dyn ItemSource<TokenSequence>>> {
    let experience: &ExperienceConfig = &config.experiences[index];
    let seq_len = config.seq_len_of(index);
    let seed = |k: u64| {
        SplitMix64::derive(config.seed, &[domain::TRAINING_DATA, index as u64, k]).next_u64()
    };
    if experience.mixture.is_empty() {
        let spec = SourceSpec {
            files: &experience.train,
            metadata: config.metadata_of(index, None),
            filter: experience.filter.as_deref(),
            key: format!("experiences[{index}]"),
        };
        let pack = |k: u64, min_tokens: usize| -> Result<Box<dyn SequenceSource>> {
            let source = packed(config, &spec, tokenizer, seed(k), seq_len, min_tokens)?;
            Ok(Box::new(source))
        };
        let items = match (experience.subset_docs, experience.long_doc_ratio) {
            (Some(docs), _) => SequenceItems::new(Box::new(subset(
                config,
                index,
                &spec,
                docs,
                tokenizer,
                seed(0),
            )?)),
            (None, None) => SequenceItems::new(pack(0, 0)?),
            // Upsampling long documents ("Effective Long-Context Scaling of Foundation Models",
            // 2023): a share of the sequences comes from a second pass over the same files that
            // keeps long documents only, drawn in its own order.
            (None, Some(ratio)) => {
                let min_tokens = experience.long_doc_min_tokens.unwrap_or(seq_len);
                let long = pack(2, min_tokens).context("the long documents of `long_doc_ratio`")?;
                if ratio >= 1.0 {
                    SequenceItems::new(long)
                } else {
                    let parts = vec![(pack(0, 0)?, 1.0 - ratio), (long, ratio)];
                    SequenceItems {
                        source: Box::new(Mixture::new(parts, seed(1))?),
                        components: vec!["all".into(), "long".into()],
                    }
                }
            }
        };
        return Ok(Box::new(items));
    }
    let mut components = Vec::with_capacity(experience.mixture.len());
    let mut names = Vec::with_capacity(experience.mixture.len());
    for (k, c) in experience.mixture.iter().enumerate() {
        let spec = SourceSpec {
            files: &c.files,
            metadata: config.metadata_of(index, Some(k)),
            filter: c.filter.as_deref(),
            key: format!("experiences[{index}].mixture[{k}]"),
        };
        let source: Box<dyn SequenceSource> = Box::new(packed(
            config,
            &spec,
            tokenizer,
            seed(k as u64 + 1),
            seq_len,
            0,
        )?);
        components.push((source, c.weight));
        names.push(c.name.clone().unwrap_or_else(|| k.to_string()));
    }
    Ok(Box::new(SequenceItems {
        source: Box::new(Mixture::new(components, seed(0))?),
        components: names,
    }))
}

/// The repeated subset of experience `index` (`subset_docs`, `epochs`), checked against the
/// budget: with `epochs = E`, even a batch of fresh items only (no replay) must fit in `E`
/// passes, so the stream never runs out mid-run.
fn subset(
    config: &RunConfig,
    index: usize,
    spec: &SourceSpec<'_>,
    docs: usize,
    tokenizer: &Arc<Tokenizer>,
    seed: u64,
) -> Result<SubsetSource> {
    // Read unshuffled: the reservoir draws the sample, so file order keeps it independent of
    // row-group layout.
    let options = TextSourceOptions {
        shuffle: false,
        ..text_options(config, seed)
    };
    let text = open_text(spec, options)?;
    let epochs = config.experiences[index].epochs;
    let source = SubsetSource::new(
        text,
        tokenizer,
        config.seq_len_of(index),
        conditioning(config, spec.metadata),
        docs,
        epochs,
        seed,
    )
    .with_context(|| format!("`{}.subset_docs = {docs}`", spec.key))?;
    let per_pass = source.tokens_per_pass();
    let needed = config.experience_steps()[index] * config.tokens_per_step(index);
    if let Some(epochs) = epochs
        && needed > epochs * per_pass
    {
        bail!(
            "`{}.epochs = {epochs}`: the budget takes up to {needed} tokens, more than {epochs} \
             passes over the subset of {docs} documents ({per_pass} tokens each); raise `epochs` \
             or lower the budget",
            spec.key
        );
    }
    tracing::info!(
        "experience `{}`: a subset of {docs} documents, {per_pass} tokens per pass",
        config.experiences[index].name
    );
    Ok(source)
}

/// A stream over reference data (for distillation on general or earlier data), seeded apart
/// from every training stream.
pub fn reference_source(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Arc<Tokenizer>,
) -> Result<Box<dyn ItemSource<TokenSequence>>> {
    let seed = SplitMix64::derive(config.seed, &[domain::DISTILL_REFERENCE, 0]).next_u64();
    // Plain text: reference data stands for what the model should keep doing at deployment.
    let spec = SourceSpec {
        files,
        metadata: MetadataSource::None,
        filter: None,
        key: "distill.reference".into(),
    };
    let source = packed(config, &spec, tokenizer, seed, config.data.seq_len, 0)
        .context("distillation reference data")?;
    Ok(Box::new(SequenceItems::new(Box::new(source))))
}

/// Held-out batches of experience `index`: the first `eval.max_sequences` packed sequences of its
/// eval files in file order.
pub fn eval_batches(
    config: &RunConfig,
    index: usize,
    tokenizer: &Tokenizer,
) -> Result<Vec<TokenBatch>> {
    let experience = &config.experiences[index];
    batches(
        config,
        &experience.eval,
        tokenizer,
        config.eval_metadata_of(index),
        config.seq_len_of(index),
    )
    .with_context(|| format!("eval set of experience `{}`", experience.name))
}

/// The first `eval.max_sequences` packed sequences of `files` in file order, batched.
pub fn held_out_batches(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Tokenizer,
    seq_len: usize,
) -> Result<Vec<TokenBatch>> {
    batches(
        config,
        files,
        tokenizer,
        config.held_out_metadata(),
        seq_len,
    )
}

/// The first `eval.max_sequences` packed sequences of `files` in file order under `metadata`
/// (never filtered: an eval set is scored whole), batched.
fn batches(
    config: &RunConfig,
    files: &[String],
    tokenizer: &Tokenizer,
    metadata: MetadataSource<'_>,
    seq_len: usize,
) -> Result<Vec<TokenBatch>> {
    let paths = expand_paths(files)?;
    let options = TextSourceOptions {
        shuffle: false,
        ..text_options(config, 0)
    };
    let columns = document_columns(metadata, None, "eval")?;
    let source = ParquetTextSource::open_with(&paths, options, columns)?;
    let sequences = eval_token_sequences(
        source,
        tokenizer,
        seq_len,
        config.eval.max_sequences,
        conditioning(config, metadata),
    )?;
    Ok(sequences
        .chunks(config.eval.batch_size.max(1))
        .map(TokenBatch::from_token_sequences)
        .collect())
}
