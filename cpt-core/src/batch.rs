//! Batch types that cross crate walls: made by cpt-data, consumed by models.
//!
//! They hold plain host data (no backend type), so data pipelines, replay buffers and checkpoints
//! never depend on where the model runs; a model turns a batch into tensors on its own device.

use serde::{Deserialize, Serialize};

/// One packed token sequence: the item of a [`TokenBatch`], what text sources yield and replay
/// buffers store.
///
/// Serialised as a plain array of ids when it has no mask (the form checkpoints held before
/// masks existed), as `{tokens, loss_mask}` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SequenceRepr", into = "SequenceRepr")]
pub struct TokenSequence {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Whether each token is a target of the loss, one flag per token: `false` for tokens the
    /// model reads but is not trained to predict (metadata prefixes). `None`: every token is.
    pub loss_mask: Option<Vec<bool>>,
}

impl From<Vec<u32>> for TokenSequence {
    fn from(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            loss_mask: None,
        }
    }
}

/// The serialised forms of a [`TokenSequence`].
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SequenceRepr {
    Plain(Vec<u32>),
    Masked {
        tokens: Vec<u32>,
        loss_mask: Vec<bool>,
    },
}

impl From<SequenceRepr> for TokenSequence {
    fn from(repr: SequenceRepr) -> Self {
        match repr {
            SequenceRepr::Plain(tokens) => tokens.into(),
            SequenceRepr::Masked { tokens, loss_mask } => Self {
                tokens,
                loss_mask: Some(loss_mask),
            },
        }
    }
}

impl From<TokenSequence> for SequenceRepr {
    fn from(sequence: TokenSequence) -> Self {
        match sequence.loss_mask {
            None => Self::Plain(sequence.tokens),
            Some(loss_mask) => Self::Masked {
                tokens: sequence.tokens,
                loss_mask,
            },
        }
    }
}

/// A batch of packed token sequences for causal language modelling.
///
/// `tokens` is row-major `[batch_size, seq_len]`; the loss predicts token `t + 1` from tokens
/// `..= t` inside each row (the Hugging Face `labels = input_ids` convention), counting only
/// the targets `loss_mask` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBatch {
    /// Token ids, row-major `[batch_size, seq_len]`.
    pub tokens: Vec<u32>,
    /// Number of sequences.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Whether each token is a target of the loss, row-major `[batch_size, seq_len]`; `None`
    /// (the common case, and the fast path): every token after a row's first is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_mask: Option<Vec<bool>>,
}

impl TokenBatch {
    /// `batch_size` sequences of `seq_len` token ids drawn uniformly below `vocab` from `seed`:
    /// the inputs of throughput benchmarks, whose work does not depend on the text.
    pub fn random(batch_size: usize, seq_len: usize, vocab: usize, seed: u64) -> Self {
        let mut rng = crate::SplitMix64::new(seed);
        let rows: Vec<Vec<u32>> = (0..batch_size)
            .map(|_| {
                (0..seq_len)
                    .map(|_| rng.below(vocab as u64) as u32)
                    .collect()
            })
            .collect();
        Self::from_sequences(&rows)
    }

    /// Stack equal-length sequences into one batch. Panics if the lengths differ, which would be a
    /// bug in the packer (it only ever emits full sequences).
    pub fn from_sequences(sequences: &[Vec<u32>]) -> Self {
        let seq_len = sequences.first().map_or(0, Vec::len);
        let mut tokens = Vec::with_capacity(seq_len * sequences.len());
        for sequence in sequences {
            assert_eq!(
                sequence.len(),
                seq_len,
                "packed sequences must share one length"
            );
            tokens.extend_from_slice(sequence);
        }
        Self {
            tokens,
            batch_size: sequences.len(),
            seq_len,
            loss_mask: None,
        }
    }

    /// Stack equal-length sequences with their loss masks; the batch has a mask only if some
    /// sequence has one (a sequence without one counts every token).
    pub fn from_token_sequences(sequences: &[TokenSequence]) -> Self {
        let seq_len = sequences.first().map_or(0, |s| s.tokens.len());
        let mut tokens = Vec::with_capacity(seq_len * sequences.len());
        let masked = sequences.iter().any(|s| s.loss_mask.is_some());
        let mut loss_mask = masked.then(|| Vec::with_capacity(seq_len * sequences.len()));
        for sequence in sequences {
            assert_eq!(
                sequence.tokens.len(),
                seq_len,
                "packed sequences must share one length"
            );
            tokens.extend_from_slice(&sequence.tokens);
            if let Some(out) = loss_mask.as_mut() {
                match &sequence.loss_mask {
                    Some(mask) => {
                        assert_eq!(mask.len(), seq_len, "one mask flag per token");
                        out.extend_from_slice(mask);
                    }
                    None => out.extend(std::iter::repeat_n(true, seq_len)),
                }
            }
        }
        Self {
            tokens,
            batch_size: sequences.len(),
            seq_len,
            loss_mask,
        }
    }

    /// Row `i` of the batch.
    pub fn sequence(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Positions whose next token the loss predicts: `seq_len - 1` per row, less those whose
    /// next token the loss mask leaves out. The count the mean loss divides by.
    pub fn predicted_tokens(&self) -> usize {
        match &self.loss_mask {
            None => self.batch_size * self.seq_len.saturating_sub(1),
            Some(mask) => mask
                .chunks(self.seq_len.max(1))
                .map(|row| row.iter().skip(1).filter(|&&kept| kept).count())
                .sum(),
        }
    }

    /// The loss weight of each position, row-major `[batch_size, seq_len]`: 1 where the next
    /// token is a kept target, 0 at each row's last position (it predicts nothing) and where the
    /// mask leaves the next token out.
    pub fn target_weights(&self) -> Vec<f32> {
        let seq = self.seq_len;
        (0..self.batch_size * seq)
            .map(|i| {
                let predicts =
                    i % seq != seq - 1 && self.loss_mask.as_ref().is_none_or(|mask| mask[i + 1]);
                if predicts { 1.0 } else { 0.0 }
            })
            .collect()
    }
}

impl crate::model::Batch for TokenBatch {
    type Item = TokenSequence;

    fn from_items(items: Vec<TokenSequence>) -> Self {
        Self::from_token_sequences(&items)
    }

    fn into_items(self) -> Vec<TokenSequence> {
        let seq = self.seq_len;
        (0..self.batch_size)
            .map(|i| TokenSequence {
                tokens: self.tokens[i * seq..(i + 1) * seq].to_vec(),
                loss_mask: self
                    .loss_mask
                    .as_ref()
                    .map(|mask| mask[i * seq..(i + 1) * seq].to_vec()),
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.batch_size
    }

    fn units(&self) -> usize {
        self.batch_size * self.seq_len
    }

    /// A sequence of another stage's length, made `like`'s length: a longer one keeps its first
    /// tokens; a shorter one is followed by further drawn sequences (each a window of packed
    /// documents, so joining two is like packing one more boundary) and then cut.
    fn fit(
        mut item: TokenSequence,
        like: &TokenSequence,
        more: &mut dyn FnMut() -> TokenSequence,
    ) -> TokenSequence {
        let len = like.tokens.len();
        while item.tokens.len() < len {
            let next = more();
            assert!(
                !next.tokens.is_empty(),
                "replayed sequences are never empty"
            );
            // Masks join too; a sequence without one counts every token.
            if item.loss_mask.is_some() || next.loss_mask.is_some() {
                let mask_of = |s: &TokenSequence| {
                    s.loss_mask
                        .clone()
                        .unwrap_or_else(|| vec![true; s.tokens.len()])
                };
                let mut mask = mask_of(&item);
                mask.extend(mask_of(&next));
                item.loss_mask = Some(mask);
            }
            item.tokens.extend(next.tokens);
        }
        item.tokens.truncate(len);
        if let Some(mask) = item.loss_mask.as_mut() {
            mask.truncate(len);
        }
        item
    }
}

/// One image example: normalised pixels, an integer label and optional caption tokens.
///
/// Pixels are `[channels, height, width]`, row-major, already resized, cropped, augmented and
/// normalised by the data pipeline, so a replay buffer stores exactly what the model saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageItem {
    /// Pixel values, `[channels, height, width]`.
    pub pixels: Vec<f32>,
    /// Channels, height and width of `pixels`.
    pub shape: [usize; 3],
    /// Class label (the dataset's integer `label`), `-1` when the dataset has none.
    pub label: i64,
    /// Caption token ids padded to a fixed length (image–text pairs); empty otherwise.
    #[serde(default)]
    pub text: Vec<u32>,
}

/// A batch of images of one shape, with labels and (for image–text models) caption tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageBatch {
    /// Pixel values, row-major `[batch_size, channels, height, width]`.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub batch_size: usize,
    /// Channels, height and width of every image.
    pub shape: [usize; 3],
    /// One label per image.
    pub labels: Vec<i64>,
    /// Caption token ids, row-major `[batch_size, text_len]`; empty without captions.
    pub text: Vec<u32>,
    /// Tokens per caption (0 without captions).
    pub text_len: usize,
}

impl ImageBatch {
    /// Stack images of one shape (and captions of one length). Panics on mixed shapes, which
    /// would be a bug in the pipeline: it resizes every image to the model's size.
    pub fn from_images(items: &[ImageItem]) -> Self {
        let shape = items.first().map_or([0; 3], |i| i.shape);
        let text_len = items.first().map_or(0, |i| i.text.len());
        let mut batch = Self {
            pixels: Vec::with_capacity(items.len() * shape.iter().product::<usize>()),
            batch_size: items.len(),
            shape,
            labels: Vec::with_capacity(items.len()),
            text: Vec::with_capacity(items.len() * text_len),
            text_len,
        };
        for item in items {
            assert_eq!(item.shape, shape, "images of one batch share one shape");
            assert_eq!(item.text.len(), text_len, "captions share one length");
            batch.pixels.extend_from_slice(&item.pixels);
            batch.labels.push(item.label);
            batch.text.extend_from_slice(&item.text);
        }
        batch
    }

    /// Pixel values of one image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }
}

impl crate::model::Batch for ImageBatch {
    type Item = ImageItem;

    fn from_items(items: Vec<ImageItem>) -> Self {
        Self::from_images(&items)
    }

    fn into_items(self) -> Vec<ImageItem> {
        let n = self.image_len();
        (0..self.batch_size)
            .map(|i| ImageItem {
                pixels: self.pixels[i * n..(i + 1) * n].to_vec(),
                shape: self.shape,
                label: self.labels[i],
                text: self.text[i * self.text_len..(i + 1) * self.text_len].to_vec(),
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.batch_size
    }

    /// Images: throughput and budgets of vision runs count samples.
    fn units(&self) -> usize {
        self.batch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_of_another_length_are_cut_or_joined_to_the_batch_length() {
        use crate::model::Batch;
        let like: TokenSequence = vec![0u32; 5].into();
        let masked = TokenSequence {
            tokens: vec![7, 8, 9],
            loss_mask: Some(vec![false, true, true]),
        };
        let mut pool = vec![masked, vec![4, 5, 6].into()].into_iter();
        let mut more = || pool.next().unwrap();
        let cut = TokenBatch::fit(vec![1, 2, 3, 4, 5, 6, 7].into(), &like, &mut more);
        assert_eq!(cut.tokens, [1, 2, 3, 4, 5]);
        // Joined with a masked sequence: the mask joins too, and is cut with the tokens.
        let joined = TokenBatch::fit(vec![1, 2].into(), &like, &mut more);
        assert_eq!(joined.tokens, [1, 2, 7, 8, 9]);
        assert_eq!(joined.loss_mask, Some(vec![true, true, false, true, true]));
        // An item of the batch's length is kept with no further draw.
        let kept = TokenBatch::fit(vec![9; 5].into(), &like, &mut more);
        assert_eq!(kept.tokens, [9; 5]);
        assert_eq!(pool.next(), Some(vec![4, 5, 6].into()));
    }

    #[test]
    fn stacks_rows_in_order() {
        let batch = TokenBatch::from_sequences(&[vec![1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(batch.tokens, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(batch.sequence(1), &[4, 5, 6]);
        assert_eq!(batch.predicted_tokens(), 4);
    }

    #[test]
    fn items_round_trip() {
        use crate::model::Batch;
        let rows: Vec<TokenSequence> =
            vec![vec![1, 2].into(), vec![3, 4].into(), vec![5, 6].into()];
        let batch = TokenBatch::from_items(rows.clone());
        assert_eq!(batch.loss_mask, None);
        assert_eq!(batch.units(), 6);
        assert_eq!(batch.into_items(), rows);
    }

    #[test]
    fn masks_travel_with_their_rows_and_shrink_the_predicted_count() {
        use crate::model::Batch;
        let masked = TokenSequence {
            tokens: vec![7, 8, 9, 10],
            loss_mask: Some(vec![false, false, true, true]),
        };
        let rows = vec![masked.clone(), vec![1, 2, 3, 4].into()];
        let batch = TokenBatch::from_items(rows);
        // Row 0 predicts tokens 9 and 10 only (token 8 is masked, token 7 is never a target);
        // the unmasked row predicts all three of its later tokens.
        assert_eq!(batch.predicted_tokens(), 2 + 3);
        assert_eq!(
            batch.target_weights(),
            vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
        );
        let items = batch.into_items();
        assert_eq!(items[0], masked);
        assert_eq!(items[1].loss_mask, Some(vec![true; 4]));
    }

    #[test]
    fn sequences_without_a_mask_serialise_as_plain_arrays() {
        let plain: TokenSequence = vec![1, 2].into();
        assert_eq!(serde_json::to_string(&plain).unwrap(), "[1,2]");
        let masked = TokenSequence {
            tokens: vec![1, 2],
            loss_mask: Some(vec![false, true]),
        };
        let json = serde_json::to_string(&masked).unwrap();
        assert_eq!(json, r#"{"tokens":[1,2],"loss_mask":[false,true]}"#);
        for sequence in [plain, masked] {
            let text = serde_json::to_string(&sequence).unwrap();
            assert_eq!(
                serde_json::from_str::<TokenSequence>(&text).unwrap(),
                sequence
            );
        }
    }

    #[test]
    fn image_items_round_trip() {
        use crate::model::Batch;
        let item = |v: f32, label, text: Vec<u32>| ImageItem {
            pixels: vec![v; 12],
            shape: [3, 2, 2],
            label,
            text,
        };
        let items = vec![item(0.5, 3, vec![1, 2]), item(-1.0, 7, vec![4, 0])];
        let batch = ImageBatch::from_items(items.clone());
        assert_eq!(batch.pixels.len(), 24);
        assert_eq!(batch.labels, vec![3, 7]);
        assert_eq!(batch.text, vec![1, 2, 4, 0]);
        assert_eq!(batch.units(), 2);
        assert_eq!(batch.into_items(), items);
    }
}
