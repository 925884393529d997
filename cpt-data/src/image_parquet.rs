//! Images streamed from Parquet files in the Hugging Face datasets layout: an `image` column
//! holding PNG/JPEG bytes (plain binary, or the `{bytes, path}` struct `datasets` writes), an
//! integer `label` column and optionally a string `caption` column.
//!
//! Order, shuffle, cursor and quarantine are those of the text source (`row_groups.rs`): one row
//! group in memory at a time, as compressed bytes; an image is decoded only when it is handed
//! out. Augmentations draw from a generator keyed by (seed, epoch, row), so a resumed stream
//! produces bit-identical items.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Fields};
use cpt_core::{CoreError, ImageItem, ItemSource};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::image_transform::{self, ImageTransform};
use crate::parquet_text::{STRING_TYPES, describe_files, push_strings};
use crate::row_groups::{
    DocCursor, RowGroupStream, ShardUnit, SourceFile, StreamOrder, StreamRow, next_across_epochs,
};
use crate::tokenizer::Tokenizer;

/// The image column of Hugging Face image datasets.
pub const DEFAULT_IMAGE_COLUMN: &str = "image";
/// The label column of Hugging Face image classification datasets.
pub const DEFAULT_LABEL_COLUMN: &str = "label";
/// The caption column of cpt's bundled image datasets.
pub const DEFAULT_CAPTION_COLUMN: &str = "caption";

const IMAGE_TYPES: &str = "Binary, LargeBinary, BinaryView or a struct with a binary `bytes` field (Hugging Face `Image`)";
const INTEGER_TYPES: &str = "an integer type (Int8..Int64, UInt8..UInt64)";

/// Where an item's caption comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionMode {
    /// No caption: items carry no text.
    #[default]
    None,
    /// The caption column of the file ([`ImageSourceOptions::caption_column`]).
    Column,
    /// A caption made from the label: `{label}` in `template` is replaced by the label's class
    /// name, e.g. "a photo of a {label}" (CLIP's zero-shot prompts).
    Template {
        /// The caption with a `{label}` placeholder.
        template: String,
        /// Class name of each label (label `i` is `class_names[i]`).
        class_names: Vec<String>,
    },
}

/// Turns captions into fixed-length token rows: `[bos] + encode(caption) + [eos]`, cut to
/// `text_len` keeping the EOS last, padded with `pad`.
#[derive(Debug, Clone)]
pub struct CaptionTokenizer {
    /// The tokenizer (shared with other sources).
    pub tokenizer: Arc<Tokenizer>,
    /// Tokens per caption row.
    pub text_len: usize,
    /// Token put first, if any.
    pub bos: Option<u32>,
    /// Token that ends every caption; kept even when the caption is cut.
    pub eos: u32,
    /// Token that fills the row after the EOS.
    pub pad: u32,
}

impl CaptionTokenizer {
    /// Rows of `text_len` tokens with the tokenizer's own BOS (if it has one) and EOS (required),
    /// padded with the EOS id, as GPT-2-style text encoders do.
    pub fn new(tokenizer: Arc<Tokenizer>, text_len: usize) -> Result<Self> {
        let Some(eos) = tokenizer.eos_id() else {
            return Err(DataError::Tokenizer {
                path: tokenizer.origin().to_path_buf(),
                message: "captions need an end-of-text token (<|endoftext|>, </s>, <eos> or \
                          <|end_of_text|>)"
                    .into(),
            });
        };
        let caption = Self {
            bos: tokenizer.bos_id(),
            tokenizer,
            text_len,
            eos,
            pad: eos,
        };
        caption.validate()?;
        Ok(caption)
    }

    fn validate(&self) -> Result<()> {
        let needed = 1 + usize::from(self.bos.is_some());
        if self.text_len < needed {
            return Err(DataError::InvalidOption {
                name: "text_len",
                message: format!(
                    "must hold at least the BOS/EOS tokens ({needed}), got {}",
                    self.text_len
                ),
            });
        }
        Ok(())
    }

    /// The token row of `caption`.
    pub fn encode(&self, caption: &str) -> Result<Vec<u32>> {
        let mut tokens = Vec::with_capacity(self.text_len);
        tokens.extend(self.bos);
        tokens.extend(self.tokenizer.encode(caption)?);
        // Cut before appending the EOS, so that a long caption still ends with it: a text
        // encoder that pools at the EOS position must find one in every row.
        tokens.truncate(self.text_len - 1);
        tokens.push(self.eos);
        tokens.resize(self.text_len, self.pad);
        Ok(tokens)
    }
}

/// How a [`ParquetImageSource`] reads, filters, transforms and orders its images.
#[derive(Debug, Clone)]
pub struct ImageSourceOptions {
    /// Column of PNG/JPEG images (default `image`).
    pub image_column: String,
    /// Integer label column (default `label`); `None` for unlabelled images (labels are -1).
    pub label_column: Option<String>,
    /// String caption column (default `caption`); read only with [`CaptionMode::Column`].
    pub caption_column: Option<String>,
    /// Keep only images whose label is one of these (class-incremental splits); `None` keeps all.
    pub classes: Option<Vec<i64>>,
    /// Visit units and rows in a seeded random order per epoch (`false`: file order).
    pub shuffle: bool,
    /// Seed of the shuffle and of the augmentations.
    pub seed: u64,
    /// Skip (and remember) row groups that fail to decode, and images whose bytes do not decode,
    /// instead of failing the run.
    pub quarantine_bad_shards: bool,
    /// Channels, size, normalisation and augmentations.
    pub transform: ImageTransform,
    /// Where captions come from.
    pub captions: CaptionMode,
    /// How captions become tokens; required unless `captions` is [`CaptionMode::None`].
    pub caption_tokenizer: Option<CaptionTokenizer>,
}

impl Default for ImageSourceOptions {
    fn default() -> Self {
        Self {
            image_column: DEFAULT_IMAGE_COLUMN.to_string(),
            label_column: Some(DEFAULT_LABEL_COLUMN.to_string()),
            caption_column: Some(DEFAULT_CAPTION_COLUMN.to_string()),
            classes: None,
            shuffle: false,
            seed: 0,
            quarantine_bad_shards: false,
            transform: ImageTransform::default(),
            captions: CaptionMode::None,
            caption_tokenizer: None,
        }
    }
}

impl ImageSourceOptions {
    /// Check the options on their own (files are checked by [`ParquetImageSource::open`]).
    pub fn validate(&self) -> Result<()> {
        self.transform.validate()?;
        if let Some(classes) = &self.classes {
            if classes.is_empty() {
                return Err(DataError::InvalidOption {
                    name: "classes",
                    message: "an empty class list would keep no image".into(),
                });
            }
            if self.label_column.is_none() {
                return Err(DataError::InvalidOption {
                    name: "classes",
                    message: "filtering by class needs a label column".into(),
                });
            }
        }
        if self.captions != CaptionMode::None {
            let Some(tokenizer) = &self.caption_tokenizer else {
                return Err(DataError::InvalidOption {
                    name: "caption_tokenizer",
                    message: "captions need a tokenizer".into(),
                });
            };
            tokenizer.validate()?;
        }
        match &self.captions {
            CaptionMode::Column if self.caption_column.is_none() => Err(DataError::InvalidOption {
                name: "caption_column",
                message: "captions from a column need the column's name".into(),
            }),
            CaptionMode::Template { class_names, .. } if class_names.is_empty() => {
                Err(DataError::InvalidOption {
                    name: "captions.class_names",
                    message: "a caption template needs the class names".into(),
                })
            }
            CaptionMode::Template { .. } if self.label_column.is_none() => {
                Err(DataError::InvalidOption {
                    name: "captions",
                    message: "a caption template fills in labels and needs a label column".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// How one file stores its images.
#[derive(Debug, Clone, Copy)]
enum ImageLayout {
    /// Binary of one of the three Arrow layouts.
    Binary,
    /// The Hugging Face `Image` struct: bytes at this child index, the path (if any) at another.
    Struct { bytes: usize, path: Option<usize> },
}

/// The validated columns of one file: top-level indices and the image layout.
#[derive(Debug, Clone)]
struct FileColumns {
    image: usize,
    layout: ImageLayout,
    label: Option<usize>,
    caption: Option<usize>,
}

/// A row as read from the file, before decoding.
#[derive(Debug)]
struct RawImage {
    bytes: Vec<u8>,
    label: i64,
    caption: Option<String>,
}

/// Images from one or more Parquet files as [`ImageItem`]s; see the module docs.
pub struct ParquetImageSource {
    stream: RowGroupStream<RawImage>,
    columns: Vec<FileColumns>,
    options: ImageSourceOptions,
    /// Caption tokens of each class under [`CaptionMode::Template`], encoded once.
    template_tokens: Vec<Vec<u32>>,
    /// Whether to draw augmentations (never for evaluation sets).
    augment: bool,
    /// The shape of the first image under [`image_transform::Resize::Native`], to refuse images
    /// of another size before they reach a batch.
    native_shape: Option<[usize; 3]>,
}

impl std::fmt::Debug for ParquetImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetImageSource")
            .field("files", &self.stream.paths())
            .field("units", &self.stream.units().len())
            .field("options", &self.options)
            .field("cursor", &self.stream.cursor())
            .finish()
    }
}

impl ParquetImageSource {
    /// Open and validate every file (exists, valid footer, columns present and of usable types)
    /// and the options. No image is read yet.
    pub fn open(paths: &[PathBuf], options: ImageSourceOptions) -> Result<Self> {
        options.validate()?;
        let mut files = Vec::with_capacity(paths.len());
        let mut columns = Vec::with_capacity(paths.len());
        for path in paths {
            let file = SourceFile::open(path)?;
            columns.push(file_columns(&file, &options)?);
            files.push(file);
        }
        let template_tokens = match (&options.captions, &options.caption_tokenizer) {
            (
                CaptionMode::Template {
                    template,
                    class_names,
                },
                Some(tokenizer),
            ) => class_names
                .iter()
                .map(|name| tokenizer.encode(&template.replace("{label}", name)))
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        let order = StreamOrder {
            shuffle: options.shuffle,
            seed: options.seed,
            quarantine_bad_shards: options.quarantine_bad_shards,
        };
        Ok(Self {
            stream: RowGroupStream::new(files, order),
            columns,
            augment: options.transform.augment.is_active(),
            options,
            template_tokens,
            native_shape: None,
        })
    }

    /// The shard units (row groups with at least one row), in file order.
    pub fn units(&self) -> &[ShardUnit] {
        self.stream.units()
    }

    /// The files of this source, in the order given to [`ParquetImageSource::open`].
    pub fn paths(&self) -> Vec<&Path> {
        self.stream.paths()
    }

    /// Rows over all units, before the class filter.
    pub fn num_rows(&self) -> usize {
        self.stream.num_rows()
    }

    /// The options this source was opened with.
    pub fn options(&self) -> &ImageSourceOptions {
        &self.options
    }

    /// Corrupt units skipped so far, as (file, row group).
    pub fn quarantined(&self) -> Vec<(&Path, usize)> {
        self.stream.quarantined()
    }

    /// The position of the next image.
    pub fn cursor(&self) -> DocCursor {
        self.stream.cursor()
    }

    /// Continue from `cursor` (from [`ParquetImageSource::cursor`] of a source over the same
    /// files and options).
    pub fn seek(&mut self, cursor: &DocCursor) -> Result<()> {
        self.stream.seek(cursor)
    }

    /// The next image of the current epoch, or `None` once the epoch is exhausted.
    pub fn next_in_epoch(&mut self) -> Result<Option<ImageItem>> {
        loop {
            let columns = &self.columns;
            let options = &self.options;
            let mut load = |file: &SourceFile, unit: ShardUnit| {
                read_images(file, &columns[unit.file], options, unit)
            };
            let Some(row) = self.stream.next_in_epoch(&mut load)? else {
                return Ok(None);
            };
            if let Some(item) = self.make_item(row)? {
                return Ok(Some(item));
            }
        }
    }

    /// The next image, looping over epochs forever. A whole epoch without a single image (after
    /// the class filter) gives [`DataError::EmptyCorpus`] instead of spinning.
    pub fn next_image(&mut self) -> Result<ImageItem> {
        next_across_epochs(|| self.next_in_epoch())?.ok_or_else(|| self.empty_corpus_error())
    }

    fn empty_corpus_error(&self) -> DataError {
        let filter = match &self.options.classes {
            Some(classes) => format!(" with a label in {classes:?}"),
            None => String::new(),
        };
        DataError::EmptyCorpus {
            what: format!(
                "no image{filter} in column `{}` of {}",
                self.options.image_column,
                describe_files(&self.stream.paths())
            ),
        }
    }

    /// Decode, transform and caption one row; `None` for an undecodable image skipped under the
    /// quarantine policy.
    fn make_item(&mut self, row: StreamRow<RawImage>) -> Result<Option<ImageItem>> {
        let file = &self.stream.files()[row.unit.file];
        let row_error = |column: &str, message: String| DataError::BadRow {
            path: file.path.clone(),
            column: column.to_string(),
            row_group: row.unit.row_group,
            row: file_row(file, row.unit.row_group, row.row_in_group),
            message,
        };
        let image_column = &self.options.image_column;
        let raw = row.value;
        let transform = &self.options.transform;
        let mut rng = self
            .augment
            .then(|| image_transform::augment_rng(self.options.seed, row.epoch, row.global_row));
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            image_transform::decode(&raw.bytes).map(|image| transform.apply(&image, rng.as_mut()))
        }))
        .unwrap_or_else(|panic| Err(format!("the decoder panicked: {}", panic_message(&panic))));
        let (shape, pixels) = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                let error = row_error(image_column, format!("cannot decode image: {e}"));
                // Undecodable bytes fail the same way on every pass, so skipping them keeps a
                // resumed stream identical without remembering them in the cursor.
                if self.options.quarantine_bad_shards {
                    tracing::warn!("skipped: {error}");
                    return Ok(None);
                }
                return Err(error);
            }
        };
        if matches!(transform.resize, image_transform::Resize::Native) {
            match self.native_shape {
                None => self.native_shape = Some(shape),
                Some(first) if first != shape => {
                    return Err(row_error(
                        image_column,
                        format!(
                            "image is {}×{} but earlier images are {}×{}; images of one batch \
                             share one size, so set a resize",
                            shape[1], shape[2], first[1], first[2]
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let text = match &self.options.captions {
            CaptionMode::None => Vec::new(),
            CaptionMode::Column => {
                let column = self.options.caption_column.as_deref().unwrap_or_default();
                let Some(caption) = raw.caption.as_deref() else {
                    return Err(row_error(column, "caption is null".into()));
                };
                let Some(tokenizer) = &self.options.caption_tokenizer else {
                    unreachable!("validate() requires a tokenizer with captions");
                };
                tokenizer.encode(caption)?
            }
            CaptionMode::Template { class_names, .. } => {
                let known = usize::try_from(raw.label)
                    .ok()
                    .and_then(|l| self.template_tokens.get(l));
                let Some(tokens) = known else {
                    let column = self.options.label_column.as_deref().unwrap_or_default();
                    return Err(row_error(
                        column,
                        format!(
                            "label {} has no class name for the caption template ({} names)",
                            raw.label,
                            class_names.len()
                        ),
                    ));
                };
                tokens.clone()
            }
        };
        Ok(Some(ImageItem {
            pixels,
            shape,
            label: raw.label,
            text,
        }))
    }
}

impl ItemSource<ImageItem> for ParquetImageSource {
    fn next_item(&mut self) -> cpt_core::Result<ImageItem> {
        self.next_image()
            .map_err(|e| CoreError::Data(e.to_string()))
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(self.stream.cursor()).unwrap_or(serde_json::Value::Null)
    }

    fn seek(&mut self, cursor: &serde_json::Value) -> cpt_core::Result<()> {
        let cursor: DocCursor = serde_json::from_value(cursor.clone()).map_err(|e| {
            CoreError::Data(format!("malformed image source cursor in checkpoint: {e}"))
        })?;
        self.stream
            .seek(&cursor)
            .map_err(|e| CoreError::Data(e.to_string()))
    }
}

/// The first `max_images` images (after the class filter) of `paths` in file order, without
/// shuffle or augmentation: a stable evaluation set. Fewer images than asked is fine; none is
/// [`DataError::EmptyCorpus`].
pub fn eval_images(
    paths: &[PathBuf],
    options: ImageSourceOptions,
    max_images: usize,
) -> Result<Vec<ImageItem>> {
    if max_images == 0 {
        return Err(DataError::InvalidOption {
            name: "max_images",
            message: "must be at least 1".into(),
        });
    }
    let options = ImageSourceOptions {
        shuffle: false,
        transform: options.transform.without_augmentation(),
        ..options
    };
    let mut source = ParquetImageSource::open(paths, options)?;
    let mut items = Vec::new();
    while items.len() < max_images {
        match source.next_in_epoch()? {
            Some(item) => items.push(item),
            None => break,
        }
    }
    if items.is_empty() {
        return Err(source.empty_corpus_error());
    }
    Ok(items)
}

/// Index in its file of row `row_in_group` of row group `row_group`.
fn file_row(file: &SourceFile, row_group: usize, row_in_group: usize) -> u64 {
    let before: i64 = file.metadata.metadata().row_groups()[..row_group]
        .iter()
        .map(|g| g.num_rows())
        .sum();
    before.max(0) as u64 + row_in_group as u64
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Find and check the columns the options need in one file.
fn file_columns(file: &SourceFile, options: &ImageSourceOptions) -> Result<FileColumns> {
    let schema = file.metadata.schema();
    let find = |column: &str| {
        schema
            .index_of(column)
            .map_err(|_| DataError::MissingColumn {
                path: file.path.clone(),
                column: column.to_string(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })
    };
    let wrong = |column: &str, found: &DataType, expected| DataError::WrongColumnType {
        path: file.path.clone(),
        column: column.to_string(),
        found: found.to_string(),
        expected,
    };
    let image = find(&options.image_column)?;
    let image_type = schema.field(image).data_type();
    let layout = image_layout(image_type)
        .ok_or_else(|| wrong(&options.image_column, image_type, IMAGE_TYPES))?;
    let label = match &options.label_column {
        Some(column) => {
            let index = find(column)?;
            let found = schema.field(index).data_type();
            if !found.is_integer() {
                return Err(wrong(column, found, INTEGER_TYPES));
            }
            Some(index)
        }
        None => None,
    };
    let caption = match (&options.captions, &options.caption_column) {
        (CaptionMode::Column, Some(column)) => {
            let index = find(column)?;
            let found = schema.field(index).data_type();
            if !matches!(
                found,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Err(wrong(column, found, STRING_TYPES));
            }
            Some(index)
        }
        _ => None,
    };
    Ok(FileColumns {
        image,
        layout,
        label,
        caption,
    })
}

fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn image_layout(data_type: &DataType) -> Option<ImageLayout> {
    match data_type {
        t if is_binary(t) => Some(ImageLayout::Binary),
        DataType::Struct(fields) => struct_layout(fields),
        _ => None,
    }
}

fn struct_layout(fields: &Fields) -> Option<ImageLayout> {
    let (bytes, field) = fields.find("bytes")?;
    if !is_binary(field.data_type()) {
        return None;
    }
    let path = fields
        .find("path")
        .filter(|(_, f)| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        })
        .map(|(i, _)| i);
    Some(ImageLayout::Struct { bytes, path })
}

/// Append the values of a binary array of any of the three Arrow layouts.
fn push_binary(array: &dyn Array, out: &mut Vec<Option<Vec<u8>>>) -> Option<()> {
    if let Some(a) = array.as_binary_opt::<i32>() {
        out.extend(a.iter().map(|b| b.map(<[u8]>::to_vec)));
    } else if let Some(a) = array.as_binary_opt::<i64>() {
        out.extend(a.iter().map(|b| b.map(<[u8]>::to_vec)));
    } else if let Some(a) = array.as_binary_view_opt() {
        out.extend(a.iter().map(|b| b.map(<[u8]>::to_vec)));
    } else {
        return None;
    }
    Some(())
}

/// Append the values of an integer array of any width as `i64`; a `u64` beyond `i64::MAX` is
/// `Err(value)`.
fn push_integers(
    array: &dyn Array,
    out: &mut Vec<Option<std::result::Result<i64, u64>>>,
) -> Option<()> {
    macro_rules! widen {
        ($t:ty) => {
            if let Some(a) = array.as_primitive_opt::<$t>() {
                out.extend(a.iter().map(|v| v.map(|v| Ok(i64::from(v)))));
                return Some(());
            }
        };
    }
    widen!(Int8Type);
    widen!(Int16Type);
    widen!(Int32Type);
    widen!(Int64Type);
    widen!(UInt8Type);
    widen!(UInt16Type);
    widen!(UInt32Type);
    if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
        out.extend(a.iter().map(|v| v.map(|v| i64::try_from(v).map_err(|_| v))));
        return Some(());
    }
    None
}

/// The columns of one row group as plain vectors (one entry per row).
#[derive(Default)]
struct RowGroupColumns {
    bytes: Vec<Option<Vec<u8>>>,
    /// Path of struct images whose bytes are null (to name it in the error).
    paths: Vec<Option<String>>,
    labels: Vec<Option<std::result::Result<i64, u64>>>,
    captions: Vec<Option<String>>,
}

/// Read one unit's rows: `None` for rows the class filter drops.
fn read_images(
    file: &SourceFile,
    columns: &FileColumns,
    options: &ImageSourceOptions,
    unit: ShardUnit,
) -> Result<Vec<Option<RawImage>>> {
    let mut wanted = vec![columns.image];
    wanted.extend(columns.label);
    wanted.extend(columns.caption);
    let batches = file.read_row_group(unit.row_group, unit.num_rows, &wanted)?;
    let mut data = RowGroupColumns::default();
    for batch in &batches {
        extract(file, batch, columns, options, &mut data)?;
    }
    let first_row = file_row(file, unit.row_group, 0);
    let row_error = |column: &str, i: usize, message: String| DataError::BadRow {
        path: file.path.clone(),
        column: column.to_string(),
        row_group: unit.row_group,
        row: first_row + i as u64,
        message,
    };
    let mut rows = Vec::with_capacity(unit.num_rows);
    for i in 0..unit.num_rows {
        let label = match (&options.label_column, data.labels.get(i)) {
            (None, _) => -1,
            (Some(_), Some(Some(Ok(label)))) => *label,
            (Some(column), Some(Some(Err(big)))) => {
                return Err(row_error(
                    column,
                    i,
                    format!("label {big} does not fit a 64-bit signed integer"),
                ));
            }
            (Some(column), _) => return Err(row_error(column, i, "label is null".into())),
        };
        if let Some(classes) = &options.classes
            && !classes.contains(&label)
        {
            rows.push(None);
            continue;
        }
        let Some(bytes) = data.bytes[i].take() else {
            let message = match &data.paths[i] {
                Some(path) => format!(
                    "image has no bytes, only the path `{path}`; cpt reads images from inside \
                     the Parquet file only (re-export the dataset with embedded image bytes)"
                ),
                None => "image is null".to_string(),
            };
            return Err(row_error(&options.image_column, i, message));
        };
        rows.push(Some(RawImage {
            bytes,
            label,
            caption: data.captions.get_mut(i).and_then(Option::take),
        }));
    }
    Ok(rows)
}

/// Append the columns of one decoded batch to `out`.
fn extract(
    file: &SourceFile,
    batch: &RecordBatch,
    columns: &FileColumns,
    options: &ImageSourceOptions,
    out: &mut RowGroupColumns,
) -> Result<()> {
    let wrong = |column: &str, array: &dyn Array, expected| DataError::WrongColumnType {
        path: file.path.clone(),
        column: column.to_string(),
        found: array.data_type().to_string(),
        expected,
    };
    // Projected batches keep the file's column order, so columns are found by name.
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| DataError::MissingColumn {
                path: file.path.clone(),
                column: name.to_string(),
                available: batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            })
    };
    let image = column(&options.image_column)?;
    match columns.layout {
        ImageLayout::Binary => push_binary(image.as_ref(), &mut out.bytes)
            .ok_or_else(|| wrong(&options.image_column, image.as_ref(), IMAGE_TYPES))?,
        ImageLayout::Struct { bytes, path } => {
            let structs = image
                .as_struct_opt()
                .ok_or_else(|| wrong(&options.image_column, image.as_ref(), IMAGE_TYPES))?;
            let start = out.bytes.len();
            push_binary(structs.column(bytes).as_ref(), &mut out.bytes)
                .ok_or_else(|| wrong(&options.image_column, image.as_ref(), IMAGE_TYPES))?;
            let mut paths = Vec::with_capacity(structs.len());
            match path {
                Some(p) => {
                    push_strings(structs.column(p).as_ref(), &mut paths);
                }
                None => paths.resize(structs.len(), None),
            }
            paths.resize(structs.len(), None);
            // A null struct is a null image, whatever its children hold.
            for (i, path) in paths.iter_mut().enumerate() {
                if structs.is_null(i) {
                    out.bytes[start + i] = None;
                    *path = None;
                }
            }
            out.paths.extend(paths);
        }
    }
    out.paths.resize(out.bytes.len(), None);
    if let Some(name) = &options.label_column
        && columns.label.is_some()
    {
        let labels = column(name)?;
        push_integers(labels.as_ref(), &mut out.labels)
            .ok_or_else(|| wrong(name, labels.as_ref(), INTEGER_TYPES))?;
    }
    if let Some(name) = &options.caption_column
        && columns.caption.is_some()
    {
        let captions = column(name)?;
        push_strings(captions.as_ref(), &mut out.captions)
            .ok_or_else(|| wrong(name, captions.as_ref(), STRING_TYPES))?;
    }
    Ok(())
}
