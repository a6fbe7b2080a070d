//! Pseudo-labels: which unlabeled samples the student learns the teacher's top class for, and
//! with what weight.
//!
//! For sample `i` with teacher weak-view probabilities `p_i`, top class `c_i = argmax p_i` and
//! confidence `p_i* = p_{i c_i}`, against the class threshold `t = t_{c_i}`:
//!
//! * accepted when `p_i* >= t`: weight `w_i = 1`;
//! * below the threshold: `w_i = exp(-2 (t - p_i*)^2 / sigma^2)` with soft weights on (a
//!   Gaussian of standard deviation `sigma / 2` around the threshold, `sigma^2` the variance
//!   of the teacher's top probability, as SoftMatch truncates its Gaussian at the mean), else 0.
//!
//! The loss over the student's strong-view probabilities `q`:
//! `L_u = (1/N) sum_i w_i * -log q_{i c_i}` (FixMatch's normalisation by the whole batch).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::dta::top_class;

/// The teacher's verdict on one unlabeled batch.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PseudoLabels {
    /// Number of classes.
    pub classes: usize,
    /// The teacher's top class of every sample.
    pub top: Vec<usize>,
    /// Its probability.
    pub confidence: Vec<f32>,
    /// Whether the sample reached its class threshold.
    pub accepted: Vec<bool>,
    /// Weight of the sample's pseudo-label loss (1 when accepted).
    pub weights: Vec<f32>,
}

/// The soft weight of a sample with confidence `p` below threshold `t` (1 at or above it).
pub fn soft_weight(p: f32, t: f32, variance: f64) -> f32 {
    if p >= t {
        1.0
    } else {
        let d = (t - p) as f64;
        (-2.0 * d * d / variance).exp() as f32
    }
}

/// Pseudo-labels from teacher probabilities `probs` (`N` rows of `thresholds.len()` values);
/// `soft_variance` switches the soft weights below the thresholds on.
pub fn select(probs: &[f32], thresholds: &[f32], soft_variance: Option<f64>) -> PseudoLabels {
    let c = thresholds.len();
    let mut out = PseudoLabels {
        classes: c,
        ..PseudoLabels::default()
    };
    for row in probs.chunks_exact(c) {
        let (top, p) = top_class(row);
        let t = thresholds[top];
        let accepted = p >= t;
        let weight = match (accepted, soft_variance) {
            (true, _) => 1.0,
            (false, Some(variance)) => soft_weight(p, t, variance),
            (false, None) => 0.0,
        };
        out.top.push(top);
        out.confidence.push(p);
        out.accepted.push(accepted);
        out.weights.push(weight);
    }
    out
}

impl PseudoLabels {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.top.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.top.is_empty()
    }

    /// Number of accepted samples.
    pub fn accepted_count(&self) -> usize {
        self.accepted.iter().filter(|a| **a).count()
    }

    /// The `N x C` target matrix of the loss: `w_i / N` at `(i, c_i)`, zero elsewhere.
    pub fn target_matrix(&self) -> Vec<f32> {
        let (n, c) = (self.len(), self.classes);
        let mut out = vec![0.0; n * c];
        for (i, (&top, &w)) in self.top.iter().zip(&self.weights).enumerate() {
            out[i * c + top] = w / n as f32;
        }
        out
    }
}

/// `L_u` from the student's log-probabilities `[N, C]` and [`PseudoLabels::target_matrix`].
pub fn loss<B: Backend>(log_probs: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    -(log_probs * targets).sum()
}

/// Host reference of [`loss`] on probabilities.
pub fn loss_reference(student_probs: &[f32], labels: &PseudoLabels) -> f64 {
    let c = labels.classes;
    let n = labels.len().max(1) as f64;
    labels
        .top
        .iter()
        .zip(&labels.weights)
        .enumerate()
        .map(|(i, (&top, &w))| -(w as f64) * (student_probs[i * c + top] as f64).ln() / n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn::tensor::activation::log_softmax;
    use burn_flex::Flex;

    #[test]
    fn hard_thresholds_accept_per_class() {
        let probs = [0.8, 0.1, 0.1, 0.1, 0.8, 0.1];
        let labels = select(&probs, &[0.7, 0.9, 0.5], None);
        assert_eq!(labels.top, vec![0, 1]);
        assert_eq!(labels.accepted, vec![true, false]);
        assert_eq!(labels.weights, vec![1.0, 0.0]);
        assert_eq!(labels.accepted_count(), 1);
        assert_eq!(labels.target_matrix(), vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn soft_weights_are_a_gaussian_of_the_distance_below_the_threshold() {
        // variance 0.02: w = exp(-2 * 0.1^2 / 0.02) = exp(-1) at 0.1 below the threshold.
        let w = soft_weight(0.6, 0.7, 0.02);
        assert!((w - (-1.0f32).exp()).abs() < 1e-6, "{w}");
        assert_eq!(soft_weight(0.75, 0.7, 0.02), 1.0);
        let labels = select(&[0.6, 0.4, 0.3, 0.7], &[0.7, 0.7], Some(0.02));
        assert_eq!(labels.accepted, vec![false, true]);
        assert!((labels.weights[0] - (-1.0f32).exp()).abs() < 1e-6);
        assert_eq!(labels.weights[1], 1.0);
    }

    #[test]
    fn tensor_loss_matches_the_reference() {
        let logits = [1.0f32, 0.5, -0.3, 0.2, 2.0, 0.1];
        let labels = select(
            &[0.9, 0.05, 0.05, 0.3, 0.4, 0.3],
            &[0.8, 0.8, 0.8],
            Some(0.05),
        );
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(logits.to_vec(), [2, 3]), &device);
        let log_q = log_softmax(x, 1);
        let q: Vec<f32> = log_q
            .clone()
            .exp()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap();
        let t = Tensor::from_data(TensorData::new(labels.target_matrix(), [2, 3]), &device);
        let got: f32 = loss(log_q, t).into_scalar();
        let want = loss_reference(&q, &labels);
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        // By hand: (1 * -ln q_00 + w_1 * -ln q_11) / 2.
        let w1 = soft_weight(0.4, 0.8, 0.05) as f64;
        let by_hand = (-(q[0] as f64).ln() - w1 * (q[4] as f64).ln()) / 2.0;
        assert!((want - by_hand).abs() < 1e-9);
    }
}
