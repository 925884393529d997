//! The architectures cpt trains, one file each, and the one place that maps a
//! `model.architecture` name to one of them.
//!
//! An [`Architecture`] knows everything model-specific a command needs: which config checks
//! apply, how to build its model (fresh or from a Hugging Face folder) with its data streams and
//! evaluator for `cpt run`, which projections LoRA may target, and how to write a checkpoint of
//! it back as a Hugging Face folder. Everything else (`run.rs`'s trainer loop and run directory,
//! the strategies, the backends) is generic. Adding an architecture is its model file in
//! cpt-models, one file here, and one line in [`with_architecture`].

pub mod clip;
pub mod llama;
pub mod vit;
pub mod vit_mae;

use crate::backend::BackendJob;
use crate::model_source::RunCheckpoint;
use crate::plan::Plan;
use crate::run::{RunEnd, RunJob};
use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use cpt_core::config::ActivationCheckpointing;
use cpt_core::{RunConfig, TrainBackend};
use cpt_models::grow::GrowSpec;
use std::path::Path;

/// One model family: a model file in cpt-models seen from the commands.
pub trait Architecture {
    /// Its `model.architecture` name.
    const NAME: &'static str;
    /// Whether the model reads text, so a run needs a tokenizer.
    const READS_TEXT: bool;

    /// Projections `lora.target_modules` may name.
    fn lora_targets() -> Vec<&'static str>;

    /// Checks of a run config that depend on the architecture; errors name the key.
    fn validate(run: &RunConfig) -> Result<()>;

    /// Train the run `job` describes on backend `B`: hand the generic [`RunJob::execute`] a
    /// function that builds the model, its streams and its evaluator on a device (once per
    /// data-parallel peer).
    fn train<B: TrainBackend>(job: RunJob) -> Result<RunEnd>;

    /// Write the model of checkpoint `saved` (live adapters folded in) as a Hugging Face folder.
    fn export<B: Backend>(saved: &RunCheckpoint, out: &Path, device: &B::Device) -> Result<()>;

    /// The memory plan of a run (`cpt plan`): parameters per component and, where the
    /// architecture has one, an activation estimate. Architectures without a closed form build
    /// the bare model on `device` (no data, no optimizer) and count its parameters.
    fn plan<B: Backend>(run: &RunConfig, device: &B::Device) -> Result<Plan>;
}

/// Work to do with a concrete architecture.
pub trait ArchitectureJob {
    /// What the job returns.
    type Output;
    /// Do it with architecture `A`.
    fn run<A: Architecture>(self) -> Result<Self::Output>;
}

/// Architectures `model.architecture` accepts.
pub const ARCHITECTURES: &[&str] = &[
    llama::Llama::NAME,
    vit::ViT::NAME,
    vit_mae::ViTMAE::NAME,
    clip::Clip::NAME,
];

/// Run `job` with the architecture called `name`.
pub fn with_architecture<J: ArchitectureJob>(name: &str, job: J) -> Result<J::Output> {
    match name {
        llama::Llama::NAME => job.run::<llama::Llama>(),
        vit::ViT::NAME => job.run::<vit::ViT>(),
        vit_mae::ViTMAE::NAME => job.run::<vit_mae::ViTMAE>(),
        clip::Clip::NAME => job.run::<clip::Clip>(),
        other => bail!(
            "config key `model.architecture`: unknown architecture `{other}` (known: {})",
            ARCHITECTURES.join(", ")
        ),
    }
}

/// The model a run starts from, with its config: the Hugging Face folder of `model.from`
/// (`load`), else a fresh model from the run's model config (`config`) drawn from the run's
/// seed (`init`).
fn starting_model<C, M>(
    run: &RunConfig,
    load: impl FnOnce(&Path) -> Result<(C, M)>,
    config: impl FnOnce(&RunConfig) -> Result<C>,
    init: impl FnOnce(&C, u64) -> M,
) -> Result<(C, M)> {
    match &run.model.from {
        Some(from) => load(from),
        None => {
            let c = config(run)?;
            let model = init(&c, run.seed);
            Ok((c, model))
        }
    }
}

/// Architectures `[model.grow]` applies to.
const GROWABLE: &[&str] = &[llama::Llama::NAME, vit::ViT::NAME];

/// The run's `[model.grow]`, read (errors name the key).
fn grow_spec(run: &RunConfig) -> Result<Option<GrowSpec>> {
    Ok(run
        .model
        .grow
        .as_ref()
        .map(GrowSpec::from_table)
        .transpose()?)
}

/// `model` (of config `config`, the starting model) grown as `[model.grow]` says, by `grow`;
/// unchanged without it. Growth happens once, when a run builds its starting model: a resumed
/// run builds the same grown model and the checkpoint then replaces all of its weights.
fn grown<C, M>(
    run: &RunConfig,
    config: C,
    model: M,
    grow: impl FnOnce(&GrowSpec, &C, M) -> cpt_models::Result<(C, M)>,
) -> Result<(C, M)> {
    match grow_spec(run)? {
        Some(spec) => Ok(grow(&spec, &config, model)?),
        None => Ok((config, model)),
    }
}

/// The checks every architecture shares, then its own.
fn validate<A: Architecture>(run: &RunConfig) -> Result<()> {
    if A::READS_TEXT && run.data.tokenizer.is_none() && run.model.from.is_none() {
        bail!("config key `data.tokenizer`: required unless `model.from` holds a tokenizer.json");
    }
    if run.model.grow.is_some() && !GROWABLE.contains(&A::NAME) {
        bail!(
            "config key `model.grow`: growth is implemented for {} only, not `{}`",
            GROWABLE.join(" and "),
            A::NAME
        );
    }
    grow_spec(run)?;
    if run.train.activation_checkpointing == ActivationCheckpointing::Layers && A::NAME != "llama" {
        bail!(
            "config key `train.activation_checkpointing`: `layers` recomputes LLaMA decoder \
             layers; `{}` supports `none` and `balanced`",
            A::NAME
        );
    }
    if !A::READS_TEXT && run.model.resize_vocab.is_some() {
        bail!(
            "config key `model.resize_vocab`: `{}` reads no text",
            A::NAME
        );
    }
    if !A::READS_TEXT && run.model.resize_text_positions.is_some() {
        bail!(
            "config key `model.resize_text_positions`: `{}` reads no text",
            A::NAME
        );
    }
    A::validate(run)
}

/// Check `run` against its architecture (before anything is built or written).
pub fn validate_run(run: &RunConfig) -> Result<()> {
    struct Validate<'a>(&'a RunConfig);
    impl ArchitectureJob for Validate<'_> {
        type Output = ();
        fn run<A: Architecture>(self) -> Result<()> {
            validate::<A>(self.0)
        }
    }
    with_architecture(&run.model.architecture, Validate(run))
}

/// `cpt run`: a [`RunJob`] on the architecture its config names.
pub struct Train(pub RunJob);

impl BackendJob for Train {
    type Output = RunEnd;

    fn run<B: TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<RunEnd> {
        let config = &self.0.config;
        crate::backend::check_precision::<B>(&device, config.train.precision, "train.precision")?;
        if let Some(precision) = config.eval.precision {
            crate::backend::check_precision::<B>(&device, precision, "eval.precision")?;
        }
        struct TrainOn<B: TrainBackend>(RunJob, std::marker::PhantomData<B>);
        impl<B: TrainBackend> ArchitectureJob for TrainOn<B> {
            type Output = RunEnd;
            fn run<A: Architecture>(self) -> Result<RunEnd> {
                validate::<A>(&self.0.config)?;
                A::train::<B>(self.0)
            }
        }
        let name = self.0.config.model.architecture.clone();
        with_architecture(&name, TrainOn::<B>(self.0, std::marker::PhantomData))
    }
}

/// The memory plan of a validated run config (`cpt plan`).
pub fn plan_run<B: Backend>(run: &RunConfig, device: &B::Device) -> Result<Plan> {
    struct PlanOf<'a, B: Backend>(&'a RunConfig, &'a B::Device);
    impl<B: Backend> ArchitectureJob for PlanOf<'_, B> {
        type Output = Plan;
        fn run<A: Architecture>(self) -> Result<Plan> {
            A::plan::<B>(self.0, self.1)
        }
    }
    with_architecture(&run.model.architecture, PlanOf::<B>(run, device))
}

/// Export the model of the run or checkpoint `path` as a Hugging Face folder at `out`.
pub fn export_checkpoint<B: Backend>(path: &Path, out: &Path, device: &B::Device) -> Result<()> {
    struct Export<'a, B: Backend>(&'a RunCheckpoint, &'a Path, &'a B::Device);
    impl<B: Backend> ArchitectureJob for Export<'_, B> {
        type Output = ();
        fn run<A: Architecture>(self) -> Result<()> {
            A::export::<B>(self.0, self.1, self.2)
        }
    }
    let saved = RunCheckpoint::open(path)?;
    with_architecture(
        &saved.run.model.architecture,
        Export::<B>(&saved, out, device),
    )?;
    println!("{} → {}", saved.checkpoint.path.display(), out.display());
    Ok(())
}
