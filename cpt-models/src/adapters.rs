//! The one walk over a model's LoRA-capable linear layers, and the adapter operations built on
//! it (add, merge, drop) that every model's `cpt_core::AdapterModel` implementation delegates
//! to.
//!
//! Each model states, where its modules are defined, which of its [`Linear`] layers may carry
//! an adapter, under which parameter path (`model.layers.3.self_attn.q_proj`) and by which
//! target name `LoraSpec::target_modules` selects it (`q_proj`, `query`, `classifier`, ...).
//! An adapter's initial values are drawn from the run seed keyed by the layer's path, so adding
//! a layer or a target never changes the draws of the others.

use crate::linear::{Linear, LoraSpec};
use burn::tensor::backend::Backend;

/// The visitor of [`LoraLinears::map_linears`]: `(path, target, layer)` → the layer to put back.
pub type LinearFn<'a, B> = dyn FnMut(&str, &str, Linear<B>) -> Linear<B> + 'a;

/// A module holding linear layers that LoRA can adapt.
pub trait LoraLinears<B: Backend>: Sized {
    /// `self` with every LoRA-capable linear layer replaced by `f(path, target, layer)`, in a
    /// fixed order: `path` is the layer's parameter path (this module's own path is `prefix`,
    /// empty at the root), `target` the name a LoRA target list selects it by.
    fn map_linears(self, prefix: &str, f: &mut LinearFn<'_, B>) -> Self;
}

/// The path of the child `name` of the module at `prefix` (`""` is the root).
pub fn child(prefix: &str, name: impl std::fmt::Display) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The seed of the adapter of the layer at `path`, from the seed of the whole set of adapters.
pub fn adapter_seed(seed: u64, path: &str) -> u64 {
    cpt_core::SplitMix64::derive(seed, &[cpt_core::rng::stable_hash(path.as_bytes())]).next_u64()
}

/// `model` with a fresh adapter (see [`Linear::with_adapter`]) on every layer `spec` targets.
pub fn add_adapters<B: Backend, M: LoraLinears<B>>(model: M, spec: &LoraSpec, seed: u64) -> M {
    model.map_linears("", &mut |path, target, linear| {
        if spec.targets(target) {
            linear.with_adapter(spec, adapter_seed(seed, path))
        } else {
            linear
        }
    })
}

/// `model` with every adapter folded into its base weight and removed.
pub fn merge_adapters<B: Backend, M: LoraLinears<B>>(model: M) -> M {
    model.map_linears("", &mut |_, _, linear| linear.merged())
}

/// `model` with every adapter removed, unmerged.
pub fn drop_adapters<B: Backend, M: LoraLinears<B>>(model: M) -> M {
    model.map_linears("", &mut |_, _, linear| linear.without_adapter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny;
    use burn::backend::Flex;
    use burn::module::Module;
    use cpt_core::params::named_tensors;

    /// `(path, target)` of every walked layer, after checking that each path names a linear
    /// layer of `model` (its `.weight` is a parameter).
    fn sites<M: LoraLinears<Flex> + Module<Flex> + Clone>(model: M) -> Vec<(String, String)> {
        let names = named_tensors(&model);
        let mut sites = Vec::new();
        model.map_linears("", &mut |path, target, linear| {
            sites.push((path.to_string(), target.to_string()));
            linear
        });
        for (path, _) in &sites {
            assert!(names.contains_key(&format!("{path}.weight")), "{path}");
        }
        sites
    }

    fn has(sites: &[(String, String)], path: &str, target: &str) -> bool {
        sites.iter().any(|(p, t)| p == path && t == target)
    }

    #[test]
    fn walks_name_real_parameter_paths_and_their_targets() {
        let device = Default::default();
        let s = sites(tiny::llama().init_seeded::<Flex>(1, &device));
        assert_eq!(s.len(), 2 * 7);
        assert!(has(&s, "model.layers.1.mlp.down_proj", "down_proj"));

        let s = sites(tiny::vit().init_seeded::<Flex>(1, &device));
        assert_eq!(s.len(), 2 * 6 + 1);
        assert!(has(
            &s,
            "vit.encoder.layer.0.attention.output.dense",
            "attention_output"
        ));
        assert!(has(&s, "classifier", "classifier"));

        let s = sites(tiny::mae().init_seeded::<Flex>(1, &device));
        assert_eq!(s.len(), 3 * 6);
        assert!(has(
            &s,
            "decoder.decoder_layers.1.intermediate.dense",
            "intermediate"
        ));

        let s = sites(tiny::clip().init_seeded::<Flex>(1, &device));
        assert_eq!(s.len(), 3 * 6);
        assert!(has(
            &s,
            "vision_model.encoder.layers.1.self_attn.out_proj",
            "out_proj"
        ));
        assert!(has(&s, "text_model.encoder.layers.0.mlp.fc1", "fc1"));
    }

    #[test]
    fn one_target_list_means_the_same_projections_everywhere() {
        let spec = LoraSpec {
            rank: 1,
            alpha: 1.0,
            rslora: false,
            target_modules: vec!["q".into(), "o".into(), "fc1".into()],
            dropout: 0.0,
        };
        for (name, targeted) in [
            ("q_proj", true),
            ("o_proj", true),
            ("query", true),
            ("attention_output", true),
            ("fc1", true),
            ("out_proj", false),
            ("output", false),
            ("value", false),
            ("classifier", false),
        ] {
            assert_eq!(spec.targets(name), targeted, "{name}");
        }
    }

    #[test]
    fn adapter_seeds_depend_on_the_path_only() {
        assert_eq!(adapter_seed(7, "classifier"), adapter_seed(7, "classifier"));
        assert_ne!(adapter_seed(7, "classifier"), adapter_seed(8, "classifier"));
        assert_ne!(
            adapter_seed(7, "vit.encoder.layer.0.attention.attention.query"),
            adapter_seed(7, "vit.encoder.layer.1.attention.attention.query")
        );
    }
}
