//! The semi-supervised algorithm, one file per rule (docs/design.md, "The algorithm", states
//! every formula and the measurements behind each choice):
//!
//! * [`dta`]: Dynamic Threshold Adjustment, the per-class confidence thresholds and the state
//!   they are computed from;
//! * [`pseudo_label`]: which unlabeled samples become pseudo-labels, with what weight, and
//!   the pseudo-label loss;
//! * [`negative`]: Selective Negative Learning, the complementary labels of the samples below
//!   their threshold and the negative loss;
//! * [`teacher`]: the EMA teacher and the re-estimation of its BatchNorm statistics.
//!
//! Everything except the teacher is plain arithmetic on probability rows with a host
//! reference, so each formula is tested on hand-computed batches without a network.

pub mod dta;
pub mod negative;
pub mod pseudo_label;
pub mod teacher;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use dta::{DtaState, ThresholdRule};

use crate::error::{Error, Result};

/// Which training algorithm runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Labeled data only (cross-entropy); unlabeled data is ignored.
    Supervised,
    /// FixMatch-style pseudo-labels with one fixed threshold for every class.
    Fixed,
    /// Pseudo-labels with dynamic per-class thresholds.
    Dta,
    /// Dynamic thresholds plus selective negative learning (the full method).
    #[default]
    DtaSnl,
}

impl Algorithm {
    /// All algorithms, in the order of the CLI help.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Supervised,
        Algorithm::Fixed,
        Algorithm::Dta,
        Algorithm::DtaSnl,
    ];

    /// Whether unlabeled data is used at all.
    pub fn uses_unlabeled(self) -> bool {
        self != Algorithm::Supervised
    }

    /// Whether the thresholds are dynamic (DTA).
    pub fn dynamic(self) -> bool {
        matches!(self, Algorithm::Dta | Algorithm::DtaSnl)
    }

    /// Whether selective negative learning is on.
    pub fn snl(self) -> bool {
        self == Algorithm::DtaSnl
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Supervised => "supervised",
            Algorithm::Fixed => "fixed",
            Algorithm::Dta => "dta",
            Algorithm::DtaSnl => "dta-snl",
        }
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::config(
                    "algorithm",
                    format!("unknown algorithm {s:?}; use supervised, fixed, dta or dta-snl"),
                )
            })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of the semi-supervised algorithm.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlgorithmConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// How the dynamic thresholds are computed (`dta`, `dta-snl`).
    pub threshold_rule: ThresholdRule,
    /// EMA momentum of the teacher.
    pub ema_momentum: f64,
    /// EMA momentum of the DTA statistics (confidence, class marginal, histograms).
    pub dta_momentum: f64,
    /// Lower clip of the dynamic thresholds (0: none).
    pub t_min: f64,
    /// Upper clip of the dynamic thresholds.
    pub t_max: f64,
    /// Quantile rule: share of each predicted class accepted at the first step.
    pub quantile_start: f64,
    /// Quantile rule: share of each predicted class accepted at the last step.
    pub quantile_end: f64,
    /// Samples below their class threshold still get a pseudo-label loss, weighted by a
    /// Gaussian of their distance to the threshold (SoftMatch-style).
    pub soft_weights: bool,
    /// Threshold of every class in `fixed` mode (FixMatch: 0.95).
    pub fixed_threshold: f64,
    /// SNL: a class the teacher gives less than this can be a complementary label...
    pub t_neg: f64,
    /// ...if the student still gives it at least this on the strong view.
    pub neg_student_min: f64,
    /// Weight of the pseudo-label loss.
    pub lambda_u: f64,
    /// Weight of the SNL loss.
    pub lambda_n: f64,
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig {
            algorithm: Algorithm::DtaSnl,
            threshold_rule: ThresholdRule::default(),
            ema_momentum: 0.999,
            dta_momentum: 0.99,
            t_min: 0.0,
            t_max: 0.95,
            quantile_start: 0.2,
            quantile_end: 0.8,
            soft_weights: true,
            fixed_threshold: 0.95,
            t_neg: 0.05,
            neg_student_min: 0.05,
            lambda_u: 1.0,
            lambda_n: 1.0,
        }
    }
}

impl AlgorithmConfig {
    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<()> {
        let unit = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{v} must lie in [0, 1]")))
            }
        };
        unit("algorithm.ema_momentum", self.ema_momentum)?;
        unit("algorithm.dta_momentum", self.dta_momentum)?;
        unit("algorithm.t_min", self.t_min)?;
        unit("algorithm.t_max", self.t_max)?;
        unit("algorithm.quantile_start", self.quantile_start)?;
        unit("algorithm.quantile_end", self.quantile_end)?;
        unit("algorithm.fixed_threshold", self.fixed_threshold)?;
        unit("algorithm.t_neg", self.t_neg)?;
        unit("algorithm.neg_student_min", self.neg_student_min)?;
        if self.dta_momentum >= 1.0 {
            return Err(Error::config(
                "algorithm.dta_momentum",
                "1.0 would never update the statistics; use e.g. 0.99",
            ));
        }
        if self.t_min > self.t_max {
            return Err(Error::config(
                "algorithm.t_min",
                format!("t_min {} is above t_max {}", self.t_min, self.t_max),
            ));
        }
        if self.lambda_u < 0.0 || self.lambda_n < 0.0 {
            return Err(Error::config(
                "algorithm.lambda_u / lambda_n",
                "loss weights must not be negative",
            ));
        }
        Ok(())
    }

    /// The thresholds applied to the next batch at `progress` (steps done / total steps):
    /// the DTA rule's for `dta`/`dta-snl`, the fixed value otherwise.
    pub fn thresholds(&self, state: &DtaState, progress: f64) -> Vec<f32> {
        if self.algorithm.dynamic() {
            state.thresholds(self, progress)
        } else {
            vec![self.fixed_threshold as f32; state.classes()]
        }
    }

    /// The variance that shapes the soft weights below the thresholds (`None`: hard
    /// thresholds, as for `fixed` or with `soft_weights` off).
    pub fn soft_variance(&self, state: &DtaState) -> Option<f64> {
        (self.algorithm.dynamic() && self.soft_weights)
            .then(|| state.confidence_variance(self.dta_momentum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
            assert_eq!(a.to_string(), a.name());
        }
        assert!("mixmatch".parse::<Algorithm>().is_err());
        assert!(Algorithm::DtaSnl.snl() && !Algorithm::Dta.snl());
        assert!(!Algorithm::Supervised.uses_unlabeled());
        assert!(!Algorithm::Fixed.dynamic());
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(AlgorithmConfig::default().validate().is_ok());
        let bad = AlgorithmConfig {
            t_min: 0.9,
            t_max: 0.6,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("t_min"));
        let bad = AlgorithmConfig {
            t_neg: 1.5,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("t_neg"));
        let bad = AlgorithmConfig {
            dta_momentum: 1.0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("dta_momentum")
        );
    }

    #[test]
    fn fixed_mode_uses_one_threshold_and_no_soft_weights() {
        let config = AlgorithmConfig {
            algorithm: Algorithm::Fixed,
            ..Default::default()
        };
        let state = DtaState::new(4);
        assert_eq!(config.thresholds(&state, 0.5), vec![0.95; 4]);
        assert_eq!(config.soft_variance(&state), None);
        assert!(AlgorithmConfig::default().soft_variance(&state).is_some());
    }
}
