//! `cpt sweep SWEEP.toml`: a grid of runs over config keys. Every point is a normal run
//! directory (with `point.json`: its index, name, axis values and overrides) under one sweep
//! directory; points run in sequence or `--jobs N` at a time, finished ones are skipped and
//! interrupted ones resumed; `sweep.csv` gathers the axis values and what each run measured.
//! Every point's config is checked before any runs.

mod results;
mod runner;
mod spec;

use crate::backend::{BackendChoice, BackendJob, dispatch};
use crate::{arch, model_source};
use anyhow::{Context, Result, bail};
use cpt_core::RunConfig;
use cpt_core::atomic::write_atomic;
use runner::{Launch, PointOutcome};
use spec::{PointSpec, Sweep};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A sweep to run.
pub struct SweepJob {
    /// The sweep file.
    pub sweep: PathBuf,
    /// The sweep directory (default: `runs/<sweep file name>`).
    pub out: Option<PathBuf>,
    /// Points running at once.
    pub jobs: usize,
    /// List the points and check their configs, run nothing.
    pub dry_run: bool,
    /// Backend of the points' runs.
    pub backend: Option<BackendChoice>,
}

/// How a sweep ended, for the exit status.
pub enum SweepEnd {
    /// Every point has finished.
    Finished,
    /// Stopped by a signal; running the same command again resumes it.
    Interrupted,
}

/// A point with its resolved, checked config.
pub struct PlannedPoint {
    /// Its place in the grid.
    pub spec: PointSpec,
    /// Its run config.
    pub config: RunConfig,
    /// Its model's parameter count.
    pub params: u64,
}

/// The parameter count of each config's model (as `cpt plan` counts it).
struct ParameterCounts<'a>(&'a [RunConfig]);

impl BackendJob for ParameterCounts<'_> {
    type Output = Vec<u64>;
    fn run<B: cpt_core::TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<Vec<u64>> {
        self.0
            .iter()
            .map(|config| Ok(arch::plan_run::<B::InnerBackend>(config, &device)?.parameters()))
            .collect()
    }
}

/// Run (or resume, or list) a sweep.
pub fn sweep(job: SweepJob) -> Result<SweepEnd> {
    if job.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let sweep = Sweep::load(&job.sweep)?;
    let points = plan(&sweep)?;
    let out = job.out.clone().unwrap_or_else(|| {
        let stem = job.sweep.file_stem().unwrap_or_default().to_string_lossy();
        PathBuf::from("runs").join(stem.as_ref())
    });
    println!(
        "sweep {}: {} points over {}, base {}",
        job.sweep.display(),
        points.len(),
        sweep
            .axes
            .iter()
            .map(|a| format!("{} ({})", a.column, a.rows.len()))
            .collect::<Vec<_>>()
            .join(" × "),
        sweep.base.display()
    );
    for point in &points {
        let done = out.join(&point.spec.name).join("summary.json").exists();
        println!(
            "  {}  {} parameters{}",
            point.spec.name,
            point.params,
            if done { "  (finished)" } else { "" }
        );
        if job.dry_run {
            for item in &point.spec.overrides {
                println!("      --set {item}");
            }
        }
    }
    if job.dry_run {
        return Ok(SweepEnd::Finished);
    }

    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let sweep_text = std::fs::read(&job.sweep)?;
    write_atomic(&out.join("sweep.toml"), &sweep_text)?;
    for point in &points {
        write_point_json(&out.join(&point.spec.name), point)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    crate::run::install_signal_handlers(stop.clone())?;
    let launch = Launch {
        base: &sweep.base,
        backend: job.backend,
        jobs: job.jobs,
        stop: &stop,
    };
    let outcomes = runner::run_points(&out, &points, &launch)?;

    let mut rows = Vec::new();
    for (point, outcome) in points.iter().zip(&outcomes) {
        if matches!(outcome, PointOutcome::Skipped | PointOutcome::Finished) {
            rows.push(results::point_row(&out.join(&point.spec.name), point)?);
        }
    }
    let csv_path = out.join("sweep.csv");
    results::write_csv(&csv_path, &rows)?;
    println!(
        "{} of {} points finished; results in {}",
        rows.len(),
        points.len(),
        csv_path.display()
    );
    let failed: Vec<String> = points
        .iter()
        .zip(&outcomes)
        .filter_map(|(p, o)| match o {
            PointOutcome::Failed(why) => Some(format!("`{}`: {why}", p.spec.name)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!("{} point(s) failed: {}", failed.len(), failed.join("; "));
    }
    if outcomes.contains(&PointOutcome::Interrupted) {
        eprintln!(
            "sweep interrupted; run the same command again to resume it (finished points are kept)"
        );
        return Ok(SweepEnd::Interrupted);
    }
    Ok(SweepEnd::Finished)
}

/// Resolve and check every point's config (and count its parameters) before anything runs.
fn plan(sweep: &Sweep) -> Result<Vec<PlannedPoint>> {
    if !sweep.base.exists() {
        bail!("base config {} does not exist", sweep.base.display());
    }
    let specs = sweep.points();
    let mut configs = Vec::with_capacity(specs.len());
    for spec in &specs {
        let values: Vec<String> = spec
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let context = || format!("sweep point `{}` ({})", spec.name, values.join(", "));
        let config =
            model_source::load_run_config(&sweep.base, &spec.overrides).with_context(context)?;
        arch::validate_run(&config).with_context(context)?;
        configs.push(config);
    }
    let params = dispatch(None, ParameterCounts(&configs))?;
    Ok(specs
        .into_iter()
        .zip(configs)
        .zip(params)
        .map(|((spec, config), params)| PlannedPoint {
            spec,
            config,
            params,
        })
        .collect())
}

/// `point.json`: where the point sits in the grid and what it overrides.
fn write_point_json(dir: &Path, point: &PlannedPoint) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let values: serde_json::Map<String, serde_json::Value> = point
        .spec
        .values
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let json = serde_json::json!({
        "index": point.spec.index,
        "name": point.spec.name,
        "values": values,
        "overrides": point.spec.overrides,
        "params": point.params,
    });
    let bytes = serde_json::to_vec_pretty(&json).expect("JSON values serialise");
    write_atomic(&dir.join("point.json"), &bytes)?;
    Ok(())
}
