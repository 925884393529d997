//! Data recipes of the run config: metadata conditioning, row filters and repeated subsets —
//! the settings, how each source's metadata is resolved, and their checks.
//!
//! Metadata conditioning follows MeCo ("Metadata Conditioning Accelerates Language Model
//! Pre-training", Gao et al., 2025): each document is read as `metadata + separator + text`,
//! the metadata tokens out of the loss, and a last cooldown experience trains on plain text so
//! the model works without metadata.
//!
//! A source's metadata is the most specific setting that exists: a mixture component's
//! `metadata`, else its experience's, else `data.metadata_column`.

use crate::config::RunConfig;
use crate::error::{CoreError, Result};
use crate::row_filter::RowFilter;
use serde::{Deserialize, Serialize};

/// The separator between metadata and text unless `data.metadata_separator` says otherwise.
pub const DEFAULT_METADATA_SEPARATOR: &str = "\n\n";

/// The `metadata` key of an experience or mixture component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetadataSetting {
    /// `true`: each row's `data.metadata_column`; `false`: no metadata (plain text).
    Switch(bool),
    /// The same metadata before every document, e.g. `"source: austen"`.
    Constant(String),
}

/// Where one source's metadata comes from, once the settings are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource<'a> {
    /// Plain text.
    None,
    /// Each row's value of this string column (a null value: no prefix for that row).
    Column(&'a str),
    /// This string before every document.
    Constant(&'a str),
}

impl RunConfig {
    /// The metadata of experience `experience`'s training source: of its mixture component
    /// `component`, or of its `train` files when `component` is `None`.
    pub fn metadata_of(&self, experience: usize, component: Option<usize>) -> MetadataSource<'_> {
        let e = &self.experiences[experience];
        let setting = component
            .and_then(|k| e.mixture[k].metadata.as_ref())
            .or(e.metadata.as_ref());
        self.resolve_metadata(setting)
    }

    /// The metadata of experience `experience`'s eval set: none unless `eval.metadata`, else the
    /// experience's own setting (or `data.metadata_column`).
    pub fn eval_metadata_of(&self, experience: usize) -> MetadataSource<'_> {
        if !self.eval.metadata {
            return MetadataSource::None;
        }
        self.resolve_metadata(self.experiences[experience].metadata.as_ref())
    }

    /// The metadata of the `eval.held_out` sets: `data.metadata_column` under `eval.metadata`.
    pub fn held_out_metadata(&self) -> MetadataSource<'_> {
        if !self.eval.metadata {
            return MetadataSource::None;
        }
        self.resolve_metadata(None)
    }

    /// What joins metadata and text.
    pub fn metadata_separator(&self) -> &str {
        self.data
            .metadata_separator
            .as_deref()
            .unwrap_or(DEFAULT_METADATA_SEPARATOR)
    }

    /// Whether metadata tokens count in the loss.
    pub fn metadata_loss(&self) -> bool {
        self.data.metadata_loss.unwrap_or(false)
    }

    /// Whether any source of the run reads metadata.
    pub fn uses_metadata(&self) -> bool {
        self.data.metadata_column.is_some()
            || self.experiences.iter().enumerate().any(|(i, e)| {
                self.metadata_of(i, None) != MetadataSource::None
                    || (0..e.mixture.len())
                        .any(|k| self.metadata_of(i, Some(k)) != MetadataSource::None)
            })
    }

    fn resolve_metadata<'a>(&'a self, setting: Option<&'a MetadataSetting>) -> MetadataSource<'a> {
        let column = || {
            self.data
                .metadata_column
                .as_deref()
                .map_or(MetadataSource::None, MetadataSource::Column)
        };
        match setting {
            None | Some(MetadataSetting::Switch(true)) => column(),
            Some(MetadataSetting::Switch(false)) => MetadataSource::None,
            Some(MetadataSetting::Constant(text)) => MetadataSource::Constant(text),
        }
    }

    /// Check the recipe keys, naming the offending one.
    pub(crate) fn validate_recipes(&self) -> Result<()> {
        let invalid = |key: String, message: String| Err(CoreError::Invalid { key, message });
        let uses_metadata = self.uses_metadata();
        if self.data.metadata_loss.is_some() && !uses_metadata {
            return invalid(
                "data.metadata_loss".into(),
                "no source has metadata (set `data.metadata_column` or a `metadata` string)".into(),
            );
        }
        if self.data.metadata_separator.is_some() && !uses_metadata {
            return invalid(
                "data.metadata_separator".into(),
                "no source has metadata (set `data.metadata_column` or a `metadata` string)".into(),
            );
        }
        if self.eval.metadata && !uses_metadata {
            return invalid("eval.metadata".into(), "no source has metadata".into());
        }
        if self.data.metadata_column.as_deref() == Some("") {
            return invalid("data.metadata_column".into(), "must name a column".into());
        }
        let check_setting = |key: String, setting: &Option<MetadataSetting>| match setting {
            Some(MetadataSetting::Switch(true)) if self.data.metadata_column.is_none() => invalid(
                key,
                "`true` reads `data.metadata_column`, which is not set".into(),
            ),
            Some(MetadataSetting::Constant(text)) if text.is_empty() => {
                invalid(key, "an empty metadata string; use `false` for none".into())
            }
            _ => Ok(()),
        };
        let check_filter = |key: String, filter: &Option<String>| match filter {
            Some(text) => RowFilter::parse(text)
                .map(|_| ())
                .or_else(|m| invalid(key, m)),
            None => Ok(()),
        };
        for (i, e) in self.experiences.iter().enumerate() {
            let key = |k: &str| format!("experiences[{i}].{k}");
            check_setting(key("metadata"), &e.metadata)?;
            check_filter(key("filter"), &e.filter)?;
            for (k, c) in e.mixture.iter().enumerate() {
                let key = |f: &str| format!("experiences[{i}].mixture[{k}].{f}");
                check_setting(key("metadata"), &c.metadata)?;
                check_filter(key("filter"), &c.filter)?;
                let on = matches!(
                    c.metadata,
                    Some(MetadataSetting::Constant(_) | MetadataSetting::Switch(true))
                );
                if on && e.metadata == Some(MetadataSetting::Switch(false)) {
                    return invalid(
                        key("metadata"),
                        "the experience sets `metadata = false`; drop one of the two".into(),
                    );
                }
            }
            if !e.mixture.is_empty() && e.filter.is_some() {
                return invalid(
                    key("filter"),
                    "filters `train`; a mixture's components take their own `filter`".into(),
                );
            }
            let component_metadata =
                (0..e.mixture.len()).any(|k| self.metadata_of(i, Some(k)) != MetadataSource::None);
            if self.eval.metadata
                && component_metadata
                && self.eval_metadata_of(i) == MetadataSource::None
                && e.metadata.is_none()
            {
                return invalid(
                    "eval.metadata".into(),
                    format!(
                        "experience `{}` has metadata only per mixture component, so its eval set \
                         has none; give the experience a `metadata`",
                        e.name
                    ),
                );
            }
            match (e.subset_docs, e.epochs) {
                (Some(0), _) => return invalid(key("subset_docs"), "must be at least 1".into()),
                (Some(_), _) if !e.mixture.is_empty() => {
                    return invalid(
                        key("subset_docs"),
                        "samples `train` files; it does not apply to a mixture".into(),
                    );
                }
                (None, Some(_)) => {
                    return invalid(
                        key("epochs"),
                        "counts passes over a `subset_docs` subset; set `subset_docs`".into(),
                    );
                }
                (_, Some(0)) => return invalid(key("epochs"), "must be at least 1".into()),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RunConfig;
    use crate::config::{MetadataSetting, MetadataSource};
    use std::path::Path;

    const BASE: &str = r#"
seed = 1
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
[[experiences]]
name = "b"
mixture = [{ files = ["b.parquet"], weight = 1.0 }, { files = ["c.parquet"], weight = 1.0 }]
eval = ["b_eval.parquet"]
steps = 2
[train]
batch_size = 2
[schedule]
kind = "wsd"
peak_lr = 0.01
"#;

    fn parse(overrides: &[&str]) -> crate::Result<RunConfig> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::parse(BASE, Path::new("run.toml"), &overrides)
    }

    #[test]
    fn the_most_specific_metadata_setting_wins() {
        let c = parse(&[
            "data.metadata_column=\"url\"",
            "experiences[1].metadata=\"source: b\"",
            "experiences[1].mixture[1].metadata=false",
        ])
        .unwrap();
        assert_eq!(c.metadata_of(0, None), MetadataSource::Column("url"));
        assert_eq!(
            c.metadata_of(1, Some(0)),
            MetadataSource::Constant("source: b")
        );
        assert_eq!(c.metadata_of(1, Some(1)), MetadataSource::None);
        assert_eq!(c.metadata_separator(), "\n\n");
        assert!(!c.metadata_loss());
        // Evaluation is plain unless asked for.
        assert_eq!(c.eval_metadata_of(0), MetadataSource::None);
        let c = parse(&["data.metadata_column=\"url\"", "eval.metadata=true"]).unwrap();
        assert_eq!(c.eval_metadata_of(0), MetadataSource::Column("url"));
        assert_eq!(
            c.experiences[0].metadata, None,
            "absent means inherit, not off"
        );
        let c = parse(&["experiences[0].metadata=true", "data.metadata_column=\"u\""]).unwrap();
        assert_eq!(
            c.experiences[0].metadata,
            Some(MetadataSetting::Switch(true))
        );
    }

    #[test]
    fn misused_recipe_keys_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["data.metadata_loss=true"], "data.metadata_loss"),
            (
                &["data.metadata_separator=\" | \""],
                "data.metadata_separator",
            ),
            (&["eval.metadata=true"], "eval.metadata"),
            (&["experiences[0].metadata=true"], "experiences[0].metadata"),
            (&["experiences[0].metadata=\"\""], "experiences[0].metadata"),
            (
                &[
                    "experiences[1].metadata=false",
                    "experiences[1].mixture[0].metadata=\"s\"",
                ],
                "experiences[1].mixture[0].metadata",
            ),
            (
                &[
                    "eval.metadata=true",
                    "experiences[1].mixture[0].metadata=\"s\"",
                ],
                "eval.metadata",
            ),
            (
                &["experiences[0].filter=\"score >=\""],
                "experiences[0].filter",
            ),
            (
                &["experiences[1].mixture[1].filter=\"score\""],
                "experiences[1].mixture[1].filter",
            ),
            (
                &["experiences[1].filter=\"s > 1\""],
                "experiences[1].filter",
            ),
            (
                &["experiences[0].subset_docs=0"],
                "experiences[0].subset_docs",
            ),
            (
                &["experiences[1].subset_docs=3"],
                "experiences[1].subset_docs",
            ),
            (&["experiences[0].epochs=2"], "experiences[0].epochs"),
            (
                &["experiences[0].subset_docs=3", "experiences[0].epochs=0"],
                "experiences[0].epochs",
            ),
        ];
        for (overrides, key) in cases {
            let msg = parse(overrides).unwrap_err().to_string();
            assert!(
                msg.contains(key),
                "{overrides:?}: expected `{key}` in: {msg}"
            );
        }
        // The same keys, used as meant, pass.
        parse(&[
            "data.metadata_column=\"url\"",
            "data.metadata_loss=true",
            "data.metadata_separator=\" | \"",
            "eval.metadata=true",
            "experiences[0].filter=\"score >= 0.5\"",
            "experiences[0].subset_docs=3",
            "experiences[0].epochs=2",
            "experiences[1].mixture[0].filter=\"score < 2 and n != 1\"",
        ])
        .unwrap();
    }
}
