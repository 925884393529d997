//! `cpt run`: the composition root of a continual pre-training run. The one place that knows
//! the concrete model, the data files, the strategies and the evaluator together.

use crate::backend::BackendJob;
use crate::model_source::initial_model;
use crate::run_dir::{RunDirObserver, trim_logs};
use crate::sources::{eval_batches, reference_source, training_source};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use cpt_continual::strategies::{
    Distill, DistillConfig, Ema, Ewc, EwcConfig, FeatureDistance, FisherKind, Lora, LoraMode,
    Merge, Naive, Replay, SlowLearner, WeightEnsemble, Wise,
};
use cpt_continual::{
    AdamWConfig, ContinualTrainer, Experience, NonFinitePolicy, RunOutcome, Strategy,
    TrainerSettings,
};
use cpt_core::atomic::write_atomic;
use cpt_core::checkpoint::{checksum, latest_checkpoint};
use cpt_core::config::NonFiniteSetting;
use cpt_core::{RunConfig, SplitMix64};
use cpt_data::Tokenizer;
use cpt_eval::{EvalSet, PerplexityEvaluator, matrix_csv, matrix_table, summarize};
use cpt_models::LlamaForCausalLM;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// A strategy of a LLaMA run.
type LlamaStrategy<B> = Box<dyn Strategy<B, LlamaForCausalLM<B>>>;

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

/// The adapter spec of `[lora]`, checked.
pub fn lora_spec(config: &RunConfig) -> Result<cpt_models::linear::LoraSpec> {
    let l = &config.lora;
    const KNOWN: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];
    if l.rank == 0 {
        bail!("config key `lora.rank`: must be at least 1");
    }
    if !(0.0..1.0).contains(&l.dropout) {
        bail!("config key `lora.dropout`: must lie in [0, 1)");
    }
    if let Some(bad) = l
        .target_modules
        .iter()
        .find(|t| !KNOWN.contains(&t.trim_end_matches("_proj")))
    {
        bail!(
            "config key `lora.target_modules`: unknown module `{bad}` (known: {})",
            KNOWN.join(", ")
        );
    }
    Ok(cpt_models::linear::LoraSpec {
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
    tokens_seen: u64,
    steps: u64,
    wall_time_secs: f64,
    tokens_per_sec: f64,
    /// Peak resident memory of this process in MiB (Linux; absent elsewhere).
    peak_rss_mib: Option<f64>,
}

/// Peak resident set size of this process, from `/proc/self/status` (`VmHWM`).
fn peak_rss_mib() -> Option<f64> {
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

impl BackendJob for RunJob {
    type Output = RunEnd;

    fn run<B: AutodiffBackend>(self, device: burn::tensor::Device<B>) -> Result<RunEnd> {
        let RunJob {
            config,
            out,
            resume,
            force,
        } = self;
        let tokenizer = Arc::new(Tokenizer::from_file(config.tokenizer_path())?);
        // Checks the model config (or folder) before anything is written.
        let (_, model) = initial_model::<B>(&config, &tokenizer, &device)?;

        // Build and check all data before writing anything to the run directory.
        let mut experiences = Vec::new();
        let mut eval_sets = Vec::new();
        for (i, (e, steps)) in config
            .experiences
            .iter()
            .zip(config.experience_steps())
            .enumerate()
        {
            let source = training_source(&config, i, &tokenizer)
                .with_context(|| format!("training data of experience `{}`", e.name))?;
            experiences.push(Experience {
                name: e.name.clone(),
                steps,
                source,
            });
            eval_sets.push(EvalSet {
                name: e.name.clone(),
                batches: eval_batches(&config, i, &tokenizer)?,
            });
        }

        let strategies = build_strategies::<B>(&config, Some(&tokenizer))?;
        prepare_run_dir(&config, &out, resume, force)?;
        let evaluator =
            PerplexityEvaluator::<B::InnerBackend, LlamaForCausalLM<B::InnerBackend>>::new(
                eval_sets,
            );
        let mut trainer = ContinualTrainer::new(
            model,
            strategies,
            experiences,
            Box::new(evaluator),
            settings(&config),
        )
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
                write_summary(&config, &out, trainer.state())?;
                Ok(RunEnd::Finished)
            }
        }
    }
}

fn build_strategies<B: AutodiffBackend>(
    config: &RunConfig,
    tokenizer: Option<&Arc<Tokenizer>>,
) -> Result<Vec<LlamaStrategy<B>>> {
    config
        .strategies
        .iter()
        .enumerate()
        .map(
            |(i, name)| -> Result<Box<dyn Strategy<B, LlamaForCausalLM<B>>>> {
                let seed = SplitMix64::derive(config.seed, &[0x57a7, i as u64]).next_u64();
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
                    let reference = match (d.reference.is_empty(), tokenizer) {
                        (true, _) => None,
                        (false, Some(tokenizer)) => Some(reference_source(c, &d.reference, tokenizer)?),
                        (false, None) => bail!("config key `distill.reference`: no tokenizer to read it with"),
                    };
                    let config = DistillConfig {
                        alpha: d.alpha,
                        temperature: d.temperature,
                        feature_weight: d.feature_weight,
                        feature_distance,
                        reference_batch_size: d.reference_batch_size,
                    };
                    Ok(Box::new(Distill::<B, LlamaForCausalLM<B>>::with_config(config, reference)))
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
                    let spec = lora_spec(c)?;
                    Ok(Box::new(Lora::<B, LlamaForCausalLM<B>>::new(spec, mode, seed)))
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

fn write_summary(
    config: &RunConfig,
    out: &std::path::Path,
    state: &cpt_continual::TrainerState,
) -> Result<()> {
    let names: Vec<String> = config.experiences.iter().map(|e| e.name.clone()).collect();
    let metric_row =
        |row: &[cpt_core::EvalScores]| row.iter().map(|s| s.metric).collect::<Vec<f64>>();
    let initial = metric_row(state.initial_scores.as_deref().unwrap_or_default());
    let matrix: Vec<Vec<f64>> = state.matrix.iter().map(|r| metric_row(r)).collect();
    let summary = summarize("perplexity", true, &names, &initial, &matrix);
    write_atomic(
        &out.join("eval_matrix.csv"),
        matrix_csv(&names, &initial, &matrix).as_bytes(),
    )?;

    println!(
        "\n{}",
        matrix_table("perplexity", &names, &initial, &matrix)
    );
    println!("final average perplexity: {:.3}", summary.final_average);
    for (name, f) in names.iter().zip(&summary.forgetting) {
        if let Some(f) = f {
            println!("forgetting on `{name}`: {f:+.3} perplexity (final minus best seen)");
        }
    }
    println!(
        "backward transfer: {:+.3}   forward transfer: {:+.3}   (perplexity points; negative BWT = forgetting)",
        summary.backward_transfer, summary.forward_transfer
    );
    println!(
        "{} tokens in {} steps, {:.1} s ({:.0} tokens/s)",
        state.tokens_seen,
        state.global_step,
        state.elapsed_secs,
        state.tokens_seen as f64 / state.elapsed_secs.max(1e-9)
    );
    let full = RunSummary {
        matrix: summary,
        initial,
        eval_matrix: matrix,
        tokens_seen: state.tokens_seen,
        steps: state.global_step,
        wall_time_secs: state.elapsed_secs,
        tokens_per_sec: state.tokens_seen as f64 / state.elapsed_secs.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
    };
    let json = serde_json::to_vec_pretty(&full).expect("a summary serialises");
    write_atomic(&out.join("summary.json"), &json)?;
    println!("run directory: {}", out.display());
    Ok(())
}
