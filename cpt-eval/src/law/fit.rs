//! Fitting a law to measured losses: Chinchilla's procedure (Hoffmann et al., 2022, §D.2) —
//! minimise the Huber loss (δ = 10⁻³) of the log-space residuals `ln L̂ − ln L` with L-BFGS
//! from a grid of starting points and keep the best — with argmin's L-BFGS and More–Thuente
//! line search.

use super::LawError;
use super::forms::{LawKind, Point};
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// Chinchilla's Huber δ on log-loss residuals: quadratic below, linear above, so a few
/// outlying runs do not drag the fit.
pub const HUBER_DELTA: f64 = 1e-3;

/// L-BFGS iterations per starting point.
const MAX_ITERS: u64 = 2000;

/// One measured loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// A name for reports (the sweep point).
    pub label: String,
    /// Where it was measured.
    pub point: Point,
    /// The measured loss.
    pub loss: f64,
}

/// A fitted law and how well it fits.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The law.
    pub law: LawKind,
    /// Its parameters in natural form, in the order of [`LawKind::parameter_names`].
    pub params: Vec<f64>,
    /// The minimised objective: mean Huber loss of the log residuals.
    pub objective: f64,
    /// Starting points tried, and how many ran to a finite optimum.
    pub starts: usize,
    /// Per observation: the measured and the predicted loss.
    pub residuals: Vec<Residual>,
    /// The fitted vector (log-coefficients, logit exponents): predictions come from it, so a
    /// coefficient too large for an `f64` in natural form still predicts.
    theta: Vec<f64>,
}

/// The fit at one observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    /// The observation's label.
    pub label: String,
    /// Where it was measured.
    pub point: Point,
    /// Measured loss.
    pub measured: f64,
    /// The law's loss there.
    pub predicted: f64,
}

impl Fit {
    /// A law with known parameters (natural form, in the order of
    /// [`LawKind::parameter_names`]; exponents in (0, 3), `ε` in (0, 1)), fitted to nothing.
    pub fn with_params(law: LawKind, params: Vec<f64>) -> Self {
        Self {
            law,
            theta: law.internal(&params),
            params,
            objective: 0.0,
            starts: 0,
            residuals: Vec::new(),
        }
    }

    /// The law's loss at `x`.
    pub fn predict(&self, x: &Point) -> f64 {
        self.law.log_prediction(&self.theta, x, None).exp()
    }

    /// Root mean square of `predicted − measured` over the fitted points (in loss units).
    pub fn rmse(&self) -> f64 {
        rmse(&self.residuals)
    }

    /// Coefficient of determination over the fitted points: `1 − SS_res / SS_tot`.
    pub fn r_squared(&self) -> f64 {
        r_squared(&self.residuals)
    }

    /// The law's predictions at other observations (held-out points).
    pub fn residuals_at(&self, observations: &[Observation]) -> Vec<Residual> {
        observations
            .iter()
            .map(|o| Residual {
                label: o.label.clone(),
                point: o.point,
                measured: o.loss,
                predicted: self.predict(&o.point),
            })
            .collect()
    }
}

/// Root mean square of `predicted − measured`.
pub fn rmse(residuals: &[Residual]) -> f64 {
    let n = residuals.len().max(1) as f64;
    (residuals
        .iter()
        .map(|r| (r.predicted - r.measured).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// `1 − SS_res / SS_tot` of the measured losses (NaN when they are all equal).
pub fn r_squared(residuals: &[Residual]) -> f64 {
    let n = residuals.len().max(1) as f64;
    let mean = residuals.iter().map(|r| r.measured).sum::<f64>() / n;
    let ss_res: f64 = residuals
        .iter()
        .map(|r| (r.predicted - r.measured).powi(2))
        .sum();
    let ss_tot: f64 = residuals.iter().map(|r| (r.measured - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}

/// Fit `law` to `observations`. Needs more observations than the law has parameters, every
/// size, token count and loss positive and finite, and (D-CPT) every ratio in [0, 1].
pub fn fit(law: LawKind, observations: &[Observation]) -> Result<Fit, LawError> {
    check(law, observations)?;
    let xs: Vec<Point> = observations.iter().map(|o| o.point).collect();
    let losses: Vec<f64> = observations.iter().map(|o| o.loss).collect();
    let problem = Objective {
        law,
        log_losses: losses.iter().map(|l| l.ln()).collect(),
        xs: xs.clone(),
    };
    let starts: Vec<Vec<f64>> = law
        .starts(&xs, &losses)
        .iter()
        .map(|natural| law.internal(natural))
        .collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for start in &starts {
        let Some((cost, theta)) = minimise(&problem, start.clone()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, theta));
        }
    }
    let (objective, theta) = best.ok_or(LawError::NoConvergence {
        law: law.name(),
        starts: starts.len(),
    })?;
    let mut fit = Fit {
        law,
        params: law.natural(&theta),
        objective,
        starts: starts.len(),
        residuals: Vec::new(),
        theta,
    };
    fit.residuals = fit.residuals_at(observations);
    Ok(fit)
}

fn check(law: LawKind, observations: &[Observation]) -> Result<(), LawError> {
    let parameters = law.parameter_names().len();
    if observations.len() <= parameters {
        return Err(LawError::TooFewPoints {
            law: law.name(),
            given: observations.len(),
            parameters,
        });
    }
    for o in observations {
        let bad = |what: &'static str, value: f64| LawError::BadValue {
            label: o.label.clone(),
            what,
            value,
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(o.point.params) {
            return Err(bad("the parameter count N (positive)", o.point.params));
        }
        if !positive(o.point.tokens) {
            return Err(bad("the token count D (positive)", o.point.tokens));
        }
        if !positive(o.loss) {
            return Err(bad("the loss (positive)", o.loss));
        }
        if law == LawKind::Dcpt && !(0.0..=1.0).contains(&o.point.ratio) {
            return Err(bad("the mixture ratio r (in [0, 1])", o.point.ratio));
        }
    }
    Ok(())
}

/// L-BFGS from `start`; the best finite point reached, or `None` if it diverged.
fn minimise(problem: &Objective, start: Vec<f64>) -> Option<(f64, Vec<f64>)> {
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-14)
        .ok()?
        .with_tolerance_cost(1e-16)
        .ok()?;
    let result = Executor::new(problem.clone(), solver)
        .configure(|state| state.param(start).max_iters(MAX_ITERS))
        .timer(false)
        .run()
        .ok()?;
    let state = result.state();
    let cost = state.get_best_cost();
    let theta = state.get_best_param()?.clone();
    (cost.is_finite() && theta.iter().all(|t| t.is_finite())).then_some((cost, theta))
}

/// Mean Huber loss of the log residuals, as argmin's cost and gradient.
#[derive(Clone)]
struct Objective {
    law: LawKind,
    xs: Vec<Point>,
    log_losses: Vec<f64>,
}

impl Objective {
    fn value_and_gradient(&self, theta: &[f64], grad: Option<&mut Vec<f64>>) -> f64 {
        let n = self.xs.len() as f64;
        let mut point_grad = vec![0.0; theta.len()];
        let mut total_grad = vec![0.0; theta.len()];
        let mut total = 0.0;
        for (x, log_loss) in self.xs.iter().zip(&self.log_losses) {
            let residual = self.law.log_prediction(theta, x, Some(&mut point_grad)) - log_loss;
            total += huber(residual);
            let slope = residual.clamp(-HUBER_DELTA, HUBER_DELTA);
            for (t, g) in total_grad.iter_mut().zip(&point_grad) {
                *t += slope * g;
            }
        }
        if let Some(grad) = grad {
            *grad = total_grad.into_iter().map(|g| g / n).collect();
        }
        total / n
    }
}

fn huber(residual: f64) -> f64 {
    let a = residual.abs();
    if a <= HUBER_DELTA {
        0.5 * a * a
    } else {
        HUBER_DELTA * (a - 0.5 * HUBER_DELTA)
    }
}

impl CostFunction for Objective {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.value_and_gradient(theta, None))
    }
}

impl Gradient for Objective {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        let mut grad = Vec::new();
        self.value_and_gradient(theta, Some(&mut grad));
        Ok(grad)
    }
}
