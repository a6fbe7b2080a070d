//! The semi-supervised algorithm: EMA teacher, dynamic thresholds (DTA) and selective negative
//! learning (SNL). This is our formulation of the ideas of arXiv 2601.05556 (DESIGN.md).
//!
//! Everything here except [`ema_update`] is plain arithmetic on probability rows, so it is
//! tested without a network. Per unlabeled batch of `N_u` samples with teacher probabilities
//! `p` (weak view) and student probabilities `q` (strong view):
//!
//! * DTA state: `s <- mu * s + (1 - mu) * mean_i max_c p_ic`, `m_c <- mu * m_c + (1 - mu) *
//!   mean_i p_ic`, both starting at `1/C`, `mu` = [`AlgorithmConfig::dta_momentum`]; the
//!   threshold of class `c` is `t_c = clip(s * m_c / max_k m_k, t_min, t_max)`. The thresholds
//!   used for a batch are those *before* the batch's own update.
//! * Pseudo-labels: sample `i` with top class `c` and `p_ic >= t_c` gets the target `c`;
//!   `L_u = (1/N_u) * sum_{i accepted} CE(q_i, c)` (FixMatch's normalisation).
//! * SNL: a sample that is not accepted gets the complementary labels
//!   `{c != top : p_ic < t_neg}`; `L_n = (1/N_u) * sum_{i with labels} mean_{c} -log(1 - q_ic)`.
//!   Samples without such classes add nothing.
//! * Teacher: `theta_t <- a * theta_t + (1 - a) * theta_s` over every parameter and BatchNorm
//!   running statistic, with `a = min((step + 1) / (step + 10), momentum)`: early on the
//!   teacher averages over the last ~10% of the steps instead of keeping the random
//!   initialisation (a warm-up in the spirit of Mean Teacher's `1 - 1/(step + 1)`, ours), and
//!   from step ~10,000 on it is the plain 0.999 EMA.

use std::str::FromStr;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

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
    /// EMA momentum of the teacher (after warm-up).
    pub ema_momentum: f64,
    /// EMA momentum of the DTA state (`s` and `m`).
    pub dta_momentum: f64,
    /// Lower clip of the dynamic thresholds.
    pub t_min: f64,
    /// Upper clip of the dynamic thresholds.
    pub t_max: f64,
    /// Threshold of every class in `fixed` mode (FixMatch: 0.95).
    pub fixed_threshold: f64,
    /// SNL: classes below this teacher probability become complementary labels.
    pub t_neg: f64,
    /// Weight of the pseudo-label loss.
    pub lambda_u: f64,
    /// Weight of the SNL loss.
    pub lambda_n: f64,
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig {
            algorithm: Algorithm::DtaSnl,
            ema_momentum: 0.999,
            dta_momentum: 0.999,
            t_min: 0.5,
            t_max: 0.95,
            fixed_threshold: 0.95,
            t_neg: 0.05,
            lambda_u: 1.0,
            lambda_n: 0.5,
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
        unit("algorithm.fixed_threshold", self.fixed_threshold)?;
        unit("algorithm.t_neg", self.t_neg)?;
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
}

/// The DTA state: global confidence `s` and class marginal `m` (training state, checkpointed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DtaState {
    /// Global confidence `s`.
    pub global: f64,
    /// Class marginal `m_c`.
    pub marginal: Vec<f64>,
    /// Number of batches folded in.
    pub updates: u64,
}

impl DtaState {
    /// The initial state for `classes` classes (`s = m_c = 1/C`).
    pub fn new(classes: usize) -> Self {
        let start = 1.0 / classes as f64;
        DtaState {
            global: start,
            marginal: vec![start; classes],
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
        let mut mean_max = 0.0f64;
        let mut mean = vec![0.0f64; c];
        for row in probs.chunks_exact(c) {
            mean_max += row.iter().copied().fold(f32::MIN, f32::max) as f64;
            for (acc, p) in mean.iter_mut().zip(row) {
                *acc += *p as f64;
            }
        }
        let inv = 1.0 / n as f64;
        self.global = momentum * self.global + (1.0 - momentum) * mean_max * inv;
        for (m, acc) in self.marginal.iter_mut().zip(mean) {
            *m = momentum * *m + (1.0 - momentum) * acc * inv;
        }
        self.updates += 1;
    }

    /// `t_c = clip(s * m_c / max_k m_k, t_min, t_max)`.
    pub fn thresholds(&self, t_min: f64, t_max: f64) -> Vec<f32> {
        let max = self.marginal.iter().copied().fold(f64::MIN, f64::max);
        self.marginal
            .iter()
            .map(|m| {
                let t = if max > 0.0 {
                    self.global * m / max
                } else {
                    0.0
                };
                t.clamp(t_min, t_max) as f32
            })
            .collect()
    }
}

/// The thresholds the algorithm applies to the next batch (`fixed`: one value for all).
pub fn current_thresholds(config: &AlgorithmConfig, state: &DtaState) -> Vec<f32> {
    if config.algorithm.dynamic() {
        state.thresholds(config.t_min, config.t_max)
    } else {
        vec![config.fixed_threshold as f32; state.classes()]
    }
}

/// What the teacher's weak-view probabilities decide for a batch of unlabeled samples.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Targets {
    /// The teacher's top class of every sample.
    pub top: Vec<usize>,
    /// Whether the sample became a pseudo-label (`p_top >= t_top`).
    pub accepted: Vec<bool>,
    /// Per sample and class (`N * C`, row-major): weight of `-log(1 - q_ic)` in the SNL loss,
    /// already divided by the sample's label count and by `N`; all zero when SNL is off.
    pub negative_weights: Vec<f32>,
    /// Number of complementary labels of each sample.
    pub negative_counts: Vec<usize>,
}

impl Targets {
    /// Number of accepted pseudo-labels.
    pub fn accepted_count(&self) -> usize {
        self.accepted.iter().filter(|a| **a).count()
    }

    /// Per-sample weights of the pseudo-label cross-entropy (`1/N` if accepted, else 0).
    pub fn pseudo_weights(&self) -> Vec<f32> {
        let n = self.accepted.len().max(1) as f32;
        self.accepted
            .iter()
            .map(|a| if *a { 1.0 / n } else { 0.0 })
            .collect()
    }
}

/// Pseudo-labels and (when `snl`) complementary labels from teacher probabilities `probs`
/// (`N` rows of `C = thresholds.len()` values).
pub fn select_targets(probs: &[f32], thresholds: &[f32], snl: bool, t_neg: f64) -> Targets {
    let c = thresholds.len();
    let n = probs.len() / c;
    let mut targets = Targets {
        negative_weights: vec![0.0; n * c],
        ..Targets::default()
    };
    for (i, row) in probs.chunks_exact(c).enumerate() {
        let (top, p_top) = row
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (k, p)| if p > best.1 { (k, p) } else { best },
            );
        let accepted = p_top >= thresholds[top];
        targets.top.push(top);
        targets.accepted.push(accepted);
        let mut count = 0;
        if snl && !accepted {
            let negatives: Vec<usize> = (0..c)
                .filter(|&k| k != top && (row[k] as f64) < t_neg)
                .collect();
            count = negatives.len();
            for k in negatives {
                targets.negative_weights[i * c + k] = 1.0 / (count as f32 * n as f32);
            }
        }
        targets.negative_counts.push(count);
    }
    targets
}

/// The SNL loss computed on the host (used in tests and as the reference for the tensor loss in
/// training): `sum_ic w_ic * -log(1 - q_ic)`.
pub fn snl_loss(student_probs: &[f32], weights: &[f32]) -> f64 {
    student_probs
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(q, w)| -(*w as f64) * (1.0 - *q as f64).max(1e-6).ln())
        .sum()
}

/// The teacher's momentum at `step` (0-based): `min((step + 1) / (step + 10), momentum)`.
pub fn ema_momentum(step: u64, momentum: f64) -> f64 {
    ((step as f64 + 1.0) / (step as f64 + 10.0)).min(momentum)
}

/// `teacher <- a * teacher + (1 - a) * student` over every float tensor (parameters and
/// BatchNorm running statistics). Both modules must have the same architecture.
pub fn ema_update<B: Backend, M: Module<B>>(teacher: M, student: &M, momentum: f64) -> M {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend<B: Backend> {
        student: std::vec::IntoIter<Tensor<B, 1>>,
        momentum: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let source = self
                .student
                .next()
                .expect("teacher and student have the same architecture");
            let shape = tensor.shape();
            let blended = tensor.mul_scalar(self.momentum)
                + source.reshape(shape).mul_scalar(1.0 - self.momentum);
            Param::from_mapped_value(id, blended.detach(), mapper)
        }
    }
    let mut collect = Collect(Vec::new());
    student.visit(&mut collect);
    let mut blend = Blend {
        student: collect.0.into_iter(),
        momentum,
    };
    teacher.map(&mut blend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use burn_flex::Flex;

    fn row(probs: &[f32]) -> Vec<f32> {
        probs.to_vec()
    }

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
    fn config_validation() {
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
    }

    #[test]
    fn dta_starts_uniform_and_thresholds_follow_confident_classes() {
        let mut state = DtaState::new(3);
        assert_eq!(state.global, 1.0 / 3.0);
        assert_eq!(state.thresholds(0.2, 0.95), vec![1.0 / 3.0; 3]);
        // The teacher is confident about class 0 and unsure between 1 and 2.
        let batch = [
            row(&[0.98, 0.01, 0.01]),
            row(&[0.97, 0.02, 0.01]),
            row(&[0.1, 0.5, 0.4]),
        ]
        .concat();
        let before = state.thresholds(0.2, 0.95);
        for _ in 0..2000 {
            state.update(&batch, 0.99);
        }
        let after = state.thresholds(0.2, 0.95);
        for t in &after {
            assert!((0.2..=0.95).contains(t), "{after:?}");
        }
        assert!(after[0] > before[0], "confident class rises: {after:?}");
        assert!(after[0] > after[1] && after[1] > after[2], "{after:?}");
        // s converges to the mean max probability.
        let mean_max = (0.98 + 0.97 + 0.5) / 3.0;
        assert!((state.global - mean_max).abs() < 1e-3);
        assert_eq!(state.updates, 2000);
        // The clip holds at both ends.
        let tight = state.thresholds(0.7, 0.75);
        assert!(tight.iter().all(|t| (0.7..=0.75).contains(t)), "{tight:?}");
    }

    #[test]
    fn dta_state_serialises() {
        let mut state = DtaState::new(7);
        state.update(&[0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05], 0.9);
        let json = serde_json::to_string(&state).unwrap();
        let back: DtaState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.thresholds(0.3, 0.9), state.thresholds(0.3, 0.9));
    }

    #[test]
    fn fixed_mode_uses_one_threshold() {
        let config = AlgorithmConfig {
            algorithm: Algorithm::Fixed,
            ..Default::default()
        };
        let state = DtaState::new(4);
        assert_eq!(current_thresholds(&config, &state), vec![0.95; 4]);
        let dynamic = AlgorithmConfig::default();
        assert_eq!(current_thresholds(&dynamic, &state), vec![0.5; 4]);
    }

    #[test]
    fn pseudo_labels_respect_class_thresholds() {
        let probs = [row(&[0.8, 0.1, 0.1]), row(&[0.1, 0.8, 0.1])].concat();
        let targets = select_targets(&probs, &[0.7, 0.9, 0.5], false, 0.05);
        assert_eq!(targets.top, vec![0, 1]);
        assert_eq!(targets.accepted, vec![true, false]);
        assert_eq!(targets.pseudo_weights(), vec![0.5, 0.0]);
        assert_eq!(targets.accepted_count(), 1);
        assert!(targets.negative_weights.iter().all(|w| *w == 0.0));
    }

    #[test]
    fn snl_never_picks_the_top_class() {
        // A flat-ish row whose top class is itself below t_neg: it must still be excluded.
        let c = 30;
        let flat = vec![1.0 / c as f32; c];
        let mut peaked = vec![0.01f32; c];
        peaked[3] = 1.0 - 0.01 * (c - 1) as f32;
        let probs = [flat.clone(), peaked.clone()].concat();
        let targets = select_targets(&probs, &vec![0.99; c], true, 0.05);
        for (i, &top) in targets.top.iter().enumerate() {
            assert_eq!(targets.negative_weights[i * c + top], 0.0, "sample {i}");
        }
        // Every non-top class of the flat row (p = 1/30 < 0.05) is a negative.
        assert_eq!(targets.negative_counts, vec![c - 1, c - 1]);
        let sum: f32 = targets.negative_weights.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "mean over labels, then over N: {sum}"
        );
    }

    #[test]
    fn snl_skips_accepted_samples_and_samples_without_negatives() {
        let probs = [
            row(&[0.96, 0.02, 0.02]), // accepted: no negatives
            row(&[0.4, 0.35, 0.25]),  // rejected, nothing below 0.05
            row(&[0.6, 0.38, 0.02]),  // rejected, class 2 is a negative
        ]
        .concat();
        let targets = select_targets(&probs, &[0.95; 3], true, 0.05);
        assert_eq!(targets.negative_counts, vec![0, 0, 1]);
        assert_eq!(targets.negative_weights[8], 1.0 / 3.0);
        // Loss: only sample 2 contributes, -log(1 - q) / N.
        let student = [
            row(&[0.3, 0.3, 0.4]),
            row(&[0.3, 0.3, 0.4]),
            row(&[0.1, 0.1, 0.8]),
        ]
        .concat();
        let loss = snl_loss(&student, &targets.negative_weights);
        assert!((loss - (-(0.2f64).ln() / 3.0)).abs() < 1e-6, "{loss}");
        // A confident wrong student costs more than one that avoids the negative class.
        let good = [
            row(&[0.3, 0.3, 0.4]),
            row(&[0.3, 0.3, 0.4]),
            row(&[0.6, 0.39, 0.01]),
        ]
        .concat();
        assert!(snl_loss(&good, &targets.negative_weights) < loss);
    }

    #[test]
    fn ema_momentum_warms_up() {
        assert_eq!(ema_momentum(0, 0.999), 0.1);
        assert_eq!(ema_momentum(90, 0.999), 0.91);
        assert!(ema_momentum(990, 0.999) < 0.992);
        assert_eq!(ema_momentum(1_000_000, 0.999), 0.999);
    }

    #[test]
    fn ema_update_blends_every_tensor() {
        let config = ModelConfig {
            width: 4,
            blocks: vec![1],
            input_height: 8,
            input_width: 8,
            ..ModelConfig::default()
        };
        let device = Default::default();
        let teacher = config.init::<Flex>(&device).unwrap();
        let student = config.init::<Flex>(&device).unwrap();
        let t0 = teacher.head.weight.val();
        let s0 = student.head.weight.val();
        let blended = ema_update(teacher, &student, 0.75);
        let expected = t0.mul_scalar(0.75) + s0.mul_scalar(0.25);
        let got = blended.head.weight.val();
        let diff = (got - expected).abs().max().into_scalar();
        assert!(diff < 1e-6, "{diff}");
        // Momentum 0 copies the student, running statistics included.
        let copied = ema_update(blended, &student, 0.0);
        let a = copied.backbone.stem.bn.running_var.value();
        let b = student.backbone.stem.bn.running_var.value();
        assert_eq!(a.into_data(), b.into_data());
        assert_eq!(
            copied.backbone.stem.conv.weight.val().into_data(),
            student.backbone.stem.conv.weight.val().into_data()
        );
    }
}
