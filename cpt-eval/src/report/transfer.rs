//! Forgetting, backward transfer and forward transfer of several runs side by side: bars per
//! run, coloured by run. Forgetting is shown per experience (when the runs share a stream) and on
//! average. Signs follow `matrix.rs`: forgetting > 0 is worse, BWT < 0 is forgetting, FWT > 0
//! means earlier experiences helped.

use super::chart::{Area, DrawResult, INK, MUTED, font, render_svg, run_colour};
use super::run::Summary;
use super::{ReportError, format};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Chart size in pixels.
const SIZE: (u32, u32) = (900, 340);

/// One group of bars: a name and one value per run (`None`: no bar).
struct Group {
    name: String,
    values: Vec<Option<f64>>,
}

/// The bars of `runs` (each with its colour index and summary); `None` when fewer than two runs
/// have a summary.
pub fn transfer_chart(
    title: &str,
    runs: &[(usize, &Summary)],
) -> Result<Option<String>, ReportError> {
    if runs.len() < 2 {
        return Ok(None);
    }
    let summaries: Vec<&Summary> = runs.iter().map(|(_, s)| *s).collect();
    let colours: Vec<RGBColor> = runs.iter().map(|(i, _)| run_colour(*i)).collect();
    let shared_stream = summaries
        .windows(2)
        .all(|w| w[0].experiences == w[1].experiences);
    let mut forgetting: Vec<Group> = Vec::new();
    if shared_stream {
        for (j, name) in summaries[0].experiences.iter().enumerate() {
            let values: Vec<Option<f64>> = summaries
                .iter()
                .map(|s| s.forgetting.get(j).copied().flatten())
                .collect();
            if values.iter().any(Option::is_some) {
                forgetting.push(Group {
                    name: name.clone(),
                    values,
                });
            }
        }
    }
    let one = |name: &str, value: fn(&Summary) -> Option<f64>| Group {
        name: name.to_string(),
        values: summaries.iter().map(|s| value(s)).collect(),
    };
    forgetting.push(one("mean", |s| s.average_forgetting));
    let bwt = [one("BWT", |s| s.backward_transfer)];
    let fwt = [one("FWT", |s| s.forward_transfer)];

    let svg = render_svg(title, SIZE, |area| {
        let (left, right) = area.split_horizontally(SIZE.0 * 2 / 5);
        let (middle, last) = right.split_horizontally(SIZE.0 * 3 / 10);
        bars(&left, "forgetting (↓ better)", &forgetting, &colours)?;
        bars(&middle, "backward transfer (↑ better)", &bwt, &colours)?;
        bars(&last, "forward transfer (↑ better)", &fwt, &colours)
    })?;
    Ok(Some(svg))
}

/// One panel of grouped bars with a zero line and each bar's value written at its end.
fn bars(area: &Area<'_>, caption: &str, groups: &[Group], colours: &[RGBColor]) -> DrawResult {
    let values = || {
        groups
            .iter()
            .flat_map(|g| g.values.iter().flatten().copied())
    };
    let lo = values().fold(0.0, f64::min);
    let hi = values().fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.15).max(1e-9);
    let (y_lo, y_hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(14.0).color(&INK))
        .margin(10)
        .x_label_area_size(26)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..groups.len() as f64, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(232, 232, 232))
        .axis_style(RGBColor(150, 150, 150))
        .x_labels(0)
        .y_labels(5)
        .label_style(font(12.5).color(&MUTED))
        .y_label_formatter(&|y| format::tick(*y))
        .draw()?;
    let runs = colours.len() as f64;
    let slot = 0.8 / runs;
    let value_style = |v: f64| {
        let v_pos = if v >= 0.0 { VPos::Bottom } else { VPos::Top };
        font(12.0).color(&INK).pos(Pos::new(HPos::Center, v_pos))
    };
    for (g, group) in groups.iter().enumerate() {
        for (r, value) in group.values.iter().enumerate() {
            let Some(v) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let x0 = g as f64 + 0.1 + r as f64 * slot;
            let x1 = x0 + slot * 0.9;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, v)],
                colours[r].filled(),
            )))?;
            let offset = if v >= 0.0 { -2 } else { 2 };
            chart.plotting_area().draw(
                &(EmptyElement::at(((x0 + x1) / 2.0, v))
                    + Text::new(format::signed(v), (0, offset), value_style(v))),
            )?;
        }
        let label = EmptyElement::at((g as f64 + 0.5, y_lo))
            + Text::new(
                group.name.clone(),
                (0, 8),
                font(13.0)
                    .color(&INK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            );
        chart.plotting_area().draw(&label)?;
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (groups.len() as f64, 0.0)],
        INK.stroke_width(1),
    )))?;
    Ok(())
}
