//! The training loop: supervised, FixMatch-style fixed threshold, DTA and DTA + SNL.
//!
//! One step (see [`crate::algorithm`] for the formulas):
//! 1. a class-balanced, weakly augmented labeled batch and `unlabeled_ratio` times as many
//!    unlabeled images, each as a weak and a strong view (built ahead by background threads);
//! 2. the teacher (inference mode) gives probabilities on the weak views; the current
//!    thresholds pick pseudo-labels and, with SNL, complementary labels; the DTA state then
//!    folds the batch in;
//! 3. the student sees the labeled batch and the strong views in one forward (with RRD);
//!    `loss = CE_sup + lambda_u * L_u + lambda_n * L_n`; AdamW step at the scheduled rate;
//! 4. the teacher becomes the EMA of the student.
//!
//! Every batch is a function of `(seed, step)` and every piece of state is checkpointed
//! (weights, teacher, AdamW moments, DTA state, step), so [`resume`] continues exactly where an
//! uninterrupted run would be.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::Recorder as _;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use firmware_config::manifest::{ColorChannels, Preprocessing, TensorLayout};
use serde::{Deserialize, Serialize};

use crate::algorithm::{
    AlgorithmConfig, DtaState, current_thresholds, ema_momentum, ema_update, select_targets,
};
use crate::backend::BackendKind;
use crate::checkpoint::{self, Recorder, SaveParts, Thresholds, TrainState};
use crate::data::loader::{BatchLoader, BatchPlan, TrainSets, step_rng, streams};
use crate::data::{self, LabelBudget, LabeledSource, Sample};
use crate::error::{Error, Result, write_json};
use crate::eval::{EvalReport, evaluate};
use crate::model::{Model, ModelConfig};

/// Optimiser and learning-rate schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// Decoupled weight decay.
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
            weight_decay: 5e-4,
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
    /// Labeled images per step.
    pub labeled_batch: usize,
    /// Unlabeled images per step, as a multiple of `labeled_batch`.
    pub unlabeled_ratio: usize,
    /// Evaluate (and log thresholds) every this many steps (0: once per epoch of the
    /// unlabeled pool, or of the labeled set when there is none).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Background threads decoding and augmenting.
    pub workers: usize,
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
            unlabeled_ratio: 3,
            eval_every: 0,
            checkpoint_every: 500,
            workers: 2,
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

/// How training reports progress on the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// An indicatif progress bar on stderr with the live loss terms.
    Bar,
    /// Nothing (library use, tests).
    Hidden,
}

/// The loss terms and pseudo-label statistics of one step (one line of `metrics.jsonl`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// Always `"step"`.
    pub kind: String,
    /// The step.
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Total loss.
    pub loss: f64,
    /// Supervised cross-entropy.
    pub supervised: f64,
    /// Pseudo-label cross-entropy (unweighted).
    pub pseudo: f64,
    /// SNL loss (unweighted).
    pub negative: f64,
    /// Fraction of unlabeled samples that became pseudo-labels.
    pub mask_rate: f64,
    /// Accuracy of the accepted pseudo-labels whose hidden label is known (`None`: none).
    pub pseudo_accuracy: Option<f64>,
    /// Thresholds used for this step's batch.
    pub thresholds: Vec<f32>,
    /// Unlabeled samples per teacher top class.
    pub top_per_class: Vec<u32>,
    /// Accepted pseudo-labels per class.
    pub accepted_per_class: Vec<u32>,
    /// Unlabeled samples given at least one complementary label.
    pub with_negatives: u32,
}

/// One evaluation line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalMetrics {
    /// Always `"eval"`.
    pub kind: String,
    /// Steps done when evaluated.
    pub step: u64,
    /// The student on the validation data.
    pub student: EvalReport,
    /// The teacher on the validation data.
    pub teacher: EvalReport,
    /// Thresholds at this point.
    pub thresholds: Vec<f32>,
}

/// What a finished run reports.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TrainSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Steps done in total.
    pub steps: u64,
    /// Steps run by this call.
    pub steps_this_run: u64,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Final per-class thresholds (also in `checkpoint/thresholds.json`).
    pub thresholds: Vec<f32>,
    /// Final student evaluation (with validation data).
    pub student: Option<EvalReport>,
    /// Final teacher evaluation, the deployed model (with validation data).
    pub teacher: Option<EvalReport>,
    /// Labeled images used.
    pub labeled: usize,
    /// Unlabeled images available.
    pub unlabeled: usize,
    /// Images skipped as unreadable.
    pub unreadable: usize,
    /// Wall time of this call in seconds.
    pub seconds: f64,
    /// Images through the student per second of this call's wall time (data loading,
    /// evaluation and checkpoints included).
    pub images_per_second: f64,
    /// The last step's metrics.
    pub last: Option<StepMetrics>,
}

/// Decoded data for one run.
struct LoadedData {
    classes: Vec<String>,
    sets: Arc<TrainSets>,
    validation: Option<(Vec<f32>, Vec<usize>)>,
    unreadable: Vec<(PathBuf, String)>,
}

fn load_data(
    config: &TrainConfig,
    classes: Option<&[String]>,
    run_dir: &Path,
) -> Result<LoadedData> {
    let data = &config.data;
    let set = data::list_labeled(&data.labeled, classes)?;
    let (labeled, hidden) =
        data::apply_budget(&set, data.budget, config.seed, data.labeled.path())?;
    data::write_id_list(&run_dir.join("labeled.txt"), &labeled)?;
    let mut unlabeled: Vec<Sample> = Vec::new();
    if config.algorithm.algorithm.uses_unlabeled() {
        unlabeled.extend(hidden);
        for folder in &data.unlabeled {
            unlabeled.extend(data::list_unlabeled_folder(folder)?);
        }
        for folder in &data.field {
            unlabeled.extend(data::list_field_segments(folder)?.0);
        }
    }
    let threads = config.workers.max(1);
    let labeled_store = data::decode_all(&labeled, threads, data.strict)?;
    let unlabeled_store = data::decode_all(&unlabeled, threads, data.strict)?;
    let mut unreadable = labeled_store.unreadable.clone();
    unreadable.extend(unlabeled_store.unreadable.iter().cloned());
    let validation = match &data.validation {
        None => None,
        Some(source) => {
            let mut val = data::list_labeled(source, Some(&set.classes))?;
            if data.max_validation > 0 && val.samples.len() > data.max_validation {
                let stride = val.samples.len() as f64 / data.max_validation as f64;
                val.samples = (0..data.max_validation)
                    .map(|i| val.samples[(i as f64 * stride) as usize].clone())
                    .collect();
            }
            let store = data::decode_all(&val.samples, threads, data.strict)?;
            unreadable.extend(store.unreadable.iter().cloned());
            let inputs = data::preprocess_all(&store, &config.preprocessing)?;
            let labels = store.labels.iter().map(|l| l.expect("labeled")).collect();
            Some((inputs, labels))
        }
    };
    let sets = TrainSets::new(labeled_store, unlabeled_store, &set.classes)?;
    Ok(LoadedData {
        classes: set.classes,
        sets: Arc::new(sets),
        validation,
        unreadable,
    })
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("scalar")[0]
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// Starts a new run in `run_dir` (which must not hold a checkpoint yet; use [`resume`]).
pub fn train(config: TrainConfig, run_dir: &Path, progress: Progress) -> Result<TrainSummary> {
    if checkpoint::exists(run_dir) {
        return Err(Error::checkpoint(
            run_dir.join(checkpoint::CHECKPOINT_DIR),
            "this run folder already holds a checkpoint; continue it with `fer-train train \
             --resume` (trainer::train::resume) or choose a new folder",
        ));
    }
    let backend = config.backend;
    crate::with_backend!(backend, |AD, device| run::<AD>(
        config, run_dir, progress, None, device
    ))
}

/// Continues the run in `run_dir` from its checkpoint. With `steps`, the run's total step
/// count is changed first (the cosine schedule follows the new total).
pub fn resume(run_dir: &Path, steps: Option<u64>, progress: Progress) -> Result<TrainSummary> {
    let ckpt = checkpoint::load(run_dir)?;
    let mut config = ckpt.config.clone();
    if let Some(steps) = steps {
        config.steps = steps;
    }
    if config.steps <= ckpt.state.step {
        return Err(Error::config(
            "steps",
            format!(
                "the checkpoint is at step {} of {}; pass a larger --steps to continue",
                ckpt.state.step, config.steps
            ),
        ));
    }
    let backend = config.backend;
    crate::with_backend!(backend, |AD, device| run::<AD>(
        config,
        run_dir,
        progress,
        Some(ckpt.clone()),
        device
    ))
}

struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `metrics.jsonl`, dropping lines past `keep_until` (steps a crashed run logged
    /// after its last checkpoint, which the resumed run will redo).
    fn open(run_dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let kept = match keep_until {
            Some(step) if path.exists() => {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
                text.lines()
                    .filter(|line| {
                        serde_json::from_str::<serde_json::Value>(line)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| match v_kind(line) {
                                Some("eval") => s <= step,
                                _ => s < step,
                            })
                    })
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            }
            _ => String::new(),
        };
        std::fs::write(&path, kept).map_err(|e| Error::io("writing", &path, e))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        Ok(MetricsLog { file, path })
    }

    fn write<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let line = serde_json::to_string(value).map_err(|cause| Error::Json {
            path: self.path.clone(),
            cause,
        })?;
        writeln!(self.file, "{line}").map_err(|e| Error::io("appending to", &self.path, e))
    }
}

fn v_kind(line: &str) -> Option<&'static str> {
    if line.contains("\"kind\":\"eval\"") {
        Some("eval")
    } else {
        None
    }
}

fn thresholds_for(config: &TrainConfig, dta: &DtaState) -> Vec<f32> {
    current_thresholds(&config.algorithm, dta)
}

fn run<B: AutodiffBackend>(
    mut config: TrainConfig,
    run_dir: &Path,
    progress: Progress,
    resume_from: Option<checkpoint::Checkpoint>,
    device: B::Device,
) -> Result<TrainSummary> {
    let started = Instant::now();
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io("creating", run_dir, e))?;
    let warm = match (&resume_from, &config.warm_start) {
        (None, Some(previous)) => Some(checkpoint::load(previous)?),
        _ => None,
    };
    let known_classes = resume_from
        .as_ref()
        .or(warm.as_ref())
        .map(|c| c.state.class_names.clone());
    let data = load_data(&config, known_classes.as_deref(), run_dir)?;
    config.model.num_classes = data.classes.len();
    config.validate()?;
    let classes = data.classes.clone();

    B::seed(&device, config.seed);
    let mut student: Model<B> = config.model.init(&device)?;
    let mut teacher: Model<B::InnerBackend> = student.valid();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.optimizer.weight_decay)
        .init::<B, Model<B>>();
    let mut dta = DtaState::new(classes.len());
    let mut start = 0;
    if let Some(ckpt) = resume_from.as_ref().or(warm.as_ref()) {
        if ckpt.config.model != config.model {
            return Err(Error::checkpoint(
                &ckpt.dir,
                format!(
                    "its architecture {:?} differs from the configured {:?}",
                    ckpt.config.model, config.model
                ),
            ));
        }
        student = ckpt.student::<B>(&device)?;
        teacher = ckpt.model::<B::InnerBackend>(&device)?;
        dta = ckpt.state.dta.clone();
    }
    if let Some(ckpt) = &resume_from {
        let path = ckpt.optimizer_path();
        let record = Recorder::new()
            .load(path.clone(), &device)
            .map_err(|e| Error::checkpoint(path.with_extension("mpk"), e.to_string()))?;
        optim = optim.load_record(record);
        start = ckpt.state.step;
    }
    write_json(&run_dir.join("config.json"), &config)?;

    let unlabeled_batch = if data.sets.unlabeled.is_empty() {
        0
    } else {
        config.unlabeled_batch()
    };
    let epoch = if unlabeled_batch > 0 {
        data.sets.unlabeled.len().div_ceil(unlabeled_batch)
    } else {
        data.sets.labeled.len().div_ceil(config.labeled_batch)
    }
    .max(1) as u64;
    let eval_every = if config.eval_every > 0 {
        config.eval_every
    } else {
        epoch
    };
    let plan = BatchPlan {
        seed: config.seed,
        labeled_batch: config.labeled_batch,
        unlabeled_batch,
    };
    let mut loader = BatchLoader::spawn(
        data.sets.clone(),
        config.preprocessing.clone(),
        plan,
        start,
        config.steps,
        config.workers,
    );
    let mut log = MetricsLog::open(run_dir, resume_from.as_ref().map(|c| c.state.step))?;
    let bar = match progress {
        Progress::Bar => {
            let bar = indicatif::ProgressBar::new(config.steps);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_position(start);
            bar
        }
        Progress::Hidden => indicatif::ProgressBar::hidden(),
    };

    let shape = [
        config.model.input_channels,
        config.model.input_height,
        config.model.input_width,
    ];
    let c = classes.len();
    let alg = config.algorithm.clone();
    let mut last = None;
    let mut images = 0usize;
    let mut last_eval: Option<(EvalReport, EvalReport)> = None;
    let save = |step: u64,
                student: &Model<B>,
                teacher: &Model<B::InnerBackend>,
                optim_record,
                dta: &DtaState|
     -> Result<()> {
        let state = TrainState {
            step,
            dta: dta.clone(),
            class_names: classes.clone(),
        };
        let thresholds = Thresholds {
            class_names: classes.clone(),
            thresholds: thresholds_for(&config, dta),
            algorithm: config.algorithm.algorithm,
            step,
        };
        checkpoint::save(
            run_dir,
            &config,
            &state,
            &thresholds,
            SaveParts {
                student,
                teacher,
                optimizer: optim_record,
            },
        )?;
        Ok(())
    };
    let evaluate_both = |student: &Model<B>, teacher: &Model<B::InnerBackend>| {
        data.validation.as_ref().map(|(inputs, labels)| {
            (
                evaluate(&student.valid(), inputs, labels, &classes, shape, &device),
                evaluate(teacher, inputs, labels, &classes, shape, &device),
            )
        })
    };

    let steps_before = start;
    while let Some(batch) = loader.next_batch() {
        let batch = batch?;
        let step = batch.step;
        let lr = config.optimizer.learning_rate_at(step, config.steps);
        let nl = batch.labels.len();
        let nu = batch.hidden.len();
        let x_l = Tensor::<B, 4>::from_data(
            TensorData::new(batch.labeled, [nl, shape[0], shape[1], shape[2]]),
            &device,
        );
        let mut sup_target = vec![0.0f32; nl * c];
        for (i, &label) in batch.labels.iter().enumerate() {
            sup_target[i * c + label] = 1.0 / nl as f32;
        }
        let thresholds = thresholds_for(&config, &dta);
        let mut model_rng = step_rng(config.seed, step, streams::MODEL);
        let mut metrics = StepMetrics {
            kind: "step".into(),
            step,
            lr,
            loss: 0.0,
            supervised: 0.0,
            pseudo: 0.0,
            negative: 0.0,
            mask_rate: 0.0,
            pseudo_accuracy: None,
            thresholds: thresholds.clone(),
            top_per_class: vec![0; c],
            accepted_per_class: vec![0; c],
            with_negatives: 0,
        };
        let loss = if nu > 0 {
            let weak = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(batch.weak, [nu, shape[0], shape[1], shape[2]]),
                &device,
            );
            let probs = host(softmax(teacher.forward(weak), 1));
            let targets = select_targets(&probs, &thresholds, alg.algorithm.snl(), alg.t_neg);
            if alg.algorithm.dynamic() {
                dta.update(&probs, alg.dta_momentum);
            }
            let mut pseudo_target = vec![0.0f32; nu * c];
            let weights = targets.pseudo_weights();
            let (mut known, mut correct) = (0u32, 0u32);
            for i in 0..nu {
                let top = targets.top[i];
                metrics.top_per_class[top] += 1;
                if targets.accepted[i] {
                    pseudo_target[i * c + top] = weights[i];
                    metrics.accepted_per_class[top] += 1;
                    if let Some(truth) = batch.hidden[i] {
                        known += 1;
                        correct += u32::from(truth == top);
                    }
                }
                metrics.with_negatives += u32::from(targets.negative_counts[i] > 0);
            }
            metrics.mask_rate = targets.accepted_count() as f64 / nu as f64;
            metrics.pseudo_accuracy = (known > 0).then(|| correct as f64 / known as f64);
            let x_u = Tensor::<B, 4>::from_data(
                TensorData::new(batch.strong, [nu, shape[0], shape[1], shape[2]]),
                &device,
            );
            let logits = student.forward_train(Tensor::cat(vec![x_l, x_u], 0), &mut model_rng);
            let logits_l = logits.clone().slice([0..nl, 0..c]);
            let logits_u = logits.slice([nl..nl + nu, 0..c]);
            let sup = -(log_softmax(logits_l, 1)
                * Tensor::from_data(TensorData::new(sup_target, [nl, c]), &device))
            .sum();
            let log_q = log_softmax(logits_u, 1);
            let pseudo = -(log_q.clone()
                * Tensor::from_data(TensorData::new(pseudo_target, [nu, c]), &device))
            .sum();
            let mut loss = sup.clone() + pseudo.clone().mul_scalar(alg.lambda_u);
            metrics.supervised = scalar(sup);
            metrics.pseudo = scalar(pseudo);
            if alg.algorithm.snl() {
                let one_minus_q = log_q.exp().neg().add_scalar(1.0).clamp_min(1e-6);
                let negative = -(one_minus_q.log()
                    * Tensor::from_data(
                        TensorData::new(targets.negative_weights, [nu, c]),
                        &device,
                    ))
                .sum();
                metrics.negative = scalar(negative.clone());
                loss = loss + negative.mul_scalar(alg.lambda_n);
            }
            loss
        } else {
            let logits = student.forward_train(x_l, &mut model_rng);
            let sup = -(log_softmax(logits, 1)
                * Tensor::from_data(TensorData::new(sup_target, [nl, c]), &device))
            .sum();
            metrics.supervised = scalar(sup.clone());
            sup
        };
        metrics.loss = scalar(loss.clone());
        if !metrics.loss.is_finite() {
            return Err(Error::config(
                "optimizer.learning_rate",
                format!(
                    "the loss became {} at step {step}; lower the learning rate",
                    metrics.loss
                ),
            ));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &student);
        student = optim.step(lr, student, grads);
        teacher = ema_update(
            teacher,
            &student.valid(),
            ema_momentum(step, alg.ema_momentum),
        );
        images += nl + nu;
        log.write(&metrics)?;
        bar.set_message(format!(
            "loss {:.3} (sup {:.3} pl {:.3} neg {:.3}) mask {:.0}% pl-acc {}",
            metrics.loss,
            metrics.supervised,
            metrics.pseudo,
            metrics.negative,
            100.0 * metrics.mask_rate,
            metrics
                .pseudo_accuracy
                .map_or("-".to_string(), |a| format!("{:.0}%", 100.0 * a))
        ));
        bar.inc(1);
        let done = step + 1;
        let eval_due = done.is_multiple_of(eval_every) || done == config.steps;
        if eval_due && let Some((s, t)) = evaluate_both(&student, &teacher) {
            log.write(&EvalMetrics {
                kind: "eval".into(),
                step: done,
                student: s.clone(),
                teacher: t.clone(),
                thresholds: thresholds_for(&config, &dta),
            })?;
            bar.println(format!(
                "step {done}: student {:.2}% teacher {:.2}% (macro-F1 {:.3})",
                100.0 * s.accuracy,
                100.0 * t.accuracy,
                t.macro_f1
            ));
            last_eval = Some((s, t));
        }
        let checkpoint_due =
            config.checkpoint_every > 0 && done.is_multiple_of(config.checkpoint_every);
        if checkpoint_due || done == config.steps {
            save(done, &student, &teacher, optim.to_record(), &dta)?;
        }
        last = Some(metrics);
    }
    bar.finish_and_clear();
    drop(loader);
    let steps_this_run = config.steps - steps_before;
    let seconds = started.elapsed().as_secs_f64();
    crate::plots::plot_run(run_dir, &classes)?;
    let (student_report, teacher_report) = match last_eval {
        Some((s, t)) => (Some(s), Some(t)),
        None => (None, None),
    };
    let summary = TrainSummary {
        run_dir: run_dir.to_path_buf(),
        steps: config.steps,
        steps_this_run,
        class_names: classes.clone(),
        thresholds: thresholds_for(&config, &dta),
        student: student_report,
        teacher: teacher_report,
        labeled: data.sets.labeled.len(),
        unlabeled: data.sets.unlabeled.len(),
        unreadable: data.unreadable.len(),
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
        last,
    };
    write_json(&run_dir.join("summary.json"), &summary)?;
    if !data.unreadable.is_empty() {
        let path = run_dir.join("unreadable.txt");
        let text: String = data
            .unreadable
            .iter()
            .map(|(p, why)| format!("{}\t{why}\n", p.display()))
            .collect();
        std::fs::write(&path, text).map_err(|e| Error::io("writing", &path, e))?;
    }
    Ok(summary)
}

/// The class names a labeled source defines (for callers that build a config first).
pub fn classes_of(source: &LabeledSource) -> Result<Vec<String>> {
    Ok(data::list_labeled(source, None)?.classes)
}
