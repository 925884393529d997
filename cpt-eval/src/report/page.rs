//! The HTML page: a header, the runs' summary numbers, then one section per kind of chart and
//! the configs. Everything is inline (CSS in `<style>`, charts as `<svg>`), with no script, font
//! or network request, so the file reads the same offline and sent by mail.

use super::ReportError;
use super::chart::{MUTED, css, experience_colour, run_colour};
use super::configs::configs_html;
use super::curves::{Curve, Palette, curve_chart};
use super::format::{self, escape};
use super::heatmap::heatmap;
use super::run::Run;
use super::stream::{EvalMatrix, Segment, Series, TaskSeries};
use super::training::{penalties_differ, training_chart};
use super::transfer::transfer_chart;

/// The page's style sheet: the system font stack, cards on a grey page, charts that shrink to
/// narrow windows.
const STYLE: &str = r#"
:root { --ink: #333; --muted: #6e6e6e; --line: #e3e5e8; --page: #f4f5f7; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 20px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 0; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px; margin: 22px 0; }
h2 { margin: 0 0 4px; font-size: 19px; font-weight: 620; }
p.lead { margin: 0 0 14px; color: var(--muted); font-size: 14px; }
figure { margin: 18px 0 0; }
figcaption { font-size: 14px; margin-bottom: 6px; }
figcaption b { font-weight: 600; margin-right: 10px; }
.side { display: flex; flex-wrap: wrap; gap: 0 28px; }
figure svg { display: block; max-width: 100%; height: auto; }
.legend { display: inline-flex; flex-wrap: wrap; gap: 4px 14px; color: var(--muted);
  font-size: 13px; vertical-align: middle; }
.legend i { display: inline-block; width: 18px; height: 0; border-top: 3px solid;
  vertical-align: middle; margin-right: 5px; }
.legend i.dashed { border-top-style: dashed; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 3px;
  margin-right: 7px; vertical-align: baseline; }
table { border-collapse: collapse; font-size: 13.5px; width: 100%; }
th, td { padding: 6px 7px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2), table.diff td,
  table.diff th { text-align: left; }
.scroll { overflow-x: auto; }
td.name { font-weight: 600; }
td:nth-child(2) { white-space: normal; }
table.extras { width: auto; margin-top: 4px; }
ul.notes { margin: 12px 0 0; padding-left: 18px; color: var(--muted); font-size: 13px; }
p.note { color: var(--muted); font-size: 13.5px; font-style: italic; margin: 10px 0 0; }
.configs { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
  gap: 12px; margin-top: 14px; }
details { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; }
summary { cursor: pointer; font-weight: 600; font-size: 14px; }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: 12.5px; }
pre { margin: 8px 0 0; white-space: pre-wrap; max-height: 520px; overflow: auto; }
footer { color: var(--muted); font-size: 12.5px; text-align: center; }
"#;

/// The whole page for `runs`.
pub fn render(runs: &[Run]) -> Result<String, ReportError> {
    let names: Vec<String> = runs.iter().map(|r| escape(&r.name)).collect();
    let shared = shared_segments(runs);
    let mut body = String::new();
    body.push_str(&format!(
        "<header><h1>Continual pre-training report</h1><p>{} — {}</p></header>\n",
        names.join(", "),
        metric_line(runs)
    ));
    body.push_str(&runs_section(runs));
    body.push_str(&training_section(runs, shared.as_deref())?);
    body.push_str(&matrix_section(runs)?);
    body.push_str(&curves_section(runs, shared.as_deref())?);
    if runs.len() > 1 {
        body.push_str(&transfer_section(runs)?);
    }
    body.push_str(&tasks_section(runs, shared.as_deref())?);
    body.push_str(&section(
        "configs",
        "Configs",
        "Each run's resolved config.toml; with several runs, the keys that differ first.",
        &configs_html(runs),
    ));
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>cpt report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\
         <footer>Made by <code>cpt report</code> {} from {}.</footer>\n</main>\n</body>\n</html>\n",
        names.join(", "),
        env!("CARGO_PKG_VERSION"),
        runs.iter()
            .map(|r| format!("<code>{}</code>", escape(&r.dir.display().to_string())))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// The experiences' spans, when every run has the same ones (and there are several runs).
fn shared_segments(runs: &[Run]) -> Option<Vec<Segment>> {
    let first = runs.first()?.segments();
    let shared =
        runs.len() > 1 && !first.is_empty() && runs[1..].iter().all(|r| r.segments() == first);
    shared.then_some(first)
}

/// "perplexity (lower is better)", or a list when runs differ.
fn metric_line(runs: &[Run]) -> String {
    let mut metrics: Vec<String> = runs
        .iter()
        .filter_map(Run::metric)
        .map(|(name, lower)| {
            let direction = if lower { "lower" } else { "higher" };
            format!("{} ({direction} is better)", escape(&name))
        })
        .collect();
    metrics.dedup();
    if metrics.is_empty() {
        "no evaluation yet".to_string()
    } else {
        metrics.join("; ")
    }
}

fn section(id: &str, title: &str, lead: &str, content: &str) -> String {
    format!(
        "<section id=\"{id}\">\n<h2>{title}</h2>\n<p class=\"lead\">{lead}</p>\n{content}</section>\n"
    )
}

fn figure(title: &str, legend: &str, svg: &str) -> String {
    format!(
        "<figure><figcaption><b>{}</b>{legend}</figcaption>\n{svg}\n</figure>\n",
        escape(title)
    )
}

fn note(text: &str) -> String {
    format!("<p class=\"note\">{}</p>\n", escape(text))
}

/// A legend of `(colour, label, dashed)` keys.
fn legend(keys: &[(String, String, bool)]) -> String {
    let items: String = keys
        .iter()
        .map(|(colour, label, dashed)| {
            let class = if *dashed { " class=\"dashed\"" } else { "" };
            format!(
                "<span><i{class} style=\"border-color:{colour}\"></i>{}</span>",
                escape(label)
            )
        })
        .collect();
    format!("<span class=\"legend\">{items}</span>")
}

fn run_keys(runs: &[Run]) -> Vec<(String, String, bool)> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| (css(run_colour(i)), r.label(), false))
        .collect()
}

/// The summary numbers of every run, and what was missing from each.
fn runs_section(runs: &[Run]) -> String {
    // Tokens for language models, images for vision ones.
    let mut units: Vec<&str> = runs.iter().map(Run::unit).collect();
    units.dedup();
    let unit = if units.len() == 1 { units[0] } else { "units" };
    let mut html = format!(
        "<div class=\"scroll\"><table><thead><tr><th>run</th><th>strategies</th><th>status</th>\
         <th>final avg</th><th>avg forgetting</th><th>BWT</th><th>FWT</th><th>{unit}</th>\
         <th>steps</th><th>wall time</th><th>{unit}/s</th><th>peak RSS</th></tr></thead><tbody>\n",
    );
    let dash = || "—".to_string();
    for (i, run) in runs.iter().enumerate() {
        let summary = run.summary.as_ref();
        let number = |f: fn(&super::run::Summary) -> Option<f64>, show: fn(f64) -> String| {
            summary.and_then(f).map_or_else(dash, show)
        };
        let (seen, steps) = run.progress();
        let status = match (summary, steps) {
            (Some(_), _) => "finished".to_string(),
            (None, Some(step)) => format!("in progress (step {step})"),
            (None, None) => "not started".to_string(),
        };
        html.push_str(&format!(
            "<tr><td class=\"name\"><span class=\"swatch\" style=\"background:{}\"></span>{}</td>\
             <td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            css(run_colour(i)),
            escape(&run.name),
            escape(&run.strategies().join(", ")),
            number(|s| s.final_average, format::value),
            number(|s| s.average_forgetting, format::signed),
            number(|s| s.backward_transfer, format::signed),
            number(|s| s.forward_transfer, format::signed),
            seen.map_or_else(dash, format::count),
            steps.map_or_else(dash, format::count),
            number(|s| s.wall_time_secs, format::duration),
            summary
                .and_then(|s| s.tokens_per_sec)
                .map_or_else(dash, |t| format!(
                    "{} {unit}/s",
                    format::count(t.round() as u64)
                )),
            number(|s| s.peak_rss_mib, |m| format!("{m:.0} MiB")),
        ));
    }
    html.push_str("</tbody></table></div>\n");
    let notes: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.notes
                .iter()
                .map(move |n| format!("<li>{}: {}</li>", escape(&r.name), escape(n)))
        })
        .collect();
    if !notes.is_empty() {
        html.push_str(&format!("<ul class=\"notes\">{}</ul>\n", notes.join("")));
    }
    section(
        "runs",
        "Runs",
        "Final average of the matrix metric over the stream; forgetting &gt; 0 is worse; \
         backward transfer &lt; 0 means forgetting; forward transfer &gt; 0 means earlier \
         experiences helped.",
        &html,
    )
}

fn training_section(runs: &[Run], shared: Option<&[Segment]>) -> Result<String, ReportError> {
    let mut html = String::new();
    let penalties = runs.iter().any(penalties_differ);
    let keys = |runs: &[(usize, &Run)]| {
        // A chart of one run is titled by it; its legend need not repeat the name.
        let name = |r: &Run| {
            if runs.len() == 1 {
                "loss".to_string()
            } else {
                r.label()
            }
        };
        let mut keys: Vec<(String, String, bool)> = runs
            .iter()
            .map(|(i, r)| (css(run_colour(*i)), name(r), false))
            .collect();
        if penalties {
            keys.push((
                css(MUTED),
                "dashed: with strategy penalties".to_string(),
                true,
            ));
        }
        keys
    };
    let indexed: Vec<(usize, &Run)> = runs.iter().enumerate().collect();
    // One chart for runs sharing a stream, else one per run: (title, runs, their spans).
    let charts = match shared {
        Some(segments) => vec![("All runs".to_string(), indexed, segments.to_vec())],
        None => indexed
            .into_iter()
            .map(|(i, r)| (r.label(), vec![(i, r)], r.segments()))
            .collect(),
    };
    for (title, group, segments) in charts {
        match training_chart(&title, &group, &segments)? {
            Some(svg) => html.push_str(&figure(&title, &legend(&keys(&group)), &svg)),
            None => html.push_str(&note(&format!("{title}: no training steps logged yet."))),
        }
    }
    Ok(section(
        "training",
        "Training loss and learning rate",
        "Per optimizer step; shaded bands and rules mark the experiences.",
        &html,
    ))
}

fn matrix_section(runs: &[Run]) -> Result<String, ReportError> {
    let matrices: Vec<Option<EvalMatrix>> = runs.iter().map(Run::eval_matrix).collect();
    let peers: Vec<EvalMatrix> = matrices.iter().flatten().cloned().collect();
    let mut figures = String::new();
    let mut notes = String::new();
    for (run, matrix) in runs.iter().zip(&matrices) {
        let title = run.label();
        let drawn = match matrix {
            Some(matrix) => heatmap(&title, matrix, &peers)?,
            None => None,
        };
        match drawn {
            Some(svg) => figures.push_str(&figure(&title, "", &svg)),
            None => notes.push_str(&note(&format!("{title}: no evaluation yet."))),
        }
    }
    let mut html = format!("<div class=\"side\">{figures}</div>\n{notes}");
    for run in runs {
        html.push_str(&extras_table(run));
    }
    Ok(section(
        "matrix",
        "Eval matrix",
        "Rows: the model before training and after each experience; columns: the set evaluated. \
         Outlined: each experience right after training on it. Darker is better.",
        &html,
    ))
}

/// The extra metrics per set after the last experience (probe accuracies, recall@k).
fn extras_table(run: &Run) -> String {
    let Some(extras) = run.summary.as_ref().map(|s| &s.final_extras) else {
        return String::new();
    };
    if extras.is_empty() {
        return String::new();
    }
    // Metrics down, sets across: there are usually more metrics than sets.
    let mut metrics: Vec<&String> = extras.values().flat_map(|m| m.keys()).collect();
    metrics.sort();
    metrics.dedup();
    let mut html = format!(
        "<p class=\"lead\">{}: further metrics after the last experience</p>\
         <div class=\"scroll\"><table class=\"extras\"><thead><tr><th>metric</th>",
        escape(&run.label())
    );
    for set in extras.keys() {
        html.push_str(&format!("<th>{}</th>", escape(set)));
    }
    html.push_str("</tr></thead><tbody>");
    for metric in &metrics {
        html.push_str(&format!("<tr><td>{}</td>", escape(metric)));
        for values in extras.values() {
            let v = values.get(*metric).copied().flatten();
            let shown = v.map_or("—".to_string(), format::value);
            html.push_str(&format!("<td>{shown}</td>"));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>\n");
    html
}

fn curves_section(runs: &[Run], shared: Option<&[Segment]>) -> Result<String, ReportError> {
    let mut html = String::new();
    let same_metric = runs.windows(2).all(|w| w[0].metric() == w[1].metric());
    match (shared, same_metric) {
        (Some(segments), true) => {
            let (metric, lower) = runs[0].metric().unwrap_or(("metric".into(), false));
            let per_run: Vec<Vec<Series>> = runs.iter().map(Run::metric_series).collect();
            for set in &per_run[0] {
                let curves: Vec<Curve<'_>> = per_run
                    .iter()
                    .enumerate()
                    .filter_map(|(i, series)| {
                        let series = series.iter().find(|s| s.name == set.name)?;
                        Some(Curve {
                            series,
                            colour: i,
                            dashed: false,
                        })
                    })
                    .collect();
                let title = format!("{metric} on {}", set.name);
                if let Some(svg) =
                    curve_chart(&title, &metric, lower, &curves, Palette::Runs, segments)?
                {
                    html.push_str(&figure(&title, &legend(&run_keys(runs)), &svg));
                }
            }
        }
        _ => {
            for run in runs {
                let Some((metric, lower)) = run.metric() else {
                    html.push_str(&note(&format!("{}: no evaluation yet.", run.label())));
                    continue;
                };
                let series = run.metric_series();
                let stream = run.experience_names();
                let curves: Vec<Curve<'_>> = series
                    .iter()
                    .enumerate()
                    .map(|(k, s)| Curve {
                        series: s,
                        colour: k,
                        dashed: !stream.contains(&s.name),
                    })
                    .collect();
                let keys: Vec<(String, String, bool)> = curves
                    .iter()
                    .map(|c| {
                        (
                            css(experience_colour(c.colour)),
                            c.series.name.clone(),
                            c.dashed,
                        )
                    })
                    .collect();
                let title = run.label();
                match curve_chart(
                    &title,
                    &metric,
                    lower,
                    &curves,
                    Palette::Experiences,
                    &run.segments(),
                )? {
                    Some(svg) => html.push_str(&figure(&title, &legend(&keys), &svg)),
                    None => html.push_str(&note(&format!("{title}: no evaluation yet."))),
                }
            }
        }
    }
    Ok(section(
        "curves",
        "Through training",
        "The metric on each set at every evaluation. A dip on an old experience's set just \
         after a boundary, recovered later, is the stability gap. Dashed: held-out sets.",
        &html,
    ))
}

fn transfer_section(runs: &[Run]) -> Result<String, ReportError> {
    let finished: Vec<(usize, &super::run::Summary)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.summary.as_ref()?)))
        .collect();
    let keys: Vec<(String, String, bool)> = finished
        .iter()
        .map(|(i, _)| (css(run_colour(*i)), runs[*i].label(), false))
        .collect();
    let html = match transfer_chart("Forgetting and transfer", &finished)? {
        Some(svg) => figure("", &legend(&keys), &svg),
        None => note("Needs at least two finished runs (with summary.json)."),
    };
    Ok(section(
        "transfer",
        "Forgetting and transfer",
        "From each finished run's eval matrix, in the metric's units. Forgetting: final value \
         against the best seen, per experience and on average.",
        &html,
    ))
}

fn tasks_section(runs: &[Run], shared: Option<&[Segment]>) -> Result<String, ReportError> {
    let per_run: Vec<Vec<TaskSeries>> = runs.iter().map(Run::task_series).collect();
    let mut names: Vec<&String> = per_run.iter().flatten().map(|t| &t.series.name).collect();
    names.dedup();
    let mut unique: Vec<&String> = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    if unique.is_empty() {
        return Ok(String::new());
    }
    let segments: Vec<Segment> = match (shared, runs) {
        (Some(s), _) => s.to_vec(),
        (None, [only]) => only.segments(),
        (None, _) => Vec::new(),
    };
    let mut html = String::new();
    for name in unique {
        let found: Vec<(usize, &TaskSeries)> = per_run
            .iter()
            .enumerate()
            .filter_map(|(i, tasks)| Some((i, tasks.iter().find(|t| &t.series.name == name)?)))
            .collect();
        let (_, first) = found[0];
        let curves: Vec<Curve<'_>> = found
            .iter()
            .map(|(i, t)| Curve {
                series: &t.series,
                colour: *i,
                dashed: false,
            })
            .collect();
        let direction = match first.higher_is_better {
            Some(true) => " (higher is better)",
            Some(false) => " (lower is better)",
            None => "",
        };
        let title = format!("{name}: {}{direction}", first.metric);
        let lower = first.higher_is_better == Some(false);
        let keys: Vec<(String, String, bool)> = found
            .iter()
            .map(|(i, _)| (css(run_colour(*i)), runs[*i].label(), false))
            .collect();
        if let Some(svg) = curve_chart(
            &title,
            &first.metric,
            lower,
            &curves,
            Palette::Runs,
            &segments,
        )? {
            html.push_str(&figure(&title, &legend(&keys), &svg));
        }
    }
    Ok(section(
        "tasks",
        "Downstream tasks",
        "Each task's primary metric at every evaluation (or after each experience).",
        &html,
    ))
}
