//! `cpt data prepare` and `cpt tokenizer train`.

use anyhow::{Result, bail};
use clap::Subcommand;
use cpt_data::{
    DEFAULT_EOS_TOKEN, DEFAULT_ROW_GROUP_ROWS, expand_paths, prepare, train_bpe_from_parquet,
};
use std::path::PathBuf;

/// `cpt data ...`
#[derive(Subcommand)]
pub enum DataCommand {
    /// Text files, directories or JSONL → Parquet (zstd, Hugging Face datasets layout) with a
    /// deterministic held-out split by hash of document id.
    Prepare {
        /// Inputs: text files (one document each), directories (walked), `.jsonl` files.
        #[arg(long = "input", required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// Output directory: receives `train.parquet` and `eval.parquet`.
        #[arg(long)]
        out: PathBuf,
        /// Fraction of documents held out for evaluation.
        #[arg(long, default_value_t = 0.05)]
        eval_fraction: f64,
        /// Rows per Parquet row group.
        #[arg(long, default_value_t = DEFAULT_ROW_GROUP_ROWS)]
        row_group_rows: usize,
    },
}

/// `cpt tokenizer ...`
#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on Parquet text and write `tokenizer.json`.
    Train {
        /// Parquet files or globs.
        #[arg(long = "input", required = true, num_args = 1..)]
        inputs: Vec<String>,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Special tokens (the first is the end-of-text token).
        #[arg(long = "special", default_values_t = [DEFAULT_EOS_TOKEN.to_string()])]
        special_tokens: Vec<String>,
        /// Text column.
        #[arg(long, default_value = "text")]
        column: String,
        /// Output path of `tokenizer.json`.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Run a `cpt data` command.
pub fn data(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Prepare {
            inputs,
            out,
            eval_fraction,
            row_group_rows,
        } => {
            if row_group_rows == 0 {
                bail!("--row-group-rows must be at least 1");
            }
            let report = prepare(&inputs, &out, eval_fraction, row_group_rows)?;
            println!(
                "{} train and {} eval documents from {} files ({} empty skipped) → {}, {}",
                report.train_docs,
                report.eval_docs,
                report.files_read,
                report.skipped_empty,
                report.train_path.display(),
                report.eval_path.display()
            );
            Ok(())
        }
    }
}

/// Run a `cpt tokenizer` command.
pub fn tokenizer(command: TokenizerCommand) -> Result<()> {
    match command {
        TokenizerCommand::Train {
            inputs,
            vocab_size,
            special_tokens,
            column,
            out,
        } => {
            let files = expand_paths(&inputs)?;
            let tokenizer = train_bpe_from_parquet(&files, &column, vocab_size, &special_tokens)?;
            tokenizer.save(&out)?;
            println!(
                "tokenizer with {} tokens → {}",
                tokenizer.vocab_size(),
                out.display()
            );
            Ok(())
        }
    }
}
