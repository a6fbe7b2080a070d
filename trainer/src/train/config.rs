//! What a training run depends on: [`TrainConfig`] (saved as `config.json` with every
//! checkpoint) and its parts.

use std::path::PathBuf;

use firmware_config::manifest::{ColorChannels, Preprocessing, TensorLayout};
use serde::{Deserialize, Serialize};

use crate::algorithm::AlgorithmConfig;
use crate::backend::BackendKind;
use crate::data::LabelBudget;
use crate::data::LabeledSource;
use crate::data::loader::{LabeledAugmentation, Sampling};
use crate::error::{Error, Result};
use crate::model::ModelConfig;

/// The most data-parallel devices a run may use.
pub const MAX_DEVICES: usize = 16;

/// Optimiser and learning-rate schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// Decoupled weight decay: AdamW shrinks every weight by `lr * weight_decay` per step, so
    /// SGD's usual 5e-4 would be about 1e-6 per step here, effectively none.
    pub weight_decay: f32,
    /// Linear warm-up steps; then cosine decay to `min_lr_ratio * learning_rate`.
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            learning_rate: 2e-3,
            weight_decay: 0.05,
            warmup_steps: 50,
            min_lr_ratio: 0.05,
        }
    }
}

impl OptimizerConfig {
    /// The learning rate at `step` of `total`.
    pub fn learning_rate_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        self.learning_rate * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

/// Where the training data comes from and how much of it is labeled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The labeled pool (its class folders define the classes).
    pub labeled: LabeledSource,
    /// Held-out labeled data evaluated during and after training (same classes).
    pub validation: Option<LabeledSource>,
    /// Extra unlabeled image folders (searched recursively), e.g. the pool `fer loop` grows.
    pub unlabeled: Vec<PathBuf>,
    /// Folders of field-log segments collected from boards; their crops become unlabeled data.
    pub field: Vec<PathBuf>,
    /// How many labeled images to use; the rest of the pool becomes unlabeled.
    pub budget: LabelBudget,
    /// Fail on an unreadable image instead of skipping and counting it.
    pub strict: bool,
    /// Use at most this many validation images (0: all), taken evenly across the list.
    pub max_validation: usize,
    /// How labeled samples are drawn (class-balanced or at their natural frequencies).
    pub sampling: Sampling,
    /// How labeled samples are augmented.
    pub labeled_augmentation: LabeledAugmentation,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            labeled: LabeledSource::ImageFolder {
                path: PathBuf::from("data/train"),
            },
            validation: None,
            unlabeled: Vec::new(),
            field: Vec::new(),
            budget: LabelBudget::All,
            strict: false,
            max_validation: 0,
            sampling: Sampling::default(),
            labeled_augmentation: LabeledAugmentation::default(),
        }
    }
}

/// Everything a training run depends on (saved as `config.json` with every checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture (`num_classes` is set from the labeled data's classes).
    pub model: ModelConfig,
    /// Semi-supervised algorithm and loss weights.
    pub algorithm: AlgorithmConfig,
    /// Resize, channels, normalisation: the same struct the board's manifest carries.
    pub preprocessing: Preprocessing,
    /// Data sources and label budget.
    pub data: DataConfig,
    /// Optimiser and schedule.
    pub optimizer: OptimizerConfig,
    /// Seed of weights, label choice, sampling, augmentation and region dropout.
    pub seed: u64,
    /// Total optimisation steps.
    pub steps: u64,
    /// Labeled images per step and device.
    pub labeled_batch: usize,
    /// Unlabeled images per step, as a multiple of `labeled_batch`.
    pub unlabeled_ratio: usize,
    /// Data-parallel replicas, one per device (`--devices`): each step takes `devices` times
    /// the batch and the devices average their gradients (see [`super::parallel`]). On the CPU
    /// backends the replicas share the one CPU, which only tests use.
    pub devices: usize,
    /// Evaluate (and log thresholds) every this many steps (0: once per epoch of the
    /// unlabeled pool, or of the labeled set when there is none).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Background threads decoding and augmenting.
    pub workers: usize,
    /// Batches of weak views (of [`TrainConfig::labeled_batch`] times the unlabeled ratio plus
    /// one images) over which the deployed teacher's BatchNorm statistics are re-estimated
    /// before every evaluation and checkpoint (0: keep the EMA statistics).
    pub bn_recalibration_batches: usize,
    /// Compute backend.
    pub backend: BackendKind,
    /// Start from the weights, teacher and DTA state of this earlier run folder (new
    /// optimiser, step 0); the classes and architecture must match.
    pub warm_start: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::for_model(ModelConfig::default())
    }
}

impl TrainConfig {
    /// A configuration whose preprocessing matches `model`'s input (normalised to -1..1).
    pub fn for_model(model: ModelConfig) -> Self {
        let preprocessing = preprocessing_for(&model);
        TrainConfig {
            model,
            algorithm: AlgorithmConfig::default(),
            preprocessing,
            data: DataConfig::default(),
            optimizer: OptimizerConfig::default(),
            seed: 0,
            steps: 2000,
            labeled_batch: 32,
            unlabeled_ratio: 2,
            devices: 1,
            eval_every: 0,
            checkpoint_every: 500,
            workers: 2,
            bn_recalibration_batches: 20,
            backend: BackendKind::Flex,
            warm_start: None,
        }
    }

    /// Unlabeled images per step (0 for supervised training).
    pub fn unlabeled_batch(&self) -> usize {
        if self.algorithm.algorithm.uses_unlabeled() {
            self.labeled_batch * self.unlabeled_ratio
        } else {
            0
        }
    }

    /// Checks every part and that the preprocessing produces what the model expects.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.algorithm.validate()?;
        let pre = &self.preprocessing;
        pre.validate()
            .map_err(|e| Error::config("preprocessing", e.to_string()))?;
        if pre.input_width as usize != self.model.input_width
            || pre.input_height as usize != self.model.input_height
            || pre.channels.count() != self.model.input_channels
            || pre.layout != TensorLayout::Nchw
        {
            return Err(Error::config(
                "preprocessing",
                format!(
                    "produces {}x{}x{} {:?} but the model takes {}x{}x{} NCHW; build the config \
                     with TrainConfig::for_model or fix one of them",
                    pre.channels.count(),
                    pre.input_height,
                    pre.input_width,
                    pre.layout,
                    self.model.input_channels,
                    self.model.input_height,
                    self.model.input_width
                ),
            ));
        }
        if self.labeled_batch == 0 || self.steps == 0 {
            return Err(Error::config(
                "labeled_batch / steps",
                "both must be at least 1",
            ));
        }
        if !(1..=MAX_DEVICES).contains(&self.devices) {
            return Err(Error::config(
                "devices",
                format!(
                    "{} is out of range; use 1 to {MAX_DEVICES} (one per GPU)",
                    self.devices
                ),
            ));
        }
        if self.optimizer.learning_rate <= 0.0 {
            return Err(Error::config("optimizer.learning_rate", "must be positive"));
        }
        Ok(())
    }
}

/// The preprocessing that matches a model's input: bilinear resize, its channels, NCHW,
/// `(p / 255 - 0.5) / 0.5`.
pub fn preprocessing_for(model: &ModelConfig) -> Preprocessing {
    let channels = if model.input_channels == 3 {
        ColorChannels::Rgb
    } else {
        ColorChannels::Gray
    };
    let c = channels.count();
    Preprocessing {
        input_width: model.input_width as u32,
        input_height: model.input_height as u32,
        channels,
        layout: TensorLayout::Nchw,
        normalization: firmware_config::manifest::Normalization::new(
            1.0 / 255.0,
            vec![0.5; c],
            vec![0.5; c],
        ),
        ..Preprocessing::default()
    }
}
