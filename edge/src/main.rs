//! `fer-edge`: the board's command line (a thin layer over the `edge` library).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use edge::bench::BenchOptions;
use edge::bundle::{self, BoardRoot, BundleCommand, TRUSTED_KEY_FILE, VerifiedBundle};
use edge::capture::{CaptureThread, SourceSpec};
use edge::classify::{Classifier, manifest_and_model};
use edge::detect::{Detector, cascade::DEFAULT_CASCADE};
use edge::display::{Display, SnapshotFormat, SnapshotWriter};
use edge::margin::Framing;
use edge::pipeline::{Pipeline, stop_on_signals};
use firmware_config::PublicKey;
use firmware_config::config::{DetectorConfig, DeviceConfig};
use firmware_config::exit_code::{self, Program};

/// On-board facial-expression recognition: detect faces, classify expressions, log the faces
/// the model is unsure about for the next training round.
#[derive(Debug, Parser)]
#[command(name = "fer-edge", version, about, long_about, after_help = exit_code::help(Program::Edge))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DetectorChoice {
    /// UltraFace RFB-320 ONNX (needs --model / --detector-model).
    Ultraface,
    /// OpenCV LBP or Haar cascade XML (default: opencv-data's improved LBP frontal face).
    Cascade,
    /// No detector: the whole image is the face.
    None,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find faces in an image; prints them as JSON ({"faces": [{"face": {x, y, width, height},
    /// "score"}]}).
    Detect(DetectArgs),
    /// Classify the expressions of the faces in an image, or measure per-class accuracy on an
    /// ImageFolder (`DIR/<class>/*.png|jpg`, class folders named like the manifest's classes).
    Classify(ClassifyArgs),
    /// Run the pipeline: source -> detect -> classify -> track -> overlay -> field log.
    /// Prints JSON lines: progress every --report-every seconds and a final report (also on
    /// SIGINT/SIGTERM, after the field log is sealed).
    ///
    /// The models come from a verified bundle (--bundle), or, for development, from
    /// --manifest/--config files directly.
    Run(RunArgs),
    /// Measure per-stage and end-to-end latency on a photo at 320x240 and 640x480, one
    /// thread and all threads, fp32 and int8, and the same files in onnxruntime (python3 with
    /// onnxruntime and numpy; reported as skipped otherwise); then the whole pipeline on moving
    /// synthetic faces at each detection interval (--intervals). Prints JSON, or Markdown.
    Bench(BenchArgs),
    /// The board side of bundles: verify, init, activate (with self-test), rollback, status.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Measure the crop margin a detector needs so that the board cuts faces the way the
    /// training crops were framed: each face crop of IMAGES is placed in a camera-sized frame,
    /// the detector's box around it gives the margin, the median is printed (JSON). `fer
    /// bundle --margin-from` does the same and writes it into the bundled manifest.
    Margin(MarginArgs),
}

#[derive(Debug, Args)]
struct MarginArgs {
    /// Face crops in the training framing: a folder (searched recursively) or an image.
    images: PathBuf,
    /// Which detector.
    #[arg(long, value_enum, default_value = "ultraface")]
    detector: DetectorChoice,
    /// The detector file: UltraFace ONNX, or cascade XML.
    #[arg(long, env = "FER_DETECTOR_MODEL")]
    detector_model: Option<PathBuf>,
    /// Use at most this many crops, taken evenly across the sorted list.
    #[arg(long, default_value_t = 300)]
    limit: usize,
    /// The board camera's frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "320x240", value_parser = parse_size)]
    frame: (u32, u32),
}

#[derive(Debug, Args)]
struct DetectArgs {
    /// PNG or JPEG image.
    image: PathBuf,
    /// Which detector.
    #[arg(long, value_enum, default_value = "ultraface")]
    detector: DetectorChoice,
    /// The detector file: UltraFace ONNX, or cascade XML (default for cascades:
    /// /usr/share/opencv4/lbpcascades/lbpcascade_frontalface_improved.xml).
    #[arg(long, env = "FER_DETECTOR_MODEL")]
    model: Option<PathBuf>,
    /// Minimum UltraFace score.
    #[arg(long, default_value_t = 0.7)]
    score_threshold: f32,
    /// Ignore faces smaller than this many pixels.
    #[arg(long, default_value_t = 0)]
    min_face_size: u32,
}

#[derive(Debug, Args)]
struct ClassifyArgs {
    /// An image, or an ImageFolder.
    input: PathBuf,
    /// The model manifest (manifest.json, or manifest.bin in flash encoding).
    #[arg(long)]
    manifest: PathBuf,
    /// The ONNX model (default: the manifest's model_file beside the manifest).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Face detector (default: none, the whole image is the face: right for FER-style crops).
    #[arg(long, value_enum, default_value = "none")]
    detector: DetectorChoice,
    /// The detector file (UltraFace ONNX or cascade XML).
    #[arg(long, env = "FER_DETECTOR_MODEL")]
    detector_model: Option<PathBuf>,
    /// Take at most this many images per class of a folder (the first by name).
    #[arg(long)]
    per_class: Option<usize>,
    /// With a detector, place each face crop of a folder in a frame of this size
    /// (WIDTHxHEIGHT, the board camera's) before detecting, as `fer-edge margin` does: the
    /// accuracy the board gets on faces framed like the folder's.
    #[arg(long, value_parser = parse_size)]
    frame: Option<(u32, u32)>,
    /// Crop faces with this margin instead of the manifest's (the value `fer-edge margin`
    /// measured for the detector).
    #[arg(long, allow_negative_numbers = true)]
    crop_margin: Option<f32>,
    /// tract threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The bundle to run, verified (signature, hashes, self-test) before anything is
    /// loaded: a board root made by `fer-edge bundle init` (its active bundle), or a bundle
    /// folder inside one; with --trust, any bundle folder signed by that key.
    #[arg(long, conflicts_with = "manifest")]
    bundle: Option<PathBuf>,
    /// The trusted public key for --bundle: 64 hex digits, or a key file.
    #[arg(long, requires = "bundle")]
    trust: Option<String>,
    /// Unbundled development mode: the model manifest (the model beside it unless --model).
    #[arg(long, requires = "config")]
    manifest: Option<PathBuf>,
    /// Unbundled: the ONNX model.
    #[arg(long, requires = "manifest")]
    model: Option<PathBuf>,
    /// Unbundled: the device config (config.toml or config.bin); its detector.model_file
    /// is taken relative to the config's folder.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Frame source: camera, camera:/dev/videoN, synthetic[:SEED], moving[:SEED] (synthetic
    /// faces moving across a still background), folder:PATH, image:PATH, or a path.
    #[arg(long, default_value = "camera")]
    source: String,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0)]
    report_every: f64,
    /// Also print one JSON line per frame (faces, labels, timings).
    #[arg(long)]
    per_frame: bool,
    /// Write annotated snapshots to this folder (overrides the config's display output).
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// With --snapshots: one snapshot every this many frames.
    #[arg(long, default_value_t = 30)]
    every: u32,
    /// tract threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The photo (one face), e.g. ../shared/images/astronaut.png.
    #[arg(long)]
    image: PathBuf,
    /// UltraFace ONNX file.
    #[arg(long)]
    detector_model: PathBuf,
    /// The classifier's manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// The fp32 classifier (default: the manifest's model_file beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An int8 classifier with the same manifest (`fer-train export` writes
    /// model_int8.onnx beside model_fp32.onnx).
    #[arg(long)]
    int8_model: Option<PathBuf>,
    /// A peer classifier's manifest (its model beside it), timed and profiled in the same run
    /// for a fair ratio, e.g. the mini-Xception of ../shared/models/peer.
    #[arg(long)]
    peer_manifest: Option<PathBuf>,
    /// An int8 file of the peer, read with the peer's manifest (e.g. from
    /// scripts/int8_peer.py).
    #[arg(long, requires = "peer_manifest")]
    peer_int8_model: Option<PathBuf>,
    /// Timed iterations per configuration.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Skip the onnxruntime comparison.
    #[arg(long)]
    no_onnxruntime: bool,
    /// Print Markdown tables instead of JSON.
    #[arg(long)]
    markdown: bool,
    /// Detection intervals to measure on a sequence of moving synthetic faces (fps and box
    /// IoU against detecting every frame); 1 first, the reference.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
    intervals: Vec<u32>,
    /// Skip the detection-interval table.
    #[arg(long)]
    no_intervals: bool,
    /// Frames in that sequence.
    #[arg(long, default_value_t = 300)]
    sequence_frames: usize,
}

impl From<&DetectArgs> for DetectorConfig {
    fn from(args: &DetectArgs) -> Self {
        let mut config = DetectorConfig::default();
        config.score_threshold = args.score_threshold;
        config.min_face_size = args.min_face_size;
        config
    }
}

impl TryFrom<BenchArgs> for BenchOptions {
    type Error = edge::Error;

    fn try_from(args: BenchArgs) -> edge::Result<Self> {
        let (manifest, classifier_model) =
            manifest_and_model(&args.manifest, args.model.as_deref())?;
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        let peer = match &args.peer_manifest {
            Some(path) => {
                let (manifest, model) = manifest_and_model(path, None)?;
                Some((model, manifest))
            }
            None => None,
        };
        Ok(Self {
            peer,
            peer_int8: args.peer_int8_model,
            detector_model: args.detector_model,
            classifier_model,
            manifest,
            int8_model: args.int8_model,
            image: args.image,
            sizes: vec![(320, 240), (640, 480)],
            threads: if all > 1 { vec![1, all] } else { vec![1] },
            iterations: args.iterations,
            onnxruntime: !args.no_onnxruntime,
            intervals: if args.no_intervals {
                Vec::new()
            } else {
                args.intervals
            },
            sequence: edge::bench::interval::Sequence {
                frames: args.sequence_frames,
                ..Default::default()
            },
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Detect(args) => cmd_detect(&args),
        Command::Classify(args) => cmd_classify(&args),
        Command::Run(args) => cmd_run(args),
        Command::Bench(args) => cmd_bench(args),
        Command::Bundle(command) => cmd_bundle(command),
        Command::Margin(args) => cmd_margin(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain without repeats: our errors already include their cause's text.
            let mut message = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !message.ends_with(&cause) {
                    if !message.is_empty() {
                        message.push_str(": ");
                    }
                    message.push_str(&cause);
                }
            }
            eprintln!("fer-edge: error: {message}");
            ExitCode::from(
                e.downcast_ref::<edge::Error>()
                    .map_or(exit_code::FAILURE, edge::Error::exit_code),
            )
        }
    }
}

fn cmd_detect(args: &DetectArgs) -> Result<()> {
    let detector = detector_for(args.detector, args.model.as_deref(), &args.into())?;
    let frame = edge::load_image(&args.image)?;
    let faces = detector.detect(&frame.view())?;
    print_json(&serde_json::json!({
        "image": args.image,
        "width": frame.width,
        "height": frame.height,
        "detector": detector.name(),
        "faces": faces,
    }))
}

fn cmd_classify(args: &ClassifyArgs) -> Result<()> {
    edge::set_threads(args.threads);
    let mut config = DeviceConfig::default();
    config.detector.crop_margin = args.crop_margin;
    config
        .validate()
        .map_err(|e| edge::Error::invalid("--crop-margin", e.to_string()))?;
    let classifier =
        Classifier::from_manifest_file(&args.manifest, args.model.as_deref(), &config.classifier)?
            .with_detector_margin(&config.detector);
    let detector = detector_for(
        args.detector,
        args.detector_model.as_deref(),
        &config.detector,
    )?;
    if args.input.is_dir() {
        let framing = match args.frame {
            Some((width, height)) => Framing::for_detector(&detector, width, height),
            None => Framing::AsIs,
        };
        let report = classifier.evaluate_folder(&detector, &args.input, args.per_class, framing)?;
        return print_json(&report);
    }
    let frame = edge::load_image(&args.input)?;
    let found = detector.detect(&frame.view())?;
    let boxes: Vec<_> = found.iter().map(|d| d.face).collect();
    let (_, classes) = classifier.classify_faces(&frame.view(), &boxes)?;
    let names = &classifier.manifest().class_names;
    let faces: Vec<_> = found
        .iter()
        .zip(&classes)
        .map(|(d, c)| {
            serde_json::json!({
                "face": d.face,
                "label": names[c.class_index],
                "confidence": c.confidence,
                "low_confidence": classifier.is_low_confidence(c),
                "probabilities": names.iter().zip(&c.probabilities).collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect();
    print_json(&serde_json::json!({ "image": args.input, "faces": faces }))
}

fn cmd_run(args: RunArgs) -> Result<()> {
    edge::set_threads(args.threads);
    let mut on_trial = None;
    let (config, detector, classifier, origin, bundle_id) =
        match (&args.bundle, &args.manifest, &args.config) {
            (Some(path), _, _) => {
                let (verified, (detector, classifier, report)) =
                    match (&args.trust, path.join(bundle::TRUSTED_KEY_FILE).is_file()) {
                        (None, true) => {
                            // A board root: start with automatic fallback to the other slot.
                            let board = BoardRoot::open(path)?;
                            let started = board.start(bundle::load_models)?;
                            if let Some(fallback) = board.fallback()? {
                                eprintln!(
                                    "fer-edge: fell back from slot {} to slot {}: {}",
                                    fallback.from_slot, fallback.to_slot, fallback.reason
                                );
                            }
                            end_trial_after(board.clone(), bundle::HEALTHY_AFTER);
                            on_trial = Some(board);
                            started
                        }
                        (trust, _) => {
                            let verified = match trust {
                                Some(key) => bundle::verify_dir(path, &parse_trust(key)?)?,
                                None => bundle::open_for_run(path)?,
                            };
                            let loaded = bundle::load_models(&verified)?;
                            (verified, loaded)
                        }
                    };
                let config = bundle_config(&verified, path);
                // The same self-test activation ran: a bundle changed on disk since is refused.
                eprintln!("fer-edge: {report}");
                let origin = format!("bundle {} ({})", verified.short_id(), path.display());
                (config, detector, classifier, origin, Some(verified.id))
            }
            (None, Some(manifest), Some(config_path)) => {
                let config = edge::read_config(config_path)?;
                let dir = config_path.parent().unwrap_or(Path::new("."));
                let detector = Detector::from_config(&config.detector, dir)?;
                let classifier = Classifier::from_manifest_file(
                    manifest,
                    args.model.as_deref(),
                    &config.classifier,
                )?
                .with_detector_margin(&config.detector);
                let origin = format!("unbundled {}", manifest.display());
                (config, detector, classifier, origin, None)
            }
            _ => bail!(edge::Error::invalid(
                "arguments",
                "give --bundle ROOT_OR_DIR [--trust KEY], or --manifest FILE --config FILE"
            )),
        };
    let spec = source_spec(&args.source)?;
    let capture = CaptureThread::spawn(spec.open(&config.camera, args.frames)?);
    eprintln!(
        "fer-edge: {origin}; detector {}; source {}",
        detector.name(),
        capture.description()
    );
    let mut pipeline = Pipeline::new(detector, classifier, &config)?;
    if let Some(id) = &bundle_id {
        pipeline.tally_as(id, &config);
    }
    if let Some(dir) = &args.snapshots {
        pipeline.set_display(
            Display::Snapshots(SnapshotWriter::new(dir, args.every, SnapshotFormat::Png)?),
            true,
        );
    }
    let stop = stop_on_signals()?;
    let max_time = args.seconds.map(Duration::from_secs_f64);
    let mut out = std::io::stdout().lock();
    pipeline
        .run(
            capture,
            &stop,
            max_time,
            Duration::from_secs_f64(args.report_every.max(0.1)),
            args.per_frame,
            &mut out,
        )
        .context("the pipeline stopped")?;
    // A run that ended by itself (frame or time limit, end of a folder) was healthy too.
    if let Some(board) = on_trial {
        board.mark_healthy()?;
    }
    Ok(())
}

fn cmd_bench(args: BenchArgs) -> Result<()> {
    let markdown = args.markdown;
    let report = edge::bench::run(&BenchOptions::try_from(args)?)?;
    if markdown {
        print!("{}", report.to_markdown());
        Ok(())
    } else {
        print_json(&report)
    }
}

fn cmd_bundle(command: BundleCommand) -> Result<()> {
    println!("{}", command.run()?);
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn cmd_margin(args: &MarginArgs) -> Result<()> {
    let config = DeviceConfig::default();
    let detector = detector_for(
        args.detector,
        args.detector_model.as_deref(),
        &config.detector,
    )?;
    let images = edge::margin::sample_images(&args.images, args.limit)?;
    let (width, height) = args.frame;
    let report = edge::margin::measure(&detector, &images, width, height)?;
    eprintln!(
        "fer-edge: the detector found {} of {} faces; put the median in the device config:\n\n\
         [detector]\ncrop_margin = {:.3}\n",
        report.detected, report.images, report.margin
    );
    print_json(&report)
}

/// `WIDTHxHEIGHT` in pixels.
fn parse_size(text: &str) -> std::result::Result<(u32, u32), String> {
    let parse = |s: &str| s.trim().parse::<u32>().ok().filter(|v| *v > 0);
    match text.split_once(['x', 'X']) {
        Some((w, h)) => match (parse(w), parse(h)) {
            (Some(w), Some(h)) => Ok((w, h)),
            _ => Err(format!("{text:?}: use WIDTHxHEIGHT, e.g. 320x240")),
        },
        None => Err(format!("{text:?}: use WIDTHxHEIGHT, e.g. 320x240")),
    }
}

fn detector_for(
    choice: DetectorChoice,
    model: Option<&Path>,
    config: &DetectorConfig,
) -> Result<Detector> {
    Ok(match choice {
        DetectorChoice::Ultraface => {
            let Some(model) = model else {
                bail!(edge::Error::invalid(
                    "--model",
                    "UltraFace needs its ONNX file (version-RFB-320_simplified.onnx); or use --detector cascade"
                ));
            };
            Detector::ultraface(model, config)?
        }
        DetectorChoice::Cascade => {
            Detector::cascade(model.unwrap_or(Path::new(DEFAULT_CASCADE)), config)?
        }
        DetectorChoice::None => Detector::WholeFrame,
    })
}

fn parse_trust(text: &str) -> Result<PublicKey> {
    let path = Path::new(text);
    if path.is_file() {
        return Ok(bundle::read_public_key(path)?);
    }
    PublicKey::from_hex(text.trim()).map_err(|e| {
        edge::Error::invalid(
            "--trust",
            format!("{e}: give 64 hex digits or a key file from `fer keygen`"),
        )
        .into()
    })
}

fn source_spec(text: &str) -> Result<SourceSpec> {
    let text = text
        .strip_prefix("folder:")
        .or_else(|| text.strip_prefix("image:"))
        .unwrap_or(text);
    Ok(text.parse()?)
}

/// The bundle's config, its field-log folder taken relative to the board root, as
/// `fer-edge bundle status` reports it.
/// Ends the active slot's trial once this process has run for `after` (a crash before that
/// counts as a failed start, see `BoardRoot::start`).
fn end_trial_after(board: BoardRoot, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        if let Err(e) = board.mark_healthy() {
            eprintln!("fer-edge: could not end the slot's trial: {e}");
        }
    });
}

fn bundle_config(bundle: &VerifiedBundle, path: &Path) -> DeviceConfig {
    let mut config = bundle.config.clone();
    let log_dir = Path::new(&config.field_log.directory);
    if log_dir.is_relative() {
        let base = board_root_of(path).unwrap_or_default();
        config.field_log.directory = base.join(log_dir).display().to_string();
    }
    config
}

/// The board root a bundle path belongs to: the path itself or one of its two parents holding
/// the trusted key.
fn board_root_of(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    path.ancestors()
        .take(3)
        .find(|p| p.join(TRUSTED_KEY_FILE).is_file())
        .map(Path::to_path_buf)
}
