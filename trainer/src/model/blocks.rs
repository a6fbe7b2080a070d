//! The backbones' building blocks: convolution + BatchNorm, the ResNet basic block, the mobile
//! inverted residual block, stages and the backbone itself (steps 2-3 of the computation in
//! [`super`]).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use super::config::{Backbone, ModelConfig};

/// A convolution followed by BatchNorm (no activation).
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// Convolution without bias.
    pub conv: Conv2d<B>,
    /// BatchNorm over its output channels.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> ConvBn<B> {
    pub(crate) fn new(
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
    pub(crate) fn new(inp: usize, out: usize, stride: usize, eps: f64, device: &B::Device) -> Self {
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
    pub(crate) fn new(
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
    pub(crate) fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let eps = config.bn_epsilon;
        let stem = ConvBn::new(
            [config.input_channels, config.width],
            3,
            config.stem_stride,
            1,
            eps,
            device,
        );
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

    /// Every BatchNorm of the backbone, in forward order.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm<B>> {
        let mut out = vec![&mut self.stem.bn];
        for stage in &mut self.stages {
            for block in &mut stage.blocks {
                match block {
                    Block::Basic(b) => {
                        out.push(&mut b.bn1);
                        out.push(&mut b.bn2);
                        if let Some(d) = &mut b.downsample {
                            out.push(&mut d.bn);
                        }
                    }
                    Block::Inverted(b) => {
                        if let Some(e) = &mut b.expand {
                            out.push(&mut e.bn);
                        }
                        out.push(&mut b.depthwise.bn);
                        out.push(&mut b.project.bn);
                    }
                }
            }
        }
        out
    }
}
