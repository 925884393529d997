//! Training loss (and the total loss with strategy penalties, where it differs) above the
//! learning rate, over the global steps: one chart per run, or one for several runs that share
//! a stream, coloured by run.

use super::chart::{Line, LinePanel, render_svg, run_colour};
use super::run::Run;
use super::stream::Segment;
use super::{ReportError, format};

/// Chart size in pixels.
const SIZE: (u32, u32) = (900, 430);
/// Share of the height given to the loss; the learning rate gets the rest.
const LOSS_SHARE: f64 = 0.66;
/// Steps above which the raw loss is drawn faint under a smoothed line.
const SMOOTH_ABOVE_STEPS: usize = 80;

/// The training chart of `runs` (each with its index, which picks its colour) over
/// `segments`. `None` when no run has logged a step.
pub fn training_chart(
    title: &str,
    runs: &[(usize, &Run)],
    segments: &[Segment],
) -> Result<Option<String>, ReportError> {
    if runs.iter().all(|(_, run)| run.steps.is_empty()) {
        return Ok(None);
    }
    let mut losses = Vec::new();
    let mut rates = Vec::new();
    for &(index, run) in runs {
        let colour = run_colour(index);
        let series = |value: fn(&super::run::StepLine) -> Option<f64>| -> Vec<(f64, f64)> {
            run.steps
                .iter()
                .filter_map(|s| Some((s.global_step as f64, value(s)?)))
                .collect()
        };
        let loss = series(|s| s.loss);
        let total = series(|s| s.total_loss);
        let smooth = loss.len() > SMOOTH_ABOVE_STEPS;
        if smooth {
            losses.push(Line {
                width: 1,
                opacity: 0.25,
                ..Line::new(loss.clone(), colour)
            });
        }
        losses.push(Line::new(smoothed(&loss, smooth), colour));
        if penalties_differ(run) {
            losses.push(Line {
                dashed: true,
                ..Line::new(smoothed(&total, smooth), colour)
            });
        }
        rates.push(Line::new(series(|s| s.lr), colour));
    }
    let chart = render_svg(title, SIZE, |area| {
        let split = (SIZE.1 as f64 * LOSS_SHARE) as u32;
        let (top, bottom) = area.split_vertically(split);
        LinePanel {
            y_desc: "training loss",
            log_y: false,
            y_format: format::tick,
            lines: &losses,
            segments,
            name_segments: true,
            x_desc: false,
        }
        .draw(&top)?;
        LinePanel {
            y_desc: "learning rate",
            log_y: false,
            y_format: format::scientific,
            lines: &rates,
            segments,
            name_segments: false,
            x_desc: true,
        }
        .draw(&bottom)
    })?;
    Ok(Some(chart))
}

/// Whether a strategy's penalty made the total loss differ from the training loss at some step.
pub fn penalties_differ(run: &Run) -> bool {
    run.steps.iter().any(|s| match (s.loss, s.total_loss) {
        (Some(loss), Some(total)) => (loss - total).abs() > 1e-9 * loss.abs().max(1.0),
        _ => false,
    })
}

/// `points` smoothed by a bias-corrected exponential moving average whose horizon is a
/// fortieth of the series (as TensorBoard smooths), or unchanged when `smooth` is false.
fn smoothed(points: &[(f64, f64)], smooth: bool) -> Vec<(f64, f64)> {
    if !smooth {
        return points.to_vec();
    }
    let beta = 1.0 - 40.0 / points.len() as f64;
    let (mut average, mut weight) = (0.0, 0.0);
    points
        .iter()
        .map(|&(x, y)| {
            average = beta * average + (1.0 - beta) * y;
            weight = beta * weight + (1.0 - beta);
            (x, average / weight)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_keeps_a_constant_and_short_series() {
        let flat: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, 2.5)).collect();
        assert!(
            smoothed(&flat, true)
                .iter()
                .all(|p| (p.1 - 2.5).abs() < 1e-12)
        );
        let short = vec![(1.0, 3.0), (2.0, 1.0)];
        assert_eq!(smoothed(&short, false), short);
    }
}
