//! `cpt`: continual pre-training of foundation models on burn.

mod arch;
mod backend;
mod bench_cmd;
mod compare;
mod data_cmd;
mod image_sources;
mod law_cmd;
mod model_cmd;
mod model_source;
#[cfg(feature = "collective")]
mod peers;
mod plan;
mod report_cmd;
mod run;
mod run_dir;
mod sources;
mod sweep;
mod task_eval;
mod vocab_resize;

use anyhow::Result;
use backend::{BackendChoice, dispatch, dispatch_training};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: training frees and re-allocates the same large activation
/// and gradient buffers every step, and glibc serves each from a fresh `mmap` that the kernel
/// must zero and fault in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (position 15 of `mi_option_e` in mimalloc 3's
/// `mimalloc.h`, which libmimalloc-sys builds by default; its Rust constants predate 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed pages back to the OS. By default mimalloc purges memory unused for 10 ms; a
/// training step frees its activations and allocates them again a step later, so each step would
/// page-fault and zero its whole working set anew (a quarter of a step at the middle benchmark
/// shape). The process keeps its peak footprint instead, as PyTorch's caching allocator does.
fn keep_freed_pages() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Hand freed pages back to the OS again after mimalloc's default delay (10 ms), undoing
/// [`keep_freed_pages`]: for runs that asked to save memory (`train.activation_checkpointing =
/// "layers"`), where a step's freed activations should not stay resident. Measured at the 135M
/// shape (README, Memory): peak RSS −15%, tokens/s within noise.
pub(crate) fn return_freed_pages() {
    // SAFETY: as in `keep_freed_pages`.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
}

/// Exit status of a run stopped by a signal after saving a checkpoint.
const EXIT_INTERRUPTED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "cpt",
    version,
    about = "Continual pre-training of foundation models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue pre-training a model through a stream of experiences.
    Run {
        /// The run config (TOML).
        config: PathBuf,
        /// Run directory (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the newest complete checkpoint in the run directory.
        #[arg(long)]
        resume: bool,
        /// With --resume: accept a config that differs from the run's (the result then differs
        /// from an uninterrupted run).
        #[arg(long, requires = "resume")]
        force: bool,
        /// Backend to run on (default: the first compiled in).
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
        /// Override a config value: `--set train.batch_size=8` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Data-parallel peers in this process, one per device (the global `train.batch_size`
        /// is split between all peers of all nodes).
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Processes (machines) in a multi-node run.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// This process's index among the nodes (0 coordinates and writes the run directory).
        #[arg(long, default_value_t = 0)]
        node_rank: usize,
        /// HOST:PORT of node 0's orchestrator (multi-node runs).
        #[arg(long, value_name = "HOST:PORT")]
        coordinator: Option<String>,
        /// HOST:PORT where this node serves tensors to the others (default: the coordinator's
        /// host, port + 1 + node rank: right for one machine; set it on several).
        #[arg(long, value_name = "HOST:PORT")]
        node_address: Option<String>,
        /// Seconds a peer may wait for the others before the run counts one as lost and exits.
        #[arg(long, default_value_t = 30)]
        peer_timeout: u64,
        /// Start even if `cpt plan`'s estimate of the run's memory exceeds what the machine has
        /// available (checked on the CPU backend only).
        #[arg(long)]
        skip_memory_check: bool,
    },
    /// The memory a run will need, from its config alone: parameters per component, fp32
    /// weights, gradients and AdamW moments, and (LLaMA) activations per micro-batch.
    Plan {
        /// The run config (TOML).
        config: PathBuf,
        /// Override a config value, as for `cpt run` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Held-out loss and perplexity of a model on Parquet text, and downstream tasks
    /// (lm-evaluation-harness task files over local data).
    Eval {
        /// A Hugging Face folder, run directory or checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// Parquet files or globs to score perplexity on.
        #[arg(long, num_args = 1.., required_unless_present = "tasks")]
        data: Vec<String>,
        /// Task files (lm-evaluation-harness YAML pointing at local data).
        #[arg(long, num_args = 1..)]
        tasks: Vec<PathBuf>,
        /// Few-shot examples per prompt (overrides the task files' `num_fewshot`).
        #[arg(long)]
        num_fewshot: Option<usize>,
        /// Score only the first N documents of each task.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the task results as JSON here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Text column.
        #[arg(long, default_value = "text")]
        column: String,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Sequences to score.
        #[arg(long, default_value_t = 64)]
        max_sequences: usize,
        /// Sequences per batch.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Backend to run on.
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
    },
    /// Log-probabilities of texts or continuations (JSONL in, JSONL out: the summed log-prob,
    /// the token count, whether greedy decoding picks the continuation, the per-token log-probs).
    Score {
        /// A Hugging Face folder, run directory or checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// JSONL: {"text"}, {"context", "continuation"}, {"ids"} or {"context_ids", "continuation_ids"}.
        #[arg(long)]
        input: PathBuf,
        /// Backend to run on.
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
    },
    /// Continue a prompt (greedy unless --temperature > 0).
    Generate {
        /// A Hugging Face folder, run directory or checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Keep the k most likely tokens (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Nucleus sampling mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Backend to run on.
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
    },
    /// Export a model to another ecosystem.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Import a model from another ecosystem.
    Import {
        #[command(subcommand)]
        format: ImportFormat,
    },
    /// A Markdown table comparing finished runs (final perplexity, forgetting, transfer,
    /// throughput, memory).
    Compare {
        /// Run directories.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
    /// One self-contained HTML page of one or more runs (charts, eval matrix, configs).
    Report {
        /// Run directories (finished or in progress).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The HTML file to write.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Data preparation.
    Data {
        #[command(subcommand)]
        command: data_cmd::DataCommand,
    },
    /// Tokenizer training.
    Tokenizer {
        #[command(subcommand)]
        command: data_cmd::TokenizerCommand,
    },
    /// A grid of runs over config keys (a sweep file: base config, `[grid]`, `[[axis]]`), each
    /// point a run directory; finished points are skipped, interrupted ones resumed, results
    /// gathered in `sweep.csv`.
    Sweep {
        /// The sweep file (TOML).
        sweep: PathBuf,
        /// Sweep directory (default: runs/<sweep file name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Points running at once (each a `cpt run` process).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// List the points and check their configs; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Backend of the points' runs.
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
    },
    /// Scaling laws over a sweep's results: `cpt law fit SWEEP_DIR --law dcpt|chinchilla`.
    Law {
        #[command(subcommand)]
        command: law_cmd::LawCommand,
    },
    /// Throughput of LLaMA training (or forward passes) at a fixed shape, as one JSON line;
    /// `scripts/bench_vs_pytorch.sh` runs it beside PyTorch.
    Bench {
        /// Model and batch shape.
        #[arg(long, value_enum, default_value = "quick")]
        shape: bench_cmd::BenchShape,
        /// Optimizer steps (or forward passes) timed.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Full training steps or forward passes only.
        #[arg(long, value_enum, default_value = "train")]
        mode: bench_cmd::BenchMode,
        /// Activation checkpointing of training steps: `none`, `balanced` or `layers` (as
        /// `train.activation_checkpointing`).
        #[arg(long, default_value = "none")]
        checkpointing: cpt_core::config::ActivationCheckpointing,
        /// fp32, bf16-mixed or f16-mixed (as `train.precision`).
        #[arg(long, default_value = "fp32", value_parser = bench_cmd::parse_precision)]
        precision: cpt_core::Precision,
        /// Backend to run on.
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
    },
}

#[derive(Subcommand)]
enum ExportFormat {
    /// A LoRA adapter in PEFT's format (adapter_config.json, adapter_model.safetensors) plus
    /// its frozen base as a Hugging Face folder in OUT/base.
    Peft {
        /// A run directory or checkpoint with live adapters.
        model: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// A Hugging Face folder: config.json, model.safetensors, tokenizer.json.
    Hf {
        /// A run directory, checkpoint or model folder.
        model: PathBuf,
        /// Output folder (written whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// A GGUF file for llama.cpp, Ollama and LM Studio (LoRA adapters merged, tokenizer
    /// embedded).
    Gguf {
        /// A run directory, checkpoint, model folder or GGUF file.
        model: PathBuf,
        /// Output file (written whole or not at all).
        #[arg(long)]
        out: PathBuf,
        /// Storage type of the weight matrices (norms stay f32).
        #[arg(long, value_enum, default_value = "f16")]
        dtype: model_cmd::GgufDtype,
    },
}

#[derive(Subcommand)]
enum ImportFormat {
    /// A LLaMA GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) as a Hugging Face
    /// folder: config.json, model.safetensors (f32), tokenizer.json.
    Gguf {
        /// The GGUF file.
        file: PathBuf,
        /// Output folder (written whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    keep_freed_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CPT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match run_cli(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
pub(crate) fn chain(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// `cpt plan` on the inner (non-autodiff) backend: architectures without a closed form count
/// the parameters of a bare model.
struct PlanJob<'a>(&'a cpt_core::RunConfig);

impl backend::BackendJob for PlanJob<'_> {
    type Output = plan::Plan;
    fn run<B: cpt_core::TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<plan::Plan> {
        arch::plan_run::<B::InnerBackend>(self.0, &device)
    }
}

fn run_cli(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            out,
            resume,
            force,
            backend,
            overrides,
            devices,
            nodes,
            node_rank,
            coordinator,
            node_address,
            peer_timeout,
            skip_memory_check,
        } => {
            let resolved = model_source::load_run_config(&config, &overrides)?;
            arch::validate_run(&resolved)?;
            // Host memory holds the model on the CPU backend only.
            let on_host = backend.is_none_or(|b| b == backend::BackendChoice::Flex);
            if on_host && !skip_memory_check {
                let plan = dispatch(None, PlanJob(&resolved))?;
                if let Some(available) = cpt_core::memory::available_bytes() {
                    plan.check_fits(&resolved, available)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
                }
            }
            let stem = config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(stem));
            if devices == 0 || nodes == 0 {
                anyhow::bail!("--devices and --nodes must be at least 1");
            }
            let job = run::RunJob {
                config: resolved,
                out,
                resume,
                force,
                parallel: run::Parallel {
                    devices,
                    nodes,
                    node_rank,
                    coordinator,
                    node_address,
                    peer_timeout_secs: peer_timeout,
                },
                device_memory: backend::device_memory_probe(backend),
            };
            let checkpointing = job.config.train.activation_checkpointing;
            Ok(
                match dispatch_training(backend, checkpointing, arch::Train(job))? {
                    run::RunEnd::Finished => ExitCode::SUCCESS,
                    run::RunEnd::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
                },
            )
        }
        Command::Plan { config, overrides } => {
            let resolved = model_source::load_run_config(&config, &overrides)?;
            arch::validate_run(&resolved)?;
            let plan = dispatch(None, PlanJob(&resolved))?;
            print!("{}", plan.render(&resolved));
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            model,
            data,
            tasks,
            num_fewshot,
            limit,
            output,
            column,
            seq_len,
            max_sequences,
            batch_size,
            backend,
        } => {
            let job = model_cmd::EvalJob {
                model,
                data,
                tasks,
                num_fewshot,
                limit,
                output,
                column,
                seq_len,
                max_sequences,
                batch_size,
            };
            dispatch(backend, job).map(|()| ExitCode::SUCCESS)
        }
        Command::Score {
            model,
            input,
            backend,
        } => dispatch(backend, model_cmd::ScoreJob { model, input }).map(|()| ExitCode::SUCCESS),
        Command::Generate {
            model,
            prompt,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            backend,
        } => {
            let sampling = cpt_models::generate::Sampling {
                temperature,
                top_k,
                top_p,
                seed,
            };
            let job = model_cmd::GenerateJob {
                model,
                prompt,
                max_new_tokens,
                sampling,
            };
            dispatch(backend, job).map(|()| ExitCode::SUCCESS)
        }
        Command::Export {
            format: ExportFormat::Hf { model, out },
        } => dispatch(None, model_cmd::ExportJob { model, out }).map(|()| ExitCode::SUCCESS),
        Command::Export {
            format: ExportFormat::Peft { model, out },
        } => dispatch(None, model_cmd::ExportPeftJob { model, out }).map(|()| ExitCode::SUCCESS),
        Command::Export {
            format: ExportFormat::Gguf { model, out, dtype },
        } => dispatch(None, model_cmd::ExportGgufJob { model, out, dtype })
            .map(|()| ExitCode::SUCCESS),
        Command::Import {
            format: ImportFormat::Gguf { file, out },
        } => model_cmd::import_gguf(&file, &out).map(|()| ExitCode::SUCCESS),
        Command::Compare { runs } => compare::compare(&runs).map(|()| ExitCode::SUCCESS),
        Command::Report { runs, out } => {
            report_cmd::report(&runs, &out).map(|()| ExitCode::SUCCESS)
        }
        Command::Data { command } => data_cmd::data(command).map(|()| ExitCode::SUCCESS),
        Command::Tokenizer { command } => data_cmd::tokenizer(command).map(|()| ExitCode::SUCCESS),
        Command::Sweep {
            sweep,
            out,
            jobs,
            dry_run,
            backend,
        } => {
            let job = sweep::SweepJob {
                sweep,
                out,
                jobs,
                dry_run,
                backend,
            };
            Ok(match sweep::sweep(job)? {
                sweep::SweepEnd::Finished => ExitCode::SUCCESS,
                sweep::SweepEnd::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
            })
        }
        Command::Law { command } => law_cmd::law(command).map(|()| ExitCode::SUCCESS),
        Command::Bench {
            shape,
            steps,
            warmup,
            mode,
            checkpointing,
            precision,
            backend,
        } => {
            let job = bench_cmd::BenchJob {
                shape,
                mode,
                steps,
                warmup,
                checkpointing,
                precision,
                device_memory: backend::device_memory_probe(backend),
            };
            dispatch_training(backend, checkpointing, job).map(|()| ExitCode::SUCCESS)
        }
    }
}
