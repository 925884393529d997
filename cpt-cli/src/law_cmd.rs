//! `cpt law fit SWEEP_DIR --law dcpt|chinchilla`: fit a scaling law to a sweep's `sweep.csv`,
//! report its parameters and residuals (fitted and held-out points), and (D-CPT) the
//! loss-optimal mixture ratio at the held-out points' budget and at `--predict` budgets.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use cpt_eval::law::{
    self, Fit, LawKind, Observation, Point, RatioObjective, Residual, ResultsTable,
};
use std::path::PathBuf;

/// `cpt law ...`.
#[derive(Subcommand)]
pub enum LawCommand {
    /// Fit a scaling law to a sweep's results and predict from it.
    Fit(FitArgs),
}

/// Which law to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LawChoice {
    /// L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al., 2022).
    Chinchilla,
    /// L(N, D, r) = E + A/N^alpha + B*r^eta/D^beta + C/(r + epsilon)^gamma (Que et al., 2024).
    Dcpt,
}

/// `cpt law fit`'s arguments.
#[derive(Args)]
pub struct FitArgs {
    /// A sweep directory (its sweep.csv) or a CSV file with a header row.
    sweep: PathBuf,
    /// The law to fit.
    #[arg(long, value_enum)]
    law: LawChoice,
    /// Column of the model size N.
    #[arg(long, default_value = "params")]
    params: String,
    /// Column of the training tokens D.
    #[arg(long, default_value = "tokens")]
    tokens: String,
    /// chinchilla: column of the loss.
    #[arg(long)]
    loss: Option<String>,
    /// dcpt: column of the domain validation loss.
    #[arg(long)]
    domain_loss: Option<String>,
    /// dcpt: column of the general validation loss.
    #[arg(long)]
    general_loss: Option<String>,
    /// dcpt: column of the domain share r_d of the training mixture.
    #[arg(long, conflicts_with = "general_ratio")]
    domain_ratio: Option<String>,
    /// dcpt: column of the general share r_g (the domain share is 1 − r_g).
    #[arg(long)]
    general_ratio: Option<String>,
    /// Leave the rows matching COLUMN=VALUE[,COLUMN=VALUE...] out of the fit and predict them
    /// instead (repeatable).
    #[arg(long = "hold-out", value_name = "COLUMN=VALUE,...")]
    hold_out: Vec<String>,
    /// dcpt: the best mixture ratio at a budget, `N=...,D=...` (repeatable).
    #[arg(long, value_name = "N=...,D=...")]
    predict: Vec<String>,
    /// dcpt objective: minimise w·L_domain + (1 − w)·L_general with this w.
    #[arg(long, default_value_t = 0.5)]
    domain_weight: f64,
    /// dcpt objective instead: minimise L_domain subject to L_general ≤ this bound.
    #[arg(long)]
    max_general_loss: Option<f64>,
}

/// The measured rows, split into the fitted and the held-out ones.
struct Rows {
    labels: Vec<String>,
    params: Vec<f64>,
    tokens: Vec<f64>,
    held_out: Vec<bool>,
}

/// Run `cpt law ...`.
pub fn law(command: LawCommand) -> Result<()> {
    match command {
        LawCommand::Fit(args) => fit(&args),
    }
}

fn fit(args: &FitArgs) -> Result<()> {
    let path = if args.sweep.is_dir() {
        args.sweep.join("sweep.csv")
    } else {
        args.sweep.clone()
    };
    let table = ResultsTable::read(&path)?;
    let labels = match table.text_column("point") {
        Ok(labels) => labels,
        Err(_) => (1..=table.len()).map(|i| format!("row {i}")).collect(),
    };
    let held_out = table_matches(&table, &args.hold_out)?;
    let rows = Rows {
        labels,
        params: table.number_column(&args.params)?,
        tokens: table.number_column(&args.tokens)?,
        held_out,
    };
    let fitted = rows.held_out.iter().filter(|h| !**h).count();
    println!(
        "{} law fit to {}: {fitted} points fitted, {} held out",
        match args.law {
            LawChoice::Chinchilla => "Chinchilla",
            LawChoice::Dcpt => "D-CPT",
        },
        path.display(),
        rows.labels.len() - fitted
    );
    match args.law {
        LawChoice::Chinchilla => {
            let column = args
                .loss
                .as_deref()
                .context("--law chinchilla needs --loss COLUMN")?;
            if args.domain_loss.is_some() || args.general_loss.is_some() {
                bail!("--domain-loss and --general-loss are for --law dcpt; give --loss");
            }
            let losses = table.number_column(column)?;
            let zero = vec![0.0; losses.len()];
            fit_and_report(LawKind::Chinchilla, column, "", &rows, &zero, &losses)?;
            Ok(())
        }
        LawChoice::Dcpt => fit_dcpt(args, &table, &rows),
    }
}

fn fit_dcpt(args: &FitArgs, table: &ResultsTable, rows: &Rows) -> Result<()> {
    if args.loss.is_some() {
        bail!("--loss is for --law chinchilla; give --domain-loss (and --general-loss)");
    }
    let domain_column = args
        .domain_loss
        .as_deref()
        .context("--law dcpt needs --domain-loss COLUMN (and --general-loss COLUMN)")?;
    // Every ratio is handled as the domain share r_d; shown as the column's own share.
    let (domain_share, shown_as_general) = match (&args.domain_ratio, &args.general_ratio) {
        (Some(c), None) => (table.number_column(c)?, false),
        (None, Some(c)) => (
            table.number_column(c)?.iter().map(|r| 1.0 - r).collect(),
            true,
        ),
        _ => bail!("--law dcpt needs the mixture: --domain-ratio COLUMN or --general-ratio COLUMN"),
    };
    let show = |r_d: f64| {
        if shown_as_general {
            format!("r_g = {:.3}", 1.0 - r_d)
        } else {
            format!("r_d = {r_d:.3}")
        }
    };
    let domain_losses = table.number_column(domain_column)?;
    let domain = fit_and_report(
        LawKind::Dcpt,
        domain_column,
        "r = domain share",
        rows,
        &domain_share,
        &domain_losses,
    )?;
    let general = match &args.general_loss {
        Some(column) => {
            let general_share: Vec<f64> = domain_share.iter().map(|r| 1.0 - r).collect();
            let losses = table.number_column(column)?;
            let fit = fit_and_report(
                LawKind::Dcpt,
                column,
                "r = general share",
                rows,
                &general_share,
                &losses,
            )?;
            Some((fit, losses))
        }
        None => None,
    };
    let objective = match args.max_general_loss {
        Some(bound) => {
            if general.is_none() {
                bail!("--max-general-loss needs --general-loss COLUMN");
            }
            RatioObjective::GeneralBound {
                max_general_loss: bound,
            }
        }
        None => {
            if !(0.0..=1.0).contains(&args.domain_weight) {
                bail!("--domain-weight must be in [0, 1]");
            }
            RatioObjective::WeightedSum {
                domain_weight: args.domain_weight,
            }
        }
    };
    println!("\noptimal mixture: {}", objective.describe());
    let general_fit = general.as_ref().map(|(fit, _)| fit);
    let grid = law::ratio_grid(1000);
    let describe = |choice: Option<law::RatioChoice>| match choice {
        Some(c) => format!(
            "{} (L_domain {:.4}{})",
            show(c.domain_ratio),
            c.domain_loss,
            c.general_loss
                .map(|g| format!(", L_general {g:.4}"))
                .unwrap_or_default()
        ),
        None => "none meets the objective".into(),
    };

    // Held-out budgets: the measured best ratio against the law's.
    let mut budgets: Vec<(f64, f64)> = Vec::new();
    for i in (0..rows.labels.len()).filter(|&i| rows.held_out[i]) {
        let budget = (rows.params[i], rows.tokens[i]);
        if !budgets.contains(&budget) {
            budgets.push(budget);
        }
    }
    for (n, d) in budgets {
        let at_budget: Vec<usize> = (0..rows.labels.len())
            .filter(|&i| rows.held_out[i] && rows.params[i] == n && rows.tokens[i] == d)
            .collect();
        let measured = law::best_of(
            at_budget.iter().map(|&i| {
                let general = general.as_ref().map(|(_, losses)| losses[i]);
                (domain_share[i], domain_losses[i], general)
            }),
            &objective,
        );
        let candidates: Vec<f64> = at_budget.iter().map(|&i| domain_share[i]).collect();
        let over_measured = law::best_ratio(&domain, general_fit, n, d, &objective, &candidates);
        let over_all = law::best_ratio(&domain, general_fit, n, d, &objective, &grid);
        println!(
            "held-out budget N = {n}, D = {d} ({} points):",
            at_budget.len()
        );
        println!(
            "  measured best:                     {}",
            describe(measured)
        );
        println!(
            "  law's best of the measured ratios: {}",
            describe(over_measured)
        );
        println!(
            "  law's best over [0, 1]:            {}",
            describe(over_all)
        );
    }
    for item in &args.predict {
        let (n, d) = parse_budget(item)?;
        let best = law::best_ratio(&domain, general_fit, n, d, &objective, &grid);
        println!("prediction at N = {n}, D = {d}: {}", describe(best));
    }
    Ok(())
}

/// Fit one law to one loss column and print parameters and residuals; the held-out rows are
/// predicted, not fitted.
fn fit_and_report(
    law: LawKind,
    column: &str,
    ratio_meaning: &str,
    rows: &Rows,
    ratios: &[f64],
    losses: &[f64],
) -> Result<Fit> {
    let observation = |i: usize| Observation {
        label: rows.labels[i].clone(),
        point: Point {
            params: rows.params[i],
            tokens: rows.tokens[i],
            ratio: ratios[i],
        },
        loss: losses[i],
    };
    let (held, fitted): (Vec<usize>, Vec<usize>) =
        (0..rows.labels.len()).partition(|&i| rows.held_out[i]);
    let fitted: Vec<Observation> = fitted.into_iter().map(observation).collect();
    let held: Vec<Observation> = held.into_iter().map(observation).collect();
    let fit = law::fit(law, &fitted).with_context(|| format!("fitting `{column}`"))?;
    println!(
        "\n`{column}`: {}{}",
        law.formula(),
        if ratio_meaning.is_empty() {
            String::new()
        } else {
            format!(", {ratio_meaning}")
        }
    );
    let params: Vec<String> = law
        .parameter_names()
        .iter()
        .zip(&fit.params)
        .map(|(name, value)| format!("{name} = {value:.4e}"))
        .collect();
    println!("  {}", params.join(", "));
    println!(
        "  fitted points: RMSE {:.4}, R² {:.4} (Huber δ = {} on ln L, best of {} starts)",
        fit.rmse(),
        fit.r_squared(),
        law::HUBER_DELTA,
        fit.starts
    );
    print_residuals("fitted", &fit.residuals, law);
    if !held.is_empty() {
        let predicted = fit.residuals_at(&held);
        println!("  held-out points: RMSE {:.4}", law::rmse(&predicted));
        print_residuals("held out", &predicted, law);
    }
    Ok(fit)
}

fn print_residuals(kind: &str, residuals: &[Residual], law: LawKind) {
    println!(
        "  {:<10} {:<40} {:>12} {:>12} {:>6} {:>9} {:>9} {:>9}",
        "", "point", "N", "D", "r", "measured", "law", "residual"
    );
    for r in residuals {
        let ratio = match law {
            LawKind::Chinchilla => "-".to_string(),
            LawKind::Dcpt => format!("{:.3}", r.point.ratio),
        };
        println!(
            "  {:<10} {:<40} {:>12} {:>12} {:>6} {:>9.4} {:>9.4} {:>+9.4}",
            kind,
            r.label,
            r.point.params,
            r.point.tokens,
            ratio,
            r.measured,
            r.predicted,
            r.predicted - r.measured
        );
    }
}

/// Which rows each `COLUMN=VALUE,...` filter matches (a row is held out if any filter matches
/// it; a filter matches when all its pairs do).
fn table_matches(table: &ResultsTable, filters: &[String]) -> Result<Vec<bool>> {
    let mut held = vec![false; table.len()];
    for filter in filters {
        let mut matches = vec![true; table.len()];
        for pair in filter.split(',') {
            let (column, value) = pair
                .split_once('=')
                .with_context(|| format!("--hold-out `{filter}`: expected COLUMN=VALUE pairs"))?;
            let cells = table.text_column(column.trim())?;
            for (m, cell) in matches.iter_mut().zip(&cells) {
                *m &= same_value(cell, value.trim());
            }
        }
        if !matches.contains(&true) {
            bail!("--hold-out `{filter}` matches no row of the table");
        }
        for (h, m) in held.iter_mut().zip(matches) {
            *h |= m;
        }
    }
    Ok(held)
}

/// Equal as text, or as numbers (`0.5` = `0.50`).
fn same_value(cell: &str, value: &str) -> bool {
    cell == value || matches!((cell.parse::<f64>(), value.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
}

/// `N=...,D=...` as numbers.
fn parse_budget(item: &str) -> Result<(f64, f64)> {
    let mut n = None;
    let mut d = None;
    for pair in item.split(',') {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--predict `{item}`: expected N=...,D=..."))?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("--predict `{item}`: `{value}` is not a number"))?;
        match key.trim() {
            "N" => n = Some(value),
            "D" => d = Some(value),
            other => bail!("--predict `{item}`: unknown key `{other}` (expected N and D)"),
        }
    }
    match (n, d) {
        (Some(n), Some(d)) => Ok((n, d)),
        _ => bail!("--predict `{item}`: give both N and D"),
    }
}
