//! `doc_to_text`, `doc_to_choice`, `doc_to_target` and `description` as lm-eval resolves them
//! (`ConfigurableTask.doc_to_*` in `lm_eval/api/task.py`): a column name of the evaluated split
//! is a field lookup, any other string a Jinja template rendered with the document's columns as
//! variables (minijinja, configured as lm-eval's `jinja2.Environment`: strict undefined
//! variables, trailing newline kept, no HTML escaping, its `regex_replace` filter, and Python's
//! string methods such as `strip` and `split`), an integer or a list is a literal.
//!
//! Rendered values convert as lm-eval converts them: a digit string from `doc_to_text` or
//! `doc_to_target` is an index when the task has choices, a `[...]` target and every templated
//! `doc_to_choice` are Python literals (`ast.literal_eval`).
//!
//! Rendering differs from Python's Jinja where values are not strings or integers: minijinja
//! writes a list as `["a", "b"]` where Python writes `['a', 'b']` (both parse as the same
//! literal), and floats without Python's exponent notation.

use super::config::{Field, TaskConfig};
use super::data::Doc;
use super::error::TaskError;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Map, Value};

/// Which document a rendering is for, for errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocRef<'a> {
    /// Its split.
    pub split: &'a str,
    /// Its index in the split.
    pub index: usize,
}

/// The task's prompt fields, compiled.
pub(crate) struct Prompts<'c> {
    config: &'c TaskConfig,
    env: Environment<'static>,
    /// Columns of the evaluated split: a field string naming one is a lookup, not a template
    /// (lm-eval checks `self.features`, the evaluated split's columns, for every split).
    columns: Vec<String>,
}

const KEYS: [&str; 4] = [
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "description",
];

impl<'c> Prompts<'c> {
    /// Compile the templates of `config` for documents with `columns`.
    pub fn new(config: &'c TaskConfig, columns: Vec<String>) -> Result<Self, TaskError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters"),
        );
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("regex_replace", regex_replace);
        let mut prompts = Prompts {
            config,
            env,
            columns,
        };
        for key in KEYS {
            if let Some(source) = prompts.template_source(key) {
                let source = source.to_string();
                prompts
                    .env
                    .add_template_owned(key, source.clone())
                    .map_err(|e| TaskError::InvalidValue {
                        path: config.path.clone(),
                        key: key.into(),
                        message: format!("not a valid Jinja template ({source:?}): {e:#}"),
                    })?;
            }
        }
        Ok(prompts)
    }

    /// The template of `key`, unless it is absent, a literal or a column name.
    fn template_source(&self, key: &str) -> Option<&'c str> {
        let text = match key {
            "description" => Some(self.config.description.as_str()).filter(|d| !d.is_empty()),
            _ => match self.field(key) {
                Some(Field::Text(text)) => Some(text.as_str()),
                _ => None,
            },
        }?;
        (!self.columns.iter().any(|c| c == text)).then_some(text)
    }

    fn field(&self, key: &str) -> Option<&'c Field> {
        match key {
            "doc_to_text" => self.config.doc_to_text.as_ref(),
            "doc_to_choice" => self.config.doc_to_choice.as_ref(),
            "doc_to_target" => self.config.doc_to_target.as_ref(),
            _ => None,
        }
    }

    /// A template error of `key` on the document `at`, quoting the key's template.
    pub fn error(&self, key: &str, at: DocRef, message: String) -> TaskError {
        let template = match key {
            "description" => self.config.description.clone(),
            _ => match self.field(key) {
                Some(Field::Text(text)) => text.clone(),
                Some(Field::Int(i)) => i.to_string(),
                Some(Field::List(items)) => Value::Array(items.clone()).to_string(),
                None => String::new(),
            },
        };
        TaskError::Template {
            path: self.config.path.clone(),
            key: key.into(),
            doc: at.index,
            detail: format!(
                "of split `{}`: {message} (template: {template:?})",
                at.split
            ),
        }
    }

    fn render(&self, key: &str, doc: &Doc, at: DocRef) -> Result<String, TaskError> {
        let template = self.env.get_template(key).expect("compiled in new");
        template
            .render(minijinja::Value::from(minijinja::value::Serde(doc)))
            .map_err(|e| self.error(key, at, format!("{e:#}")))
    }

    /// The value of a field string: the column's value, or the template rendered.
    fn lookup_or_render(
        &self,
        key: &str,
        text: &str,
        doc: &Doc,
        at: DocRef,
    ) -> Result<Result<Value, String>, TaskError> {
        if self.columns.iter().any(|c| c == text) {
            Ok(Ok(doc.get(text).cloned().unwrap_or(Value::Null)))
        } else {
            self.render(key, doc, at).map(Err)
        }
    }

    /// `doc_to_text`: the document's question. An index (lm-eval's multiple-input tasks, where
    /// the choices are contexts) is refused.
    pub fn text(&self, doc: &Doc, at: DocRef) -> Result<String, TaskError> {
        let key = "doc_to_text";
        let multiple_input = || {
            self.error(
                key,
                at,
                "gives an index: multiple-input tasks (one context per choice) are not \
                 supported"
                    .into(),
            )
        };
        match self.field(key) {
            Some(Field::Text(text)) => match self.lookup_or_render(key, text, doc, at)? {
                Ok(Value::String(s)) => Ok(s),
                Ok(other) => Err(self.error(key, at, format!("gives {other}, not a string"))),
                Err(s) if is_digits(&s) && self.config.doc_to_choice.is_some() => {
                    Err(multiple_input())
                }
                Err(s) => Ok(s),
            },
            Some(Field::Int(_)) => Err(multiple_input()),
            Some(Field::List(_)) => Err(self.error(key, at, "a list is not a prompt".into())),
            None => Err(self.error(key, at, "is not set".into())),
        }
    }

    /// `doc_to_target`: a string, an integer index or a list, as lm-eval returns it.
    pub fn target(&self, doc: &Doc, at: DocRef) -> Result<Value, TaskError> {
        let key = "doc_to_target";
        match self.field(key) {
            Some(Field::Text(text)) => match self.lookup_or_render(key, text, doc, at)? {
                Ok(value) => Ok(value),
                Err(s) if is_digits(&s) && self.config.doc_to_choice.is_some() => s
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|e| self.error(key, at, format!("index {s}: {e}"))),
                Err(s) if s.len() >= 2 && s.starts_with('[') && s.ends_with(']') => {
                    Ok(parse_literal(&s).unwrap_or(Value::String(s)))
                }
                Err(s) => Ok(Value::String(s)),
            },
            Some(Field::Int(i)) => Ok(Value::from(*i)),
            Some(Field::List(items)) => Ok(Value::Array(items.clone())),
            None => Err(self.error(key, at, "is not set".into())),
        }
    }

    /// `doc_to_choice`: the choices as strings (as lm-eval formats them into requests).
    pub fn choices(&self, doc: &Doc, at: DocRef) -> Result<Vec<String>, TaskError> {
        let key = "doc_to_choice";
        let items = match self.field(key) {
            Some(Field::Text(text)) => match self.lookup_or_render(key, text, doc, at)? {
                Ok(Value::Array(items)) => items,
                Ok(other) => {
                    return Err(self.error(key, at, format!("gives {other}, not a list")));
                }
                Err(rendered) => match parse_literal(&rendered) {
                    Ok(Value::Array(items)) => items,
                    Ok(other) => {
                        return Err(self.error(key, at, format!("renders {other}, not a list")));
                    }
                    Err(e) => {
                        return Err(self.error(
                            key,
                            at,
                            format!("renders {rendered:?}, not a Python list literal: {e}"),
                        ));
                    }
                },
            },
            Some(Field::List(items)) => items.clone(),
            Some(Field::Int(_)) => return Err(self.error(key, at, "is not a list".into())),
            None => return Err(self.error(key, at, "is not set".into())),
        };
        items
            .iter()
            .map(|item| {
                python_str(item)
                    .ok_or_else(|| self.error(key, at, format!("choice {item} is not text")))
            })
            .collect()
    }

    /// `description`, rendered against the evaluated document (a field name is looked up in
    /// the document itself, as lm-eval's `resolve_field`); empty when unset.
    pub fn description(&self, doc: &Doc, at: DocRef) -> Result<String, TaskError> {
        let text = &self.config.description;
        if text.is_empty() {
            return Ok(String::new());
        }
        match doc.get(text.as_str()) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.error("description", at, format!("gives {other}, not text"))),
            None => self.render("description", doc, at),
        }
    }
}

/// Python's `str.isdigit` for the ASCII digits lm-eval's templates produce.
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `str(value)` in Python for the scalars a choice list holds.
pub(crate) fn python_str(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64()?;
            let text = f.to_string();
            Some(if text.contains(['.', 'e', 'i', 'N']) {
                text
            } else {
                format!("{text}.0")
            })
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// lm-eval's `regex_replace` Jinja filter: Python's `re.sub(pattern, repl, string, count)`.
/// Python's `\1` and `\g<name>` references in `repl` become the regex crate's `${1}`, `${name}`.
fn regex_replace(
    string: String,
    pattern: String,
    repl: String,
    count: Option<usize>,
) -> Result<String, minijinja::Error> {
    let re = regex::Regex::new(&pattern).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
    })?;
    let mut replacement = String::new();
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => replacement.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut group = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        group.push(d);
                        chars.next();
                    }
                    replacement.push_str(&format!("${{{group}}}"));
                }
                Some('g') => {
                    chars.next();
                    let name: String = chars.by_ref().skip(1).take_while(|&c| c != '>').collect();
                    replacement.push_str(&format!("${{{name}}}"));
                }
                Some('n') => {
                    chars.next();
                    replacement.push('\n');
                }
                Some('t') => {
                    chars.next();
                    replacement.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    replacement.push('\\');
                }
                _ => replacement.push('\\'),
            },
            other => replacement.push(other),
        }
    }
    Ok(re
        .replacen(&string, count.unwrap_or(0), replacement.as_str())
        .into_owned())
}

/// `ast.literal_eval` for the literals templates render: lists and tuples (as lists), dicts,
/// strings in either quote with Python's escapes (and Rust's `\u{..}`, which minijinja writes),
/// integers, floats, `True`, `False`, `None`.
pub(crate) fn parse_literal(text: &str) -> Result<Value, String> {
    let mut parser = Literal {
        chars: text.chars().collect(),
        at: 0,
    };
    let value = parser.value()?;
    parser.space();
    if parser.at != parser.chars.len() {
        return Err(format!("unexpected text at character {}", parser.at));
    }
    Ok(value)
}

struct Literal {
    chars: Vec<char>,
    at: usize,
}

impl Literal {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.space();
        match self.peek() {
            Some('[') => self.sequence(']'),
            Some('(') => self.sequence(')'),
            Some('{') => self.dict(),
            Some(q @ ('\'' | '"')) => {
                // Adjacent literals concatenate, as in Python.
                let mut s = self.string(q)?;
                loop {
                    self.space();
                    match self.peek() {
                        Some(q @ ('\'' | '"')) => s.push_str(&self.string(q)?),
                        _ => return Ok(Value::String(s)),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            Some(c) if c.is_alphabetic() => {
                let start = self.at;
                while self.peek().is_some_and(char::is_alphanumeric) {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    other => Err(format!("`{other}` is not a literal")),
                }
            }
            Some(c) => Err(format!("unexpected {c:?} at character {}", self.at)),
            None => Err("unexpected end".into()),
        }
    }

    fn sequence(&mut self, close: char) -> Result<Value, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.space();
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(c) if c == close => {}
                _ => {
                    return Err(format!(
                        "expected ',' or {close:?} at character {}",
                        self.at
                    ));
                }
            }
        }
    }

    fn dict(&mut self) -> Result<Value, String> {
        self.at += 1;
        let mut map = Map::new();
        loop {
            self.space();
            if self.peek() == Some('}') {
                self.at += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.space();
            if self.peek() != Some(':') {
                return Err(format!("expected ':' at character {}", self.at));
            }
            self.at += 1;
            map.insert(key, self.value()?);
            self.space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some('}') => {}
                _ => return Err(format!("expected ',' or '}}' at character {}", self.at)),
            }
        }
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.at += 1;
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.peek().ok_or("unterminated escape")?;
            self.at += 1;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '\'' | '"' => out.push(e),
                '\n' => {}
                'x' => out.push(self.hex(2)?),
                'u' if self.peek() == Some('{') => {
                    self.at += 1;
                    let start = self.at;
                    while self.peek().is_some_and(|c| c != '}') {
                        self.at += 1;
                    }
                    let digits: String = self.chars[start..self.at].iter().collect();
                    self.at += 1;
                    out.push(code_point(&digits)?);
                }
                'u' => out.push(self.hex(4)?),
                'U' => out.push(self.hex(8)?),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex(&mut self, n: usize) -> Result<char, String> {
        let end = self.at + n;
        let digits: String = self
            .chars
            .get(self.at..end)
            .ok_or("short escape")?
            .iter()
            .collect();
        self.at = end;
        code_point(&digits)
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
        {
            self.at += 1;
        }
        let text: String = self.chars[start..self.at]
            .iter()
            .filter(|&&c| c != '_')
            .collect();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{text}` is not a number"))
    }
}

fn code_point(hex: &str) -> Result<char, String> {
    u32::from_str_radix(hex, 16)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("bad escape \\u{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse_as_python_would() {
        assert_eq!(
            parse_literal(r#"['a', "b's", 'c\n', 3, -1.5, True, None]"#).unwrap(),
            serde_json::json!(["a", "b's", "c\n", 3, -1.5, true, null])
        );
        assert_eq!(
            parse_literal("('x' 'y', [])").unwrap(),
            serde_json::json!(["xy", []])
        );
        assert_eq!(
            parse_literal(r#"{"k": [1, 2,]}"#).unwrap(),
            serde_json::json!({"k": [1, 2]})
        );
        assert!(parse_literal("[1, 2").is_err());
        assert!(parse_literal("os.system").is_err());
    }

    #[test]
    fn minijinja_lists_round_trip_through_the_literal_parser() {
        let env = Environment::new();
        let items = serde_json::json!(["it's", "say \"hi\"", "back\\slash", "é"]);
        let rendered = env
            .render_str(
                "{{ x }}",
                minijinja::context! { x => minijinja::value::Serde(&items) },
            )
            .unwrap();
        assert_eq!(parse_literal(&rendered).unwrap(), items);
    }

    #[test]
    fn regex_replace_takes_python_references() {
        let out = regex_replace("a1 b2".into(), r"(\w)(\d)".into(), r"\2\g<1>$".into(), None);
        assert_eq!(out.unwrap(), "1a$ 2b$");
        let once = regex_replace("aaa".into(), "a".into(), "b".into(), Some(1));
        assert_eq!(once.unwrap(), "baa");
    }

    #[test]
    fn python_str_formats_scalars() {
        assert_eq!(python_str(&Value::from(2)).unwrap(), "2");
        assert_eq!(python_str(&Value::from(2.0)).unwrap(), "2.0");
        assert_eq!(python_str(&Value::from(true)).unwrap(), "True");
        assert_eq!(python_str(&Value::Null), None);
    }
}
