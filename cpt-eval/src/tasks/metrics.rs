//! Per-document metrics and their aggregation as lm-eval computes them
//! (`ConfigurableTask.process_results` in `lm_eval/api/task.py`, `lm_eval/api/metrics.py`).
//!
//! - `acc`: the choice of highest summed log-likelihood is gold (ties: the first, as
//!   `np.argmax`); for `loglikelihood` tasks, whether the target is the greedy continuation.
//! - `acc_norm`: the same with each log-likelihood divided by its choice's length in characters
//!   (`len(choice)`, without the target delimiter); `acc_bytes` by its length in UTF-8 bytes.
//! - `perplexity`: `exp(-mean(loglik))` over documents.
//! - `word_perplexity`, `byte_perplexity`: `exp(-sum(loglik) / sum(words or bytes))`;
//!   `bits_per_byte`: `-sum(loglik) / sum(bytes) / ln 2`; words are `len(re.split(r"\s+", text))`.
//!
//! Means report lm-eval's standard error `sample_stddev / sqrt(n)` (Bessel-corrected), for
//! n >= 2. The perplexities' bootstrap standard errors are not computed.

use super::config::OutputType;

/// The gold answer of a multiple-choice document: an index (none when lm-eval's would be out
/// of range, its -100), or several for multiple-target tasks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Gold {
    /// One gold choice.
    One(Option<usize>),
    /// Any of these choices.
    Many(Vec<Option<usize>>),
}

impl Gold {
    fn contains(&self, choice: usize) -> bool {
        match self {
            Gold::One(gold) => *gold == Some(choice),
            Gold::Many(golds) => golds.contains(&Some(choice)),
        }
    }
}

/// What one document contributes to each metric.
pub(crate) enum DocValue {
    /// A 0/1 or real value averaged over documents (`acc`) or fed to `perplexity`.
    Scalar(f64),
    /// `(loglik, weight)` for the weighted perplexities.
    Weighted(f64, f64),
}

/// The value of `metric` for a multiple-choice document.
pub(crate) fn multiple_choice(
    metric: &str,
    logliks: &[f64],
    choices: &[String],
    gold: &Gold,
) -> DocValue {
    let normalised: Vec<f64> = match metric {
        "acc" => logliks.to_vec(),
        "acc_norm" => logliks
            .iter()
            .zip(choices)
            .map(|(ll, c)| ll / c.chars().count() as f64)
            .collect(),
        "acc_bytes" => logliks
            .iter()
            .zip(choices)
            .map(|(ll, c)| ll / c.len() as f64)
            .collect(),
        other => unreachable!("metric {other} was checked when the task was read"),
    };
    let pred = argmax(&normalised);
    DocValue::Scalar(if gold.contains(pred) { 1.0 } else { 0.0 })
}

/// The value of `metric` for a `loglikelihood` document.
pub(crate) fn loglikelihood(metric: &str, loglik: f64, greedy: bool) -> DocValue {
    match metric {
        "acc" => DocValue::Scalar(if greedy { 1.0 } else { 0.0 }),
        "perplexity" => DocValue::Scalar(loglik),
        other => unreachable!("metric {other} was checked when the task was read"),
    }
}

/// The value of `metric` for a `loglikelihood_rolling` document scoring `text`.
pub(crate) fn rolling(metric: &str, loglik: f64, text: &str) -> DocValue {
    match metric {
        "word_perplexity" => DocValue::Weighted(loglik, count_words(text) as f64),
        "byte_perplexity" | "bits_per_byte" => DocValue::Weighted(loglik, text.len() as f64),
        other => unreachable!("metric {other} was checked when the task was read"),
    }
}

/// Aggregate one metric over documents; the standard error where lm-eval has a closed form.
pub(crate) fn aggregate(
    metric: &str,
    output_type: OutputType,
    values: &[DocValue],
) -> (f64, Option<f64>) {
    let scalars = || -> Vec<f64> {
        values
            .iter()
            .map(|v| match v {
                DocValue::Scalar(x) => *x,
                DocValue::Weighted(..) => unreachable!("{metric} has scalar values"),
            })
            .collect()
    };
    let weighted = || -> f64 {
        let (mut lls, mut weights) = (0.0, 0.0);
        for v in values {
            let DocValue::Weighted(ll, w) = v else {
                unreachable!("{metric} has weighted values")
            };
            lls += ll;
            weights += w;
        }
        lls / weights
    };
    match (metric, output_type) {
        ("perplexity", _) => ((-mean(&scalars())).exp(), None),
        ("word_perplexity" | "byte_perplexity", _) => ((-weighted()).exp(), None),
        ("bits_per_byte", _) => (-weighted() / std::f64::consts::LN_2, None),
        _ => {
            let xs = scalars();
            (mean(&xs), mean_stderr(&xs))
        }
    }
}

/// Python's `sum(xs) / len(xs)`, summed left to right.
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// lm-eval's `mean_stderr`: `sample_stddev(xs) / sqrt(n)`; none below two values.
fn mean_stderr(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let mu = mean(xs);
    let n = xs.len() as f64;
    let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt() / n.sqrt())
}

/// `np.argmax`: the first index of the largest value.
fn argmax(xs: &[f64]) -> usize {
    xs.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
}

/// lm-eval's `count_words`: `len(re.split(r"\s+", text))`, with Python's Unicode `\s`
/// (`str.isspace`, which unlike Rust's `char::is_whitespace` includes U+001C..U+001F).
pub(crate) fn count_words(text: &str) -> usize {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let mut pieces = 1;
    let mut in_space = false;
    for c in text.chars() {
        if is_space(c) {
            if !in_space {
                pieces += 1;
            }
            in_space = true;
        } else {
            in_space = false;
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_counted_as_re_split() {
        // Python: len(re.split(r"\s+", s)) for each.
        assert_eq!(count_words(""), 1);
        assert_eq!(count_words("a b"), 2);
        assert_eq!(count_words("a  b\n"), 3);
        assert_eq!(count_words(" a"), 2);
        assert_eq!(count_words("a\u{1f}b"), 2);
    }

    #[test]
    fn acc_norm_divides_by_characters_and_acc_bytes_by_bytes() {
        let choices = ["é".to_string(), "ab".to_string()];
        // acc picks choice 0 (-2 > -3); per character -2/1 < -3/2 picks 1; per byte -2/2 > -3/2
        // picks 0.
        let lls = [-2.0, -3.0];
        let value = |m| match multiple_choice(m, &lls, &choices, &Gold::One(Some(1))) {
            DocValue::Scalar(x) => x,
            DocValue::Weighted(..) => unreachable!(),
        };
        assert_eq!(
            (value("acc"), value("acc_norm"), value("acc_bytes")),
            (0.0, 1.0, 0.0)
        );
    }

    #[test]
    fn stderr_is_bessel_corrected() {
        let xs = [1.0, 0.0, 0.0, 1.0];
        // sample sd = sqrt(1/3), / sqrt(4)
        assert!((mean_stderr(&xs).unwrap() - (1.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        assert_eq!(mean_stderr(&[1.0]), None);
    }

    #[test]
    fn ties_go_to_the_first_choice() {
        assert_eq!(argmax(&[-1.0, -1.0, -2.0]), 0);
    }
}
