//! `fer-train`: train, evaluate and benchmark the expression classifier (a thin CLI over the
//! `trainer` library).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use firmware_config::exit_code::{self, Program};
use trainer::algorithm::{Algorithm, ThresholdRule};
use trainer::backend::BackendKind;
use trainer::data::loader::{LabeledAugmentation, Sampling};
use trainer::data::{LabelBudget, LabeledSource};
use trainer::model::{Backbone, ModelConfig};
use trainer::train::{Progress, TrainConfig, preprocessing_for};

/// Semi-supervised facial-expression training (DTA + SNL with an EMA teacher) on burn.
///
/// A run folder receives config.json, labeled.txt (the labeled images chosen by the budget),
/// metrics.jsonl (one line per step and per evaluation), checkpoint/ (weights, teacher,
/// optimiser, DTA state, thresholds.json), summary.json and PNG plots.
#[derive(Parser, Debug)]
#[command(name = "fer-train", version, after_help = exit_code::help(Program::Train))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (or continue one with --resume).
    ///
    /// Example: fer-train train --data ../shared/data/fer2013/train --val
    /// ../shared/data/fer2013/val --labels-per-class 250 --run runs/dta-snl
    Train(TrainArgs),
    /// Evaluate a run's model on labeled data: accuracy, per-class recall, macro-F1 and the
    /// confusion matrix.
    Eval(EvalArgs),
    /// Measure training and inference images/s of each backbone (and of the same network in
    /// PyTorch when python3 can import torch).
    Bench(BenchArgs),
    /// Export a run's model to ONNX: fp32, and int8 (integer QLinearConv by default, or QDQ)
    /// calibrated on real images, with manifests, self-test vectors and a report (accuracy,
    /// sizes, ranges, latency).
    ///
    /// Example: fer-train export --checkpoint runs/dta-snl --out runs/dta-snl/export
    /// --calibration ../shared/data/fer2013/train --eval ../shared/data/fer2013/val
    Export(trainer::export::cli::ExportArgs),
    /// Time exported files in tract and onnxruntime (batch 1, one thread), with a peer model.
    ///
    /// Example: fer-train bench-export --dir runs/dta-snl/export --peer
    /// ../shared/models/peer/fer_mini_xception_nhwc.onnx
    BenchExport(trainer::export::cli::BenchArgs),
    /// Compare finished runs side by side: a Markdown table (algorithm, label budget, LAE,
    /// RRD, steps, validation accuracy and macro-F1 of the teacher, student accuracy, time,
    /// images/s), also written with JSON and a plot of every run's accuracy over steps.
    ///
    /// Example: fer-train compare runs/fer2013/* --out runs/fer2013/compare
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Run folder (created; holds the checkpoint, metrics and plots).
    #[arg(long)]
    run: PathBuf,
    /// Continue the run in --run from its checkpoint, bit-for-bit as if never interrupted
    /// (optionally with a new --steps total); the run's saved config is used and the other
    /// flags are ignored.
    #[arg(long)]
    resume: bool,
    /// Start from a base TrainConfig JSON (e.g. a run's config.json); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Labeled data: an ImageFolder (root/<class>/*.jpg|png) or a FER2013 CSV.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation data (ImageFolder or CSV) with the same classes.
    #[arg(long)]
    val: Option<PathBuf>,
    /// `Usage` rows of a FER2013 CSV used for --data (for --val: PublicTest).
    #[arg(long, default_value = "Training")]
    csv_usage: String,
    /// Extra unlabeled image folder, searched recursively (repeatable).
    #[arg(long)]
    unlabeled: Vec<PathBuf>,
    /// Folder of field-log segments collected from boards (repeatable).
    #[arg(long)]
    field: Vec<PathBuf>,
    /// Use this many labeled images per class; the rest of --data becomes unlabeled.
    #[arg(long, conflicts_with = "labeled_fraction")]
    labels_per_class: Option<usize>,
    /// Use this fraction of every class as labeled; the rest becomes unlabeled.
    #[arg(long)]
    labeled_fraction: Option<f64>,
    /// Fail on an unreadable image instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
    /// Use at most this many validation images (spread over the list).
    #[arg(long)]
    max_val: Option<usize>,
    /// supervised | fixed (FixMatch, 0.95) | dta | dta-snl.
    #[arg(long)]
    algorithm: Option<Algorithm>,
    /// How DTA computes its thresholds: freematch (bias-corrected s * m_c / max m) or quantile
    /// (accept the most confident share of each predicted class, rising over the run).
    #[arg(long)]
    threshold_rule: Option<ThresholdRule>,
    /// Pseudo-label loss only at or above the thresholds (no soft weights below them).
    #[arg(long)]
    hard_thresholds: bool,
    /// Quantile rule: share of each predicted class accepted at the start.
    #[arg(long)]
    quantile_start: Option<f64>,
    /// Quantile rule: share of each predicted class accepted at the end.
    #[arg(long)]
    quantile_end: Option<f64>,
    /// SNL: the student must still give a complementary class at least this probability.
    #[arg(long)]
    neg_student_min: Option<f64>,
    /// How labeled samples are drawn: balanced (every class equally often) or natural.
    #[arg(long)]
    sampling: Option<Sampling>,
    /// Augmentation of labeled samples: fer (flip, rotation, scale, shift, random erasing) or
    /// weak (flip and a small shift).
    #[arg(long)]
    labeled_augmentation: Option<LabeledAugmentation>,
    /// Batches of weak views over which the deployed teacher's BatchNorm statistics are
    /// re-estimated before each evaluation and checkpoint (0: off).
    #[arg(long)]
    bn_recalibration: Option<usize>,
    /// resnet | mobile.
    #[arg(long)]
    backbone: Option<Backbone>,
    /// Base channel width of the backbone.
    #[arg(long)]
    width: Option<usize>,
    /// Blocks per stage, comma-separated (e.g. 1,1,1).
    #[arg(long, value_delimiter = ',')]
    blocks: Option<Vec<usize>>,
    /// Square input size in pixels (48, 64, 112 ...).
    #[arg(long)]
    input_size: Option<usize>,
    /// Stride of the stem convolution: 2 (default) or 1 (full resolution for stage 0).
    #[arg(long)]
    stem_stride: Option<usize>,
    /// Input channels: 1 (grayscale) or 3 (RGB).
    #[arg(long)]
    channels: Option<usize>,
    /// Switch local attention enhancement off.
    #[arg(long)]
    no_lae: bool,
    /// Switch random region dropout off.
    #[arg(long)]
    no_rrd: bool,
    /// Probability of dropping a region per sample.
    #[arg(long)]
    rrd_prob: Option<f64>,
    /// Region grid size K (K x K regions).
    #[arg(long)]
    regions: Option<usize>,
    /// Total optimisation steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Labeled images per step (per device with --devices).
    #[arg(long)]
    batch: Option<usize>,
    /// Unlabeled images per step as a multiple of --batch.
    #[arg(long)]
    unlabeled_ratio: Option<usize>,
    /// Peak learning rate (AdamW, linear warm-up then cosine decay).
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay.
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Weight of the pseudo-label loss.
    #[arg(long)]
    lambda_u: Option<f64>,
    /// Weight of the SNL loss.
    #[arg(long)]
    lambda_n: Option<f64>,
    /// Lower clip of the dynamic thresholds.
    #[arg(long)]
    t_min: Option<f64>,
    /// Upper clip of the dynamic thresholds.
    #[arg(long)]
    t_max: Option<f64>,
    /// SNL: teacher probability under which a class becomes a complementary label.
    #[arg(long)]
    t_neg: Option<f64>,
    /// Threshold of --algorithm fixed.
    #[arg(long)]
    fixed_threshold: Option<f64>,
    /// EMA momentum of the teacher.
    #[arg(long)]
    ema: Option<f64>,
    /// EMA momentum of the DTA state.
    #[arg(long)]
    dta_momentum: Option<f64>,
    /// Random seed (weights, label choice, sampling, augmentation).
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate every N steps (0: once per epoch).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Background decoding/augmentation threads.
    #[arg(long)]
    workers: Option<usize>,
    /// flex (CPU) | cuda (build with --features cuda) | tch (build with --features tch).
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Data-parallel training on this many devices (CUDA: GPUs 0..N), one replica each: every
    /// step takes N times --batch and the replicas average their gradients with burn's
    /// collective all-reduce. On the CPU backends the replicas share the CPU (for tests).
    #[arg(long, value_name = "N")]
    devices: Option<usize>,
    /// Start from the weights, teacher and DTA state of an earlier run folder.
    #[arg(long)]
    warm_start: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// Finished run folders (trained with --val).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Folder for compare.md, compare.json and compare_accuracy.png.
    #[arg(long, default_value = "compare")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Run folder (or its checkpoint folder).
    #[arg(long)]
    run: PathBuf,
    /// Labeled data (ImageFolder or FER2013 CSV) with the run's classes.
    #[arg(long)]
    data: PathBuf,
    /// `Usage` rows of a FER2013 CSV.
    #[arg(long, default_value = "PublicTest")]
    csv_usage: String,
    /// Evaluate the student instead of the deployed EMA teacher.
    #[arg(long)]
    student: bool,
    /// Fail on an unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// resnet, mobile or all.
    #[arg(long, default_value = "all")]
    backbone: String,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Square input size.
    #[arg(long, default_value_t = 64)]
    input_size: usize,
    /// Input channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// flex | cuda | tch.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// The PyTorch reference script (skipped when python3 or torch is missing).
    #[arg(long, default_value = "trainer/bench/torch_reference.py")]
    torch_script: PathBuf,
    /// Do not run the PyTorch reference.
    #[arg(long)]
    no_torch: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn base_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => TrainConfig::default(),
    };
    let model = &mut config.model;
    if let Some(b) = args.backbone {
        let defaults = ModelConfig::for_backbone(b);
        model.backbone = b;
        model.width = defaults.width;
        model.blocks = defaults.blocks;
    }
    macro_rules! set {
        ($($field:expr => $value:expr),* $(,)?) => {$(if let Some(v) = $value.clone() { $field = v; })*};
    }
    set!(
        model.width => args.width,
        model.blocks => args.blocks,
        model.stem_stride => args.stem_stride,
        model.input_channels => args.channels,
        model.rrd_prob => args.rrd_prob,
        model.regions => args.regions,
    );
    if let Some(size) = args.input_size {
        model.input_width = size;
        model.input_height = size;
    }
    if args.no_lae {
        model.lae = false;
    }
    if args.no_rrd {
        model.rrd = false;
    }
    config.preprocessing = preprocessing_for(&config.model);
    let alg = &mut config.algorithm;
    set!(
        alg.algorithm => args.algorithm,
        alg.threshold_rule => args.threshold_rule,
        alg.quantile_start => args.quantile_start,
        alg.quantile_end => args.quantile_end,
        alg.neg_student_min => args.neg_student_min,
        alg.lambda_u => args.lambda_u,
        alg.lambda_n => args.lambda_n,
        alg.t_min => args.t_min,
        alg.t_max => args.t_max,
        alg.t_neg => args.t_neg,
        alg.fixed_threshold => args.fixed_threshold,
        alg.ema_momentum => args.ema,
        alg.dta_momentum => args.dta_momentum,
        config.optimizer.learning_rate => args.lr,
        config.optimizer.warmup_steps => args.warmup,
        config.optimizer.weight_decay => args.weight_decay,
        config.seed => args.seed,
        config.steps => args.steps,
        config.labeled_batch => args.batch,
        config.unlabeled_ratio => args.unlabeled_ratio,
        config.eval_every => args.eval_every,
        config.checkpoint_every => args.checkpoint_every,
        config.workers => args.workers,
        config.backend => args.backend,
        config.devices => args.devices,
        config.data.max_validation => args.max_val,
        config.data.sampling => args.sampling,
        config.data.labeled_augmentation => args.labeled_augmentation,
        config.bn_recalibration_batches => args.bn_recalibration,
    );
    if args.hard_thresholds {
        config.algorithm.soft_weights = false;
    }
    if let Some(data) = &args.data {
        config.data.labeled = LabeledSource::from_path(data, &args.csv_usage);
    } else if args.config.is_none() {
        anyhow::bail!(trainer::Error::config(
            "--data",
            "give the labeled data (an ImageFolder or a FER2013 CSV) or a --config file"
        ));
    }
    if let Some(val) = &args.val {
        config.data.validation = Some(LabeledSource::from_path(val, "PublicTest"));
    }
    config.data.unlabeled.extend(args.unlabeled.iter().cloned());
    config.data.field.extend(args.field.iter().cloned());
    if let Some(n) = args.labels_per_class {
        config.data.budget = LabelBudget::PerClass(n);
    }
    if let Some(f) = args.labeled_fraction {
        config.data.budget = LabelBudget::Fraction(f);
    }
    config.data.strict |= args.strict;
    if args.warm_start.is_some() {
        config.warm_start = args.warm_start.clone();
    }
    Ok(config)
}

fn print_summary(summary: &trainer::train::TrainSummary) {
    println!(
        "trained {} steps ({} this run) in {:.1}s, {:.1} images/s; {} labeled, {} unlabeled, {} unreadable skipped",
        summary.steps,
        summary.steps_this_run,
        summary.seconds,
        summary.images_per_second,
        summary.labeled,
        summary.unlabeled,
        summary.unreadable
    );
    let thresholds: Vec<String> = summary
        .class_names
        .iter()
        .zip(&summary.thresholds)
        .map(|(c, t)| format!("{c} {t:.3}"))
        .collect();
    println!("thresholds: {}", thresholds.join(", "));
    if let Some(report) = &summary.teacher {
        println!("teacher (deployed) on validation:\n{}", report.table());
    }
    if let Some(report) = &summary.student {
        println!(
            "student on validation: accuracy {:.2}%, macro-F1 {:.4}",
            100.0 * report.accuracy,
            report.macro_f1
        );
    }
    println!("run folder: {}", summary.run_dir.display());
}

fn cmd_train(args: TrainArgs) -> anyhow::Result<()> {
    let progress = if args.quiet {
        Progress::Hidden
    } else {
        Progress::Bar
    };
    let summary = if args.resume {
        trainer::train::resume(&args.run, args.steps, progress)?
    } else {
        trainer::train::train(base_config(&args)?, &args.run, progress)?
    };
    print_summary(&summary);
    Ok(())
}

fn cmd_eval(args: EvalArgs) -> anyhow::Result<()> {
    let ckpt = trainer::checkpoint::load(&args.run)?;
    let source = LabeledSource::from_path(&args.data, &args.csv_usage);
    let set = trainer::data::list_labeled(&source, Some(&ckpt.state.class_names))?;
    let store = trainer::data::decode_all(&set.samples, 2, args.strict)?;
    if !store.unreadable.is_empty() {
        eprintln!(
            "skipped {} unreadable images, e.g. {}",
            store.unreadable.len(),
            store.unreadable[0].0.display()
        );
    }
    let inputs = trainer::data::preprocess_all(&store, &ckpt.config.preprocessing)?;
    let labels: Vec<usize> = store.labels.iter().map(|l| l.expect("labeled")).collect();
    let m = &ckpt.config.model;
    let shape = [m.input_channels, m.input_height, m.input_width];
    let device = burn_flex::FlexDevice;
    let model = if args.student {
        ckpt.student::<burn_flex::Flex>(&device)?
    } else {
        ckpt.model::<burn_flex::Flex>(&device)?
    };
    let report = trainer::eval::evaluate(
        &model,
        &inputs,
        &labels,
        &ckpt.state.class_names,
        shape,
        &device,
    );
    println!("{}", report.table());
    if let Some(path) = &args.json {
        trainer::error::write_json(path, &report)?;
    }
    Ok(())
}

fn cmd_bench(args: BenchArgs) -> anyhow::Result<()> {
    let backbones: Vec<Backbone> = match args.backbone.as_str() {
        "all" => vec![Backbone::Resnet, Backbone::Mobile],
        other => vec![other.parse::<Backbone>()?],
    };
    let mut results = Vec::new();
    for backbone in backbones {
        let config = ModelConfig {
            input_width: args.input_size,
            input_height: args.input_size,
            input_channels: args.channels,
            ..ModelConfig::for_backbone(backbone)
        };
        let runtime = format!("burn-{}", args.backend);
        let result = trainer::with_backend!(args.backend, |AD, device| {
            trainer::bench::bench_model::<AD>(&config, args.batch, args.iters, &runtime, &device)
        })?;
        println!(
            "{backbone:>6} {runtime:<12} params {:>8}  train {:>8.1} img/s  infer {:>8.1} img/s  (batch {}, {}x{}x{})",
            result.parameters,
            result.train_images_per_second,
            result.infer_images_per_second,
            args.batch,
            args.channels,
            args.input_size,
            args.input_size
        );
        results.push(serde_json::to_value(&result)?);
        if !args.no_torch {
            match trainer::bench::torch_reference(
                Path::new(&args.torch_script),
                &config,
                args.batch,
                args.iters,
                args.backend == BackendKind::Cuda,
            )? {
                trainer::bench::Reference::Measured(r) => {
                    println!(
                        "{backbone:>6} {:<12} params {:>8}  train {:>8.1} img/s  infer {:>8.1} img/s",
                        r.runtime,
                        r.parameters,
                        r.train_images_per_second,
                        r.infer_images_per_second
                    );
                    results.push(serde_json::to_value(&r)?);
                }
                trainer::bench::Reference::Skipped(why) => {
                    println!("{backbone:>6} pytorch      skipped: {why}");
                }
            }
        }
    }
    if let Some(path) = &args.json {
        trainer::error::write_json(path, &results)?;
    }
    Ok(())
}

fn cmd_compare(args: CompareArgs) -> anyhow::Result<()> {
    let rows = trainer::compare::compare(&args.runs, &args.out)?;
    print!("{}", trainer::compare::markdown(&rows));
    println!(
        "written: {} (compare.md, compare.json, compare_accuracy.png)",
        args.out.display()
    );
    Ok(())
}

/// The exit code of the one table ([`firmware_config::exit_code`]) for `err`.
fn code_for(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<trainer::Error>() {
        Some(trainer::Error::Backend { .. }) => exit_code::BACKEND_UNAVAILABLE,
        Some(
            trainer::Error::Config { .. }
            | trainer::Error::Dataset { .. }
            | trainer::Error::Checkpoint { .. }
            | trainer::Error::Image { .. }
            | trainer::Error::Segment { .. }
            | trainer::Error::Json { .. }
            | trainer::Error::Calibration(_),
        ) => exit_code::BAD_INPUT,
        _ => exit_code::FAILURE,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => cmd_train(args),
        Command::Eval(args) => cmd_eval(args),
        Command::Bench(args) => cmd_bench(args),
        Command::Export(args) => trainer::export::cli::main_export(&args).map_err(Into::into),
        Command::BenchExport(args) => trainer::export::cli::main_bench(&args).map_err(Into::into),
        Command::Compare(args) => cmd_compare(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(code_for(&err))
        }
    }
}
