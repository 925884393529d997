//! `cpt data prepare`, `cpt tokenizer train` and `cpt tokenizer extend`.

use anyhow::{Result, bail};
use clap::Subcommand;
use cpt_data::{
    DEFAULT_EOS_TOKEN, DEFAULT_ROW_GROUP_ROWS, Tokenizer, count_tokens_and_chars, expand_paths,
    extend_bpe_from_parquet, prepare, train_bpe_from_parquet,
};
use std::path::{Path, PathBuf};

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
    /// Append new BPE merges learned on Parquet text to a tokenizer: existing ids keep their
    /// tokens, the new ones get the ids after them. Prints tokens per character before and
    /// after, on the new text and on `--compare` text.
    Extend {
        /// The `tokenizer.json` to extend (a BPE model).
        #[arg(long)]
        tokenizer: PathBuf,
        /// Parquet files or globs of the new domain.
        #[arg(long = "input", required = true, num_args = 1..)]
        inputs: Vec<String>,
        /// Number of new tokens (one merge each).
        #[arg(long)]
        add: usize,
        /// Parquet files or globs measured before and after only (old-domain text, say).
        #[arg(long = "compare", num_args = 1..)]
        compare: Vec<String>,
        /// Text column.
        #[arg(long, default_value = "text")]
        text_column: String,
        /// Output path of the extended `tokenizer.json` (written atomically).
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
        TokenizerCommand::Extend {
            tokenizer,
            inputs,
            add,
            compare,
            text_column,
            out,
        } => extend(&tokenizer, &inputs, add, &compare, &text_column, &out),
    }
}

/// `cpt tokenizer extend`: learn, measure, write.
fn extend(
    base_path: &Path,
    inputs: &[String],
    add: usize,
    compare: &[String],
    column: &str,
    out: &Path,
) -> Result<()> {
    let base = Tokenizer::from_file(base_path)?;
    let files = expand_paths(inputs)?;
    let compare_files = match compare.is_empty() {
        true => Vec::new(),
        false => expand_paths(compare)?,
    };
    let extended = extend_bpe_from_parquet(&base, &files, column, add)?;
    let mut rows = vec![("input", &files)];
    if !compare_files.is_empty() {
        rows.push(("compare", &compare_files));
    }
    println!(
        "{:<8} {:>10} {:>14} {:>13} {:>16} {:>15}",
        "corpus", "chars", "tokens before", "tokens after", "tokens/char bef.", "tokens/char aft."
    );
    for (name, files) in rows {
        let (before, chars) = count_tokens_and_chars(&base, files, column)?;
        let (after, _) = count_tokens_and_chars(&extended.tokenizer, files, column)?;
        let per_char = |t: u64| t as f64 / chars.max(1) as f64;
        println!(
            "{name:<8} {chars:>10} {before:>14} {after:>13} {:>16.4} {:>15.4}",
            per_char(before),
            per_char(after)
        );
    }
    extended.tokenizer.save(out)?;
    let first = extended.first_new_id;
    println!(
        "{} + {add} tokens (ids {first}..{}) → {}",
        base.vocab_size(),
        first as usize + add,
        out.display()
    );
    Ok(())
}
