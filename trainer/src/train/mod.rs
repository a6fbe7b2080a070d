//! The training loop: supervised, FixMatch-style fixed threshold, DTA and DTA + SNL.
//!
//! * [`config`]: [`TrainConfig`] and its parts, saved as `config.json` with every checkpoint;
//! * [`step`]: one step's loss and metrics ([`step::train_step`]);
//! * [`replica`]: the state a step changes and its update ([`replica::Replica::step`]);
//! * [`parallel`]: data-parallel replicas on several devices (`--devices`);
//! * [`metrics`]: the `metrics.jsonl` log.
//!
//! One step: a labeled batch (class-balanced or natural, FER-augmented) and `unlabeled_ratio`
//! times as many unlabeled images, each as a weak and a strong view, built ahead by
//! background threads; [`step::train_step`]; an AdamW step at the scheduled rate; the teacher
//! becomes the EMA of the student. Before every evaluation and checkpoint the deployed
//! teacher's BatchNorm statistics are re-estimated on weak views
//! ([`crate::algorithm::teacher`]).
//!
//! Every batch is a function of `(seed, step)` and every piece of state is checkpointed
//! (weights, teacher, AdamW moments, DTA state, step), so [`resume`] continues exactly where an
//! uninterrupted run would be.

pub mod config;
pub mod metrics;
pub mod parallel;
pub mod replica;
pub mod step;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, Optimizer};
use burn::record::Recorder as _;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use config::{DataConfig, OptimizerConfig, TrainConfig, preprocessing_for};
pub use metrics::{EvalMetrics, MetricsLine, StepMetrics};

use crate::algorithm::DtaState;
use crate::algorithm::teacher::recalibrate_batch_norm;
use crate::checkpoint::{self, Recorder, SaveParts, Thresholds, TrainState};
use crate::data::loader::{BatchLoader, BatchPlan, TrainSets, weak_views};
use crate::data::{self, Sample};
use crate::error::{Error, Result, write_json};
use crate::eval::{EvalReport, evaluate};
use crate::model::Model;
use metrics::{MetricsLog, PseudoLabelSummary};
use parallel::Peers;
use replica::{Link, Replica};

/// How training reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar with the live loss terms on a terminal; a log line every
    /// [`LOG_EVERY`] on stderr otherwise (a pipe, a log file, a service).
    Bar,
    /// Nothing (library use, tests).
    Hidden,
}

/// How often a non-terminal stderr gets a progress line.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a finished run reports (`summary.json`).
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
    /// Final evaluation of the deployed teacher (with validation data).
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
    /// Pseudo- and complementary-label statistics over the second half of the run.
    #[serde(default)]
    pub pseudo_labels: Option<PseudoLabelSummary>,
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

/// Starts a new run in `run_dir` (which must not hold a checkpoint yet; use [`resume`]).
pub fn train(config: TrainConfig, run_dir: &Path, progress: Progress) -> Result<TrainSummary> {
    if checkpoint::exists(run_dir) {
        return Err(Error::checkpoint(
            run_dir.join(checkpoint::CHECKPOINT_DIR),
            "this run folder already holds a checkpoint; continue it with `fer-train train \
             --resume` (trainer::train::resume) or choose a new folder",
        ));
    }
    let (backend, count) = (config.backend, config.devices);
    crate::with_backend!(backend, count, |AD, devices| run::<AD>(
        config, run_dir, progress, None, devices
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
    let (backend, count) = (config.backend, config.devices);
    crate::with_backend!(backend, count, |AD, devices| run::<AD>(
        config,
        run_dir,
        progress,
        Some(ckpt.clone()),
        devices
    ))
}

/// The teacher to evaluate and deploy at `step`: a copy with BatchNorm statistics
/// re-estimated on weak views of the training images.
fn deployed_teacher<B: AutodiffBackend>(
    config: &TrainConfig,
    sets: &TrainSets,
    teacher: &Model<B::InnerBackend>,
    step: u64,
    device: &B::Device,
) -> Result<Model<B::InnerBackend>> {
    if config.bn_recalibration_batches == 0 {
        return Ok(teacher.clone());
    }
    let m = &config.model;
    let count = config.labeled_batch * (1 + config.unlabeled_ratio);
    let batches = (0..config.bn_recalibration_batches as u64)
        .map(|k| {
            let data = weak_views(sets, &config.preprocessing, config.seed, step, k, count)?;
            Ok(Tensor::<B, 4>::from_data(
                TensorData::new(
                    data,
                    [count, m.input_channels, m.input_height, m.input_width],
                ),
                device,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(recalibrate_batch_norm::<B>(teacher, batches))
}

/// Progress on a terminal (a bar) or in a log (a line every [`LOG_EVERY`]).
struct Reporter {
    bar: indicatif::ProgressBar,
    lines: bool,
    last_line: Instant,
    started: Instant,
    start_step: u64,
    total: u64,
}

impl Reporter {
    fn new(progress: Progress, start: u64, total: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if progress == Progress::Bar && terminal {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_position(start);
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Reporter {
            bar,
            lines: progress == Progress::Bar && !terminal,
            last_line: Instant::now(),
            started: Instant::now(),
            start_step: start,
            total,
        }
    }

    fn step(&mut self, m: &StepMetrics) {
        let message = format!(
            "loss {:.3} (sup {:.3} pl {:.3} neg {:.3}) mask {:.0}% pl-acc {}",
            m.loss,
            m.supervised,
            m.pseudo,
            m.negative,
            100.0 * m.mask_rate,
            m.pseudo_accuracy
                .map_or("-".to_string(), |a| format!("{:.0}%", 100.0 * a))
        );
        if self.lines && self.last_line.elapsed() >= LOG_EVERY {
            self.last_line = Instant::now();
            let done = m.step + 1 - self.start_step;
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let left = (self.total - m.step - 1) as f64 / rate.max(1e-9);
            eprintln!(
                "step {}/{} ({rate:.1} steps/s, {left:.0} s left): {message}",
                m.step + 1,
                self.total
            );
        }
        self.bar.set_message(message);
        self.bar.inc(1);
    }

    fn println(&self, line: String) {
        if self.lines {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

fn run<B: AutodiffBackend>(
    mut config: TrainConfig,
    run_dir: &Path,
    progress: Progress,
    resume_from: Option<checkpoint::Checkpoint>,
    devices: Vec<B::Device>,
) -> Result<TrainSummary> {
    let started = Instant::now();
    let device = devices[0].clone();
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
        teacher = ckpt.teacher::<B::InnerBackend>(&device)?;
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

    // The loader builds every device's shard of the step at once.
    let unlabeled_batch = if data.sets.unlabeled.is_empty() {
        0
    } else {
        config.unlabeled_batch() * config.devices
    };
    let epoch = if unlabeled_batch > 0 {
        data.sets.unlabeled.len().div_ceil(unlabeled_batch)
    } else {
        data.sets
            .labeled
            .len()
            .div_ceil(config.labeled_batch * config.devices)
    }
    .max(1) as u64;
    let eval_every = if config.eval_every > 0 {
        config.eval_every
    } else {
        epoch
    };
    let plan = BatchPlan {
        seed: config.seed,
        labeled_batch: config.labeled_batch * config.devices,
        unlabeled_batch,
        sampling: config.data.sampling,
        augmentation: config.data.labeled_augmentation,
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
    let mut reporter = Reporter::new(progress, start, config.steps);

    let m = &config.model;
    let shape = [m.input_channels, m.input_height, m.input_width];
    let mut replica = Replica {
        student,
        teacher,
        optim,
        dta,
        link: Link::Solo,
        device: device.clone(),
    };
    let mut peers = Peers::start(&mut replica, &config, &devices)?;
    let thresholds_at = |dta: &DtaState, done: u64| {
        config
            .algorithm
            .thresholds(dta, done as f64 / config.steps.max(1) as f64)
    };
    let mut last = None;
    let mut images = 0usize;
    let mut last_eval: Option<(EvalReport, EvalReport)> = None;

    let steps_before = start;
    while let Some(batch) = loader.next_batch() {
        let batch = batch?;
        let step = batch.step;
        let nl_nu = batch.labels.len() + batch.hidden.len();
        let metrics = peers.step(&mut replica, &config, batch)?;
        step::check_finite(&metrics)?;
        images += nl_nu;
        log.write(&MetricsLine::Step(metrics.clone()))?;
        reporter.step(&metrics);
        let done = step + 1;
        let eval_due =
            data.validation.is_some() && (done.is_multiple_of(eval_every) || done == config.steps);
        let checkpoint_due = (config.checkpoint_every > 0
            && done.is_multiple_of(config.checkpoint_every))
            || done == config.steps;
        if eval_due || checkpoint_due {
            let Replica {
                student,
                teacher,
                optim,
                dta,
                ..
            } = &replica;
            let deployed = deployed_teacher::<B>(&config, &data.sets, teacher, done, &device)?;
            if eval_due && let Some((inputs, labels)) = &data.validation {
                let s = evaluate(&student.valid(), inputs, labels, &classes, shape, &device);
                let t = evaluate(&deployed, inputs, labels, &classes, shape, &device);
                log.write(&MetricsLine::Eval(EvalMetrics {
                    step: done,
                    student: s.clone(),
                    teacher: t.clone(),
                    thresholds: thresholds_at(dta, done),
                }))?;
                reporter.println(format!(
                    "step {done}: student {:.2}% teacher {:.2}% (macro-F1 {:.3})",
                    100.0 * s.accuracy,
                    100.0 * t.accuracy,
                    t.macro_f1
                ));
                last_eval = Some((s, t));
            }
            if checkpoint_due {
                let state = TrainState {
                    step: done,
                    dta: dta.clone(),
                    class_names: classes.clone(),
                };
                let thresholds = Thresholds {
                    class_names: classes.clone(),
                    thresholds: thresholds_at(dta, done),
                    algorithm: config.algorithm.algorithm,
                    step: done,
                };
                checkpoint::save(
                    run_dir,
                    &config,
                    &state,
                    &thresholds,
                    SaveParts {
                        student,
                        teacher,
                        deployed: &deployed,
                        optimizer: optim.to_record(),
                    },
                )?;
            }
        }
        last = Some(metrics);
    }
    reporter.bar.finish_and_clear();
    drop(loader);
    peers.finish(&replica)?;
    let dta = replica.dta;
    let steps_this_run = config.steps - steps_before;
    let seconds = started.elapsed().as_secs_f64();
    crate::plots::plot_run(run_dir, &classes)?;
    let (step_lines, _) = metrics::read_metrics(&run_dir.join("metrics.jsonl"))?;
    let (student_report, teacher_report) = match last_eval {
        Some((s, t)) => (Some(s), Some(t)),
        None => (None, None),
    };
    let summary = TrainSummary {
        run_dir: run_dir.to_path_buf(),
        steps: config.steps,
        steps_this_run,
        class_names: classes.clone(),
        thresholds: thresholds_at(&dta, config.steps),
        student: student_report,
        teacher: teacher_report,
        labeled: data.sets.labeled.len(),
        unlabeled: data.sets.unlabeled.len(),
        unreadable: data.unreadable.len(),
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
        pseudo_labels: metrics::summarize(&step_lines, config.steps / 2),
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
pub fn classes_of(source: &crate::data::LabeledSource) -> Result<Vec<String>> {
    Ok(data::list_labeled(source, None)?.classes)
}
