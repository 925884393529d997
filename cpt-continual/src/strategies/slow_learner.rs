//! Parameter groups with their own learning-rate multipliers ("SLCA: Slow Learner with
//! Classifier Alignment for Continual Learning on a Pre-trained Model", 2023): e.g. the
//! backbone ×0.1 and the head ×1, or a multiplier 0 that freezes a part of the model.

use crate::error::Result;
use crate::registry::{BuildContext, ContinualModel, StrategySettings};
use crate::strategy::Strategy;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::TaskModel;

/// Learning-rate multipliers chosen by parameter-path patterns; the first matching pattern
/// wins, unmatched parameters keep ×1.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowLearner {
    groups: Vec<(String, f64)>,
}

impl SlowLearner {
    /// Groups of (`pattern`, multiplier). A pattern matches a whole dotted path, `*` standing
    /// for any run of characters (`model.layers.*.mlp.*`, `*embed_tokens*`).
    pub fn new(groups: Vec<(String, f64)>) -> Self {
        Self { groups }
    }

    /// The multiplier of the parameter at `path`.
    pub fn scale_of(&self, path: &str) -> f64 {
        self.groups
            .iter()
            .find(|(pattern, _)| glob_match(pattern, path))
            .map_or(1.0, |(_, s)| *s)
    }
}

/// Whole-string match of `pattern` (with `*` wildcards) against `text`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl<B: AutodiffBackend, M: TaskModel<B>> Strategy<B, M> for SlowLearner {
    fn name(&self) -> &str {
        "slow_learner"
    }

    fn lr_scale(&self, path: &str) -> f64 {
        self.scale_of(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_paths() {
        assert!(glob_match(
            "model.embed_tokens.weight",
            "model.embed_tokens.weight"
        ));
        assert!(glob_match("*embed_tokens*", "model.embed_tokens.weight"));
        assert!(glob_match(
            "model.layers.*.mlp.*",
            "model.layers.10.mlp.up_proj.weight"
        ));
        assert!(!glob_match(
            "model.layers.*.mlp.*",
            "model.layers.1.self_attn.q_proj.weight"
        ));
        assert!(!glob_match("lm_head", "lm_head.weight"));
        assert!(!glob_match("a*b*a", "ab"));
    }

    #[test]
    fn first_matching_group_wins() {
        let s = SlowLearner::new(vec![("lm_head.*".into(), 1.0), ("*".into(), 0.1)]);
        assert_eq!(s.scale_of("lm_head.weight"), 1.0);
        assert_eq!(s.scale_of("model.norm.weight"), 0.1);
    }
}

/// `slow_learner` reads its groups from the run's `[[param_groups]]`; it has no table of its own.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowLearnerSettings {}

impl StrategySettings for SlowLearnerSettings {
    const NAME: &'static str = "slow_learner";

    fn build<B, M>(self, cx: &mut BuildContext<'_, B, M>) -> Result<Box<dyn Strategy<B, M>>>
    where
        B: AutodiffBackend,
        M: ContinualModel<B>,
        M::InnerModule: TaskModel<B::InnerBackend, Batch = M::Batch>,
    {
        let groups: Vec<(String, f64)> = cx
            .run
            .param_groups
            .iter()
            .map(|g| (g.pattern.clone(), g.lr_scale))
            .collect();
        if groups.is_empty() {
            return Err(crate::ContinualError::invalid(
                "param_groups",
                "`slow_learner` needs at least one [[param_groups]] entry",
            ));
        }
        Ok(Box::new(SlowLearner::new(groups)))
    }
}
