//! The eval matrix as a heatmap: rows are the initial model and the model after each
//! experience, columns the sets evaluated (the stream's, then held-out ones), the value written
//! in every cell. The colour scale runs from worse (pale) to better (dark) whatever the metric's
//! direction, on a log scale when a lower-is-better metric spans a wide range (perplexity).

use super::chart::{INK, MUTED, font, render_svg};
use super::stream::EvalMatrix;
use super::{ReportError, format};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// YlGnBu (ColorBrewer), pale to dark: the colour of worse to better.
const SCALE: [RGBColor; 7] = [
    RGBColor(255, 255, 217),
    RGBColor(199, 233, 180),
    RGBColor(127, 205, 187),
    RGBColor(65, 182, 196),
    RGBColor(29, 145, 192),
    RGBColor(34, 94, 168),
    RGBColor(12, 44, 132),
];
/// A cell without a value.
const EMPTY: RGBColor = RGBColor(238, 238, 238);
/// Cell height and minimum width in pixels.
const CELL_HEIGHT: u32 = 34;
const MIN_CELL_WIDTH: u32 = 84;
/// Space before the held-out columns.
const GAP: u32 = 10;
/// Approximate width of a 14-pixel character (plotters cannot measure text without fonts).
const CHAR_WIDTH: f64 = 7.6;
/// Written above the held-out columns.
const HELD_OUT_NOTE: &str = "held out (never trained on)";
/// Values spanning more than this ratio are coloured on a log scale.
const LOG_SCALE_RATIO: f64 = 3.0;

/// The heatmap of `matrix`, or `None` when it has no row. Its colour scale spans the values of
/// every matrix of `peers` with the same metric (the runs of one report), so equal colours mean
/// equal values across runs.
pub fn heatmap(
    title: &str,
    matrix: &EvalMatrix,
    peers: &[EvalMatrix],
) -> Result<Option<String>, ReportError> {
    if matrix.rows.is_empty() || matrix.columns.is_empty() {
        return Ok(None);
    }
    let text_width = |s: &str| (s.chars().count() as f64 * CHAR_WIDTH).ceil() as u32;
    let label_width = matrix
        .rows
        .iter()
        .map(|(label, _)| text_width(label))
        // The corner's note is set smaller than the labels.
        .chain(std::iter::once(text_width("after training on") * 9 / 10))
        .max()
        .unwrap_or(0)
        + 20;
    let cell_width = matrix
        .columns
        .iter()
        .map(|c| text_width(c) + 14)
        .max()
        .unwrap_or(0)
        .max(MIN_CELL_WIDTH);
    let held_out = matrix.columns.len() > matrix.stream_len;
    let header = if held_out { 50 } else { 34 };
    let left = 12 + label_width;
    let column_x =
        |j: usize| left + j as u32 * cell_width + if j >= matrix.stream_len { GAP } else { 0 };
    let same_metric = peers
        .iter()
        .filter(|p| p.metric == matrix.metric && p.lower_is_better == matrix.lower_is_better);
    let scale = ColourScale::new(
        matrix.lower_is_better,
        std::iter::once(matrix).chain(same_metric),
    );
    let direction = if matrix.lower_is_better {
        "lower is better"
    } else {
        "higher is better"
    };
    let legend_note = format!("{}: {direction}{}", matrix.metric, scale.log_note());
    // Wide enough for the cells, the note above the held-out columns and the one below.
    let width = (column_x(matrix.columns.len()) + 16)
        .max(if held_out {
            column_x(matrix.stream_len) + text_width(HELD_OUT_NOTE) * 9 / 10 + 16
        } else {
            0
        })
        .max(left + text_width(&legend_note) * 9 / 10 + 16);
    let top = 12 + header;
    let height = top + matrix.rows.len() as u32 * CELL_HEIGHT + 64;

    let svg = render_svg(title, (width, height), |area| {
        let text = |size: f64, colour: &RGBColor, h: HPos| {
            font(size).color(colour).pos(Pos::new(h, VPos::Center))
        };
        area.draw(&Text::new(
            "after training on ↓",
            (12, (top - 12) as i32),
            text(13.0, &MUTED, HPos::Left),
        ))?;
        if held_out {
            let x = column_x(matrix.stream_len) as i32;
            area.draw(&Text::new(
                HELD_OUT_NOTE,
                (x, 18),
                text(12.5, &MUTED, HPos::Left),
            ))?;
        }
        for (j, column) in matrix.columns.iter().enumerate() {
            let x = (column_x(j) + cell_width / 2) as i32;
            area.draw(&Text::new(
                column.as_str(),
                (x, (top - 12) as i32),
                text(14.0, &INK, HPos::Center),
            ))?;
        }
        for (i, (label, values)) in matrix.rows.iter().enumerate() {
            let y = top + i as u32 * CELL_HEIGHT;
            area.draw(&Text::new(
                label.as_str(),
                (12, (y + CELL_HEIGHT / 2) as i32),
                text(14.0, &INK, HPos::Left),
            ))?;
            for (j, value) in values.iter().enumerate().take(matrix.columns.len()) {
                let x = column_x(j);
                let (fill, shade) = match value.and_then(|v| scale.position(v)) {
                    Some(t) => (scale.colour(t), t),
                    None => (EMPTY, 0.0),
                };
                let (x0, y0) = (x as i32 + 1, y as i32 + 1);
                let (x1, y1) = ((x + cell_width) as i32 - 1, (y + CELL_HEIGHT) as i32 - 1);
                area.draw(&Rectangle::new([(x0, y0), (x1, y1)], fill.filled()))?;
                // The diagonal: each experience's set just after training on it.
                if i >= 1 && i - 1 == j && j < matrix.stream_len {
                    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], INK.stroke_width(2)))?;
                }
                let ink = if shade > 0.55 { WHITE } else { INK };
                let written = value.map_or("—".to_string(), format::value);
                area.draw(&Text::new(
                    written,
                    ((x + cell_width / 2) as i32, (y + CELL_HEIGHT / 2) as i32),
                    text(14.0, &ink, HPos::Center),
                ))?;
            }
        }
        // The legend: a ramp from worse to better, its ends labelled with values.
        let y = (top + matrix.rows.len() as u32 * CELL_HEIGHT + 22) as i32;
        let (x0, ramp) = (left as i32, 180);
        for k in 0..ramp {
            let t = k as f64 / (ramp - 1) as f64;
            area.draw(&Rectangle::new(
                [(x0 + k, y), (x0 + k + 1, y + 12)],
                scale.colour(t).filled(),
            ))?;
        }
        let (worse, better) = scale.ends();
        area.draw(&Text::new(
            format!("worse {}", format::value(worse)),
            (x0 - 6, y + 6),
            text(13.0, &MUTED, HPos::Right),
        ))?;
        area.draw(&Text::new(
            format!("{} better", format::value(better)),
            (x0 + ramp + 6, y + 6),
            text(13.0, &MUTED, HPos::Left),
        ))?;
        area.draw(&Text::new(
            legend_note.as_str(),
            (x0, y + 30),
            text(13.0, &MUTED, HPos::Left),
        ))?;
        Ok(())
    })?;
    Ok(Some(svg))
}

/// Maps values to a position on [`SCALE`]: 0 the worst value of the matrix, 1 the best.
struct ColourScale {
    worst: f64,
    best: f64,
    log: bool,
}

impl ColourScale {
    /// The scale over the values of `matrices`.
    fn new<'a>(lower_is_better: bool, matrices: impl Iterator<Item = &'a EvalMatrix>) -> Self {
        let values: Vec<f64> = matrices
            .flat_map(|m| m.rows.iter())
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .filter(|v| v.is_finite())
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // Perplexity-like metrics (lower is better, positive, spanning a wide range) are compared
        // by ratio; accuracies by difference.
        let log = lower_is_better && lo > 0.0 && hi / lo > LOG_SCALE_RATIO;
        let (worst, best) = if lower_is_better { (hi, lo) } else { (lo, hi) };
        Self { worst, best, log }
    }

    /// The matrix's worst and best values.
    fn ends(&self) -> (f64, f64) {
        (self.worst, self.best)
    }

    fn log_note(&self) -> &'static str {
        if self.log { " (log colour scale)" } else { "" }
    }

    /// Where `v` sits between the worst (0) and best (1) values.
    fn position(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        let map = |x: f64| if self.log { x.ln() } else { x };
        let span = map(self.best) - map(self.worst);
        if span.abs() < 1e-12 || !span.is_finite() {
            return Some(0.5);
        }
        Some(((map(v) - map(self.worst)) / span).clamp(0.0, 1.0))
    }

    /// The colour at position `t` of the scale, interpolated between its stops.
    fn colour(&self, t: f64) -> RGBColor {
        let scaled = t.clamp(0.0, 1.0) * (SCALE.len() - 1) as f64;
        let k = (scaled.floor() as usize).min(SCALE.len() - 2);
        let f = scaled - k as f64;
        let (a, b) = (SCALE[k], SCALE[k + 1]);
        let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
        RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(lower_is_better: bool) -> EvalMatrix {
        EvalMatrix {
            metric: "m".into(),
            lower_is_better,
            columns: vec!["a".into(), "b".into()],
            stream_len: 2,
            rows: vec![
                ("initial".into(), vec![Some(1.0), Some(2.0)]),
                ("a".into(), vec![Some(1.5), None]),
            ],
        }
    }

    #[test]
    fn better_is_dark_in_either_direction() {
        let lower = ColourScale::new(true, [matrix(true)].iter());
        assert_eq!(lower.position(1.0), Some(1.0));
        assert_eq!(lower.position(2.0), Some(0.0));
        let higher = ColourScale::new(false, [matrix(false)].iter());
        assert_eq!(higher.position(2.0), Some(1.0));
        assert_eq!(higher.colour(1.0), SCALE[6]);
        assert_eq!(higher.colour(0.0), SCALE[0]);
    }
}
