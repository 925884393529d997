//! The Parquet image source: the bundled data decodes, filters and captions as documented,
//! hand-made images transform to hand-computed values, resume is bit-identical with
//! augmentations on, and bad inputs give errors naming file, column and row.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder, StructBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, Int64Array, LargeBinaryArray, StringArray, StructArray, UInt8Array,
};
use arrow_schema::{DataType, Field, Fields};
use common::{tiny_tokenizer, tiny_tokenizer_with_bos, write_columns};
use cpt_core::{ImageItem, ItemSource};
use cpt_data::{
    Augment, CaptionMode, CaptionTokenizer, DataError, ImageSourceOptions, ImageTransform,
    ParquetImageSource, Resize, Tokenizer, eval_images,
};
use image::{GrayImage, ImageFormat, RgbImage};

fn bundled(set: &str, split: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .join(set)
        .join(format!("{split}.parquet"))
}

fn grey(channels: usize) -> ImageTransform {
    ImageTransform {
        channels,
        ..ImageTransform::default()
    }
}

fn options(transform: ImageTransform) -> ImageSourceOptions {
    ImageSourceOptions {
        transform,
        ..ImageSourceOptions::default()
    }
}

fn one_epoch(source: &mut ParquetImageSource) -> Vec<ImageItem> {
    std::iter::from_fn(|| source.next_in_epoch().unwrap()).collect()
}

fn png(image: &image::DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

fn grey_png(w: u32, h: u32, values: &[u8]) -> Vec<u8> {
    png(&GrayImage::from_raw(w, h, values.to_vec()).unwrap().into())
}

fn rgb_png(w: u32, h: u32, values: &[u8]) -> Vec<u8> {
    png(&RgbImage::from_raw(w, h, values.to_vec()).unwrap().into())
}

/// The Hugging Face `Image` struct `{bytes, path}`.
fn image_structs(rows: &[(Option<&[u8]>, Option<&str>)]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let mut builder = StructBuilder::from_fields(fields, rows.len());
    for (bytes, path) in rows {
        builder
            .field_builder::<BinaryBuilder>(0)
            .unwrap()
            .append_option(*bytes);
        builder
            .field_builder::<StringBuilder>(1)
            .unwrap()
            .append_option(*path);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn labels(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

/// A file of the given images (struct layout) with labels 0, 1, 2, ...
fn write_images(path: &Path, images: &[Vec<u8>], rows_per_group: usize) {
    let rows: Vec<(Option<&[u8]>, Option<&str>)> =
        images.iter().map(|b| (Some(b.as_slice()), None)).collect();
    let label_values: Vec<i64> = (0..images.len() as i64).collect();
    write_columns(
        path,
        vec![
            ("image", image_structs(&rows)),
            ("label", labels(&label_values)),
        ],
        rows_per_group,
    );
}

fn assert_close(found: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(found.len(), expected.len(), "{found:?} vs {expected:?}");
    for (i, (a, b)) in found.iter().zip(expected).enumerate() {
        assert!((a - b).abs() <= tol, "value {i}: {a} vs {b} ({found:?})");
    }
}

fn assert_names(err: &DataError, parts: &[&str]) {
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "`{message}` does not name {part}");
    }
    assert_eq!(message.lines().count(), 1, "one line: `{message}`");
}

// ---------------------------------------------------------------------------------------------
// The bundled data
// ---------------------------------------------------------------------------------------------

#[test]
fn bundled_digits_decode_to_normalised_8x8_images() {
    let mut source =
        ParquetImageSource::open(&[bundled("digits", "train")], options(grey(3))).unwrap();
    let items = one_epoch(&mut source);
    assert_eq!(items.len(), 1528);
    let mut per_class = [0usize; 10];
    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
    for item in &items {
        assert_eq!(item.shape, [3, 8, 8]);
        assert_eq!(item.pixels.len(), 3 * 64);
        // Grey replicated into three identical planes.
        assert_eq!(item.pixels[..64], item.pixels[64..128]);
        assert_eq!(item.pixels[..64], item.pixels[128..]);
        assert!(item.text.is_empty());
        per_class[item.label as usize] += 1;
        for &v in &item.pixels {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    assert!(
        per_class.iter().all(|&n| (148..=156).contains(&n)),
        "{per_class:?}"
    );
    // Mean and std 0.5 map [0, 1] to [-1, 1]; digits use the full range (0 and 16×16 = 256 → 255).
    assert_eq!(lo, -1.0);
    assert!(hi > 0.99 && hi <= 1.0, "{hi}");
}

#[test]
fn bundled_fashion_eval_is_interleaved_and_balanced() {
    let items = eval_images(&[bundled("fashion", "eval")], options(grey(1)), 1000).unwrap();
    assert_eq!(items.len(), 600);
    assert!(items.iter().all(|i| i.shape == [1, 28, 28]));
    let first: Vec<i64> = items[..20].iter().map(|i| i.label).collect();
    assert_eq!(
        first,
        [(0..10).collect::<Vec<i64>>(), (0..10).collect()].concat()
    );
    for class in 0..10 {
        assert_eq!(items.iter().filter(|i| i.label == class).count(), 60);
    }
    assert!(
        items
            .iter()
            .flat_map(|i| &i.pixels)
            .all(|v| (-1.0..=1.0).contains(v))
    );
    // The cap takes a prefix of the same order.
    let some = eval_images(&[bundled("fashion", "eval")], options(grey(1)), 25).unwrap();
    assert_eq!(some, items[..25]);
}

#[test]
fn class_filter_keeps_only_the_listed_labels() {
    let all = eval_images(&[bundled("digits", "eval")], options(grey(1)), 10_000).unwrap();
    let filtered = eval_images(
        &[bundled("digits", "eval")],
        ImageSourceOptions {
            classes: Some(vec![3, 7]),
            ..options(grey(1))
        },
        10_000,
    )
    .unwrap();
    let expected: Vec<&ImageItem> = all.iter().filter(|i| [3, 7].contains(&i.label)).collect();
    assert_eq!(filtered.iter().collect::<Vec<_>>(), expected);
    assert!(filtered.len() > 40);
    // A class that is not there gives an empty-corpus error, not an endless loop.
    let mut none = ParquetImageSource::open(
        &[bundled("digits", "eval")],
        ImageSourceOptions {
            classes: Some(vec![42]),
            ..options(grey(1))
        },
    )
    .unwrap();
    let err = none.next_image().unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err}");
    assert_names(&err, &["[42]", "eval.parquet"]);
}

#[test]
fn template_and_column_captions_agree_on_the_bundled_data() {
    let tokenizer = Arc::new(
        Tokenizer::from_file(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/tokenizer.json"),
        )
        .unwrap(),
    );
    let captions = CaptionTokenizer::new(tokenizer.clone(), 16).unwrap();
    let names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];
    let with = |mode| ImageSourceOptions {
        captions: mode,
        caption_tokenizer: Some(captions.clone()),
        ..options(grey(1))
    };
    let path = [bundled("fashion", "eval")];
    let from_column = eval_images(&path, with(CaptionMode::Column), 30).unwrap();
    let from_template = eval_images(
        &path,
        with(CaptionMode::Template {
            template: "a photo of a {label}".into(),
            class_names: names.map(String::from).to_vec(),
        }),
        30,
    )
    .unwrap();
    assert_eq!(from_column, from_template);
    let eos = tokenizer.eos_id().unwrap();
    for item in &from_column {
        let mut expected = tokenizer
            .encode(&format!("a photo of a {}", names[item.label as usize]))
            .unwrap();
        expected.push(eos);
        expected.resize(16, eos);
        assert_eq!(item.text, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------------------------

fn augmented() -> ImageSourceOptions {
    ImageSourceOptions {
        shuffle: true,
        seed: 11,
        transform: ImageTransform {
            channels: 3,
            resize: Resize::Square { size: 6 },
            augment: Augment {
                horizontal_flip: true,
                random_resized_crop: Some([0.3, 1.0]),
            },
            ..ImageTransform::default()
        },
        ..ImageSourceOptions::default()
    }
}

#[test]
fn resumed_stream_is_bit_identical_with_augmentations() {
    let paths = [bundled("digits", "train"), bundled("digits", "eval")];
    // Cut inside a row group, and just before the end of an epoch (1528 + 269 images).
    for cut in [37, 1790] {
        let mut source = ParquetImageSource::open(&paths, augmented()).unwrap();
        for _ in 0..cut {
            source.next_item().unwrap();
        }
        let cursor = ItemSource::cursor(&source);
        let rest: Vec<ImageItem> = (0..40).map(|_| source.next_item().unwrap()).collect();
        let mut resumed = ParquetImageSource::open(&paths, augmented()).unwrap();
        ItemSource::seek(&mut resumed, &cursor).unwrap();
        let again: Vec<ImageItem> = (0..40).map(|_| resumed.next_item().unwrap()).collect();
        // Bit-identical: compare the raw bits, not approximate floats.
        let bits = |items: &[ImageItem]| {
            items
                .iter()
                .map(|i| {
                    (
                        i.label,
                        i.pixels.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&rest), bits(&again), "cut at {cut}");
    }
}

#[test]
fn augmentations_vary_per_epoch_and_stay_off_for_eval() {
    let paths = [bundled("digits", "eval")];
    let mut source = ParquetImageSource::open(&paths, augmented()).unwrap();
    let epoch0 = one_epoch(&mut source);
    let epoch1 = one_epoch(&mut source);
    assert_eq!(epoch0.len(), 269);
    assert!(epoch0.iter().all(|i| i.shape == [3, 6, 6]));
    assert_ne!(epoch0, epoch1, "a new epoch reshuffles and redraws");
    // Eval ignores the augmentation settings (and the shuffle): deterministic resize only.
    let eval_a = eval_images(&paths, augmented(), 50).unwrap();
    let plain = ImageSourceOptions {
        transform: augmented().transform.without_augmentation(),
        ..ImageSourceOptions::default()
    };
    let eval_b = eval_images(&paths, plain, 50).unwrap();
    assert_eq!(eval_a, eval_b);
}

#[test]
fn horizontal_flip_mirrors_about_half_the_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asym.parquet");
    // A 3×2 image whose mirror differs from it.
    let bytes = grey_png(3, 2, &[0, 100, 200, 50, 150, 250]);
    write_images(&path, &vec![bytes; 200], 64);
    let flip = ImageSourceOptions {
        transform: ImageTransform {
            channels: 1,
            mean: vec![0.0],
            std: vec![1.0],
            augment: Augment {
                horizontal_flip: true,
                random_resized_crop: None,
            },
            ..ImageTransform::default()
        },
        ..ImageSourceOptions::default()
    };
    let mut source = ParquetImageSource::open(std::slice::from_ref(&path), flip).unwrap();
    let items = one_epoch(&mut source);
    let plain: Vec<f32> = [0, 100, 200, 50, 150, 250]
        .map(|v| v as f32 / 255.0)
        .to_vec();
    let mirrored: Vec<f32> = [200, 100, 0, 250, 150, 50]
        .map(|v| v as f32 / 255.0)
        .to_vec();
    let flipped = items.iter().filter(|i| i.pixels == mirrored).count();
    assert_eq!(
        flipped + items.iter().filter(|i| i.pixels == plain).count(),
        200
    );
    assert!((70..=130).contains(&flipped), "{flipped} of 200 flipped");
}

// ---------------------------------------------------------------------------------------------
// Hand-made images against hand-computed values
// ---------------------------------------------------------------------------------------------

/// The single item of a one-image file under `transform`.
fn transform_one(bytes: Vec<u8>, transform: ImageTransform) -> ImageItem {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.parquet");
    write_images(&path, &[bytes], 10);
    eval_images(&[path], options(transform), 1)
        .unwrap()
        .remove(0)
}

fn plain(channels: usize, resize: Resize) -> ImageTransform {
    ImageTransform {
        channels,
        resize,
        mean: vec![0.0],
        std: vec![1.0],
        augment: Augment::default(),
    }
}

#[test]
fn upscaling_2x2_to_4x4_is_bilinear() {
    // Pixels 0, 51, 102, 255 are 0, 0.2, 0.4, 1.0 after the 1/255 rescale. Output pixel centres
    // fall at 0.25, 0.75, 1.25, 1.75 input pixels, so each axis mixes its two inputs with weights
    // (1, 0), (.75, .25), (.25, .75), (0, 1):
    //   row 0 (0, .2)  → 0, .05, .15, .2;   row 3 (.4, 1) → .4, .55, .85, 1
    //   rows 1 and 2 are .75/.25 and .25/.75 blends of rows 0 and 3.
    let item = transform_one(
        grey_png(2, 2, &[0, 51, 102, 255]),
        plain(1, Resize::Square { size: 4 }),
    );
    assert_eq!(item.shape, [1, 4, 4]);
    #[rustfmt::skip]
    let expected = [
        0.0, 0.05, 0.15, 0.2,
        0.1, 0.175, 0.325, 0.4,
        0.3, 0.425, 0.675, 0.8,
        0.4, 0.55, 0.85, 1.0,
    ];
    assert_close(&item.pixels, &expected, 1e-6);
}

#[test]
fn downscaling_4x4_to_2x2_is_antialiased_and_normalised() {
    // Columns hold 0, 40, 80, 120 (every row alike). Halving widens the triangle filter to two
    // input pixels: output 0 weighs inputs 0, 1, 2 by 3/7, 3/7, 1/7 → 200/7; output 1 weighs
    // inputs 1, 2, 3 by 1/7, 3/7, 3/7 → 640/7. Rows are constant, so the vertical pass keeps
    // them. Then (v/255 - 0.5) / 0.25.
    let row = [0u8, 40, 80, 120];
    let values: Vec<u8> = row.repeat(4);
    let transform = ImageTransform {
        mean: vec![0.5],
        std: vec![0.25],
        ..plain(1, Resize::ShortestEdge { resize: 2, crop: 2 })
    };
    let item = transform_one(grey_png(4, 4, &values), transform);
    let norm = |v: f32| (v / 255.0 - 0.5) / 0.25;
    let (a, b) = (norm(200.0 / 7.0), norm(640.0 / 7.0));
    assert_close(&item.pixels, &[a, b, a, b], 1e-5);
}

#[test]
fn shortest_edge_keeps_the_ratio_then_crops_the_centre() {
    // 2 rows × 4 columns with resize 2: already 2 on the short side, so no resampling; the
    // central 2×2 crop starts at column round((4 - 2) / 2) = 1.
    let item = transform_one(
        grey_png(4, 2, &[0, 50, 100, 150, 10, 60, 110, 160]),
        plain(1, Resize::ShortestEdge { resize: 2, crop: 2 }),
    );
    assert_eq!(item.shape, [1, 2, 2]);
    assert_close(
        &item.pixels,
        &[50.0 / 255.0, 100.0 / 255.0, 60.0 / 255.0, 110.0 / 255.0],
        1e-7,
    );
}

#[test]
fn resize_matches_pil_bilinear() {
    // Reference values from Pillow 12 (`Image.resize(..., BILINEAR)` on the image converted to
    // mode `F`, then / 255) for a 7×5 image with pixel i = (37 i + 11) mod 256.
    let values: Vec<u8> = (0..35u32).map(|i| ((i * 37 + 11) % 256) as u8).collect();
    let bytes = grey_png(7, 5, &values);
    let down = transform_one(bytes.clone(), plain(1, Resize::Square { size: 3 }));
    #[rustfmt::skip]
    let pil_3x3 = [
        0.172549, 0.483473, 0.794398, 0.191036, 0.501961, 0.812885, 0.209524, 0.520448, 0.831373,
    ];
    assert_close(&down.pixels, &pil_3x3, 2e-6);
    let up = transform_one(bytes.clone(), plain(1, Resize::Square { size: 9 }));
    #[rustfmt::skip]
    let pil_9x9_row_4 = [
        0.0666667, 0.163399, 0.276253, 0.389107, 0.501961, 0.614815, 0.727669, 0.840523, 0.937255,
    ];
    assert_close(&up.pixels[36..45], &pil_9x9_row_4, 2e-6);
    // Shortest edge 3 gives 3×4 (7·3/5 truncated); the 3×3 centre crop starts at column
    // round(0.5) = 0.
    let cropped = transform_one(bytes, plain(1, Resize::ShortestEdge { resize: 3, crop: 3 }));
    #[rustfmt::skip]
    let pil_4x3 = [
        0.124183, 0.349983, 0.616964, 0.842764,
        0.14267, 0.368471, 0.635451, 0.861251,
        0.161158, 0.386958, 0.653938, 0.879739,
    ];
    let first_three: Vec<f32> = pil_4x3.chunks(4).flat_map(|r| r[..3].to_vec()).collect();
    assert_close(&cropped.pixels, &first_three, 2e-6);
}

#[test]
fn channel_conversion_and_per_channel_normalisation() {
    // RGB → grey: ITU-R 601-2 luma of (255, 0, 0) and (0, 0, 255).
    let red_blue = rgb_png(2, 1, &[255, 0, 0, 0, 0, 255]);
    let item = transform_one(red_blue.clone(), plain(1, Resize::Native));
    assert_close(&item.pixels, &[0.299, 0.114], 1e-6);
    // RGB kept, each plane normalised by its own mean and std.
    let transform = ImageTransform {
        mean: vec![0.5, 0.0, 1.0],
        std: vec![0.5, 1.0, 2.0],
        ..plain(3, Resize::Native)
    };
    let item = transform_one(red_blue, transform);
    assert_eq!(item.shape, [3, 1, 2]);
    assert_close(&item.pixels, &[1.0, -1.0, 0.0, 0.0, -0.5, 0.0], 1e-6);
    // Grey → RGB replicates the plane.
    let item = transform_one(grey_png(1, 1, &[51]), plain(3, Resize::Native));
    assert_close(&item.pixels, &[0.2, 0.2, 0.2], 1e-6);
}

#[test]
fn jpeg_images_decode_too() {
    let image: image::DynamicImage = RgbImage::from_pixel(8, 8, image::Rgb([200, 200, 200])).into();
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
        .unwrap();
    let item = transform_one(bytes, plain(3, Resize::Native));
    assert_eq!(item.shape, [3, 8, 8]);
    // JPEG is lossy; a flat grey survives within a couple of levels.
    assert_close(&item.pixels, &[200.0 / 255.0; 192], 3.0 / 255.0);
}

// ---------------------------------------------------------------------------------------------
// Layouts and captions
// ---------------------------------------------------------------------------------------------

#[test]
fn struct_and_binary_image_columns_and_any_integer_label_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<Vec<u8>> = (0..5u8)
        .map(|i| grey_png(2, 2, &[i, 10 * i, 20 * i, 30 * i]))
        .collect();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let structs = dir.path().join("struct.parquet");
    write_images(&structs, &images, 2);
    let binary = dir.path().join("binary.parquet");
    write_columns(
        &binary,
        vec![
            (
                "image",
                Arc::new(BinaryArray::from(refs.clone())) as ArrayRef,
            ),
            ("label", Arc::new(UInt8Array::from(vec![0u8, 1, 2, 3, 4]))),
        ],
        3,
    );
    let large = dir.path().join("large.parquet");
    write_columns(
        &large,
        vec![
            ("label", labels(&[0, 1, 2, 3, 4])),
            ("image", Arc::new(LargeBinaryArray::from(refs)) as ArrayRef),
        ],
        5,
    );
    let read = |path: &Path| eval_images(&[path.to_path_buf()], options(grey(1)), 10).unwrap();
    let expected = read(&structs);
    assert_eq!(expected.len(), 5);
    assert_eq!(
        expected.iter().map(|i| i.label).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(read(&binary), expected);
    assert_eq!(read(&large), expected);
}

#[test]
fn caption_tokens_get_bos_eos_truncation_and_padding() {
    let tokenizer = tiny_tokenizer_with_bos();
    let bos = tokenizer.bos_id().unwrap();
    let eos = tokenizer.eos_id().unwrap();
    let encoded = tokenizer.encode("a photo of a cat").unwrap();
    assert!(encoded.len() > 3);
    let long = CaptionTokenizer::new(tokenizer.clone(), encoded.len() + 5).unwrap();
    let mut expected = vec![bos];
    expected.extend(&encoded);
    expected.push(eos);
    expected.resize(encoded.len() + 5, eos);
    assert_eq!(long.encode("a photo of a cat").unwrap(), expected);
    // Cut to 4: BOS, two caption tokens, and the EOS kept last.
    let short = CaptionTokenizer::new(tokenizer.clone(), 4).unwrap();
    assert_eq!(
        short.encode("a photo of a cat").unwrap(),
        vec![bos, encoded[0], encoded[1], eos]
    );
    // A chosen pad id and no BOS.
    let custom = CaptionTokenizer {
        bos: None,
        pad: 7,
        ..CaptionTokenizer::new(tokenizer, 12).unwrap()
    };
    let row = custom.encode("a").unwrap();
    assert_eq!(row.len(), 12);
    let a = custom.tokenizer.encode("a").unwrap();
    assert_eq!(row[..a.len()], a[..]);
    assert_eq!(row[a.len()], eos);
    assert!(row[a.len() + 1..].iter().all(|&t| t == 7));
    // Too short for BOS + EOS.
    let err = CaptionTokenizer::new(tiny_tokenizer_with_bos(), 1).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidOption {
                name: "text_len",
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_and_mistyped_columns_name_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let png = grey_png(1, 1, &[0]);
    let no_label = dir.path().join("no_label.parquet");
    write_columns(
        &no_label,
        vec![(
            "image",
            Arc::new(BinaryArray::from(vec![png.as_slice()])) as ArrayRef,
        )],
        10,
    );
    let err =
        ParquetImageSource::open(std::slice::from_ref(&no_label), options(grey(1))).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingColumn { column, .. } if column == "label"),
        "{err}"
    );
    assert_names(&err, &["no_label.parquet", "`label`", "columns: image"]);
    // Unlabelled images are fine once no label column is asked for.
    let unlabelled = ImageSourceOptions {
        label_column: None,
        ..options(grey(1))
    };
    let items = eval_images(std::slice::from_ref(&no_label), unlabelled, 5).unwrap();
    assert_eq!(items[0].label, -1);

    let int_image = dir.path().join("int_image.parquet");
    write_columns(
        &int_image,
        vec![("image", labels(&[1])), ("label", labels(&[1]))],
        10,
    );
    let err = ParquetImageSource::open(&[int_image], options(grey(1))).unwrap_err();
    assert!(
        matches!(&err, DataError::WrongColumnType { column, .. } if column == "image"),
        "{err}"
    );
    assert_names(&err, &["int_image.parquet", "`image`", "Int64", "Binary"]);

    let text_label = dir.path().join("text_label.parquet");
    write_columns(
        &text_label,
        vec![
            (
                "image",
                Arc::new(BinaryArray::from(vec![png.as_slice()])) as ArrayRef,
            ),
            ("label", Arc::new(StringArray::from(vec!["cat"]))),
        ],
        10,
    );
    let err = ParquetImageSource::open(&[text_label], options(grey(1))).unwrap_err();
    assert_names(&err, &["text_label.parquet", "`label`", "Utf8", "integer"]);

    // A struct without a `bytes` field is not an image column.
    let odd_struct = dir.path().join("odd_struct.parquet");
    let field = Arc::new(Field::new("data", DataType::Binary, true));
    let structs = StructArray::from(vec![(
        field,
        Arc::new(BinaryArray::from(vec![png.as_slice()])) as ArrayRef,
    )]);
    write_columns(
        &odd_struct,
        vec![
            ("image", Arc::new(structs) as ArrayRef),
            ("label", labels(&[0])),
        ],
        10,
    );
    let err = ParquetImageSource::open(&[odd_struct], options(grey(1))).unwrap_err();
    assert_names(&err, &["odd_struct.parquet", "`image`", "bytes"]);

    // Captions from a column need the column.
    let err = ParquetImageSource::open(
        &[no_label],
        ImageSourceOptions {
            label_column: None,
            captions: CaptionMode::Column,
            caption_tokenizer: Some(CaptionTokenizer::new(tiny_tokenizer(), 8).unwrap()),
            ..options(grey(1))
        },
    )
    .unwrap_err();
    assert_names(&err, &["no_label.parquet", "`caption`"]);
}

#[test]
fn undecodable_bytes_name_file_row_group_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.parquet");
    let good = grey_png(2, 2, &[1, 2, 3, 4]);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut images = vec![good.clone(); 7];
    images[5] = b"definitely not an image".to_vec();
    images[6] = truncated;
    write_images(&path, &images, 4);
    let mut source =
        ParquetImageSource::open(std::slice::from_ref(&path), options(grey(1))).unwrap();
    for _ in 0..5 {
        source.next_image().unwrap();
    }
    let err = source.next_image().unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadRow {
                row: 5,
                row_group: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "broken.parquet",
            "`image`",
            "row 5",
            "row group 1",
            "decode",
        ],
    );
    let err = source.next_image().unwrap_err();
    assert!(matches!(err, DataError::BadRow { row: 6, .. }), "{err}");

    // Under the quarantine policy both are skipped (the same on every pass, so resume agrees).
    let lenient = ImageSourceOptions {
        quarantine_bad_shards: true,
        ..options(grey(1))
    };
    let mut source = ParquetImageSource::open(std::slice::from_ref(&path), lenient).unwrap();
    assert_eq!(one_epoch(&mut source).len(), 5);
    assert_eq!(one_epoch(&mut source).len(), 5);
}

#[test]
fn null_bytes_with_a_path_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paths.parquet");
    let good = grey_png(1, 1, &[9]);
    write_columns(
        &path,
        vec![
            (
                "image",
                image_structs(&[
                    (Some(&good), None),
                    (None, Some("/data/cat.png")),
                    (None, None),
                ]),
            ),
            ("label", labels(&[0, 1, 2])),
        ],
        10,
    );
    let mut source =
        ParquetImageSource::open(std::slice::from_ref(&path), options(grey(1))).unwrap();
    let err = source.next_image().unwrap_err();
    assert!(matches!(err, DataError::BadRow { row: 1, .. }), "{err}");
    assert_names(
        &err,
        &[
            "paths.parquet",
            "`image`",
            "row 1",
            "/data/cat.png",
            "no bytes",
        ],
    );
    // Filtering the row out by class never looks at it; a null image without a path is named.
    let only = |classes| ImageSourceOptions {
        classes: Some(classes),
        ..options(grey(1))
    };
    let items = eval_images(std::slice::from_ref(&path), only(vec![0]), 10).unwrap();
    assert_eq!(items.len(), 1);
    let err = eval_images(std::slice::from_ref(&path), only(vec![2]), 10).unwrap_err();
    assert_names(&err, &["paths.parquet", "row 2", "null"]);
}

#[test]
fn bad_options_are_named() {
    let path = [bundled("digits", "eval")];
    let bad = |transform: ImageTransform| {
        ParquetImageSource::open(&path, options(transform)).unwrap_err()
    };
    let err = bad(grey(2));
    assert!(
        matches!(
            err,
            DataError::InvalidOption {
                name: "transform.channels",
                ..
            }
        ),
        "{err}"
    );
    let err = bad(ImageTransform {
        mean: vec![0.5, 0.5],
        ..grey(3)
    });
    assert!(
        matches!(
            err,
            DataError::InvalidOption {
                name: "transform.mean",
                ..
            }
        ),
        "{err}"
    );
    let err = bad(ImageTransform {
        resize: Resize::ShortestEdge { resize: 4, crop: 8 },
        ..grey(3)
    });
    assert!(
        matches!(
            err,
            DataError::InvalidOption {
                name: "transform.resize.crop",
                ..
            }
        ),
        "{err}"
    );
    let err = bad(ImageTransform {
        augment: Augment {
            horizontal_flip: false,
            random_resized_crop: Some([0.0, 1.0]),
        },
        ..grey(3)
    });
    assert!(matches!(err, DataError::InvalidOption { .. }), "{err}");
    let err = ParquetImageSource::open(
        &path,
        ImageSourceOptions {
            captions: CaptionMode::Column,
            ..ImageSourceOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidOption {
                name: "caption_tokenizer",
                ..
            }
        ),
        "{err}"
    );
    // Mixed native sizes are refused before they reach a batch.
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed.parquet");
    write_images(
        &mixed,
        &[grey_png(2, 2, &[0; 4]), grey_png(3, 2, &[0; 6])],
        10,
    );
    let err = eval_images(&[mixed], options(grey(1)), 10).unwrap_err();
    assert_names(&err, &["mixed.parquet", "row 1", "set a resize"]);
}
