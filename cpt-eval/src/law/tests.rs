//! The fits recover the laws that generated their data, and bad input is named.

use super::*;
use std::path::Path;

/// Losses generated from `law` with `params` at every combination of sizes, tokens and ratios.
fn synthetic(law: LawKind, params: &[f64], ratios: &[f64]) -> Vec<Observation> {
    let truth = Fit::with_params(law, params.to_vec());
    let mut observations = Vec::new();
    for n in [1e6, 8e6, 6.4e7] {
        for d in [1e8, 8e8, 6.4e9] {
            for &ratio in ratios {
                let point = Point {
                    params: n,
                    tokens: d,
                    ratio,
                };
                observations.push(Observation {
                    label: format!("N{n}-D{d}-r{ratio}"),
                    point,
                    loss: truth.predict(&point),
                });
            }
        }
    }
    observations
}

fn assert_recovered(fit: &Fit, truth: &[f64]) {
    for ((name, got), want) in fit.law.parameter_names().iter().zip(&fit.params).zip(truth) {
        let error = (got - want).abs() / want.abs();
        assert!(
            error < 0.02,
            "{} {name}: fitted {got}, true {want} ({:.2}% off); all: {:?}",
            fit.law.name(),
            100.0 * error,
            fit.params
        );
    }
    assert!(fit.rmse() < 1e-4, "rmse {}", fit.rmse());
    assert!(fit.r_squared() > 0.9999, "R² {}", fit.r_squared());
}

#[test]
fn chinchilla_fit_recovers_the_generating_parameters() {
    // Hoffmann et al.'s own fitted values.
    let truth = [1.69, 406.4, 0.34, 410.7, 0.28];
    let data = synthetic(LawKind::Chinchilla, &truth, &[0.0]);
    let fit = fit(LawKind::Chinchilla, &data).unwrap();
    assert_recovered(&fit, &truth);
}

#[test]
fn dcpt_fit_recovers_the_generating_parameters() {
    let truth = [1.2, 60.0, 0.3, 300.0, 0.6, 0.35, 0.08, 0.5, 0.05];
    let data = synthetic(LawKind::Dcpt, &truth, &[0.0, 0.1, 0.25, 0.5, 0.75, 1.0]);
    let fit = fit(LawKind::Dcpt, &data).unwrap();
    assert_recovered(&fit, &truth);
}

#[test]
fn too_few_points_and_bad_values_are_named() {
    let truth = [1.69, 406.4, 0.34, 410.7, 0.28];
    let data = synthetic(LawKind::Chinchilla, &truth, &[0.0]);
    let message = fit(LawKind::Chinchilla, &data[..5])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("too few points") && message.contains("5 given"),
        "{message}"
    );
    let mut bad = data.clone();
    bad[3].loss = -1.0;
    let message = fit(LawKind::Chinchilla, &bad).unwrap_err().to_string();
    assert!(
        message.contains(&bad[3].label) && message.contains("loss"),
        "{message}"
    );
    let mut bad = synthetic(
        LawKind::Dcpt,
        &[1.0, 1.0, 0.5, 1.0, 0.5, 0.5, 1.0, 0.5, 0.5],
        &[0.25, 0.5],
    );
    bad[0].point.ratio = 1.5;
    let message = fit(LawKind::Dcpt, &bad).unwrap_err().to_string();
    assert!(
        message.contains("ratio") && message.contains("1.5"),
        "{message}"
    );
}

#[test]
fn missing_columns_and_non_numbers_are_named() {
    let table = ResultsTable::parse(
        "point,params,loss\na,10,2.5\nb,20,oops\n",
        Path::new("s.csv"),
    )
    .unwrap();
    assert_eq!(table.len(), 2);
    let message = table.number_column("tokens").unwrap_err().to_string();
    assert!(
        message.contains("s.csv") && message.contains("`tokens`") && message.contains("params"),
        "{message}"
    );
    let message = table.number_column("loss").unwrap_err().to_string();
    assert!(
        message.contains("row 2") && message.contains("oops"),
        "{message}"
    );
    assert_eq!(table.number_column("params").unwrap(), vec![10.0, 20.0]);
}

/// Two known laws: the domain loss falls with the domain share, the general loss rises as its
/// share falls; each objective picks the ratio worked out by hand.
#[test]
fn the_optimal_ratio_follows_the_objective() {
    let law = |params: Vec<f64>| Fit::with_params(LawKind::Dcpt, params);
    // L_d = 1 + 1/(r_d + 0.1); L_g = 1 + 0.5/(r_g + 0.1) (the N and D terms made negligible).
    let domain = law(vec![1.0, 1e-12, 1.0, 1e-12, 1.0, 1.0, 1.0, 1.0, 0.1]);
    let general = law(vec![1.0, 1e-12, 1.0, 1e-12, 1.0, 1.0, 0.5, 1.0, 0.1]);
    let grid = ratio_grid(1000);
    let sum = RatioObjective::WeightedSum { domain_weight: 0.5 };
    let best = best_ratio(&domain, Some(&general), 1e6, 1e8, &sum, &grid).unwrap();
    // d/dr [1/(r+0.1) + 0.5/(1.1-r)] = 0  ⇒  (1.1-r)² = 0.5 (r+0.1)²  ⇒  r = (1.1 - 0.1√0.5)/(1+√0.5).
    let by_hand = (1.1 - 0.1 * 0.5f64.sqrt()) / (1.0 + 0.5f64.sqrt());
    assert!(
        (best.domain_ratio - by_hand).abs() < 1e-3,
        "{best:?} vs {by_hand}"
    );
    // General loss at most 2: 0.5/(1.1 - r) <= 1  ⇒  r <= 0.6; the domain loss wants r large.
    let bound = RatioObjective::GeneralBound {
        max_general_loss: 2.0,
    };
    let best = best_ratio(&domain, Some(&general), 1e6, 1e8, &bound, &grid).unwrap();
    assert!((best.domain_ratio - 0.6).abs() < 1e-9, "{best:?}");
    let impossible = RatioObjective::GeneralBound {
        max_general_loss: 1.0,
    };
    assert!(best_ratio(&domain, Some(&general), 1e6, 1e8, &impossible, &grid).is_none());
}
