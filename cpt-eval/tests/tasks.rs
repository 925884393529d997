//! lm-evaluation-harness parity: the task files under tests/fixtures/tasks/, scored with the
//! tiny LLaMA beside them, against what lm_eval 0.4.13 reported for the same model and files
//! (reference.json, written by scripts/make_task_fixtures.py): rendered prompts byte for byte
//! (zero- and two-shot: the few-shot draw is lm-eval's), per-request log-likelihoods within 1e-4,
//! accuracies exactly, perplexities within 1e-4 relative. Then every kind of bad task file.

use burn::backend::Flex;
use cpt_eval::tasks::{ScoreSettings, TokenRequest, encode_pair, score_requests};
use cpt_eval::{Task, TaskError, TaskOptions, TextEncoder, score_task};
use cpt_models::hf_llama::load_llama;
use cpt_models::llama::LlamaForCausalLM;
use serde_json::Value;
use std::path::{Path, PathBuf};

type B = Flex;

const TASKS: [&str; 4] = [
    "continuation_mc",
    "author_mc",
    "ending_ll",
    "passages_rolling",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tasks")
}

/// The fixture tokenizer, without special tokens; prefix `<|endoftext|>` (0), lm-eval's BOS.
struct HfEncoder(tokenizers::Tokenizer);

impl TextEncoder for HfEncoder {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TaskError> {
        self.0
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TaskError::Encode(e.to_string()))
    }

    fn prefix_token(&self) -> u32 {
        0
    }
}

fn encoder() -> HfEncoder {
    HfEncoder(tokenizers::Tokenizer::from_file(fixtures().join("model/tokenizer.json")).unwrap())
}

fn model() -> LlamaForCausalLM<B> {
    load_llama::<B>(&fixtures().join("model"), &Default::default())
        .unwrap()
        .1
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn settings(batch_size: usize) -> ScoreSettings {
    ScoreSettings {
        batch_size,
        max_length: reference()["max_length"].as_u64().unwrap() as usize,
    }
}

fn load(task: &str, shots: usize) -> Task {
    let options = TaskOptions {
        num_fewshot: Some(shots),
        ..TaskOptions::default()
    };
    Task::load(&fixtures().join(format!("{task}.yaml")), &options)
        .unwrap_or_else(|e| panic!("{task}: {e}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prompts_are_byte_identical_to_lm_eval() {
    let reference = reference();
    for shots in [0, 2] {
        for name in TASKS {
            let task = load(name, shots);
            let samples = reference["runs"][shots.to_string()][name]["samples"]
                .as_array()
                .unwrap();
            assert_eq!(task.docs.len(), samples.len(), "{name} {shots}-shot");
            for (doc, sample) in task.docs.iter().zip(samples) {
                assert_eq!(doc.index as u64, sample["doc_id"].as_u64().unwrap());
                if name == "passages_rolling" {
                    assert_eq!(doc.continuations, [sample["text"].as_str().unwrap()]);
                    continue;
                }
                assert_eq!(
                    doc.context,
                    sample["context"].as_str().unwrap(),
                    "{name} {shots}-shot doc {}",
                    doc.index
                );
                assert_eq!(doc.continuations, strings(&sample["continuations"]));
            }
        }
    }
}

#[test]
fn scores_and_metrics_match_lm_eval() {
    let reference = reference();
    let model = model();
    let encoder = encoder();
    for shots in [0, 2] {
        for name in TASKS {
            let task = load(name, shots);
            let run = &reference["runs"][shots.to_string()][name];
            let mut calls = 0;
            let scores = score_task(&model, &task, &encoder, &settings(4), &mut |done, total| {
                calls += 1;
                assert!(done <= total);
            })
            .unwrap();
            assert!(calls > 0, "progress is reported");
            for (score, sample) in scores.iter().zip(run["samples"].as_array().unwrap()) {
                let (logliks, greedy): (Vec<f64>, Vec<bool>) = if name == "passages_rolling" {
                    (vec![sample["loglik"].as_f64().unwrap()], Vec::new())
                } else {
                    let lls = sample["logliks"].as_array().unwrap();
                    let greedy = sample["greedy"].as_array().unwrap();
                    (
                        lls.iter().map(|v| v.as_f64().unwrap()).collect(),
                        greedy.iter().map(|v| v.as_bool().unwrap()).collect(),
                    )
                };
                assert_eq!(score.requests.len(), logliks.len());
                for (i, (got, want)) in score.requests.iter().zip(&logliks).enumerate() {
                    assert!(
                        (got.loglik - want).abs() < 1e-4,
                        "{name} {shots}-shot doc {} request {i}: {} vs lm-eval {want}",
                        sample["doc_id"],
                        got.loglik
                    );
                    if let Some(&greedy) = greedy.get(i) {
                        assert_eq!(
                            got.greedy, greedy,
                            "{name} doc {} request {i}",
                            sample["doc_id"]
                        );
                    }
                }
            }

            let result = task.result(&scores);
            assert_eq!(result.samples, task.docs.len());
            let want = run["metrics"].as_object().unwrap();
            let metric_names: Vec<&str> = want
                .keys()
                .filter(|k| !k.ends_with("_stderr"))
                .map(String::as_str)
                .collect();
            let got_names: Vec<&str> = result.metrics.keys().map(String::as_str).collect();
            let mut sorted = metric_names.clone();
            sorted.sort();
            assert_eq!(got_names, sorted, "{name}: the metrics lm-eval reports");
            for metric in metric_names {
                let (got, want_value) = (result.metrics[metric], want[metric].as_f64().unwrap());
                if metric.starts_with("acc") {
                    assert_eq!(got, want_value, "{name} {shots}-shot {metric}");
                    let err = want[&format!("{metric}_stderr")].as_f64().unwrap();
                    assert!(
                        (result.stderr[metric] - err).abs() < 1e-12,
                        "{name} {metric}_stderr: {} vs {err}",
                        result.stderr[metric]
                    );
                } else {
                    assert!(
                        ((got - want_value) / want_value).abs() < 1e-4,
                        "{name} {shots}-shot {metric}: {got} vs lm-eval {want_value}"
                    );
                }
            }
        }
    }
}

#[test]
fn primary_metric_is_the_first_listed() {
    let expected = [
        ("continuation_mc", "acc", true),
        ("author_mc", "acc", true),
        ("ending_ll", "perplexity", false),
        ("passages_rolling", "word_perplexity", false),
    ];
    let model = model();
    for (name, primary, higher) in expected {
        let task = Task::load(
            &fixtures().join(format!("{name}.yaml")),
            &TaskOptions {
                limit: Some(2),
                ..TaskOptions::default()
            },
        )
        .unwrap();
        assert_eq!(task.docs.len(), 2, "limit takes the first documents");
        let result =
            cpt_eval::evaluate_task(&model, &task, &encoder(), &settings(2), &mut |_, _| {})
                .unwrap();
        assert_eq!(
            (result.primary.as_str(), result.higher_is_better),
            (primary, higher)
        );
        assert_eq!(result.num_fewshot, 0);
    }
}

/// Right-padding sits after every scored position: batched scores equal one-at-a-time scores.
#[test]
fn batching_does_not_change_scores() {
    let model = model();
    let encoder = encoder();
    // Zero-shot prompts of several lengths, and two-shot ones truncated to max_length.
    let (zero, two) = (load("continuation_mc", 0), load("continuation_mc", 2));
    let requests: Vec<TokenRequest> = zero
        .docs
        .iter()
        .take(6)
        .chain(two.docs.iter().take(2))
        .flat_map(|doc| {
            doc.continuations
                .iter()
                .map(|c| encode_pair(&encoder, &doc.context, c).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let lengths: std::collections::BTreeSet<usize> = requests
        .iter()
        .map(|r| (r.context.len() + r.continuation.len()).min(65))
        .collect();
    assert!(
        lengths.len() > 3,
        "requests of several lengths: {lengths:?}"
    );
    assert!(lengths.contains(&65), "and some that are truncated");
    let one = score_requests(&model, &requests, &settings(1), &mut |_, _| {});
    let batched = score_requests(&model, &requests, &settings(7), &mut |_, _| {});
    for (i, (a, b)) in one.iter().zip(&batched).enumerate() {
        assert!(
            (a.loglik - b.loglik).abs() < 1e-5,
            "request {i}: {a:?} vs {b:?}"
        );
        assert_eq!(a.greedy, b.greedy);
    }
}

/// Seeds other than lm-eval's default draw other examples, in the same layout.
#[test]
fn the_seed_changes_the_examples_not_the_layout() {
    let path = fixtures().join("continuation_mc.yaml");
    let with_seed = |seed| {
        Task::load(
            &path,
            &TaskOptions {
                num_fewshot: Some(2),
                limit: Some(5),
                seed,
            },
        )
        .unwrap()
    };
    let (a, b) = (with_seed(1234), with_seed(7));
    assert_ne!(
        a.docs.iter().map(|d| &d.context).collect::<Vec<_>>(),
        b.docs.iter().map(|d| &d.context).collect::<Vec<_>>()
    );
    for doc in &b.docs {
        assert!(doc.context.starts_with("Pick the continuation.\n\n"));
        assert_eq!(
            doc.context.matches("\nContinuation:").count(),
            3,
            "two examples + the doc"
        );
        assert!(doc.context.ends_with("\nContinuation:"));
    }
}

// ---- bad task files -------------------------------------------------------------------------

const GOOD: &str = "task: t
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: \"{{ q }}\"
doc_to_choice: [\"a\", \"b\"]
doc_to_target: label
";

/// Write `yaml` as `bad.yaml` beside a small data file and load it.
fn load_text(yaml: &str) -> Result<Task, TaskError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.jsonl"),
        "{\"q\": \"one\", \"label\": 0}\n{\"q\": \"two\", \"label\": 1}\n",
    )
    .unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    Task::load(&path, &TaskOptions::default())
}

/// The error of `yaml`, which must name the file and contain every one of `needles`.
fn error_of(yaml: &str, needles: &[&str]) -> TaskError {
    let err = load_text(yaml).expect_err("a bad task file");
    let message = err.to_string();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    err
}

#[test]
fn the_good_file_loads() {
    let task = load_text(GOOD).unwrap();
    assert_eq!(task.docs[1].context, "two");
    assert_eq!(task.docs[1].continuations, [" a", " b"]);
}

#[test]
fn python_functions_are_refused_by_key() {
    let err = error_of(
        &format!("{GOOD}process_docs: !function utils.process_docs\n"),
        &[
            "bad.yaml: key `process_docs` is not supported (cpt scores log-likelihood tasks on local data)",
        ],
    );
    assert!(matches!(err, TaskError::UnsupportedKey { .. }));
    let err = error_of(
        &GOOD.replace(
            "doc_to_text: \"{{ q }}\"",
            "doc_to_text: !function utils.doc_to_text",
        ),
        &["bad.yaml", "key `doc_to_text`", "!function"],
    );
    assert!(matches!(err, TaskError::PythonFunction { .. }));
}

#[test]
fn generation_and_unknown_keys_are_refused() {
    for key in [
        "generation_kwargs:\n  until: [\"\\n\"]",
        "filter_list: []",
        "repeats: 2",
    ] {
        let name = key.split(':').next().unwrap();
        let err = error_of(
            &format!("{GOOD}{key}\n"),
            &["bad.yaml", &format!("key `{name}`")],
        );
        assert!(matches!(err, TaskError::UnsupportedKey { .. }), "{err}");
    }
    error_of(
        &format!("{GOOD}fewshot_config:\n  split: train\n"),
        &["bad.yaml", "key `fewshot_config.split` is not supported"],
    );
    error_of(
        &format!("{GOOD}fewshot_config:\n  sampler: balanced\n"),
        &["bad.yaml", "key `fewshot_config.sampler`", "balanced"],
    );
}

#[test]
fn unknown_output_type_is_refused() {
    let err = error_of(
        &GOOD.replace("multiple_choice", "generate_until"),
        &["bad.yaml", "key `output_type`", "generate_until"],
    );
    assert!(matches!(err, TaskError::InvalidValue { .. }));
}

#[test]
fn missing_keys_are_named() {
    let err = error_of(
        &GOOD.replace("doc_to_choice: [\"a\", \"b\"]\n", ""),
        &[
            "bad.yaml: key `doc_to_choice` is missing",
            "multiple_choice",
        ],
    );
    assert!(matches!(err, TaskError::MissingKey { .. }));
    error_of(&GOOD.replace("task: t\n", ""), &["key `task` is missing"]);
    error_of(
        &GOOD.replace("test_split: test\n", ""),
        &["key `test_split` is missing"],
    );
}

#[test]
fn missing_data_names_the_file_and_key() {
    let err = error_of(
        &GOOD.replace("test: data.jsonl", "test: nowhere.jsonl"),
        &[
            "bad.yaml",
            "key `dataset_kwargs.data_files.test`",
            "nowhere.jsonl",
        ],
    );
    assert!(matches!(err, TaskError::MissingData { .. }));
    error_of(
        &GOOD
            .replace("dataset_path: json", "dataset_path: cais/mmlu")
            .replace("dataset_kwargs:\n  data_files:\n    test: data.jsonl\n", ""),
        &["bad.yaml", "key `dataset_path`", "cais/mmlu", "local"],
    );
    error_of(
        &GOOD.replace("test_split: test", "test_split: validation"),
        &["bad.yaml", "key `test_split`", "validation"],
    );
    error_of(
        &format!("{GOOD}dataset_name: abstract_algebra\n"),
        &["bad.yaml", "key `dataset_name`"],
    );
}

#[test]
fn template_errors_name_the_template_and_document() {
    let err = error_of(
        &GOOD.replace("{{ q }}", "{{ question }}"),
        &[
            "bad.yaml",
            "key `doc_to_text`",
            "document 0",
            "{{ question }}",
        ],
    );
    assert!(matches!(err, TaskError::Template { doc: 0, .. }));
    let err = error_of(
        &GOOD.replace("{{ q }}", "{{ q "),
        &["bad.yaml", "key `doc_to_text`", "Jinja"],
    );
    assert!(matches!(err, TaskError::InvalidValue { .. }));
    error_of(
        &GOOD.replace(
            "doc_to_choice: [\"a\", \"b\"]",
            "doc_to_choice: \"{{ q }}\"",
        ),
        &[
            "bad.yaml",
            "key `doc_to_choice`",
            "not a Python list literal",
        ],
    );
}

#[test]
fn bad_metrics_are_named() {
    error_of(
        &format!("{GOOD}metric_list:\n  - metric: exact_match\n"),
        &["bad.yaml", "key `metric_list[0].metric`", "exact_match"],
    );
    error_of(
        &format!("{GOOD}metric_list:\n  - metric: acc\n    aggregation: median\n"),
        &["bad.yaml", "key `metric_list[0].aggregation`"],
    );
    error_of(
        &format!("{GOOD}metric_list:\n  - metric: acc\n    ignore_case: true\n"),
        &[
            "bad.yaml",
            "key `metric_list[0].ignore_case` is not supported",
        ],
    );
}

#[test]
fn malformed_yaml_names_the_file() {
    let err = error_of("task: [unclosed\n", &["bad.yaml", "not a valid task file"]);
    assert!(matches!(err, TaskError::Yaml { .. }));
    error_of("- a\n- b\n", &["bad.yaml", "mapping"]);
}

#[test]
fn empty_choices_and_empty_splits_are_errors() {
    error_of(
        &GOOD.replace("doc_to_choice: [\"a\", \"b\"]", "doc_to_choice: []"),
        &[
            "bad.yaml",
            "key `doc_to_choice`",
            "document 0",
            "no choices",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.jsonl"), "\n").unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let message = Task::load(&path, &TaskOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("bad.yaml: key `test_split`: no documents"),
        "{message}"
    );
}

#[test]
fn too_few_fewshot_documents_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.jsonl"),
        "{\"q\": \"one\", \"label\": 0}\n",
    )
    .unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let options = TaskOptions {
        num_fewshot: Some(3),
        ..TaskOptions::default()
    };
    let message = Task::load(&path, &options).unwrap_err().to_string();
    assert!(
        message.contains("bad.yaml: document 0") && message.contains("few-shot"),
        "{message}"
    );
}
