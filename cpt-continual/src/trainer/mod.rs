//! The continual trainer: one loop over the experiences of a stream and the optimizer steps of
//! each, read top to bottom like nanoGPT's. Everything it needs to continue after a restart is
//! in [`TrainerState`] plus the model, optimizer and strategy tensors of a checkpoint.
//!
//! A step is two halves: `forward_backward` over the micro-batches, which leaves its gradients
//! and losses on the device, and `update`, which reads the losses once and the gradient norm
//! once, then guards, clips and applies. The guards live in `guards.rs`, checkpoint and resume
//! in `checkpointing.rs`.

mod checkpointing;
mod guards;

pub use checkpointing::{MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};
pub use guards::{NonFinitePolicy, SpikeGuard};

use crate::distributed::{Packed, PeerGroup, check_batch, shard};
use crate::error::Result;
use crate::optim::{AdamW, AdamWConfig, GradStore};
use crate::strategy::{Context, ItemOf, Strategy};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use cpt_core::TrainBackend;
use cpt_core::fused::recompute;
use cpt_core::precision::autocast;
use cpt_core::schedule::phase_position;
use cpt_core::{
    Batch, EvalPoint, EvalRecord, EvalScores, Evaluator, ItemSource, LossScaler, LossScalerConfig,
    Precision, ScheduleConfig, StepRecord, TaskModel,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Precision of the training forward and backward passes.
    pub precision: Precision,
    /// Precision of evaluation forward passes.
    pub eval_precision: Precision,
    /// Dynamic loss scaling under `f16-mixed` (ignored otherwise).
    pub loss_scaler: LossScalerConfig,
    /// Record training forward passes for per-layer recomputation
    /// ([`cpt_core::fused::recompute`]); saves memory on a checkpointing autodiff backend.
    pub recompute_layers: bool,
    /// Reads the memory of the device the run trains on into every step record
    /// ([`cpt_core::memory::no_device_memory`] on the CPU).
    pub device_memory: cpt_core::memory::DeviceMemoryProbe,
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

/// Prepares the model for experience `index` before its first step, and again when a run
/// resumes inside it or before it: what a stage changes that is not a parameter (a longer-context
/// stage's RoPE, say) and so is not in a checkpoint. Given the model, returns the prepared one.
pub type StageSetup<M> = Box<dyn Fn(usize, M) -> M + Send + Sync>;

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
    /// The dynamic loss scale under `f16-mixed`.
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    /// Training units consumed per source (see [`StepRecord::tokens_by_source`]).
    #[serde(default)]
    pub tokens_by_source: BTreeMap<String, u64>,
}

/// The `tokens_by_source` key of items strategies add to a batch (replay).
pub const REPLAY_SOURCE: &str = "(replay)";

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
    /// Data-parallel peers, when there are several (see [`crate::distributed`]).
    peers: Option<Box<dyn PeerGroup<B::InnerBackend>>>,
    /// Under peers: whether any peer asked to stop, as agreed in the last step's all-reduce (so
    /// that every peer stops after the same step).
    stop_agreed: bool,
    /// Per-stage model settings, applied as each experience starts or resumes.
    stage_setup: Option<StageSetup<M>>,
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
        let state = TrainerState {
            loss_scaler: settings
                .precision
                .needs_loss_scaling()
                .then(|| LossScaler::new(&settings.loss_scaler)),
            ..TrainerState::default()
        };
        Self {
            model,
            optimizer: AdamW::new(settings.adamw),
            strategies,
            experiences,
            evaluator,
            settings,
            state,
            checkpoint_root: None,
            stop: Arc::new(AtomicBool::new(false)),
            peers: None,
            stop_agreed: false,
            stage_setup: None,
        }
    }

    /// Apply `setup` to the model as each experience starts (or resumes).
    pub fn with_stage_setup(mut self, setup: StageSetup<M>) -> Self {
        self.stage_setup = Some(setup);
        self
    }

    /// Train as one of several data-parallel `peers`: each trains on its slice of every global
    /// micro-batch and the gradients are averaged before the update (see
    /// [`crate::distributed`]). The global `batch_size` must divide by the number of peers.
    pub fn with_peers(mut self, peers: Box<dyn PeerGroup<B::InnerBackend>>) -> Result<Self> {
        check_batch(self.settings.batch_size, peers.size())?;
        self.peers = Some(peers);
        Ok(self)
    }

    /// Stop (after the current step, with a checkpoint) when `flag` is raised, e.g. by a signal
    /// handler shared by several peers of one process.
    pub fn with_stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = flag;
        self
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
            if let Some(setup) = &self.stage_setup {
                self.model = setup(e, self.model.clone());
            }
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
                if self.should_stop() {
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
            if self.should_stop() && self.state.experience < self.experiences.len() {
                return Ok(RunOutcome::Interrupted {
                    checkpoint: self.last_checkpoint(),
                });
            }
        }
        if let Some(peers) = &self.peers {
            peers.finish()?;
        }
        Ok(RunOutcome::Finished)
    }

    /// One optimizer step on experience `e`: the forward and backward passes of its
    /// micro-batches, then the update they add up to.
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
        self.reseed(&[self.state.global_step]);
        let micro = self.forward_backward(e)?;
        self.update(e, micro, lr, started)
    }

    /// Forward and backward passes over the step's micro-batches: fresh items plus the slots
    /// strategies fill (replay), the loss plus strategy penalties, gradients summed over the
    /// micro-batches. Nothing is read to the host here; the losses stay on the device.
    fn forward_backward(&mut self, e: usize) -> Result<MicroBatches<B>> {
        let (batch_size, accum) = (self.settings.batch_size, self.settings.grad_accum_steps);
        // Under f16-mixed the objective is multiplied by the loss scale so that small gradients
        // survive f16's range; `update` divides it out again.
        let loss_scale = self.state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
        let mut micro = MicroBatches {
            grads: GradStore::default(),
            losses: Vec::with_capacity(accum),
            totals: Vec::with_capacity(accum),
            units: 0,
        };
        for _ in 0..accum {
            let (batch, units) = self.next_training_batch(e, batch_size)?;
            micro.units += units;
            let out = {
                let _scope = autocast(self.settings.precision);
                let _recompute = recompute::layers(self.settings.recompute_layers);
                self.model.forward_step(&batch)
            };
            let mut total = out.loss.clone();
            for strategy in &self.strategies {
                if let Some(penalty) = strategy.penalty(&self.model, &batch, &out) {
                    total = total + penalty;
                }
            }
            // Kept without their autodiff graph, which would otherwise live until the read.
            micro.losses.push(out.loss.clone().inner());
            micro.totals.push(total.clone().inner());
            // A non-finite objective is backpropagated like any other: the guard rejects the
            // whole step before its gradients are used, and every micro-batch is still drawn,
            // so the data position does not depend on where a fault happened.
            let backward = total.mul_scalar(loss_scale / accum as f64).backward();
            micro.grads.accumulate(&self.model, &backward);
        }
        if let Some(peers) = &self.peers {
            self.stop_agreed =
                micro.all_reduce(peers.as_ref(), self.stop.load(Ordering::SeqCst))?;
        }
        Ok(micro)
    }

    /// Whether to stop after this step: the local flag, or under peers what they agreed on.
    fn should_stop(&self) -> bool {
        match self.peers {
            Some(_) => self.stop_agreed,
            None => self.stop.load(Ordering::SeqCst),
        }
    }

    /// The update of one step: frozen parameters dropped, the non-finite and loss-spike
    /// guards, global-norm clipping, AdamW, `after_step` hooks, and the step's record.
    fn update(
        &mut self,
        e: usize,
        micro: MicroBatches<B>,
        lr: f64,
        started: Instant,
    ) -> Result<StepRecord> {
        let MicroBatches {
            mut grads,
            losses,
            totals,
            units,
        } = micro;
        let losses = StepLosses::read(losses, totals);
        // Frozen parameters (learning-rate scale 0) have no gradient, as `requires_grad=False`
        // in PyTorch: they count neither in the clipping norm nor in the update.
        let strategies = &self.strategies;
        grads.retain(|path| strategies.iter().all(|s| s.lr_scale(path) != 0.0));
        // The step's second and last read; a step already lost to its loss needs no norm. The
        // gradients still carry the loss scale (1 unless f16-mixed): the norm is divided by it.
        let loss_scale = self.state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
        let grad_norm = match losses.non_finite_total {
            None => grads.global_norm() / loss_scale,
            Some(_) => f64::NAN,
        };
        let skipped =
            self.loss_scale_overflow(&losses, grad_norm) || self.guard(e, &losses, grad_norm)?;
        if !skipped {
            // Unscaling and clipping are one pass over the gradients.
            let mut factor = 1.0 / loss_scale;
            let clip = self.settings.grad_clip_norm;
            if clip > 0.0 && grad_norm > clip {
                // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
                factor *= clip / (grad_norm + 1e-6);
            }
            if factor != 1.0 {
                grads.scale(factor);
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
        let device_memory = (self.settings.device_memory)();
        Ok(StepRecord {
            experience: e,
            experience_name: self.experiences[e].name.clone(),
            step: self.state.step_in_experience,
            experience_steps: self.experiences[e].steps,
            global_step: self.state.global_step,
            loss: losses.loss,
            total_loss: losses.total,
            lr,
            grad_norm,
            tokens_seen: self.state.tokens_seen,
            tokens_per_sec: units as f64 / seconds,
            skipped,
            peak_rss_mib: cpt_core::memory::peak_rss_mib(),
            device_memory_mib: device_memory.map(|m| m.in_use_mib()),
            device_reserved_mib: device_memory.map(|m| m.reserved_mib()),
            tokens_by_source: self.state.tokens_by_source.clone(),
        })
    }

    /// Fresh items from the stream plus whatever the strategies add (replay): this peer's share
    /// of the global micro-batch, and the training units of the whole of it.
    fn next_training_batch(&mut self, e: usize, batch_size: usize) -> Result<(M::Batch, usize)> {
        let reserved: usize = self
            .strategies
            .iter()
            .map(|s| s.reserved_slots(batch_size))
            .sum();
        let fresh_count = batch_size.saturating_sub(reserved).max(1);
        let experience = &mut self.experiences[e];
        let mut fresh = Vec::with_capacity(fresh_count);
        let mut parts = Vec::with_capacity(fresh_count);
        for _ in 0..fresh_count {
            fresh.push(experience.source.next_item()?);
            parts.push(match experience.source.last_part() {
                Some(part) => format!("{}/{part}", experience.name),
                None => experience.name.clone(),
            });
        }
        let mut items = fresh.clone();
        for strategy in &mut self.strategies {
            strategy.extend_batch(batch_size, &fresh, &mut items);
        }
        let added = items.len().saturating_sub(fresh.len());
        let batch = M::Batch::from_items(items);
        let units = batch.units();
        // Items of one batch are of one size (packed sequences, single images).
        let units_per_item = (units / batch.len().max(1)) as u64;
        let counts = &mut self.state.tokens_by_source;
        for part in parts {
            *counts.entry(part).or_default() += units_per_item;
        }
        if added > 0 {
            *counts.entry(REPLAY_SOURCE.to_string()).or_default() += units_per_item * added as u64;
        }
        let Some(peers) = &self.peers else {
            return Ok((batch, units));
        };
        // Every peer assembled the same global batch; each trains on its own slice.
        let mut items = batch.into_items();
        let slice = shard(items.len(), peers.rank(), peers.size());
        items.truncate(slice.end);
        Ok((M::Batch::from_items(items.split_off(slice.start)), units))
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
        let scores = {
            let _scope = autocast(self.settings.eval_precision);
            self.evaluator.evaluate(&self.model.valid())?
        };
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
}

/// What the forward and backward passes of one step leave for its update, still on the device.
struct MicroBatches<B: TrainBackend> {
    /// Gradients of the mean objective over the micro-batches.
    grads: GradStore<B>,
    /// Each micro-batch's model loss, `[1]` each.
    losses: Vec<Tensor<B::InnerBackend, 1>>,
    /// Each micro-batch's objective (loss plus strategy penalties), `[1]` each.
    totals: Vec<Tensor<B::InnerBackend, 1>>,
    /// Training units (tokens, images) consumed.
    units: usize,
}

impl<B: TrainBackend> MicroBatches<B> {
    /// Average the gradients and the micro-batch losses over `peers` in one all-reduce, with
    /// this peer's stop request; returns whether any peer asked to stop.
    fn all_reduce(&mut self, peers: &dyn PeerGroup<B::InnerBackend>, stop: bool) -> Result<bool> {
        let device = self.losses[0].device();
        let flag = Tensor::from_floats([if stop { 1.0 } else { 0.0 }], &device);
        let accum = self.losses.len();
        let paths: Vec<String> = self.grads.iter().map(|(p, _)| p.to_string()).collect();
        let parts: Vec<Tensor<B::InnerBackend, 1>> = std::iter::once(flag)
            .chain(self.losses.drain(..))
            .chain(self.totals.drain(..))
            .chain(
                paths
                    .iter()
                    .map(|p| self.grads.get(p).expect("listed").clone()),
            )
            .collect();
        let mut reduced = Packed::new(parts).all_reduce_mean(peers)?.into_iter();
        let stop = reduced
            .next()
            .expect("the flag")
            .into_scalar()
            .elem::<f64>()
            > 0.0;
        self.losses = reduced.by_ref().take(accum).collect();
        self.totals = reduced.by_ref().take(accum).collect();
        for (path, grad) in paths.iter().zip(reduced) {
            self.grads.insert(path, grad);
        }
        Ok(stop)
    }
}

/// One step's losses on the host.
struct StepLosses {
    /// Mean model loss over the micro-batches.
    loss: f64,
    /// Mean objective over the micro-batches: what the update follows and the spike guard
    /// watches.
    total: f64,
    /// The first micro-batch objective that was NaN or infinite.
    non_finite_total: Option<f64>,
}

impl StepLosses {
    /// Read every micro-batch's loss and objective in one transfer: a read per value would
    /// stall an asynchronous device twice per micro-batch. The sums are taken in f64 in
    /// micro-batch order, so the numbers do not depend on how they were read.
    fn read<I: Backend>(losses: Vec<Tensor<I, 1>>, totals: Vec<Tensor<I, 1>>) -> Self {
        let accum = losses.len();
        let values: Vec<f64> = if accum == 0 {
            Vec::new()
        } else {
            let all = losses.into_iter().chain(totals).collect();
            Tensor::cat(all, 0).into_data().iter::<f64>().collect()
        };
        let (losses, totals) = values.split_at(accum);
        let mean = |xs: &[f64]| xs.iter().fold(0.0, |sum, x| sum + x) / accum as f64;
        Self {
            loss: mean(losses),
            total: mean(totals),
            non_finite_total: totals.iter().copied().find(|t| !t.is_finite()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn scalars(values: &[f32]) -> Vec<Tensor<Flex, 1>> {
        let device = Default::default();
        values
            .iter()
            .map(|&v| Tensor::from_floats([v], &device))
            .collect()
    }

    #[test]
    fn step_losses_are_means_in_f64_and_name_the_first_non_finite_objective() {
        let read = StepLosses::read(scalars(&[1.0, 2.5, 0.1]), scalars(&[1.5, 3.0, 0.2]));
        assert_eq!(read.loss, (0.0 + 1.0 + 2.5 + 0.1f32 as f64) / 3.0);
        assert_eq!(read.total, (0.0 + 1.5 + 3.0 + 0.2f32 as f64) / 3.0);
        assert_eq!(read.non_finite_total, None);

        let read = StepLosses::read(
            scalars(&[1.0, 2.0, 3.0]),
            scalars(&[1.0, f32::INFINITY, f32::NAN]),
        );
        assert_eq!(read.loss, 2.0);
        assert!(read.total.is_nan());
        assert_eq!(read.non_finite_total, Some(f64::INFINITY));
    }

    #[test]
    fn no_micro_batches_read_nothing() {
        let read = StepLosses::read(scalars(&[]), scalars(&[]));
        assert!(read.loss.is_nan() && read.total.is_nan());
        assert_eq!(read.non_finite_total, None);
    }
}
