//! Running an exported ONNX file in tract: the same runtime the board uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::Error;

/// One output of a run: its shape and its values in row-major order.
pub type Output = (Vec<usize>, Vec<f32>);

/// A loaded, optimised ONNX model ready to run in tract with any batch size.
#[derive(Debug, Clone)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    sample_shape: Vec<usize>,
    output_names: Vec<String>,
    source: PathBuf,
}

impl TractModel {
    /// Loads ONNX bytes; `source` names them in errors. `sample_shape` is the input shape
    /// without the batch dimension. `extra_outputs` are intermediate tensors (by ONNX name)
    /// returned after the graph's own outputs, e.g. for calibration.
    pub fn load(
        bytes: &[u8],
        source: &Path,
        sample_shape: &[usize],
        extra_outputs: &[String],
    ) -> Result<Self, Error> {
        let fail = |e: TractError| Error::Tract {
            path: source.to_path_buf(),
            message: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(fail)?;
        let mut output_names: Vec<String> = Vec::new();
        for outlet in model.output_outlets().map_err(fail)?.to_vec() {
            let label = model.outlet_label(outlet).map(str::to_string);
            output_names.push(label.unwrap_or_else(|| model.node(outlet.node).name.clone()));
        }
        if !extra_outputs.is_empty() {
            let mut outlets = model.output_outlets().map_err(fail)?.to_vec();
            for name in extra_outputs {
                let outlet = model.find_outlet_label(name).ok_or_else(|| Error::Tract {
                    path: source.to_path_buf(),
                    message: format!("no tensor called {name} in the graph"),
                })?;
                outlets.push(outlet);
                output_names.push(name.clone());
            }
            model.select_output_outlets(&outlets).map_err(fail)?;
        }
        let plan = model
            .into_optimized()
            .map_err(fail)?
            .into_runnable()
            .map_err(fail)?;
        Ok(Self {
            plan,
            sample_shape: sample_shape.to_vec(),
            output_names,
            source: source.to_path_buf(),
        })
    }

    /// Reads and loads an ONNX file.
    pub fn open(path: &Path, sample_shape: &[usize]) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
        Self::load(&bytes, path, sample_shape, &[])
    }

    /// Names of the outputs [`TractModel::run`] returns, in order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// The values of the output called `name` in the result of [`TractModel::run`].
    pub fn output<'a>(&self, outputs: &'a [Output], name: &str) -> Result<&'a [f32], Error> {
        self.output_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| outputs.get(i))
            .map(|(_, values)| values.as_slice())
            .ok_or_else(|| Error::Tract {
                path: self.source.clone(),
                message: format!("no output called {name} (outputs: {:?})", self.output_names),
            })
    }

    /// Elements of one input sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Runs a batch (`input.len()` a multiple of the sample size); returns every output as
    /// its shape and flat data.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Output>, Error> {
        let per = self.sample_len();
        if per == 0 || input.is_empty() || !input.len().is_multiple_of(per) {
            return Err(Error::Tract {
                path: self.source.clone(),
                message: format!(
                    "input of {} floats is not a whole number of {per}-float samples",
                    input.len()
                ),
            });
        }
        let mut shape = vec![input.len() / per];
        shape.extend_from_slice(&self.sample_shape);
        let fail = |e: TractError| Error::Tract {
            path: self.source.clone(),
            message: format!("{e:#}"),
        };
        let tensor = tract_ndarray::ArrayD::from_shape_vec(shape, input.to_vec()).map_err(|e| {
            Error::Tract {
                path: self.source.clone(),
                message: e.to_string(),
            }
        })?;
        let outputs = self
            .plan
            .run(tvec!(Tensor::from(tensor).into()))
            .map_err(fail)?;
        outputs
            .iter()
            .map(|t| {
                let view = t.to_plain_array_view::<f32>().map_err(fail)?;
                Ok((view.shape().to_vec(), view.iter().copied().collect()))
            })
            .collect()
    }
}
