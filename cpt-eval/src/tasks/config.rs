//! Reading an lm-evaluation-harness task file (`lm_eval/config/task.py`'s `TaskConfig`) into
//! what cpt runs: the keys of log-likelihood tasks on local data, and a clear error naming the
//! file and the key for anything else.
//!
//! YAML is parsed by `saphyr` (YAML 1.2, maintained by the yaml-rust2 authors as its successor;
//! `serde_yaml` is archived and its fork `serde_yml` unmaintained). saphyr keeps user tags as
//! `Tagged` nodes instead of failing the parse, so `doc_to_text: !function utils.x` is refused
//! by key. One difference from the harness's PyYAML (YAML 1.1): unquoted `yes`/`no`/`on`/`off`
//! are strings here, booleans there; quote them.

use super::error::TaskError;
use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Keys accepted and ignored: grouping and bookkeeping that does not change scores.
const IGNORED_KEYS: &[&str] = &[
    "tag",
    "group",
    "task_alias",
    "metadata",
    "should_decontaminate",
    "doc_to_decontamination_query",
];

/// Keys read by [`TaskConfig::from_map`].
const KNOWN_KEYS: &[&str] = &[
    "task",
    "include",
    "dataset_path",
    "dataset_name",
    "dataset_kwargs",
    "training_split",
    "validation_split",
    "test_split",
    "fewshot_split",
    "output_type",
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "target_delimiter",
    "fewshot_delimiter",
    "description",
    "num_fewshot",
    "metric_list",
    "fewshot_config",
];

/// Files a task may `include` in a chain, so that a cycle ends in an error.
const MAX_INCLUDE_DEPTH: usize = 8;

/// What a task asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    /// One request per choice; accuracy of the most likely choice.
    MultipleChoice,
    /// One (context, target) request; greedy accuracy and perplexity.
    Loglikelihood,
    /// The whole target scored in windows of the model's length; word/byte perplexities.
    LoglikelihoodRolling,
}

impl OutputType {
    /// lm-evaluation-harness's name.
    pub fn name(self) -> &'static str {
        match self {
            OutputType::MultipleChoice => "multiple_choice",
            OutputType::Loglikelihood => "loglikelihood",
            OutputType::LoglikelihoodRolling => "loglikelihood_rolling",
        }
    }

    /// The metrics lm-evaluation-harness reports when `metric_list` is absent
    /// (`DEFAULT_METRIC_REGISTRY`), first the primary one.
    fn default_metrics(self) -> &'static [&'static str] {
        match self {
            OutputType::MultipleChoice => &["acc", "acc_norm"],
            OutputType::Loglikelihood => &["perplexity", "acc"],
            OutputType::LoglikelihoodRolling => {
                &["word_perplexity", "byte_perplexity", "bits_per_byte"]
            }
        }
    }

    /// Metrics this output type computes, with their aggregation and default direction.
    fn metric(self, name: &str) -> Option<(&'static str, bool)> {
        let known: &[(&str, &str, bool)] = match self {
            OutputType::MultipleChoice => &[
                ("acc", "mean", true),
                ("acc_norm", "mean", true),
                ("acc_bytes", "mean", true),
            ],
            OutputType::Loglikelihood => {
                &[("acc", "mean", true), ("perplexity", "perplexity", false)]
            }
            OutputType::LoglikelihoodRolling => &[
                ("word_perplexity", "weighted_perplexity", false),
                ("byte_perplexity", "weighted_perplexity", false),
                ("bits_per_byte", "bits_per_byte", false),
            ],
        };
        known
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, aggregation, higher)| (aggregation, higher))
    }
}

/// A prompt field: a Jinja template or a document field name (decided per lm-eval: a name of
/// a column of the evaluated split is a field), an integer, or a literal list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    /// A template, or a column name.
    Text(String),
    /// A literal integer (`doc_to_target: 0`).
    Int(i64),
    /// A literal list (`doc_to_choice: [yes, no]`), or a mapping's values.
    List(Vec<Value>),
}

/// Where the documents come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DataSource {
    /// `dataset_path: json|parquet|csv` with `dataset_kwargs.data_files`: files per split.
    Files {
        /// `json`, `parquet` or `csv`.
        format: DataFormat,
        /// Split name to files (resolved against the task file's folder).
        splits: Vec<(String, Vec<PathBuf>)>,
    },
    /// `dataset_path: <folder>` holding `<split>.jsonl|json|parquet|csv`.
    Folder(PathBuf),
}

/// Formats of data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataFormat {
    /// JSON Lines, or a JSON array of objects.
    Json,
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
}

/// How few-shot examples are drawn (`fewshot_config.sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SamplerKind {
    /// lm-eval's `default`: `random.Random(seed).sample(pool, n)`.
    Default,
    /// lm-eval's `first_n`: the first n of the pool.
    FirstN,
}

/// One entry of `metric_list`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricSpec {
    /// `acc`, `acc_norm`, `perplexity`, ...
    pub name: String,
    /// Whether higher is better (the entry's `higher_is_better`, else the metric's default).
    pub higher_is_better: bool,
}

/// A task file, checked.
#[derive(Debug, Clone)]
pub(crate) struct TaskConfig {
    /// The task file.
    pub path: PathBuf,
    /// `task`.
    pub name: String,
    /// `output_type`.
    pub output_type: OutputType,
    /// `dataset_path` and `dataset_kwargs.data_files`.
    pub data: DataSource,
    /// `training_split`.
    pub training_split: Option<String>,
    /// `validation_split`.
    pub validation_split: Option<String>,
    /// `test_split`.
    pub test_split: Option<String>,
    /// `fewshot_split`.
    pub fewshot_split: Option<String>,
    /// `doc_to_text`.
    pub doc_to_text: Option<Field>,
    /// `doc_to_choice`.
    pub doc_to_choice: Option<Field>,
    /// `doc_to_target`.
    pub doc_to_target: Option<Field>,
    /// `target_delimiter` (default " ").
    pub target_delimiter: String,
    /// `fewshot_delimiter` (default "\n\n").
    pub fewshot_delimiter: String,
    /// `description`: a template or field name rendered against the evaluated document.
    pub description: String,
    /// `num_fewshot`.
    pub num_fewshot: Option<usize>,
    /// `metric_list`, or the output type's defaults; the first is the primary metric.
    pub metrics: Vec<MetricSpec>,
    /// `fewshot_config.sampler`.
    pub sampler: SamplerKind,
}

impl TaskConfig {
    /// Read and check the task file at `path` (following `include`s).
    pub fn read(path: &Path) -> Result<TaskConfig, TaskError> {
        let map = read_with_includes(path, 0)?;
        Self::from_map(path, map)
    }

    fn from_map(path: &Path, mut map: Map<String, Value>) -> Result<TaskConfig, TaskError> {
        map.remove("include");
        let keys = Keys { path, map };
        let name = keys
            .string("task")?
            .ok_or_else(|| missing(path, "task", ""))?;
        let output_type = match keys.string("output_type")?.as_deref() {
            Some("multiple_choice") => OutputType::MultipleChoice,
            Some("loglikelihood") => OutputType::Loglikelihood,
            Some("loglikelihood_rolling") => OutputType::LoglikelihoodRolling,
            Some(other) => {
                return Err(invalid(
                    path,
                    "output_type",
                    format!(
                        "`{other}` is not supported (cpt scores multiple_choice, loglikelihood \
                         and loglikelihood_rolling tasks)"
                    ),
                ));
            }
            None => {
                return Err(missing(
                    path,
                    "output_type",
                    ": one of multiple_choice, loglikelihood, loglikelihood_rolling",
                ));
            }
        };
        if let Some(value) = keys.map.get("dataset_name")
            && !value.is_null()
        {
            return Err(invalid(
                path,
                "dataset_name",
                "only null is supported (local data has no configurations)".into(),
            ));
        }
        let data = data_source(&keys)?;
        let doc_to_text = keys.field("doc_to_text")?;
        let doc_to_choice = keys.field("doc_to_choice")?;
        let doc_to_target = keys.field("doc_to_target")?;
        let needed: &[(&str, &Option<Field>)] = match output_type {
            OutputType::MultipleChoice => &[
                ("doc_to_text", &doc_to_text),
                ("doc_to_choice", &doc_to_choice),
                ("doc_to_target", &doc_to_target),
            ],
            OutputType::Loglikelihood => &[
                ("doc_to_text", &doc_to_text),
                ("doc_to_target", &doc_to_target),
            ],
            OutputType::LoglikelihoodRolling => &[("doc_to_target", &doc_to_target)],
        };
        for (key, field) in needed {
            if field.is_none() {
                let hint = format!(": {} tasks need it", output_type.name());
                return Err(missing(path, key, &hint));
            }
        }
        let config = TaskConfig {
            path: path.to_path_buf(),
            name,
            output_type,
            data,
            training_split: keys.string("training_split")?,
            validation_split: keys.string("validation_split")?,
            test_split: keys.string("test_split")?,
            fewshot_split: keys.string("fewshot_split")?,
            doc_to_text,
            doc_to_choice,
            doc_to_target,
            target_delimiter: keys
                .string("target_delimiter")?
                .unwrap_or_else(|| " ".into()),
            fewshot_delimiter: keys
                .string("fewshot_delimiter")?
                .unwrap_or_else(|| "\n\n".into()),
            description: keys.string("description")?.unwrap_or_default(),
            num_fewshot: keys.count("num_fewshot")?,
            metrics: metrics(&keys, output_type)?,
            sampler: sampler(&keys)?,
        };
        if config.test_split.is_none() && config.validation_split.is_none() {
            return Err(missing(
                path,
                "test_split",
                ": the task is evaluated on `test_split`, else `validation_split`",
            ));
        }
        Ok(config)
    }

    /// The split documents are evaluated on: the test split, else the validation split.
    pub fn eval_split(&self) -> &str {
        self.test_split
            .as_deref()
            .or(self.validation_split.as_deref())
            .expect("checked when read")
    }

    /// The split few-shot examples come from: `fewshot_split`, else the training, validation
    /// or test split, in that order (lm-eval's `fewshot_docs`).
    pub fn fewshot_pool_split(&self) -> &str {
        self.fewshot_split
            .as_deref()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .or(self.test_split.as_deref())
            .expect("checked when read")
    }

    /// Whether the evaluated document is removed from its own few-shot draw. lm-eval passes it
    /// to the sampler exactly when `fewshot_split == test_split` (both unset included), which
    /// is when the pool can be the evaluated split.
    pub fn excludes_eval_doc(&self) -> bool {
        self.fewshot_split == self.test_split
    }
}

/// The top-level keys of a task file, with typed getters that name the key in errors.
struct Keys<'a> {
    path: &'a Path,
    map: Map<String, Value>,
}

impl Keys<'_> {
    fn string(&self, key: &str) -> Result<Option<String>, TaskError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(
                self.path,
                key,
                format!("expected a string, found {other}"),
            )),
        }
    }

    fn count(&self, key: &str) -> Result<Option<usize>, TaskError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(|n| n as usize)),
            Some(other) => Err(invalid(
                self.path,
                key,
                format!("expected a non-negative integer, found {other}"),
            )),
        }
    }

    fn field(&self, key: &str) -> Result<Option<Field>, TaskError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Field::Text(s.clone()))),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().map(Field::Int)),
            Some(Value::Array(items)) => Ok(Some(Field::List(items.clone()))),
            Some(Value::Object(map)) if key == "doc_to_choice" => {
                Ok(Some(Field::List(map.values().cloned().collect())))
            }
            Some(other) => Err(invalid(
                self.path,
                key,
                format!("expected a template, a field name, an integer or a list, found {other}"),
            )),
        }
    }
}

fn data_source(keys: &Keys) -> Result<DataSource, TaskError> {
    let path = keys.path;
    let folder = path.parent().unwrap_or(Path::new("."));
    let dataset_path = keys.string("dataset_path")?.ok_or_else(|| {
        missing(
            path,
            "dataset_path",
            ": json, parquet, csv or a local folder",
        )
    })?;
    let format = match dataset_path.as_str() {
        "json" => Some(DataFormat::Json),
        "parquet" => Some(DataFormat::Parquet),
        "csv" => Some(DataFormat::Csv),
        _ => None,
    };
    let kwargs = match keys.map.get("dataset_kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            return Err(invalid(
                path,
                "dataset_kwargs",
                format!("expected a mapping, found {other}"),
            ));
        }
    };
    if let Some(key) = kwargs.keys().find(|k| *k != "data_files") {
        return Err(unsupported(path, &format!("dataset_kwargs.{key}")));
    }
    let Some(format) = format else {
        if kwargs.contains_key("data_files") {
            return Err(invalid(
                path,
                "dataset_kwargs.data_files",
                "needs `dataset_path: json`, `parquet` or `csv`".into(),
            ));
        }
        let dir = folder.join(&dataset_path);
        if !dir.is_dir() {
            return Err(invalid(
                path,
                "dataset_path",
                format!(
                    "`{dataset_path}` is neither json, parquet, csv nor a folder at {} (cpt \
                     reads local data only; nothing is downloaded from the Hugging Face Hub)",
                    dir.display()
                ),
            ));
        }
        return Ok(DataSource::Folder(dir));
    };
    let key = "dataset_kwargs.data_files";
    let files = kwargs.get("data_files").ok_or_else(|| {
        missing(
            path,
            key,
            &format!(": `dataset_path: {dataset_path}` reads the files it names per split"),
        )
    })?;
    let file_list = |split: &str, value: &Value| -> Result<Vec<PathBuf>, TaskError> {
        let names: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        names
            .into_iter()
            .map(|name| match name {
                Value::String(name) => Ok(folder.join(name)),
                other => Err(invalid(
                    path,
                    &format!("{key}.{split}"),
                    format!("expected a file name, found {other}"),
                )),
            })
            .collect()
    };
    let splits = match files {
        // A bare file or list is the `train` split, as in `datasets.load_dataset`.
        Value::String(_) | Value::Array(_) => {
            vec![("train".to_string(), file_list("train", files)?)]
        }
        Value::Object(map) => map
            .iter()
            .map(|(split, value)| Ok((split.clone(), file_list(split, value)?)))
            .collect::<Result<_, TaskError>>()?,
        other => {
            return Err(invalid(
                path,
                key,
                format!("expected a mapping from split to files, found {other}"),
            ));
        }
    };
    Ok(DataSource::Files { format, splits })
}

fn metrics(keys: &Keys, output_type: OutputType) -> Result<Vec<MetricSpec>, TaskError> {
    let path = keys.path;
    let entries = match keys.map.get("metric_list") {
        None | Some(Value::Null) => {
            return Ok(output_type
                .default_metrics()
                .iter()
                .map(|&name| MetricSpec {
                    name: name.into(),
                    higher_is_better: output_type.metric(name).expect("a default metric").1,
                })
                .collect());
        }
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        Some(other) => {
            return Err(invalid(
                path,
                "metric_list",
                format!("expected a non-empty list of metrics, found {other}"),
            ));
        }
    };
    let mut specs: Vec<MetricSpec> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("metric_list[{i}]");
        let Value::Object(entry) = entry else {
            return Err(invalid(
                path,
                &key,
                format!("expected a mapping, found {entry}"),
            ));
        };
        if let Some(other) = entry
            .keys()
            .find(|k| !["metric", "aggregation", "higher_is_better"].contains(&k.as_str()))
        {
            return Err(unsupported(path, &format!("{key}.{other}")));
        }
        let name = match entry.get("metric") {
            Some(Value::String(name)) => name.clone(),
            Some(other) => {
                return Err(invalid(
                    path,
                    &format!("{key}.metric"),
                    format!("expected a metric name, found {other}"),
                ));
            }
            None => return Err(missing(path, &format!("{key}.metric"), "")),
        };
        let Some((aggregation, default_higher)) = output_type.metric(&name) else {
            return Err(invalid(
                path,
                &format!("{key}.metric"),
                format!(
                    "`{name}` is not a {} metric cpt computes (it computes {})",
                    output_type.name(),
                    match output_type {
                        OutputType::MultipleChoice => "acc, acc_norm, acc_bytes",
                        OutputType::Loglikelihood => "acc, perplexity",
                        OutputType::LoglikelihoodRolling =>
                            "word_perplexity, byte_perplexity, bits_per_byte",
                    }
                ),
            ));
        };
        match entry.get("aggregation") {
            None | Some(Value::Null) => {}
            Some(Value::String(given)) if given == aggregation => {}
            Some(other) => {
                return Err(invalid(
                    path,
                    &format!("{key}.aggregation"),
                    format!("`{name}` is aggregated by `{aggregation}` only, found {other}"),
                ));
            }
        }
        let higher_is_better = match entry.get("higher_is_better") {
            None | Some(Value::Null) => default_higher,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(
                    path,
                    &format!("{key}.higher_is_better"),
                    format!("expected true or false, found {other}"),
                ));
            }
        };
        if specs.iter().any(|s| s.name == name) {
            return Err(invalid(
                path,
                &format!("{key}.metric"),
                format!("`{name}` twice"),
            ));
        }
        specs.push(MetricSpec {
            name,
            higher_is_better,
        });
    }
    Ok(specs)
}

fn sampler(keys: &Keys) -> Result<SamplerKind, TaskError> {
    let path = keys.path;
    let config = match keys.map.get("fewshot_config") {
        None | Some(Value::Null) => return Ok(SamplerKind::Default),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(invalid(
                path,
                "fewshot_config",
                format!("expected a mapping, found {other}"),
            ));
        }
    };
    if let Some(key) = config.keys().find(|k| *k != "sampler") {
        return Err(unsupported(path, &format!("fewshot_config.{key}")));
    }
    match config.get("sampler") {
        None | Some(Value::Null) => Ok(SamplerKind::Default),
        Some(Value::String(s)) if s == "default" => Ok(SamplerKind::Default),
        Some(Value::String(s)) if s == "first_n" => Ok(SamplerKind::FirstN),
        Some(other) => Err(invalid(
            path,
            "fewshot_config.sampler",
            format!("{other} is not supported (cpt has `default` and `first_n`)"),
        )),
    }
}

/// The task file's keys, with those of its `include` chain underneath (the including file's
/// keys win, as in lm-eval's `load_yaml_config`). `include` paths are relative to the file.
fn read_with_includes(path: &Path, depth: usize) -> Result<Map<String, Value>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let map = parse_yaml(path, &text)?;
    let Some(include) = map.get("include") else {
        return Ok(map);
    };
    let Value::String(include) = include else {
        return Err(invalid(
            path,
            "include",
            format!("expected a file name, found {include}"),
        ));
    };
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(invalid(
            path,
            "include",
            format!("more than {MAX_INCLUDE_DEPTH} nested includes (a cycle?)"),
        ));
    }
    let base_path = path.parent().unwrap_or(Path::new(".")).join(include);
    if !base_path.is_file() {
        return Err(invalid(
            path,
            "include",
            format!("{} does not exist", base_path.display()),
        ));
    }
    let mut merged = read_with_includes(&base_path, depth + 1)?;
    merged.remove("include");
    merged.extend(map);
    Ok(merged)
}

/// The known keys of a YAML task file as JSON values (ignored keys dropped); an unknown key, or
/// a tagged value anywhere under a known key, is refused by name.
pub(crate) fn parse_yaml(path: &Path, text: &str) -> Result<Map<String, Value>, TaskError> {
    let yaml_error = |message: String| TaskError::Yaml {
        path: path.to_path_buf(),
        message,
    };
    let documents = YamlOwned::load_from_str(text).map_err(|e| yaml_error(e.to_string()))?;
    let Some(YamlOwned::Mapping(mapping)) = documents.into_iter().next() else {
        return Err(yaml_error("expected a mapping of keys at the top".into()));
    };
    let mut map = Map::new();
    for (key, value) in mapping {
        let key = match key {
            YamlOwned::Value(ScalarOwned::String(key)) => key,
            other => return Err(yaml_error(format!("key {other:?} is not a string"))),
        };
        // Keys are checked before values, so that `process_docs: !function ...` is refused as
        // an unsupported key rather than as a function.
        if IGNORED_KEYS.contains(&key.as_str()) {
            continue;
        }
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(unsupported(path, &key));
        }
        let value = to_json(&value).map_err(|problem| match problem {
            Problem::Tag(tag) => TaskError::PythonFunction {
                path: path.to_path_buf(),
                key: key.clone(),
                tag,
            },
            Problem::Other(message) => invalid(path, &key, message),
        })?;
        map.insert(key, value);
    }
    Ok(map)
}

enum Problem {
    Tag(String),
    Other(String),
}

fn to_json(node: &YamlOwned) -> Result<Value, Problem> {
    Ok(match node {
        YamlOwned::Value(scalar) => match scalar {
            ScalarOwned::Null => Value::Null,
            ScalarOwned::Boolean(b) => Value::Bool(*b),
            ScalarOwned::Integer(i) => Value::from(*i),
            ScalarOwned::FloatingPoint(f) => serde_json::Number::from_f64(f.into_inner())
                .map(Value::Number)
                .ok_or_else(|| Problem::Other(format!("{} is not a finite number", f)))?,
            ScalarOwned::String(s) => Value::String(s.clone()),
        },
        YamlOwned::Representation(text, _, _) => Value::String(text.clone()),
        YamlOwned::Sequence(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        YamlOwned::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    YamlOwned::Value(ScalarOwned::String(key)) => key.clone(),
                    YamlOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
                    other => return Err(Problem::Other(format!("key {other:?} is not a string"))),
                };
                map.insert(key, to_json(value)?);
            }
            Value::Object(map)
        }
        YamlOwned::Tagged(tag, _) => {
            return Err(Problem::Tag(format!("{}{}", tag.handle, tag.suffix)));
        }
        YamlOwned::Alias(_) => {
            return Err(Problem::Other("YAML aliases are not supported".into()));
        }
        YamlOwned::BadValue => return Err(Problem::Other("not a valid YAML value".into())),
    })
}

fn unsupported(path: &Path, key: &str) -> TaskError {
    TaskError::UnsupportedKey {
        path: path.to_path_buf(),
        key: key.into(),
    }
}

fn missing(path: &Path, key: &str, hint: &str) -> TaskError {
    TaskError::MissingKey {
        path: path.to_path_buf(),
        key: key.into(),
        hint: hint.into(),
    }
}

pub(crate) fn invalid(path: &Path, key: &str, message: String) -> TaskError {
    TaskError::InvalidValue {
        path: path.to_path_buf(),
        key: key.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TaskConfig, TaskError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, text).unwrap();
        TaskConfig::read(&path)
    }

    const BASE: &str = "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: \
                        d.jsonl\ntest_split: test\n";

    #[test]
    fn defaults_follow_lm_eval() {
        let config = parse(&format!(
            "{BASE}output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [a, b]\n\
             doc_to_target: 0\n"
        ))
        .unwrap();
        assert_eq!(config.target_delimiter, " ");
        assert_eq!(config.fewshot_delimiter, "\n\n");
        assert_eq!(config.description, "");
        assert_eq!(config.sampler, SamplerKind::Default);
        assert_eq!(config.doc_to_target, Some(Field::Int(0)));
        assert_eq!(
            config.doc_to_choice,
            Some(Field::List(vec!["a".into(), "b".into()]))
        );
        let names: Vec<_> = config.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["acc", "acc_norm"]);
        assert_eq!(config.eval_split(), "test");
        assert_eq!(config.fewshot_pool_split(), "test");
        assert!(
            !config.excludes_eval_doc(),
            "fewshot_split None != test_split test"
        );
    }

    #[test]
    fn pool_and_exclusion_follow_lm_eval() {
        let config = parse(
            "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: \
             d.jsonl\n    train: t.jsonl\nvalidation_split: validation\ntraining_split: \
             train\noutput_type: loglikelihood\ndoc_to_text: q\ndoc_to_target: a\n",
        )
        .unwrap();
        assert_eq!(config.eval_split(), "validation");
        assert_eq!(config.fewshot_pool_split(), "train");
        assert!(
            config.excludes_eval_doc(),
            "fewshot_split None == test_split None"
        );
    }

    #[test]
    fn include_is_overridden_by_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.yaml"),
            format!("{BASE}output_type: loglikelihood\ndoc_to_text: q\ndoc_to_target: a\n"),
        )
        .unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(
            &path,
            "include: base.yaml\ntask: child\ndoc_to_text: other\n",
        )
        .unwrap();
        let config = TaskConfig::read(&path).unwrap();
        assert_eq!(config.name, "child");
        assert_eq!(config.doc_to_text, Some(Field::Text("other".into())));
        assert_eq!(config.output_type, OutputType::Loglikelihood);
    }

    #[test]
    fn tagged_values_are_refused_by_key() {
        let err = parse(&format!(
            "{BASE}output_type: loglikelihood\ndoc_to_text: !function utils.text\n"
        ))
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("key `doc_to_text`"), "{message}");
        assert!(message.contains("!function"), "{message}");
    }
}
