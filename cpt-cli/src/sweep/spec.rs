//! The sweep file: a base run config, fixed overrides, and the axes of the grid. Every key is
//! a `cpt run --set` path (`train.batch_size`, `model.config.hidden_size`,
//! `'experiences[2].mixture[1].weight'`).
//!
//! ```toml
//! base = "quickstart.toml"            # relative to this file
//! [set]                               # fixed overrides of every point
//! "experiences[0].steps" = 40
//! [grid]                              # one axis per key, its values in a list
//! "experiences[2].tokens" = [20000, 40000]
//! [[axis]]                            # keys that change together
//! name = "size"
//! keys = ["model.config.hidden_size", "model.config.intermediate_size"]
//! values = [[32, 64], [64, 128]]
//! labels = ["small", "large"]         # optional
//! ```

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sweep file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// The run config every point starts from, relative to the sweep file.
    base: PathBuf,
    /// Overrides applied to every point.
    #[serde(default)]
    set: toml::Table,
    /// One axis per key path: the key's values.
    #[serde(default)]
    grid: toml::Table,
    /// Axes of several keys that change together.
    #[serde(default)]
    axis: Vec<AxisFile>,
}

/// One `[[axis]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFile {
    /// Column name in `sweep.csv` and in point names.
    name: String,
    /// The key paths it sets.
    keys: Vec<String>,
    /// One row per grid value: a value for each key.
    values: Vec<Vec<toml::Value>>,
    /// What each row is called (default: its values joined by `-`).
    #[serde(default)]
    labels: Vec<String>,
}

/// A dimension of the grid: keys set together, and the rows of values they take.
#[derive(Debug, Clone)]
pub struct Axis {
    /// Its column in `sweep.csv` (a `[grid]` key's path, or an `[[axis]]`'s name).
    pub column: String,
    /// Its short name in point directory names.
    pub short: String,
    /// Key paths.
    pub keys: Vec<String>,
    /// Rows of values, one value per key.
    pub rows: Vec<Vec<toml::Value>>,
    /// One label per row.
    pub labels: Vec<String>,
}

/// A parsed sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The base run config (resolved against the sweep file's folder).
    pub base: PathBuf,
    /// Overrides of every point, as `key=value`.
    pub fixed: Vec<String>,
    /// The grid's dimensions: `[grid]` keys (in sorted order), then `[[axis]]`s in file order.
    pub axes: Vec<Axis>,
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub struct PointSpec {
    /// Position in the grid (first axis slowest).
    pub index: usize,
    /// Its directory name: index and labels.
    pub name: String,
    /// `(column, label)` per axis.
    pub values: Vec<(String, String)>,
    /// All its overrides (fixed ones first), as `key=value`.
    pub overrides: Vec<String>,
}

/// Columns `sweep.csv` writes itself, which an axis may not be called.
pub const RESERVED_COLUMNS: &[&str] = &["point", "params", "tokens", "steps", "wall_time_secs"];

impl Sweep {
    /// Read and check a sweep file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parse sweep text; `path` names it in errors and anchors `base`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file: SweepFile = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })?;
        let bad = |message: String| anyhow::anyhow!("{}: {message}", path.display());
        let base = path.parent().unwrap_or(Path::new("")).join(&file.base);

        let mut fixed = Vec::new();
        for (key, value) in flatten(&file.set) {
            fixed.push((key, value));
        }
        let mut axes = Vec::new();
        for (key, value) in flatten(&file.grid) {
            let toml::Value::Array(values) = value else {
                return Err(bad(format!(
                    "[grid] `{key}`: expected a list of values, found {}",
                    value.type_str()
                )));
            };
            if values.is_empty() {
                return Err(bad(format!("[grid] `{key}`: the list of values is empty")));
            }
            let labels = values
                .iter()
                .map(|v| {
                    label(v).ok_or_else(|| {
                        bad(format!(
                            "[grid] `{key}`: {} values need an [[axis]] with `labels`",
                            v.type_str()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            axes.push(Axis {
                column: key.clone(),
                short: short_name(&key),
                keys: vec![key],
                rows: values.into_iter().map(|v| vec![v]).collect(),
                labels,
            });
        }
        for axis in file.axis {
            axes.push(check_axis(axis).map_err(|e| bad(e.to_string()))?);
        }
        if axes.is_empty() {
            return Err(bad("no axes: give a [grid] table or an [[axis]]".into()));
        }
        // Short names of grid keys must tell points apart: fall back to the whole path.
        for i in 0..axes.len() {
            if axes.iter().filter(|a| a.short == axes[i].short).count() > 1 {
                axes[i].short = sanitize(&axes[i].column);
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, _) in &fixed {
            seen.insert(key, "[set]");
        }
        for axis in &axes {
            if RESERVED_COLUMNS.contains(&axis.column.as_str()) {
                return Err(bad(format!(
                    "axis name `{}` is taken by a column sweep.csv writes",
                    axis.column
                )));
            }
            for key in &axis.keys {
                if let Some(first) = seen.insert(key, &axis.column) {
                    return Err(bad(format!(
                        "key `{key}` is set twice (in {first} and in axis `{}`)",
                        axis.column
                    )));
                }
            }
        }
        let mut columns: Vec<&str> = axes.iter().map(|a| a.column.as_str()).collect();
        columns.sort_unstable();
        if let Some(w) = columns.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("axis name `{}` is used twice", w[0])));
        }
        Ok(Self {
            base,
            fixed: fixed.iter().map(|(k, v)| override_item(k, v)).collect(),
            axes,
        })
    }

    /// Every point of the grid, first axis slowest.
    pub fn points(&self) -> Vec<PointSpec> {
        let total: usize = self.axes.iter().map(|a| a.rows.len()).product();
        let width = (total.max(1) - 1).to_string().len();
        (0..total)
            .map(|index| {
                // Mixed-radix digits of the index, last axis fastest.
                let mut rest = index;
                let mut picks = vec![0; self.axes.len()];
                for (k, axis) in self.axes.iter().enumerate().rev() {
                    picks[k] = rest % axis.rows.len();
                    rest /= axis.rows.len();
                }
                let mut name = format!("{index:0width$}");
                let mut values = Vec::new();
                let mut overrides = self.fixed.clone();
                for (axis, &pick) in self.axes.iter().zip(&picks) {
                    let label = &axis.labels[pick];
                    name += &format!("_{}-{}", axis.short, sanitize(label));
                    values.push((axis.column.clone(), label.clone()));
                    for (key, value) in axis.keys.iter().zip(&axis.rows[pick]) {
                        overrides.push(override_item(key, value));
                    }
                }
                PointSpec {
                    index,
                    name,
                    values,
                    overrides,
                }
            })
            .collect()
    }
}

fn check_axis(axis: AxisFile) -> Result<Axis> {
    let name = &axis.name;
    if name.trim().is_empty() {
        bail!("an [[axis]] needs a `name`");
    }
    if axis.keys.is_empty() {
        bail!("axis `{name}`: `keys` is empty");
    }
    if axis.values.is_empty() {
        bail!("axis `{name}`: the list of values is empty");
    }
    for (i, row) in axis.values.iter().enumerate() {
        if row.len() != axis.keys.len() {
            bail!(
                "axis `{name}`: values[{i}] has {} values for {} keys",
                row.len(),
                axis.keys.len()
            );
        }
    }
    let labels = if axis.labels.is_empty() {
        axis.values
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| {
                        label(v).ok_or_else(|| {
                            anyhow::anyhow!("axis `{name}`: {} values need `labels`", v.type_str())
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(|parts| parts.join("-"))
            })
            .collect::<Result<Vec<_>>>()?
    } else if axis.labels.len() != axis.values.len() {
        bail!(
            "axis `{name}`: {} labels for {} rows of values",
            axis.labels.len(),
            axis.values.len()
        );
    } else {
        axis.labels
    };
    let mut sorted = labels.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        bail!("axis `{name}`: label `{}` is used twice", w[0]);
    }
    Ok(Axis {
        column: name.clone(),
        short: sanitize(name),
        keys: axis.keys,
        rows: axis.values,
        labels,
    })
}

/// `(dotted path, value)` of every leaf of a table: `model.config.hidden_size = 64` and
/// `"model.config.hidden_size" = 64` name the same key. A table is a set of keys, never a
/// value (an inline table inside an array is a value).
fn flatten(table: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => {
                for (sub, v) in flatten(inner) {
                    out.push((format!("{key}.{sub}"), v));
                }
            }
            other => out.push((key.clone(), other.clone())),
        }
    }
    out
}

/// A `cpt run --set` item: the value in TOML syntax (inline tables and arrays included).
fn override_item(key: &str, value: &toml::Value) -> String {
    format!("{key}={value}")
}

/// A scalar's text for labels; `None` for arrays and tables.
fn label(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            Some(value.to_string())
        }
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// A key path's last part, without indices: `experiences[2].mixture[1].weight` → `weight`.
fn short_name(key: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    sanitize(last.split('[').next().unwrap_or(last))
}

/// Text safe in a file name: letters, digits, `.`, `-` and `_` kept, anything else `_`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
