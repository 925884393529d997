//! Batch types that cross crate walls: made by cpt-data, consumed by models.
//!
//! They hold plain host data (no backend type), so data pipelines, replay buffers and checkpoints
//! never depend on where the model runs; a model turns a batch into tensors on its own device.

use serde::{Deserialize, Serialize};

/// A batch of packed token sequences for causal language modelling.
///
/// `tokens` is row-major `[batch_size, seq_len]`; the loss predicts token `t + 1` from tokens
/// `..= t` inside each row (the Hugging Face `labels = input_ids` convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBatch {
    /// Token ids, row-major `[batch_size, seq_len]`.
    pub tokens: Vec<u32>,
    /// Number of sequences.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
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
        }
    }

    /// Row `i` of the batch.
    pub fn sequence(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Tokens whose next token the loss predicts: `seq_len - 1` per row.
    pub fn predicted_tokens(&self) -> usize {
        self.batch_size * self.seq_len.saturating_sub(1)
    }
}

impl crate::model::Batch for TokenBatch {
    type Item = Vec<u32>;

    fn from_items(items: Vec<Vec<u32>>) -> Self {
        Self::from_sequences(&items)
    }

    fn into_items(self) -> Vec<Vec<u32>> {
        if self.seq_len == 0 {
            return vec![Vec::new(); self.batch_size];
        }
        self.tokens
            .chunks(self.seq_len)
            .map(<[u32]>::to_vec)
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
    fn fit(mut item: Vec<u32>, like: &Vec<u32>, more: &mut dyn FnMut() -> Vec<u32>) -> Vec<u32> {
        while item.len() < like.len() {
            let next = more();
            assert!(!next.is_empty(), "replayed sequences are never empty");
            item.extend(next);
        }
        item.truncate(like.len());
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
        let like = vec![0u32; 5];
        let mut pool = vec![vec![7, 8, 9], vec![4, 5, 6]].into_iter();
        let mut more = || pool.next().unwrap();
        assert_eq!(
            TokenBatch::fit(vec![1, 2, 3, 4, 5, 6, 7], &like, &mut more),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            TokenBatch::fit(vec![1, 2], &like, &mut more),
            [1, 2, 7, 8, 9]
        );
        // An item of the batch's length is kept with no further draw.
        assert_eq!(TokenBatch::fit(vec![9; 5], &like, &mut more), [9; 5]);
        assert_eq!(pool.next(), Some(vec![4, 5, 6]));
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
        let rows = vec![vec![1, 2], vec![3, 4], vec![5, 6]];
        let batch = TokenBatch::from_items(rows.clone());
        assert_eq!(batch.units(), 6);
        assert_eq!(batch.into_items(), rows);
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
