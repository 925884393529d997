//! Classifiers on frozen features: the nearest-mean classifier (NMC, as in iCaRL, "iCaRL:
//! Incremental Classifier and Representation Learning", 2017, and the prototype baseline of
//! "Revisiting Class-Incremental Learning with Pre-Trained Models", 2023) and a ridge-regression
//! linear probe. Both run on host `f64` features: they are small (width × classes) and exact.

/// Features of a set of images, row-major `[rows, width]`, with one label per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledFeatures {
    /// Feature values, `[rows, width]`.
    pub values: Vec<f64>,
    /// Feature width.
    pub width: usize,
    /// One label per row.
    pub labels: Vec<i64>,
}

impl LabelledFeatures {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Append the rows of `other` (same width).
    pub fn extend(&mut self, other: &LabelledFeatures) {
        if self.labels.is_empty() {
            self.width = other.width;
        }
        assert_eq!(self.width, other.width, "feature widths differ");
        self.values.extend_from_slice(&other.values);
        self.labels.extend_from_slice(&other.labels);
    }

    /// Every row scaled to unit L2 norm (a zero row stays zero): NMC compares directions, so
    /// one image's overall feature magnitude cannot decide its class.
    pub fn normalized(&self) -> LabelledFeatures {
        let mut out = self.clone();
        for row in out.values.chunks_mut(self.width.max(1)) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        out
    }
}

/// Class prototypes: the mean of the L2-normalised support features of each class, normalised
/// again.
#[derive(Debug, Clone, PartialEq)]
pub struct NearestMean {
    /// Classes, ascending.
    pub classes: Vec<i64>,
    /// One prototype per class, `[classes, width]`.
    pub prototypes: Vec<f64>,
    width: usize,
}

impl NearestMean {
    /// Prototypes from the support set. Panics on an empty support set, which callers rule out.
    pub fn fit(support: &LabelledFeatures) -> Self {
        let support = support.normalized();
        let mut classes = support.labels.clone();
        classes.sort_unstable();
        classes.dedup();
        let width = support.width;
        let mut prototypes = vec![0.0; classes.len() * width];
        let mut counts = vec![0usize; classes.len()];
        for i in 0..support.rows() {
            let c = classes
                .binary_search(&support.labels[i])
                .expect("a seen class");
            counts[c] += 1;
            for (p, v) in prototypes[c * width..(c + 1) * width]
                .iter_mut()
                .zip(support.row(i))
            {
                *p += v;
            }
        }
        let mut means = LabelledFeatures {
            values: prototypes,
            width,
            labels: classes.clone(),
        };
        for (c, n) in counts.iter().enumerate() {
            means.values[c * width..(c + 1) * width]
                .iter_mut()
                .for_each(|p| *p /= *n as f64);
        }
        Self {
            classes,
            prototypes: means.normalized().values,
            width,
        }
    }

    /// The class of the nearest prototype (Euclidean, after normalising the query) for every
    /// query row; ties go to the smaller class id.
    pub fn predict(&self, queries: &LabelledFeatures) -> Vec<i64> {
        let queries = queries.normalized();
        (0..queries.rows())
            .map(|i| {
                let q = queries.row(i);
                let distance = |c: usize| -> f64 {
                    self.prototypes[c * self.width..(c + 1) * self.width]
                        .iter()
                        .zip(q)
                        .map(|(p, x)| (p - x) * (p - x))
                        .sum()
                };
                let best = (0..self.classes.len())
                    .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
                    .expect("at least one class");
                self.classes[best]
            })
            .collect()
    }
}

/// A linear probe fitted in closed form: ridge regression of one-hot targets on the features
/// with a bias column, `W = (XᵀX + λI)⁻¹ XᵀY`. Deterministic and free of optimiser settings,
/// which is what a probe tracked across an eval matrix needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeProbe {
    /// Classes, ascending (the columns of `weights`).
    pub classes: Vec<i64>,
    /// `[width + 1, classes]`, the last row the bias.
    pub weights: Vec<f64>,
    width: usize,
}

impl RidgeProbe {
    /// Fit on `support` with ridge strength `lambda` (> 0 keeps the system solvable).
    pub fn fit(support: &LabelledFeatures, lambda: f64) -> Self {
        let mut classes = support.labels.clone();
        classes.sort_unstable();
        classes.dedup();
        let (d, k) = (support.width + 1, classes.len());
        // Normal equations: A = XᵀX + λI (d × d), B = XᵀY (d × k).
        let mut a = vec![0.0; d * d];
        let mut b = vec![0.0; d * k];
        for i in 0..support.rows() {
            let x: Vec<f64> = support.row(i).iter().copied().chain([1.0]).collect();
            let c = classes
                .binary_search(&support.labels[i])
                .expect("a seen class");
            for r in 0..d {
                for s in 0..d {
                    a[r * d + s] += x[r] * x[s];
                }
                b[r * k + c] += x[r];
            }
        }
        for r in 0..d {
            a[r * d + r] += lambda;
        }
        Self {
            classes,
            weights: solve_spd(a, b, d, k),
            width: support.width,
        }
    }

    /// The class with the largest score for every query row.
    pub fn predict(&self, queries: &LabelledFeatures) -> Vec<i64> {
        let k = self.classes.len();
        (0..queries.rows())
            .map(|i| {
                let x: Vec<f64> = queries.row(i).iter().copied().chain([1.0]).collect();
                let score = |c: usize| -> f64 {
                    (0..=self.width)
                        .map(|r| x[r] * self.weights[r * k + c])
                        .sum()
                };
                let best = (0..k)
                    .max_by(|&a, &b| score(a).total_cmp(&score(b)).then(b.cmp(&a)))
                    .expect("at least one class");
                self.classes[best]
            })
            .collect()
    }
}

/// Solve `A X = B` for symmetric positive definite `A` (`n × n`) by Cholesky; `B` is `n × k`.
fn solve_spd(mut a: Vec<f64>, mut b: Vec<f64>, n: usize, k: usize) -> Vec<f64> {
    // In place: the lower triangle of `a` becomes L with A = L Lᵀ.
    for j in 0..n {
        let diagonal = a[j * n + j] - (0..j).map(|p| a[j * n + p] * a[j * n + p]).sum::<f64>();
        let l_jj = diagonal.max(f64::MIN_POSITIVE).sqrt();
        a[j * n + j] = l_jj;
        for i in j + 1..n {
            let dot: f64 = (0..j).map(|p| a[i * n + p] * a[j * n + p]).sum();
            a[i * n + j] = (a[i * n + j] - dot) / l_jj;
        }
    }
    for c in 0..k {
        // Forward: L y = b; backward: Lᵀ x = y.
        for i in 0..n {
            let dot: f64 = (0..i).map(|p| a[i * n + p] * b[p * k + c]).sum();
            b[i * k + c] = (b[i * k + c] - dot) / a[i * n + i];
        }
        for i in (0..n).rev() {
            let dot: f64 = (i + 1..n).map(|p| a[p * n + i] * b[p * k + c]).sum();
            b[i * k + c] = (b[i * k + c] - dot) / a[i * n + i];
        }
    }
    b
}

/// Fraction of `predicted` equal to `truth` (NaN for an empty set).
pub fn accuracy(predicted: &[i64], truth: &[i64]) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    let hits = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    hits as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: &[(&[f64], i64)]) -> LabelledFeatures {
        LabelledFeatures {
            values: rows.iter().flat_map(|(v, _)| v.iter().copied()).collect(),
            width: rows[0].0.len(),
            labels: rows.iter().map(|(_, l)| *l).collect(),
        }
    }

    #[test]
    fn nearest_mean_matches_a_hand_computation() {
        // Class 0 points along +x, class 1 along +y (after normalising each row):
        // (2,0)→(1,0), (3,1)→(0.9487,0.3162): mean (0.9743,0.1581), normalised (0.9871,0.1602).
        // (0,1)→(0,1), (1,4)→(0.2425,0.9701): mean (0.1213,0.9851), normalised (0.1222,0.9925).
        let support = features(&[
            (&[2.0, 0.0], 0),
            (&[3.0, 1.0], 0),
            (&[0.0, 1.0], 1),
            (&[1.0, 4.0], 1),
        ]);
        let nmc = NearestMean::fit(&support);
        assert_eq!(nmc.classes, vec![0, 1]);
        let expected = [0.98709, 0.16018, 0.12218, 0.99251];
        for (p, e) in nmc.prototypes.iter().zip(expected) {
            assert!((p - e).abs() < 1e-4, "{p} vs {e}");
        }
        // (1,1) normalised is (0.7071,0.7071): squared distance to class 0 is
        // (0.7071−0.9871)²+(0.7071−0.1602)² = 0.3775, to class 1 (0.7071−0.1222)²+(0.7071−0.9925)²
        // = 0.4235, so class 0. (1,2) leans to class 1; (5,-1) to class 0.
        let queries = features(&[(&[1.0, 1.0], 0), (&[1.0, 2.0], 1), (&[5.0, -1.0], 0)]);
        assert_eq!(nmc.predict(&queries), vec![0, 1, 0]);
        // Scale does not matter, direction does.
        let scaled = features(&[(&[100.0, 100.0], 0)]);
        assert_eq!(nmc.predict(&scaled), vec![0]);
    }

    #[test]
    fn ridge_probe_solves_the_normal_equations() {
        // One feature, two classes: x = 0 → class 0, x = 1 → class 1. With λ → 0 the least-squares
        // fit of one-hot targets is exact: class-1 score = x, class-0 score = 1 − x.
        let support = features(&[(&[0.0], 0), (&[1.0], 1), (&[0.0], 0), (&[1.0], 1)]);
        let probe = RidgeProbe::fit(&support, 1e-9);
        let w = &probe.weights; // rows: [x, bias], columns: [class 0, class 1]
        for (got, want) in w.iter().zip([-1.0, 1.0, 1.0, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
        let queries = features(&[(&[0.2], 0), (&[0.8], 1), (&[3.0], 1)]);
        assert_eq!(probe.predict(&queries), vec![0, 1, 1]);
        assert_eq!(accuracy(&probe.predict(&queries), &queries.labels), 1.0);
    }

    #[test]
    fn ridge_shrinks_with_lambda() {
        let support = features(&[(&[0.0], 0), (&[1.0], 1)]);
        let loose = RidgeProbe::fit(&support, 1e-9);
        let tight = RidgeProbe::fit(&support, 100.0);
        assert!(tight.weights[1].abs() < loose.weights[1].abs() / 10.0);
    }

    #[test]
    fn accuracy_counts_hits() {
        assert_eq!(accuracy(&[1, 2, 3, 4], &[1, 2, 0, 0]), 0.5);
        assert!(accuracy(&[], &[]).is_nan());
    }
}
