//! The runs' configs side by side: the keys whose values differ between runs, then each
//! `config.toml` in full behind a disclosure.

use super::format::escape;
use super::run::Run;
use std::collections::BTreeMap;

/// The configs section's HTML.
pub fn configs_html(runs: &[Run]) -> String {
    let mut html = String::new();
    if runs.len() > 1 {
        let flat: Vec<BTreeMap<String, String>> = runs
            .iter()
            .map(|r| r.config.as_ref().map(flatten).unwrap_or_default())
            .collect();
        let mut keys: Vec<&String> = flat.iter().flat_map(|f| f.keys()).collect();
        keys.sort();
        keys.dedup();
        let differing: Vec<&String> = keys
            .into_iter()
            .filter(|k| flat.windows(2).any(|w| w[0].get(*k) != w[1].get(*k)))
            .collect();
        if differing.is_empty() {
            html.push_str("<p>The configs are identical.</p>\n");
        } else {
            html.push_str("<table class=\"diff\"><thead><tr><th>key</th>");
            for run in runs {
                html.push_str(&format!("<th>{}</th>", escape(&run.name)));
            }
            html.push_str("</tr></thead><tbody>\n");
            for key in differing {
                html.push_str(&format!("<tr><td><code>{}</code></td>", escape(key)));
                for f in &flat {
                    let value = f.get(key).map_or("—".to_string(), |v| escape(v));
                    html.push_str(&format!("<td><code>{value}</code></td>"));
                }
                html.push_str("</tr>\n");
            }
            html.push_str("</tbody></table>\n");
        }
    }
    html.push_str("<div class=\"configs\">\n");
    for run in runs {
        let open = if runs.len() == 1 { " open" } else { "" };
        let text = run
            .config_text
            .as_deref()
            .map_or("(no config.toml)".to_string(), escape);
        html.push_str(&format!(
            "<details{open}><summary>{} — config.toml</summary><pre>{text}</pre></details>\n",
            escape(&run.name)
        ));
    }
    html.push_str("</div>\n");
    html
}

/// Every leaf of `table` by dotted path (`schedule.peak_lr`, `experiences[1].steps`).
fn flatten(table: &toml::Table) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in table {
        flatten_into(key.clone(), value, &mut out);
    }
    out
}

fn flatten_into(path: String, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                flatten_into(format!("{path}.{key}"), v, out);
            }
        }
        toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
            for (i, v) in items.iter().enumerate() {
                flatten_into(format!("{path}[{i}]"), v, out);
            }
        }
        leaf => {
            out.insert(path, leaf.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_names_nested_keys_and_tables_in_arrays() {
        let table: toml::Table = toml::from_str(
            "strategies = [\"replay\"]\n[schedule]\npeak_lr = 0.001\n\
             [[experiences]]\nname = \"a\"\n[[experiences]]\nname = \"b\"\n",
        )
        .unwrap();
        let flat = flatten(&table);
        assert_eq!(flat["strategies"], "[\"replay\"]");
        assert_eq!(flat["schedule.peak_lr"], "0.001");
        assert_eq!(flat["experiences[1].name"], "\"b\"");
    }
}
