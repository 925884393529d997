//! Numerical parity with Hugging Face transformers (PyTorch) on tiny random LLaMA models whose
//! weights and reference outputs were written by `scripts/make_hf_fixtures.py`
//! (tests/fixtures/hf/). Logits, loss, gradients, one AdamW step, greedy generation and
//! continuation log-probabilities; and export → import is bit-exact.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use cpt_continual::{AdamW, AdamWConfig, GradStore};
use cpt_core::params::named_tensors;
use cpt_models::generate::{Sampling, generate};
use cpt_models::hf_llama::{hf_tensors, load_llama, save_llama, transpose, transposed};
use cpt_models::llama::causal_lm_loss;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

type A = Autodiff<Flex>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf")
}

const FULL: &[&str] = &[
    "llama-gqa-untied",
    "llama-tied-theta",
    "llama-bias",
    "llama-rope-llama3",
    "llama-rope-linear",
    "llama-rope-dynamic",
    "llama-rope-yarn",
];

/// The reference tensors of one fixture: floats as f32, integers as i64.
struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn open(dir: &Path) -> Self {
        Self {
            bytes: std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors"),
        }
    }
    fn file(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn has(&self, name: &str) -> bool {
        self.file().names().contains(&name)
    }
    fn floats(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
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
    fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
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
}

fn tokens<B: burn::tensor::backend::Backend>(shape: &[usize], ids: &[i64]) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(ids.to_vec(), [shape[0], shape[1]]),
        &Default::default(),
    )
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn logits_match_transformers() {
    let mut variants: Vec<&str> = FULL.to_vec();
    variants.push("llama-sharded-bf16");
    for name in variants {
        let dir = fixtures().join(name);
        let (_, model) =
            load_llama::<Flex>(&dir, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = Reference::open(&dir);
        let (shape, ids) = reference.ints("input_ids");
        let logits = model.forward(tokens(&shape, &ids));
        let got = logits.into_data().into_vec::<f32>().unwrap();
        let diff = max_abs_diff(&got, &reference.floats("logits").1);
        assert!(diff <= 1e-4, "{name}: logits differ by {diff}");
        let loss = {
            let logits = model.forward(tokens(&shape, &ids));
            causal_lm_loss(logits, tokens(&shape, &ids)).into_scalar() as f64
        };
        let want = reference.floats("loss").1[0] as f64;
        assert!(
            relative(loss, want) <= 1e-5,
            "{name}: loss {loss} vs {want}"
        );
    }
}

#[test]
fn gradients_and_one_adamw_step_match_torch() {
    for name in FULL {
        let dir = fixtures().join(name);
        let (_, model) = load_llama::<A>(&dir, &Default::default()).unwrap();
        let reference = Reference::open(&dir);
        let (shape, ids) = reference.ints("input_ids");
        let logits = model.forward(tokens(&shape, &ids));
        let loss = causal_lm_loss(logits, tokens(&shape, &ids));
        let mut grads = GradStore::<A>::default();
        grads.accumulate(&model, &loss.backward());

        let norm = grads.global_norm();
        let want = reference.floats("grad_norm").1[0] as f64;
        assert!(
            relative(norm, want) <= 1e-5,
            "{name}: grad norm {norm} vs {want}"
        );

        let shapes = named_tensors(&model);
        for (path, grad) in grads.iter() {
            let got = grad.clone().into_data().into_vec::<f32>().unwrap();
            let (_, hf) = reference.floats(&format!("grad.{path}"));
            let ours_in_hf = if transposed(path, &shapes[path].shape) {
                transpose(&cpt_core::HostTensor {
                    shape: shapes[path].shape.clone(),
                    values: got,
                })
                .values
            } else {
                got
            };
            let scale = hf.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = max_abs_diff(&ours_in_hf, &hf);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{name}: grad of {path} differs by {diff} (scale {scale})"
            );
        }

        // The optimizer on its own: fed torch's own gradients, one step must land on torch's
        // weights. (From our gradients it would too, but Adam's first step divides by |g| + ε,
        // which turns float noise in near-zero gradients into visible differences.)
        let mut torch_grads = GradStore::<A>::default();
        for (path, shape) in &shapes {
            let (_, hf) = reference.floats(&format!("grad.{path}"));
            let host = cpt_core::HostTensor {
                shape: hf_shape_of(path, &shape.shape),
                values: hf,
            };
            let ours = if transposed(path, &shape.shape) {
                transpose(&host)
            } else {
                host
            };
            let n = ours.values.len();
            torch_grads.insert(
                path,
                Tensor::from_data(TensorData::new(ours.values, [n]), &Default::default()),
            );
        }
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let stepped = AdamW::<A>::new(config).step(model, &torch_grads, 1e-2, |_| 1.0);
        for (path, after) in hf_tensors(&stepped) {
            let (_, want) = reference.floats(&format!("after_adamw.{path}"));
            let diff = max_abs_diff(&after.values, &want);
            assert!(
                diff <= 1e-5,
                "{name}: {path} after one AdamW step differs by {diff}"
            );
        }
    }
}

/// The Hugging Face shape of a parameter whose burn shape is `shape`.
fn hf_shape_of(path: &str, shape: &[usize]) -> Vec<usize> {
    if transposed(path, shape) {
        vec![shape[1], shape[0]]
    } else {
        shape.to_vec()
    }
}

#[test]
fn greedy_generation_and_scores_match_transformers() {
    for name in FULL {
        let dir = fixtures().join(name);
        let (_, model) = load_llama::<Flex>(&dir, &Default::default()).unwrap();
        let reference = Reference::open(&dir);
        // Dynamic RoPE has no greedy reference (see the fixture script).
        if reference.has("greedy_prompt") {
            let (_, prompt) = reference.ints("greedy_prompt");
            let (_, expected) = reference.ints("greedy_output");
            let prompt: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
            let new = generate(
                &model,
                &prompt,
                expected.len() - prompt.len(),
                &Sampling::greedy(),
                None,
            );
            let got: Vec<i64> = prompt.iter().chain(&new).map(|&t| t as i64).collect();
            assert_eq!(got, expected, "{name}: greedy continuation differs");
        }

        let (_, ids) = reference.ints("score_ids");
        let (_, want) = reference.floats("score_logprobs");
        let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
        let start = ids.len() - want.len();
        let score = cpt_eval::score_continuation(&model, &ids, start);
        let got: Vec<f32> = score.logprobs.iter().map(|&v| v as f32).collect();
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-4, "{name}: log-probabilities differ by {diff}");
    }
}

#[test]
fn export_then_import_is_bit_identical() {
    for name in FULL {
        let dir = fixtures().join(name);
        let (config, model) = load_llama::<Flex>(&dir, &Default::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("exported");
        save_llama(
            &model,
            &config,
            Some(&dir.join("tokenizer.json")),
            (None, Some(0)),
            &target,
        )
        .unwrap();
        let (config2, model2) = load_llama::<Flex>(&target, &Default::default()).unwrap();
        assert_eq!(config2, config, "{name}: config changed in the round trip");
        assert!(
            named_tensors(&model2) == named_tensors(&model),
            "{name}: weights changed in the round trip"
        );
    }
}

#[test]
fn export_loads_in_python_transformers_where_installed() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import transformers, torch"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("skipped: python3 with transformers and torch is not installed");
        return;
    }
    let dir = fixtures().join("llama-gqa-untied");
    let (config, model) = load_llama::<Flex>(&dir, &Default::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("exported");
    save_llama(
        &model,
        &config,
        Some(&dir.join("tokenizer.json")),
        (None, Some(0)),
        &target,
    )
    .unwrap();
    // Our own logits, for the script to compare against.
    let reference = Reference::open(&dir);
    assert!(reference.has("input_ids"));
    let (shape, ids) = reference.ints("input_ids");
    let logits = model
        .forward(tokens(&shape, &ids))
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    python_check(
        "check_hf_export.py",
        &target,
        out.path(),
        &shape,
        &ids,
        logits,
        config.vocab_size,
    );
}

/// Write our `input_ids` and `logits` for `script` (in scripts/) to compare against what Python
/// computes on the exported folder `target`; fail with its output if it disagrees.
fn python_check(
    script: &str,
    target: &Path,
    scratch: &Path,
    shape: &[usize],
    ids: &[i64],
    logits: Vec<f32>,
    vocab: usize,
) {
    let mut ours = cpt_core::NamedTensors::new();
    let ids = ids.iter().map(|&i| i as f32).collect();
    ours.insert(
        "input_ids".into(),
        cpt_core::HostTensor {
            shape: shape.to_vec(),
            values: ids,
        },
    );
    ours.insert(
        "logits".into(),
        cpt_core::HostTensor {
            shape: vec![shape[0], shape[1], vocab],
            values: logits,
        },
    );
    let ours_path = scratch.join("ours.safetensors");
    cpt_core::tensor_file::write_tensors(&ours_path, &ours, Default::default()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let result = std::process::Command::new("python3")
        .arg(script)
        .arg(target)
        .arg(&ours_path)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "Python rejected the export:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn lora_adapter_exports_to_peft_with_equal_logits_where_installed() {
    use cpt_core::AdapterModel;
    let probe = std::process::Command::new("python3")
        .args(["-c", "import transformers, torch, peft"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("skipped: python3 with transformers, torch and peft is not installed");
        return;
    }
    let dir = fixtures().join("llama-gqa-untied");
    let (config, model) = load_llama::<Flex>(&dir, &Default::default()).unwrap();
    let spec = cpt_models::linear::LoraSpec {
        rank: 4,
        alpha: 8.0,
        rslora: true,
        target_modules: vec!["q".into(), "v".into(), "down".into()],
        dropout: 0.0,
    };
    // A trained-looking adapter: B away from zero, so the adapter matters.
    let mut rng = cpt_core::SplitMix64::new(5);
    let adapted = cpt_core::params::map_named(model.with_adapters(&spec, 1), |path, t| {
        if path.ends_with("lora_b") {
            let n = t.dims()[0];
            let values: Vec<f32> = (0..n).map(|_| (rng.next_normal() * 0.1) as f32).collect();
            Tensor::from_data(TensorData::new(values, [n]), &Default::default())
        } else {
            t
        }
    });
    let reference = Reference::open(&dir);
    let (shape, ids) = reference.ints("input_ids");
    let logits = adapted
        .forward(tokens(&shape, &ids))
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("peft");
    cpt_models::hf_llama::save_peft(
        &adapted,
        &config,
        &spec,
        Some(&dir.join("tokenizer.json")),
        (None, Some(0)),
        &target,
    )
    .unwrap();
    python_check(
        "check_peft_export.py",
        &target,
        out.path(),
        &shape,
        &ids,
        logits,
        config.vocab_size,
    );
}
