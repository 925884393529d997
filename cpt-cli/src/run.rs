//! `cpt run`, generically: a [`Stream`] (model, experiences, evaluator: what the architecture in
//! `arch/` builds) is trained with the configured strategies into a run directory, resumably,
//! and summarised at the end. Nothing here knows which model it trains.

use crate::run_dir::{RunDirObserver, trim_logs};
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_continual::distributed::PeerGroup;
use cpt_continual::strategies::SlowLearner;
use cpt_continual::{
    AdamWConfig, ContinualModel, ContinualTrainer, Experience, ItemOf, NonFinitePolicy, RunOutcome,
    SilentObserver, StageSetup, TrainerSettings, TrainerState, build_strategies,
};
use cpt_core::TrainBackend;
use cpt_core::atomic::write_atomic;
use cpt_core::checkpoint::{checksum, latest_checkpoint};
use cpt_core::config::{ActivationCheckpointing, NonFiniteSetting};
use cpt_core::{Evaluator, ItemSource, LossScalerConfig, RunConfig, TaskModel};
use cpt_eval::{matrix_csv, matrix_table, scores_csv, summarize};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A run to execute.
pub struct RunJob {
    /// The resolved config.
    pub config: RunConfig,
    /// The run directory.
    pub out: PathBuf,
    /// Continue from the newest complete checkpoint in `out`.
    pub resume: bool,
    /// Resume even under a changed config.
    pub force: bool,
    /// The data-parallel peers to train on.
    pub parallel: Parallel,
    /// Reads the training device's memory into each step record (see
    /// [`crate::backend::device_memory_probe`]).
    pub device_memory: cpt_core::memory::DeviceMemoryProbe,
}

/// Where a run's data-parallel peers are: devices in this process, processes over machines.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "collective"), allow(dead_code))]
pub struct Parallel {
    /// Peers (devices) in this process.
    pub devices: usize,
    /// Processes in the run (one per machine).
    pub nodes: usize,
    /// This process's index among them (node 0 coordinates and writes the run directory).
    pub node_rank: usize,
    /// `HOST:PORT` of node 0's orchestrator.
    pub coordinator: Option<String>,
    /// `HOST:PORT` where this node serves tensors to the others.
    pub node_address: Option<String>,
    /// Seconds a collective call may wait before a peer counts as lost.
    pub peer_timeout_secs: u64,
}

impl Parallel {
    /// Peers over all processes.
    pub fn peers(&self) -> usize {
        self.devices * self.nodes
    }
}

/// What `summary.json` holds.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    matrix: cpt_eval::MatrixSummary,
    initial: Vec<f64>,
    eval_matrix: Vec<Vec<f64>>,
    /// Held-out sets never trained on: the metric initially and after each experience.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    held_out: Vec<HeldOutSeries>,
    /// Downstream tasks: their primary metric initially and after each experience.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tasks: Vec<TaskSeries>,
    /// Extra metrics per set after the last experience (probe accuracies, retrieval recall).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    final_extras: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
    /// Training units seen (tokens for language models, images for vision models).
    tokens_seen: u64,
    steps: u64,
    wall_time_secs: f64,
    tokens_per_sec: f64,
    /// Peak resident memory of this process in MiB (Linux; absent elsewhere).
    peak_rss_mib: Option<f64>,
}

/// A held-out set's metric over the run.
#[derive(Debug, Serialize)]
struct HeldOutSeries {
    name: String,
    /// Before training, then after each experience.
    values: Vec<f64>,
}

/// A downstream task's primary metric over the run.
#[derive(Debug, Serialize)]
struct TaskSeries {
    name: String,
    metric: String,
    higher_is_better: bool,
    initial: f64,
    /// After each experience.
    values: Vec<f64>,
    /// Best value seen (the initial one included) minus the final one, oriented so > 0 is worse.
    forgetting: f64,
    /// Final minus initial, oriented so < 0 is worse (as backward transfer).
    backward_transfer: f64,
}

impl TaskSeries {
    fn new(column: &TaskColumn, initial: f64, values: Vec<f64>) -> Self {
        // Oriented: larger is better.
        let sign = if column.higher_is_better { 1.0 } else { -1.0 };
        let last = values.last().copied().unwrap_or(initial);
        let best = values
            .iter()
            .fold(sign * initial, |best, &v| best.max(sign * v));
        Self {
            name: column.name.clone(),
            metric: column.metric.clone(),
            higher_is_better: column.higher_is_better,
            initial,
            forgetting: best - sign * last,
            backward_transfer: sign * (last - initial),
            values,
        }
    }
}

/// A downstream task scored at every evaluation, after the stream's and held-out sets.
#[derive(Debug, Clone)]
pub struct TaskColumn {
    /// Its name (the column of `eval.jsonl` and `task_matrix.csv`).
    pub name: String,
    /// The metric in `EvalScores::metric` (`acc`, `word_perplexity`, ...).
    pub metric: String,
    /// Whether larger values of it are better.
    pub higher_is_better: bool,
}

/// How the run ended, for the exit status.
pub enum RunEnd {
    /// The stream was trained through.
    Finished,
    /// Stopped early on request, with a checkpoint.
    Interrupted,
}

/// What differs between architectures, built before anything is written: the model, the
/// training streams, the evaluator and the strategies' model-specific inputs.
pub struct Stream<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> {
    /// The model to train.
    pub model: M,
    /// The experiences, in stream order.
    pub experiences: Vec<Experience<ItemOf<B, M>>>,
    /// Scores every stream set (and held-out retention sets after them).
    pub evaluator: Box<dyn Evaluator<M::InnerModule>>,
    /// Reference data for `distill.reference`, when configured.
    pub reference: Option<Box<dyn ItemSource<ItemOf<B, M>>>>,
    /// Projections `lora.target_modules` may name.
    pub lora_targets: Vec<&'static str>,
    /// Names of held-out sets scored after the stream's (matrix columns beyond the square).
    pub held_out: Vec<String>,
    /// Downstream tasks scored after the held-out sets.
    pub tasks: Vec<TaskColumn>,
    /// What one training unit is, for messages (`tokens`, `images`).
    pub unit: &'static str,
    /// What each stage sets on the model beyond its parameters (a new RoPE), if anything.
    pub stage_setup: Option<StageSetup<M>>,
    /// When set, only parameters matching these patterns train (`[model.grow] freeze = "old"`);
    /// every other one gets learning-rate scale 0, after the configured strategies.
    pub trainable: Option<Vec<String>>,
}

impl RunJob {
    /// Train the stream `build` makes (one per peer, on its device) under this job's config,
    /// into its run directory.
    pub fn execute<B, M>(self, build: impl Fn(&B::Device) -> Result<Stream<B, M>>) -> Result<RunEnd>
    where
        B: TrainBackend,
        M: ContinualModel<B> + Send,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        if self.parallel.peers() > 1 {
            #[cfg(feature = "collective")]
            return crate::peers::execute(self, build);
            #[cfg(not(feature = "collective"))]
            bail!(
                "this cpt binary was built without the `collective` feature: rebuild with it for --devices/--nodes"
            );
        }
        // Everything is checked before the run directory is touched.
        let stream = build(&Default::default())?;
        let columns = stream.columns();
        let parts = stream.into_parts(&self.config)?;
        prepare_run_dir(&self.config, &self.out, self.resume, self.force)?;
        let stop = Arc::new(AtomicBool::new(false));
        install_signal_handlers(stop.clone())?;
        let (outcome, state) = train_peer(&self, parts, None, stop)?;
        self.finish(outcome, &state, &columns)
    }

    /// Report how a run ended: the resume hint, or the summary of a finished run.
    pub fn finish(
        &self,
        outcome: RunOutcome,
        state: &TrainerState,
        columns: &Columns,
    ) -> Result<RunEnd> {
        match outcome {
            RunOutcome::Interrupted { checkpoint } => {
                eprintln!(
                    "interrupted; state saved in {}. Continue with: cpt run <config> --out {} --resume",
                    checkpoint
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    self.out.display()
                );
                Ok(RunEnd::Interrupted)
            }
            RunOutcome::Finished => {
                write_summary(&self.config, &self.out, state, columns)?;
                Ok(RunEnd::Finished)
            }
        }
    }
}

/// How to read and print a run's eval matrix: the metric, and the columns after the stream's.
#[derive(Debug, Clone)]
pub struct Columns {
    metric: String,
    lower_is_better: bool,
    /// Held-out sets, scored after the stream's sets in every row.
    held_out: Vec<String>,
    /// Downstream tasks, scored after the held-out sets.
    tasks: Vec<TaskColumn>,
    unit: &'static str,
}

impl<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> Stream<B, M> {
    /// The columns this stream's evaluator scores.
    pub fn columns(&self) -> Columns {
        Columns {
            metric: self.evaluator.metric_name().to_string(),
            lower_is_better: self.evaluator.lower_is_better(),
            held_out: self.held_out.clone(),
            tasks: self.tasks.clone(),
            unit: self.unit,
        }
    }
}

/// What a trainer is made of: a stream's model, experiences and evaluator, and the configured
/// strategies built for it.
pub struct TrainerParts<B: AutodiffBackend, M: TaskModel<B> + AutodiffModule<B>> {
    model: M,
    experiences: Vec<Experience<ItemOf<B, M>>>,
    evaluator: Box<dyn Evaluator<M::InnerModule>>,
    strategies: Vec<Box<dyn cpt_continual::Strategy<B, M>>>,
    stage_setup: Option<StageSetup<M>>,
}

impl<B: AutodiffBackend, M: ContinualModel<B>> Stream<B, M>
where
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
    /// The trainer's parts, the strategies built (and so checked) from `config`.
    pub fn into_parts(self, config: &RunConfig) -> Result<TrainerParts<B, M>> {
        let mut strategies = build_strategies::<B, M>(config, self.reference, &self.lora_targets)?;
        if let Some(patterns) = self.trainable {
            // The first matching pattern wins: the trainable ones ×1, everything else ×0.
            let groups = patterns
                .into_iter()
                .map(|p| (p, 1.0))
                .chain([("*".to_string(), 0.0)])
                .collect();
            strategies.push(Box::new(SlowLearner::new(groups)));
        }
        Ok(TrainerParts {
            model: self.model,
            experiences: self.experiences,
            evaluator: self.evaluator,
            strategies,
            stage_setup: self.stage_setup,
        })
    }
}

/// Train one peer (or the only one, without `peers`): resume from the run directory's newest
/// checkpoint if asked, run, return how it ended and the trainer's state. Only the peer of rank
/// 0 (or the only one) writes the run directory.
pub fn train_peer<B, M>(
    job: &RunJob,
    parts: TrainerParts<B, M>,
    peers: Option<Box<dyn PeerGroup<B::InnerBackend>>>,
    stop: Arc<AtomicBool>,
) -> Result<(RunOutcome, TrainerState)>
where
    B: TrainBackend,
    M: ContinualModel<B>,
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
    let TrainerParts {
        model,
        experiences,
        evaluator,
        strategies,
        stage_setup,
    } = parts;
    let writes = peers.as_ref().is_none_or(|p| p.rank() == 0);
    let mut trainer =
        ContinualTrainer::new(model, strategies, experiences, evaluator, settings(job))
            .with_stop_flag(stop);
    if writes {
        trainer = trainer.with_checkpoints(job.out.join("checkpoints"));
    }
    if let Some(peers) = peers {
        trainer = trainer.with_peers(peers)?;
    }
    if let Some(setup) = stage_setup {
        trainer = trainer.with_stage_setup(setup);
    }
    if job.resume {
        match latest_checkpoint(&job.out.join("checkpoints"))? {
            Some(checkpoint) => {
                tracing::info!("resuming from {}", checkpoint.path.display());
                trainer.resume(&checkpoint)?;
                if writes {
                    let state = trainer.state();
                    trim_logs(&job.out, state.global_step, state.matrix.len())?;
                }
            }
            None => tracing::info!(
                "no complete checkpoint in {}: starting fresh",
                job.out.display()
            ),
        }
    }
    let outcome = if writes {
        trainer.run(&mut RunDirObserver::new(&job.out))?
    } else {
        trainer.run(&mut SilentObserver)?
    };
    Ok((outcome, trainer.state().clone()))
}

fn settings(job: &RunJob) -> TrainerSettings {
    let config = &job.config;
    let t = &config.train;
    TrainerSettings {
        batch_size: t.batch_size,
        grad_accum_steps: t.grad_accum_steps,
        grad_clip_norm: t.grad_clip_norm,
        adamw: AdamWConfig {
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
        },
        schedule: config.schedule.clone(),
        eval_every_steps: config.eval.every_steps,
        checkpoint_every_steps: config.checkpoint.every_steps,
        keep_last: config.checkpoint.keep_last,
        log_every_steps: t.log_every_steps,
        config_hash: checksum(config.to_toml().as_bytes()),
        loss_spike_factor: t.loss_spike_factor,
        seed: config.seed,
        precision: t.precision,
        eval_precision: config.eval.precision.unwrap_or(t.precision),
        loss_scaler: LossScalerConfig::default(),
        recompute_layers: t.activation_checkpointing == ActivationCheckpointing::Layers,
        device_memory: job.device_memory,
        non_finite: match t.non_finite {
            NonFiniteSetting::Fail => NonFinitePolicy::Fail,
            NonFiniteSetting::Skip => NonFinitePolicy::Skip {
                max_skipped_steps: t.max_skipped_steps,
            },
        },
    }
}

/// First SIGINT/SIGTERM: raise the trainer's stop flag (it finishes the step, checkpoints and
/// returns); a second one exits at once with status 130. The last complete checkpoint is safe
/// either way, because checkpoints are only ever renamed into place.
pub fn install_signal_handlers(stop: Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal raised it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(())
}

/// Create the run directory and write the resolved config; refuse to overwrite a run unless
/// resuming, and refuse to resume under a changed config.
pub fn prepare_run_dir(
    config: &RunConfig,
    out: &std::path::Path,
    resume: bool,
    force: bool,
) -> Result<()> {
    let config_path = out.join("config.toml");
    let resolved = config.to_toml();
    if config_path.exists() {
        if !resume {
            bail!(
                "{} already holds a run; pass --resume to continue it, or choose another --out",
                out.display()
            );
        }
        let previous = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        if previous != resolved {
            let key = first_difference(&previous, &resolved).unwrap_or_else(|| "?".into());
            if !force {
                bail!(
                    "cannot resume {}: config key `{key}` differs from the run's config.toml (pass --force to continue under the new config, or start a new --out)",
                    out.display()
                );
            }
            tracing::warn!(
                "resuming under a changed config (`{key}` differs): the result will differ from an uninterrupted run"
            );
            write_atomic(&config_path, resolved.as_bytes())?;
        }
        return Ok(());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_atomic(&config_path, resolved.as_bytes())?;
    Ok(())
}

/// The first dotted key whose value differs between two TOML documents.
fn first_difference(a: &str, b: &str) -> Option<String> {
    let (a, b): (toml::Value, toml::Value) = (toml::from_str(a).ok()?, toml::from_str(b).ok()?);
    fn walk(a: &toml::Value, b: &toml::Value, path: &str) -> Option<String> {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => walk(u, v, &p),
                        _ => Some(p),
                    }
                })
            }
            (toml::Value::Array(x), toml::Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (u, v))| walk(u, v, &format!("{path}[{i}]"))),
            _ => (a != b).then(|| path.to_string()),
        }
    }
    walk(&a, &b, "")
}

fn write_summary(
    config: &RunConfig,
    out: &std::path::Path,
    state: &TrainerState,
    report: &Columns,
) -> Result<()> {
    let names: Vec<String> = config.experiences.iter().map(|e| e.name.clone()).collect();
    let n = names.len();
    let metric_row =
        |row: &[cpt_core::EvalScores]| row.iter().map(|s| s.metric).collect::<Vec<f64>>();
    let initial_all = metric_row(state.initial_scores.as_deref().unwrap_or_default());
    let matrix_all: Vec<Vec<f64>> = state.matrix.iter().map(|r| metric_row(r)).collect();
    // The square part is the stream; columns after it are the held-out sets.
    let initial = initial_all[..n].to_vec();
    let matrix: Vec<Vec<f64>> = matrix_all.iter().map(|r| r[..n].to_vec()).collect();
    let metric = report.metric.as_str();
    let summary = summarize(metric, report.lower_is_better, &names, &initial, &matrix);
    // eval_matrix.csv holds the columns of the run's metric; tasks (each its own metric) go to
    // task_matrix.csv.
    let all_names: Vec<String> = names.iter().chain(&report.held_out).cloned().collect();
    let columns = all_names.len();
    let metric_columns = |row: &[f64]| row[..columns].to_vec();
    let matrix_metric: Vec<Vec<f64>> = matrix_all.iter().map(|r| metric_columns(r)).collect();
    write_atomic(
        &out.join("eval_matrix.csv"),
        matrix_csv(&all_names, &metric_columns(&initial_all), &matrix_metric).as_bytes(),
    )?;
    let mut task_series = Vec::new();
    if !report.tasks.is_empty() {
        let task_columns = |row: &[f64]| row[columns..].to_vec();
        let headers: Vec<String> = report
            .tasks
            .iter()
            .map(|t| format!("{} ({})", t.name, t.metric))
            .collect();
        let task_rows: Vec<Vec<f64>> = matrix_all.iter().map(|r| task_columns(r)).collect();
        write_atomic(
            &out.join("task_matrix.csv"),
            scores_csv(&headers, &names, &task_columns(&initial_all), &task_rows).as_bytes(),
        )?;
        for (k, column) in report.tasks.iter().enumerate() {
            let values: Vec<f64> = task_rows.iter().map(|r| r[k]).collect();
            task_series.push(TaskSeries::new(column, initial_all[columns + k], values));
        }
    }

    println!("\n{}", matrix_table(metric, &names, &initial, &matrix));
    println!("final average {metric}: {:.3}", summary.final_average);
    for (name, f) in names.iter().zip(&summary.forgetting) {
        if let Some(f) = f {
            println!("forgetting on `{name}`: {f:+.3} {metric} (final vs best seen; > 0 is worse)");
        }
    }
    // Transfer needs a second experience; a one-experience stream has none to report.
    if n > 1 {
        println!(
            "backward transfer: {:+.3}   forward transfer: {:+.3}   ({metric}; negative BWT = forgetting)",
            summary.backward_transfer, summary.forward_transfer
        );
    }
    let mut retention = Vec::new();
    for (k, name) in report.held_out.iter().enumerate() {
        let series: Vec<f64> = std::iter::once(initial_all[n + k])
            .chain(matrix_all.iter().map(|r| r[n + k]))
            .collect();
        let shown: Vec<String> = series.iter().map(|v| format!("{v:.3}")).collect();
        println!(
            "held-out `{name}` (never trained on), {metric} initial then after each experience: {}",
            shown.join(" → ")
        );
        retention.push(HeldOutSeries {
            name: name.clone(),
            values: series,
        });
    }
    for t in &task_series {
        let shown: Vec<String> = std::iter::once(t.initial)
            .chain(t.values.iter().copied())
            .map(|v| format!("{v:.4}"))
            .collect();
        println!(
            "task `{}`, {} initial then after each experience: {} (forgetting {:+.4}; > 0 is worse)",
            t.name,
            t.metric,
            shown.join(" → "),
            t.forgetting
        );
    }
    let final_extras = state
        .matrix
        .last()
        .map(|row| {
            row.iter()
                .filter(|s| !s.extras.is_empty())
                .map(|s| (s.experience.clone(), s.extras.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    for (name, extras) in &final_extras {
        let shown: Vec<String> = extras.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        println!("final `{name}`: {}", shown.join(", "));
    }
    let rate = state.tokens_seen as f64 / state.elapsed_secs.max(1e-9);
    println!(
        "{} {unit} in {} steps, {:.1} s ({rate:.0} {unit}/s)",
        state.tokens_seen,
        state.global_step,
        state.elapsed_secs,
        unit = report.unit,
    );
    let full = RunSummary {
        matrix: summary,
        initial,
        eval_matrix: matrix,
        held_out: retention,
        tasks: task_series,
        final_extras,
        tokens_seen: state.tokens_seen,
        steps: state.global_step,
        wall_time_secs: state.elapsed_secs,
        tokens_per_sec: rate,
        peak_rss_mib: cpt_core::memory::peak_rss_mib(),
    };
    let json = serde_json::to_vec_pretty(&full).expect("a summary serialises");
    write_atomic(&out.join("summary.json"), &json)?;
    println!("run directory: {}", out.display());
    Ok(())
}
