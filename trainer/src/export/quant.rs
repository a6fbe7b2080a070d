//! QDQ int8 post-training static quantization of a float [`Graph`].
//!
//! Every activation entering a Conv or Gemm gets a QuantizeLinear/DequantizeLinear pair
//! (uint8, asymmetric, per tensor, from the calibrated range); weights become int8
//! symmetric per output channel (axis 0) followed by a DequantizeLinear, biases int32 with
//! scale `activation_scale * weight_scale[c]`. This is the form onnxruntime fuses into
//! integer kernels (QLinearConv and friends) and that tract and TensorRT read; the
//! QOperator form would need Microsoft-only ops tract can not load. uint8 activations are
//! what onnxruntime's own quantizer emits for QDQ and tract loads both types; ReLU outputs
//! then get zero point 0, which lets onnxruntime drop the ReLU into the quantized conv.
//! Nothing after the last Gemm is touched: logits and Softmax stay float.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::Error;
use super::graph::{Graph, Initializer, Node, Op, TensorData};

/// The uint8 quantization of one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActivationQuant {
    /// Step between levels.
    pub scale: f32,
    /// The level that represents 0.0.
    pub zero_point: u8,
}

impl ActivationQuant {
    /// Asymmetric uint8 parameters covering `[lo, hi]` (which must contain 0).
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let span = hi - lo;
        if span <= f32::EPSILON {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = span / 255.0;
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }
}

/// The activation tensors that [`quantize`] puts QDQ pairs on: every non-constant input
/// of a Conv or Gemm, in graph order, without repeats.
pub fn quantizable_activations(graph: &Graph) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for node in &graph.nodes {
        if matches!(node.op, Op::Conv { .. } | Op::Gemm)
            && let Some(x) = node.inputs.first()
            && !graph.is_constant(x)
            && seen.insert(x.clone())
        {
            names.push(x.clone());
        }
    }
    names
}

/// Symmetric int8 per-output-channel quantization of a weight laid out `[out, ...]`:
/// returns the levels and one scale per output channel.
pub fn quantize_weight_per_channel(
    weight: &[f32],
    out_channels: usize,
) -> Result<(Vec<i8>, Vec<f32>), Error> {
    if out_channels == 0 || !weight.len().is_multiple_of(out_channels) {
        return Err(Error::Invalid(format!(
            "weight of {} elements does not split into {out_channels} output channels",
            weight.len()
        )));
    }
    let per = weight.len() / out_channels;
    let mut levels = Vec::with_capacity(weight.len());
    let mut scales = Vec::with_capacity(out_channels);
    for channel in weight.chunks(per) {
        let max = channel.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale);
        levels.extend(
            channel
                .iter()
                .map(|w| (w / scale).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
    }
    Ok((levels, scales))
}

/// Rewrites a float graph into QDQ form using the activation parameters in `acts` (one
/// entry per name of [`quantizable_activations`]).
pub fn quantize(graph: &Graph, acts: &BTreeMap<String, ActivationQuant>) -> Result<Graph, Error> {
    graph.validate()?;
    let mut out = Graph::new(format!("{}_int8", graph.name), graph.input.clone());
    out.outputs = graph.outputs.clone();
    let quantized_weights: HashSet<&str> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Gemm))
        .flat_map(|n| n.inputs.iter().skip(1).map(String::as_str))
        .collect();
    out.initializers = graph
        .initializers
        .iter()
        .filter(|i| !quantized_weights.contains(i.name.as_str()))
        .cloned()
        .collect();
    let mut done: HashSet<String> = HashSet::new();
    for node in &graph.nodes {
        if !matches!(node.op, Op::Conv { .. } | Op::Gemm) {
            out.nodes.push(node.clone());
            continue;
        }
        let x = &node.inputs[0];
        let x_dq = if graph.is_constant(x) {
            x.clone()
        } else {
            let q = acts.get(x).ok_or_else(|| {
                Error::Calibration(format!(
                    "no calibrated range for tensor {x} (input of {})",
                    node.name
                ))
            })?;
            let dq_name = format!("{x}_dq");
            if done.insert(x.clone()) {
                let scale = out.add_initializer(
                    format!("{x}_scale"),
                    vec![],
                    TensorData::F32(vec![q.scale]),
                );
                let zp = out.add_initializer(
                    format!("{x}_zero_point"),
                    vec![],
                    TensorData::U8(vec![q.zero_point]),
                );
                let quant = out.add_node(
                    format!("{x}_q"),
                    Op::QuantizeLinear { axis: None },
                    &[x, &scale, &zp],
                );
                out.add_node(
                    dq_name.clone(),
                    Op::DequantizeLinear { axis: None },
                    &[&quant, &scale, &zp],
                );
            }
            dq_name
        };
        let x_scale = acts.get(x).map_or(1.0, |q| q.scale);
        let weight = constant(graph, node, 1)?;
        let out_channels = *weight.dims.first().ok_or_else(|| {
            Error::Invalid(format!(
                "weight {} of {} has no dimensions",
                weight.name, node.name
            ))
        })?;
        let TensorData::F32(w) = &weight.data else {
            return Err(Error::Invalid(format!(
                "weight {} of {} is not float",
                weight.name, node.name
            )));
        };
        let (levels, w_scales) = quantize_weight_per_channel(w, out_channels)?;
        let w_dq = dequantized(
            &mut out,
            &weight.name,
            weight.dims.clone(),
            TensorData::I8(levels),
            w_scales.clone(),
            TensorData::I8(vec![0; out_channels]),
        );
        let mut inputs = vec![x_dq, w_dq];
        if node.inputs.len() > 2 {
            let bias = constant(graph, node, 2)?;
            let TensorData::F32(b) = &bias.data else {
                return Err(Error::Invalid(format!(
                    "bias {} of {} is not float",
                    bias.name, node.name
                )));
            };
            if b.len() != out_channels {
                return Err(Error::Invalid(format!(
                    "bias {} has {} values for {out_channels} channels",
                    bias.name,
                    b.len()
                )));
            }
            let b_scales: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
            let levels = b
                .iter()
                .zip(&b_scales)
                .map(|(v, s)| (v / s).round_ties_even() as i32)
                .collect();
            inputs.push(dequantized(
                &mut out,
                &bias.name,
                bias.dims.clone(),
                TensorData::I32(levels),
                b_scales,
                TensorData::I32(vec![0; out_channels]),
            ));
        }
        out.nodes.push(Node {
            inputs,
            ..node.clone()
        });
    }
    out.validate()?;
    Ok(out)
}

fn constant<'g>(graph: &'g Graph, node: &Node, index: usize) -> Result<&'g Initializer, Error> {
    let name = &node.inputs[index];
    graph.initializer(name).ok_or_else(|| {
        Error::Invalid(format!("input {index} ({name}) of {} is not a constant: only constant weights can be quantized", node.name))
    })
}

/// Adds `levels` with per-axis-0 `scales` and a DequantizeLinear; returns its output name.
fn dequantized(
    out: &mut Graph,
    name: &str,
    dims: Vec<usize>,
    levels: TensorData,
    scales: Vec<f32>,
    zero: TensorData,
) -> String {
    let n = scales.len();
    let q = out.add_initializer(format!("{name}_quantized"), dims, levels);
    let s = out.add_initializer(format!("{name}_scale"), vec![n], TensorData::F32(scales));
    let z = out.add_initializer(format!("{name}_zero_point"), vec![n], zero);
    out.add_node(
        format!("{name}_dq"),
        Op::DequantizeLinear { axis: Some(0) },
        &[&q, &s, &z],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_params_cover_the_range_and_hit_zero() {
        let q = ActivationQuant::from_range(0.0, 6.0);
        assert_eq!(q.zero_point, 0);
        assert!((q.scale * 255.0 - 6.0).abs() < 1e-5);
        let q = ActivationQuant::from_range(-1.0, 3.0);
        assert_eq!(q.zero_point, 64);
        // The ends of the range are representable to within one step.
        assert!(((0.0 - 64.0) * q.scale + 1.0).abs() < q.scale);
        assert!(((255.0 - 64.0) * q.scale - 3.0).abs() < q.scale);
        assert_eq!(
            ActivationQuant::from_range(0.0, 0.0),
            ActivationQuant {
                scale: 1.0,
                zero_point: 0
            }
        );
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0, 10.0, -20.0, 5.0];
        let (levels, scales) = quantize_weight_per_channel(&w, 3).unwrap();
        assert_eq!(&levels[0..3], &[127, -64, 32]);
        assert_eq!(&levels[3..6], &[0, 0, 0]);
        assert_eq!(&levels[6..9], &[64, -127, 32]);
        assert!((scales[0] - 1.0 / 127.0).abs() < 1e-9);
        assert_eq!(scales[1], 1.0);
        assert!((scales[2] - 20.0 / 127.0).abs() < 1e-6);
        assert!(quantize_weight_per_channel(&w, 4).is_err());
    }
}
