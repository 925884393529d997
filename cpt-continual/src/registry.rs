//! The strategy registry: the one list of strategies a run config may name.
//!
//! Each strategy's file owns its settings type: a serde struct with its defaults that
//! implements [`StrategySettings`] (its name, the checks serde cannot make, how to build the
//! strategy). The run config keeps every `[name]` table opaque
//! ([`RunConfig::strategy_settings`]); this module reads each through its settings type, so an
//! unknown key is an error naming it, and writes the resolved values back for the run
//! directory. Adding a strategy is its file plus one line in [`registry!`] below.

use crate::error::{ContinualError, Result};
use crate::strategies::{
    DistillSettings, EmaSettings, EwcSettings, L2Settings, LoraMode, LoraSettings, MergeSettings,
    NaiveSettings, ReplaySettings, SlowLearnerSettings, WeightEnsembleSettings, WiseSettings,
};
use crate::strategy::{ItemOf, Strategy};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::rng::domain;
use cpt_core::{AdapterModel, ItemSource, LoraSpec, RunConfig, SplitMix64, TaskModel};
use serde::{Serialize, de::DeserializeOwned};

/// What a model must offer for every registered strategy to apply to it: training, an
/// inference twin with the same batches (teachers, evaluation) and LoRA adapters.
pub trait ContinualModel<B: AutodiffBackend>:
    TaskModel<B> + AutodiffModule<B> + AdapterModel<Spec = LoraSpec> + 'static
where
    Self::InnerModule: TaskModel<B::InnerBackend, Batch = Self::Batch>,
{
}

impl<B, M> ContinualModel<B> for M
where
    B: AutodiffBackend,
    M: TaskModel<B> + AutodiffModule<B> + AdapterModel<Spec = LoraSpec> + 'static,
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
}

/// A strategy's settings: the `[name]` table of a run config, and how to build the strategy.
pub trait StrategySettings: Serialize + DeserializeOwned + Default {
    /// The strategy's name in `strategies = [...]`, and the name of its settings table.
    const NAME: &'static str;

    /// Check what serde cannot; `Err((key, message))` names the key inside the table.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        Ok(())
    }

    /// The strategy these settings describe, built with what the run provides.
    fn build<B, M>(self, cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>;
}

/// What building a strategy may draw on besides its own settings.
pub struct BuildContext<'a, B: AutodiffBackend, M: TaskModel<B>> {
    /// The run config: other strategies' settings, `[[param_groups]]`, the seed.
    pub run: &'a RunConfig,
    /// The strategy's position in `strategies` (its seed derives from it).
    pub position: usize,
    /// Reference data for distillation (`distill.reference`); the first `distill` takes it.
    pub reference: &'a mut Option<Box<dyn ItemSource<ItemOf<B, M>>>>,
    /// Projections `lora.target_modules` may name in this architecture.
    pub lora_targets: &'a [&'a str],
}

impl<B: AutodiffBackend, M: TaskModel<B>> BuildContext<'_, B, M> {
    /// This strategy's seed: a sub-stream of the run seed keyed by its position.
    pub fn seed(&self) -> u64 {
        SplitMix64::derive(self.run.seed, &[domain::STRATEGY, self.position as u64]).next_u64()
    }
}

/// The settings of strategy `S` in `run`: its table read through `S`, defaults for what it
/// leaves out.
pub fn settings<S: StrategySettings>(run: &RunConfig) -> Result<S> {
    let table = run
        .strategy_settings
        .get(S::NAME)
        .cloned()
        .unwrap_or_default();
    let settings: S = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ContinualError::invalid(S::NAME, e.message()))?;
    settings.check().map_err(|(key, message)| {
        ContinualError::invalid(format!("{}.{key}", S::NAME), &message)
    })?;
    Ok(settings)
}

/// Replace `S`'s table with its resolved settings (every default written out), so the run
/// directory's config says exactly what ran.
fn resolve<S: StrategySettings>(run: &mut RunConfig) -> Result<()> {
    let resolved = toml::Table::try_from(settings::<S>(run)?).expect("settings serialise");
    if resolved.is_empty() {
        run.strategy_settings.remove(S::NAME);
    } else {
        run.strategy_settings.insert(S::NAME.to_string(), resolved);
    }
    Ok(())
}

fn build_one<S, B, M>(cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
where
    S: StrategySettings,
    B: AutodiffBackend,
    M: ContinualModel<B>,
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
    settings::<S>(cx.run)?.build(cx)
}

/// The registry: every strategy's settings type, in the order `cpt` lists them.
macro_rules! registry {
    ($($settings:ty),+ $(,)?) => {
        /// Names `strategies = [...]` accepts.
        pub const STRATEGIES: &[&str] = &[$(<$settings as StrategySettings>::NAME),+];

        fn resolve_all(run: &mut RunConfig) -> Result<()> {
            $(resolve::<$settings>(run)?;)+
            Ok(())
        }

        fn build_named<B, M>(
            name: &str,
            cx: &mut BuildContext<'_, B, M>,
        ) -> Option<Result<Box<dyn Strategy<B, M>>>>
        where
            B: AutodiffBackend,
            M: ContinualModel<B>,
            M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
        {
            $(if name == <$settings as StrategySettings>::NAME {
                return Some(build_one::<$settings, B, M>(cx));
            })+
            None
        }
    };
}

registry! {
    NaiveSettings,
    ReplaySettings,
    EwcSettings,
    L2Settings,
    DistillSettings,
    EmaSettings,
    WiseSettings,
    MergeSettings,
    WeightEnsembleSettings,
    LoraSettings,
    SlowLearnerSettings,
}

fn unknown_strategy(name: &str) -> ContinualError {
    ContinualError::invalid(
        "strategies",
        &format!(
            "unknown strategy `{name}` (known: {})",
            STRATEGIES.join(", ")
        ),
    )
}

/// Check every strategy settings table of `run` and write each registered strategy's settings
/// out in full. A table no strategy owns is an unknown key.
pub fn resolve_settings(run: &mut RunConfig) -> Result<()> {
    if let Some(name) = run
        .strategy_settings
        .keys()
        .find(|name| !STRATEGIES.contains(&name.as_str()))
    {
        return Err(ContinualError::invalid(
            name.clone(),
            &format!(
                "unknown key (neither a config section nor a strategy; strategies: {})",
                STRATEGIES.join(", ")
            ),
        ));
    }
    if let Some(name) = run
        .strategies
        .iter()
        .find(|name| !STRATEGIES.contains(&name.as_str()))
    {
        return Err(unknown_strategy(name));
    }
    resolve_all(run)
}

/// The strategies of `run`, in config order. Everything model-specific comes from the
/// architecture: `reference` data for distillation and the projections LoRA may target.
pub fn build_strategies<B, M>(
    run: &RunConfig,
    reference: Option<Box<dyn ItemSource<ItemOf<B, M>>>>,
    lora_targets: &[&str],
) -> Result<Vec<Box<dyn Strategy<B, M>>>>
where
    B: AutodiffBackend,
    M: ContinualModel<B>,
    M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
{
    // A teacher snapshot taken while LoRA adapters are live holds adapter weights; on resume it
    // is restored into the model structure as rebuilt so far, so `lora` (which re-attaches the
    // adapters) must be rebuilt first. Refuse the other order rather than resume wrongly.
    let position = |name: &str| run.strategies.iter().position(|s| s == name);
    if let (Some(d), Some(l)) = (
        position(DistillSettings::NAME),
        position(LoraSettings::NAME),
    ) && d < l
    {
        let mode = settings::<LoraSettings>(run)?.mode;
        if mode != LoraMode::Merge {
            return Err(ContinualError::invalid(
                "strategies",
                &format!(
                    "list `lora` before `distill` when `lora.mode` is `{}` (the teacher holds the adapters, which must exist before it is restored on resume)",
                    mode.as_str()
                ),
            ));
        }
    }
    let mut reference = reference;
    run.strategies
        .iter()
        .enumerate()
        .map(|(position, name)| {
            let mut cx = BuildContext {
                run,
                position,
                reference: &mut reference,
                lora_targets,
            };
            build_named(name, &mut cx).unwrap_or_else(|| Err(unknown_strategy(name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::ReplaySettings;
    use std::collections::BTreeSet;

    const RUN: &str = r#"
seed = 1
strategies = ["replay", "lora"]
[model]
config = { vocab_size = 8 }
[data]
tokenizer = "t.json"
seq_len = 4
[[experiences]]
name = "a"
train = ["a.parquet"]
eval = ["a_eval.parquet"]
steps = 2
[train]
batch_size = 2
[schedule]
kind = "constant"
peak_lr = 0.01
"#;

    fn resolved(extra: &str) -> Result<RunConfig> {
        let text = format!("{RUN}{extra}");
        let mut run = RunConfig::parse(&text, std::path::Path::new("run.toml"), &[]).unwrap();
        resolve_settings(&mut run)?;
        Ok(run)
    }

    #[test]
    fn settings_resolve_to_their_defaults_and_round_trip() {
        let run = resolved("[replay]\nratio = 0.5\n").unwrap();
        let replay: ReplaySettings = settings(&run).unwrap();
        assert_eq!((replay.capacity, replay.ratio), (1024, 0.5));
        // Every default is written out, so the run directory's config says what ran.
        assert_eq!(run.strategy_settings["lora"]["rank"].as_integer(), Some(8));
        assert_eq!(
            run.strategy_settings["lora"]["mode"].as_str(),
            Some("merge")
        );
        let again = RunConfig::parse(&run.to_toml(), std::path::Path::new("r"), &[]).unwrap();
        assert_eq!(again, run);
    }

    #[test]
    fn bad_settings_are_errors_naming_the_key() {
        let cases = [
            ("[replay]\ncapasity = 3\n", "capasity"),
            ("[repaly]\ncapacity = 3\n", "repaly"),
            ("[replay]\nratio = 1.5\n", "replay.ratio"),
            ("[lora]\nmode = \"sometimes\"\n", "sometimes"),
            ("[lora]\nrank = 0\n", "lora.rank"),
            ("[distill]\nfeature_distance = \"l3\"\n", "l3"),
        ];
        for (extra, needle) in cases {
            let message = resolved(extra).unwrap_err().to_string();
            assert!(message.contains(needle), "`{needle}` not in: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
        let mut run = resolved("").unwrap();
        run.strategies.push("repaly".into());
        let message = resolve_settings(&mut run).unwrap_err().to_string();
        assert!(message.contains("unknown strategy `repaly`"), "{message}");
    }

    /// Every `const NAME` a strategy file declares must be in the registry, and every file of
    /// `src/strategies/` must declare one: a strategy added without its registry line fails here.
    #[test]
    fn every_strategy_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/strategies");
        let mut declared = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "mod.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let names: Vec<String> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("const NAME: &'static str = \""))
                .filter_map(|rest| rest.split('"').next().map(str::to_string))
                .collect();
            assert!(
                !names.is_empty(),
                "{} declares no strategy settings (`impl StrategySettings` with `const NAME`)",
                path.display()
            );
            declared.extend(names);
        }
        let registered: BTreeSet<String> = STRATEGIES.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            declared, registered,
            "strategy files and the registry disagree: add the settings type to `registry!`"
        );
    }
}
