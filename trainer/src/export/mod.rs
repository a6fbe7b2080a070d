//! ONNX export and int8 post-training quantization.
//!
//! burn has no ONNX export, so we write the file ourselves:
//!
//! 1. the trained model is mapped node by node onto a small inference IR ([`graph::Graph`]),
//!    with batch norm folded into the preceding convolution ([`fold`]);
//! 2. the IR is written as ONNX (opset 13, dynamic batch) with the prost types of
//!    `tract_onnx::pb` and checked by running it in tract ([`runtime::TractModel`]) against
//!    burn's forward;
//! 3. a calibration pass runs the fp32 graph in tract over real images with every
//!    tensor to be quantized exposed, and [`quant`] rewrites the graph into int8
//!    ([`quant::Int8Form`]: integer QLinearConv by default, or QDQ):
//!    weights int8 symmetric per output channel, activations uint8 per tensor,
//!    biases int32. Softmax and the model outputs stay float: a QDQ pair after Softmax made
//!    tract and onnxruntime disagree by up to 0.96 on `probs` (docs/design.md, "Export").

pub mod calib;
pub mod cli;
pub mod fold;
pub mod graph;
pub mod model_graph;
pub mod ort;
pub mod pipeline;
pub mod quant;
pub mod runtime;

use std::path::Path;

pub use crate::Error;

impl Error {
    /// Reading `path` failed.
    pub fn read(path: &Path, source: std::io::Error) -> Self {
        let hint = match source.kind() {
            std::io::ErrorKind::NotFound => " (no such file or folder: check the path)",
            std::io::ErrorKind::PermissionDenied => " (not readable: fix its permissions)",
            _ => "",
        };
        Error::File {
            path: path.to_path_buf(),
            source,
            hint: hint.to_string(),
        }
    }

    /// Writing `path` failed.
    pub fn write(path: &Path, source: std::io::Error) -> Self {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                " (the output path is not writable: pass another --out folder or fix its permissions)"
            }
            std::io::ErrorKind::NotFound => " (its parent folder does not exist)",
            std::io::ErrorKind::NotADirectory => {
                " (a parent of the output path is a file: pass another --out folder)"
            }
            _ => "",
        };
        Error::File {
            path: path.to_path_buf(),
            source,
            hint: hint.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
