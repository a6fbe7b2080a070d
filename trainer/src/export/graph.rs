//! A small inference-graph IR and its ONNX writer.
//!
//! The IR holds exactly the ops our models need at inference time (see docs/design.md); it is
//! written with the prost-generated ONNX types that `tract_onnx::pb` re-exports and encoded
//! with [`prost::Message::encode`], so the bytes are produced by the protobuf library, never
//! by hand. Opset [`OPSET`], batch dimension symbolic ([`BATCH_DIM`]).

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use super::Error;

/// The ONNX default-domain opset the writer declares.
pub const OPSET: i64 = 13;
/// The ONNX IR version written (ONNX 1.8, the first with opset 13).
pub const IR_VERSION: i64 = 7;
/// Name of the symbolic batch dimension of inputs and outputs.
pub const BATCH_DIM: &str = "N";

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The symbolic batch dimension ([`BATCH_DIM`]).
    Batch,
    /// A fixed size.
    Fixed(usize),
}

/// A graph input or output: a float tensor with a name and a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// Tensor name.
    pub name: String,
    /// Shape, usually `[Batch, ...]`.
    pub dims: Vec<Dim>,
}

/// The data of a constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// Signed 8-bit integers (quantized weights).
    I8(Vec<i8>),
    /// Unsigned 8-bit integers (activation zero points).
    U8(Vec<u8>),
    /// Signed 32-bit integers (quantized biases).
    I32(Vec<i32>),
    /// Signed 64-bit integers (axes, shapes).
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// `true` when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn onnx_type(&self) -> pb::tensor_proto::DataType {
        use pb::tensor_proto::DataType;
        match self {
            TensorData::F32(_) => DataType::Float,
            TensorData::I8(_) => DataType::Int8,
            TensorData::U8(_) => DataType::Uint8,
            TensorData::I32(_) => DataType::Int32,
            TensorData::I64(_) => DataType::Int64,
        }
    }

    fn raw_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().map(|x| x.to_le_bytes()[0]).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A named constant tensor (weights, biases, quantization parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    /// Tensor name.
    pub name: String,
    /// Shape (empty for a scalar).
    pub dims: Vec<usize>,
    /// Elements in row-major order.
    pub data: TensorData,
}

/// The attributes of a 2-D convolution ([`Op::Conv`], [`Op::QLinearConv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvAttrs {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides (height, width).
    pub strides: [usize; 2],
    /// Padding `[top, left, bottom, right]` (ONNX order).
    pub pads: [usize; 4],
    /// Dilations (height, width).
    pub dilations: [usize; 2],
    /// Number of groups.
    pub group: usize,
}

/// The inference ops the exporter emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// 2-D convolution, inputs `[x, w, b?]`; `group == channels` is a depthwise conv.
    Conv(ConvAttrs),
    /// Integer 2-D convolution on quantized tensors, inputs `[x, x_scale, x_zero_point, w,
    /// w_scale, w_zero_point, y_scale, y_zero_point, b?]`: uint8 `x` and `y`, int8 `w`
    /// (per-output-channel scales), int32 `b` at scale `x_scale * w_scale`.
    QLinearConv(ConvAttrs),
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// Broadcasting product.
    Mul,
    /// Broadcasting sum.
    Add,
    /// Broadcasting quotient.
    Div,
    /// Average pooling without padding.
    AveragePool {
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Strides (height, width).
        strides: [usize; 2],
    },
    /// Mean over all spatial positions, keeping `[N, C, 1, 1]`.
    GlobalAveragePool,
    /// Sum over the axes given as second input (opset 13 form).
    ReduceSum {
        /// Keep the reduced axes as size 1.
        keepdims: bool,
    },
    /// Join along an axis.
    Concat {
        /// The axis.
        axis: i64,
    },
    /// A new shape given as second input (int64; -1 infers one dimension).
    Reshape,
    /// Collapse to 2-D at `axis`.
    Flatten {
        /// The axis.
        axis: i64,
    },
    /// `x @ w^T + b` (always `transB = 1`: weights are `[out, in]` as in burn's Linear
    /// transposed, so axis 0 is the output channel for per-channel quantization).
    Gemm,
    /// Softmax along an axis.
    Softmax {
        /// The axis.
        axis: i64,
    },
    /// `saturate(round(x / scale) + zero_point)`, inputs `[x, scale, zero_point]`.
    QuantizeLinear {
        /// Per-axis quantization axis; `None` for per-tensor.
        axis: Option<i64>,
    },
    /// `(x - zero_point) * scale`, inputs `[x, scale, zero_point]`.
    DequantizeLinear {
        /// Per-axis quantization axis; `None` for per-tensor.
        axis: Option<i64>,
    },
}

impl Op {
    /// The ONNX operator type.
    pub fn op_type(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::QLinearConv(_) => "QLinearConv",
            Op::Relu => "Relu",
            Op::Sigmoid => "Sigmoid",
            Op::Mul => "Mul",
            Op::Add => "Add",
            Op::Div => "Div",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::ReduceSum { .. } => "ReduceSum",
            Op::Concat { .. } => "Concat",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape => "Reshape",
            Op::Gemm => "Gemm",
            Op::Softmax { .. } => "Softmax",
            Op::QuantizeLinear { .. } => "QuantizeLinear",
            Op::DequantizeLinear { .. } => "DequantizeLinear",
        }
    }

    fn attributes(&self) -> Vec<pb::AttributeProto> {
        match self {
            Op::Conv(ConvAttrs {
                kernel,
                strides,
                pads,
                dilations,
                group,
            })
            | Op::QLinearConv(ConvAttrs {
                kernel,
                strides,
                pads,
                dilations,
                group,
            }) => vec![
                ints("kernel_shape", kernel),
                ints("strides", strides),
                ints("pads", pads),
                ints("dilations", dilations),
                int("group", *group as i64),
            ],
            Op::AveragePool { kernel, strides } => {
                vec![ints("kernel_shape", kernel), ints("strides", strides)]
            }
            Op::ReduceSum { keepdims } => vec![int("keepdims", i64::from(*keepdims))],
            Op::Concat { axis } | Op::Flatten { axis } | Op::Softmax { axis } => {
                vec![int("axis", *axis)]
            }
            Op::Gemm => vec![int("transB", 1)],
            Op::QuantizeLinear { axis: Some(axis) } | Op::DequantizeLinear { axis: Some(axis) } => {
                vec![int("axis", *axis)]
            }
            _ => Vec::new(),
        }
    }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

/// One op application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// The op.
    pub op: Op,
    /// Input tensor names.
    pub inputs: Vec<String>,
    /// Output tensor names.
    pub outputs: Vec<String>,
}

/// An inference graph: one float input, float outputs, constants and nodes in
/// topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Graph name (written into the ONNX file).
    pub name: String,
    /// The single input.
    pub input: ValueInfo,
    /// The outputs, in order.
    pub outputs: Vec<ValueInfo>,
    /// Constants.
    pub initializers: Vec<Initializer>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// An empty graph with one input.
    pub fn new(name: impl Into<String>, input: ValueInfo) -> Self {
        Self {
            name: name.into(),
            input,
            outputs: Vec::new(),
            initializers: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The initializer called `name`.
    pub fn initializer(&self, name: &str) -> Option<&Initializer> {
        self.initializers.iter().find(|i| i.name == name)
    }

    /// Whether `name` is a constant (an initializer) rather than an activation.
    pub fn is_constant(&self, name: &str) -> bool {
        self.initializer(name).is_some()
    }

    /// Adds a constant and returns its name.
    pub fn add_initializer(
        &mut self,
        name: impl Into<String>,
        dims: Vec<usize>,
        data: TensorData,
    ) -> String {
        let name = name.into();
        self.initializers.push(Initializer {
            name: name.clone(),
            dims,
            data,
        });
        name
    }

    /// Appends a node producing one output called after the node and returns that name.
    pub fn add_node(&mut self, name: impl Into<String>, op: Op, inputs: &[&str]) -> String {
        let name = name.into();
        let output = name.clone();
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.clone()],
        });
        output
    }

    /// Number of parameters stored (elements of all initializers).
    pub fn parameter_count(&self) -> usize {
        self.initializers.iter().map(|i| i.data.len()).sum()
    }

    /// Checks that names are unique, every input is defined before use, initializer sizes
    /// match their shapes and every output is produced.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Error::InvalidGraph {
            graph: self.name.clone(),
            reason,
        };
        let mut defined: HashSet<&str> = HashSet::new();
        defined.insert(&self.input.name);
        for init in &self.initializers {
            let expected: usize = init.dims.iter().product();
            if expected != init.data.len() {
                return Err(bad(format!(
                    "initializer {} has {} elements for shape {:?}",
                    init.name,
                    init.data.len(),
                    init.dims
                )));
            }
            if !defined.insert(&init.name) {
                return Err(bad(format!("tensor name {} is defined twice", init.name)));
            }
        }
        let mut node_names = HashSet::new();
        for node in &self.nodes {
            if !node_names.insert(&node.name) {
                return Err(bad(format!("node name {} is used twice", node.name)));
            }
            for input in &node.inputs {
                if !defined.contains(input.as_str()) {
                    return Err(bad(format!(
                        "node {} reads {input} before it is defined",
                        node.name
                    )));
                }
            }
            for output in &node.outputs {
                if !defined.insert(output) {
                    return Err(bad(format!("tensor name {output} is defined twice")));
                }
            }
        }
        for output in &self.outputs {
            if !defined.contains(output.name.as_str()) {
                return Err(bad(format!("output {} is never produced", output.name)));
            }
        }
        Ok(())
    }

    /// The ONNX model proto of this graph.
    pub fn to_proto(&self) -> pb::ModelProto {
        let graph = pb::GraphProto {
            name: self.name.clone(),
            node: self
                .nodes
                .iter()
                .map(|n| pb::NodeProto {
                    name: n.name.clone(),
                    op_type: n.op.op_type().to_string(),
                    input: n.inputs.clone(),
                    output: n.outputs.clone(),
                    attribute: n.op.attributes(),
                    ..Default::default()
                })
                .collect(),
            initializer: self
                .initializers
                .iter()
                .map(|i| pb::TensorProto {
                    name: i.name.clone(),
                    dims: i.dims.iter().map(|&d| d as i64).collect(),
                    data_type: i.data.onnx_type() as i32,
                    raw_data: i.data.raw_le_bytes(),
                    ..Default::default()
                })
                .collect(),
            input: vec![value_info(&self.input)],
            output: self.outputs.iter().map(value_info).collect(),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "fer-train".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(graph),
            ..Default::default()
        }
    }

    /// The encoded ONNX file (after [`Graph::validate`]).
    pub fn to_onnx_bytes(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        Ok(self.to_proto().encode_to_vec())
    }

    /// Writes the ONNX file to `path`.
    pub fn write_onnx(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let bytes = self.to_onnx_bytes()?;
        std::fs::write(path, &bytes).map_err(|source| Error::write(path, source))?;
        Ok(bytes)
    }
}

fn value_info(v: &ValueInfo) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = v
        .dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => Value::DimParam(BATCH_DIM.to_string()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
