//! The one place that turns a backend name into a concrete burn backend.
//!
//! Every command that runs a model implements [`BackendJob`]; [`dispatch`] monomorphises it for
//! the chosen backend among those compiled in.

use anyhow::{Result, bail};
use clap::ValueEnum;
use cpt_core::TrainBackend;

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

/// Work that needs a concrete backend.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Run on backend `B` (with autodiff) and `device`.
    fn run<B: TrainBackend>(self, device: burn::tensor::Device<B>) -> Result<Self::Output>;
}

/// Run `job` on `choice` (or the default backend).
pub fn dispatch<J: BackendJob>(choice: Option<BackendChoice>, job: J) -> Result<J::Output> {
    let Some(choice) = choice.or_else(BackendChoice::default_compiled) else {
        bail!(
            "this cpt binary was built without any backend; rebuild with --features flex, wgpu or cuda"
        )
    };
    tracing::info!("backend: {}", choice.name());
    match choice {
        #[cfg(feature = "flex")]
        BackendChoice::Flex => {
            job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        }
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => {
            job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default())
        }
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(Default::default())
        }
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
