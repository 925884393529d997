//! Helpers of the ViT, ViT-MAE and CLIP parity tests: reading the reference tensors written by
//! `scripts/make_vit_fixtures.py` and `scripts/make_clip_fixtures.py`, and collecting gradients
//! by parameter path.

#![allow(dead_code)]

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use cpt_core::params::PathStack;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hf")
        .join(name)
}

/// The reference tensors of one fixture: floats as f32, integers as i64.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    pub fn open(dir: &Path) -> Self {
        Self {
            bytes: std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors"),
        }
    }
    fn file(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    pub fn names(&self) -> Vec<String> {
        self.file().names().into_iter().map(String::from).collect()
    }
    pub fn floats(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let file = self.file();
        let view = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("no `{name}` in the reference"));
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (view.shape().to_vec(), values)
    }
    pub fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let file = self.file();
        let view = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("no `{name}` in the reference"));
        assert_eq!(view.dtype(), Dtype::I64, "{name}");
        let values = view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (view.shape().to_vec(), values)
    }
    /// A float tensor uploaded to the default device.
    pub fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
        &self,
        name: &str,
    ) -> Tensor<B, D> {
        let (shape, values) = self.floats(name);
        Tensor::from_data(
            burn::tensor::TensorData::new(values, shape),
            &Default::default(),
        )
    }
}

pub fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Gradient of every parameter of `model` that has one, by path: (burn shape, values).
pub fn gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &B::Gradients,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    struct Collector<'a, B: AutodiffBackend> {
        stack: PathStack,
        grads: &'a B::Gradients,
        out: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collector<'_, B> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(grad) = param.val().grad(self.grads) {
                let shape = grad.dims().to_vec();
                self.out.insert(self.stack.path(), (shape, values(grad)));
            }
        }
    }
    let mut collector = Collector::<B> {
        stack: PathStack::default(),
        grads,
        out: BTreeMap::new(),
    };
    model.visit(&mut collector);
    collector.out
}

/// Compare gradients with the reference's `grad.<name>` tensors (HF layout; `hf_name` maps a
/// parameter path to the fixture's name). Returns the global norm (f64 sum of squares) and the
/// largest per-parameter difference relative to max(1, the parameter's largest |gradient|).
pub fn check_gradients(
    ours: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    reference: &Reference,
    hf_name: impl Fn(&str) -> String,
) -> (f64, f32) {
    let expected: Vec<String> = reference
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("grad.").map(String::from))
        .collect();
    let mut ours_names: Vec<String> = ours.keys().map(|p| hf_name(p)).collect();
    ours_names.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        ours_names, expected_sorted,
        "parameters with gradients differ"
    );
    let mut worst = 0.0f32;
    let mut sum = 0.0f64;
    for (path, (shape, values)) in ours {
        sum += values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        let ours_hf = if cpt_models::hf_vit::transposed(path, shape) {
            cpt_models::hf_llama::transpose(&cpt_core::HostTensor {
                shape: shape.clone(),
                values: values.clone(),
            })
            .values
        } else {
            values.clone()
        };
        let (_, want) = reference.floats(&format!("grad.{}", hf_name(path)));
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        worst = worst.max(max_abs_diff(&ours_hf, &want) / scale);
    }
    (sum.sqrt(), worst)
}
