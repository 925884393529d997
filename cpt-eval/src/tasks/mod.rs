//! EleutherAI lm-evaluation-harness task files on local data, scored by log-likelihood with
//! lm-eval's semantics (version 0.4.13: prompts, few-shot draws, tokenisation, truncation,
//! rolling windows and metrics).
//!
//! A task file (YAML, see `config.rs` for the keys) names its data (`dataset_path: json`,
//! `parquet` or `csv` with `dataset_kwargs.data_files`, or a local folder; relative paths are
//! relative to the task file, where lm-eval takes them relative to its working directory), its
//! splits, its prompt templates (`data.rs`, `template.rs`) and its metrics (`metrics.rs`).
//! [`Task::load`] renders every request string up front, so a bad template fails before any
//! model runs; [`evaluate_task`] tokenises (`score.rs`) and scores them.
//!
//! The prompt of a document is lm-eval's plain-text layout:
//!
//! ```text
//! description + (text_i + target_delimiter + answer_i + fewshot_delimiter for each example) + text
//! ```
//!
//! Few-shot examples come from `fewshot_split`, else the training, validation or test split;
//! `fewshot.rs` reproduces lm-eval's draw (Python's `random.Random(seed).sample`), so prompts
//! are byte-identical to lm-eval's for the same seed. A multiple-choice request's continuation
//! is `target_delimiter + choice`; a `loglikelihood` request's is the target as rendered (lm-eval
//! adds no delimiter there); a rolling request scores the target alone.
//!
//! Not supported, each refused with an error naming the key: Python functions (`!function`),
//! `process_docs`, `process_results`, generation (`generate_until`, `generation_kwargs`,
//! `filter_list`), multiple-input tasks (`doc_to_text` giving an index), `fewshot_config` keys
//! other than `sampler`, Hugging Face Hub datasets and `dataset_name` configurations, chat
//! templates and `gen_prefix`.

mod config;
mod data;
mod error;
mod evaluator;
mod fewshot;
mod metrics;
mod score;
mod template;

pub use config::OutputType;
pub use error::TaskError;
pub use evaluator::{LanguageEvaluator, TaskProgress};
pub use score::{
    RequestScore, ScoreSettings, TokenRequest, encode_pair, rolling_windows, score_requests,
};

use burn::tensor::backend::Backend;
use config::{MetricSpec, TaskConfig};
use cpt_core::{TaskModel, TokenBatch};
use data::{Doc, Split, load_split};
use fewshot::FewshotSampler;
use metrics::{DocValue, Gold};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use template::{DocRef, Prompts};

/// Settings that override or complete a task file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// Few-shot examples per prompt; overrides the file's `num_fewshot` (lm-eval's
    /// `--num_fewshot`). Unset in both: zero-shot.
    pub num_fewshot: Option<usize>,
    /// Evaluate only the first `limit` documents (lm-eval's `--limit N`).
    pub limit: Option<usize>,
    /// Seed of the few-shot draw (lm-eval's `--fewshot_random_seed`, default 1234).
    pub seed: u64,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            num_fewshot: None,
            limit: None,
            seed: 1234,
        }
    }
}

/// What tokenises text for requests (the CLI implements it over cpt-data's HF tokenizer).
pub trait TextEncoder {
    /// Token ids of `text`, without special tokens.
    fn encode(&self, text: &str) -> Result<Vec<u32>, TaskError>;
    /// lm-eval's `prefix_token_id` (the tokenizer's BOS, else its EOS): the context of a
    /// request with an empty context and of the first rolling window.
    fn prefix_token(&self) -> u32;
}

/// One evaluated document: the strings lm-eval would send to the model for it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDoc {
    /// Index of the document in the evaluated split.
    pub index: usize,
    /// The prompt: description, few-shot examples and the document's text (empty for
    /// `loglikelihood_rolling`, which scores its text alone).
    pub context: String,
    /// One continuation per request: `target_delimiter + choice` per choice, the target, or the
    /// text to score in rolling windows.
    pub continuations: Vec<String>,
    /// The choices as given (their lengths normalise `acc_norm`); empty unless multiple choice.
    choices: Vec<String>,
    /// The gold choice; unused unless multiple choice.
    gold: Gold,
}

/// A task file with its documents rendered into requests.
#[derive(Debug, Clone)]
pub struct Task {
    /// The task's name (`task`).
    pub name: String,
    /// What the task asks of the model.
    pub output_type: OutputType,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
    /// The task file.
    pub path: PathBuf,
    /// The evaluated documents (the first `limit` of the evaluated split).
    pub docs: Vec<TaskDoc>,
    metrics: Vec<MetricSpec>,
}

impl Task {
    /// Read the task file at `path`, its data and its templates, and render every request.
    pub fn load(path: &Path, options: &TaskOptions) -> Result<Task, TaskError> {
        let config = TaskConfig::read(path)?;
        let num_fewshot = options.num_fewshot.or(config.num_fewshot).unwrap_or(0);
        let eval_key = if config.test_split.is_some() {
            "test_split"
        } else {
            "validation_split"
        };
        let eval = load_split(&config, config.eval_split(), eval_key)?;
        let prompts = Prompts::new(&config, eval.columns.clone())?;
        let rolling = config.output_type == OutputType::LoglikelihoodRolling;
        // Rolling requests ignore the prompt, so their few-shot examples are never drawn.
        let pool = if num_fewshot > 0 && !rolling {
            Some(fewshot_pool(&config, &eval)?)
        } else {
            None
        };
        let mut sampler = FewshotSampler::new(config.sampler, options.seed);
        let count = options
            .limit
            .map_or(eval.docs.len(), |limit| limit.min(eval.docs.len()));
        if count == 0 {
            return Err(TaskError::InvalidValue {
                path: config.path.clone(),
                key: eval_key.into(),
                message: format!("no documents to evaluate in split `{}`", eval.name),
            });
        }
        let mut docs = Vec::with_capacity(count);
        for (index, doc) in eval.docs.iter().enumerate().take(count) {
            let at = DocRef {
                split: &eval.name,
                index,
            };
            let render = Render {
                config: &config,
                prompts: &prompts,
            };
            docs.push(match config.output_type {
                OutputType::LoglikelihoodRolling => {
                    let text = render.target_text(doc, at)?;
                    TaskDoc {
                        index,
                        context: String::new(),
                        continuations: vec![text],
                        choices: Vec::new(),
                        gold: Gold::One(None),
                    }
                }
                _ => {
                    let examples = match &pool {
                        Some(pool) => {
                            let exclude = config.excludes_eval_doc().then_some(doc);
                            let picked = sampler.sample(num_fewshot, &pool.docs, exclude).map_err(
                                |message| TaskError::Document {
                                    path: config.path.clone(),
                                    doc: index,
                                    message: format!("few-shot split `{}`: {message}", pool.name),
                                },
                            )?;
                            picked
                                .into_iter()
                                .map(|i| {
                                    (
                                        &pool.docs[i],
                                        DocRef {
                                            split: &pool.name,
                                            index: i,
                                        },
                                    )
                                })
                                .collect()
                        }
                        None => Vec::new(),
                    };
                    render.doc(doc, at, &examples)?
                }
            });
        }
        Ok(Task {
            name: config.name.clone(),
            output_type: config.output_type,
            num_fewshot,
            path: config.path.clone(),
            docs,
            metrics: config.metrics,
        })
    }

    /// The metrics reported, the primary first, with whether higher is better.
    pub fn metrics(&self) -> impl Iterator<Item = (&str, bool)> {
        self.metrics
            .iter()
            .map(|m| (m.name.as_str(), m.higher_is_better))
    }

    /// Aggregate per-document scores (from [`score_task`], in [`Task::docs`] order).
    pub fn result(&self, scores: &[DocScore]) -> TaskResult {
        assert_eq!(scores.len(), self.docs.len(), "one score per document");
        let mut metrics = BTreeMap::new();
        let mut stderr = BTreeMap::new();
        for spec in &self.metrics {
            let values: Vec<DocValue> = self
                .docs
                .iter()
                .zip(scores)
                .map(|(doc, score)| {
                    let first = score.requests[0];
                    match self.output_type {
                        OutputType::MultipleChoice => {
                            let lls: Vec<f64> = score.requests.iter().map(|r| r.loglik).collect();
                            metrics::multiple_choice(&spec.name, &lls, &doc.choices, &doc.gold)
                        }
                        OutputType::Loglikelihood => {
                            metrics::loglikelihood(&spec.name, first.loglik, first.greedy)
                        }
                        OutputType::LoglikelihoodRolling => {
                            metrics::rolling(&spec.name, first.loglik, &doc.continuations[0])
                        }
                    }
                })
                .collect();
            let (value, error) = metrics::aggregate(&spec.name, self.output_type, &values);
            metrics.insert(spec.name.clone(), value);
            if let Some(error) = error {
                stderr.insert(spec.name.clone(), error);
            }
        }
        let primary = &self.metrics[0];
        TaskResult {
            name: self.name.clone(),
            metrics,
            stderr,
            primary: primary.name.clone(),
            higher_is_better: primary.higher_is_better,
            samples: self.docs.len(),
            num_fewshot: self.num_fewshot,
        }
    }
}

/// A task's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// The task's name.
    pub name: String,
    /// Metric name to value (`acc`, `acc_norm`, `perplexity`, `word_perplexity`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Standard errors of the mean metrics (`acc`, `acc_norm`, `acc_bytes`), as lm-eval's
    /// `<metric>_stderr`.
    pub stderr: BTreeMap<String, f64>,
    /// The first metric of the task's `metric_list` (else its output type's first default).
    pub primary: String,
    /// Whether a higher primary metric is better.
    pub higher_is_better: bool,
    /// Documents scored.
    pub samples: usize,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
}

/// Scores of one document's requests, in [`TaskDoc::continuations`] order. A rolling document
/// has one, summed over its windows (`greedy`: every window's every token is the argmax).
#[derive(Debug, Clone, PartialEq)]
pub struct DocScore {
    /// One score per request.
    pub requests: Vec<RequestScore>,
}

/// Tokenise and score every request of `task`; one [`DocScore`] per document.
/// `progress` sees (sequences scored, total sequences).
pub fn score_task<B: Backend, M: TaskModel<B, Batch = TokenBatch>>(
    model: &M,
    task: &Task,
    encoder: &dyn TextEncoder,
    settings: &ScoreSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<DocScore>, TaskError> {
    // Every sequence to score, with the document and request it belongs to.
    let mut requests = Vec::new();
    let mut owners = Vec::new();
    for (d, doc) in task.docs.iter().enumerate() {
        let bad = |message: String| TaskError::Document {
            path: task.path.clone(),
            doc: doc.index,
            message,
        };
        for (r, continuation) in doc.continuations.iter().enumerate() {
            if task.output_type == OutputType::LoglikelihoodRolling {
                let tokens = encoder.encode(continuation)?;
                for window in rolling_windows(&tokens, encoder.prefix_token(), settings.max_length)
                {
                    requests.push(window);
                    owners.push((d, r));
                }
                continue;
            }
            let request = encode_pair(encoder, &doc.context, continuation)?;
            if request.continuation.is_empty() {
                return Err(bad(format!(
                    "continuation {continuation:?} has no tokens of its own after context"
                )));
            }
            if request.continuation.len() > settings.max_length {
                return Err(bad(format!(
                    "continuation of {} tokens is longer than max_length {}",
                    request.continuation.len(),
                    settings.max_length
                )));
            }
            requests.push(request);
            owners.push((d, r));
        }
    }
    let scores = score_requests(model, &requests, settings, progress);
    let mut out: Vec<DocScore> = task
        .docs
        .iter()
        .map(|doc| DocScore {
            requests: vec![
                RequestScore {
                    loglik: 0.0,
                    greedy: true,
                };
                doc.continuations.len()
            ],
        })
        .collect();
    for ((d, r), score) in owners.into_iter().zip(scores) {
        let slot = &mut out[d].requests[r];
        slot.loglik += score.loglik;
        slot.greedy &= score.greedy;
    }
    Ok(out)
}

/// Score `task` with `model` and aggregate its metrics.
pub fn evaluate_task<B: Backend, M: TaskModel<B, Batch = TokenBatch>>(
    model: &M,
    task: &Task,
    encoder: &dyn TextEncoder,
    settings: &ScoreSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TaskResult, TaskError> {
    let scores = score_task(model, task, encoder, settings, progress)?;
    Ok(task.result(&scores))
}

/// The few-shot pool: `fewshot_split`, else the training, validation or test split (lm-eval's
/// `fewshot_docs`); the evaluated split is reused rather than read twice.
fn fewshot_pool(config: &TaskConfig, eval: &Split) -> Result<Split, TaskError> {
    let split = config.fewshot_pool_split();
    if split == eval.name {
        return Ok(eval.clone());
    }
    let key = [
        ("fewshot_split", &config.fewshot_split),
        ("training_split", &config.training_split),
        ("validation_split", &config.validation_split),
        ("test_split", &config.test_split),
    ]
    .into_iter()
    .find(|(_, s)| s.as_deref() == Some(split))
    .map_or("fewshot_split", |(key, _)| key);
    load_split(config, split, key)
}

/// Renders documents into requests.
struct Render<'a> {
    config: &'a TaskConfig,
    prompts: &'a Prompts<'a>,
}

impl Render<'_> {
    fn bad(&self, key: &str, at: DocRef, message: String) -> TaskError {
        self.prompts.error(key, at, message)
    }

    /// The target as text (`loglikelihood` and rolling requests).
    fn target_text(&self, doc: &Doc, at: DocRef) -> Result<String, TaskError> {
        match self.prompts.target(doc, at)? {
            Value::String(s) => Ok(s),
            other => Err(self.bad("doc_to_target", at, format!("gives {other}, not text"))),
        }
    }

    /// A multiple-choice or `loglikelihood` document with its few-shot `examples`.
    fn doc(
        &self,
        doc: &Doc,
        at: DocRef,
        examples: &[(&Doc, DocRef)],
    ) -> Result<TaskDoc, TaskError> {
        let config = self.config;
        let mut context = self.prompts.description(doc, at)?;
        for &(example, example_at) in examples {
            let text = self.prompts.text(example, example_at)?;
            context.push_str(&text);
            if let Some(answer) = self.answer(example, example_at)? {
                context.push_str(&config.target_delimiter);
                context.push_str(&answer);
                context.push_str(&config.fewshot_delimiter);
            }
        }
        context.push_str(&self.prompts.text(doc, at)?);
        Ok(match config.output_type {
            OutputType::MultipleChoice => {
                let choices = self.prompts.choices(doc, at)?;
                if choices.is_empty() {
                    return Err(self.bad("doc_to_choice", at, "gives no choices".into()));
                }
                let gold = self.gold(doc, at, &choices)?;
                TaskDoc {
                    index: at.index,
                    context,
                    continuations: choices
                        .iter()
                        .map(|c| format!("{}{c}", config.target_delimiter))
                        .collect(),
                    choices,
                    gold,
                }
            }
            OutputType::Loglikelihood => TaskDoc {
                index: at.index,
                context,
                continuations: vec![self.target_text(doc, at)?],
                choices: Vec::new(),
                gold: Gold::One(None),
            },
            OutputType::LoglikelihoodRolling => unreachable!("rolling documents have no prompt"),
        })
    }

    /// A few-shot example's answer as lm-eval's `build_qa_turn` writes it: the choice a target
    /// index names, the first of a target list, or the target text; none when the target is
    /// empty or null (then the example is its text alone, without delimiters).
    fn answer(&self, doc: &Doc, at: DocRef) -> Result<Option<String>, TaskError> {
        let target = self.prompts.target(doc, at)?;
        let choices = match self.config.doc_to_choice {
            Some(_) => self.prompts.choices(doc, at)?,
            None => Vec::new(),
        };
        let bad = |message: String| self.bad("doc_to_target", at, message);
        match target {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) if n.is_i64() && !choices.is_empty() => {
                let i = n.as_i64().expect("checked");
                // Python indexing: negative counts from the end.
                let index = if i < 0 { i + choices.len() as i64 } else { i };
                usize::try_from(index)
                    .ok()
                    .and_then(|i| choices.get(i))
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        bad(format!(
                            "index {i} is out of range of {} choices",
                            choices.len()
                        ))
                    })
            }
            Value::Array(items) => match items.first() {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(bad(format!("the answer {items:?} starts with no text"))),
            },
            other => Err(bad(format!("gives {other}, which is no answer text"))),
        }
    }

    /// The gold choice: an index (out of range: none, which lm-eval scores as wrong), a choice's
    /// text, or a list of indices.
    fn gold(&self, doc: &Doc, at: DocRef, choices: &[String]) -> Result<Gold, TaskError> {
        let index = |value: &Value| -> Option<Option<usize>> {
            let i = value.as_i64()?;
            Some(usize::try_from(i).ok().filter(|&i| i < choices.len()))
        };
        let target = self.prompts.target(doc, at)?;
        match &target {
            Value::Number(_) => index(&target).map(Gold::One),
            Value::String(s) => Some(Gold::One(choices.iter().position(|c| c == s))),
            Value::Array(items) => items
                .iter()
                .map(index)
                .collect::<Option<Vec<_>>>()
                .map(Gold::Many),
            _ => None,
        }
        .ok_or_else(|| {
            self.bad(
                "doc_to_target",
                at,
                format!("gives {target}: expected an index, a choice or a list of indices"),
            )
        })
    }
}
