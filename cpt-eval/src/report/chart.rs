//! What every chart shares: the palettes, rendering a drawing into an SVG string, and a line
//! panel over global steps with the experiences' spans shaded, their boundaries ruled and named.

use super::ReportError;
use super::stream::Segment;
use plotters::coord::Shift;
use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// A drawing area of the SVG backend.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What a drawing closure returns.
pub type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One colour per experience (and held-out set), in stream order: Tableau 10.
const EXPERIENCE_COLOURS: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(176, 122, 161),
    RGBColor(237, 201, 72),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// One colour per run, in the order given: ColorBrewer Dark2, darker than the experiences'
/// palette so the two read apart.
const RUN_COLOURS: [RGBColor; 8] = [
    RGBColor(27, 158, 119),
    RGBColor(217, 95, 2),
    RGBColor(117, 112, 179),
    RGBColor(231, 41, 138),
    RGBColor(102, 166, 30),
    RGBColor(166, 118, 29),
    RGBColor(230, 171, 2),
    RGBColor(102, 102, 102),
];

/// Text, axes and rules.
pub const INK: RGBColor = RGBColor(51, 51, 51);
/// Secondary text.
pub const MUTED: RGBColor = RGBColor(110, 110, 110);
/// Gridlines.
const GRID: RGBColor = RGBColor(232, 232, 232);
/// The shading of every other experience's span.
const BAND: RGBColor = RGBColor(244, 246, 249);
/// Experience boundaries.
const BOUNDARY: RGBColor = RGBColor(150, 150, 150);

/// The font family plotters writes; the page's CSS sets the real stack.
const FONT: &str = "sans-serif";

/// The font at `px` pixels as the page shows it (plotters writes `font-size` as size / 1.24).
pub fn font(px: f64) -> FontDesc<'static> {
    (FONT, px * 1.24).into_font()
}

/// The colour of experience (or set) `index`.
pub fn experience_colour(index: usize) -> RGBColor {
    EXPERIENCE_COLOURS[index % EXPERIENCE_COLOURS.len()]
}

/// The colour of run `index`.
pub fn run_colour(index: usize) -> RGBColor {
    RUN_COLOURS[index % RUN_COLOURS.len()]
}

/// `#rrggbb` of `colour`, for the page's legends.
pub fn css(colour: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", colour.0, colour.1, colour.2)
}

/// Draw into a `width`×`height` SVG on white. The result is one `<svg>` element, labelled
/// `title` for screen readers.
pub fn render_svg(
    title: &str,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    let drawn: DrawResult = (|| {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| ReportError::Chart {
        chart: title.to_string(),
        message: e.to_string(),
    })?;
    let label = super::format::escape(title);
    Ok(svg.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{label}\" "),
        1,
    ))
}

/// One line of a [`LinePanel`].
#[derive(Debug, Clone)]
pub struct Line {
    /// `(x, y)` points; non-finite ones (and non-positive ones on a log axis) are left out.
    pub points: Vec<(f64, f64)>,
    /// Its colour.
    pub colour: RGBColor,
    /// Stroke width in pixels.
    pub width: u32,
    /// Opacity, 0 to 1.
    pub opacity: f64,
    /// Dashed rather than solid.
    pub dashed: bool,
    /// A dot at every point (for sparse series such as evaluations).
    pub markers: bool,
}

impl Line {
    /// A solid line of width 2 in `colour`.
    pub fn new(points: Vec<(f64, f64)>, colour: RGBColor) -> Self {
        Self {
            points,
            colour,
            width: 2,
            opacity: 1.0,
            dashed: false,
            markers: false,
        }
    }
}

/// Lines over global steps, with the experiences' spans.
pub struct LinePanel<'a> {
    /// The y axis's description.
    pub y_desc: &'a str,
    /// A logarithmic y axis (used when all values are positive).
    pub log_y: bool,
    /// How y tick labels are written.
    pub y_format: fn(f64) -> String,
    /// The lines.
    pub lines: &'a [Line],
    /// The experiences' spans (shaded, ruled and named when `name_segments`).
    pub segments: &'a [Segment],
    /// Write each experience's name at the top of its span.
    pub name_segments: bool,
    /// Describe the x axis (otherwise only its ticks are written).
    pub x_desc: bool,
}

impl LinePanel<'_> {
    /// Draw the panel on `area`.
    pub fn draw(&self, area: &Area<'_>) -> DrawResult {
        let drawn: Vec<(f64, f64)> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().copied())
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0))
            .collect();
        let x_max = drawn
            .iter()
            .map(|p| p.0)
            .chain(self.segments.iter().map(|s| s.end as f64))
            .fold(1.0, f64::max);
        let (lo, hi) = drawn
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        if self.log_y && lo > 0.0 {
            let pad = (hi / lo).powf(0.06).max(1.05);
            let (lo, hi) = (lo / pad, hi * pad);
            let y_spec = (lo..hi).log_scale().with_key_points(log_ticks(lo, hi));
            self.draw_on(area, x_max, y_spec, (lo, hi))
        } else {
            let pad = ((hi - lo) * 0.06).max(hi.abs() * 0.02).max(1e-12);
            self.draw_on(area, x_max, lo - pad..hi + pad, (lo - pad, hi + pad))
        }
    }

    fn draw_on<Y>(
        &self,
        area: &Area<'_>,
        x_max: f64,
        y_spec: impl AsRangedCoord<CoordDescType = Y, Value = f64>,
        (y_lo, y_hi): (f64, f64),
    ) -> DrawResult
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .margin_top(if self.name_segments { 22 } else { 8 })
            .margin_right(16)
            .x_label_area_size(if self.x_desc { 40 } else { 24 })
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, y_spec)?;
        let y_format = self.y_format;
        let format_x = |x: &f64| format!("{x:.0}");
        let format_y = |y: &f64| y_format(*y);
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(BOUNDARY)
            .x_labels(8)
            .y_labels(6)
            .label_style(font(12.5).color(&MUTED))
            .axis_desc_style(font(13.0).color(&INK))
            .x_label_formatter(&format_x)
            .y_label_formatter(&format_y)
            .y_desc(self.y_desc);
        if self.x_desc {
            mesh.x_desc("global step");
        }
        mesh.draw()?;

        let mut start = 0.0;
        for (i, segment) in self.segments.iter().enumerate() {
            let end = segment.end as f64;
            if i % 2 == 1 {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(start, y_lo), (end, y_hi)],
                    BAND.filled(),
                )))?;
            }
            if i + 1 < self.segments.len() {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(end, y_lo), (end, y_hi)],
                    BOUNDARY.stroke_width(1),
                )))?;
            }
            if self.name_segments {
                let label = EmptyElement::at((start, y_hi))
                    + Text::new(segment.name.clone(), (4, -16), font(12.5).color(&INK));
                chart.plotting_area().draw(&label)?;
            }
            start = end;
        }

        for line in self.lines {
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0))
                .collect();
            let style = line.colour.mix(line.opacity).stroke_width(line.width);
            if line.dashed {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?;
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style))?;
            }
            if line.markers {
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 3, line.colour.mix(line.opacity).filled())),
                )?;
            }
        }
        Ok(())
    }
}

/// Ticks of a log axis over `[lo, hi]`: round numbers, from powers of ten alone to finer steps
/// until at least four fall in the range (plotters' own log ticks are powers of ten, too few
/// for a perplexity falling from 1000 to 200).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    const MANTISSAS: [&[f64]; 4] = [
        &[1.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0],
        &[1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    let mut ticks = Vec::new();
    for mantissas in MANTISSAS {
        ticks.clear();
        for exponent in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
            let decade = 10f64.powi(exponent);
            ticks.extend(
                mantissas
                    .iter()
                    .map(|m| m * decade)
                    .filter(|t| (lo..=hi).contains(t)),
            );
        }
        if ticks.len() >= 4 {
            break;
        }
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_round_and_enough() {
        assert_eq!(log_ticks(90.0, 1100.0), vec![100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(
            log_ticks(180.0, 1600.0),
            vec![200.0, 300.0, 500.0, 700.0, 1000.0, 1500.0]
        );
        assert_eq!(log_ticks(0.5, 2000.0), vec![1.0, 10.0, 100.0, 1000.0]);
    }
}
