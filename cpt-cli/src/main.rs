//! `cpt`: continual pre-training of foundation models on burn.

mod backend;
mod data_cmd;
mod run;
mod run_dir;
mod sources;

use anyhow::Result;
use backend::{BackendChoice, dispatch};
use clap::{Parser, Subcommand};
use cpt_core::RunConfig;
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Backend to run on (default: the first compiled in).
        #[arg(long, value_enum)]
        backend: Option<BackendChoice>,
        /// Override a config value: `--set train.batch_size=8` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
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
}

fn main() -> ExitCode {
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
fn chain(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn run_cli(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            out,
            resume,
            backend,
            overrides,
        } => {
            let resolved = RunConfig::load(&config, &overrides)?;
            let stem = config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(stem));
            let job = run::RunJob {
                config: resolved,
                out,
                resume,
            };
            Ok(match dispatch(backend, job)? {
                run::RunEnd::Finished => ExitCode::SUCCESS,
                run::RunEnd::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
            })
        }
        Command::Data { command } => data_cmd::data(command).map(|()| ExitCode::SUCCESS),
        Command::Tokenizer { command } => data_cmd::tokenizer(command).map(|()| ExitCode::SUCCESS),
    }
}
