//! The loss-optimal mixture ratio under two fitted D-CPT laws, one for the domain validation
//! loss (in the domain share `r_d`) and one for the general validation loss (in the general
//! share `r_g = 1 − r_d`), as the paper's usage "trade-off between general and domain-specific
//! abilities" does.

use super::fit::Fit;
use super::forms::Point;

/// What "optimal" means for a mixture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatioObjective {
    /// Minimise `w·L_domain + (1 − w)·L_general` (`w` = `domain_weight`; without a general law,
    /// `L_domain` alone).
    WeightedSum {
        /// `w` in [0, 1].
        domain_weight: f64,
    },
    /// Minimise `L_domain` among mixtures whose `L_general` stays at most this bound.
    GeneralBound {
        /// The largest acceptable general loss.
        max_general_loss: f64,
    },
}

impl RatioObjective {
    /// The value to minimise for a mixture with these losses; `None` when it is infeasible.
    pub fn score(&self, domain_loss: f64, general_loss: Option<f64>) -> Option<f64> {
        match (*self, general_loss) {
            (Self::WeightedSum { domain_weight }, Some(general)) => {
                Some(domain_weight * domain_loss + (1.0 - domain_weight) * general)
            }
            (Self::WeightedSum { .. }, None) => Some(domain_loss),
            (Self::GeneralBound { max_general_loss }, Some(general)) => {
                (general <= max_general_loss).then_some(domain_loss)
            }
            // A bound on a loss no law predicts cannot be checked: nothing is feasible.
            (Self::GeneralBound { .. }, None) => None,
        }
    }

    /// The objective in words, for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::WeightedSum { domain_weight } => format!(
                "minimise {domain_weight}·L_domain + {}·L_general",
                1.0 - domain_weight
            ),
            Self::GeneralBound { max_general_loss } => {
                format!("minimise L_domain subject to L_general <= {max_general_loss}")
            }
        }
    }
}

/// A mixture and its predicted (or measured) losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioChoice {
    /// Share of domain data `r_d` (the general share is `1 − r_d`).
    pub domain_ratio: f64,
    /// Domain validation loss.
    pub domain_loss: f64,
    /// General validation loss, when a general law (or measurement) is at hand.
    pub general_loss: Option<f64>,
    /// The objective's value.
    pub score: f64,
}

/// The best of `candidates` (domain shares) at model size `params` and `tokens` training tokens
/// under the fitted laws; `None` when no candidate is feasible.
pub fn best_ratio(
    domain: &Fit,
    general: Option<&Fit>,
    params: f64,
    tokens: f64,
    objective: &RatioObjective,
    candidates: &[f64],
) -> Option<RatioChoice> {
    let choices = candidates.iter().map(|&r| {
        let at = |ratio| Point {
            params,
            tokens,
            ratio,
        };
        let domain_loss = domain.predict(&at(r));
        let general_loss = general.map(|g| g.predict(&at(1.0 - r)));
        (r, domain_loss, general_loss)
    });
    best_of(choices, objective)
}

/// The best of some `(domain share, domain loss, general loss)` mixtures, measured or predicted.
pub fn best_of(
    choices: impl IntoIterator<Item = (f64, f64, Option<f64>)>,
    objective: &RatioObjective,
) -> Option<RatioChoice> {
    choices
        .into_iter()
        .filter_map(|(domain_ratio, domain_loss, general_loss)| {
            let score = objective.score(domain_loss, general_loss)?;
            Some(RatioChoice {
                domain_ratio,
                domain_loss,
                general_loss,
                score,
            })
        })
        .min_by(|a, b| a.score.total_cmp(&b.score))
}

/// `steps + 1` evenly spaced domain shares from 0 to 1.
pub fn ratio_grid(steps: usize) -> Vec<f64> {
    (0..=steps).map(|i| i as f64 / steps as f64).collect()
}
