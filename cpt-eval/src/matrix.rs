//! Continual-learning summaries of an eval matrix `R[i][j]` (metric on experience `j` after
//! training experience `i`), following "Gradient Episodic Memory for Continual Learning" (2017)
//! for backward/forward transfer and "Riemannian Walk for Incremental Learning" (2018) for
//! forgetting.
//!
//! Signs are chosen so that one reading holds for every metric: forgetting > 0 means the model
//! got worse on an old experience; transfer > 0 means training helped. For lower-is-better
//! metrics (perplexity) differences are flipped accordingly.

use serde::{Deserialize, Serialize};

/// The summary written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixSummary {
    /// Metric name.
    pub metric: String,
    /// Whether a lower metric is better.
    pub lower_is_better: bool,
    /// Experience names, in stream order.
    pub experiences: Vec<String>,
    /// Mean metric over all experiences after the last one: `mean_j R[T-1][j]`.
    pub final_average: f64,
    /// Per experience `j < T-1`: how much worse the final value is than the best value seen
    /// after training on `j` and before the end (`max_{j<=l<T-1}` of the improvement over final).
    pub forgetting: Vec<Option<f64>>,
    /// Mean of the defined `forgetting` values.
    pub average_forgetting: f64,
    /// Mean over `j < T-1` of the change on `j` from just after learning it to the end
    /// (`R[T-1][j] − R[j][j]`, sign-adjusted: negative = forgetting).
    pub backward_transfer: f64,
    /// Mean over `j > 0` of the gain on `j` before training on it, relative to the initial model
    /// (`R[j-1][j] − b_j`, sign-adjusted: positive = earlier experiences helped).
    pub forward_transfer: f64,
}

/// Summarise `matrix` (rows: after each experience) against `initial` (the untrained model's
/// row). Panics if the matrix is not square with `initial.len()` columns, an invariant the
/// trainer guarantees.
pub fn summarize(
    metric: &str,
    lower_is_better: bool,
    experiences: &[String],
    initial: &[f64],
    matrix: &[Vec<f64>],
) -> MatrixSummary {
    let t = matrix.len();
    assert!(
        t > 0 && matrix.iter().all(|row| row.len() == initial.len()),
        "eval matrix is ragged"
    );
    // `gain(a, b)`: how much better `b` is than `a` in the metric's own direction.
    let gain = |a: f64, b: f64| if lower_is_better { a - b } else { b - a };
    let last = &matrix[t - 1];
    let mean = |xs: &[f64]| {
        if xs.is_empty() {
            f64::NAN
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        }
    };

    let forgetting: Vec<Option<f64>> = (0..initial.len())
        .map(|j| {
            (j + 1 < t).then(|| {
                (j..t - 1)
                    .map(|l| gain(last[j], matrix[l][j]))
                    .fold(f64::NEG_INFINITY, f64::max)
            })
        })
        .collect();
    let defined: Vec<f64> = forgetting.iter().flatten().copied().collect();
    let bwt: Vec<f64> = (0..t.saturating_sub(1))
        .map(|j| gain(matrix[j][j], last[j]))
        .collect();
    let fwt: Vec<f64> = (1..t.min(initial.len()))
        .map(|j| gain(initial[j], matrix[j - 1][j]))
        .collect();
    MatrixSummary {
        metric: metric.to_string(),
        lower_is_better,
        experiences: experiences.to_vec(),
        final_average: mean(last),
        forgetting,
        average_forgetting: mean(&defined),
        backward_transfer: mean(&bwt),
        forward_transfer: mean(&fwt),
    }
}

/// The matrix as CSV: a header naming the experiences, a row `initial`, then one row per
/// trained experience.
pub fn matrix_csv(experiences: &[String], initial: &[f64], matrix: &[Vec<f64>]) -> String {
    scores_csv(experiences, experiences, initial, matrix)
}

/// Scores over a run as CSV: a header naming the `columns`, a row `initial`, then one row per
/// trained experience, labelled by `experiences`.
pub fn scores_csv(
    columns: &[String],
    experiences: &[String],
    initial: &[f64],
    rows: &[Vec<f64>],
) -> String {
    let mut out = format!("after,{}\n", columns.join(","));
    let row = |name: &str, values: &[f64]| {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.6}")).collect();
        format!("{name},{}\n", cells.join(","))
    };
    out += &row("initial", initial);
    for (name, values) in experiences.iter().zip(rows) {
        out += &row(name, values);
    }
    out
}

/// The matrix as an aligned text table for the terminal.
pub fn matrix_table(
    metric: &str,
    experiences: &[String],
    initial: &[f64],
    matrix: &[Vec<f64>],
) -> String {
    let width = experiences
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(12);
    let mut out = format!("{:<width$}", format!("{metric} after"));
    for name in experiences {
        out += &format!(" {name:>width$}");
    }
    out.push('\n');
    let rows = std::iter::once(("initial", initial)).chain(
        experiences
            .iter()
            .map(String::as_str)
            .zip(matrix.iter().map(Vec::as_slice)),
    );
    for (name, values) in rows {
        out += &format!("{name:<width$}");
        for v in values {
            out += &format!(" {v:>width$.3}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("e{i}")).collect()
    }

    #[test]
    fn accuracy_matrix_matches_hand_computation() {
        // Higher is better. Experience 0 peaks at 0.9 after e1, ends at 0.6; e1 ends where it was.
        let initial = [0.1, 0.2, 0.3];
        let m = vec![
            vec![0.8, 0.3, 0.35],
            vec![0.9, 0.7, 0.4],
            vec![0.6, 0.7, 0.9],
        ];
        let s = summarize("accuracy", false, &names(3), &initial, &m);
        assert!((s.final_average - (0.6 + 0.7 + 0.9) / 3.0).abs() < 1e-12);
        assert!((s.forgetting[0].unwrap() - 0.3).abs() < 1e-12);
        assert!((s.forgetting[1].unwrap() - 0.0).abs() < 1e-12);
        assert_eq!(s.forgetting[2], None);
        assert!((s.average_forgetting - 0.15).abs() < 1e-12);
        // BWT: ((0.6-0.8) + (0.7-0.7)) / 2 = -0.1.
        assert!((s.backward_transfer + 0.1).abs() < 1e-12);
        // FWT: ((0.3-0.2) + (0.4-0.3)) / 2 = 0.1.
        assert!((s.forward_transfer - 0.1).abs() < 1e-12);
    }

    #[test]
    fn perplexity_signs_are_flipped_so_forgetting_stays_positive() {
        let initial = [100.0, 100.0];
        let m = vec![vec![10.0, 60.0], vec![25.0, 12.0]];
        let s = summarize("perplexity", true, &names(2), &initial, &m);
        assert!((s.forgetting[0].unwrap() - 15.0).abs() < 1e-12);
        assert!((s.backward_transfer + 15.0).abs() < 1e-12);
        assert!((s.forward_transfer - 40.0).abs() < 1e-12);
        assert!((s.final_average - 18.5).abs() < 1e-12);
    }

    #[test]
    fn csv_names_experiences_in_the_header() {
        let csv = matrix_csv(&names(2), &[1.0, 2.0], &[vec![3.0, 4.0], vec![5.0, 6.0]]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "after,e0,e1");
        assert_eq!(lines[1], "initial,1.000000,2.000000");
        assert_eq!(lines[3], "e1,5.000000,6.000000");
    }
}
