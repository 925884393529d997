//! Model surgery for a larger vocabulary or a longer text context: new rows of a token
//! embedding (and of an untied LM head), new positions of a learned position table. Old rows
//! are kept bit for bit, so the resized model computes the same function on old inputs.
//!
//! New vocabulary rows start as the mean of all old rows, as the mean of the old rows of the
//! pieces the new token's text encodes to under the old tokenizer (the mean-of-subwords
//! initialisation of vocabulary adaptation, e.g. "Cabrita: closing the gap for foreign
//! languages", 2023), or normal draws from the run's seed. New positions are stretched from the
//! old table ("Extending Context Window of Large Language Models via Positional Interpolation",
//! 2023; Long-CLIP's knowledge-preserved stretching, "Long-CLIP: Unlocking the Long-Text
//! Capability of CLIP", 2024) or copied after it ("Longformer: The Long-Document Transformer",
//! 2020).
//!
//! The arithmetic runs on the host in f64 and is rounded to f32 once: a resize happens once per
//! run, and a value that does not depend on the backend's summation order resumes exactly.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use cpt_core::SplitMix64;
use cpt_core::config::PositionInit;
use cpt_core::rng::{domain, stable_hash};

use crate::clip::{ClipConfig, ClipModel};
use crate::error::{ModelError, Result};
use crate::llama::{LlamaConfig, LlamaForCausalLM};

/// How the new rows of a vocabulary table start.
#[derive(Debug, Clone, PartialEq)]
pub enum NewRows {
    /// Every new row is the mean of all old rows.
    Mean,
    /// New row `i` is the mean of the old rows listed in `pieces[i]` (the ids its text encodes
    /// to under the old tokenizer); one list per new row.
    SubwordMean(Vec<Vec<u32>>),
    /// Normal with mean 0 and standard deviation `std`, drawn from cpt's RNG keyed by
    /// `(seed, domain::RESIZE_VOCAB, parameter path)`.
    Normal {
        /// Standard deviation.
        std: f64,
        /// The run's seed.
        seed: u64,
    },
}

/// A `[rows, width]` table as host rows.
fn host_rows<B: Backend>(table: &Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [rows, width] = table.dims();
    let values = table
        .to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("an f32 table");
    (0..rows)
        .map(|r| values[r * width..(r + 1) * width].to_vec())
        .collect()
}

fn table_from_rows<B: Backend>(rows: &[Vec<f32>], device: &B::Device) -> Tensor<B, 2> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
}

/// The mean of `rows[ids]`, in f64.
fn mean_of(rows: &[Vec<f32>], ids: impl ExactSizeIterator<Item = usize>) -> Vec<f32> {
    let width = rows.first().map_or(0, Vec::len);
    let n = ids.len() as f64;
    let mut sum = vec![0f64; width];
    for id in ids {
        for (s, v) in sum.iter_mut().zip(&rows[id]) {
            *s += *v as f64;
        }
    }
    sum.into_iter().map(|s| (s / n) as f32).collect()
}

/// `table` `[old, width]` grown to `[new_rows, width]`: old rows unchanged, new ones by `init`.
/// `path` (the parameter's path) keys the normal draws and names the table in errors.
pub fn grow_rows<B: Backend>(
    table: Tensor<B, 2>,
    new_rows: usize,
    init: &NewRows,
    path: &str,
) -> Result<Tensor<B, 2>> {
    let device = table.device();
    let mut rows = host_rows(&table);
    let (old, width) = (rows.len(), table.dims()[1]);
    let added = new_rows
        .checked_sub(old)
        .ok_or_else(|| ModelError::Resize {
            what: path.to_string(),
            message: format!("{new_rows} rows would shrink the table of {old}"),
        })?;
    match init {
        NewRows::Mean => {
            let mean = mean_of(&rows, 0..old);
            rows.extend(std::iter::repeat_n(mean, added));
        }
        NewRows::SubwordMean(pieces) => {
            if pieces.len() != added {
                return Err(ModelError::Resize {
                    what: path.to_string(),
                    message: format!("{} piece lists for {added} new rows", pieces.len()),
                });
            }
            for (i, ids) in pieces.iter().enumerate() {
                if ids.is_empty() {
                    return Err(ModelError::Resize {
                        what: path.to_string(),
                        message: format!("new row {} has no old pieces", old + i),
                    });
                }
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= old) {
                    return Err(ModelError::Resize {
                        what: path.to_string(),
                        message: format!(
                            "new row {}: piece id {bad} is outside the old table ({old} rows)",
                            old + i
                        ),
                    });
                }
                let mean = mean_of(&rows, ids.iter().map(|&id| id as usize));
                rows.push(mean);
            }
        }
        NewRows::Normal { std, seed } => {
            let mut rng =
                SplitMix64::derive(*seed, &[domain::RESIZE_VOCAB, stable_hash(path.as_bytes())]);
            for _ in 0..added {
                rows.push(
                    (0..width)
                        .map(|_| (rng.next_normal() * std) as f32)
                        .collect(),
                );
            }
        }
    }
    Ok(table_from_rows(&rows, &device))
}

/// `param` replaced by `value`, keeping its id and whether it takes gradients (a tensor made
/// from host data takes none: without this, the grown tables would silently stay frozen).
fn replaced<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    value: Tensor<B, D>,
) -> Param<Tensor<B, D>> {
    let require_grad = param.is_require_grad();
    Param::initialized(param.id, value.set_require_grad(require_grad))
}

/// A LLaMA model whose vocabulary grows from `config.vocab_size` to `new_vocab`: new rows of
/// `model.embed_tokens.weight` and, when untied, of `lm_head` (the new columns of burn's
/// `[hidden, vocab]` weight), each by `init`. Returns the new config with it.
pub fn resize_llama_vocab<B: Backend>(
    model: LlamaForCausalLM<B>,
    config: &LlamaConfig,
    new_vocab: usize,
    init: &NewRows,
) -> Result<(LlamaConfig, LlamaForCausalLM<B>)> {
    let mut model = model;
    let embed = model.model.embed_tokens.weight;
    let grown = grow_rows(embed.val(), new_vocab, init, "model.embed_tokens.weight")?;
    model.model.embed_tokens.weight = replaced(embed, grown);
    if let Some(mut head) = model.lm_head.take() {
        // burn stores the head as `[hidden, vocab]`: its vocabulary rows are columns.
        let rows = grow_rows(
            head.weight.val().transpose(),
            new_vocab,
            init,
            "lm_head.weight",
        )?;
        head.weight = replaced(head.weight, rows.transpose());
        if let Some(bias) = head.bias.take() {
            // LLaMA's head has no bias; a head that has one gets zeros for the new tokens.
            let old = bias.val();
            let zeros = Tensor::zeros([new_vocab - old.dims()[0]], &old.device());
            head.bias = Some(replaced(bias, Tensor::cat(vec![old, zeros], 0)));
        }
        model.lm_head = Some(head);
    }
    let config = LlamaConfig {
        vocab_size: new_vocab,
        ..config.clone()
    };
    Ok((config, model))
}

/// A CLIP model whose text vocabulary grows to `new_vocab` (the token embedding; CLIP has no LM
/// head). Returns the new config with it.
pub fn resize_clip_vocab<B: Backend>(
    model: ClipModel<B>,
    config: &ClipConfig,
    new_vocab: usize,
    init: &NewRows,
) -> Result<(ClipConfig, ClipModel<B>)> {
    let mut model = model;
    let embeddings = &mut model.text_model.embeddings;
    let weight = embeddings.token_embedding.weight.clone();
    let grown = grow_rows(
        weight.val(),
        new_vocab,
        init,
        "text_model.embeddings.token_embedding.weight",
    )?;
    embeddings.token_embedding.weight = replaced(weight, grown);
    let mut config = config.clone();
    config.text_config.vocab_size = new_vocab;
    Ok((config, model))
}

/// The rows of a position table `[old, width]` stretched or copied to `new_len` rows.
///
/// - `Interpolate`: rows `..keep` unchanged; new row `j ≥ keep` is the linear interpolation of
///   the old table at `x = keep + (j − keep)·(old − 1 − keep)/(new_len − 1 − keep)`, so the last
///   old row lands on the last new one (`x` is exact at both ends; `keep = 0` is plain position
///   interpolation).
/// - `Copy`: rows `..old` unchanged, new row `j ≥ old` is old row `j mod old`.
pub fn stretch_positions(
    rows: &[Vec<f32>],
    new_len: usize,
    init: PositionInit,
    keep: usize,
) -> Vec<Vec<f32>> {
    let old = rows.len();
    match init {
        PositionInit::Copy => (0..new_len).map(|j| rows[j % old].clone()).collect(),
        PositionInit::Interpolate => (0..new_len)
            .map(|j| {
                if j < keep {
                    return rows[j].clone();
                }
                let span_old = (old - 1 - keep) as f64;
                let span_new = (new_len - 1 - keep) as f64;
                let x = keep as f64 + (j - keep) as f64 * span_old / span_new;
                let lo = (x.floor() as usize).min(old - 1);
                let hi = (lo + 1).min(old - 1);
                let t = x - lo as f64;
                rows[lo]
                    .iter()
                    .zip(&rows[hi])
                    .map(|(&a, &b)| ((1.0 - t) * a as f64 + t * b as f64) as f32)
                    .collect()
            })
            .collect(),
    }
}

/// A CLIP model whose text position table grows to `new_len` positions (see
/// [`stretch_positions`]). Returns the new config with it.
pub fn resize_clip_text_positions<B: Backend>(
    model: ClipModel<B>,
    config: &ClipConfig,
    new_len: usize,
    init: PositionInit,
    keep: usize,
) -> Result<(ClipConfig, ClipModel<B>)> {
    let old = config.text_config.max_position_embeddings;
    let invalid = |message: String| ModelError::Resize {
        what: "text_model.embeddings.position_embedding.weight".into(),
        message,
    };
    if new_len <= old {
        return Err(invalid(format!(
            "{new_len} positions do not extend the {old} the model has"
        )));
    }
    if init == PositionInit::Interpolate && keep + 1 >= old {
        return Err(invalid(format!(
            "keep_positions {keep} leaves fewer than 2 of the {old} positions to stretch"
        )));
    }
    let mut model = model;
    let embeddings = &mut model.text_model.embeddings;
    let weight = embeddings.position_embedding.weight.clone();
    let device = weight.device();
    let rows = stretch_positions(&host_rows(&weight.val()), new_len, init, keep);
    embeddings.position_embedding.weight = replaced(weight, table_from_rows(&rows, &device));
    let mut config = config.clone();
    config.text_config.max_position_embeddings = new_len;
    Ok((config, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny;
    use burn::backend::Flex;
    use burn::tensor::Int;

    type B = Flex;

    fn rows_of(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
        host_rows(&t)
    }

    fn logits(model: &LlamaForCausalLM<B>, ids: &[i64]) -> Vec<Vec<f32>> {
        let device = Default::default();
        let tokens =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
        let out = model.forward(tokens);
        let [_, seq, vocab] = out.dims();
        rows_of(out.reshape([seq, vocab]))
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6, "{what}: {x} vs {y}");
        }
    }

    /// The resized model's logits on old tokens equal the original's on the old columns, and
    /// its new columns are the hidden state times the new head rows.
    #[test]
    fn old_token_logits_are_unchanged_and_new_columns_follow_the_init() {
        let device = Default::default();
        for tied in [false, true] {
            let config = LlamaConfig {
                tie_word_embeddings: tied,
                ..tiny::llama()
            };
            let model = config.init_seeded::<B>(7, &device);
            let ids = [1i64, 5, 31, 2, 0, 17];
            let before = logits(&model, &ids);
            let init = NewRows::SubwordMean(vec![vec![1, 2], vec![31], vec![4, 4, 9]]);
            let (new_config, resized) = resize_llama_vocab(model, &config, 35, &init).unwrap();
            assert_eq!(new_config.vocab_size, 35);
            let after = logits(&resized, &ids);
            let hidden = rows_of({
                let tokens =
                    Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, 6]), &device);
                resized.hidden_states(tokens).reshape([6, 8])
            });
            let head_rows = match &resized.lm_head {
                Some(h) => rows_of(h.weight.val().transpose()),
                None => rows_of(resized.model.embed_tokens.weight.val()),
            };
            for (pos, (b, a)) in before.iter().zip(&after).enumerate() {
                assert_eq!(a.len(), 35);
                assert_close(
                    &a[..32],
                    b,
                    &format!("tied {tied}, position {pos}, old columns"),
                );
                for (v, row) in head_rows.iter().enumerate().skip(32) {
                    let dot: f32 = hidden[pos].iter().zip(row).map(|(h, w)| h * w).sum();
                    assert!(
                        (a[v] - dot).abs() <= 1e-5,
                        "new column {v}: {} vs {dot}",
                        a[v]
                    );
                }
            }
        }
    }

    /// The grown tables still train: on an autodiff backend every resized parameter takes
    /// gradients, as the loaded ones did.
    #[test]
    fn resized_tables_keep_taking_gradients() {
        type A = burn::backend::Autodiff<Flex>;
        let device = Default::default();
        let config = tiny::llama();
        let model = config.init_seeded::<A>(3, &device);
        assert!(model.model.embed_tokens.weight.is_require_grad());
        let (_, resized) = resize_llama_vocab(model, &config, 34, &NewRows::Mean).unwrap();
        assert!(resized.model.embed_tokens.weight.is_require_grad());
        assert!(resized.lm_head.unwrap().weight.is_require_grad());
        let config = tiny::clip();
        let model = config.init_seeded::<A>(3, &device);
        let (c, model) = resize_clip_vocab(model, &config, 34, &NewRows::Mean).unwrap();
        let (_, model) = resize_clip_text_positions(model, &c, 12, PositionInit::Copy, 0).unwrap();
        let embeddings = &model.text_model.embeddings;
        assert!(embeddings.token_embedding.weight.is_require_grad());
        assert!(embeddings.position_embedding.weight.is_require_grad());
    }

    #[test]
    fn subword_mean_rows_equal_the_hand_computed_means() {
        let device = Default::default();
        let table = Tensor::<B, 2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 10.0, -6.0, 0.5, 0.25], [4, 2]),
            &device,
        );
        let init = NewRows::SubwordMean(vec![vec![0, 1], vec![2, 3, 3], vec![1]]);
        let grown = rows_of(grow_rows(table, 7, &init, "t").unwrap());
        assert_eq!(
            grown[..4],
            [[1.0, 2.0], [3.0, 4.0], [10.0, -6.0], [0.5, 0.25]].map(|r| r.to_vec())
        );
        assert_eq!(grown[4], vec![2.0, 3.0]);
        assert_eq!(grown[5], vec![11.0 / 3.0, -5.5 / 3.0]);
        assert_eq!(grown[6], vec![3.0, 4.0]);
        let mean = rows_of(
            grow_rows(
                Tensor::<B, 2>::from_data(
                    TensorData::new(vec![1.0f32, 2.0, 3.0, 6.0], [2, 2]),
                    &device,
                ),
                4,
                &NewRows::Mean,
                "t",
            )
            .unwrap(),
        );
        assert_eq!(mean[2..], [vec![2.0, 4.0], vec![2.0, 4.0]]);
    }

    #[test]
    fn untied_head_gets_subword_means_of_its_own_rows() {
        let device = Default::default();
        let config = tiny::llama();
        let model = config.init_seeded::<B>(3, &device);
        let head_before = rows_of(model.lm_head.as_ref().unwrap().weight.val().transpose());
        let init = NewRows::SubwordMean(vec![vec![3, 8]]);
        let (_, resized) = resize_llama_vocab(model, &config, 33, &init).unwrap();
        let head = rows_of(resized.lm_head.unwrap().weight.val().transpose());
        let expected: Vec<f32> = head_before[3]
            .iter()
            .zip(&head_before[8])
            .map(|(a, b)| ((*a as f64 + *b as f64) / 2.0) as f32)
            .collect();
        assert_eq!(head[32], expected);
    }

    #[test]
    fn normal_rows_come_from_the_seed_and_the_path() {
        let device = Default::default();
        let table = || Tensor::<B, 2>::zeros([3, 4], &device);
        let draw = |seed, path| {
            let init = NewRows::Normal { std: 0.02, seed };
            rows_of(grow_rows(table(), 5, &init, path).unwrap())
        };
        assert_eq!(draw(1, "a"), draw(1, "a"));
        assert_ne!(draw(1, "a")[3], draw(2, "a")[3]);
        assert_ne!(draw(1, "a")[3], draw(1, "b")[3]);
        let rows = draw(1, "a");
        assert!(
            rows[3]
                .iter()
                .chain(&rows[4])
                .all(|v| v.abs() < 0.2 && *v != 0.0)
        );
        assert!(rows[..3].iter().flatten().all(|v| *v == 0.0));
    }

    #[test]
    fn shrinking_and_bad_pieces_are_errors_naming_the_table() {
        let device = Default::default();
        let table = || Tensor::<B, 2>::zeros([3, 2], &device);
        let err = grow_rows(table(), 2, &NewRows::Mean, "model.embed_tokens.weight").unwrap_err();
        assert!(
            err.to_string().contains("model.embed_tokens.weight")
                && err.to_string().contains("shrink"),
            "{err}"
        );
        let err = grow_rows(table(), 4, &NewRows::SubwordMean(vec![vec![3]]), "t").unwrap_err();
        assert!(err.to_string().contains("outside the old table"), "{err}");
        let err = grow_rows(table(), 4, &NewRows::SubwordMean(vec![vec![]]), "t").unwrap_err();
        assert!(err.to_string().contains("no old pieces"), "{err}");
    }

    #[test]
    fn clip_vocab_grows_the_token_embedding_only() {
        let device = Default::default();
        let config = tiny::clip();
        let model = config.init_seeded::<B>(5, &device);
        let before = rows_of(model.text_model.embeddings.token_embedding.weight.val());
        let tokens = [1u32, 4, 9, 3, 0, 0];
        let features = model.text_features(&tokens, 6).into_data();
        let (new_config, resized) = resize_clip_vocab(
            model,
            &config,
            34,
            &NewRows::SubwordMean(vec![vec![4], vec![1, 9]]),
        )
        .unwrap();
        assert_eq!(new_config.text_config.vocab_size, 34);
        let after = rows_of(resized.text_model.embeddings.token_embedding.weight.val());
        assert_eq!(after[..32], before[..]);
        assert_eq!(after[32], before[4]);
        resized
            .text_features(&tokens, 6)
            .into_data()
            .assert_approx_eq::<f32>(&features, burn::tensor::Tolerance::absolute(1e-6));
    }

    #[test]
    fn clip_position_extension_keeps_old_positions_and_documents_new_ones() {
        let device = Default::default();
        let config = tiny::clip(); // 8 positions
        let model = config.init_seeded::<B>(5, &device);
        let old = rows_of(model.text_model.embeddings.position_embedding.weight.val());
        let tokens = [1u32, 4, 9, 3, 0, 0];
        let features = model.text_features(&tokens, 6).into_data();

        let (c, copied) =
            resize_clip_text_positions(model.clone(), &config, 20, PositionInit::Copy, 0).unwrap();
        assert_eq!(c.text_config.max_position_embeddings, 20);
        let rows = rows_of(copied.text_model.embeddings.position_embedding.weight.val());
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[..8], old[..]);
        assert_eq!(rows[8], old[0]);
        assert_eq!(rows[19], old[3]);
        // Captions within the old length see the old positions: same features.
        copied
            .text_features(&tokens, 6)
            .into_data()
            .assert_approx_eq::<f32>(&features, burn::tensor::Tolerance::absolute(1e-6));

        // keep 4, stretch old 4..=7 over new 4..=10: x = 4 + (j - 4)·3/6.
        let (_, stretched) =
            resize_clip_text_positions(model, &config, 11, PositionInit::Interpolate, 4).unwrap();
        let rows = rows_of(
            stretched
                .text_model
                .embeddings
                .position_embedding
                .weight
                .val(),
        );
        assert_eq!(rows[..4], old[..4]);
        assert_eq!(rows[4], old[4]);
        assert_eq!(rows[10], old[7]);
        assert_eq!(rows[6], old[5]);
        let mid: Vec<f32> = old[5]
            .iter()
            .zip(&old[6])
            .map(|(a, b)| (0.5 * *a as f64 + 0.5 * *b as f64) as f32)
            .collect();
        assert_eq!(rows[7], mid);
    }

    #[test]
    fn position_extension_refuses_shrinking_and_too_large_keep() {
        let device = Default::default();
        let config = tiny::clip();
        let model = config.init_seeded::<B>(5, &device);
        let err = resize_clip_text_positions(model.clone(), &config, 8, PositionInit::Copy, 0)
            .unwrap_err();
        assert!(err.to_string().contains("do not extend"), "{err}");
        let err = resize_clip_text_positions(model, &config, 12, PositionInit::Interpolate, 7)
            .unwrap_err();
        assert!(err.to_string().contains("keep_positions"), "{err}");
    }
}
