//! Local attention enhancement (steps 5-7 of the computation in [`super`]): a spatial attention
//! map that scales the features, and region weights that depend on the input.
//!
//! `A = sigmoid(conv1 1x1 (relu(conv3 3x3 (F))))` `[N, 1, h, w]`, `F' = F * (1 + A)`. The
//! `K x K` regions of `F'` are weighted by `alpha = softmax_r(scale * mean_{region r} A)`: a
//! face whose attention concentrates on the mouth weights the mouth region up. The first
//! formulation's weights were a softmax over a learned vector, the same for every face: a
//! reweighting the linear head could learn by itself.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;

use super::config::ModelConfig;

/// The starting value of the learned `scale`: region attention means differ by a few
/// hundredths at initialisation, which this turns into weights that differ by about 10-20%.
pub const INITIAL_REGION_SCALE: f32 = 5.0;

/// Local attention enhancement: spatial attention and input-dependent region weights.
#[derive(Module, Debug)]
pub struct Lae<B: Backend> {
    /// 3x3 convolution `C -> hidden` (with bias, padding 1).
    pub conv3: Conv2d<B>,
    /// 1x1 convolution `hidden -> 1` (with bias).
    pub conv1: Conv2d<B>,
    /// `[1]`: how sharply the region weights follow the attention means.
    pub region_scale: Param<Tensor<B, 1>>,
}

impl<B: Backend> Lae<B> {
    pub(crate) fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let channels = config.feature_channels();
        let hidden = config.attention_channels();
        let conv3 = Conv2dConfig::new([channels, hidden], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        let conv1 = Conv2dConfig::new([hidden, 1], [1, 1]).init(device);
        Lae {
            conv3,
            conv1,
            region_scale: Param::from_tensor(Tensor::from_floats([INITIAL_REGION_SCALE], device)),
        }
    }

    /// The attention map `A` `[N, 1, h, w]`.
    pub fn attention(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        sigmoid(self.conv1.forward(relu(self.conv3.forward(features))))
    }

    /// `F * (A + 1)` for the attention map `attention` of `features`.
    pub fn enhance(&self, features: Tensor<B, 4>, attention: Tensor<B, 4>) -> Tensor<B, 4> {
        features * attention.add_scalar(1.0)
    }

    /// The region weights `[N, 1, K, K]` of an attention map `[N, 1, h, w]` (each sample's
    /// weights sum to one; region `r` is row `r / K`, column `r % K`).
    pub fn region_weights(&self, attention: Tensor<B, 4>, k: usize) -> Tensor<B, 4> {
        let [n, _, h, w] = attention.dims();
        let kernel = [h / k, w / k];
        let means = avg_pool2d(attention, kernel, kernel, [0, 0], true, false);
        let logits = means.reshape([n, k * k]) * self.region_scale.val().reshape([1, 1]);
        softmax(logits, 1).reshape([n, 1, k, k])
    }
}
