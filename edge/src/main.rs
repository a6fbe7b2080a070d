//! `fer-edge`: the board's command line (a thin layer over the `edge` library).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use edge::bundle::{self, BundleCommand, TRUSTED_KEY_FILE, VerifiedBundle};
use edge::capture::{CaptureThread, SourceSpec};
use edge::classify::{Classifier, read_manifest};
use edge::detect::{Detector, cascade::DEFAULT_CASCADE};
use edge::overlay::{Display, SnapshotFormat, SnapshotWriter};
use edge::pipeline::{Pipeline, stop_on_signals};
use firmware_config::PublicKey;
use firmware_config::config::{DetectorConfig, DeviceConfig};

/// Exit codes (stable: scripts and the systemd unit rely on them).
mod exit {
    /// A bad input file: image, model, manifest, config, cascade.
    pub const BAD_INPUT: u8 = 3;
    /// The camera could not be opened or was lost.
    pub const CAMERA: u8 = 4;
    /// A bundle failed verification or its self-test.
    pub const BUNDLE: u8 = 5;
    /// Anything else (I/O, the field log).
    pub const FAILURE: u8 = 1;
}

/// On-board facial-expression recognition: detect faces, classify expressions, log the faces
/// the model is unsure about for the next training round.
///
/// Exit codes: 0 success, 1 failure (I/O, field log), 2 bad command line, 3 bad input file
/// (image, model, manifest, config, cascade), 4 camera unavailable, 5 bundle refused.
#[derive(Debug, Parser)]
#[command(name = "fer-edge", version, about, long_about)]
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
    Detect {
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
    },
    /// Classify the expressions of the faces in an image, or measure per-class accuracy on an
    /// ImageFolder (`DIR/<class>/*.png|jpg`, class folders named like the manifest's classes).
    Classify {
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
        /// tract threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Run the pipeline: source -> detect -> classify -> track -> overlay -> field log.
    /// Prints JSON lines: progress every --report-every seconds and a final report (also on
    /// SIGINT/SIGTERM, after the field log is sealed).
    ///
    /// The models come from a verified bundle (--bundle), or, for development, from
    /// --manifest/--config files directly.
    Run {
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
        /// Frame source: camera, camera:/dev/videoN, synthetic[:SEED], folder:PATH,
        /// image:PATH, or a path.
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
    },
    /// Measure per-stage and end-to-end latency on a photo at 320x240 and 640x480, one
    /// thread and all threads, fp32 and int8, and the same files in onnxruntime (python3 with
    /// onnxruntime and numpy; reported as skipped otherwise). Prints JSON, or Markdown.
    Bench {
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
        /// An int8 (QDQ) classifier with the same manifest.
        #[arg(long)]
        int8_model: Option<PathBuf>,
        /// Timed iterations per configuration.
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        /// Skip the onnxruntime comparison.
        #[arg(long)]
        no_onnxruntime: bool,
        /// Print Markdown tables instead of JSON.
        #[arg(long)]
        markdown: bool,
    },
    /// The board side of bundles: verify, init, activate (with self-test), rollback, status.
    #[command(subcommand)]
    Bundle(BundleCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
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
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<edge::Error>() {
        Some(
            edge::Error::Image { .. }
            | edge::Error::Model { .. }
            | edge::Error::Cascade { .. }
            | edge::Error::Contract { .. }
            | edge::Error::Invalid { .. },
        ) => exit::BAD_INPUT,
        Some(edge::Error::Camera { .. }) => exit::CAMERA,
        Some(edge::Error::Bundle { .. }) => exit::BUNDLE,
        Some(edge::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            exit::BAD_INPUT
        }
        _ => exit::FAILURE,
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
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

fn load_classifier(
    manifest: &Path,
    model: Option<&Path>,
    config: &DeviceConfig,
) -> Result<Classifier> {
    let m = read_manifest(manifest)?;
    let model = match model {
        Some(m) => m.to_path_buf(),
        None => manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join(&m.model_file),
    };
    Ok(Classifier::load(&model, m, &config.classifier)?)
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

/// The bundle's self-test as `fer-edge bundle activate/rollback` runs it: the detector loads,
/// and the classifier gives the stored output on the stored input.
fn self_test(bundle: &VerifiedBundle) -> std::result::Result<String, String> {
    Detector::from_config(&bundle.config.detector, &bundle.dir).map_err(|e| e.to_string())?;
    let classifier = Classifier::load(
        &bundle.model_path(),
        bundle.manifest.clone(),
        &bundle.config.classifier,
    )
    .map_err(|e| e.to_string())?;
    classifier.self_test(&bundle.dir).map_err(|e| e.to_string())
}

fn source_spec(text: &str) -> Result<SourceSpec> {
    let text = text
        .strip_prefix("folder:")
        .or_else(|| text.strip_prefix("image:"))
        .unwrap_or(text);
    Ok(text.parse()?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Detect {
            image,
            detector,
            model,
            score_threshold,
            min_face_size,
        } => {
            let mut config = DetectorConfig::default();
            config.score_threshold = score_threshold;
            config.min_face_size = min_face_size;
            let detector = detector_for(detector, model.as_deref(), &config)?;
            let frame = edge::load_image(&image)?;
            let faces = detector.detect(&frame.view())?;
            print_json(&serde_json::json!({
                "image": image,
                "width": frame.width,
                "height": frame.height,
                "detector": detector.name(),
                "faces": faces,
            }))
        }
        Command::Classify {
            input,
            manifest,
            model,
            detector,
            detector_model,
            per_class,
            threads,
        } => {
            edge::set_threads(threads);
            let config = DeviceConfig::default();
            let classifier = load_classifier(&manifest, model.as_deref(), &config)?;
            let detector = detector_for(detector, detector_model.as_deref(), &config.detector)?;
            if input.is_dir() {
                let report = classifier.evaluate_folder(&detector, &input, per_class)?;
                return print_json(&report);
            }
            let frame = edge::load_image(&input)?;
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
            print_json(&serde_json::json!({ "image": input, "faces": faces }))
        }
        Command::Run {
            bundle,
            trust,
            manifest,
            model,
            config,
            source,
            frames,
            seconds,
            report_every,
            per_frame,
            snapshots,
            every,
            threads,
        } => {
            edge::set_threads(threads);
            let (config, detector, classifier, origin) = if let Some(path) = bundle {
                let verified = match trust {
                    Some(key) => bundle::verify_dir(&path, &parse_trust(&key)?)?,
                    None => bundle::open_for_run(&path)?,
                };
                let mut config = verified.config.clone();
                let log_dir = Path::new(&config.field_log.directory);
                if log_dir.is_relative() {
                    // Relative to the board root, as `fer-edge bundle status` reports it.
                    let base = board_root_of(&path).unwrap_or_default();
                    config.field_log.directory = base.join(log_dir).display().to_string();
                }
                let (d, c) = load_bundle(&verified)?;
                (
                    config,
                    d,
                    c,
                    format!("bundle {} ({})", verified.short_id(), path.display()),
                )
            } else if let (Some(manifest), Some(config_path)) = (manifest, config) {
                let config = edge::read_config(&config_path)?;
                let dir = config_path.parent().unwrap_or(Path::new("."));
                let detector = Detector::from_config(&config.detector, dir)?;
                let classifier = load_classifier(&manifest, model.as_deref(), &config)?;
                (
                    config,
                    detector,
                    classifier,
                    format!("unbundled {}", manifest.display()),
                )
            } else {
                bail!(edge::Error::invalid(
                    "arguments",
                    "give --bundle ROOT_OR_DIR [--trust KEY], or --manifest FILE --config FILE"
                ));
            };
            let spec = source_spec(&source)?;
            let capture = CaptureThread::spawn(spec.open(&config.camera, frames)?);
            eprintln!(
                "fer-edge: {origin}; detector {}; source {}",
                detector.name(),
                capture.description()
            );
            let mut pipeline = Pipeline::new(detector, classifier, &config)?;
            if let Some(dir) = snapshots {
                pipeline.set_display(
                    Display::Snapshots(SnapshotWriter::new(&dir, every, SnapshotFormat::Png)?),
                    true,
                );
            }
            let stop = stop_on_signals()?;
            let max_time = seconds.map(Duration::from_secs_f64);
            let mut out = std::io::stdout().lock();
            pipeline
                .run(
                    capture,
                    &stop,
                    max_time,
                    Duration::from_secs_f64(report_every.max(0.1)),
                    per_frame,
                    &mut out,
                )
                .context("the pipeline stopped")?;
            Ok(())
        }
        Command::Bench {
            image,
            detector_model,
            manifest,
            model,
            int8_model,
            iterations,
            no_onnxruntime,
            markdown,
        } => {
            let m = read_manifest(&manifest)?;
            let classifier_model = model.unwrap_or_else(|| {
                manifest
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(&m.model_file)
            });
            let all = std::thread::available_parallelism().map_or(1, |n| n.get());
            let options = edge::bench::BenchOptions {
                detector_model,
                classifier_model,
                manifest: m,
                int8_model,
                image,
                sizes: vec![(320, 240), (640, 480)],
                threads: if all > 1 { vec![1, all] } else { vec![1] },
                iterations,
                onnxruntime: !no_onnxruntime,
            };
            let report = edge::bench::run(&options)?;
            if markdown {
                print!("{}", report.to_markdown());
                Ok(())
            } else {
                print_json(&report)
            }
        }
        Command::Bundle(command) => {
            let json = command.run_with(self_test)?;
            println!("{json}");
            Ok(())
        }
    }
}

fn load_bundle(bundle: &VerifiedBundle) -> Result<(Detector, Classifier)> {
    let detector = Detector::from_config(&bundle.config.detector, &bundle.dir)?;
    let classifier = Classifier::load(
        &bundle.model_path(),
        bundle.manifest.clone(),
        &bundle.config.classifier,
    )?;
    // The same self-test activation ran: a bundle changed on disk since is refused.
    let report = classifier.self_test(&bundle.dir)?;
    eprintln!("fer-edge: {report}");
    Ok((detector, classifier))
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
