//! The trained burn [`Model`] mapped node by node onto the inference [`Graph`], following
//! the computation order documented in [`crate::model`] (BatchNorm folded into the
//! preceding convolution, region weights as a constant, region dropout absent).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::Error;
use super::fold::{BatchNormParams, fold_batch_norm};
use super::graph::{ConvAttrs, Dim, Graph, Op, TensorData, ValueInfo};
use crate::model::{Block, ConvBn, Model, ModelConfig};

/// Name of the graph input.
pub const INPUT_NAME: &str = "input";
/// Name of the logits output (float).
pub const LOGITS_NAME: &str = "logits";
/// Name of the probabilities output (float Softmax of the logits).
pub const PROBS_NAME: &str = "probs";

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, Error> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("reading a model tensor: {e:?}")))
}

/// Builds the fp32 inference graph of `model`: input [`INPUT_NAME`] `[N, C, H, W]`,
/// outputs [`LOGITS_NAME`] and [`PROBS_NAME`] `[N, classes]`.
pub fn model_graph<B: Backend>(model: &Model<B>, config: &ModelConfig) -> Result<Graph, Error> {
    config
        .validate()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    if model.lae.is_some() != config.lae {
        return Err(Error::Invalid(format!(
            "the model {} LAE but its configuration says lae = {}",
            if model.lae.is_some() { "has" } else { "has no" },
            config.lae
        )));
    }
    let input = ValueInfo {
        name: INPUT_NAME.to_string(),
        dims: vec![
            Dim::Batch,
            Dim::Fixed(config.input_channels),
            Dim::Fixed(config.input_height),
            Dim::Fixed(config.input_width),
        ],
    };
    let mut g = Graph::new(format!("fer_{}", config.backbone), input);
    let mut x = conv_bn(&mut g, "stem", &model.backbone.stem, INPUT_NAME)?;
    x = g.add_node("stem.relu", Op::Relu, &[&x]);
    for (i, stage) in model.backbone.stages.iter().enumerate() {
        for (j, block) in stage.blocks.iter().enumerate() {
            let p = format!("stages.{i}.blocks.{j}");
            x = match block {
                Block::Basic(b) => {
                    let y =
                        conv_bn_parts(&mut g, &format!("{p}.conv1"), &b.conv1, Some(&b.bn1), &x)?;
                    let y = g.add_node(format!("{p}.relu1"), Op::Relu, &[&y]);
                    let y =
                        conv_bn_parts(&mut g, &format!("{p}.conv2"), &b.conv2, Some(&b.bn2), &y)?;
                    let s = match &b.downsample {
                        Some(d) => conv_bn(&mut g, &format!("{p}.downsample"), d, &x)?,
                        None => x.clone(),
                    };
                    let sum = g.add_node(format!("{p}.add"), Op::Add, &[&y, &s]);
                    g.add_node(format!("{p}.relu"), Op::Relu, &[&sum])
                }
                Block::Inverted(b) => {
                    let mut y = x.clone();
                    if let Some(e) = &b.expand {
                        y = conv_bn(&mut g, &format!("{p}.expand"), e, &y)?;
                        y = g.add_node(format!("{p}.expand.relu"), Op::Relu, &[&y]);
                    }
                    y = conv_bn(&mut g, &format!("{p}.depthwise"), &b.depthwise, &y)?;
                    y = g.add_node(format!("{p}.depthwise.relu"), Op::Relu, &[&y]);
                    y = conv_bn(&mut g, &format!("{p}.project"), &b.project, &y)?;
                    if b.residual {
                        g.add_node(format!("{p}.add"), Op::Add, &[&y, &x])
                    } else {
                        y
                    }
                }
            };
        }
    }
    let features = x;
    let (h, w) = (model.feature_height, model.feature_width);
    let pooled = match &model.lae {
        Some(lae) => {
            let a = conv_bn_parts(&mut g, "lae.conv3", &lae.conv3, None, &features)?;
            let a = g.add_node("lae.relu", Op::Relu, &[&a]);
            let a = conv_bn_parts(&mut g, "lae.conv1", &lae.conv1, None, &a)?;
            let a = g.add_node("lae.sigmoid", Op::Sigmoid, &[&a]);
            let one = g.add_initializer("lae.one", vec![], TensorData::F32(vec![1.0]));
            let gain = g.add_node("lae.gain", Op::Add, &[&a, &one]);
            let enhanced = g.add_node("lae.enhanced", Op::Mul, &[&features, &gain]);
            let global = g.add_node("pool.global", Op::GlobalAveragePool, &[&enhanced]);
            let k = model.regions;
            let kernel = [h / k, w / k];
            let cells = g.add_node(
                "pool.regions",
                Op::AveragePool {
                    kernel,
                    strides: kernel,
                },
                &[&enhanced],
            );
            // Input-dependent region weights: softmax over the regions of scale * mean(A).
            let a_cells = g.add_node(
                "lae.region_attention",
                Op::AveragePool {
                    kernel,
                    strides: kernel,
                },
                &[&a],
            );
            let a_flat = g.add_node("lae.region_flat", Op::Flatten { axis: 1 }, &[&a_cells]);
            let scale = values(lae.region_scale.val())?;
            let scale = g.add_initializer("lae.region_scale", vec![1], TensorData::F32(scale));
            let logits = g.add_node("lae.region_logits", Op::Mul, &[&a_flat, &scale]);
            let alpha_flat = g.add_node("lae.region_softmax", Op::Softmax { axis: 1 }, &[&logits]);
            let grid = g.add_initializer(
                "lae.region_grid",
                vec![4],
                TensorData::I64(vec![-1, 1, k as i64, k as i64]),
            );
            let alpha = g.add_node("lae.region_weights", Op::Reshape, &[&alpha_flat, &grid]);
            let weighted = g.add_node("pool.weighted", Op::Mul, &[&cells, &alpha]);
            let axes = g.add_initializer("pool.axes", vec![2], TensorData::I64(vec![2, 3]));
            let region = g.add_node(
                "pool.region",
                Op::ReduceSum { keepdims: true },
                &[&weighted, &axes],
            );
            let joined = g.add_node("pool.concat", Op::Concat { axis: 1 }, &[&global, &region]);
            g.add_node("pool.flatten", Op::Flatten { axis: 1 }, &[&joined])
        }
        None => {
            let global = g.add_node("pool.global", Op::GlobalAveragePool, &[&features]);
            g.add_node("pool.flatten", Op::Flatten { axis: 1 }, &[&global])
        }
    };
    // burn's Linear weight is [in, out]; Gemm gets it transposed ([out, in], transB = 1) so
    // that axis 0 is the output channel, as per-channel quantization wants.
    let [fan_in, fan_out] = model.head.weight.val().dims();
    let w = values(model.head.weight.val().transpose())?;
    let w = g.add_initializer("head.weight", vec![fan_out, fan_in], TensorData::F32(w));
    let mut inputs = vec![pooled.as_str(), w.as_str()];
    let b;
    if let Some(bias) = &model.head.bias {
        b = g.add_initializer(
            "head.bias",
            vec![fan_out],
            TensorData::F32(values(bias.val())?),
        );
        inputs.push(&b);
    }
    g.add_node(LOGITS_NAME, Op::Gemm, &inputs);
    g.add_node(PROBS_NAME, Op::Softmax { axis: 1 }, &[LOGITS_NAME]);
    let out = |name: &str| ValueInfo {
        name: name.to_string(),
        dims: vec![Dim::Batch, Dim::Fixed(config.num_classes)],
    };
    g.outputs = vec![out(LOGITS_NAME), out(PROBS_NAME)];
    g.validate()?;
    Ok(g)
}

fn conv_bn<B: Backend>(
    g: &mut Graph,
    name: &str,
    layer: &ConvBn<B>,
    x: &str,
) -> Result<String, Error> {
    conv_bn_parts(g, &format!("{name}.conv"), &layer.conv, Some(&layer.bn), x)
}

/// A Conv node for `conv`, with `bn` folded in when given.
fn conv_bn_parts<B: Backend>(
    g: &mut Graph,
    name: &str,
    conv: &Conv2d<B>,
    bn: Option<&burn::nn::BatchNorm<B>>,
    x: &str,
) -> Result<String, Error> {
    let dims = conv.weight.val().dims();
    let weight = values(conv.weight.val())?;
    let bias = conv.bias.as_ref().map(|b| values(b.val())).transpose()?;
    let (weight, bias) = match bn {
        Some(bn) => {
            let params = BatchNormParams {
                gamma: values(bn.gamma.val())?,
                beta: values(bn.beta.val())?,
                mean: values(bn.running_mean.value())?,
                var: values(bn.running_var.value())?,
                epsilon: bn.epsilon,
            };
            let (w, b) = fold_batch_norm(&weight, bias.as_deref(), &params)
                .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
            (w, Some(b))
        }
        None => (weight, bias),
    };
    let pads = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => {
            return Err(Error::Invalid(format!(
                "{name}: \"same\" padding is not exported; the model uses explicit padding"
            )));
        }
    };
    let op = Op::Conv(ConvAttrs {
        kernel: conv.kernel_size,
        strides: conv.stride,
        pads,
        dilations: conv.dilation,
        group: conv.groups,
    });
    let w = g.add_initializer(
        format!("{name}.weight"),
        dims.to_vec(),
        TensorData::F32(weight),
    );
    let mut inputs = vec![x, w.as_str()];
    let b;
    if let Some(bias) = bias {
        b = g.add_initializer(format!("{name}.bias"), vec![dims[0]], TensorData::F32(bias));
        inputs.push(&b);
    }
    Ok(g.add_node(name, op, &inputs))
}
