//! The expression classifier: a backbone, local attention enhancement (LAE), random region
//! dropout (RRD) and a linear head.
//!
//! The formulation is ours (DESIGN.md, "The algorithm"); the paper (arXiv 2601.05556) gives
//! the ideas only. [`ModelConfig`] alone determines the architecture; it is saved as JSON next
//! to every checkpoint.
//!
//! # Module tree (field names are the parameter paths)
//! ```text
//! model.backbone.stem.{conv,bn}
//! model.backbone.stages[i].blocks[j] = Block::Basic     { conv1, bn1, conv2, bn2, downsample: Option<{conv,bn}> }
//!                                    | Block::Inverted  { expand: Option<{conv,bn}>, depthwise.{conv,bn}, project.{conv,bn}, residual }
//! model.lae: Option<{ conv3, conv1, region_logits }>
//! model.head (Linear: weight [in, classes], bias [classes])
//! ```
//! All convolutions in the backbone have no bias and are followed by a BatchNorm with
//! epsilon [`ModelConfig::bn_epsilon`] (1e-5 by default); `conv3`/`conv1` of the LAE have a bias.
//!
//! # Inference computation, in order (what an ONNX export must reproduce)
//! 1. `x` `[N, C_in, H, W]` (already normalised by `Preprocessing::apply`).
//! 2. Stem: `relu(bn(conv3x3 stride 2 pad 1 (x)))`.
//! 3. Stage `i` (channels `width * 2^i`; the first block of every stage after the first has
//!    stride 2, all others stride 1). BatchNorm at inference is
//!    `(x - running_mean) / sqrt(running_var + eps) * gamma + beta`.
//!    * `Basic`: `y = relu(bn1(conv1 3x3/s pad 1 (x)))`, `y = bn2(conv2 3x3/1 pad 1 (y))`,
//!      `s = downsample ? bn(conv 1x1/s (x)) : x`, out `relu(y + s)`. `downsample` exists
//!      exactly when the stride is 2 or the channel count changes.
//!    * `Inverted`: `y = expand ? relu(bn(conv1x1(x))) : x` (hidden = in * expansion; no
//!      `expand` when expansion is 1), `y = relu(bn(depthwise 3x3/s pad 1, groups = hidden (y)))`,
//!      `y = bn(project conv1x1 (y))` (no activation), out `y + x` when `residual`
//!      (stride 1 and in == out channels), else `y`.
//! 4. Feature map `F` `[N, C, h, w]`; `h` and `w` are divisible by `K` = [`ModelConfig::regions`].
//! 5. With LAE: `A = sigmoid(conv1 1x1 (relu(conv3 3x3 pad 1 (F))))` `[N, 1, h, w]`,
//!    `F' = F * (A + 1)`. Without LAE: `F' = F` and step 7 is skipped.
//! 6. `g = GlobalAveragePool(F')` `[N, C, 1, 1]`.
//! 7. Regions: `P = AveragePool(F', kernel = stride = [h/K, w/K])` `[N, C, K, K]`;
//!    region weights `alpha = softmax(region_logits)` laid out `[1, 1, K, K]` row-major
//!    (region `r` = row `r / K`, column `r % K`); they do not depend on the input, so an export
//!    uses [`Model::region_weights`] as a constant. `r = ReduceSum(P * alpha, axes [2, 3])`
//!    `[N, C, 1, 1]` (the weights sum to one, so this is a weighted mean).
//! 8. `z = Concat([g, r], axis 1)` (`[g]` alone without LAE), flattened to `[N, 2C]` (`[N, C]`).
//! 9. `logits = z @ head.weight + head.bias` `[N, classes]` (Gemm; burn stores the weight as
//!    `[in, out]`, i.e. Gemm with `transB = 0`).
//!
//! # Training only
//! BatchNorm uses batch statistics (burn does this automatically on an autodiff backend), and
//! RRD: for each sample, with probability [`ModelConfig::rrd_prob`], one of the `K*K` regions of
//! `F'` (chosen uniformly) is set to zero before steps 6-7.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which backbone the model uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// ResNet-style basic blocks (two 3x3 convolutions and a shortcut), close to the paper.
    #[default]
    Resnet,
    /// Light mobile backbone: inverted residual blocks with depthwise-separable convolutions,
    /// for boards.
    Mobile,
}

impl std::str::FromStr for Backbone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "resnet" => Ok(Backbone::Resnet),
            "mobile" => Ok(Backbone::Mobile),
            other => Err(Error::config(
                "model.backbone",
                format!("unknown backbone {other:?}; use \"resnet\" or \"mobile\""),
            )),
        }
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backbone::Resnet => "resnet",
            Backbone::Mobile => "mobile",
        })
    }
}

/// Everything that determines the architecture (saved as `model.json` with each checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Backbone family.
    pub backbone: Backbone,
    /// Channels of the stem and of stage 0; stage `i` has `width * 2^i` channels.
    pub width: usize,
    /// Number of blocks in each stage (the number of stages is the length).
    pub blocks: Vec<usize>,
    /// Hidden-channel multiplier of the mobile backbone's inverted residual blocks.
    pub expansion: usize,
    /// Input channels: 1 (grayscale) or 3 (RGB).
    pub input_channels: usize,
    /// Input height in pixels.
    pub input_height: usize,
    /// Input width in pixels.
    pub input_width: usize,
    /// Number of expression classes.
    pub num_classes: usize,
    /// Local attention enhancement on/off.
    pub lae: bool,
    /// Random region dropout on/off (training only).
    pub rrd: bool,
    /// Probability that RRD zeroes one region of a sample.
    pub rrd_prob: f64,
    /// The feature map is cut into `regions x regions` cells.
    pub regions: usize,
    /// Hidden channels of the attention branch's 3x3 convolution (0: `max(C / 4, 4)`).
    pub attention_hidden: usize,
    /// BatchNorm epsilon.
    pub bn_epsilon: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: Backbone::Resnet,
            width: 32,
            blocks: vec![1, 1, 1],
            expansion: 4,
            input_channels: 1,
            input_height: 64,
            input_width: 64,
            num_classes: 7,
            lae: true,
            rrd: true,
            rrd_prob: 0.5,
            regions: 2,
            attention_hidden: 0,
            bn_epsilon: 1e-5,
        }
    }
}

fn halve(size: usize) -> usize {
    // conv 3x3, stride 2, padding 1.
    size.div_ceil(2)
}

impl ModelConfig {
    /// The default configuration for a backbone (the mobile one is narrower and deeper).
    pub fn for_backbone(backbone: Backbone) -> Self {
        match backbone {
            Backbone::Resnet => ModelConfig::default(),
            Backbone::Mobile => ModelConfig {
                backbone,
                width: 16,
                blocks: vec![1, 2, 2],
                ..ModelConfig::default()
            },
        }
    }

    /// Channels of the backbone's output feature map.
    pub fn feature_channels(&self) -> usize {
        self.width << self.blocks.len().saturating_sub(1)
    }

    /// Spatial size `(h, w)` of the backbone's output feature map.
    pub fn feature_size(&self) -> (usize, usize) {
        let mut h = halve(self.input_height);
        let mut w = halve(self.input_width);
        for _ in 1..self.blocks.len() {
            h = halve(h);
            w = halve(w);
        }
        (h, w)
    }

    /// Hidden channels of the attention branch.
    pub fn attention_channels(&self) -> usize {
        if self.attention_hidden > 0 {
            self.attention_hidden
        } else {
            (self.feature_channels() / 4).max(4)
        }
    }

    /// Checks that the configuration describes a buildable, exportable network.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::config(field, reason));
        if self.width == 0 {
            return bad("model.width", "must be at least 1".into());
        }
        if self.blocks.is_empty() || self.blocks.contains(&0) {
            return bad(
                "model.blocks",
                format!(
                    "{:?}: need at least one stage and one block per stage",
                    self.blocks
                ),
            );
        }
        if self.expansion == 0 {
            return bad("model.expansion", "must be at least 1".into());
        }
        if !matches!(self.input_channels, 1 | 3) {
            return bad(
                "model.input_channels",
                format!("{}: use 1 (grayscale) or 3 (RGB)", self.input_channels),
            );
        }
        if self.num_classes < 2 {
            return bad(
                "model.num_classes",
                format!("{}: need at least two classes", self.num_classes),
            );
        }
        if !(0.0..=1.0).contains(&self.rrd_prob) {
            return bad(
                "model.rrd_prob",
                format!("{} is not a probability", self.rrd_prob),
            );
        }
        if self.bn_epsilon <= 0.0 {
            return bad("model.bn_epsilon", "must be positive".into());
        }
        if self.regions == 0 {
            return bad("model.regions", "must be at least 1".into());
        }
        let (h, w) = self.feature_size();
        if h % self.regions != 0 || w % self.regions != 0 {
            return bad(
                "model.regions",
                format!(
                    "the {}x{} input gives a {h}x{w} feature map, which a {k}x{k} region grid \
                     does not divide; choose an input size or number of stages so that it does \
                     (e.g. 48, 64 or 112 pixels with 3 stages and 2 regions)",
                    self.input_height,
                    self.input_width,
                    k = self.regions
                ),
            );
        }
        Ok(())
    }

    /// Builds a freshly initialised model (call `B::seed` first for reproducible weights).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        self.validate()?;
        let backbone = BackboneNet::new(self, device);
        let channels = self.feature_channels();
        let lae = self.lae.then(|| Lae::new(self, device));
        let head_in = if self.lae { 2 * channels } else { channels };
        let head = LinearConfig::new(head_in, self.num_classes).init(device);
        let (feature_height, feature_width) = self.feature_size();
        Ok(Model {
            backbone,
            lae,
            head,
            regions: self.regions,
            rrd_prob: if self.rrd { self.rrd_prob } else { 0.0 },
            feature_height,
            feature_width,
        })
    }
}

/// A convolution followed by BatchNorm (no activation).
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// Convolution without bias.
    pub conv: Conv2d<B>,
    /// BatchNorm over its output channels.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> ConvBn<B> {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        let pad = kernel / 2;
        let conv = Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_groups(groups)
            .with_bias(false)
            .init(device);
        let bn = BatchNormConfig::new(channels[1])
            .with_epsilon(eps)
            .init(device);
        ConvBn { conv, bn }
    }

    /// `bn(conv(x))`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// ResNet basic block.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// 3x3, carries the block's stride.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3x3, stride 1.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// 1x1 projection of the shortcut when the shape changes.
    pub downsample: Option<ConvBn<B>>,
}

impl<B: Backend> BasicBlock<B> {
    fn new(inp: usize, out: usize, stride: usize, eps: f64, device: &B::Device) -> Self {
        let ConvBn {
            conv: conv1,
            bn: bn1,
        } = ConvBn::new([inp, out], 3, stride, 1, eps, device);
        let ConvBn {
            conv: conv2,
            bn: bn2,
        } = ConvBn::new([out, out], 3, 1, 1, eps, device);
        let downsample =
            (stride != 1 || inp != out).then(|| ConvBn::new([inp, out], 1, stride, 1, eps, device));
        BasicBlock {
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
        }
    }

    /// See the module documentation, step 3.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let y = self.bn2.forward(self.conv2.forward(y));
        let shortcut = match &self.downsample {
            Some(down) => down.forward(x),
            None => x,
        };
        relu(y + shortcut)
    }
}

/// Mobile inverted residual block (expand 1x1, depthwise 3x3, project 1x1).
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// 1x1 expansion (absent when the expansion factor is 1).
    pub expand: Option<ConvBn<B>>,
    /// 3x3 depthwise convolution, carries the block's stride.
    pub depthwise: ConvBn<B>,
    /// 1x1 linear projection.
    pub project: ConvBn<B>,
    /// Whether the input is added to the output.
    pub residual: bool,
}

impl<B: Backend> InvertedResidual<B> {
    fn new(
        inp: usize,
        out: usize,
        stride: usize,
        expansion: usize,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        let hidden = inp * expansion;
        let expand = (expansion != 1).then(|| ConvBn::new([inp, hidden], 1, 1, 1, eps, device));
        InvertedResidual {
            expand,
            depthwise: ConvBn::new([hidden, hidden], 3, stride, hidden, eps, device),
            project: ConvBn::new([hidden, out], 1, 1, 1, eps, device),
            residual: stride == 1 && inp == out,
        }
    }

    /// See the module documentation, step 3.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = match &self.expand {
            Some(expand) => relu(expand.forward(x.clone())),
            None => x.clone(),
        };
        let y = relu(self.depthwise.forward(y));
        let y = self.project.forward(y);
        if self.residual { y + x } else { y }
    }
}

/// One block of either backbone.
#[derive(Module, Debug)]
pub enum Block<B: Backend> {
    /// ResNet basic block.
    Basic(BasicBlock<B>),
    /// Mobile inverted residual block.
    Inverted(InvertedResidual<B>),
}

impl<B: Backend> Block<B> {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Block::Basic(block) => block.forward(x),
            Block::Inverted(block) => block.forward(x),
        }
    }
}

/// A sequence of blocks at one resolution.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    /// The blocks, applied in order.
    pub blocks: Vec<Block<B>>,
}

/// The convolutional backbone.
#[derive(Module, Debug)]
pub struct BackboneNet<B: Backend> {
    /// 3x3 stride-2 convolution + BatchNorm (+ ReLU).
    pub stem: ConvBn<B>,
    /// The stages, applied in order.
    pub stages: Vec<Stage<B>>,
}

impl<B: Backend> BackboneNet<B> {
    fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let eps = config.bn_epsilon;
        let stem = ConvBn::new([config.input_channels, config.width], 3, 2, 1, eps, device);
        let mut channels = config.width;
        let stages = config
            .blocks
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let out = config.width << i;
                let blocks = (0..count)
                    .map(|j| {
                        let stride = if i > 0 && j == 0 { 2 } else { 1 };
                        let block = match config.backbone {
                            Backbone::Resnet => {
                                Block::Basic(BasicBlock::new(channels, out, stride, eps, device))
                            }
                            Backbone::Mobile => Block::Inverted(InvertedResidual::new(
                                channels,
                                out,
                                stride,
                                config.expansion,
                                eps,
                                device,
                            )),
                        };
                        channels = out;
                        block
                    })
                    .collect();
                Stage { blocks }
            })
            .collect();
        BackboneNet { stem, stages }
    }

    /// Input `[N, C_in, H, W]` to feature map `[N, C, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = relu(self.stem.forward(x));
        for stage in &self.stages {
            for block in &stage.blocks {
                x = block.forward(x);
            }
        }
        x
    }
}

/// Local attention enhancement: spatial attention and learned region weights.
#[derive(Module, Debug)]
pub struct Lae<B: Backend> {
    /// 3x3 convolution `C -> hidden` (with bias, padding 1).
    pub conv3: Conv2d<B>,
    /// 1x1 convolution `hidden -> 1` (with bias).
    pub conv1: Conv2d<B>,
    /// One logit per region, row-major over the `K x K` grid; the weights are their softmax.
    pub region_logits: Param<Tensor<B, 1>>,
}

impl<B: Backend> Lae<B> {
    fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let channels = config.feature_channels();
        let hidden = config.attention_channels();
        let conv3 = Conv2dConfig::new([channels, hidden], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        let conv1 = Conv2dConfig::new([hidden, 1], [1, 1]).init(device);
        let regions = config.regions * config.regions;
        Lae {
            conv3,
            conv1,
            region_logits: Param::from_tensor(Tensor::zeros([regions], device)),
        }
    }

    /// The attention map `A` `[N, 1, h, w]`.
    pub fn attention(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        sigmoid(self.conv1.forward(relu(self.conv3.forward(features))))
    }

    /// `F * (A + 1)`.
    pub fn enhance(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        let attention = self.attention(features.clone());
        features * attention.add_scalar(1.0)
    }

    /// The region weights `softmax(region_logits)`.
    pub fn weights(&self) -> Tensor<B, 1> {
        softmax(self.region_logits.val(), 0)
    }
}

/// The classifier (see the module documentation for the exact computation).
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    /// The convolutional backbone.
    pub backbone: BackboneNet<B>,
    /// Local attention enhancement (absent when switched off).
    pub lae: Option<Lae<B>>,
    /// Linear classifier over the pooled features.
    pub head: Linear<B>,
    /// `K`: the feature map is cut into `K x K` regions.
    pub regions: usize,
    /// RRD probability during training (0 when RRD is off).
    pub rrd_prob: f64,
    /// Height of the backbone's feature map.
    pub feature_height: usize,
    /// Width of the backbone's feature map.
    pub feature_width: usize,
}

impl<B: Backend> Model<B> {
    /// Inference: logits `[N, classes]` for a normalised batch `[N, C_in, H, W]`. No region
    /// dropout; BatchNorm uses running statistics unless the backend is an autodiff one.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.backbone.forward(x);
        self.head_forward(features, None)
    }

    /// Training forward: like [`Model::forward`] plus random region dropout, drawn from `rng`.
    pub fn forward_train(&self, x: Tensor<B, 4>, rng: &mut impl Rng) -> Tensor<B, 2> {
        let features = self.backbone.forward(x);
        let [n, _, h, w] = features.dims();
        let mask = (self.rrd_prob > 0.0).then(|| {
            let data = self.rrd_mask(n, h, w, rng);
            Tensor::from_data(TensorData::new(data, [n, 1, h, w]), &features.device())
        });
        self.head_forward(features, mask)
    }

    /// The RRD mask `[n, 1, h, w]` (row-major), 0 inside the dropped region of each sample.
    fn rrd_mask(&self, n: usize, h: usize, w: usize, rng: &mut impl Rng) -> Vec<f32> {
        let k = self.regions;
        let (rh, rw) = (h / k, w / k);
        let mut mask = vec![1.0f32; n * h * w];
        for sample in mask.chunks_mut(h * w) {
            if rng.random::<f64>() < self.rrd_prob {
                let region = rng.random_range(0..k * k);
                let (row0, col0) = ((region / k) * rh, (region % k) * rw);
                for row in row0..row0 + rh {
                    sample[row * w + col0..row * w + col0 + rw].fill(0.0);
                }
            }
        }
        mask
    }

    fn head_forward(&self, features: Tensor<B, 4>, mask: Option<Tensor<B, 4>>) -> Tensor<B, 2> {
        let features = match &self.lae {
            Some(lae) => lae.enhance(features),
            None => features,
        };
        let features = match mask {
            Some(mask) => features * mask,
            None => features,
        };
        let [n, c, h, w] = features.dims();
        let global = avg_pool2d(features.clone(), [h, w], [h, w], [0, 0], true, false);
        let pooled = match &self.lae {
            Some(lae) => {
                let k = self.regions;
                let kernel = [h / k, w / k];
                let cells = avg_pool2d(features, kernel, kernel, [0, 0], true, false);
                let weights = lae.weights().reshape([1, 1, k, k]);
                let region = (cells * weights).sum_dim(2).sum_dim(3);
                Tensor::cat(vec![global, region], 1).reshape([n, 2 * c])
            }
            None => global.reshape([n, c]),
        };
        self.head.forward(pooled)
    }

    /// The region weights `softmax(region_logits)` as burn computes them, row-major over the
    /// `K x K` grid (`None` without LAE). An ONNX export uses these values as a constant.
    pub fn region_weights(&self) -> Option<Vec<f32>> {
        self.lae.as_ref().map(|lae| {
            lae.weights()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 data converts to Vec<f32>")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::Flex;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    type B = Flex;
    type AD = Autodiff<Flex>;

    fn small(backbone: Backbone) -> ModelConfig {
        ModelConfig {
            width: 4,
            blocks: vec![1, 2],
            input_height: 16,
            input_width: 16,
            ..ModelConfig::for_backbone(backbone)
        }
    }

    fn input<BB: Backend>(n: usize, c: usize, size: usize) -> Tensor<BB, 4> {
        let data: Vec<f32> = (0..n * c * size * size)
            .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
            .collect();
        Tensor::from_data(
            TensorData::new(data, [n, c, size, size]),
            &Default::default(),
        )
    }

    fn values<const D: usize, BB: Backend>(t: Tensor<BB, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    #[test]
    fn shapes_for_both_backbones_and_switches() {
        for backbone in [Backbone::Resnet, Backbone::Mobile] {
            for lae in [false, true] {
                let config = ModelConfig {
                    lae,
                    ..small(backbone)
                };
                let model = config.init::<B>(&Default::default()).unwrap();
                assert_eq!(model.backbone.forward(input(3, 1, 16)).dims(), [3, 8, 4, 4]);
                assert_eq!(model.forward(input(3, 1, 16)).dims(), [3, 7]);
                assert_eq!(model.region_weights().is_some(), lae);
            }
        }
        let rgb = ModelConfig {
            input_channels: 3,
            input_height: 112,
            input_width: 112,
            blocks: vec![1, 1, 1],
            ..small(Backbone::Mobile)
        };
        assert_eq!(rgb.feature_size(), (14, 14));
        let model = rgb.init::<B>(&Default::default()).unwrap();
        assert_eq!(model.forward(input(2, 3, 112)).dims(), [2, 7]);
    }

    #[test]
    fn block_shapes() {
        let device = Default::default();
        let basic = BasicBlock::<B>::new(4, 8, 2, 1e-5, &device);
        assert!(basic.downsample.is_some());
        assert_eq!(basic.forward(input(2, 4, 8)).dims(), [2, 8, 4, 4]);
        let same = BasicBlock::<B>::new(4, 4, 1, 1e-5, &device);
        assert!(same.downsample.is_none());
        assert_eq!(same.forward(input(2, 4, 8)).dims(), [2, 4, 8, 8]);
        let inv = InvertedResidual::<B>::new(4, 4, 1, 4, 1e-5, &device);
        assert!(inv.residual && inv.expand.is_some());
        assert_eq!(inv.depthwise.conv.weight.dims(), [16, 1, 3, 3]);
        assert_eq!(inv.forward(input(2, 4, 8)).dims(), [2, 4, 8, 8]);
        let inv = InvertedResidual::<B>::new(4, 8, 2, 1, 1e-5, &device);
        assert!(!inv.residual && inv.expand.is_none());
        assert_eq!(inv.forward(input(2, 4, 8)).dims(), [2, 8, 4, 4]);
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field() {
        let odd = ModelConfig {
            input_height: 40,
            input_width: 40,
            regions: 2,
            ..ModelConfig::default()
        };
        // 40 -> 20 -> 10 -> 5: not divisible by 2.
        let err = odd.validate().unwrap_err().to_string();
        assert!(
            err.contains("model.regions") && err.contains("5x5"),
            "{err}"
        );
        let err = ModelConfig {
            input_channels: 2,
            ..ModelConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("input_channels"), "{err}");
        assert!("resnet".parse::<Backbone>().is_ok());
        assert!("vgg".parse::<Backbone>().is_err());
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = small(Backbone::Mobile);
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"mobile\""));
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn eval_forward_is_deterministic_and_train_forward_drops_regions() {
        let config = ModelConfig {
            rrd_prob: 1.0,
            ..small(Backbone::Resnet)
        };
        let model = config.init::<B>(&Default::default()).unwrap();
        let x = input::<B>(4, 1, 16);
        let a = values(model.forward(x.clone()));
        let b = values(model.forward(x.clone()));
        assert_eq!(a, b, "inference must not apply region dropout");
        // With p = 1 every sample loses a region, so the training forward differs.
        let mut rng = StdRng::seed_from_u64(1);
        let dropped = values(model.forward_train(x.clone(), &mut rng));
        assert_ne!(a, dropped);
        // With RRD off the training forward on an inference backend is the inference forward.
        let off = ModelConfig {
            rrd: false,
            ..config
        }
        .init::<B>(&Default::default())
        .unwrap();
        let plain = values(off.forward(x.clone()));
        assert_eq!(plain, values(off.forward_train(x, &mut rng)));
    }

    #[test]
    fn rrd_mask_zeroes_exactly_one_region() {
        let model = ModelConfig {
            rrd_prob: 1.0,
            ..small(Backbone::Resnet)
        }
        .init::<B>(&Default::default())
        .unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mask = model.rrd_mask(5, 4, 4, &mut rng);
        for sample in mask.chunks(16) {
            assert_eq!(sample.iter().filter(|v| **v == 0.0).count(), 4);
        }
        let never = ModelConfig {
            rrd_prob: 0.0,
            ..small(Backbone::Resnet)
        }
        .init::<B>(&Default::default())
        .unwrap();
        // rrd_prob 0 builds no mask at all; the mask helper with p=0 keeps everything.
        assert!(never.rrd_mask(3, 4, 4, &mut rng).iter().all(|v| *v == 1.0));
    }

    #[test]
    fn attention_changes_the_output() {
        let model = small(Backbone::Resnet)
            .init::<B>(&Default::default())
            .unwrap();
        let x = input::<B>(2, 1, 16);
        let features = model.backbone.forward(x.clone());
        let with = values(model.head_forward(features.clone(), None));
        let lae = model.lae.as_ref().unwrap();
        let a = values(lae.attention(features.clone()));
        assert!(a.iter().all(|v| *v > 0.0 && *v < 1.0));
        let enhanced = values(lae.enhance(features.clone()));
        assert_ne!(enhanced, values(features.clone()));
        // Same weights with the map forced to zero (F' = F) give different logits.
        let [n, c, h, w] = features.dims();
        let global = avg_pool2d(features.clone(), [h, w], [h, w], [0, 0], true, false);
        let cells = avg_pool2d(
            features,
            [h / 2, w / 2],
            [h / 2, w / 2],
            [0, 0],
            true,
            false,
        );
        let region = (cells * lae.weights().reshape([1, 1, 2, 2]))
            .sum_dim(2)
            .sum_dim(3);
        let plain = model
            .head
            .forward(Tensor::cat(vec![global, region], 1).reshape([n, 2 * c]));
        assert_ne!(with, values(plain));
        let weights = model.region_weights().unwrap();
        assert_eq!(weights.len(), 4);
        assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gradients_reach_the_first_conv_and_the_region_weights() {
        for backbone in [Backbone::Resnet, Backbone::Mobile] {
            let model = small(backbone).init::<AD>(&Default::default()).unwrap();
            let mut rng = StdRng::seed_from_u64(3);
            let logits = model.forward_train(input::<AD>(4, 1, 16), &mut rng);
            let grads = logits.powi_scalar(2).mean().backward();
            let stem = model.backbone.stem.conv.weight.grad(&grads).unwrap();
            assert!(values(stem).iter().any(|g| *g != 0.0), "{backbone}");
            let lae = model.lae.as_ref().unwrap();
            assert!(lae.region_logits.grad(&grads).is_some());
            assert!(lae.conv3.weight.grad(&grads).is_some());
        }
    }
}
