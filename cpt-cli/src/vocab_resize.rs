//! `[model.resize_vocab]` seen from a run: checking the run's tokenizer against the model's
//! vocabulary, and the new rows a resize adds (the tensor work is cpt-models' `resize`).
//!
//! The surgery runs wherever a run builds its starting model, so a resumed run rebuilds the
//! resized shape (the same rows: every input is a file or the seed) before the checkpoint's
//! weights replace them; exports and plans read the resized config from [`resized_vocab`].

use anyhow::{Context, Result, bail};
use cpt_core::RunConfig;
use cpt_core::config::{ResizeVocab, VocabInit};
use cpt_data::{Tokenizer, old_pieces};
use cpt_models::resize::NewRows;
use std::path::PathBuf;

/// How a model of `model_vocab` rows grows to the tokenizer's vocabulary.
pub struct VocabGrowth {
    /// The new vocabulary size (the tokenizer's).
    pub new_vocab: usize,
    /// How the new rows start.
    pub init: NewRows,
}

/// The vocabulary size of a model of `model_vocab` rows once the run's `[model.resize_vocab]`
/// has applied: the tokenizer's, or unchanged without one.
pub fn resized_vocab(run: &RunConfig, tokenizer: &Tokenizer, model_vocab: usize) -> usize {
    match run.model.resize_vocab {
        Some(_) => tokenizer.vocab_size().max(model_vocab),
        None => model_vocab,
    }
}

/// Check the run's `tokenizer` against a model of `model_vocab` rows (`size_key`: the config key
/// that holds it, for errors) and, under `[model.resize_vocab]`, say how it grows. `std`: the
/// standard deviation of `normal` rows.
pub fn plan_growth(
    run: &RunConfig,
    tokenizer: &Tokenizer,
    model_vocab: usize,
    size_key: &str,
    std: f64,
) -> Result<Option<VocabGrowth>> {
    let wanted = tokenizer.vocab_size();
    let tokenizer_file = tokenizer.origin().display();
    let Some(resize) = &run.model.resize_vocab else {
        if wanted > model_vocab {
            bail!(
                "config key `{size_key}`: the model's vocabulary ({model_vocab}) is smaller than the tokenizer's ({wanted}, {tokenizer_file}); add `[model.resize_vocab]` to grow the model"
            );
        }
        return Ok(None);
    };
    if wanted < model_vocab {
        bail!(
            "config key `model.resize_vocab`: the tokenizer's vocabulary ({wanted}, {tokenizer_file}) is smaller than the model's ({model_vocab}); a resize only adds rows"
        );
    }
    if wanted == model_vocab {
        bail!(
            "config key `model.resize_vocab`: the tokenizer's vocabulary ({wanted}, {tokenizer_file}) is already the model's; nothing to add (remove the table or extend the tokenizer with `cpt tokenizer extend`)"
        );
    }
    let old = old_tokenizer(run, resize)?;
    if let Some(old) = &old {
        check_ids_kept(tokenizer, old)?;
    }
    let init = match resize.init {
        VocabInit::Mean => NewRows::Mean,
        VocabInit::Normal => NewRows::Normal {
            std,
            seed: run.seed,
        },
        VocabInit::SubwordMean => {
            let old = old
                .as_ref()
                .expect("old_tokenizer requires it for subword_mean");
            let pieces = (model_vocab..wanted)
                .map(|id| old_pieces(tokenizer, old, id as u32))
                .collect::<Result<Vec<_>, _>>()
                .context("config key `model.resize_vocab.init` = \"subword_mean\"")?;
            NewRows::SubwordMean(pieces)
        }
    };
    Ok(Some(VocabGrowth {
        new_vocab: wanted,
        init,
    }))
}

/// The model's own tokenizer: `model.resize_vocab.old_tokenizer`, else the `tokenizer.json` of
/// `model.from` where there is one. Required for `subword_mean`.
fn old_tokenizer(run: &RunConfig, resize: &ResizeVocab) -> Result<Option<Tokenizer>> {
    let (path, given): (Option<PathBuf>, bool) = match (&resize.old_tokenizer, &run.model.from) {
        (Some(path), _) => (Some(path.clone()), true),
        (None, Some(from)) if from.is_dir() => (Some(from.join("tokenizer.json")), false),
        (None, _) => (None, false),
    };
    let path = path.filter(|p| given || p.exists());
    match path {
        Some(path) => Ok(Some(Tokenizer::from_file(&path).with_context(
            || "config key `model.resize_vocab.old_tokenizer`: the model's own tokenizer",
        )?)),
        None if resize.init == VocabInit::SubwordMean => bail!(
            "config key `model.resize_vocab.old_tokenizer`: `subword_mean` needs the model's own tokenizer, and `model.from` holds no tokenizer.json"
        ),
        None => Ok(None),
    }
}

/// Every token of `old` keeps its id in `new`: otherwise the model's rows would mean other
/// tokens.
fn check_ids_kept(new: &Tokenizer, old: &Tokenizer) -> Result<()> {
    let new_vocab = new.inner().get_vocab(true);
    let mut old_vocab: Vec<(String, u32)> = old.inner().get_vocab(true).into_iter().collect();
    old_vocab.sort_unstable_by_key(|(_, id)| *id);
    for (token, id) in old_vocab {
        if new_vocab.get(&token) != Some(&id) {
            let now = new
                .inner()
                .id_to_token(id)
                .unwrap_or_else(|| "nothing".into());
            bail!(
                "config key `data.tokenizer`: {} gives id {id} to `{now}`, the model's tokenizer {} to `{token}`; an extended tokenizer must keep every existing id (see `cpt tokenizer extend`)",
                new.origin().display(),
                old.origin().display()
            );
        }
    }
    Ok(())
}
