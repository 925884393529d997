//! The continual trainer: one loop over the experiences of a stream and the optimizer steps of
//! each, read top to bottom like nanoGPT's. Everything it needs to continue after a restart is
//! in [`TrainerState`] plus the model, optimizer and strategy tensors of a checkpoint.

use crate::error::{ContinualError, Result};
use crate::optim::{AdamW, AdamWConfig, GradStore};
use crate::strategy::{Context, ItemOf, Strategy, StrategyState};
use burn::module::{AutodiffModule, Module};
use burn::tensor::ElementConversion;
use cpt_core::TrainBackend;
use cpt_core::checkpoint::{CheckpointDir, save_checkpoint, tag_for_step};
use cpt_core::params::{load_named, named_tensors};
use cpt_core::schedule::phase_position;
use cpt_core::tensor_file::{encode_tensors, parse_tensors};
use cpt_core::{
    Batch, CoreError, EvalPoint, EvalRecord, EvalScores, Evaluator, ItemSource, ScheduleConfig,
    StepRecord, TaskModel,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Optimisation and bookkeeping settings of a run.
#[derive(Debug, Clone)]
pub struct TrainerSettings {
    /// Items per micro-batch (fresh plus replayed).
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum_steps: usize,
    /// Clip the global gradient norm to this (0 disables).
    pub grad_clip_norm: f64,
    /// AdamW hyperparameters.
    pub adamw: AdamWConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Evaluate every this many steps inside an experience (0: only at its end).
    pub eval_every_steps: u64,
    /// Checkpoint every this many global steps (0: only at experience ends).
    pub checkpoint_every_steps: u64,
    /// Checkpoints to keep (0: all).
    pub keep_last: usize,
    /// Report a step record every this many steps.
    pub log_every_steps: u64,
    /// Checksum of the resolved config, stored in checkpoint manifests.
    pub config_hash: String,
    /// What to do when a loss or gradient norm is NaN or infinite.
    pub non_finite: NonFinitePolicy,
    /// Skip steps whose loss exceeds this factor × the running mean loss (see [`SpikeGuard`]).
    pub loss_spike_factor: Option<f64>,
    /// Seed of the backend RNG (dropout), re-applied from (seed, step) before every step:
    /// burn cannot save a device RNG's state, so each step's draws are made a function of the
    /// step instead.
    pub seed: u64,
}

/// Running mean of recent step losses for the loss-spike guard: an exponential average over
/// roughly the last 50 applied steps, armed after 20. Non-finite and spiking losses never enter
/// it (a NaN would poison it for good, as llm.c's detector is). Checkpointed with the trainer
/// state, so a resumed run judges spikes exactly as an uninterrupted one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeGuard {
    /// Exponential mean of accepted losses.
    pub mean: f64,
    /// Losses accepted so far.
    pub count: u64,
}

impl SpikeGuard {
    const DECAY: f64 = 0.98;
    const WARMUP: u64 = 20;

    /// Whether `loss` is a spike under `factor`; a finite non-spike loss updates the mean.
    pub fn observe(&mut self, loss: f64, factor: f64) -> bool {
        if !loss.is_finite() {
            return false;
        }
        if self.count >= Self::WARMUP && loss > factor * self.mean {
            return true;
        }
        self.mean = if self.count == 0 {
            loss
        } else {
            Self::DECAY * self.mean + (1.0 - Self::DECAY) * loss
        };
        self.count += 1;
        false
    }
}

/// What the trainer does with a step whose loss or gradient norm is not finite. The update is
/// never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinitePolicy {
    /// Stop the run with an error naming the experience and step.
    Fail,
    /// Skip the step (its data is consumed) and continue; fail once more than
    /// `max_skipped_steps` steps were skipped in the run.
    Skip {
        /// Most steps that may be skipped over the run.
        max_skipped_steps: u64,
    },
}

/// One experience of the stream: a name, a step budget and its training stream.
pub struct Experience<I> {
    /// Name (eval matrix header).
    pub name: String,
    /// Optimizer steps to train on it.
    pub steps: u64,
    /// Its training items.
    pub source: Box<dyn ItemSource<I>>,
}

/// Receives what the trainer does, to log it, draw progress and write the run directory.
pub trait RunObserver {
    /// An experience starts (or resumes at `step`).
    fn experience_started(&mut self, _index: usize, _name: &str, _steps: u64, _step: u64) {}
    /// A step was applied (every `log_every_steps`).
    fn step(&mut self, _record: &StepRecord) {}
    /// An evaluation finished.
    fn eval(&mut self, _record: &EvalRecord) {}
    /// A checkpoint was written.
    fn checkpoint(&mut self, _path: &Path) {}
    /// An experience's budget is spent and it was evaluated.
    fn experience_finished(&mut self, _index: usize) {}
}

/// An observer that ignores everything.
pub struct SilentObserver;
impl RunObserver for SilentObserver {}

/// Position and history of a run: the `trainer_state.json` of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Experience being trained (equal to the stream length when done).
    pub experience: usize,
    /// Steps applied in that experience.
    pub step_in_experience: u64,
    /// Whether `before_experience` already ran for it.
    pub experience_started: bool,
    /// Steps applied over the whole run.
    pub global_step: u64,
    /// Training units consumed over the whole run.
    pub tokens_seen: u64,
    /// Scores before any training (the forward-transfer baseline).
    pub initial_scores: Option<Vec<EvalScores>>,
    /// Row `i`: scores after experience `i`.
    pub matrix: Vec<Vec<EvalScores>>,
    /// Cursor of each experience's stream.
    pub cursors: Vec<serde_json::Value>,
    /// JSON state of each strategy.
    pub strategies: Vec<serde_json::Value>,
    /// Training seconds over all sessions of this run.
    pub elapsed_secs: f64,
    /// Steps skipped under the `skip` non-finite policy or as loss spikes.
    #[serde(default)]
    pub skipped_steps: u64,
    /// State of the loss-spike guard.
    #[serde(default)]
    pub spike_guard: SpikeGuard,
}

/// How [`ContinualTrainer::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Every experience was trained and evaluated.
    Finished,
    /// A stop was requested; a checkpoint was written at `checkpoint` (if checkpointing is on).
    Interrupted {
        /// Where the trainer saved its state.
        checkpoint: Option<PathBuf>,
    },
}

/// The continual trainer.
pub struct ContinualTrainer<B, M>
where
    B: TrainBackend,
    M: TaskModel<B> + AutodiffModule<B>,
{
    model: M,
    optimizer: AdamW<B>,
    strategies: Vec<Box<dyn Strategy<B, M>>>,
    experiences: Vec<Experience<ItemOf<B, M>>>,
    evaluator: Box<dyn Evaluator<M::InnerModule>>,
    settings: TrainerSettings,
    state: TrainerState,
    checkpoint_root: Option<PathBuf>,
    stop: Arc<AtomicBool>,
}

impl<B, M> ContinualTrainer<B, M>
where
    B: TrainBackend,
    M: TaskModel<B> + AutodiffModule<B>,
{
    /// A trainer at the start of the stream.
    pub fn new(
        model: M,
        strategies: Vec<Box<dyn Strategy<B, M>>>,
        experiences: Vec<Experience<ItemOf<B, M>>>,
        evaluator: Box<dyn Evaluator<M::InnerModule>>,
        settings: TrainerSettings,
    ) -> Self {
        Self {
            model,
            optimizer: AdamW::new(settings.adamw),
            strategies,
            experiences,
            evaluator,
            settings,
            state: TrainerState::default(),
            checkpoint_root: None,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Write checkpoints under `root` (`<run>/checkpoints`).
    pub fn with_checkpoints(mut self, root: PathBuf) -> Self {
        self.checkpoint_root = Some(root);
        self
    }

    /// A flag that, once set (e.g. by a signal handler), makes the trainer checkpoint after the
    /// current step and return [`RunOutcome::Interrupted`].
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Position and history of the run.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Train through the whole stream (or the rest of it, after [`ContinualTrainer::resume`]).
    pub fn run(&mut self, observer: &mut dyn RunObserver) -> Result<RunOutcome> {
        let session_start = Instant::now();
        let elapsed_before = self.state.elapsed_secs;
        let outcome = self.run_inner(observer, || {
            elapsed_before + session_start.elapsed().as_secs_f64()
        });
        self.state.elapsed_secs = elapsed_before + session_start.elapsed().as_secs_f64();
        outcome
    }

    fn run_inner(
        &mut self,
        observer: &mut dyn RunObserver,
        clock: impl Fn() -> f64,
    ) -> Result<RunOutcome> {
        if self.state.initial_scores.is_none() {
            let scores = self.evaluate(EvalPoint::Initial, observer)?;
            self.state.initial_scores = Some(scores);
        }
        while self.state.experience < self.experiences.len() {
            let e = self.state.experience;
            let steps = self.experiences[e].steps;
            if !self.state.experience_started {
                self.hook(e, |s, cx| s.before_experience(cx))?;
                self.state.experience_started = true;
            }
            observer.experience_started(
                e,
                &self.experiences[e].name,
                steps,
                self.state.step_in_experience,
            );
            while self.state.step_in_experience < steps {
                let record = self.train_step(e)?;
                let step = self.state.step_in_experience;
                if step.is_multiple_of(self.settings.log_every_steps.max(1)) || step == steps {
                    observer.step(&record);
                }
                let every = self.settings.eval_every_steps;
                if every > 0 && step.is_multiple_of(every) && step < steps {
                    self.evaluate(EvalPoint::Periodic, observer)?;
                }
                let every = self.settings.checkpoint_every_steps;
                if every > 0 && self.state.global_step.is_multiple_of(every) {
                    self.state.elapsed_secs = clock();
                    self.checkpoint(observer)?;
                }
                if self.stop.load(Ordering::SeqCst) {
                    self.state.elapsed_secs = clock();
                    let checkpoint = self.checkpoint(observer)?;
                    return Ok(RunOutcome::Interrupted { checkpoint });
                }
            }
            self.hook(e, |s, cx| s.after_experience(cx))?;
            let row = self.evaluate(EvalPoint::ExperienceEnd, observer)?;
            self.state.matrix.push(row);
            self.state.experience += 1;
            self.state.step_in_experience = 0;
            self.state.experience_started = false;
            observer.experience_finished(e);
            self.state.elapsed_secs = clock();
            self.checkpoint(observer)?;
            if self.stop.load(Ordering::SeqCst) && self.state.experience < self.experiences.len() {
                return Ok(RunOutcome::Interrupted {
                    checkpoint: self.last_checkpoint(),
                });
            }
        }
        Ok(RunOutcome::Finished)
    }

    /// One optimizer step on experience `e`: micro-batches, penalties, gradient accumulation,
    /// the non-finite guard, global-norm clipping, the AdamW update, `after_step` hooks.
    fn train_step(&mut self, e: usize) -> Result<StepRecord> {
        let started = Instant::now();
        let s = &self.settings;
        let budgets: Vec<u64> = self.experiences.iter().map(|x| x.steps).collect();
        let (phase_step, phase_steps) = phase_position(
            s.schedule.rewarm,
            &budgets,
            e,
            self.state.step_in_experience,
        );
        let lr = s.schedule.lr_at(phase_step, phase_steps);
        let (batch_size, accum) = (s.batch_size, s.grad_accum_steps);
        self.reseed(&[self.state.global_step]);

        let mut grads = GradStore::<B>::default();
        let (mut loss_sum, mut total_sum, mut units) = (0.0, 0.0, 0usize);
        let mut non_finite: Option<(&'static str, f64)> = None;
        for _ in 0..accum {
            let batch = self.next_training_batch(e, batch_size)?;
            units += batch.units();
            let out = self.model.forward_step(&batch);
            let mut total = out.loss.clone();
            for strategy in &self.strategies {
                if let Some(penalty) = strategy.penalty(&self.model, &batch, &out) {
                    total = total + penalty;
                }
            }
            let loss = out.loss.clone().into_scalar().elem::<f64>();
            let total_value = total.clone().into_scalar().elem::<f64>();
            loss_sum += loss;
            total_sum += total_value;
            if !total_value.is_finite() {
                // The remaining micro-batches are still drawn, so the data position does not
                // depend on where the fault happened.
                non_finite.get_or_insert(("loss", total_value));
                continue;
            }
            let backward = total.div_scalar(accum as f64).backward();
            grads.accumulate(&self.model, &backward);
        }
        // Frozen parameters (learning-rate scale 0) have no gradient, as `requires_grad=False`
        // in PyTorch: they count neither in the clipping norm nor in the update.
        let strategies = &self.strategies;
        grads.retain(|path| strategies.iter().all(|s| s.lr_scale(path) != 0.0));
        let grad_norm = if non_finite.is_none() {
            grads.global_norm()
        } else {
            f64::NAN
        };
        if non_finite.is_none() && !grad_norm.is_finite() {
            non_finite = Some(("gradient norm", grad_norm));
        }
        // The guard watches the objective the update follows (loss plus penalties).
        let mean_loss = total_sum / accum as f64;
        let spike = match (non_finite, self.settings.loss_spike_factor) {
            (None, Some(factor)) => self.state.spike_guard.observe(mean_loss, factor),
            _ => false,
        };
        let skipped = match non_finite {
            None if spike => self.spike_step(mean_loss, e)?,
            None => false,
            Some((what, value)) => self.non_finite_step(what, value, e)?,
        };
        if !skipped {
            let clip = self.settings.grad_clip_norm;
            if clip > 0.0 && grad_norm > clip {
                // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
                grads.scale(clip / (grad_norm + 1e-6));
            }
            let strategies = &self.strategies;
            let lr_scale =
                |path: &str| strategies.iter().map(|s| s.lr_scale(path)).product::<f64>();
            self.model = self
                .optimizer
                .step(self.model.clone(), &grads, lr, lr_scale);
        }

        // A skipped step still spends its budget and its data: the run stays aligned with the
        // schedule and the stream.
        self.state.step_in_experience += 1;
        self.state.global_step += 1;
        self.state.tokens_seen += units as u64;
        if !skipped {
            self.hook(e, |s, cx| s.after_step(cx))?;
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        Ok(StepRecord {
            experience: e,
            experience_name: self.experiences[e].name.clone(),
            step: self.state.step_in_experience,
            experience_steps: self.experiences[e].steps,
            global_step: self.state.global_step,
            loss: loss_sum / accum as f64,
            total_loss: total_sum / accum as f64,
            lr,
            grad_norm,
            tokens_seen: self.state.tokens_seen,
            tokens_per_sec: units as f64 / seconds,
            skipped,
        })
    }

    /// Fresh items from the stream plus whatever the strategies add (replay).
    fn next_training_batch(&mut self, e: usize, batch_size: usize) -> Result<M::Batch> {
        let reserved: usize = self
            .strategies
            .iter()
            .map(|s| s.reserved_slots(batch_size))
            .sum();
        let fresh_count = batch_size.saturating_sub(reserved).max(1);
        let source = &mut self.experiences[e].source;
        let fresh = (0..fresh_count)
            .map(|_| source.next_item())
            .collect::<cpt_core::Result<Vec<_>>>()?;
        let mut items = fresh.clone();
        for strategy in &mut self.strategies {
            strategy.extend_batch(batch_size, &fresh, &mut items);
        }
        Ok(M::Batch::from_items(items))
    }

    /// A loss spike: skip the step (counted against the skip cap), whatever the non-finite
    /// policy, since the guard was asked for explicitly.
    fn spike_step(&mut self, loss: f64, e: usize) -> Result<bool> {
        let cap = match self.settings.non_finite {
            NonFinitePolicy::Skip { max_skipped_steps } => max_skipped_steps,
            NonFinitePolicy::Fail => DEFAULT_SPIKE_CAP,
        };
        self.state.skipped_steps += 1;
        let mean = self.state.spike_guard.mean;
        let message = format!(
            "loss spike at experience `{}` step {}: {loss:.4} against a running mean of {mean:.4}; update not applied",
            self.experiences[e].name,
            self.state.step_in_experience + 1
        );
        if self.state.skipped_steps > cap {
            return Err(ContinualError::TooManySkipped {
                limit: cap,
                last: Box::new(ContinualError::LossSpike(message)),
            });
        }
        tracing::warn!(
            "{message} ({} skipped of at most {cap})",
            self.state.skipped_steps
        );
        Ok(true)
    }

    /// Apply the non-finite policy to a step whose `what` was `value`: `Ok(true)` to skip it,
    /// or the error that stops the run. The update is never applied either way.
    fn non_finite_step(&mut self, what: &'static str, value: f64, e: usize) -> Result<bool> {
        let error = ContinualError::NonFinite {
            what,
            value,
            experience: self.experiences[e].name.clone(),
            step: self.state.step_in_experience + 1,
        };
        match self.settings.non_finite {
            NonFinitePolicy::Fail => Err(error),
            NonFinitePolicy::Skip { max_skipped_steps } => {
                self.state.skipped_steps += 1;
                if self.state.skipped_steps > max_skipped_steps {
                    return Err(ContinualError::TooManySkipped {
                        limit: max_skipped_steps,
                        last: Box::new(error),
                    });
                }
                tracing::warn!(
                    "{error}; skipped ({} of at most {max_skipped_steps})",
                    self.state.skipped_steps
                );
                Ok(true)
            }
        }
    }

    /// Seed the backend RNG from the run seed and `key` (a position in the run). burn cannot
    /// save a device RNG's state, so every draw is made a function of where the run is.
    fn reseed(&self, key: &[u64]) {
        let seed = cpt_core::SplitMix64::derive(self.settings.seed, key).next_u64();
        if let Some(device) = Module::devices(&self.model).first() {
            B::seed(device, seed);
        }
    }

    /// Call `f` on every strategy with a context over the model and experience `e`'s stream.
    fn hook(
        &mut self,
        e: usize,
        mut f: impl FnMut(&mut dyn Strategy<B, M>, &mut Context<'_, B, M>) -> Result<()>,
    ) -> Result<()> {
        let batch_size = self.settings.batch_size;
        // Hooks may draw randomness too (a Fisher estimate runs forward passes with dropout), and
        // a run may resume right before one: re-seed from the position, as for a step.
        let position = [
            self.state.global_step,
            e as u64,
            self.state.experience_started as u64,
            cpt_core::rng::domain::HOOK,
        ];
        self.reseed(&position);
        let Self {
            model,
            strategies,
            experiences,
            state,
            optimizer,
            ..
        } = self;
        let experience = &mut experiences[e];
        let source = &mut experience.source;
        let mut next_batch = || -> Result<M::Batch> {
            let items = (0..batch_size)
                .map(|_| source.next_item())
                .collect::<cpt_core::Result<Vec<_>>>()?;
            Ok(M::Batch::from_items(items))
        };
        let mut resets = Vec::new();
        for strategy in strategies.iter_mut() {
            let mut cx = Context {
                model,
                experience: e,
                experience_name: &experience.name,
                global_step: state.global_step,
                next_batch: &mut next_batch,
                reset_optimizer: &mut resets,
                backend: PhantomData,
            };
            f(strategy.as_mut(), &mut cx)?;
        }
        if !resets.is_empty() {
            optimizer.forget(|path| resets.iter().any(|r| path.contains(r.as_str())));
        }
        Ok(())
    }

    fn evaluate(
        &mut self,
        point: EvalPoint,
        observer: &mut dyn RunObserver,
    ) -> Result<Vec<EvalScores>> {
        let scores = self.evaluator.evaluate(&self.model.valid())?;
        let experience = (point != EvalPoint::Initial).then_some(self.state.experience);
        observer.eval(&EvalRecord {
            point,
            experience,
            step: self.state.step_in_experience,
            global_step: self.state.global_step,
            metric: self.evaluator.metric_name().to_string(),
            scores: scores.clone(),
        });
        Ok(scores)
    }

    fn last_checkpoint(&self) -> Option<PathBuf> {
        let root = self.checkpoint_root.as_ref()?;
        Some(root.join(tag_for_step(
            self.state.global_step,
            !self.state.experience_started,
        )))
    }

    /// Write a checkpoint of everything a resume needs. Does nothing without a checkpoint root.
    fn checkpoint(&mut self, observer: &mut dyn RunObserver) -> Result<Option<PathBuf>> {
        let Some(root) = self.checkpoint_root.clone() else {
            return Ok(None);
        };
        self.state.cursors = self.experiences.iter().map(|x| x.source.cursor()).collect();
        let states: Vec<StrategyState> = self.strategies.iter().map(|s| s.state()).collect();
        self.state.strategies = states.iter().map(|s| s.json.clone()).collect();

        let mut files = Vec::new();
        let model_file = Path::new(MODEL_FILE);
        files.push((
            MODEL_FILE.to_string(),
            encode_tensors(&named_tensors(&self.model), HashMap::new(), model_file)?,
        ));
        let (moments, steps) = self.optimizer.state_tensors();
        files.push((
            OPTIMIZER_FILE.to_string(),
            encode_tensors(&moments, steps, Path::new(OPTIMIZER_FILE))?,
        ));
        for (i, state) in states.iter().enumerate() {
            if !state.tensors.is_empty() {
                let name = strategy_file(i);
                files.push((
                    name.clone(),
                    encode_tensors(&state.tensors, HashMap::new(), Path::new(&name))?,
                ));
            }
        }
        let state_json = serde_json::to_vec_pretty(&self.state).expect("trainer state serialises");
        files.push((STATE_FILE.to_string(), state_json));
        let tag = tag_for_step(self.state.global_step, !self.state.experience_started);
        let path = save_checkpoint(
            &root,
            &tag,
            self.state.global_step,
            &self.settings.config_hash,
            &files,
            self.settings.keep_last,
        )?;
        observer.checkpoint(&path);
        Ok(Some(path))
    }

    /// Restore model, optimizer, strategies, stream positions and history from a checkpoint.
    pub fn resume(&mut self, checkpoint: &CheckpointDir) -> Result<()> {
        let read_tensors = |name: &str| -> Result<_> {
            let bytes = checkpoint.read(name)?;
            Ok(parse_tensors(&bytes, &checkpoint.path.join(name))?)
        };
        let state_path = checkpoint.path.join(STATE_FILE);
        let state: TrainerState =
            serde_json::from_slice(&checkpoint.read(STATE_FILE)?).map_err(|source| {
                CoreError::Json {
                    path: state_path,
                    source,
                }
            })?;
        if state.cursors.len() != self.experiences.len()
            || state.strategies.len() != self.strategies.len()
        {
            return Err(ContinualError::Resume(format!(
                "checkpoint has {} experiences and {} strategies, the config {} and {}",
                state.cursors.len(),
                state.strategies.len(),
                self.experiences.len(),
                self.strategies.len()
            )));
        }
        let device = Module::devices(&self.model.valid())
            .into_iter()
            .next()
            .expect("a model has a device");
        // Strategies first: they may change the model's structure (adapters) that the
        // checkpointed weights belong to.
        for (i, strategy) in self.strategies.iter_mut().enumerate() {
            let name = strategy_file(i);
            let has_tensors = checkpoint.manifest.files.iter().any(|f| f.name == name);
            let tensors = if has_tensors {
                read_tensors(&name)?.0
            } else {
                Default::default()
            };
            let state = StrategyState {
                json: state.strategies[i].clone(),
                tensors,
            };
            strategy.load_state(state, &device)?;
        }
        let mut model = self.model.clone();
        for strategy in &self.strategies {
            model = strategy.rebuild_model(model);
        }
        let (weights, _) = read_tensors(MODEL_FILE)?;
        self.model = load_named(model, &weights, &checkpoint.path.join(MODEL_FILE))?;
        let (moments, steps) = read_tensors(OPTIMIZER_FILE)?;
        self.optimizer
            .load_state(&moments, &steps, &device)
            .map_err(|key| ContinualError::Resume(format!("optimizer state lacks `{key}`")))?;
        for (experience, cursor) in self.experiences.iter_mut().zip(&state.cursors) {
            experience.source.seek(cursor)?;
        }
        self.state = state;
        Ok(())
    }
}

/// Skip cap of the loss-spike guard when the non-finite policy (`fail`) sets none.
const DEFAULT_SPIKE_CAP: u64 = 10;

/// Model weights inside a checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer moments inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Trainer position and history inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";

fn strategy_file(index: usize) -> String {
    format!("strategy-{index}.safetensors")
}
