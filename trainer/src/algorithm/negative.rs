//! Selective Negative Learning: complementary labels ("not class c") for the unlabeled samples
//! below their threshold, chosen to carry information.
//!
//! For a sample `i` that was not accepted, with teacher weak-view probabilities `p_i`, top
//! class `c_i` and student strong-view probabilities `q_i` (read before the loss, no
//! gradient), the complementary labels are
//!
//! `N_i = { c != c_i : p_ic < t_neg and q_ic >= neg_student_min }`:
//!
//! classes the teacher rules out (safe) that the student still gives weight to (informative).
//! The gradient of `-log(1 - q_ic)` with respect to the logit `z_ic` is `q_ic`, so negatives
//! the student already puts near zero teach nothing: the first formulation, which took every
//! class below `t_neg` alone, measured a negative loss of about 0.01 and no effect on
//! accuracy. The loss, averaged over each sample's labels and over the batch:
//!
//! `L_n = (1/N) sum_{i : N_i non-empty} (1/|N_i|) sum_{c in N_i} -log(1 - q_ic)`.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::pseudo_label::PseudoLabels;

/// The complementary labels of one unlabeled batch.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Negatives {
    /// Per sample and class (`N * C`, row-major): the weight of `-log(1 - q_ic)`, already
    /// divided by the sample's label count and by `N`.
    pub weights: Vec<f32>,
    /// Number of complementary labels of each sample.
    pub counts: Vec<usize>,
}

impl Negatives {
    /// Total number of complementary labels.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// The `(sample, class)` pairs that are complementary labels.
    pub fn pairs(&self, classes: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0.0)
            .map(move |(k, _)| (k / classes, k % classes))
    }
}

/// Complementary labels for the samples of `labels` that were not accepted, from the teacher's
/// `teacher` and the student's `student` probabilities (both `N x C`, row-major).
pub fn select(
    teacher: &[f32],
    student: &[f32],
    labels: &PseudoLabels,
    t_neg: f64,
    student_min: f64,
) -> Negatives {
    let (n, c) = (labels.len(), labels.classes);
    let mut out = Negatives {
        weights: vec![0.0; n * c],
        counts: vec![0; n],
    };
    for i in 0..n {
        if labels.accepted[i] {
            continue;
        }
        let chosen: Vec<usize> = (0..c)
            .filter(|&k| {
                k != labels.top[i]
                    && (teacher[i * c + k] as f64) < t_neg
                    && (student[i * c + k] as f64) >= student_min
            })
            .collect();
        for &k in &chosen {
            out.weights[i * c + k] = 1.0 / (chosen.len() * n) as f32;
        }
        out.counts[i] = chosen.len();
    }
    out
}

/// `L_n` from the student's log-probabilities `[N, C]` and [`Negatives::weights`] as a tensor.
pub fn loss<B: Backend>(log_probs: Tensor<B, 2>, weights: Tensor<B, 2>) -> Tensor<B, 1> {
    let one_minus_q = log_probs.exp().neg().add_scalar(1.0).clamp_min(1e-6);
    -(one_minus_q.log() * weights).sum()
}

/// Host reference of [`loss`]: `sum_ic w_ic * -log(1 - q_ic)`.
pub fn loss_reference(student_probs: &[f32], weights: &[f32]) -> f64 {
    student_probs
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(q, w)| -(*w as f64) * (1.0 - *q as f64).max(1e-6).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::pseudo_label::select as pseudo;
    use burn::tensor::TensorData;
    use burn::tensor::activation::log_softmax;
    use burn_flex::Flex;

    #[test]
    fn negatives_are_ruled_out_by_the_teacher_and_still_held_by_the_student() {
        let teacher = [
            0.96, 0.02, 0.02, // accepted: no negatives
            0.60, 0.38, 0.02, // rejected: class 2 is ruled out ...
            0.50, 0.03, 0.47, // rejected: class 1 is ruled out ...
        ];
        let student = [
            0.30, 0.30, 0.40, //
            0.50, 0.30, 0.20, // ... and the student gives it 0.2: a negative
            0.60, 0.01, 0.39, // ... but the student already gives it 0.01: none
        ];
        let labels = pseudo(&teacher, &[0.95; 3], None);
        let neg = select(&teacher, &student, &labels, 0.05, 0.05);
        assert_eq!(neg.counts, vec![0, 1, 0]);
        assert_eq!(neg.weights[5], 1.0 / 3.0);
        assert_eq!(neg.pairs(3).collect::<Vec<_>>(), vec![(1, 2)]);
        assert_eq!(neg.total(), 1);
        // -log(1 - 0.2) / 3.
        let l = loss_reference(&student, &neg.weights);
        assert!((l - (-(0.8f64).ln() / 3.0)).abs() < 1e-7, "{l}");
    }

    #[test]
    fn the_top_class_is_never_a_negative_and_labels_are_averaged() {
        // A flat teacher row whose top class is itself below t_neg.
        let c = 30;
        let flat = vec![1.0 / c as f32; c];
        let labels = pseudo(&flat, &vec![0.99; c], None);
        let student = vec![0.1f32; c];
        let neg = select(&flat, &student, &labels, 0.05, 0.05);
        assert_eq!(neg.weights[labels.top[0]], 0.0);
        assert_eq!(neg.counts, vec![c - 1]);
        let sum: f32 = neg.weights.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "mean over labels, then over N: {sum}"
        );
    }

    #[test]
    fn tensor_loss_matches_the_reference() {
        let logits = vec![0.3f32, -1.0, 2.0, 0.0, 0.5, -0.5];
        let weights = vec![0.25f32, 0.25, 0.0, 0.0, 0.0, 0.5];
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(logits, [2, 3]), &device);
        let log_q = log_softmax(x, 1);
        let q: Vec<f32> = log_q
            .clone()
            .exp()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap();
        let w = Tensor::from_data(TensorData::new(weights.clone(), [2, 3]), &device);
        let got: f32 = loss(log_q, w).into_scalar();
        let want = loss_reference(&q, &weights);
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }
}
