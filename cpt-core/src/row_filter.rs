//! Row filters on numeric columns (`filter = "score >= 0.7"` on an experience or a mixture
//! component): the small expression language of quality and subset controls.
//!
//! A filter is one comparison `<column> <op> <number>` or several joined by `and`:
//! `score >= 0.7 and length < 5000`. The operators are `>=`, `>`, `<=`, `<`, `==` and `!=`; the
//! number is any finite decimal (`0.7`, `-3`, `1e3`). A row is kept when every comparison holds;
//! a null value fails its comparison, so the row is dropped.

use serde::{Deserialize, Serialize};

/// A comparison operator of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CompareOp {
    /// Operators by spelling, two-character ones first so that `>=` is not read as `>`.
    const SPELLINGS: [(&'static str, CompareOp); 6] = [
        (">=", Self::Ge),
        ("<=", Self::Le),
        ("==", Self::Eq),
        ("!=", Self::Ne),
        (">", Self::Gt),
        ("<", Self::Lt),
    ];

    /// How the operator is written.
    pub fn symbol(self) -> &'static str {
        Self::SPELLINGS
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(s, _)| *s)
            .expect("every operator has a spelling")
    }

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Self::Ge => left >= right,
            Self::Gt => left > right,
            Self::Le => left <= right,
            Self::Lt => left < right,
            Self::Eq => left == right,
            Self::Ne => left != right,
        }
    }
}

/// One comparison `<column> <op> <number>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The numeric column compared.
    pub column: String,
    /// The comparison.
    pub op: CompareOp,
    /// The (finite) number compared against.
    pub value: f64,
}

/// A conjunction of [`Condition`]s, parsed from and written as its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RowFilter {
    conditions: Vec<Condition>,
}

// Values are finite (the parser refuses NaN), so equality is reflexive.
impl Eq for RowFilter {}

impl RowFilter {
    /// Parse `text`; the error says what was expected and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Err("an empty filter: expected `<column> <op> <number>`".into());
        }
        let conditions = words
            .split(|w| *w == "and")
            .map(|part| parse_condition(&part.join(" ")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { conditions })
    }

    /// The comparisons, in the order written.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether a row whose compared values are `values` (one per condition, in order; `None`
    /// for null) is kept.
    pub fn keeps(&self, values: &[Option<f64>]) -> bool {
        self.conditions
            .iter()
            .zip(values)
            .all(|(c, v)| v.is_some_and(|v| c.op.holds(v, c.value)))
    }
}

impl std::fmt::Display for RowFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in self.conditions.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{} {} {}", c.column, c.op.symbol(), c.value)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for RowFilter {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<RowFilter> for String {
    fn from(filter: RowFilter) -> String {
        filter.to_string()
    }
}

/// One `<column> <op> <number>`.
fn parse_condition(text: &str) -> Result<Condition, String> {
    let expected = || {
        format!("`{text}`: expected `<column> <op> <number>` with op one of >=, >, <=, <, ==, !=")
    };
    if text.is_empty() {
        return Err("`and` must join two comparisons".into());
    }
    let Some((at, spelling, op)) = CompareOp::SPELLINGS
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|at| (at, *s, *op)))
        // The leftmost operator; at one position the two-character spelling comes first.
        .min_by_key(|(at, _, _)| *at)
    else {
        return Err(expected());
    };
    let column = text[..at].trim();
    let number = text[at + spelling.len()..].trim();
    let valid_column = !column.is_empty()
        && column
            .chars()
            .all(|c| !c.is_whitespace() && !"<>=!".contains(c));
    if !valid_column {
        return Err(expected());
    }
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("`{text}`: `{number}` is not a finite number"))?;
    Ok(Condition {
        column: column.to_string(),
        op,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comparisons_and_conjunctions() {
        let f = RowFilter::parse("score >= 0.7 and length<5000").unwrap();
        assert_eq!(
            f.conditions(),
            &[
                Condition {
                    column: "score".into(),
                    op: CompareOp::Ge,
                    value: 0.7
                },
                Condition {
                    column: "length".into(),
                    op: CompareOp::Lt,
                    value: 5000.0
                },
            ]
        );
        assert_eq!(f.to_string(), "score >= 0.7 and length < 5000");
        assert_eq!(RowFilter::parse(&f.to_string()).unwrap(), f);
        for (text, op) in [
            ("a > 1", CompareOp::Gt),
            ("a <= 1", CompareOp::Le),
            ("a == 1", CompareOp::Eq),
            ("a != -1e2", CompareOp::Ne),
        ] {
            assert_eq!(RowFilter::parse(text).unwrap().conditions()[0].op, op);
        }
    }

    #[test]
    fn keeps_rows_where_every_comparison_holds_and_drops_nulls() {
        let f = RowFilter::parse("score >= 0.5 and n != 3").unwrap();
        assert!(f.keeps(&[Some(0.5), Some(2.0)]));
        assert!(!f.keeps(&[Some(0.49), Some(2.0)]));
        assert!(!f.keeps(&[Some(0.9), Some(3.0)]));
        assert!(!f.keeps(&[None, Some(2.0)]));
    }

    #[test]
    fn malformed_filters_say_what_was_expected() {
        for (text, needle) in [
            ("", "empty filter"),
            ("score", "expected `<column> <op> <number>`"),
            ("score >= high", "`high` is not a finite number"),
            ("score >= nan", "not a finite number"),
            (">= 3", "expected"),
            ("score >= 1 and", "`and` must join"),
            ("score >= 1 or n < 2", "not a finite number"),
            ("score => 1", "expected"),
        ] {
            let err = RowFilter::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
