//! The expression classifier: a backbone, local attention enhancement (LAE), random region
//! dropout (RRD) and a linear head.
//!
//! The formulation is ours (docs/design.md, "The algorithm"). [`ModelConfig`] alone
//! determines the architecture; it is saved as JSON next to every checkpoint. One file per
//! part, mirroring the tree that `export/model_graph.rs` walks: [`config`], [`blocks`]
//! (backbones), [`lae`] (attention and region weights), [`rrd`] (region dropout).
//!
//! # Module tree (field names are the parameter paths)
//! ```text
//! model.backbone.stem.{conv,bn}
//! model.backbone.stages[i].blocks[j] = Block::Basic     { conv1, bn1, conv2, bn2, downsample: Option<{conv,bn}> }
//!                                    | Block::Inverted  { expand: Option<{conv,bn}>, depthwise.{conv,bn}, project.{conv,bn}, residual }
//! model.lae: Option<{ conv3, conv1, region_scale }>
//! model.head (Linear: weight [in, classes], bias [classes])
//! ```
//! All convolutions in the backbone have no bias and are followed by a BatchNorm with
//! epsilon [`ModelConfig::bn_epsilon`] (1e-5 by default); `conv3`/`conv1` of the LAE have a bias.
//!
//! # Inference computation, in order (what an ONNX export must reproduce)
//! 1. `x` `[N, C_in, H, W]` (already normalised by `Preprocessing::apply`).
//! 2. Stem: `relu(bn(conv3x3 stride s pad 1 (x)))`, `s` = [`ModelConfig::stem_stride`].
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
//! 7. Regions: `P = AveragePool(F', kernel = stride = [h/K, w/K])` `[N, C, K, K]`; region
//!    weights `alpha = Reshape(Softmax(region_scale * Flatten(AveragePool(A, same kernel)),
//!    axis 1), [N, 1, K, K])` (row-major: region `r` is row `r / K`, column `r % K`);
//!    `r = ReduceSum(P * alpha, axes [2, 3])` `[N, C, 1, 1]` (a weighted mean).
//! 8. `z = Concat([g, r], axis 1)` (`[g]` alone without LAE), flattened to `[N, 2C]` (`[N, C]`).
//! 9. `logits = z @ head.weight + head.bias` `[N, classes]` (Gemm; burn stores the weight as
//!    `[in, out]`, i.e. Gemm with `transB = 0`).
//!
//! # Training only
//! BatchNorm uses batch statistics (burn does this automatically on an autodiff backend), and
//! RRD ([`rrd`]): for each sample, with probability [`ModelConfig::rrd_prob`], one of the
//! `K*K` regions of `F'` is zeroed and the rest scaled by `K^2 / (K^2 - 1)` before steps 6-7.

pub mod blocks;
pub mod config;
pub mod lae;
pub mod rrd;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

pub use blocks::{BackboneNet, BasicBlock, Block, ConvBn, InvertedResidual, Stage};
pub use config::{Backbone, ModelConfig};
pub use lae::Lae;

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
            let data = rrd::region_dropout_mask(n, h, w, self.regions, self.rrd_prob, rng);
            Tensor::from_data(TensorData::new(data, [n, 1, h, w]), &features.device())
        });
        self.head_forward(features, mask)
    }

    /// Steps 5-9 of the computation from the feature map `F`, with an optional RRD mask.
    pub fn head_forward(&self, features: Tensor<B, 4>, mask: Option<Tensor<B, 4>>) -> Tensor<B, 2> {
        let [n, c, h, w] = features.dims();
        let (features, weights) = match &self.lae {
            Some(lae) => {
                let attention = lae.attention(features.clone());
                let weights = lae.region_weights(attention.clone(), self.regions);
                (lae.enhance(features, attention), Some(weights))
            }
            None => (features, None),
        };
        let features = match mask {
            Some(mask) => features * mask,
            None => features,
        };
        let global = avg_pool2d(features.clone(), [h, w], [h, w], [0, 0], true, false);
        let pooled = match weights {
            Some(weights) => {
                let k = self.regions;
                let kernel = [h / k, w / k];
                let cells = avg_pool2d(features, kernel, kernel, [0, 0], true, false);
                let region = (cells * weights).sum_dim(2).sum_dim(3);
                Tensor::cat(vec![global, region], 1).reshape([n, 2 * c])
            }
            None => global.reshape([n, c]),
        };
        self.head.forward(pooled)
    }

    /// The momentum of the BatchNorm layers (they all share one).
    pub fn batch_norm_momentum(&self) -> f64 {
        self.backbone.stem.bn.momentum
    }

    /// Draws every parameter not drawn yet. burn initialises a parameter on first use, and a
    /// clone of one not yet drawn draws its own values: copies of a fresh model (one per
    /// device) would otherwise start from different weights.
    pub fn materialize(&self) {
        struct Draw;
        impl<B: Backend> ModuleVisitor<B> for Draw {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        self.visit(&mut Draw);
    }

    /// Sets the momentum of every BatchNorm layer.
    pub fn set_batch_norm_momentum(&mut self, momentum: f64) {
        for bn in self.backbone.batch_norms_mut() {
            bn.momentum = momentum;
        }
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
    fn clones_of_a_materialized_model_predict_alike() {
        let model = small(Backbone::Resnet)
            .init::<B>(&Default::default())
            .unwrap();
        model.materialize();
        let copy = model.clone();
        assert_eq!(
            values(model.forward(input(2, 1, 16))),
            values(copy.forward(input(2, 1, 16)))
        );
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
                assert_eq!(model.lae.is_some(), lae);
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
        // A stride-1 stem keeps the full resolution for the first stage.
        let full = ModelConfig {
            stem_stride: 1,
            input_height: 48,
            input_width: 48,
            blocks: vec![1, 1, 1],
            ..small(Backbone::Resnet)
        };
        assert_eq!(full.feature_size(), (12, 12));
        let model = full.init::<B>(&Default::default()).unwrap();
        assert_eq!(
            model.backbone.forward(input(1, 1, 48)).dims(),
            [1, 16, 12, 12]
        );
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
        let err = ModelConfig {
            stem_stride: 3,
            ..ModelConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("stem_stride"), "{err}");
        assert!("resnet".parse::<Backbone>().is_ok());
        assert!("vgg".parse::<Backbone>().is_err());
    }

    #[test]
    fn config_round_trips_through_json_and_old_configs_default_the_stem() {
        let config = small(Backbone::Mobile);
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"mobile\""));
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let old: ModelConfig = serde_json::from_str(r#"{"width": 8}"#).unwrap();
        assert_eq!(old.stem_stride, 2);
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
    fn region_weights_depend_on_the_input_and_sum_to_one() {
        let model = small(Backbone::Resnet)
            .init::<B>(&Default::default())
            .unwrap();
        let lae = model.lae.as_ref().unwrap();
        // A hand-made attention map: sample 0 attends to the top-left region only.
        let mut map = vec![0.0f32; 2 * 16];
        for (i, v) in map[..16].iter_mut().enumerate() {
            if i / 4 < 2 && i % 4 < 2 {
                *v = 1.0;
            }
        }
        let attention =
            Tensor::<B, 4>::from_data(TensorData::new(map, [2, 1, 4, 4]), &Default::default());
        let w = values(lae.region_weights(attention, 2));
        // Sample 0: softmax([5, 0, 0, 0]) with the initial scale 5; sample 1: uniform.
        let e = lae::INITIAL_REGION_SCALE.exp();
        let top = e / (e + 3.0);
        assert!((w[0] - top).abs() < 1e-5, "{w:?}");
        assert!((w[1] - 1.0 / (e + 3.0)).abs() < 1e-5, "{w:?}");
        assert!(w[4..].iter().all(|v| (v - 0.25).abs() < 1e-6), "{w:?}");
        for sample in w.chunks(4) {
            assert!((sample.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
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
        let a = lae.attention(features.clone());
        assert!(values(a.clone()).iter().all(|v| *v > 0.0 && *v < 1.0));
        let enhanced = values(lae.enhance(features.clone(), a));
        assert_ne!(enhanced, values(features.clone()));
        // The same head over plain (not enhanced, uniformly weighted) features differs.
        let [n, c, h, w] = features.dims();
        let global = avg_pool2d(features.clone(), [h, w], [h, w], [0, 0], true, false);
        let plain = model
            .head
            .forward(Tensor::cat(vec![global.clone(), global], 1).reshape([n, 2 * c]));
        assert_ne!(with, values(plain));
    }

    #[test]
    fn gradients_reach_the_first_conv_and_the_region_scale() {
        for backbone in [Backbone::Resnet, Backbone::Mobile] {
            let model = small(backbone).init::<AD>(&Default::default()).unwrap();
            let mut rng = StdRng::seed_from_u64(3);
            let logits = model.forward_train(input::<AD>(4, 1, 16), &mut rng);
            let grads = logits.powi_scalar(2).mean().backward();
            let stem = model.backbone.stem.conv.weight.grad(&grads).unwrap();
            assert!(values(stem).iter().any(|g| *g != 0.0), "{backbone}");
            let lae = model.lae.as_ref().unwrap();
            assert!(lae.region_scale.grad(&grads).is_some());
            assert!(lae.conv3.weight.grad(&grads).is_some());
        }
    }

    #[test]
    fn batch_norm_momentum_reaches_every_layer() {
        let mut model = small(Backbone::Mobile)
            .init::<B>(&Default::default())
            .unwrap();
        model.set_batch_norm_momentum(0.25);
        assert!(
            model
                .backbone
                .batch_norms_mut()
                .iter()
                .all(|bn| bn.momentum == 0.25)
        );
        assert_eq!(model.batch_norm_momentum(), 0.25);
    }
}
