//! The run's `metrics.jsonl`: one [`MetricsLine`] per step and per evaluation, read back by
//! the plots, `fer-train compare` and the run summary.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::EvalReport;

/// One line of `metrics.jsonl`, tagged by `"kind"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricsLine {
    /// The loss terms and pseudo-label statistics of one step.
    Step(StepMetrics),
    /// An evaluation on the validation data.
    Eval(EvalMetrics),
}

impl MetricsLine {
    /// The step the line belongs to (steps done, for an evaluation).
    pub fn step(&self) -> u64 {
        match self {
            MetricsLine::Step(m) => m.step,
            MetricsLine::Eval(m) => m.step,
        }
    }
}

/// The loss terms and pseudo-label statistics of one step. Counts over the unlabeled batch;
/// "known" and "correct" use the hidden labels of the labeled pool's unlabeled part, for
/// diagnosis only (training never reads them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct StepMetrics {
    /// The step (0-based).
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Total loss.
    pub loss: f64,
    /// Supervised cross-entropy.
    pub supervised: f64,
    /// Pseudo-label loss (unweighted by lambda_u).
    pub pseudo: f64,
    /// SNL loss (unweighted by lambda_n).
    pub negative: f64,
    /// Fraction of unlabeled samples at or above their class threshold.
    pub mask_rate: f64,
    /// Mean pseudo-label weight over the unlabeled batch (equals `mask_rate` without soft
    /// weights).
    pub soft_weight: f64,
    /// Accuracy of the accepted pseudo-labels whose hidden label is known (`None`: none).
    pub pseudo_accuracy: Option<f64>,
    /// Thresholds used for this step's batch.
    pub thresholds: Vec<f32>,
    /// Unlabeled samples per teacher top class.
    pub top_per_class: Vec<u32>,
    /// Accepted pseudo-labels per class.
    pub accepted_per_class: Vec<u32>,
    /// Accepted pseudo-labels per class whose hidden label is known.
    pub known_per_class: Vec<u32>,
    /// ...and equal to the pseudo-label.
    pub correct_per_class: Vec<u32>,
    /// Unlabeled samples given at least one complementary label.
    pub with_negatives: u32,
    /// Complementary labels in the batch.
    pub negatives: u32,
    /// Complementary labels of samples whose hidden label is known.
    pub negatives_known: u32,
    /// ...that are right (the sample is truly not of that class).
    pub negatives_correct: u32,
    /// Mean student probability of the chosen complementary classes (the loss's gradient).
    pub negative_student: f64,
}

impl StepMetrics {
    /// The metrics of a step over the whole batch from those of its equal shards (one per
    /// device): losses and rates are averaged, counts added.
    pub fn merge(parts: &[StepMetrics]) -> StepMetrics {
        let Some(first) = parts.first() else {
            return StepMetrics::default();
        };
        let n = parts.len() as f64;
        let mean = |f: fn(&StepMetrics) -> f64| parts.iter().map(f).sum::<f64>() / n;
        let add = |f: fn(&StepMetrics) -> &Vec<u32>| {
            let mut total = vec![0u32; f(first).len()];
            for part in parts {
                for (t, v) in total.iter_mut().zip(f(part)) {
                    *t += v;
                }
            }
            total
        };
        let count = |f: fn(&StepMetrics) -> u32| parts.iter().map(f).sum::<u32>();
        let known_per_class = add(|m| &m.known_per_class);
        let correct_per_class = add(|m| &m.correct_per_class);
        let (known, correct) = (
            known_per_class.iter().sum::<u32>(),
            correct_per_class.iter().sum::<u32>(),
        );
        let negatives = count(|m| m.negatives);
        let student_sum: f64 = parts
            .iter()
            .map(|m| m.negative_student * f64::from(m.negatives))
            .sum();
        StepMetrics {
            step: first.step,
            lr: first.lr,
            loss: mean(|m| m.loss),
            supervised: mean(|m| m.supervised),
            pseudo: mean(|m| m.pseudo),
            negative: mean(|m| m.negative),
            mask_rate: mean(|m| m.mask_rate),
            soft_weight: mean(|m| m.soft_weight),
            pseudo_accuracy: (known > 0).then(|| f64::from(correct) / f64::from(known)),
            thresholds: first.thresholds.clone(),
            top_per_class: add(|m| &m.top_per_class),
            accepted_per_class: add(|m| &m.accepted_per_class),
            known_per_class,
            correct_per_class,
            with_negatives: count(|m| m.with_negatives),
            negatives,
            negatives_known: count(|m| m.negatives_known),
            negatives_correct: count(|m| m.negatives_correct),
            negative_student: if negatives > 0 {
                student_sum / f64::from(negatives)
            } else {
                0.0
            },
        }
    }
}

/// One evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalMetrics {
    /// Steps done when evaluated.
    pub step: u64,
    /// The student on the validation data.
    pub student: EvalReport,
    /// The deployed teacher (BatchNorm statistics re-estimated) on the validation data.
    pub teacher: EvalReport,
    /// Thresholds at this point.
    pub thresholds: Vec<f32>,
}

/// `metrics.jsonl`, open for appending.
#[derive(Debug)]
pub struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl`. With `keep_until` (a resumed run's checkpoint step) the
    /// lines a crashed run logged after its last checkpoint are dropped, since the resumed run
    /// redoes those steps; without it the file starts empty.
    pub fn open(run_dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let kept = match keep_until {
            Some(step) if path.exists() => {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
                text.lines()
                    .filter(|line| {
                        serde_json::from_str::<MetricsLine>(line).is_ok_and(|m| match m {
                            MetricsLine::Eval(e) => e.step <= step,
                            MetricsLine::Step(s) => s.step < step,
                        })
                    })
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            }
            _ => String::new(),
        };
        std::fs::write(&path, kept).map_err(|e| Error::io("writing", &path, e))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        Ok(MetricsLog { file, path })
    }

    /// Appends one line.
    pub fn write(&mut self, line: &MetricsLine) -> Result<()> {
        let text = serde_json::to_string(line).map_err(|cause| Error::Json {
            path: self.path.clone(),
            cause,
        })?;
        writeln!(self.file, "{text}").map_err(|e| Error::io("appending to", &self.path, e))
    }
}

/// Reads the step and evaluation lines of a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<(Vec<StepMetrics>, Vec<EvalMetrics>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let (mut steps, mut evals) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line).map_err(|cause| Error::Json {
            path: path.to_path_buf(),
            cause,
        })? {
            MetricsLine::Step(s) => steps.push(s),
            MetricsLine::Eval(e) => evals.push(e),
        }
    }
    Ok((steps, evals))
}

/// Pseudo-label and complementary-label statistics over a span of steps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PseudoLabelSummary {
    /// First step counted.
    pub from_step: u64,
    /// Share of unlabeled samples accepted.
    pub acceptance: f64,
    /// Share of accepted pseudo-labels (with a known hidden label) that are right.
    pub precision: Option<f64>,
    /// Per class (by teacher top class): share accepted.
    pub class_acceptance: Vec<Option<f64>>,
    /// Per class: share of accepted pseudo-labels that are right.
    pub class_precision: Vec<Option<f64>>,
    /// Complementary labels per unlabeled sample.
    pub negatives_per_sample: f64,
    /// Share of complementary labels (with a known hidden label) that are right.
    pub negative_precision: Option<f64>,
    /// Mean student probability of the chosen complementary classes.
    pub negative_student: Option<f64>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Sums the statistics of `steps` from `from_step` on (`None` without unlabeled data).
pub fn summarize(steps: &[StepMetrics], from_step: u64) -> Option<PseudoLabelSummary> {
    let span: Vec<&StepMetrics> = steps.iter().filter(|s| s.step >= from_step).collect();
    let classes = span.first()?.top_per_class.len();
    let total = |f: fn(&StepMetrics) -> &Vec<u32>, k: usize| -> u64 {
        span.iter()
            .map(|s| f(s).get(k).copied().unwrap_or(0) as u64)
            .sum()
    };
    let sum = |f: fn(&StepMetrics) -> u64| -> u64 { span.iter().map(|s| f(s)).sum() };
    let samples: u64 = (0..classes).map(|k| total(|s| &s.top_per_class, k)).sum();
    if samples == 0 {
        return None;
    }
    let accepted: u64 = (0..classes)
        .map(|k| total(|s| &s.accepted_per_class, k))
        .sum();
    let known: u64 = (0..classes).map(|k| total(|s| &s.known_per_class, k)).sum();
    let correct: u64 = (0..classes)
        .map(|k| total(|s| &s.correct_per_class, k))
        .sum();
    let negatives = sum(|s| s.negatives as u64);
    let student_sum: f64 = span
        .iter()
        .map(|s| s.negative_student * s.negatives as f64)
        .sum();
    Some(PseudoLabelSummary {
        from_step,
        acceptance: accepted as f64 / samples as f64,
        precision: ratio(correct, known),
        class_acceptance: (0..classes)
            .map(|k| {
                ratio(
                    total(|s| &s.accepted_per_class, k),
                    total(|s| &s.top_per_class, k),
                )
            })
            .collect(),
        class_precision: (0..classes)
            .map(|k| {
                ratio(
                    total(|s| &s.correct_per_class, k),
                    total(|s| &s.known_per_class, k),
                )
            })
            .collect(),
        negatives_per_sample: negatives as f64 / samples as f64,
        negative_precision: ratio(
            sum(|s| s.negatives_correct as u64),
            sum(|s| s.negatives_known as u64),
        ),
        negative_student: (negatives > 0).then(|| student_sum / negatives as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64) -> StepMetrics {
        StepMetrics {
            step,
            top_per_class: vec![3, 1],
            accepted_per_class: vec![2, 0],
            known_per_class: vec![2, 0],
            correct_per_class: vec![1, 0],
            negatives: 2,
            negatives_known: 2,
            negatives_correct: 2,
            negative_student: 0.1,
            ..StepMetrics::default()
        }
    }

    #[test]
    fn shards_merge_into_the_metrics_of_the_whole_batch() {
        let a = StepMetrics {
            loss: 1.0,
            mask_rate: 0.5,
            ..step(7)
        };
        let b = StepMetrics {
            loss: 3.0,
            mask_rate: 0.25,
            correct_per_class: vec![2, 0],
            negatives: 6,
            negative_student: 0.3,
            ..step(7)
        };
        let m = StepMetrics::merge(&[a, b]);
        assert_eq!((m.step, m.loss, m.mask_rate), (7, 2.0, 0.375));
        assert_eq!(m.top_per_class, vec![6, 2]);
        assert_eq!(m.known_per_class, vec![4, 0]);
        assert_eq!(m.pseudo_accuracy, Some(0.75), "3 of 4 known pseudo-labels");
        assert_eq!(m.negatives, 8);
        // Weighted by each shard's negatives: (2 * 0.1 + 6 * 0.3) / 8.
        assert!((m.negative_student - 0.25).abs() < 1e-12);
        assert_eq!(StepMetrics::merge(std::slice::from_ref(&m)), m);
    }

    #[test]
    fn lines_are_tagged_by_kind_and_a_resumed_log_drops_redone_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for s in 0..4 {
            log.write(&MetricsLine::Step(step(s))).unwrap();
        }
        let report = EvalReport::from_predictions(&["a".into(), "b".into()], &[0], &[0]);
        let eval = EvalMetrics {
            step: 2,
            student: report.clone(),
            teacher: report,
            thresholds: vec![0.5, 0.5],
        };
        log.write(&MetricsLine::Eval(eval.clone())).unwrap();
        let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .starts_with(r#"{"kind":"step","step":0"#)
        );
        assert!(text.contains(r#"{"kind":"eval","step":2"#), "{text}");
        // Resuming from the checkpoint at step 2 keeps steps 0-1 and the evaluation at 2.
        drop(MetricsLog::open(dir.path(), Some(2)).unwrap());
        let (steps, evals) = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(evals, vec![eval]);
    }

    #[test]
    fn summary_sums_counts_over_the_span() {
        let steps: Vec<StepMetrics> = (0..4).map(step).collect();
        let s = summarize(&steps, 2).unwrap();
        assert_eq!(s.acceptance, 4.0 / 8.0);
        assert_eq!(s.precision, Some(0.5));
        assert_eq!(s.class_acceptance, vec![Some(4.0 / 6.0), Some(0.0)]);
        assert_eq!(s.class_precision, vec![Some(0.5), None]);
        assert_eq!(s.negatives_per_sample, 0.5);
        assert_eq!(s.negative_precision, Some(1.0));
        assert!((s.negative_student.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(summarize(&steps, 10), None);
    }
}
