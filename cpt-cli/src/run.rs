//! `cpt run`: the composition root of a continual pre-training run. The one place that knows
//! the concrete model, the data files, the strategies and the evaluator together.

use crate::backend::BackendJob;
use crate::model_source::initial_model;
use crate::run_dir::{RunDirObserver, trim_logs};
use crate::sources::{eval_batches, reference_source, training_source};
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_continual::strategies::{
    Distill, DistillConfig, Ema, Ewc, EwcConfig, FeatureDistance, FisherKind, Lora, LoraMode,
    Merge, Naive, Replay, SlowLearner, WeightEnsemble, Wise,
};
use cpt_continual::{
    AdamWConfig, ContinualTrainer, Experience, ItemOf, NonFinitePolicy, RunOutcome, Strategy,
    TrainerSettings,
};
use cpt_core::TrainBackend;
use cpt_core::atomic::write_atomic;
use cpt_core::checkpoint::{checksum, latest_checkpoint};
use cpt_core::config::NonFiniteSetting;
use cpt_core::{AdapterModel, Evaluator, ItemSource, RunConfig, SplitMix64, TaskModel};
use cpt_data::Tokenizer;
use cpt_eval::{EvalSet, PerplexityEvaluator, matrix_csv, matrix_table, summarize};
use cpt_models::LlamaForCausalLM;
use cpt_models::linear::LoraSpec;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Projections of LLaMA that `lora.target_modules` may name.
pub const LLAMA_LORA_TARGETS: &[&str] = &["q", "k", "v", "o", "gate", "up", "down"];

/// Strategy names `strategies = [...]` accepts.
pub const STRATEGIES: &[&str] = &[
    "naive",
    "replay",
    "ewc",
    "l2",
    "distill",
    "ema",
    "wise",
    "merge",
    "weight_ensemble",
    "lora",
    "slow_learner",
];

/// The adapter spec of `[lora]`, checked against the projections the model has (`known`).
pub fn lora_spec(config: &RunConfig, known: &[&str]) -> Result<LoraSpec> {
    let l = &config.lora;
    if l.rank == 0 {
        bail!("config key `lora.rank`: must be at least 1");
    }
    if !(0.0..1.0).contains(&l.dropout) {
        bail!("config key `lora.dropout`: must lie in [0, 1)");
    }
    if let Some(bad) = l
        .target_modules
        .iter()
        .find(|t| !known.contains(&t.trim_end_matches("_proj")))
    {
        bail!(
            "config key `lora.target_modules`: unknown module `{bad}` (known for `{}`: {})",
            config.model.architecture,
            known.join(", ")
        );
    }
    Ok(LoraSpec {
        rank: l.rank,
        alpha: l.alpha,
        rslora: l.rslora,
        target_modules: l.target_modules.clone(),
        dropout: l.dropout,
    })
}

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

/// Peak resident set size of this process, from `/proc/self/status` (`VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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
    /// What one training unit is, for messages (`tokens`, `images`).
    pub unit: &'static str,
}

impl BackendJob for RunJob {
    type Output = RunEnd;

    fn run<B: TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<RunEnd> {
        match self.config.model.architecture.as_str() {
            "llama" => {
                let stream = language_stream::<B>(&self.config, &device)?;
                self.execute(stream)
            }
            "vit" => {
                let stream = crate::vision_run::vit_stream::<B>(&self.config, &device)?;
                self.execute(stream)
            }
            "vit_mae" => {
                let stream = crate::vision_run::mae_stream::<B>(&self.config, &device)?;
                self.execute(stream)
            }
            "clip" => {
                let stream = crate::vision_run::clip_stream::<B>(&self.config, &device)?;
                self.execute(stream)
            }
            other => bail!(
                "config key `model.architecture`: unknown architecture `{other}` (known: {})",
                ARCHITECTURES.join(", ")
            ),
        }
    }
}

/// Architectures `model.architecture` accepts.
pub const ARCHITECTURES: &[&str] = &["llama", "vit", "vit_mae", "clip"];

/// The LLaMA side of a run: model, packed token streams, perplexity evaluation.
fn language_stream<B: TrainBackend>(
    config: &RunConfig,
    device: &B::Device,
) -> Result<Stream<B, LlamaForCausalLM<B>>> {
    let tokenizer = Arc::new(Tokenizer::from_file(config.tokenizer_path())?);
    // Checks the model config (or folder) before anything is written.
    let (_, model) = initial_model::<B>(config, &tokenizer, device)?;
    let mut experiences = Vec::new();
    let mut eval_sets = Vec::new();
    for (i, (e, steps)) in config
        .experiences
        .iter()
        .zip(config.experience_steps())
        .enumerate()
    {
        let source = training_source(config, i, &tokenizer)
            .with_context(|| format!("training data of experience `{}`", e.name))?;
        experiences.push(Experience {
            name: e.name.clone(),
            steps,
            source,
        });
        eval_sets.push(EvalSet {
            name: e.name.clone(),
            batches: eval_batches(config, i, &tokenizer)?,
        });
    }
    if !config.eval.held_out.is_empty() {
        bail!("config key `eval.held_out`: held-out sets are for image streams");
    }
    let reference = match config.distill.reference.is_empty() {
        true => None,
        false => Some(reference_source(
            config,
            &config.distill.reference,
            &tokenizer,
        )?),
    };
    Ok(Stream {
        model,
        experiences,
        evaluator: Box::new(PerplexityEvaluator::<
            B::InnerBackend,
            LlamaForCausalLM<B::InnerBackend>,
        >::new(eval_sets)),
        reference,
        lora_targets: LLAMA_LORA_TARGETS.to_vec(),
        held_out: Vec::new(),
        unit: "tokens",
    })
}

impl RunJob {
    /// Train `stream` under this job's config, into its run directory.
    fn execute<B, M>(self, stream: Stream<B, M>) -> Result<RunEnd>
    where
        B: TrainBackend,
        M: TaskModel<B> + AutodiffModule<B> + AdapterModel<Spec = LoraSpec> + 'static,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        let RunJob {
            config,
            out,
            resume,
            force,
        } = self;
        let Stream {
            model,
            experiences,
            evaluator,
            reference,
            lora_targets,
            held_out,
            unit,
        } = stream;
        let strategies = build_strategies::<B, M>(&config, reference, &lora_targets)?;
        prepare_run_dir(&config, &out, resume, force)?;
        let metric = (
            evaluator.metric_name().to_string(),
            evaluator.lower_is_better(),
        );
        let mut trainer =
            ContinualTrainer::new(model, strategies, experiences, evaluator, settings(&config))
                .with_checkpoints(out.join("checkpoints"));

        if resume {
            match latest_checkpoint(&out.join("checkpoints"))? {
                Some(checkpoint) => {
                    tracing::info!("resuming from {}", checkpoint.path.display());
                    trainer.resume(&checkpoint)?;
                    let state = trainer.state();
                    trim_logs(&out, state.global_step, state.matrix.len())?;
                }
                None => tracing::info!(
                    "no complete checkpoint in {}: starting fresh",
                    out.display()
                ),
            }
        }

        install_signal_handlers(trainer.stop_flag())?;
        let mut observer = RunDirObserver::new(&out);
        match trainer.run(&mut observer)? {
            RunOutcome::Interrupted { checkpoint } => {
                eprintln!(
                    "interrupted; state saved in {}. Continue with: cpt run <config> --out {} --resume",
                    checkpoint
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    out.display()
                );
                Ok(RunEnd::Interrupted)
            }
            RunOutcome::Finished => {
                let report = Report {
                    metric: &metric.0,
                    lower_is_better: metric.1,
                    held_out: &held_out,
                    unit,
                };
                write_summary(&config, &out, trainer.state(), &report)?;
                Ok(RunEnd::Finished)
            }
        }
    }
}

/// The configured strategies, in order. Strategies name no model: everything model-specific
/// (reference data, adapter targets) comes in from the architecture's [`Stream`].
fn build_strategies<B, M>(
    config: &RunConfig,
    reference: Option<Box<dyn ItemSource<ItemOf<B, M>>>>,
    lora_targets: &[&str],
) -> Result<Vec<Box<dyn Strategy<B, M>>>>
where
    B: AutodiffBackend,
    M: TaskModel<B> + AutodiffModule<B> + AdapterModel<Spec = LoraSpec> + 'static,
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
    // A teacher snapshot taken while LoRA adapters are live holds adapter weights; on resume it
    // is restored into the model structure as rebuilt so far, so `lora` (which re-attaches the
    // adapters) must be rebuilt first. Refuse the other order rather than resume wrongly.
    let position = |name: &str| config.strategies.iter().position(|s| s == name);
    if let (Some(d), Some(l)) = (position("distill"), position("lora"))
        && d < l
        && config.lora.mode != "merge"
    {
        bail!(
            "config key `strategies`: list `lora` before `distill` when `lora.mode` is `{}` (the teacher holds the adapters, which must exist before it is restored on resume)",
            config.lora.mode
        );
    }
    let mut reference = reference;
    config
        .strategies
        .iter()
        .enumerate()
        .map(
            |(i, name)| -> Result<Box<dyn Strategy<B, M>>> {
                let seed = SplitMix64::derive(config.seed, &[cpt_core::rng::domain::STRATEGY, i as u64]).next_u64();
                let c = config;
            let ewc = |fisher, lambda| EwcConfig {
                lambda,
                fisher_batches: c.ewc.fisher_batches,
                online: c.ewc.online,
                gamma: c.ewc.gamma,
                fisher,
            };
            match name.as_str() {
                "naive" => Ok(Box::new(Naive)),
                "replay" => Ok(Box::new(Replay::new(c.replay.capacity, c.replay.ratio, seed))),
                "ewc" => Ok(Box::new(Ewc::<B>::new(ewc(FisherKind::Empirical, c.ewc.lambda)))),
                "l2" => Ok(Box::new(Ewc::<B>::new(ewc(FisherKind::Identity, c.l2.lambda)))),
                "distill" => {
                    let d = &c.distill;
                    let feature_distance = match d.feature_distance.as_str() {
                        "l2" => FeatureDistance::L2,
                        "cosine" => FeatureDistance::Cosine,
                        other => bail!("config key `distill.feature_distance`: `{other}` is not l2 or cosine"),
                    };
                    // One distill strategy per run takes the reference stream.
                    let reference = reference.take();
                    let config = DistillConfig {
                        alpha: d.alpha,
                        temperature: d.temperature,
                        feature_weight: d.feature_weight,
                        feature_distance,
                        reference_batch_size: d.reference_batch_size,
                    };
                    Ok(Box::new(Distill::<B, M>::with_config(config, reference)))
                }
                "ema" => Ok(Box::new(Ema::<B>::new(c.ema.decay))),
                "wise" => Ok(Box::new(Wise::<B>::new(c.wise.alpha))),
                "merge" => Ok(Box::new(Merge::<B>::new(c.merge.scale))),
                "weight_ensemble" => Ok(Box::new(WeightEnsemble::<B>::new(c.weight_ensemble.every_steps))),
                "lora" => {
                    let mode = match c.lora.mode.as_str() {
                        "continue" => LoraMode::Continue,
                        "merge" => LoraMode::Merge,
                        "per_experience" => LoraMode::PerExperience,
                        other => bail!("config key `lora.mode`: `{other}` is not one of continue, merge, per_experience"),
                    };
                    let spec = lora_spec(c, lora_targets)?;
                    Ok(Box::new(Lora::<B, M>::new(spec, mode, seed)))
                }
                "slow_learner" => {
                    if c.param_groups.is_empty() {
                        bail!("config key `param_groups`: `slow_learner` needs at least one [[param_groups]] entry");
                    }
                    let groups = c.param_groups.iter().map(|g| (g.pattern.clone(), g.lr_scale)).collect();
                    Ok(Box::new(SlowLearner::new(groups)))
                }
                other => bail!(
                        "config key `strategies`: unknown strategy `{other}` (known: {})",
                        STRATEGIES.join(", ")
                    ),
                }
            },
        )
        .collect()
}

fn settings(config: &RunConfig) -> TrainerSettings {
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
fn install_signal_handlers(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
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
fn prepare_run_dir(
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

/// How to read and print a run's eval matrix.
struct Report<'a> {
    metric: &'a str,
    lower_is_better: bool,
    /// Held-out sets, scored after the stream's sets in every row.
    held_out: &'a [String],
    unit: &'a str,
}

fn write_summary(
    config: &RunConfig,
    out: &std::path::Path,
    state: &cpt_continual::TrainerState,
    report: &Report<'_>,
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
    let metric = report.metric;
    let summary = summarize(metric, report.lower_is_better, &names, &initial, &matrix);
    let all_names: Vec<String> = names.iter().chain(report.held_out).cloned().collect();
    write_atomic(
        &out.join("eval_matrix.csv"),
        matrix_csv(&all_names, &initial_all, &matrix_all).as_bytes(),
    )?;

    println!("\n{}", matrix_table(metric, &names, &initial, &matrix));
    println!("final average {metric}: {:.3}", summary.final_average);
    for (name, f) in names.iter().zip(&summary.forgetting) {
        if let Some(f) = f {
            println!("forgetting on `{name}`: {f:+.3} {metric} (final vs best seen; > 0 is worse)");
        }
    }
    println!(
        "backward transfer: {:+.3}   forward transfer: {:+.3}   ({metric}; negative BWT = forgetting)",
        summary.backward_transfer, summary.forward_transfer
    );
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
        final_extras,
        tokens_seen: state.tokens_seen,
        steps: state.global_step,
        wall_time_secs: state.elapsed_secs,
        tokens_per_sec: rate,
        peak_rss_mib: peak_rss_mib(),
    };
    let json = serde_json::to_vec_pretty(&full).expect("a summary serialises");
    write_atomic(&out.join("summary.json"), &json)?;
    println!("run directory: {}", out.display());
    Ok(())
}
