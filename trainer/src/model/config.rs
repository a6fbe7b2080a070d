//! [`ModelConfig`]: everything that determines the architecture (saved as `model.json` with
//! every checkpoint), and [`ModelConfig::init`], which builds the network it describes.

use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::Model;
use super::blocks::BackboneNet;
use super::lae::Lae;
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
    /// Stride of the stem convolution: 2 halves the input at once (cheap), 1 keeps the full
    /// resolution for the first stage.
    pub stem_stride: usize,
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
            stem_stride: 2,
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

/// Output size of a 3x3 convolution with padding 1 and `stride`.
fn shrink(size: usize, stride: usize) -> usize {
    size.div_ceil(stride)
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
        let mut h = shrink(self.input_height, self.stem_stride);
        let mut w = shrink(self.input_width, self.stem_stride);
        for _ in 1..self.blocks.len() {
            h = shrink(h, 2);
            w = shrink(w, 2);
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
        if !matches!(self.stem_stride, 1 | 2) {
            return bad(
                "model.stem_stride",
                format!("{}: use 1 or 2", self.stem_stride),
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
