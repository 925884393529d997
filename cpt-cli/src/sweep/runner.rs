//! Running a sweep's points: each one a child `cpt run` of this executable into its own run
//! directory, at most `jobs` at a time. A point whose directory holds `summary.json` is done
//! and skipped; one with a `config.toml` but no summary was interrupted and is resumed with
//! `--resume` (its newest checkpoint, exactly as `cpt run --resume`).

use super::PlannedPoint;
use crate::backend::BackendChoice;
use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Exit status of `cpt run` stopped by a signal after checkpointing (see `main.rs`).
const EXIT_INTERRUPTED: i32 = 3;

/// How a point's run went.
#[derive(Debug, Clone, PartialEq)]
pub enum PointOutcome {
    /// It had finished before this sweep started.
    Skipped,
    /// It ran to the end now.
    Finished,
    /// It was stopped (with a checkpoint) or never started because the sweep was stopped.
    Interrupted,
    /// Its run failed: the last error line of its log.
    Failed(String),
}

/// How to launch the points' runs.
pub struct Launch<'a> {
    /// The base run config each child reads.
    pub base: &'a Path,
    /// `--backend` for the children.
    pub backend: Option<BackendChoice>,
    /// Points running at once.
    pub jobs: usize,
    /// Raised by SIGINT/SIGTERM: start nothing more, and pass the signal on to running points.
    pub stop: &'a AtomicBool,
}

/// Run every point not finished yet; one outcome per point, in point order.
pub fn run_points(
    sweep_dir: &Path,
    points: &[PlannedPoint],
    launch: &Launch,
) -> Result<Vec<PointOutcome>> {
    let exe = std::env::current_exe().context("finding the cpt executable")?;
    let mut outcomes = vec![PointOutcome::Interrupted; points.len()];
    let mut queue = VecDeque::new();
    for (i, point) in points.iter().enumerate() {
        if sweep_dir
            .join(&point.spec.name)
            .join("summary.json")
            .exists()
        {
            tracing::info!("skipping finished point `{}`", point.spec.name);
            outcomes[i] = PointOutcome::Skipped;
        } else {
            queue.push_back(i);
        }
    }
    let bar = ProgressBar::new(points.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("sweep [{bar:30}] {pos}/{len} points {msg} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_position((points.len() - queue.len()) as u64);
    let queue = Mutex::new(queue);
    let outcomes = Mutex::new(outcomes);
    let running: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..launch.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    if launch.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(i) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let point = &points[i];
                    let name = &point.spec.name;
                    set_running(&bar, &running, name, true);
                    let outcome = run_point(&exe, &sweep_dir.join(name), point, launch)
                        .unwrap_or_else(|e| PointOutcome::Failed(crate::chain(&e)));
                    set_running(&bar, &running, name, false);
                    match &outcome {
                        PointOutcome::Finished => {
                            bar.inc(1);
                            tracing::info!("point `{name}` finished");
                        }
                        PointOutcome::Failed(why) => {
                            bar.inc(1);
                            tracing::error!("point `{name}` failed: {why}");
                        }
                        _ => tracing::warn!("point `{name}` interrupted"),
                    }
                    outcomes.lock().expect("outcomes lock")[i] = outcome;
                }
            });
        }
    });
    bar.finish_and_clear();
    Ok(outcomes.into_inner().expect("outcomes lock"))
}

fn set_running(bar: &ProgressBar, running: &Mutex<Vec<String>>, name: &str, started: bool) {
    let mut names = running.lock().expect("running lock");
    if started {
        names.push(name.to_string());
    } else {
        names.retain(|n| n != name);
    }
    bar.set_message(names.join(", "));
}

/// Run (or resume) one point, its output appended to `run.log` in its directory.
fn run_point(
    exe: &Path,
    dir: &Path,
    point: &PlannedPoint,
    launch: &Launch,
) -> Result<PointOutcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let resume = dir.join("config.toml").exists();
    if resume {
        tracing::info!("resuming point `{}`", point.spec.name);
    }
    let mut command = Command::new(exe);
    command.arg("run").arg(launch.base).arg("--out").arg(dir);
    for item in &point.spec.overrides {
        command.arg("--set").arg(item);
    }
    if resume {
        command.arg("--resume");
    }
    if let Some(backend) = launch.backend
        && let Some(value) = backend.to_possible_value()
    {
        command.arg("--backend").arg(value.get_name());
    }
    let log_path = dir.join("run.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    // Its own process group: a terminal's Ctrl-C reaches only the sweep, which passes exactly
    // one SIGTERM on (a second signal would make the run exit without its checkpoint).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let status = wait(child, launch.stop)?;
    Ok(match status.code() {
        Some(0) => PointOutcome::Finished,
        Some(EXIT_INTERRUPTED) => PointOutcome::Interrupted,
        _ if launch.stop.load(Ordering::SeqCst) => PointOutcome::Interrupted,
        _ => PointOutcome::Failed(format!(
            "{} ({status}; log: {})",
            last_error_line(&log_path),
            log_path.display()
        )),
    })
}

/// Wait for a child, passing a stop request on as SIGTERM (it checkpoints and exits 3).
fn wait(mut child: Child, stop: &AtomicBool) -> Result<ExitStatus> {
    let mut signalled = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if !signalled && stop.load(Ordering::SeqCst) {
            terminate(&child);
            signalled = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    // SAFETY: kill(2) on the pid of a child this process has not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {}

/// The last `error:` line of a run's log, or a pointer to the log.
fn last_error_line(log: &PathBuf) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "the run failed".into())
}
