//! What happens to an image between its PNG/JPEG bytes and the `[channels, height, width]`
//! pixels of an [`cpt_core::ImageItem`]: channel conversion, rescaling to `[0, 1]`, resizing
//! and cropping, the optional training augmentations, and per-channel normalisation.
//!
//! The geometry follows torchvision's tensor transforms so that numbers can be checked against
//! a PyTorch pipeline: `Resize(n)` (shortest edge to `n`, the long edge truncated), `CenterCrop`
//! (offsets rounded half to even, as Python's `round`), `RandomResizedCrop` (same sampling of
//! scale, log-aspect ratio and offsets, same fallback), and bilinear interpolation with
//! antialiasing (a triangle filter widened by the downscaling factor, as PIL and
//! `antialias=True`; plain bilinear when upscaling).

use cpt_core::SplitMix64;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// How images are brought to one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Keep each image's own size; every image of the source must then have the same size.
    Native,
    /// Resize straight to `size`×`size` (the aspect ratio is not kept).
    Square {
        /// Output height and width.
        size: usize,
    },
    /// Resize the shortest edge to `resize` (keeping the aspect ratio), then take the central
    /// `crop`×`crop` square: the usual ImageNet evaluation recipe (e.g. 256 then 224).
    ShortestEdge {
        /// Length of the shortest edge after resizing.
        resize: usize,
        /// Side of the central square crop; at most `resize`.
        crop: usize,
    },
}

/// Training augmentations; all off by default, and never applied to evaluation images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror the image left–right with probability 0.5.
    #[serde(default)]
    pub horizontal_flip: bool,
    /// Random-resized-crop with this range of the crop's area as a fraction of the image's
    /// (torchvision's default is `[0.08, 1.0]`), aspect ratios in 3/4..4/3; the crop is then
    /// resized to the output size. Replaces the deterministic resize and crop.
    #[serde(default)]
    pub random_resized_crop: Option<[f64; 2]>,
}

impl Augment {
    /// Whether any augmentation is on.
    pub fn is_active(&self) -> bool {
        self.horizontal_flip || self.random_resized_crop.is_some()
    }
}

/// The full image pipeline of a source; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageTransform {
    /// Output channels: 1 (colour images become luma, ITU-R 601-2 weights as PIL's `L`) or 3
    /// (grey images are replicated).
    pub channels: usize,
    /// How images are brought to one size.
    pub resize: Resize,
    /// Per-channel mean subtracted after rescaling to `[0, 1]`: one value for every channel, or
    /// one per channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean (one or one per
    /// channel).
    pub std: Vec<f32>,
    /// Training augmentations (off by default).
    #[serde(default)]
    pub augment: Augment,
}

impl Default for ImageTransform {
    /// Three channels, native size, mean and std 0.5 (pixels in `[-1, 1]`), no augmentation.
    fn default() -> Self {
        Self {
            channels: 3,
            resize: Resize::Native,
            mean: vec![0.5],
            std: vec![0.5],
            augment: Augment::default(),
        }
    }
}

/// Aspect-ratio range of the random-resized crop (torchvision's default).
const RATIO: [f64; 2] = [3.0 / 4.0, 4.0 / 3.0];

/// The augmentation generator of one row in one epoch: a pure function of the position, so a
/// resumed stream draws exactly what an uninterrupted one would.
pub(crate) fn augment_rng(seed: u64, epoch: u64, global_row: u64) -> SplitMix64 {
    SplitMix64::derive(seed, &[cpt_core::rng::domain::AUGMENT, epoch, global_row])
}

/// Planar float image, `[channels, height, width]`.
#[derive(Debug, Clone, PartialEq)]
struct Planes {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Planes {
    fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// The `h`×`w` window whose top-left corner is (`top`, `left`).
    fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Planes {
        let mut data = Vec::with_capacity(self.channels * h * w);
        for c in 0..self.channels {
            for y in top..top + h {
                let start = (c * self.height + y) * self.width + left;
                data.extend_from_slice(&self.data[start..start + w]);
            }
        }
        Planes {
            channels: self.channels,
            height: h,
            width: w,
            data,
        }
    }
}

impl ImageTransform {
    /// Check every setting, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, message: String| Err(DataError::InvalidOption { name, message });
        if self.channels != 1 && self.channels != 3 {
            return invalid(
                "transform.channels",
                format!("must be 1 or 3, got {}", self.channels),
            );
        }
        for (name, values) in [("transform.mean", &self.mean), ("transform.std", &self.std)] {
            if values.len() != 1 && values.len() != self.channels {
                return invalid(
                    name,
                    format!(
                        "needs 1 or {} values (one per channel), got {}",
                        self.channels,
                        values.len()
                    ),
                );
            }
            if values.iter().any(|v| !v.is_finite()) {
                return invalid(name, format!("values must be finite, got {values:?}"));
            }
        }
        if self.std.contains(&0.0) {
            return invalid(
                "transform.std",
                format!("values must be non-zero, got {:?}", self.std),
            );
        }
        match self.resize {
            Resize::Native => {}
            Resize::Square { size: 0 } => {
                return invalid("transform.resize.size", "must be at least 1".into());
            }
            Resize::Square { .. } => {}
            Resize::ShortestEdge { resize, crop } => {
                if crop == 0 || resize < crop {
                    return invalid(
                        "transform.resize.crop",
                        format!("must be between 1 and resize ({resize}), got {crop}"),
                    );
                }
            }
        }
        if let Some([lo, hi]) = self.augment.random_resized_crop
            && !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 1.0)
        {
            return invalid(
                "transform.augment.random_resized_crop",
                format!("scale range must satisfy 0 < min <= max <= 1, got [{lo}, {hi}]"),
            );
        }
        Ok(())
    }

    /// This transform without augmentations: what evaluation uses.
    pub fn without_augmentation(&self) -> Self {
        Self {
            augment: Augment::default(),
            ..self.clone()
        }
    }

    /// Transform a decoded image into `[channels, height, width]` pixels. `rng` drives the
    /// augmentations and is required exactly when [`ImageTransform::augment`] is active (the
    /// random-resized crop draws first, then the flip).
    pub fn apply(
        &self,
        image: &DynamicImage,
        mut rng: Option<&mut SplitMix64>,
    ) -> ([usize; 3], Vec<f32>) {
        let planes = to_planes(image, self.channels);
        let mut planes = match (self.augment.random_resized_crop, rng.as_deref_mut()) {
            (Some(scale), Some(rng)) => {
                let (top, left, h, w) =
                    random_resized_crop_box(planes.height, planes.width, scale, rng);
                let (out_h, out_w) = match self.resize {
                    Resize::Native => (planes.height, planes.width),
                    Resize::Square { size } => (size, size),
                    Resize::ShortestEdge { crop, .. } => (crop, crop),
                };
                resize(&planes.crop(top, left, h, w), out_h, out_w)
            }
            _ => self.resize_and_crop(planes),
        };
        if self.augment.horizontal_flip
            && let Some(rng) = rng
            && rng.next_f64() < 0.5
        {
            for row in planes.data.chunks_mut(planes.width) {
                row.reverse();
            }
        }
        let plane = planes.height * planes.width;
        for (c, values) in planes.data.chunks_mut(plane).enumerate() {
            let mean = self.mean[c.min(self.mean.len() - 1)];
            let std = self.std[c.min(self.std.len() - 1)];
            for v in values {
                *v = (*v - mean) / std;
            }
        }
        ([planes.channels, planes.height, planes.width], planes.data)
    }

    /// The deterministic (evaluation) geometry.
    fn resize_and_crop(&self, planes: Planes) -> Planes {
        match self.resize {
            Resize::Native => planes,
            Resize::Square { size } => resize(&planes, size, size),
            Resize::ShortestEdge { resize: edge, crop } => {
                let (h, w) = shortest_edge_size(planes.height, planes.width, edge);
                let resized = resize(&planes, h, w);
                let top = round_half_even_half(h - crop);
                let left = round_half_even_half(w - crop);
                resized.crop(top, left, crop, crop)
            }
        }
    }
}

/// Decode PNG or JPEG bytes (the format is read from the magic bytes). Sizes are capped so that a
/// forged header cannot make the decoder allocate gigabytes.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    const MAX_SIDE: u32 = 16_384;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a PNG or JPEG image (unrecognised leading bytes)".into());
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| e.to_string())?;
    if image.width() == 0 || image.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(image)
}

/// The image as `channels` planes of values in `[0, 1]` (alpha dropped, as PIL's `convert`).
fn to_planes(image: &DynamicImage, channels: usize) -> Planes {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let n = width * height;
    // 8-bit images are rescaled by exactly 1/255; deeper ones by their own maximum.
    let eight_bit = image.color().bytes_per_pixel() == image.color().channel_count();
    let rgb: Option<Vec<[f32; 3]>> = image.color().has_color().then(|| {
        if eight_bit {
            let buf = image.to_rgb8();
            buf.pixels()
                .map(|p| p.0.map(|v| v as f32 / 255.0))
                .collect()
        } else {
            let buf = image.to_rgb16();
            buf.pixels()
                .map(|p| p.0.map(|v| v as f32 / 65535.0))
                .collect()
        }
    });
    let mut data = Vec::with_capacity(channels * n);
    match (rgb, channels) {
        (Some(rgb), 3) => {
            for c in 0..3 {
                data.extend(rgb.iter().map(|p| p[c]));
            }
        }
        // ITU-R 601-2 luma, the weights of PIL's `convert("L")`.
        (Some(rgb), _) => data.extend(
            rgb.iter()
                .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]),
        ),
        (None, _) => {
            let grey: Vec<f32> = if eight_bit {
                image
                    .to_luma8()
                    .into_raw()
                    .iter()
                    .map(|&v| v as f32 / 255.0)
                    .collect()
            } else {
                image
                    .to_luma16()
                    .into_raw()
                    .iter()
                    .map(|&v| v as f32 / 65535.0)
                    .collect()
            };
            for _ in 0..channels {
                data.extend_from_slice(&grey);
            }
        }
    }
    Planes {
        channels,
        height,
        width,
        data,
    }
}

/// Output size of torchvision's `Resize(edge)`: the shortest side becomes `edge`, the other
/// `edge * long / short` truncated.
fn shortest_edge_size(height: usize, width: usize, edge: usize) -> (usize, usize) {
    if height <= width {
        (edge, (edge * width / height).max(1))
    } else {
        ((edge * height / width).max(1), edge)
    }
}

/// `round(d / 2)` with Python's ties-to-even, as torchvision's `CenterCrop` offsets.
fn round_half_even_half(d: usize) -> usize {
    if d.is_multiple_of(2) {
        d / 2
    } else {
        let down = d / 2;
        if down.is_multiple_of(2) {
            down
        } else {
            down + 1
        }
    }
}

/// The crop box (top, left, height, width) of torchvision's `RandomResizedCrop.get_params`.
fn random_resized_crop_box(
    height: usize,
    width: usize,
    scale: [f64; 2],
    rng: &mut SplitMix64,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let log_ratio = [RATIO[0].ln(), RATIO[1].ln()];
    for _ in 0..10 {
        let target_area = area * (scale[0] + (scale[1] - scale[0]) * rng.next_f64());
        let aspect = (log_ratio[0] + (log_ratio[1] - log_ratio[0]) * rng.next_f64()).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if 0.0 < w && w <= width as f64 && 0.0 < h && h <= height as f64 {
            let (h, w) = (h as usize, w as usize);
            let top = rng.below((height - h + 1) as u64) as usize;
            let left = rng.below((width - w + 1) as u64) as usize;
            return (top, left, h, w);
        }
    }
    // No draw fitted in ten tries: the largest central crop with a ratio in range.
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < RATIO[0] {
        (
            ((width as f64 / RATIO[0]).round_ties_even() as usize).clamp(1, height),
            width,
        )
    } else if in_ratio > RATIO[1] {
        (
            height,
            ((height as f64 * RATIO[1]).round_ties_even() as usize).clamp(1, width),
        )
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Contributions of input pixels to each output pixel along one axis: (first input index,
/// normalised weights).
fn axis_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    // The triangle filter spans one input pixel each side when upscaling and `scale` pixels when
    // downscaling, so that every input pixel contributes (antialiasing).
    let support = scale.max(1.0);
    (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = (((center + support + 0.5).floor()) as usize).min(input);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 - center + 0.5) / support).abs()).max(0.0))
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (lo, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

/// Bilinear (antialiased) resize to `out_h`×`out_w`, separably: rows first, then columns.
fn resize(planes: &Planes, out_h: usize, out_w: usize) -> Planes {
    if planes.height == out_h && planes.width == out_w {
        return planes.clone();
    }
    let wx = axis_weights(planes.width, out_w);
    let wy = axis_weights(planes.height, out_h);
    let mut data = Vec::with_capacity(planes.channels * out_h * out_w);
    let mut horizontal = vec![0f32; planes.height * out_w];
    for c in 0..planes.channels {
        for y in 0..planes.height {
            for (x, (lo, weights)) in wx.iter().enumerate() {
                horizontal[y * out_w + x] = weights
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * planes.at(c, y, lo + k))
                    .sum();
            }
        }
        for (lo, weights) in &wy {
            for x in 0..out_w {
                data.push(
                    weights
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * horizontal[(lo + k) * out_w + x])
                        .sum(),
                );
            }
        }
    }
    Planes {
        channels: planes.channels,
        height: out_h,
        width: out_w,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planes(h: usize, w: usize, data: Vec<f32>) -> Planes {
        Planes {
            channels: 1,
            height: h,
            width: w,
            data,
        }
    }

    #[test]
    fn upscaling_is_plain_bilinear_with_half_pixel_centres() {
        // 1×2 → 1×4: output centres at 0.25, 0.75, 1.25, 1.75 input pixels.
        let out = resize(&planes(1, 2, vec![0.0, 1.0]), 1, 4);
        assert_eq!(out.data, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn downscaling_by_two_uses_the_widened_triangle() {
        // 1×4 → 1×2: output 0 is centred at input 1.0 with support 2, so inputs 0, 1, 2 weigh
        // 0.75, 0.75, 0.25 (normalised by 1.75); output 1 symmetrically 1, 2, 3.
        let out = resize(&planes(1, 4, vec![0.0, 1.0, 2.0, 3.0]), 1, 2);
        let expect = [(0.75 + 0.5) / 1.75, (0.25 + 1.5 + 2.25) / 1.75];
        for (a, b) in out.data.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{:?}", out.data);
        }
    }

    #[test]
    fn same_size_is_identity() {
        let p = planes(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(resize(&p, 2, 3), p);
        let w = axis_weights(3, 3);
        assert!(
            w.iter()
                .enumerate()
                .all(|(i, (lo, ws))| *lo == i && ws[0] == 1.0)
        );
    }

    #[test]
    fn torchvision_sizes_and_offsets() {
        assert_eq!(shortest_edge_size(28, 56, 10), (10, 20));
        assert_eq!(shortest_edge_size(30, 20, 8), (12, 8));
        assert_eq!(shortest_edge_size(3, 7, 4), (4, 9)); // 28/3 truncated
        // round(1.5) = 2, round(2.5) = 2, round(0.5) = 0 in Python.
        assert_eq!(round_half_even_half(3), 2);
        assert_eq!(round_half_even_half(5), 2);
        assert_eq!(round_half_even_half(1), 0);
        assert_eq!(round_half_even_half(4), 2);
    }

    #[test]
    fn random_resized_crop_stays_inside_and_respects_the_ratio() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..500 {
            let (top, left, h, w) = random_resized_crop_box(20, 30, [0.08, 1.0], &mut rng);
            assert!(h > 0 && w > 0 && top + h <= 20 && left + w <= 30);
            let area = (h * w) as f64 / 600.0;
            assert!(area <= 1.0 + 1e-9);
        }
        // A strip can never hold a 3/4..4/3 crop of half its area: the fallback central crop.
        let (top, left, h, w) = random_resized_crop_box(1, 100, [0.5, 0.5], &mut rng);
        assert_eq!((top, h), (0, 1));
        assert_eq!(w, 1); // round(1 * 4/3) = 1
        assert_eq!(left, 49);
    }
}
