//! int8 post-training static quantization of a float [`Graph`], in one of two forms
//! ([`Int8Form`]):
//!
//! * **integer** (the default): every Conv becomes a QLinearConv on uint8 activations and
//!   int8 weights, so tract and onnxruntime run it with integer kernels. A ReLU right after a
//!   Conv is folded into it (its output range starts at 0, so zero point 0 and uint8
//!   saturation are the ReLU). Ops that standard ONNX has no quantized form for (Add,
//!   Sigmoid, pooling; QLinearAdd and friends are Microsoft-only, which tract can not load)
//!   run in float between a DequantizeLinear and the next QuantizeLinear. The Gemm head
//!   stays float: it is a few thousand multiply-adds.
//! * **QDQ**: every activation entering a Conv or Gemm gets a QuantizeLinear/DequantizeLinear
//!   pair and weights are stored quantized behind a DequantizeLinear, the float ops unchanged.
//!   This is the explicit-quantization form TensorRT builds int8 engines from and that
//!   onnxruntime fuses, but tract runs it as float convolutions with the rounding around them
//!   (slower than fp32, docs/RESULTS.md).
//!
//! In both, weights are int8 symmetric per output channel (axis 0), activations uint8
//! asymmetric per tensor from the calibrated range, biases int32 at scale
//! `activation_scale * weight_scale[c]`. Nothing after the last Gemm is touched: logits and
//! Softmax stay float.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// The form of the int8 file (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Int8Form {
    /// QLinearConv with integer kernels in tract and onnxruntime.
    #[default]
    Integer,
    /// QuantizeLinear/DequantizeLinear pairs around float Conv and Gemm (TensorRT).
    Qdq,
}

impl Int8Form {
    /// Short name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Int8Form::Integer => "integer",
            Int8Form::Qdq => "qdq",
        }
    }

    /// The activation tensors whose ranges this form needs from calibration.
    pub fn calibrated_tensors(self, graph: &Graph) -> Vec<String> {
        match self {
            Int8Form::Integer => integer_activations(graph),
            Int8Form::Qdq => qdq_activations(graph),
        }
    }

    /// Rewrites the float `graph` into this form with the activation parameters `acts` (one
    /// entry per name of [`Int8Form::calibrated_tensors`]).
    pub fn quantize(
        self,
        graph: &Graph,
        acts: &BTreeMap<String, ActivationQuant>,
    ) -> Result<Graph, Error> {
        match self {
            Int8Form::Integer => quantize_integer(graph, acts),
            Int8Form::Qdq => quantize_qdq(graph, acts),
        }
    }
}

/// The activation tensors that [`quantize_qdq`] puts QDQ pairs on: every non-constant input
/// of a Conv or Gemm, in graph order, without repeats.
fn qdq_activations(graph: &Graph) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for node in &graph.nodes {
        if matches!(node.op, Op::Conv(_) | Op::Gemm)
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

/// Rewrites a float graph into QDQ form using the activation parameters in `acts`.
fn quantize_qdq(graph: &Graph, acts: &BTreeMap<String, ActivationQuant>) -> Result<Graph, Error> {
    graph.validate()?;
    let mut out = Graph::new(format!("{}_int8", graph.name), graph.input.clone());
    out.outputs = graph.outputs.clone();
    let quantized_weights: HashSet<&str> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_) | Op::Gemm))
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
        if !matches!(node.op, Op::Conv(_) | Op::Gemm) {
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
        let params = QuantizedParams::of(graph, node, x_scale)?;
        let channels = params.w_scales.len();
        let w_dq = dequantized(
            &mut out,
            &params.weight.name,
            params.weight.dims.clone(),
            TensorData::I8(params.w_levels),
            params.w_scales.clone(),
            TensorData::I8(vec![0; channels]),
        );
        let mut inputs = vec![x_dq, w_dq];
        if let Some((bias, levels)) = params.bias {
            let b_scales = params.w_scales.iter().map(|s| s * x_scale).collect();
            inputs.push(dequantized(
                &mut out,
                &bias.name,
                bias.dims.clone(),
                TensorData::I32(levels),
                b_scales,
                TensorData::I32(vec![0; channels]),
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

/// A Conv or Gemm's constant weight as int8 levels with per-output-channel scales, and its
/// bias (if any) as int32 levels at scale `x_scale * w_scale[c]`.
struct QuantizedParams<'g> {
    weight: &'g Initializer,
    w_levels: Vec<i8>,
    w_scales: Vec<f32>,
    bias: Option<(&'g Initializer, Vec<i32>)>,
}

impl<'g> QuantizedParams<'g> {
    fn of(graph: &'g Graph, node: &Node, x_scale: f32) -> Result<Self, Error> {
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
        let (w_levels, w_scales) = quantize_weight_per_channel(w, out_channels)?;
        let bias = match node.inputs.get(2) {
            None => None,
            Some(_) => {
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
                let levels = b
                    .iter()
                    .zip(&w_scales)
                    .map(|(v, s)| (v / (s * x_scale)).round_ties_even() as i32)
                    .collect();
                Some((bias, levels))
            }
        };
        Ok(Self {
            weight,
            w_levels,
            w_scales,
            bias,
        })
    }
}

/// The index of the Relu that reads only the output of the Conv at `conv`, when that output
/// is read by nothing else (so the Relu can be folded into the quantized Conv).
fn fused_relu(graph: &Graph, conv: usize) -> Option<usize> {
    let y = graph.nodes[conv].outputs.first()?;
    if graph.outputs.iter().any(|o| &o.name == y) {
        return None;
    }
    let mut readers = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.inputs.contains(y));
    match (readers.next(), readers.next()) {
        (Some((i, n)), None) if n.op == Op::Relu => Some(i),
        _ => None,
    }
}

/// The tensor a quantized Conv at `conv` outputs: its fused Relu's output, or its own.
fn integer_output(graph: &Graph, conv: usize) -> &str {
    let node = fused_relu(graph, conv).map_or(&graph.nodes[conv], |r| &graph.nodes[r]);
    &node.outputs[0]
}

/// The activation tensors [`quantize_integer`] needs ranges for: every non-constant Conv
/// input and every Conv output (after its fused Relu), in graph order, without repeats.
fn integer_activations(graph: &Graph) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Conv(_)) {
            continue;
        }
        let x = node.inputs.first().filter(|x| !graph.is_constant(x));
        for name in x
            .into_iter()
            .map(String::as_str)
            .chain([integer_output(graph, i)])
        {
            if seen.insert(name.to_string()) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Builds the integer graph: which tensors exist in float and which in uint8, and the
/// QuantizeLinear/DequantizeLinear nodes that move between the two where needed.
struct IntegerBuilder<'a> {
    out: Graph,
    acts: &'a BTreeMap<String, ActivationQuant>,
    /// Tensors available as float in `out`.
    float: HashSet<String>,
    /// Float tensor name to the name of its uint8 form in `out`.
    quantized: HashMap<String, String>,
}

impl IntegerBuilder<'_> {
    fn params(&self, name: &str, reader: &str) -> Result<ActivationQuant, Error> {
        self.acts.get(name).copied().ok_or_else(|| {
            Error::Calibration(format!(
                "no calibrated range for tensor {name} (used by {reader})"
            ))
        })
    }

    /// The scale and zero-point initializers of `name` (added on first use).
    fn scale_and_zero_point(&mut self, name: &str, q: ActivationQuant) -> (String, String) {
        let (scale, zp) = (format!("{name}_scale"), format!("{name}_zero_point"));
        if !self.out.is_constant(&scale) {
            self.out
                .add_initializer(&scale, vec![], TensorData::F32(vec![q.scale]));
            self.out
                .add_initializer(&zp, vec![], TensorData::U8(vec![q.zero_point]));
        }
        (scale, zp)
    }

    /// Makes `name` available as float, dequantizing its uint8 form if that is all there is.
    fn float(&mut self, name: &str, reader: &str) -> Result<(), Error> {
        if self.float.contains(name) {
            return Ok(());
        }
        let Some(q_name) = self.quantized.get(name).cloned() else {
            return Err(Error::InvalidGraph {
                graph: self.out.name.clone(),
                reason: format!("{reader} reads {name} before it is defined"),
            });
        };
        let q = self.params(name, reader)?;
        let (scale, zp) = self.scale_and_zero_point(name, q);
        // The float tensor keeps its name, so the nodes after it stay as they were.
        self.out.nodes.push(Node {
            name: format!("{name}_dequantize"),
            op: Op::DequantizeLinear { axis: None },
            inputs: vec![q_name, scale, zp],
            outputs: vec![name.to_string()],
        });
        self.float.insert(name.to_string());
        Ok(())
    }

    /// The uint8 form of `name` with its scale and zero point, quantizing it on first use.
    fn quantized(&mut self, name: &str, reader: &str) -> Result<[String; 3], Error> {
        let q = self.params(name, reader)?;
        let (scale, zp) = self.scale_and_zero_point(name, q);
        let q_name = match self.quantized.get(name) {
            Some(q_name) => q_name.clone(),
            None => {
                self.float(name, reader)?;
                let q_name = self.out.add_node(
                    format!("{name}_quantized"),
                    Op::QuantizeLinear { axis: None },
                    &[name, &scale, &zp],
                );
                self.quantized.insert(name.to_string(), q_name.clone());
                q_name
            }
        };
        Ok([q_name, scale, zp])
    }
}

/// Rewrites a float graph into integer form (QLinearConv) using the activation parameters
/// in `acts`.
fn quantize_integer(
    graph: &Graph,
    acts: &BTreeMap<String, ActivationQuant>,
) -> Result<Graph, Error> {
    graph.validate()?;
    let conv_params: HashSet<&str> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_)))
        .flat_map(|n| n.inputs.iter().skip(1).map(String::as_str))
        .collect();
    let mut out = Graph::new(format!("{}_int8", graph.name), graph.input.clone());
    out.outputs = graph.outputs.clone();
    out.initializers = graph
        .initializers
        .iter()
        .filter(|i| !conv_params.contains(i.name.as_str()))
        .cloned()
        .collect();
    let mut b = IntegerBuilder {
        float: std::iter::once(graph.input.name.clone())
            .chain(out.initializers.iter().map(|i| i.name.clone()))
            .collect(),
        out,
        acts,
        quantized: HashMap::new(),
    };
    let folded: HashSet<usize> = (0..graph.nodes.len())
        .filter(|&i| matches!(graph.nodes[i].op, Op::Conv(_)))
        .filter_map(|i| fused_relu(graph, i))
        .collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        if folded.contains(&i) {
            continue;
        }
        let Op::Conv(attrs) = node.op else {
            for input in &node.inputs {
                b.float(input, &node.name)?;
            }
            b.out.nodes.push(node.clone());
            b.float.extend(node.outputs.iter().cloned());
            continue;
        };
        let x = &node.inputs[0];
        let [x_q, x_scale, x_zp] = b.quantized(x, &node.name)?;
        let y = integer_output(graph, i);
        let y_params = b.params(y, &node.name)?;
        let (y_scale, y_zp) = b.scale_and_zero_point(y, y_params);
        let params = QuantizedParams::of(graph, node, b.params(x, &node.name)?.scale)?;
        let w = &params.weight;
        let channels = params.w_scales.len();
        let w_q = b.out.add_initializer(
            format!("{}_quantized", w.name),
            w.dims.clone(),
            TensorData::I8(params.w_levels),
        );
        let w_scale = b.out.add_initializer(
            format!("{}_scale", w.name),
            vec![channels],
            TensorData::F32(params.w_scales),
        );
        // Symmetric weights: one scalar zero point for all channels, which lets tract drop
        // the input-sum correction (QSumB) that a per-channel zero point would need.
        let w_zp = b.out.add_initializer(
            format!("{}_zero_point", w.name),
            vec![],
            TensorData::I8(vec![0]),
        );
        let mut inputs = vec![x_q, x_scale, x_zp, w_q, w_scale, w_zp, y_scale, y_zp];
        if let Some((bias, levels)) = params.bias {
            inputs.push(b.out.add_initializer(
                format!("{}_quantized", bias.name),
                bias.dims.clone(),
                TensorData::I32(levels),
            ));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let y_q = b
            .out
            .add_node(format!("{y}_quantized"), Op::QLinearConv(attrs), &inputs);
        b.quantized.insert(y.to_string(), y_q);
    }
    for output in &graph.outputs {
        b.float(&output.name, "the graph outputs")?;
    }
    b.out.validate()?;
    Ok(b.out)
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
    use crate::export::graph::{ConvAttrs, Dim, ValueInfo};

    /// x -> Conv a -> Relu -> Conv b -> Add(b, x) -> Relu -> pool -> Gemm: a residual block.
    fn residual_graph() -> Graph {
        let input = ValueInfo {
            name: "x".into(),
            dims: vec![Dim::Batch, Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)],
        };
        let mut g = Graph::new("res", input);
        let conv = Op::Conv(ConvAttrs {
            kernel: [1, 1],
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            group: 1,
        });
        let w = |v: [f32; 4]| TensorData::F32(v.to_vec());
        let wa = g.add_initializer("a.w", vec![2, 2, 1, 1], w([0.5, -0.25, 1.0, 0.75]));
        let ba = g.add_initializer("a.b", vec![2], TensorData::F32(vec![0.1, -0.1]));
        let a = g.add_node("a", conv.clone(), &["x", &wa, &ba]);
        let a = g.add_node("a.relu", Op::Relu, &[&a]);
        let wb = g.add_initializer("b.w", vec![2, 2, 1, 1], w([0.3, 0.2, -0.6, 0.1]));
        let b = g.add_node("b", conv, &[&a, &wb]);
        let sum = g.add_node("add", Op::Add, &[&b, "x"]);
        let r = g.add_node("relu", Op::Relu, &[&sum]);
        let p = g.add_node("pool", Op::GlobalAveragePool, &[&r]);
        let f = g.add_node("flat", Op::Flatten { axis: 1 }, &[&p]);
        let wh = g.add_initializer("head.w", vec![2, 2], w([1.0, 2.0, 3.0, 4.0]));
        let logits = g.add_node("logits", Op::Gemm, &[&f, &wh]);
        g.outputs = vec![ValueInfo {
            name: logits,
            dims: vec![Dim::Batch, Dim::Fixed(2)],
        }];
        g
    }

    #[test]
    fn integer_form_folds_relus_and_dequantizes_only_for_float_ops() {
        let g = residual_graph();
        let tensors = Int8Form::Integer.calibrated_tensors(&g);
        assert_eq!(tensors, ["x", "a.relu", "b"]);
        let q = ActivationQuant::from_range(-1.0, 1.0);
        let mut acts: BTreeMap<String, ActivationQuant> =
            tensors.iter().map(|t| (t.clone(), q)).collect();
        let int8 = Int8Form::Integer.quantize(&g, &acts).unwrap();
        let ops: Vec<&str> = int8.nodes.iter().map(|n| n.op.op_type()).collect();
        assert_eq!(
            ops,
            [
                "QuantizeLinear",
                "QLinearConv",
                "QLinearConv",
                "DequantizeLinear",
                "Add",
                "Relu",
                "GlobalAveragePool",
                "Flatten",
                "Gemm"
            ]
        );
        let a = &int8.nodes[1];
        assert_eq!(a.inputs[0], "x_quantized");
        assert_eq!(
            a.inputs[6], "a.relu_scale",
            "a's output is the folded Relu's"
        );
        assert_eq!(
            int8.nodes[2].inputs[0], a.outputs[0],
            "b reads a's uint8 output"
        );
        assert_eq!(int8.nodes[3].outputs, ["b"], "Add reads b dequantized");
        // Bias levels at scale x_scale * w_scale; w_scale is 0.5 / 127 and 1.0 / 127.
        let bias = int8.initializer("a.b_quantized").unwrap();
        let level = |b: f32, w_max: f32| (b / (w_max / 127.0 * q.scale)).round_ties_even() as i32;
        assert_eq!(
            bias.data,
            TensorData::I32(vec![level(0.1, 0.5), level(-0.1, 1.0)])
        );
        acts.remove("b");
        let err = Int8Form::Integer
            .quantize(&g, &acts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tensor b"), "{err}");
    }

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
