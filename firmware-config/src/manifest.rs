//! [`ModelManifest`]: what a model file expects and produces.
//!
//! Written by the trainer's export next to every ONNX file and shipped in bundles. The board
//! reads input size, channels, normalisation and class order from here and nowhere else.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{Error, SCHEMA_VERSION, Sha256Digest};

// A manifest carries its model's preprocessing; the types live beside their implementation.
pub use crate::preprocess::{
    ColorChannels, Normalization, Preprocessing, ResizeFilter, TensorLayout,
};

/// Numeric precision of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Precision {
    /// 32-bit float.
    #[default]
    Fp32,
    /// int8 (integer QLinearConv, or QuantizeLinear / DequantizeLinear pairs), float outputs.
    Int8,
}

/// A stored input and the output the model must give on it: run on the board before a bundle
/// is activated, so a model that loads but computes something else is never switched on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SelfTest {
    /// File in the bundle holding the input tensor as little-endian f32, in the input layout.
    pub input_file: String,
    /// SHA-256 of that file.
    pub input_sha256: Sha256Digest,
    /// The expected values of the output named [`ModelManifest::output_name`].
    pub expected_output: Vec<f32>,
    /// Largest allowed absolute difference per value.
    pub tolerance: f32,
}

/// What a model file expects and produces.
///
/// Not `#[non_exhaustive]`, like the other wire types: a new field is a new
/// [`SCHEMA_VERSION`], which readers refuse, so construction by struct literal is safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelManifest {
    /// [`SCHEMA_VERSION`] of the toolkit that wrote it.
    pub schema_version: u16,
    /// Model file name, beside the manifest.
    pub model_file: String,
    /// SHA-256 of the model file.
    pub model_sha256: Sha256Digest,
    /// Numeric precision of the model file.
    pub precision: Precision,
    /// Name of the input tensor.
    pub input_name: String,
    /// Name of the probabilities output (softmax).
    pub output_name: String,
    /// Name of the logits output, if the model has one.
    pub logits_name: Option<String>,
    /// Crop, resize, channels, normalisation and layout of the input.
    pub preprocessing: Preprocessing,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Per-class low-confidence thresholds training ended with, in class order (may be empty).
    pub class_thresholds: Vec<f32>,
    /// Training run that produced the model.
    pub training_run_id: String,
    /// The self-test vector.
    pub self_test: SelfTest,
}

impl Default for ModelManifest {
    fn default() -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            model_file: "model.onnx".to_string(),
            model_sha256: Sha256Digest::default(),
            precision: Precision::Fp32,
            input_name: "input".to_string(),
            output_name: "probs".to_string(),
            logits_name: Some("logits".to_string()),
            preprocessing: Preprocessing::default(),
            class_names: Vec::new(),
            class_thresholds: Vec::new(),
            training_run_id: String::new(),
            self_test: SelfTest::default(),
        }
    }
}

impl ModelManifest {
    /// Position of `class` in the output, if the model has it.
    pub fn class_index(&self, class: &str) -> Option<usize> {
        self.class_names.iter().position(|c| c == class)
    }

    /// The trained threshold of output `index`, if training recorded one.
    pub fn trained_threshold(&self, index: usize) -> Option<f32> {
        self.class_thresholds.get(index).copied()
    }

    /// Checks the schema version first (a newer manifest may mean anything), then every field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(Error::UnsupportedSchemaVersion {
                found: self.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if !crate::is_plain_file_name(&self.model_file) {
            return Err(Error::invalid(
                "model_file",
                alloc::format!(
                    "{:?}: a plain file name beside the manifest",
                    self.model_file
                ),
            ));
        }
        let test_input = &self.self_test.input_file;
        if !test_input.is_empty() && !crate::is_plain_file_name(test_input) {
            return Err(Error::invalid(
                "self_test.input_file",
                alloc::format!("{test_input:?}: a plain file name beside the manifest"),
            ));
        }
        if self.input_name.is_empty() || self.output_name.is_empty() {
            return Err(Error::invalid(
                "input_name/output_name",
                "must not be empty",
            ));
        }
        self.preprocessing.validate()?;
        if self.class_names.len() < 2 {
            return Err(Error::invalid(
                "class_names",
                alloc::format!(
                    "{} class(es): a classifier needs at least 2",
                    self.class_names.len()
                ),
            ));
        }
        for (i, name) in self.class_names.iter().enumerate() {
            if name.is_empty() || self.class_names[..i].contains(name) {
                return Err(Error::invalid(
                    alloc::format!("class_names[{i}]"),
                    alloc::format!("{name:?} is empty or repeated"),
                ));
            }
        }
        if !self.class_thresholds.is_empty()
            && self.class_thresholds.len() != self.class_names.len()
        {
            return Err(Error::invalid(
                "class_thresholds",
                alloc::format!(
                    "{} thresholds for {} classes (give one per class, or none)",
                    self.class_thresholds.len(),
                    self.class_names.len()
                ),
            ));
        }
        if let Some(i) = self
            .class_thresholds
            .iter()
            .position(|t| !(0.0..=1.0).contains(t))
        {
            return Err(Error::invalid(
                alloc::format!("class_thresholds[{i}]"),
                "outside [0, 1]",
            ));
        }
        Ok(())
    }
}
