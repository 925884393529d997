//! Each set's metric at every evaluation through training (x: global step), with the
//! experience boundaries ruled, so the stability gap — a dip in an old experience's metric right
//! after a boundary, recovered later — shows. One chart per run with a line per set, or, for
//! runs sharing a stream, one chart per set with a line per run. Downstream tasks are drawn the
//! same way.

use super::chart::{Line, LinePanel, experience_colour, render_svg, run_colour};
use super::stream::{Segment, Series};
use super::{ReportError, format};

/// Chart size in pixels.
const SIZE: (u32, u32) = (900, 330);
/// A positive lower-is-better series spanning more than this ratio is drawn on a log axis.
const LOG_AXIS_RATIO: f64 = 3.0;

/// A line of a curve chart: a series and how to draw it.
pub struct Curve<'a> {
    /// The series.
    pub series: &'a Series,
    /// Its colour index: an experience's position for per-run charts, a run's otherwise.
    pub colour: usize,
    /// Dashed (held-out sets, never trained on).
    pub dashed: bool,
}

/// Whether `curves` index experiences (per-run charts) or runs (per-set charts) by colour.
#[derive(Clone, Copy)]
pub enum Palette {
    /// Colour by experience.
    Experiences,
    /// Colour by run.
    Runs,
}

/// A chart of `curves` over `segments`; `None` when no curve has a point.
pub fn curve_chart(
    title: &str,
    y_desc: &str,
    lower_is_better: bool,
    curves: &[Curve<'_>],
    palette: Palette,
    segments: &[Segment],
) -> Result<Option<String>, ReportError> {
    if curves.iter().all(|c| c.series.points.is_empty()) {
        return Ok(None);
    }
    let lines: Vec<Line> = curves
        .iter()
        .map(|c| {
            let colour = match palette {
                Palette::Experiences => experience_colour(c.colour),
                Palette::Runs => run_colour(c.colour),
            };
            Line {
                dashed: c.dashed,
                markers: true,
                ..Line::new(c.series.points.clone(), colour)
            }
        })
        .collect();
    let values = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let lo = values().fold(f64::INFINITY, f64::min);
    let hi = values().fold(f64::NEG_INFINITY, f64::max);
    let log_y = lower_is_better && lo > 0.0 && hi / lo > LOG_AXIS_RATIO;
    let svg = render_svg(title, SIZE, |area| {
        LinePanel {
            y_desc,
            log_y,
            y_format: format::tick,
            lines: &lines,
            segments,
            name_segments: true,
            x_desc: true,
        }
        .draw(area)
    })?;
    Ok(Some(svg))
}
