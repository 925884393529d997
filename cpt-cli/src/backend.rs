//! The one place that turns a backend name into a concrete burn backend.
//!
//! Every command that runs a model implements [`BackendJob`]; [`dispatch`] monomorphises it for
//! the chosen backend among those compiled in.

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use clap::ValueEnum;
use cpt_core::config::ActivationCheckpointing;
use cpt_core::memory::DeviceMemoryProbe;
use cpt_core::{FusedOps, TrainBackend};

/// A burn backend cpt can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// burn's pure-Rust CPU backend (feature `flex`, on by default).
    Flex,
    /// WebGPU/Vulkan/Metal through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

impl BackendChoice {
    /// The backends this binary was compiled with, default first.
    pub fn compiled() -> Vec<BackendChoice> {
        let mut out = Vec::new();
        if cfg!(feature = "flex") {
            out.push(Self::Flex);
        }
        if cfg!(feature = "wgpu") {
            out.push(Self::Wgpu);
        }
        if cfg!(feature = "cuda") {
            out.push(Self::Cuda);
        }
        out
    }

    /// The default: the first compiled backend.
    pub fn default_compiled() -> Option<BackendChoice> {
        Self::compiled().into_iter().next()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }
}

/// How the device memory of `choice` (or the default backend) is read: the allocator's
/// counters on GPU backends, [`cpt_core::memory::no_device_memory`] on the CPU.
///
/// Jobs run on the backend's default device, which is the one probed. cubecl keeps a memory pool
/// per stream (per calling thread): the probe reads the pool of the thread that calls it, which
/// for a trainer is the thread that trains.
pub fn device_memory_probe(choice: Option<BackendChoice>) -> DeviceMemoryProbe {
    match choice.or_else(BackendChoice::default_compiled) {
        #[cfg(feature = "wgpu")]
        Some(BackendChoice::Wgpu) => cube_memory::<burn::cubecl::wgpu::WgpuRuntime>,
        #[cfg(feature = "cuda")]
        Some(BackendChoice::Cuda) => cube_memory::<burn::cubecl::cuda::CudaRuntime>,
        _ => cpt_core::memory::no_device_memory,
    }
}

/// The memory counters of a cubecl runtime's default device; `None` if the runtime cannot
/// report them.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn cube_memory<R: burn::cubecl::Runtime>() -> Option<cpt_core::memory::DeviceMemory>
where
    R::Device: Default,
{
    let usage = R::client(&Default::default()).memory_usage().ok()?;
    Some(cpt_core::memory::DeviceMemory {
        in_use: usage.bytes_in_use,
        reserved: usage.bytes_reserved,
    })
}

/// Refuse a mixed precision whose low-precision dtype backend `B` cannot compute in on `device`
/// (bf16 through wgpu's Vulkan drivers, say), naming the setting (`key`) to change: without this
/// the first matrix product would panic deep inside the backend.
pub fn check_precision<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    precision: cpt_core::Precision,
    key: &str,
) -> Result<()> {
    if let Some(dtype) = precision.compute_dtype()
        && !B::supports_dtype(device, dtype.into())
    {
        bail!(
            "{key} = \"{}\": this backend's device has no {dtype:?} arithmetic; use fp32{}",
            precision.name(),
            if precision == cpt_core::Precision::F16Mixed {
                ""
            } else {
                " (or f16-mixed where the device has float16)"
            }
        );
    }
    Ok(())
}

/// Work that needs a concrete backend.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Run on backend `B` (with autodiff) and `device`.
    fn run<B: TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<Self::Output>;
}

/// Run `job` on `choice` (or the default backend), without activation checkpointing: for
/// commands that only evaluate or convert, so the training stack is not compiled twice for them.
pub fn dispatch<J: BackendJob>(choice: Option<BackendChoice>, job: J) -> Result<J::Output> {
    on_backend(choice, KeepActivations, job)
}

/// Run a training `job` on `choice` (or the default backend) with `checkpointing`.
///
/// `balanced` is burn's `BalancedCheckpointing`: the autodiff graph keeps the outputs of
/// compute-bound operations and recomputes memory-bound ones during the backward pass. Each
/// strategy is a separate instantiation of the whole training stack, which is why only the
/// commands that train (`cpt run`, `cpt bench`) come here.
pub fn dispatch_training<J: BackendJob>(
    choice: Option<BackendChoice>,
    checkpointing: ActivationCheckpointing,
    job: J,
) -> Result<J::Output> {
    tracing::info!("activation checkpointing: {}", checkpointing.name());
    if checkpointing == ActivationCheckpointing::Layers {
        crate::return_freed_pages();
    }
    on_backend(choice, checkpointing, job)
}

/// How a job is instantiated over an inner backend: which autodiff checkpoint strategy wraps it.
trait Autodiffs<J: BackendJob> {
    fn run<B: FusedOps>(self, job: J) -> Result<J::Output>;
}

/// burn's default: every activation the backward pass reads is kept.
struct KeepActivations;

impl<J: BackendJob> Autodiffs<J> for KeepActivations {
    fn run<B: FusedOps>(self, job: J) -> Result<J::Output> {
        job.run::<Autodiff<B>>(Default::default())
    }
}

impl<J: BackendJob> Autodiffs<J> for ActivationCheckpointing {
    fn run<B: FusedOps>(self, job: J) -> Result<J::Output> {
        match self {
            ActivationCheckpointing::None => KeepActivations.run::<B>(job),
            // `layers` is the same autodiff; the trainer's recompute scope makes the
            // difference (cpt_core::fused::recompute).
            ActivationCheckpointing::Balanced | ActivationCheckpointing::Layers => {
                job.run::<Autodiff<B, BalancedCheckpointing>>(Default::default())
            }
        }
    }
}

/// The one `match` from a backend name to a concrete backend.
fn on_backend<J: BackendJob, A: Autodiffs<J>>(
    choice: Option<BackendChoice>,
    autodiff: A,
    job: J,
) -> Result<J::Output> {
    let Some(choice) = choice.or_else(BackendChoice::default_compiled) else {
        bail!(
            "this cpt binary was built without any backend; rebuild with --features flex, wgpu or cuda"
        )
    };
    tracing::info!("backend: {}", choice.name());
    match choice {
        #[cfg(feature = "flex")]
        BackendChoice::Flex => autodiff.run::<burn::backend::Flex>(job),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => autodiff.run::<burn::backend::Wgpu>(job),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => autodiff.run::<burn::backend::Cuda>(job),
        #[allow(unreachable_patterns)]
        other => {
            let compiled: Vec<&str> = BackendChoice::compiled()
                .into_iter()
                .map(BackendChoice::name)
                .collect();
            bail!(
                "backend `{}` is not compiled into this binary (compiled: {}); rebuild with `cargo build --release -p cpt-cli --features {}`",
                other.name(),
                compiled.join(", "),
                other.name()
            )
        }
    }
}
