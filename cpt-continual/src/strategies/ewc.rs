//! Elastic weight consolidation ("Overcoming catastrophic forgetting in neural networks", 2017)
//! and its online variant ("Progress & Compress", 2018); with `fisher = identity`, the plain L2
//! pull toward the previous weights that "A Closer Look at Rehearsal-Free Continual Learning"
//! (2023) finds competitive.
//!
//! After each experience the diagonal Fisher is estimated as the mean squared gradient of the
//! training loss over `fisher_batches` batches of that experience, and the weights are kept as an
//! anchor. The penalty is `λ/2 · Σ_k Σ_i F_k,i (θ_i − θ*_k,i)²`: one term per past experience,
//! or, online, a single term whose Fisher decays by `γ` and whose anchor is the latest weights.

use crate::error::{ContinualError, Result};
use crate::optim::GradStore;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::{Context, InnerDevice, Strategy, StrategyState};
use crate::weights::{Weights, from_host, map_weights, snapshot, to_host};
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::params::visit_named;
use cpt_core::{NamedTensors, StepOutput, TaskModel};
use serde::{Deserialize, Serialize};

/// How the importance of each weight is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FisherKind {
    /// Mean squared gradient (EWC).
    Empirical,
    /// Every weight equally important: an L2 pull toward the anchor.
    Identity,
}

/// EWC settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EwcConfig {
    /// Penalty strength λ.
    pub lambda: f64,
    /// Batches of the finished experience used to estimate the Fisher.
    pub fisher_batches: usize,
    /// Keep one anchor and a decayed Fisher instead of one term per experience.
    pub online: bool,
    /// Online decay γ of the accumulated Fisher.
    pub gamma: f64,
    /// Fisher or identity.
    pub fisher: FisherKind,
}

/// One consolidated experience: importance and anchor.
struct Term<B: AutodiffBackend> {
    fisher: Weights<B>,
    anchor: Weights<B>,
}

/// The EWC strategy.
pub struct Ewc<B: AutodiffBackend> {
    config: EwcConfig,
    terms: Vec<Term<B>>,
    name: &'static str,
}

impl<B: AutodiffBackend> Ewc<B> {
    /// EWC (or L2, with [`FisherKind::Identity`]).
    pub fn new(config: EwcConfig) -> Self {
        let name = if config.fisher == FisherKind::Identity {
            "l2"
        } else {
            "ewc"
        };
        Self {
            config,
            terms: Vec::new(),
            name,
        }
    }

    /// The diagonal Fisher of each consolidated term (for tests and reports).
    pub fn fishers(&self) -> Vec<&Weights<B>> {
        self.terms.iter().map(|t| &t.fisher).collect()
    }

    /// The anchors of each term.
    pub fn anchors(&self) -> Vec<&Weights<B>> {
        self.terms.iter().map(|t| &t.anchor).collect()
    }
}

/// Mean squared gradient of `model`'s training loss over `batches` batches drawn from `next`.
pub fn estimate_fisher<B, M>(
    model: &M,
    batches: usize,
    next: &mut dyn FnMut() -> Result<M::Batch>,
) -> Result<Weights<B>>
where
    B: AutodiffBackend,
    M: TaskModel<B> + AutodiffModule<B>,
{
    let mut sum: Weights<B> = Weights::<B>::new();
    for _ in 0..batches {
        let batch = next()?;
        let loss = model.forward_step(&batch).loss;
        let mut grads = GradStore::<B>::default();
        grads.accumulate(model, &loss.backward());
        for (path, grad) in grads.iter() {
            let square = grad.clone().square();
            let total = match sum.remove(path) {
                Some(previous) => previous + square,
                None => square,
            };
            sum.insert(path.to_string(), total);
        }
    }
    Ok(map_weights::<B>(&sum, |_, s| {
        s.clone().div_scalar(batches.max(1) as f64)
    }))
}

impl<B, M> Strategy<B, M> for Ewc<B>
where
    B: AutodiffBackend,
    M: TaskModel<B> + AutodiffModule<B>,
{
    fn name(&self) -> &str {
        self.name
    }

    fn penalty(&self, model: &M, _batch: &M::Batch, _out: &StepOutput<B>) -> Option<Tensor<B, 1>> {
        if self.terms.is_empty() {
            return None;
        }
        let mut total: Option<Tensor<B, 1>> = None;
        visit_named(model, |path, param, _| {
            for term in &self.terms {
                let (Some(fisher), Some(anchor)) = (term.fisher.get(path), term.anchor.get(path))
                else {
                    continue;
                };
                let diff = param.val() - Tensor::from_inner(anchor.clone());
                let weighted = (Tensor::from_inner(fisher.clone()) * diff.square()).sum();
                total = Some(match total.take() {
                    Some(t) => t + weighted,
                    None => weighted,
                });
            }
        });
        total.map(|t| t.mul_scalar(self.config.lambda / 2.0))
    }

    fn after_experience(&mut self, cx: &mut Context<'_, B, M>) -> Result<()> {
        let anchor = snapshot::<B, M>(cx.model);
        let fisher = match self.config.fisher {
            FisherKind::Identity => map_weights::<B>(&anchor, |_, w| w.ones_like()),
            FisherKind::Empirical => {
                estimate_fisher::<B, M>(cx.model, self.config.fisher_batches, cx.next_batch)?
            }
        };
        if self.config.online {
            let gamma = self.config.gamma;
            let fisher = match self.terms.pop() {
                Some(old) => map_weights::<B>(&fisher, |path, f| match old.fisher.get(path) {
                    Some(previous) => previous.clone().mul_scalar(gamma) + f.clone(),
                    None => f.clone(),
                }),
                None => fisher,
            };
            self.terms.push(Term { fisher, anchor });
        } else {
            self.terms.push(Term { fisher, anchor });
        }
        Ok(())
    }

    fn state(&self) -> StrategyState {
        let mut tensors = NamedTensors::new();
        for (k, term) in self.terms.iter().enumerate() {
            to_host::<B>(&term.fisher, &format!("{k}.fisher"), &mut tensors);
            to_host::<B>(&term.anchor, &format!("{k}.anchor"), &mut tensors);
        }
        StrategyState {
            json: serde_json::json!({ "terms": self.terms.len() }),
            tensors,
        }
    }

    fn load_state(&mut self, state: StrategyState, device: &InnerDevice<B>) -> Result<()> {
        let count = state
            .json
            .get("terms")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ContinualError::Strategy {
                strategy: self.name.into(),
                message: "checkpoint lacks `terms`".into(),
            })?;
        self.terms.clear();
        for k in 0..count {
            let fisher = from_host::<B>(&state.tensors, &format!("{k}.fisher"), device);
            let anchor = from_host::<B>(&state.tensors, &format!("{k}.anchor"), device);
            self.terms.push(Term { fisher, anchor });
        }
        Ok(())
    }
}

/// The `[ewc]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EwcSettings {
    /// Penalty strength λ.
    pub lambda: f64,
    /// Batches used to estimate the Fisher after each experience.
    pub fisher_batches: usize,
    /// Online EWC: one anchor, Fisher decayed by `gamma`.
    pub online: bool,
    /// Decay of the accumulated Fisher (online only).
    pub gamma: f64,
}

impl Default for EwcSettings {
    fn default() -> Self {
        Self {
            lambda: 100.0,
            fisher_batches: 8,
            online: false,
            gamma: 1.0,
        }
    }
}

impl EwcSettings {
    fn config(&self, fisher: FisherKind, lambda: f64) -> EwcConfig {
        EwcConfig {
            lambda,
            fisher_batches: self.fisher_batches,
            online: self.online,
            gamma: self.gamma,
            fisher,
        }
    }
}

impl StrategySettings for EwcSettings {
    const NAME: &'static str = "ewc";

    fn build<B, M>(self, _cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        Ok(Box::new(Ewc::<B>::new(
            self.config(FisherKind::Empirical, self.lambda),
        )))
    }
}

/// The `[l2]` table: EWC with unit importance. Its anchoring (online, γ) follows `[ewc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2Settings {
    /// Penalty strength λ.
    pub lambda: f64,
}

impl Default for L2Settings {
    fn default() -> Self {
        Self { lambda: 1.0 }
    }
}

impl StrategySettings for L2Settings {
    const NAME: &'static str = "l2";

    fn build<B, M>(self, cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        let ewc = crate::registry::settings::<EwcSettings>(cx.run)?;
        Ok(Box::new(Ewc::<B>::new(
            ewc.config(FisherKind::Identity, self.lambda),
        )))
    }
}
