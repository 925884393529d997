//! LoRA continual pre-training ("LoRA: Low-Rank Adaptation of Large Language Models", 2021):
//! the base weights are frozen and only low-rank adapters train. Across experiences an adapter
//! is either kept training (`continue`), merged into the base at each experience end with a
//! fresh one started (`merge`), or kept one per experience (`per_experience`: each is saved
//! when the next experience starts).

use crate::error::{ContinualError, Result};
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, from_host, snapshot, to_host};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::{ADAPTER_MARKER, AdapterModel, LoraSpec, NamedTensors, SplitMix64, TaskModel};
use serde::{Deserialize, Serialize};

/// What happens to the adapter when an experience ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraMode {
    /// One adapter trains through the whole stream.
    Continue,
    /// Merge into the base after each experience; a fresh adapter for the next.
    Merge,
    /// A fresh adapter per experience; finished ones are kept (not merged).
    PerExperience,
}

impl LoraMode {
    /// The name written in `lora.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Merge => "merge",
            Self::PerExperience => "per_experience",
        }
    }
}

/// The LoRA strategy.
pub struct Lora<B: AutodiffBackend, M: AdapterModel> {
    spec: M::Spec,
    mode: LoraMode,
    seed: u64,
    active: bool,
    saved: Vec<Weights<B>>,
}

impl<B: AutodiffBackend, M: AdapterModel> Lora<B, M> {
    /// Adapters described by `spec`, handled per `mode`, initialised from `seed`.
    pub fn new(spec: M::Spec, mode: LoraMode, seed: u64) -> Self {
        Self {
            spec,
            mode,
            seed,
            active: false,
            saved: Vec::new(),
        }
    }

    /// Adapters of finished experiences (`per_experience` mode), oldest first.
    pub fn saved_adapters(&self) -> &[Weights<B>] {
        &self.saved
    }
}

fn adapters_of<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Weights<B> {
    snapshot::<B, M>(model)
        .into_iter()
        .filter(|(path, _)| path.contains(ADAPTER_MARKER))
        .collect()
}

impl<B, M> Strategy<B, M> for Lora<B, M>
where
    B: AutodiffBackend,
    M: TaskModel<B> + AutodiffModule<B> + AdapterModel,
{
    fn name(&self) -> &str {
        "lora"
    }

    fn before_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        if self.mode == LoraMode::PerExperience && self.active {
            self.saved.push(adapters_of::<B, M>(cx.model));
            *cx.model = cx.model.clone().drop_adapters();
            self.active = false;
        }
        if !self.active {
            let seed = SplitMix64::derive(self.seed, &[cx.experience as u64]).next_u64();
            *cx.model = cx.model.clone().with_adapters(&self.spec, seed);
            cx.reset_optimizer.push(ADAPTER_MARKER.to_string());
            self.active = true;
        }
        Ok(())
    }

    fn lr_scale(&self, path: &str) -> f64 {
        // The base is frozen: only adapter parameters move.
        if path.contains(ADAPTER_MARKER) {
            1.0
        } else {
            0.0
        }
    }

    fn after_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        if self.mode == LoraMode::Merge && self.active {
            *cx.model = cx.model.clone().merge_adapters();
            self.active = false;
        }
        Ok(())
    }

    fn rebuild_model(&self, model: M) -> M {
        // Any adapter values do: the checkpointed weights overwrite them.
        if self.active {
            model.with_adapters(&self.spec, 0)
        } else {
            model
        }
    }

    fn state(&self) -> StrategyState {
        let mut tensors = NamedTensors::new();
        for (k, adapter) in self.saved.iter().enumerate() {
            to_host::<B>(adapter, &format!("saved.{k}"), &mut tensors);
        }
        StrategyState {
            json: serde_json::json!({ "active": self.active, "saved": self.saved.len() }),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        let bad = || ContinualError::Strategy {
            strategy: "lora".into(),
            message: "checkpoint lacks `active`/`saved`".into(),
        };
        self.active = state
            .json
            .get("active")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(bad)?;
        let saved = state
            .json
            .get("saved")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(bad)?;
        self.saved = (0..saved)
            .map(|k| from_host::<B>(&state.tensors, &format!("saved.{k}"), device))
            .collect();
        Ok(())
    }
}

/// The `[lora]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSettings {
    /// Adapter rank r.
    pub rank: usize,
    /// Scale numerator α (scale α/r, or α/√r with `rslora`).
    pub alpha: f64,
    /// Rank-stabilised scaling α/√r.
    pub rslora: bool,
    /// Dropout on the adapters' input during training.
    pub dropout: f64,
    /// Projections that get adapters, by the architecture's names (LLaMA: `q`, `k`, `v`, `o`,
    /// `gate`, `up`, `down`).
    pub target_modules: Vec<String>,
    /// Per experience: `continue` one adapter, `merge` it and start fresh, or keep one
    /// `per_experience`.
    pub mode: LoraMode,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            rslora: false,
            dropout: 0.0,
            target_modules: vec!["q".into(), "v".into()],
            mode: LoraMode::Merge,
        }
    }
}

impl LoraSettings {
    /// The adapter spec, its targets checked against the projections `known` to the
    /// `architecture`.
    pub fn spec(&self, known: &[&str], architecture: &str) -> Result<LoraSpec> {
        if let Some(bad) = self
            .target_modules
            .iter()
            .find(|t| !known.contains(&t.trim_end_matches("_proj")))
        {
            return Err(ContinualError::invalid(
                "lora.target_modules",
                &format!(
                    "unknown module `{bad}` (known for `{architecture}`: {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(LoraSpec {
            rank: self.rank,
            alpha: self.alpha,
            rslora: self.rslora,
            target_modules: self.target_modules.clone(),
            dropout: self.dropout,
        })
    }
}

impl StrategySettings for LoraSettings {
    const NAME: &'static str = "lora";

    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.rank == 0 {
            return Err(("rank", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(("dropout", "must lie in [0, 1)".into()));
        }
        Ok(())
    }

    fn build<B, M>(self, cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        let spec = self.spec(cx.lora_targets, &cx.run.model.architecture)?;
        Ok(Box::new(Lora::<B, M>::new(spec, self.mode, cx.seed())))
    }
}
