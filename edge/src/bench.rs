//! `fer-edge bench`: per-stage and end-to-end latency of the board pipeline on one photo at
//! several frame sizes, with one thread and all threads, fp32 and (when given) int8
//! classifiers, and the same model files in onnxruntime for comparison; then the detection
//! interval table on moving faces ([`interval`]).

pub mod interval;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use firmware_config::config::ClassifierConfig;
use firmware_config::manifest::ModelManifest;
use firmware_config::preprocess::{ImageBuf, PixelFormat};
use serde::Serialize;

use crate::classify::{Classification, Classifier, OpTime};
use crate::detect::Detector;
use crate::error::{Error, Result};
use crate::overlay::{FaceOverlay, draw_overlays};
use crate::pipeline::Latency;
use crate::track::Tracker;

/// The onnxruntime timing script (run with `python3`).
pub const ORT_SCRIPT: &str = include_str!("../scripts/ort_bench.py");

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// UltraFace ONNX file.
    pub detector_model: PathBuf,
    /// fp32 classifier ONNX file.
    pub classifier_model: PathBuf,
    /// Its manifest (the int8 file uses the same one).
    pub manifest: ModelManifest,
    /// Optional int8 classifier (same manifest).
    pub int8_model: Option<PathBuf>,
    /// Optional peer classifier (its model and manifest), measured in the same run as
    /// `classifier peer`.
    pub peer: Option<(PathBuf, ModelManifest)>,
    /// Optional int8 file of the peer (the peer's manifest), measured as `classifier
    /// peer_int8`.
    pub peer_int8: Option<PathBuf>,
    /// The photo (one face).
    pub image: PathBuf,
    /// Frame sizes (width, height); the photo is resized to each.
    pub sizes: Vec<(u32, u32)>,
    /// Thread counts for tract (and onnxruntime).
    pub threads: Vec<usize>,
    /// Timed iterations per configuration (after 5 warm-up runs).
    pub iterations: usize,
    /// Also time the files in onnxruntime through `python3`.
    pub onnxruntime: bool,
    /// Detection intervals to measure on the moving sequence (empty: none; start with 1, the
    /// per-frame reference).
    pub intervals: Vec<u32>,
    /// The moving sequence they are measured on.
    pub sequence: interval::Sequence,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Frame size, `WxH`.
    pub size: String,
    /// tract threads.
    pub threads: usize,
    /// Classifier: `fp32`, `int8`, `peer` (fp32) or `peer_int8`.
    pub precision: String,
    /// Faces found per frame.
    pub faces: usize,
    /// UltraFace (resize, normalise, network, decode, NMS).
    pub detect: Latency,
    /// Crop, preprocessing and classification of all faces.
    pub classify: Latency,
    /// Tracking and smoothing.
    pub track: Latency,
    /// Drawing boxes, labels and bars.
    pub overlay: Latency,
    /// All stages of one frame.
    pub end_to_end: Latency,
    /// `1000 / end_to_end.mean_ms`.
    pub fps: f64,
}

/// onnxruntime's time for the same files.
#[derive(Debug, Clone, Serialize)]
pub struct OrtRow {
    /// Threads.
    pub threads: usize,
    /// Model (`detector`, `classifier_fp32`, `classifier_int8`).
    pub model: String,
    /// Input shape.
    pub input: Vec<usize>,
    /// Network time only (no pre- or post-processing).
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
}

/// Everything `fer-edge bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// CPU model and core count of the machine.
    pub machine: String,
    /// tract rows.
    pub tract: Vec<BenchRow>,
    /// tract network time of the classifier alone, one face, per (threads, precision).
    pub tract_classifier_net: Vec<(usize, String, Latency)>,
    /// tract's per-operator profile of each classifier, one face, one thread.
    pub classifier_profile: Vec<(String, Vec<OpTime>)>,
    /// onnxruntime rows, empty when skipped.
    pub onnxruntime: Vec<OrtRow>,
    /// Why onnxruntime was skipped, if it was.
    pub onnxruntime_skipped: Option<String>,
    /// The sequence the interval rows were measured on.
    pub sequence: interval::Sequence,
    /// One row per detection interval, one thread.
    pub interval: Vec<interval::IntervalRow>,
}

fn resize(image: &ImageBuf, width: u32, height: u32) -> Result<ImageBuf> {
    let rgb = crate::rgb_image(image);
    let out = image::imageops::resize(&rgb, width, height, image::imageops::FilterType::Triangle);
    ImageBuf::new(width, height, PixelFormat::Rgb8, out.into_raw())
        .map_err(|e| Error::invalid("resized image", e.to_string()))
}

fn time<T>(samples: &mut Vec<f64>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    samples.push(start.elapsed().as_secs_f64() * 1e3);
    Ok(out)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}

/// Runs the benchmark.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    let config = firmware_config::config::DetectorConfig::default();
    let detector = Detector::ultraface(&options.detector_model, &config)?;
    let mut classifiers = vec![(
        "fp32".to_string(),
        Classifier::load(
            &options.classifier_model,
            options.manifest.clone(),
            &ClassifierConfig::default(),
        )?,
    )];
    if let Some(int8) = &options.int8_model {
        classifiers.push((
            "int8".to_string(),
            Classifier::load(int8, options.manifest.clone(), &ClassifierConfig::default())?,
        ));
    }
    for (name, model, manifest) in peer_models(options) {
        classifiers.push((
            name.to_string(),
            Classifier::load(model, manifest.clone(), &ClassifierConfig::default())?,
        ));
    }
    let photo = crate::load_image(&options.image)?;
    let mut rows = Vec::new();
    let mut nets = Vec::new();
    let n = options.iterations.max(1);
    for &threads in &options.threads {
        crate::set_threads(threads);
        for (precision, classifier) in &classifiers {
            let names = &classifier.manifest().class_names;
            for &(w, h) in &options.sizes {
                let frame = resize(&photo, w, h)?;
                let mut tracker = Tracker::new(0.5);
                let (mut det, mut cls, mut trk, mut ovl, mut total) =
                    (vec![], vec![], vec![], vec![], vec![]);
                let mut faces = 0;
                for i in 0..n + 5 {
                    let mut canvas = frame.clone();
                    let start = Instant::now();
                    let mut d = Vec::new();
                    let found = time(&mut d, || detector.detect(&frame.view()))?;
                    let boxes: Vec<_> = found.iter().map(|f| f.face).collect();
                    let mut c = Vec::new();
                    let (_, classes) =
                        time(&mut c, || classifier.classify_faces(&frame.view(), &boxes))?;
                    let probs: Vec<Vec<f32>> =
                        classes.into_iter().map(|c| c.probabilities).collect();
                    let mut t = Vec::new();
                    let tracked = time(&mut t, || Ok(tracker.update(i as u64, &boxes, &probs)))?;
                    let mut o = Vec::new();
                    time(&mut o, || {
                        let overlays: Vec<FaceOverlay> = tracked
                            .iter()
                            .map(|f| {
                                let c = Classification::from_probabilities(f.probabilities.clone());
                                FaceOverlay {
                                    face: f.face,
                                    label: names[c.class_index].clone(),
                                    confidence: c.confidence,
                                    uncertain: false,
                                }
                            })
                            .collect();
                        draw_overlays(&mut canvas, &overlays, Some(30.0))
                    })?;
                    if i >= 5 {
                        total.push(start.elapsed().as_secs_f64() * 1e3);
                        det.extend(d);
                        cls.extend(c);
                        trk.extend(t);
                        ovl.extend(o);
                        faces = found.len();
                    }
                }
                let end_to_end = Latency::of(&total);
                rows.push(BenchRow {
                    size: format!("{w}x{h}"),
                    threads,
                    precision: precision.clone(),
                    faces,
                    detect: Latency::of(&det),
                    classify: Latency::of(&cls),
                    track: Latency::of(&trk),
                    overlay: Latency::of(&ovl),
                    fps: if end_to_end.mean_ms > 0.0 {
                        1000.0 / end_to_end.mean_ms
                    } else {
                        0.0
                    },
                    end_to_end,
                });
            }
            let len = classifier.manifest().preprocessing.input_len();
            let input = vec![0.1f32; len];
            let mut net = Vec::new();
            for i in 0..n + 5 {
                let mut s = Vec::new();
                time(&mut s, || classifier.run_raw(&input, 1))?;
                if i >= 5 {
                    net.extend(s);
                }
            }
            nets.push((threads, precision.clone(), Latency::of(&net)));
        }
    }
    crate::set_threads(1);
    let classifier_profile = classifiers
        .iter()
        .map(|(precision, c)| Ok((precision.clone(), c.profile(n)?)))
        .collect::<Result<Vec<_>>>()?;
    let interval = if options.intervals.is_empty() {
        Vec::new()
    } else {
        interval::run(
            &options.detector_model,
            &options.classifier_model,
            &options.manifest,
            &options.sequence.draw()?,
            &options.intervals,
        )?
    };
    let (onnxruntime, onnxruntime_skipped) = if options.onnxruntime {
        match onnxruntime_rows(options, detector_input(&detector)) {
            Ok(rows) => (rows, None),
            Err(reason) => (Vec::new(), Some(reason)),
        }
    } else {
        (
            Vec::new(),
            Some("not asked for (--no-onnxruntime)".to_string()),
        )
    };
    Ok(BenchReport {
        machine: machine(),
        tract: rows,
        tract_classifier_net: nets,
        classifier_profile,
        onnxruntime,
        onnxruntime_skipped,
        sequence: options.sequence,
        interval,
    })
}

/// The peer's files with its manifest: `peer` (fp32) and, when given, `peer_int8`.
fn peer_models(options: &BenchOptions) -> Vec<(&'static str, &Path, &ModelManifest)> {
    let Some((model, manifest)) = &options.peer else {
        return Vec::new();
    };
    let mut models = vec![("peer", model.as_path(), manifest)];
    if let Some(int8) = &options.peer_int8 {
        models.push(("peer_int8", int8.as_path(), manifest));
    }
    models
}

fn detector_input(detector: &Detector) -> Vec<usize> {
    match detector {
        Detector::UltraFace(u) => {
            let (w, h) = u.input_size();
            vec![1, 3, h as usize, w as usize]
        }
        _ => Vec::new(),
    }
}

/// Runs the onnxruntime script; `Err` says why it was skipped.
fn onnxruntime_rows(
    options: &BenchOptions,
    detector_shape: Vec<usize>,
) -> std::result::Result<Vec<OrtRow>, String> {
    let classifier_shape = options.manifest.preprocessing.input_shape(1).to_vec();
    let mut models: Vec<(&str, &Path, Vec<usize>)> = vec![
        ("detector", options.detector_model.as_path(), detector_shape),
        (
            "classifier_fp32",
            options.classifier_model.as_path(),
            classifier_shape.clone(),
        ),
    ];
    if let Some(int8) = &options.int8_model {
        models.push(("classifier_int8", int8.as_path(), classifier_shape));
    }
    for (name, model, manifest) in peer_models(options) {
        let shape = manifest.preprocessing.input_shape(1).to_vec();
        let name = if name == "peer" {
            "classifier_peer"
        } else {
            "classifier_peer_int8"
        };
        models.push((name, model, shape));
    }
    let mut rows = Vec::new();
    for &threads in &options.threads {
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(ORT_SCRIPT)
            .arg(options.iterations.max(1).to_string())
            .arg(threads.to_string());
        for (name, path, shape) in &models {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            cmd.arg(format!("{name}={}:{}", path.display(), dims.join(",")));
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|_| {
            format!(
                "python3 failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })?;
        if let Some(reason) = value.get("skipped").and_then(|s| s.as_str()) {
            return Err(reason.to_string());
        }
        for (name, _, shape) in &models {
            let m = &value["models"][name];
            let get = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            rows.push(OrtRow {
                threads,
                model: name.to_string(),
                input: shape.clone(),
                mean_ms: get("mean_ms"),
                p50_ms: get("p50_ms"),
                p95_ms: get("p95_ms"),
            });
        }
    }
    Ok(rows)
}

impl BenchReport {
    /// The report as Markdown tables (for docs/RESULTS.md).
    pub fn to_markdown(&self) -> String {
        let mut s = format!("Machine: {}\n\n", self.machine);
        s.push_str("| frame | threads | classifier | faces | detect ms | classify ms | track ms | overlay ms | end-to-end ms (p95) | fps |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.tract {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.2} | {:.2} ({:.2}) | {:.0} |\n",
                r.size,
                r.threads,
                r.precision,
                r.faces,
                r.detect.mean_ms,
                r.classify.mean_ms,
                r.track.mean_ms,
                r.overlay.mean_ms,
                r.end_to_end.mean_ms,
                r.end_to_end.p95_ms,
                r.fps
            ));
        }
        s.push_str("\nNetwork time alone (mean ms), tract vs onnxruntime, same files:\n\n");
        s.push_str("| model | threads | tract | onnxruntime |\n|---|---|---|---|\n");
        for (threads, precision, lat) in &self.tract_classifier_net {
            let ort = self
                .onnxruntime
                .iter()
                .find(|o| o.threads == *threads && o.model == format!("classifier_{precision}"))
                .map_or("skipped".to_string(), |o| format!("{:.2}", o.mean_ms));
            s.push_str(&format!(
                "| classifier {precision} | {threads} | {:.2} | {ort} |\n",
                lat.mean_ms
            ));
        }
        for o in self.onnxruntime.iter().filter(|o| o.model == "detector") {
            s.push_str(&format!(
                "| detector (network only) | {} | see detect ms above (includes pre/post) | {:.2} |\n",
                o.threads, o.mean_ms
            ));
        }
        if let Some(reason) = &self.onnxruntime_skipped {
            s.push_str(&format!("\nonnxruntime: skipped ({reason}).\n"));
        }
        for (precision, ops) in &self.classifier_profile {
            let total: f64 = ops.iter().map(|o| o.mean_ms).sum();
            s.push_str(&format!(
                "\ntract profile of the {precision} classifier, one face, one thread \
                 ({total:.3} ms in nodes):\n\n| operator | nodes | ms | share |\n|---|---|---|---|\n"
            ));
            for o in ops {
                s.push_str(&format!(
                    "| {} | {} | {:.3} | {:.1}% |\n",
                    o.op,
                    o.nodes,
                    o.mean_ms,
                    100.0 * o.share
                ));
            }
        }
        if !self.interval.is_empty() {
            let q = &self.sequence;
            s.push_str(&format!(
                "\nDetection interval, one thread, {} frames of {}x{} with {} face(s) moving \
                 {} px a frame (seed {}); IoU against the boxes of per-frame detection:\n\n",
                q.frames, q.width, q.height, q.faces, q.speed, q.seed
            ));
            s.push_str("| interval | detected frames | detect ms | classify ms | end-to-end ms (p95) | fps | mean IoU | min IoU | id switches |\n");
            s.push_str("|---|---|---|---|---|---|---|---|---|\n");
            for r in &self.interval {
                s.push_str(&format!(
                    "| {} | {}/{} | {:.2} | {:.2} | {:.2} ({:.2}) | {:.0} | {:.3} | {:.3} | {} |\n",
                    r.interval,
                    r.detected_frames,
                    r.frames,
                    r.detect_ms,
                    r.classify_ms,
                    r.end_to_end.mean_ms,
                    r.end_to_end.p95_ms,
                    r.fps,
                    r.iou_vs_every_frame,
                    r.min_iou_vs_every_frame,
                    r.id_switches
                ));
            }
        }
        s
    }
}
