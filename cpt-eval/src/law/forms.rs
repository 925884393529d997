//! The functional forms: the loss each law predicts for a point and its gradient with respect to
//! the fitted parameters.
//!
//! - Chinchilla (Hoffmann et al., "Training Compute-Optimal Large Language Models", 2022):
//!   `L(N, D) = E + A/N^α + B/D^β`.
//! - D-CPT (Que et al., "D-CPT Law: Domain-specific Continual Pre-Training Scaling Law for Large
//!   Language Models", 2024, arXiv 2406.01375), the paper's preferred parameterisation:
//!   `L(N, D, r) = E + A/N^α + B·r^η/D^β + C/(r + ε)^γ`, with `r` the share of the corpus whose
//!   validation loss `L` is (the domain share for the domain loss, the general share for the
//!   general loss, as in the paper's Figure 1). Only the paper's abstract and secondary summaries
//!   of this form were at hand when this was written, not its full text: the form is as
//!   published; bounding the exponents and `ε` (below) is this crate's choice.
//!
//! Both are fitted in log space as Chinchilla does: the positive coefficients are fitted as their
//! logarithms (`E = e^e`, ...) and the prediction is `ln L̂ = logsumexp(terms)`, so every term
//! stays positive without bounds and the residual `ln L̂ − ln L` is relative.

/// Where a loss was measured: model size, training tokens and mixture share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Model parameters `N`.
    pub params: f64,
    /// Training tokens `D`.
    pub tokens: f64,
    /// Share `r` in [0, 1] of the training mixture drawn from the corpus the loss is measured
    /// on (D-CPT only; Chinchilla ignores it).
    pub ratio: f64,
}

/// Which scaling law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LawKind {
    /// `L(N, D) = E + A/N^α + B/D^β` (Hoffmann et al., 2022).
    Chinchilla,
    /// `L(N, D, r) = E + A/N^α + B·r^η/D^β + C/(r + ε)^γ` (Que et al., 2024).
    Dcpt,
}

/// How a natural parameter is held in the fitted vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    /// A positive coefficient, fitted as its logarithm.
    Log,
    /// An exponent (or `ε`) in `(0, max)`, fitted as `logit(p / max)`: an unbounded fit on a
    /// dozen noisy points happily trades `α = 15` against `A = 10⁷²`, which fits as well and
    /// predicts nonsense one step outside the data.
    Bounded(f64),
}

/// Upper bound of every exponent: scaling exponents are well below 1 in practice.
const MAX_EXPONENT: f64 = 3.0;
/// Upper bound of `ε`, which only keeps `C/(r + ε)^γ` finite at `r = 0`.
const MAX_EPSILON: f64 = 1.0;

const CHINCHILLA: &[Transform] = &[
    Transform::Log,
    Transform::Log,
    Transform::Bounded(MAX_EXPONENT),
    Transform::Log,
    Transform::Bounded(MAX_EXPONENT),
];
const DCPT: &[Transform] = &[
    Transform::Log,
    Transform::Log,
    Transform::Bounded(MAX_EXPONENT),
    Transform::Log,
    Transform::Bounded(MAX_EXPONENT),
    Transform::Bounded(MAX_EXPONENT),
    Transform::Log,
    Transform::Bounded(MAX_EXPONENT),
    Transform::Bounded(MAX_EPSILON),
];

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

impl LawKind {
    /// The law's name on the command line (`chinchilla`, `dcpt`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Chinchilla => "chinchilla",
            Self::Dcpt => "dcpt",
        }
    }

    /// The formula, for reports.
    pub fn formula(self) -> &'static str {
        match self {
            Self::Chinchilla => "L(N, D) = E + A/N^alpha + B/D^beta",
            Self::Dcpt => "L(N, D, r) = E + A/N^alpha + B*r^eta/D^beta + C/(r + epsilon)^gamma",
        }
    }

    /// The names of the parameters, in the order of [`crate::law::Fit::params`].
    pub fn parameter_names(self) -> &'static [&'static str] {
        match self {
            Self::Chinchilla => &["E", "A", "alpha", "B", "beta"],
            Self::Dcpt => &[
                "E", "A", "alpha", "B", "eta", "beta", "C", "gamma", "epsilon",
            ],
        }
    }

    fn transforms(self) -> &'static [Transform] {
        match self {
            Self::Chinchilla => CHINCHILLA,
            Self::Dcpt => DCPT,
        }
    }

    /// Natural parameters (`E`, `A`, `α`, ...) from the fitted vector.
    pub(crate) fn natural(self, theta: &[f64]) -> Vec<f64> {
        self.transforms()
            .iter()
            .zip(theta)
            .map(|(t, &u)| match t {
                Transform::Log => u.exp(),
                Transform::Bounded(max) => max * sigmoid(u),
            })
            .collect()
    }

    /// The fitted vector from natural parameters (coefficients positive, exponents and `ε`
    /// strictly inside their bounds).
    pub(crate) fn internal(self, params: &[f64]) -> Vec<f64> {
        self.transforms()
            .iter()
            .zip(params)
            .map(|(t, &p)| match t {
                Transform::Log => p.ln(),
                Transform::Bounded(max) => (p / (max - p)).ln(),
            })
            .collect()
    }

    /// The values the formula uses: log-coefficients as fitted, exponents natural; and the
    /// derivative of each with respect to its fitted entry.
    fn formula_values(self, theta: &[f64]) -> (Vec<f64>, Vec<f64>) {
        self.transforms()
            .iter()
            .zip(theta)
            .map(|(t, &u)| match t {
                Transform::Log => (u, 1.0),
                Transform::Bounded(max) => {
                    let s = sigmoid(u);
                    (max * s, max * s * (1.0 - s))
                }
            })
            .unzip()
    }

    /// `ln L̂` at `x` under the fitted vector `theta`; with `grad`, also `∂ ln L̂ / ∂θ` into it.
    pub(crate) fn log_prediction(self, theta: &[f64], x: &Point, grad: Option<&mut [f64]>) -> f64 {
        let (ln_n, ln_d) = (x.params.ln(), x.tokens.ln());
        let (q, chain) = self.formula_values(theta);
        // `value` is ln L̂; `d` its gradient with respect to the formula values `q`.
        let (value, d) = match self {
            Self::Chinchilla => {
                let &[e, a, alpha, b, beta] = q.as_slice() else {
                    unreachable!("the chinchilla law has five parameters")
                };
                let terms = [e, a - alpha * ln_n, b - beta * ln_d];
                let (value, w) = log_sum_exp(&terms);
                (value, vec![w[0], w[1], -w[1] * ln_n, w[2], -w[2] * ln_d])
            }
            Self::Dcpt => {
                let &[e, a, alpha, b, eta, beta, c, gamma, eps] = q.as_slice() else {
                    unreachable!("the D-CPT law has nine parameters")
                };
                let shifted = x.ratio + eps;
                // r^η vanishes at r = 0 (η > 0): the data term is absent there, not -∞ · 0.
                let (data_term, ln_r) = if x.ratio > 0.0 {
                    let ln_r = x.ratio.ln();
                    (b + eta * ln_r - beta * ln_d, ln_r)
                } else {
                    (f64::NEG_INFINITY, 0.0)
                };
                let terms = [e, a - alpha * ln_n, data_term, c - gamma * shifted.ln()];
                let (value, w) = log_sum_exp(&terms);
                let d = vec![
                    w[0],
                    w[1],
                    -w[1] * ln_n,
                    w[2],
                    w[2] * ln_r,
                    -w[2] * ln_d,
                    w[3],
                    -w[3] * shifted.ln(),
                    -w[3] * gamma / shifted,
                ];
                (value, d)
            }
        };
        if let Some(g) = grad {
            for ((g, d), c) in g.iter_mut().zip(&d).zip(&chain) {
                *g = d * c;
            }
        }
        value
    }

    /// Starting points for the fit, as natural parameters: a small grid over the exponents (and
    /// `E`, `ε`), each coefficient set so that its term is a fair share of the loss above `E`
    /// at the data's median size, tokens and ratio — coefficients like `A` span orders of
    /// magnitude with the exponent, so a fixed grid of them would mostly start far off.
    pub(crate) fn starts(self, xs: &[Point], losses: &[f64]) -> Vec<Vec<f64>> {
        let min_loss = losses.iter().copied().fold(f64::INFINITY, f64::min);
        let max_loss = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ln_n = median(xs.iter().map(|x| x.params.ln()));
        let ln_d = median(xs.iter().map(|x| x.tokens.ln()));
        let mut starts = Vec::new();
        for e_share in [0.5, 0.9] {
            let e = min_loss * e_share;
            // The loss above E at a typical point, split between the other terms.
            let excess = ((max_loss + min_loss) / 2.0 - e).max(1e-3 * min_loss);
            match self {
                Self::Chinchilla => {
                    let share = (excess / 2.0).ln();
                    for alpha in [0.2, 0.5, 1.0] {
                        for beta in [0.2, 0.5, 1.0] {
                            starts.push(vec![
                                e,
                                (share + alpha * ln_n).exp(),
                                alpha,
                                (share + beta * ln_d).exp(),
                                beta,
                            ]);
                        }
                    }
                }
                Self::Dcpt => {
                    let share = (excess / 3.0).ln();
                    let positive = xs.iter().filter(|x| x.ratio > 0.0).map(|x| x.ratio.ln());
                    let ln_r = median(positive.chain(std::iter::once(0.5f64.ln())));
                    let ratio = ln_r.exp();
                    for alpha in [0.3, 0.8] {
                        for beta in [0.3, 0.8] {
                            for eta in [0.3, 1.0] {
                                for gamma in [0.2, 0.6] {
                                    for eps in [0.01, 0.1] {
                                        starts.push(vec![
                                            e,
                                            (share + alpha * ln_n).exp(),
                                            alpha,
                                            (share - eta * ln_r + beta * ln_d).exp(),
                                            eta,
                                            beta,
                                            (share + gamma * (ratio + eps).ln()).exp(),
                                            gamma,
                                            eps,
                                        ]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        starts
    }
}

/// `ln Σ exp(t_k)` and the softmax weights `exp(t_k) / Σ exp(t)` (its gradient in the terms).
fn log_sum_exp<const K: usize>(terms: &[f64; K]) -> (f64, [f64; K]) {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut weights = terms.map(|t| (t - max).exp());
    let sum: f64 = weights.iter().sum();
    for w in &mut weights {
        *w /= sum;
    }
    (max + sum.ln(), weights)
}

/// The median of some values (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient matches central differences, for both laws, at r = 0 too.
    #[test]
    fn gradients_match_finite_differences() {
        let cases = [
            (LawKind::Chinchilla, vec![0.5, 6.0, 0.34, 7.0, 0.28]),
            (
                LawKind::Dcpt,
                vec![0.4, 3.0, 0.3, 5.0, 0.5, 0.35, -2.0, 0.6, -3.0],
            ),
        ];
        for (law, theta) in cases {
            for ratio in [0.0, 0.3, 1.0] {
                let x = Point {
                    params: 3e6,
                    tokens: 2e8,
                    ratio,
                };
                let mut grad = vec![0.0; theta.len()];
                law.log_prediction(&theta, &x, Some(&mut grad));
                for i in 0..theta.len() {
                    let h = 1e-6;
                    let (mut up, mut down) = (theta.clone(), theta.clone());
                    up[i] += h;
                    down[i] -= h;
                    let numeric = (law.log_prediction(&up, &x, None)
                        - law.log_prediction(&down, &x, None))
                        / (2.0 * h);
                    assert!(
                        (numeric - grad[i]).abs() < 1e-6,
                        "{} parameter {i} at r = {ratio}: {numeric} vs {}",
                        law.name(),
                        grad[i]
                    );
                }
            }
        }
    }

    #[test]
    fn the_prediction_is_the_formula() {
        let params = [1.5, 50.0, 0.3, 200.0, 0.5, 0.35, 0.1, 0.6, 0.05];
        let theta = LawKind::Dcpt.internal(&params);
        let x = Point {
            params: 1e6,
            tokens: 1e8,
            ratio: 0.25,
        };
        let by_hand = 1.5
            + 50.0 / 1e6f64.powf(0.3)
            + 200.0 * 0.25f64.powf(0.5) / 1e8f64.powf(0.35)
            + 0.1 / 0.3f64.powf(0.6);
        let predicted = LawKind::Dcpt.log_prediction(&theta, &x, None).exp();
        assert!(
            (predicted - by_hand).abs() < 1e-12,
            "{predicted} vs {by_hand}"
        );
        // At r = 0 the data term vanishes and ε keeps the ratio term finite.
        let at_zero = LawKind::Dcpt
            .log_prediction(&theta, &Point { ratio: 0.0, ..x }, None)
            .exp();
        let by_hand = 1.5 + 50.0 / 1e6f64.powf(0.3) + 0.1 / 0.05f64.powf(0.6);
        assert!((at_zero - by_hand).abs() < 1e-12, "{at_zero} vs {by_hand}");
    }
}
