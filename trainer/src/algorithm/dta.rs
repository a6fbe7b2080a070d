//! Dynamic Threshold Adjustment: per-class confidence thresholds that move with the teacher.
//!
//! The state folds in the teacher's weak-view probabilities `p` of every unlabeled batch
//! (`N` rows of `C` classes) with momentum `mu` ([`super::AlgorithmConfig::dta_momentum`]),
//! starting at zero:
//!
//! * confidence `s <- mu s + (1 - mu) mean_i max_c p_ic`, and its square `s2` likewise;
//! * class marginal `m_c <- mu m_c + (1 - mu) mean_i p_ic`;
//! * per predicted class `c`, a histogram `h_c[b] <- mu h_c[b] + (1 - mu) n_cb / N`, where
//!   `n_cb` counts the samples whose top class is `c` and whose top probability falls in
//!   confidence bin `b` ([`CONFIDENCE_BINS`] equal bins over `[0, 1]`).
//!
//! After `t` updates the EMAs are bias-corrected by dividing by `1 - mu^t` (Adam's
//! correction): a zero start with no correction would keep every statistic near zero for
//! the first `1 / (1 - mu)` batches. The thresholds a batch sees are those *before* its own
//! update. Two rules ([`ThresholdRule`]), both clipped to `[t_min, t_max]`:
//!
//! * `freematch`: `t_c = s_hat * m_hat_c / max_k m_hat_k` (FreeMatch's self-adaptive
//!   thresholds with the bias correction and no floor: on FER2013 the teacher's mean
//!   confidence stays low, and the old start at `1/C` with a 0.5 floor kept every class at
//!   the floor for the whole run);
//! * `quantile`: `t_c` is the confidence above which the top `rho` of the class-`c`
//!   predictions lie in `h_c` (linear inside a bin), with the curriculum
//!   `rho = quantile_start + (quantile_end - quantile_start) * progress`; a class the teacher
//!   never predicted gets `t_max`.
//!
//! Before the first update every class gets `1/C` (clipped).

use serde::{Deserialize, Serialize};

use super::AlgorithmConfig;
use crate::error::{Error, Result};

/// Number of equal confidence bins over `[0, 1]` in the per-class histograms.
pub const CONFIDENCE_BINS: usize = 50;

/// How the dynamic thresholds are computed from the [`DtaState`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// `t_c = s * m_c / max m` with bias-corrected EMAs (FreeMatch-style, no floor).
    #[default]
    Freematch,
    /// Accept the most confident `rho(t)` of each predicted class, `rho` rising over the run.
    Quantile,
}

impl ThresholdRule {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            ThresholdRule::Freematch => "freematch",
            ThresholdRule::Quantile => "quantile",
        }
    }
}

impl std::str::FromStr for ThresholdRule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "freematch" => Ok(ThresholdRule::Freematch),
            "quantile" => Ok(ThresholdRule::Quantile),
            other => Err(Error::config(
                "algorithm.threshold_rule",
                format!("unknown threshold rule {other:?}; use freematch or quantile"),
            )),
        }
    }
}

impl std::fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The DTA statistics (training state: checkpointed and resumed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DtaState {
    /// Raw EMA of the batch mean of the top probability (`s`, not bias-corrected).
    pub confidence: f64,
    /// Raw EMA of the batch mean of the squared top probability (`s2`).
    pub confidence_square: f64,
    /// Raw EMA of the batch mean of every class's probability (`m_c`).
    pub marginal: Vec<f64>,
    /// Per predicted class, raw EMA of the batch share in each confidence bin (`h_c[b]`).
    pub histogram: Vec<Vec<f64>>,
    /// Number of batches folded in (`t`).
    pub updates: u64,
}

impl DtaState {
    /// The empty state for `classes` classes.
    pub fn new(classes: usize) -> Self {
        DtaState {
            confidence: 0.0,
            confidence_square: 0.0,
            marginal: vec![0.0; classes],
            histogram: vec![vec![0.0; CONFIDENCE_BINS]; classes],
            updates: 0,
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.marginal.len()
    }

    /// Folds one batch of teacher probabilities (rows of `C` values) into the state.
    pub fn update(&mut self, probs: &[f32], momentum: f64) {
        let c = self.classes();
        let n = probs.len() / c;
        if n == 0 {
            return;
        }
        let inv = 1.0 / n as f64;
        let (mut mean_max, mut mean_square) = (0.0f64, 0.0f64);
        let mut mean = vec![0.0f64; c];
        let mut counts = vec![vec![0u32; CONFIDENCE_BINS]; c];
        for row in probs.chunks_exact(c) {
            let (top, p) = top_class(row);
            let p = p as f64;
            mean_max += p;
            mean_square += p * p;
            for (acc, q) in mean.iter_mut().zip(row) {
                *acc += *q as f64;
            }
            counts[top][bin_of(p)] += 1;
        }
        let blend = |old: f64, new: f64| momentum * old + (1.0 - momentum) * new;
        self.confidence = blend(self.confidence, mean_max * inv);
        self.confidence_square = blend(self.confidence_square, mean_square * inv);
        for (m, acc) in self.marginal.iter_mut().zip(mean) {
            *m = blend(*m, acc * inv);
        }
        for (hist, count) in self.histogram.iter_mut().zip(counts) {
            for (h, k) in hist.iter_mut().zip(count) {
                *h = blend(*h, k as f64 * inv);
            }
        }
        self.updates += 1;
    }

    /// `1 - mu^t`, the bias correction of the EMAs (0 before the first update).
    fn correction(&self, momentum: f64) -> f64 {
        1.0 - momentum.powi(self.updates.min(i32::MAX as u64) as i32)
    }

    /// The bias-corrected mean top probability (`None` before the first update).
    pub fn mean_confidence(&self, momentum: f64) -> Option<f64> {
        let k = self.correction(momentum);
        (self.updates > 0 && k > 0.0).then(|| self.confidence / k)
    }

    /// Bias-corrected variance of the top probability, at least 1e-4 (1/12, a uniform
    /// spread, before the first update). It sets the width of the soft weights.
    pub fn confidence_variance(&self, momentum: f64) -> f64 {
        match self.mean_confidence(momentum) {
            None => 1.0 / 12.0,
            Some(mean) => {
                let square = self.confidence_square / self.correction(momentum);
                (square - mean * mean).max(1e-4)
            }
        }
    }

    /// The thresholds of `config.threshold_rule` at `progress` (steps done / total).
    pub fn thresholds(&self, config: &AlgorithmConfig, progress: f64) -> Vec<f32> {
        let c = self.classes();
        let clip = |t: f64| t.clamp(config.t_min, config.t_max) as f32;
        if self.updates == 0 {
            return vec![clip(1.0 / c as f64); c];
        }
        match config.threshold_rule {
            ThresholdRule::Freematch => {
                let s = self
                    .mean_confidence(config.dta_momentum)
                    .unwrap_or(1.0 / c as f64);
                // The correction divides every m_c alike, so it cancels in m_c / max m.
                let max = self.marginal.iter().copied().fold(0.0f64, f64::max);
                self.marginal
                    .iter()
                    .map(|m| clip(if max > 0.0 { s * m / max } else { s }))
                    .collect()
            }
            ThresholdRule::Quantile => {
                let span = config.quantile_end - config.quantile_start;
                let rho = config.quantile_start + span * progress.clamp(0.0, 1.0);
                self.histogram
                    .iter()
                    .map(|hist| clip(upper_quantile(hist, rho).unwrap_or(config.t_max)))
                    .collect()
            }
        }
    }
}

/// The top class of a probability row and its probability (the first on ties).
pub fn top_class(row: &[f32]) -> (usize, f32) {
    row.iter().copied().enumerate().fold(
        (0, f32::MIN),
        |best, (k, p)| if p > best.1 { (k, p) } else { best },
    )
}

fn bin_of(p: f64) -> usize {
    ((p * CONFIDENCE_BINS as f64) as usize).min(CONFIDENCE_BINS - 1)
}

/// The value above which a share `rho` of the histogram's mass lies (linear inside a bin);
/// `None` for an empty histogram.
fn upper_quantile(hist: &[f64], rho: f64) -> Option<f64> {
    let mass: f64 = hist.iter().sum();
    if mass <= 0.0 {
        return None;
    }
    let width = 1.0 / hist.len() as f64;
    let target = rho * mass;
    let mut above = 0.0;
    for (b, &h) in hist.iter().enumerate().rev() {
        if h > 0.0 && above + h >= target {
            let inside = (target - above) / h;
            return Some((b as f64 + 1.0 - inside) * width);
        }
        above += h;
    }
    Some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rule: ThresholdRule, momentum: f64) -> AlgorithmConfig {
        AlgorithmConfig {
            threshold_rule: rule,
            dta_momentum: momentum,
            t_min: 0.0,
            t_max: 1.0,
            ..AlgorithmConfig::default()
        }
    }

    #[test]
    fn starts_at_one_over_c_then_bias_correction_gives_the_batch_itself() {
        let cfg = config(ThresholdRule::Freematch, 0.9);
        let mut state = DtaState::new(2);
        assert_eq!(state.thresholds(&cfg, 0.0), vec![0.5, 0.5]);
        // Mean top probability (0.8 + 0.6) / 2 = 0.7; marginal [0.7, 0.3].
        state.update(&[0.8, 0.2, 0.6, 0.4], 0.9);
        assert!((state.confidence - 0.07).abs() < 1e-7, "raw EMA from zero");
        assert!((state.mean_confidence(0.9).unwrap() - 0.7).abs() < 1e-7);
        // t = s * m_c / max m = [0.7 * 0.7 / 0.7, 0.7 * 0.3 / 0.7].
        let t = state.thresholds(&cfg, 0.0);
        assert!(
            (t[0] - 0.7).abs() < 1e-6 && (t[1] - 0.3).abs() < 1e-6,
            "{t:?}"
        );
        // Variance of {0.8, 0.6} is 0.01.
        assert!((state.confidence_variance(0.9) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn second_update_is_the_corrected_weighted_mean() {
        let cfg = config(ThresholdRule::Freematch, 0.5);
        let mut state = DtaState::new(2);
        state.update(&[0.8, 0.2, 0.6, 0.4], 0.5); // s: 0.7, m: [0.7, 0.3]
        state.update(&[0.1, 0.9], 0.5); // s: 0.9, m: [0.1, 0.9]
        // Raw: s = 0.5*(0.5*0.7) + 0.5*0.9 = 0.625, corrected by 1 - 0.25 = 0.75 -> 0.8333.
        let s = state.mean_confidence(0.5).unwrap();
        assert!((s - 0.625 / 0.75).abs() < 1e-7, "{s}");
        // Raw m = [0.175 + 0.05, 0.075 + 0.45] = [0.225, 0.525]; t_0 = s * 0.225 / 0.525.
        let t = state.thresholds(&cfg, 0.0);
        assert!((t[0] as f64 - s * 0.225 / 0.525).abs() < 1e-6, "{t:?}");
        assert!((t[1] as f64 - s).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn thresholds_follow_a_confident_teacher_above_one_half_and_an_unsure_one_below() {
        let cfg = AlgorithmConfig::default();
        let mut sure = DtaState::new(3);
        let mut unsure = DtaState::new(3);
        for _ in 0..500 {
            sure.update(
                &[0.95, 0.03, 0.02, 0.02, 0.94, 0.04, 0.03, 0.02, 0.95],
                0.99,
            );
            unsure.update(&[0.4, 0.3, 0.3, 0.3, 0.42, 0.28, 0.3, 0.3, 0.4], 0.99);
        }
        let t = sure.thresholds(&cfg, 0.5);
        assert!(t.iter().all(|t| *t > 0.9), "{t:?}");
        let t = unsure.thresholds(&cfg, 0.5);
        assert!(t.iter().all(|t| *t < 0.45), "no floor at 0.5: {t:?}");
        // The clip still holds when asked for.
        let clipped = AlgorithmConfig { t_min: 0.5, ..cfg };
        assert!(unsure.thresholds(&clipped, 0.5).iter().all(|t| *t == 0.5));
    }

    #[test]
    fn quantile_rule_accepts_the_top_share_of_each_class() {
        let mut cfg = config(ThresholdRule::Quantile, 0.5);
        cfg.quantile_start = 0.25;
        cfg.quantile_end = 0.75;
        let mut state = DtaState::new(2);
        // Class 0 predicted with 0.61, 0.71, 0.81, 0.91 (bins 30, 35, 40, 45); class 1 never.
        state.update(
            &[0.61, 0.39, 0.71, 0.29, 0.81, 0.19, 0.91, 0.09],
            cfg.dta_momentum,
        );
        // rho 0.25 at the start: only the 0.91 bin [0.90, 0.92) is above; the threshold is
        // that bin's lower edge.
        let t = state.thresholds(&cfg, 0.0);
        assert!((t[0] - 0.90).abs() < 1e-6, "{t:?}");
        assert_eq!(
            t[1], cfg.t_max as f32,
            "a class never predicted accepts nothing"
        );
        // rho 0.5 halfway: the top two bins, down to 0.80.
        let t = state.thresholds(&cfg, 0.5);
        assert!((t[0] - 0.80).abs() < 1e-6, "{t:?}");
        // rho 0.75 at the end: down to 0.70.
        let t = state.thresholds(&cfg, 1.0);
        assert!((t[0] - 0.70).abs() < 1e-6, "{t:?}");
        // Half of one bin's mass: linear inside the bin.
        assert!((upper_quantile(&[0.0, 2.0], 0.5).unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(upper_quantile(&[0.0, 0.0], 0.5), None);
    }

    #[test]
    fn state_serialises_and_rules_parse() {
        let mut state = DtaState::new(7);
        state.update(&[0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05], 0.9);
        let json = serde_json::to_string(&state).unwrap();
        let back: DtaState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state, "bit for bit (serde_json's float_roundtrip)");
        for rule in [ThresholdRule::Freematch, ThresholdRule::Quantile] {
            assert_eq!(rule.name().parse::<ThresholdRule>().unwrap(), rule);
        }
        assert!("flexmatch".parse::<ThresholdRule>().is_err());
    }
}
