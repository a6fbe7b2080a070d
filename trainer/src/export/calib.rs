//! Activation-range calibration: the fp32 graph runs in tract over real images with the
//! tensors to be quantized exposed as extra outputs, and each tensor's range is taken
//! either as its min/max or at a percentile of its values (which ignores a few outliers and
//! so spends the 256 levels on the values that matter).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Error;
use super::graph::Graph;
use super::runtime::TractModel;

/// How a tensor's quantization range is chosen from its calibration values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// The given percentile of the values at each end (e.g. 99.99: the 0.01% most extreme
    /// values on each side are clipped).
    Percentile(f64),
}

impl CalibMethod {
    /// The percentile used by `percentile` when none is given.
    pub const DEFAULT_PERCENTILE: f64 = 99.99;

    /// Short name used in reports and on the command line.
    pub fn name(&self) -> String {
        match self {
            CalibMethod::MinMax => "minmax".to_string(),
            CalibMethod::Percentile(p) => format!("percentile({p})"),
        }
    }
}

/// What calibration observed for one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    /// Tensor name in the graph.
    pub name: String,
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    /// A sorted, evenly strided sample of the values, for percentiles.
    #[serde(skip)]
    sample: Vec<f32>,
}

impl TensorStats {
    /// The `(low, high)` range `method` gives, always containing 0 (so that zero, and with
    /// it zero padding and ReLU's floor, is exactly representable).
    pub fn range(&self, method: CalibMethod) -> (f32, f32) {
        let (lo, hi) = match method {
            CalibMethod::MinMax => (self.min, self.max),
            CalibMethod::Percentile(p) => {
                let tail = ((100.0 - p.clamp(50.0, 100.0)) / 100.0).max(0.0);
                (self.quantile(tail), self.quantile(1.0 - tail))
            }
        };
        (lo.min(0.0), hi.max(0.0))
    }

    fn quantile(&self, q: f64) -> f32 {
        if self.sample.is_empty() {
            return 0.0;
        }
        let idx = (q * (self.sample.len() - 1) as f64).round() as usize;
        self.sample[idx.min(self.sample.len() - 1)]
    }
}

/// Values kept per tensor for percentiles: enough that a 99.99th percentile still rests on
/// about a hundred values in the tail.
const SAMPLE_BUDGET: usize = 1_000_000;

/// Runs `graph` in tract over `samples` (flat, `sample_shape` each, NCHW as the graph
/// input wants) in batches of `batch`, and returns the statistics of `tensors`.
pub fn calibrate(
    graph: &Graph,
    sample_shape: &[usize],
    samples: &[f32],
    batch: usize,
    tensors: &[String],
) -> Result<BTreeMap<String, TensorStats>, Error> {
    let per: usize = sample_shape.iter().product();
    if samples.is_empty() || per == 0 {
        return Err(Error::Calibration(
            "no calibration images were given".to_string(),
        ));
    }
    if !samples.len().is_multiple_of(per) {
        return Err(Error::Calibration(format!(
            "{} values is not a whole number of {per}-value samples",
            samples.len()
        )));
    }
    // The graph input is read from the samples themselves; tract exposes the rest.
    let exposed: Vec<String> = tensors
        .iter()
        .filter(|t| **t != graph.input.name)
        .cloned()
        .collect();
    let bytes = graph.to_onnx_bytes()?;
    let model = TractModel::load(&bytes, Path::new(&graph.name), sample_shape, &exposed)?;
    let first_extra = model.output_names().len() - exposed.len();
    let count = samples.len() / per;
    let batch = batch.max(1);
    let batches = count.div_ceil(batch);
    let mut stats: BTreeMap<String, TensorStats> = tensors
        .iter()
        .map(|t| {
            let s = TensorStats {
                name: t.clone(),
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
                sample: Vec::new(),
            };
            (t.clone(), s)
        })
        .collect();
    for chunk in samples.chunks(batch * per) {
        let outputs = model.run(chunk)?;
        let exposed_values = exposed
            .iter()
            .zip(outputs[first_extra..].iter().map(|(_, v)| v.as_slice()));
        let input_values = tensors
            .iter()
            .filter(|t| **t == graph.input.name)
            .map(|t| (t, chunk));
        for (name, values) in exposed_values.chain(input_values) {
            let entry = stats.get_mut(name).expect("every tensor has an entry");
            let step = (values.len() * batches).div_ceil(SAMPLE_BUDGET).max(1);
            for &v in values {
                entry.min = entry.min.min(v);
                entry.max = entry.max.max(v);
            }
            entry.sample.extend(values.iter().step_by(step));
        }
    }
    for entry in stats.values_mut() {
        if !entry.min.is_finite() || !entry.max.is_finite() {
            return Err(Error::Calibration(format!(
                "tensor {} took non-finite values (min {}, max {})",
                entry.name, entry.min, entry.max
            )));
        }
        entry.sample.sort_by(f32::total_cmp);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: Vec<f32>) -> TensorStats {
        let mut sample = values.clone();
        sample.sort_by(f32::total_cmp);
        TensorStats {
            name: "t".into(),
            min: values.iter().copied().fold(f32::INFINITY, f32::min),
            max: values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            sample,
        }
    }

    #[test]
    fn percentile_clips_outliers_minmax_keeps_them() {
        let mut values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        values.push(100.0);
        let s = stats(values);
        assert_eq!(s.range(CalibMethod::MinMax), (0.0, 100.0));
        let (lo, hi) = s.range(CalibMethod::Percentile(99.9));
        assert_eq!(lo, 0.0);
        assert!((0.99..1.0).contains(&hi), "{hi}");
    }

    #[test]
    fn range_always_contains_zero() {
        let s = stats(vec![2.0, 3.0, 4.0]);
        assert_eq!(s.range(CalibMethod::MinMax), (0.0, 4.0));
        let s = stats(vec![-4.0, -3.0]);
        assert_eq!(s.range(CalibMethod::MinMax), (-4.0, 0.0));
    }
}
