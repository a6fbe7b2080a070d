//! One training step, apart from the loop: the teacher labels the unlabeled batch, the DTA
//! state folds it in, and the student's loss is built from the labeled batch, the
//! pseudo-labels and the complementary labels (formulas in [`crate::algorithm`]).
//!
//! `loss = CE_sup + lambda_u * L_u + lambda_n * L_n`, with `CE_sup` the mean cross-entropy of
//! the labeled batch. Every term is a mean over its batch, so with several devices the mean of
//! the devices' gradients is the gradient of the whole batch. [`super::replica`] applies the
//! optimiser, the DTA update and the teacher update.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::config::TrainConfig;
use super::metrics::StepMetrics;
use crate::algorithm::{DtaState, negative, pseudo_label};
use crate::data::loader::{Batch, step_rng, streams};
use crate::error::{Error, Result};
use crate::model::Model;

/// The loss to optimise and what the step logs.
#[derive(Debug)]
pub struct StepOutput<B: AutodiffBackend> {
    /// The total loss (with its autodiff graph).
    pub loss: Tensor<B, 1>,
    /// The step's line of `metrics.jsonl`.
    pub metrics: StepMetrics,
    /// The teacher's probabilities on the unlabeled batch (`[nu, C]`, row-major), for the DTA
    /// update; empty without unlabeled images.
    pub teacher_probs: Vec<f32>,
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// Builds step `batch.step`'s loss with the thresholds that `dta` gives now; the caller folds
/// [`StepOutput::teacher_probs`] into `dta` afterwards.
pub fn train_step<B: AutodiffBackend>(
    config: &TrainConfig,
    student: &Model<B>,
    teacher: &Model<B::InnerBackend>,
    dta: &DtaState,
    batch: Batch,
    device: &B::Device,
) -> StepOutput<B> {
    let alg = &config.algorithm;
    let m = &config.model;
    let (shape, c) = (
        [m.input_channels, m.input_height, m.input_width],
        m.num_classes,
    );
    let (step, nl, nu) = (batch.step, batch.labels.len(), batch.hidden.len());
    let progress = step as f64 / config.steps.max(1) as f64;
    let thresholds = alg.thresholds(dta, progress);
    let mut metrics = StepMetrics {
        step,
        lr: config.optimizer.learning_rate_at(step, config.steps),
        thresholds: thresholds.clone(),
        top_per_class: vec![0; c],
        accepted_per_class: vec![0; c],
        known_per_class: vec![0; c],
        correct_per_class: vec![0; c],
        ..StepMetrics::default()
    };
    let images =
        |data: Vec<f32>, n: usize| TensorData::new(data, [n, shape[0], shape[1], shape[2]]);
    let mut sup_target = vec![0.0f32; nl * c];
    for (i, &label) in batch.labels.iter().enumerate() {
        sup_target[i * c + label] = 1.0 / nl as f32;
    }
    let sup_target = Tensor::<B, 2>::from_data(TensorData::new(sup_target, [nl, c]), device);
    let x_l = Tensor::<B, 4>::from_data(images(batch.labeled, nl), device);
    let mut rng = step_rng(config.seed, step, streams::MODEL);
    let zero = || Tensor::<B, 1>::zeros([1], device);

    let mut teacher_probs = Vec::new();
    let (sup, pseudo, negative_loss) = if nu > 0 {
        let weak = Tensor::<B::InnerBackend, 4>::from_data(images(batch.weak, nu), device);
        let probs = host(softmax(teacher.forward(weak), 1));
        let labels = pseudo_label::select(&probs, &thresholds, alg.soft_variance(dta));
        let x_u = Tensor::<B, 4>::from_data(images(batch.strong, nu), device);
        let logits = student.forward_train(Tensor::cat(vec![x_l, x_u], 0), &mut rng);
        let logits_l = logits.clone().slice([0..nl, 0..c]);
        let log_q = log_softmax(logits.slice([nl..nl + nu, 0..c]), 1);
        let sup = -(log_softmax(logits_l, 1) * sup_target).sum();
        let targets = Tensor::from_data(TensorData::new(labels.target_matrix(), [nu, c]), device);
        let pseudo = pseudo_label::loss(log_q.clone(), targets);
        record_pseudo_labels(&mut metrics, &labels, &batch.hidden);
        let negative_loss = if alg.algorithm.snl() {
            let student_probs = host(log_q.clone().detach().exp());
            let negatives = negative::select(
                &probs,
                &student_probs,
                &labels,
                alg.t_neg,
                alg.neg_student_min,
            );
            record_negatives(&mut metrics, &negatives, &student_probs, &batch.hidden, c);
            let weights = Tensor::from_data(TensorData::new(negatives.weights, [nu, c]), device);
            negative::loss(log_q, weights)
        } else {
            zero()
        };
        teacher_probs = probs;
        (sup, pseudo, negative_loss)
    } else {
        let logits = student.forward_train(x_l, &mut rng);
        (-(log_softmax(logits, 1) * sup_target).sum(), zero(), zero())
    };
    let loss = sup.clone()
        + pseudo.clone().mul_scalar(alg.lambda_u)
        + negative_loss.clone().mul_scalar(alg.lambda_n);
    // One read of the device for all four terms.
    let terms = host(Tensor::cat(vec![loss.clone(), sup, pseudo, negative_loss], 0).detach());
    [
        metrics.loss,
        metrics.supervised,
        metrics.pseudo,
        metrics.negative,
    ] = [terms[0], terms[1], terms[2], terms[3]].map(f64::from);
    StepOutput {
        loss,
        metrics,
        teacher_probs,
    }
}

/// Refuses a step whose loss is not a number (checked after all devices finished the step,
/// so that none waits for a peer that stopped).
pub fn check_finite(metrics: &StepMetrics) -> Result<()> {
    if metrics.loss.is_finite() {
        return Ok(());
    }
    Err(Error::config(
        "optimizer.learning_rate",
        format!(
            "the loss became {} at step {}; lower the learning rate",
            metrics.loss, metrics.step
        ),
    ))
}

fn record_pseudo_labels(
    metrics: &mut StepMetrics,
    labels: &pseudo_label::PseudoLabels,
    hidden: &[Option<usize>],
) {
    for (i, &top) in labels.top.iter().enumerate() {
        metrics.top_per_class[top] += 1;
        if labels.accepted[i] {
            metrics.accepted_per_class[top] += 1;
            if let Some(truth) = hidden[i] {
                metrics.known_per_class[top] += 1;
                metrics.correct_per_class[top] += u32::from(truth == top);
            }
        }
    }
    let n = labels.len().max(1) as f64;
    metrics.mask_rate = labels.accepted_count() as f64 / n;
    metrics.soft_weight = labels.weights.iter().map(|w| *w as f64).sum::<f64>() / n;
    let known: u32 = metrics.known_per_class.iter().sum();
    let correct: u32 = metrics.correct_per_class.iter().sum();
    metrics.pseudo_accuracy = (known > 0).then(|| correct as f64 / known as f64);
}

fn record_negatives(
    metrics: &mut StepMetrics,
    negatives: &negative::Negatives,
    student_probs: &[f32],
    hidden: &[Option<usize>],
    classes: usize,
) {
    metrics.with_negatives = negatives.counts.iter().filter(|n| **n > 0).count() as u32;
    let mut student_sum = 0.0f64;
    for (i, k) in negatives.pairs(classes) {
        metrics.negatives += 1;
        student_sum += student_probs[i * classes + k] as f64;
        if let Some(truth) = hidden[i] {
            metrics.negatives_known += 1;
            metrics.negatives_correct += u32::from(truth != k);
        }
    }
    if metrics.negatives > 0 {
        metrics.negative_student = student_sum / metrics.negatives as f64;
    }
}
