//! cpt-data: the data side of continual pre-training — Parquet text and image sources streamed row
//! group by row group, image decoding and transforms, Hugging Face tokenizers (loading and byte-level BPE training), packing into
//! fixed-length sequences (with metadata conditioning), weighted mixtures, row filters, repeated
//! subsets, and corpus preparation. (Replay buffers are `cpt_core::reservoir::Reservoir`,
//! generic over any batch item.)
//!
//! Every stream is deterministic from its seed and resumable from a small serde cursor, so a
//! resumed run sees exactly the sequences an uninterrupted one would.

#![warn(missing_docs)]

mod error;
mod image_parquet;
mod image_transform;
mod mixture;
mod packing;
mod parquet_text;
mod parquet_writer;
mod prepare;
mod row_groups;
mod subset;
mod tokenizer;
mod tokenizer_extend;

pub use error::{DataError, Result};
pub use image_parquet::{
    CaptionMode, CaptionTokenizer, DEFAULT_CAPTION_COLUMN, DEFAULT_IMAGE_COLUMN,
    DEFAULT_LABEL_COLUMN, ImageSourceOptions, ParquetImageSource, eval_images,
};
pub use image_transform::{Augment, ImageTransform, Resize};
pub use mixture::{Mixture, MixtureCursor, SequenceSource, SourceCursor};
pub use packing::{
    Conditioning, PackedCursor, PackedSource, Packer, eval_sequences, eval_token_sequences,
};
pub use parquet_text::{
    DEFAULT_TEXT_COLUMN, DocCursor, Document, DocumentColumns, ParquetTextSource, ShardUnit,
    TextSourceOptions, expand_paths,
};
pub use parquet_writer::TextParquetWriter;
pub use prepare::{DEFAULT_ROW_GROUP_ROWS, PrepareReport, is_eval, prepare};
pub use subset::{SubsetCursor, SubsetSource};
pub use tokenizer::{DEFAULT_EOS_TOKEN, Tokenizer, train_bpe, train_bpe_from_parquet};
pub use tokenizer_extend::{
    EXTEND_MIN_FREQUENCY, ExtendedTokenizer, count_tokens_and_chars, extend_bpe,
    extend_bpe_from_parquet, old_pieces,
};
