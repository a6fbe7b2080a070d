//! Evaluation: accuracy, per-class recall, macro-F1 and the confusion matrix.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::Model;

/// The result of evaluating a model on labeled data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Class names, in index order.
    pub class_names: Vec<String>,
    /// Number of images.
    pub count: usize,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Recall of every class (NaN-free: 0 for a class without images).
    pub per_class_recall: Vec<f64>,
    /// Mean over classes of the F1 score.
    pub macro_f1: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

impl EvalReport {
    /// Builds the report from true and predicted class indices.
    pub fn from_predictions(class_names: &[String], truth: &[usize], predicted: &[usize]) -> Self {
        let c = class_names.len();
        let mut confusion = vec![vec![0u64; c]; c];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let count = truth.len();
        let correct: u64 = (0..c).map(|k| confusion[k][k]).sum();
        let mut recall = Vec::with_capacity(c);
        let mut f1_sum = 0.0;
        for k in 0..c {
            let tp = confusion[k][k] as f64;
            let actual: u64 = confusion[k].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[k]).sum();
            let r = if actual > 0 { tp / actual as f64 } else { 0.0 };
            let p = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            recall.push(r);
            f1_sum += if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            };
        }
        EvalReport {
            class_names: class_names.to_vec(),
            count,
            accuracy: if count > 0 {
                correct as f64 / count as f64
            } else {
                0.0
            },
            per_class_recall: recall,
            macro_f1: f1_sum / c.max(1) as f64,
            confusion,
        }
    }

    /// A human-readable table (accuracy, macro-F1, recall per class, confusion matrix).
    pub fn table(&self) -> String {
        let mut out = format!(
            "images {}  accuracy {:.2}%  macro-F1 {:.4}\n",
            self.count,
            100.0 * self.accuracy,
            self.macro_f1
        );
        let width = self
            .class_names
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(4)
            .max(6);
        out.push_str(&format!(
            "{:>width$}  recall  confusion (rows: true, columns: predicted)\n",
            "class"
        ));
        for (k, name) in self.class_names.iter().enumerate() {
            let row: Vec<String> = self.confusion[k]
                .iter()
                .map(|n| format!("{n:>5}"))
                .collect();
            out.push_str(&format!(
                "{name:>width$}  {:>5.1}%  {}\n",
                100.0 * self.per_class_recall[k],
                row.join(" ")
            ));
        }
        out
    }
}

/// Class probabilities (softmax of the logits) of `inputs` (`N` samples of `sample_len`
/// values, NCHW), in batches of `batch`.
pub fn predict<B: Backend>(
    model: &Model<B>,
    inputs: &[f32],
    shape: [usize; 3],
    batch: usize,
    device: &B::Device,
) -> Vec<f32> {
    let sample_len = shape.iter().product::<usize>();
    let mut probs = Vec::new();
    for chunk in inputs.chunks(batch.max(1) * sample_len) {
        let n = chunk.len() / sample_len;
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(chunk.to_vec(), [n, shape[0], shape[1], shape[2]]),
            device,
        );
        let p = burn::tensor::activation::softmax(model.forward(x), 1);
        probs.extend(
            p.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 probabilities"),
        );
    }
    probs
}

/// Index of the largest value of each row of `classes` values.
pub fn argmax_rows(values: &[f32], classes: usize) -> Vec<usize> {
    values
        .chunks_exact(classes)
        .map(|row| {
            row.iter()
                .copied()
                .enumerate()
                .fold((0, f32::MIN), |b, (k, v)| if v > b.1 { (k, v) } else { b })
                .0
        })
        .collect()
}

/// Evaluates `model` on preprocessed `inputs` with true `labels`.
pub fn evaluate<B: Backend>(
    model: &Model<B>,
    inputs: &[f32],
    labels: &[usize],
    class_names: &[String],
    shape: [usize; 3],
    device: &B::Device,
) -> EvalReport {
    let probs = predict(model, inputs, shape, 64, device);
    let predicted = argmax_rows(&probs, class_names.len());
    EvalReport::from_predictions(class_names, labels, &predicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_a_known_confusion() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let truth = [0, 0, 0, 0, 1, 1, 2, 2];
        let pred = [0, 0, 0, 1, 1, 0, 2, 2];
        let r = EvalReport::from_predictions(&names, &truth, &pred);
        assert_eq!(r.count, 8);
        assert!((r.accuracy - 6.0 / 8.0).abs() < 1e-12);
        assert_eq!(r.confusion[0], vec![3, 1, 0]);
        assert_eq!(r.per_class_recall, vec![0.75, 0.5, 1.0]);
        // F1: a: p=3/4 r=3/4 -> 0.75; b: p=1/2 r=1/2 -> 0.5; c: 1.
        assert!((r.macro_f1 - 0.75).abs() < 1e-12);
        let table = r.table();
        assert!(
            table.contains("accuracy 75.00%") && table.contains("50.0%"),
            "{table}"
        );
        assert_eq!(
            argmax_rows(&[0.1, 0.7, 0.2, 0.9, 0.05, 0.05], 3),
            vec![1, 0]
        );
    }
}
