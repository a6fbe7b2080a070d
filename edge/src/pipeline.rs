//! The board's loop: frame source -> detect -> classify (one batch per frame) -> track ->
//! overlay -> field log, with per-stage latency and throughput reported as JSON lines
//! periodically and at exit.
//!
//! With `detector.interval` above 1 the detector runs on some frames only
//! ([`crate::detect::DetectSchedule`]); on the others the tracks are carried by their motion
//! model and classification runs on the carried boxes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use firmware_config::Sha256Digest;
use firmware_config::config::{DeviceConfig, StorePolicy};
use firmware_config::preprocess::FaceBox;
use firmware_config::record::FieldRecord;
use serde::Serialize;

use crate::capture::{CaptureStats, CaptureThread, Frame};
use crate::classify::{Classification, Classifier};
use crate::detect::{Decision, DetectSchedule, Detection, Detector};
use crate::display::Display;
use crate::error::{Error, Result};
use crate::fieldlog::{FieldLog, FieldLogStats, Outcome};
use crate::overlay::{FaceOverlay, draw_overlays};
use crate::track::Tracker;

/// The measured stages, in pipeline order.
pub const STAGES: [&str; 6] = [
    "detect",
    "classify",
    "track",
    "overlay",
    "field_log",
    "total",
];

/// One face of a processed frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceResult {
    /// Its track.
    pub track_id: u32,
    /// Box in frame pixels.
    pub face: FaceBox,
    /// Detector score (see [`crate::detect::Detection::score`]).
    pub detector_score: f32,
    /// The smoothed classification of its track.
    pub classification: Classification,
    /// The class name of the smoothed top class.
    pub label: String,
    /// Top probability below the class threshold.
    pub low_confidence: bool,
    /// What the field log did with it (only low-confidence faces are offered).
    pub logged: Option<Outcome>,
}

/// Milliseconds spent in each stage for one frame (showing the frame on the display output
/// comes after and is not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Face detection.
    pub detect: f64,
    /// Crop, preprocessing and batched classification.
    pub classify: f64,
    /// Track matching and smoothing.
    pub track: f64,
    /// Drawing overlays (0 when off or when frames go nowhere).
    pub overlay: f64,
    /// Field-log writes (fsync included).
    pub field_log: f64,
    /// All of the above.
    pub total: f64,
}

impl StageTimes {
    fn get(&self, stage: usize) -> f64 {
        [
            self.detect,
            self.classify,
            self.track,
            self.overlay,
            self.field_log,
            self.total,
        ][stage]
    }
}

/// What one frame gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameResult {
    /// The frame's sequence number.
    pub seq: u64,
    /// Every face found.
    pub faces: Vec<FaceResult>,
    /// `true` when the detector ran on this frame; `false` when the tracks were carried.
    pub detected: bool,
    /// Time per stage.
    pub times: StageTimes,
}

/// Latency summary of one stage over a reporting period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Mean, milliseconds.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises samples in milliseconds (all zero when empty).
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            max_ms: sorted[sorted.len() - 1],
        }
    }
}

/// One JSON line of `fer-edge run`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `"progress"` periodically, `"final"` at exit.
    pub kind: &'static str,
    /// Frames processed in the period (all frames for the final report).
    pub frames: u64,
    /// Of those, frames the detector ran on (the others carried their tracks).
    pub detected_frames: u64,
    /// Faces classified in the period.
    pub faces: u64,
    /// Low-confidence faces in the period.
    pub low_confidence: u64,
    /// Seconds the period lasted.
    pub seconds: f64,
    /// Frames processed per second of the period.
    pub fps: f64,
    /// Per-stage latency, keys as in [`STAGES`].
    pub stages: std::collections::BTreeMap<&'static str, Latency>,
    /// Capture-to-result latency (frame age when its processing ended).
    pub frame_age: Latency,
    /// Capture counters (frames dropped by the newest-frame queue among them).
    pub capture: CaptureCounters,
    /// Field-log counters, when logging is on.
    pub field_log: Option<FieldLogStats>,
}

/// [`CaptureStats`] in JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureCounters {
    /// Frames the source produced.
    pub captured: u64,
    /// Frames handed to the pipeline.
    pub delivered: u64,
    /// Frames replaced by a newer one before the pipeline took them.
    pub dropped: u64,
    /// Inputs the source skipped (unreadable images, undecodable camera frames).
    pub skipped: u64,
    /// Camera disconnects survived.
    pub disconnects: u64,
}

impl From<&CaptureStats> for CaptureCounters {
    fn from(s: &CaptureStats) -> Self {
        Self {
            captured: s.captured,
            delivered: s.delivered,
            dropped: s.dropped,
            skipped: s.source.skipped,
            disconnects: s.source.disconnects,
        }
    }
}

#[derive(Debug, Default)]
struct Period {
    frames: u64,
    detected: u64,
    faces: u64,
    low: u64,
    times: Vec<StageTimes>,
    ages: Vec<f64>,
}

impl Period {
    fn report(
        &self,
        kind: &'static str,
        seconds: f64,
        capture: &CaptureStats,
        log: Option<&FieldLog>,
    ) -> Report {
        let stages = STAGES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let samples: Vec<f64> = self.times.iter().map(|t| t.get(i)).collect();
                (*name, Latency::of(&samples))
            })
            .collect();
        Report {
            kind,
            frames: self.frames,
            detected_frames: self.detected,
            faces: self.faces,
            low_confidence: self.low,
            seconds,
            fps: if seconds > 0.0 {
                self.frames as f64 / seconds
            } else {
                0.0
            },
            stages,
            frame_age: Latency::of(&self.ages),
            capture: capture.into(),
            field_log: log.map(|l| l.stats().clone()),
        }
    }
}

/// Detector, classifier, tracker and field log of one board.
pub struct Pipeline {
    detector: Detector,
    schedule: DetectSchedule,
    classifier: Classifier,
    tracker: Tracker,
    /// Each live track's detector score at its last detection, for the frames carried.
    scores: Vec<(u32, f32)>,
    field_log: Option<FieldLog>,
    device_id: String,
    model_sha256: Sha256Digest,
    store: StorePolicy,
    overlay: bool,
    display: Display,
    fps: Option<f32>,
    /// The field-log folder and the running bundle, when faces are tallied.
    tally: Option<(PathBuf, String)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("detector", &self.detector.name())
            .field("classifier", &self.classifier.model_path())
            .field("field_log", &self.field_log)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline; the field log is opened (and repaired) when `config.field_log.enabled`, the
    /// display output (snapshots, framebuffer) as `config.display` says; overlays are drawn
    /// when `config.display.overlay` is on and frames go somewhere.
    pub fn new(detector: Detector, classifier: Classifier, config: &DeviceConfig) -> Result<Self> {
        let field_log = if config.field_log.enabled {
            Some(FieldLog::open(&config.field_log, &config.device.id)?)
        } else {
            None
        };
        let model_sha256 = classifier.manifest().model_sha256;
        Ok(Self {
            detector,
            schedule: DetectSchedule::new(config.detector.interval),
            classifier,
            tracker: Tracker::new(config.classifier.smoothing),
            scores: Vec::new(),
            field_log,
            device_id: config.device.id.clone(),
            model_sha256,
            store: config.field_log.store,
            overlay: config.display.overlay,
            display: Display::from_config(&config.display.output)?,
            fps: None,
            tally: None,
        })
    }

    /// Counts the faces this run classifies, and how many were low-confidence, under
    /// `bundle_id` in the field-log folder's tally ([`crate::tally`]), when the field log is on.
    pub fn tally_as(&mut self, bundle_id: &str, config: &DeviceConfig) {
        if config.field_log.enabled {
            self.tally = Some((
                PathBuf::from(&config.field_log.directory),
                bundle_id.to_string(),
            ));
        }
    }

    /// Adds a period's faces to the tally. A failure is reported and the run goes on: the
    /// tally is statistics, the field log is what must not stop.
    fn add_to_tally(&self, period: &Period) {
        if let Some((dir, bundle)) = &self.tally {
            let now = crate::capture::unix_ms(std::time::SystemTime::now());
            if let Err(e) = crate::tally::Tally::add(dir, bundle, period.faces, period.low, now) {
                eprintln!("fer-edge: the face tally was not updated: {e}");
            }
        }
    }

    /// Sends frames to `display` instead of the configured output (`--snapshots`), and draws
    /// overlays on them (off with `overlay = false`).
    pub fn set_display(&mut self, display: Display, overlay: bool) {
        self.display = display;
        self.overlay = overlay;
    }

    /// The classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The field log's counters, when logging is on.
    pub fn field_log_stats(&self) -> Option<&FieldLogStats> {
        self.field_log.as_ref().map(FieldLog::stats)
    }

    /// Runs every stage on one frame.
    pub fn process(&mut self, frame: &mut Frame) -> Result<FrameResult> {
        let start = Instant::now();
        let view = frame.image.view();
        let carried = self.tracker.predict(frame.seq);
        let carried_boxes: Vec<FaceBox> = carried.iter().map(|c| c.face).collect();
        let decision = self
            .schedule
            .decide(&view, &carried_boxes, self.tracker.changed());
        let detections = if decision.detects() {
            let found = self.detector.detect(&view)?;
            let boxes: Vec<FaceBox> = found.iter().map(|d| d.face).collect();
            self.schedule.detected(&view, &boxes);
            found
        } else {
            self.schedule.carried();
            let score = |id| self.scores.iter().find(|s| s.0 == id).map_or(0.0, |s| s.1);
            carried
                .iter()
                .map(|c| Detection {
                    face: c.face,
                    score: score(c.track_id),
                })
                .collect()
        };
        let t_detect = Instant::now();
        let boxes: Vec<FaceBox> = detections.iter().map(|d| d.face).collect();
        let (crops, raw) = self.classifier.classify_faces(&view, &boxes)?;
        let t_classify = Instant::now();
        let probs: Vec<Vec<f32>> = raw.into_iter().map(|c| c.probabilities).collect();
        let tracked = if decision == Decision::Carry {
            self.tracker.carry(frame.seq, &carried, &probs)
        } else {
            let tracked = self.tracker.update(frame.seq, &boxes, &probs);
            self.scores = tracked
                .iter()
                .zip(&detections)
                .map(|(t, d)| (t.track_id, d.score))
                .collect();
            tracked
        };
        let names = &self.classifier.manifest().class_names;
        let mut faces: Vec<FaceResult> = tracked
            .into_iter()
            .zip(&detections)
            .map(|(t, d)| {
                let classification = Classification::from_probabilities(t.probabilities);
                FaceResult {
                    track_id: t.track_id,
                    face: t.face,
                    detector_score: d.score,
                    label: names[classification.class_index].clone(),
                    low_confidence: self.classifier.is_low_confidence(&classification),
                    classification,
                    logged: None,
                }
            })
            .collect();
        let t_track = Instant::now();
        let show = !matches!(self.display, Display::None);
        if show && self.overlay {
            let overlays: Vec<FaceOverlay> = faces
                .iter()
                .map(|f| FaceOverlay {
                    face: f.face,
                    label: format!("#{} {}", f.track_id, f.label),
                    confidence: f.classification.confidence,
                    uncertain: f.low_confidence,
                })
                .collect();
            draw_overlays(&mut frame.image, &overlays, self.fps)?;
        }
        let t_overlay = Instant::now();
        if let Some(log) = self.field_log.as_mut() {
            for (face, crop) in faces.iter_mut().zip(crops) {
                if !face.low_confidence {
                    continue;
                }
                let record = FieldRecord {
                    timestamp_ms: frame.timestamp_ms,
                    device_id: self.device_id.clone(),
                    model_sha256: self.model_sha256,
                    frame_seq: frame.seq,
                    track_id: face.track_id,
                    face: face.face,
                    probabilities: face.classification.probabilities.clone(),
                    crop,
                    frame: (self.store == StorePolicy::CropAndFrame).then(|| frame.image.clone()),
                };
                face.logged = Some(log.log_or_pause(&record));
            }
        }
        let t_log = Instant::now();
        if show {
            self.display.show(&frame.image, frame.seq)?;
        }
        let total = (t_log - start).as_secs_f32();
        if total > 0.0 {
            let now = 1.0 / total;
            self.fps = Some(self.fps.map_or(now, |f| 0.9 * f + 0.1 * now));
        }
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        Ok(FrameResult {
            seq: frame.seq,
            faces,
            detected: decision.detects(),
            times: StageTimes {
                detect: ms(start, t_detect),
                classify: ms(t_detect, t_classify),
                track: ms(t_classify, t_track),
                overlay: ms(t_track, t_overlay),
                field_log: ms(t_overlay, t_log),
                total: ms(start, t_log),
            },
        })
    }

    /// Processes frames from `capture` until it ends, `stop` is raised (SIGINT/SIGTERM) or
    /// `max_time` passes. Writes a `progress` JSON line to `out` every `report_every` and a
    /// `final` one at the end, and with `per_frame` one line per frame. The field log is
    /// sealed (fsynced) before returning, whatever ended the run.
    pub fn run(
        mut self,
        capture: CaptureThread,
        stop: &AtomicBool,
        max_time: Option<Duration>,
        report_every: Duration,
        per_frame: bool,
        out: &mut dyn Write,
    ) -> Result<Report> {
        let started = Instant::now();
        let mut period_start = started;
        let mut period = Period::default();
        let mut all = Period::default();
        let result = (|| -> Result<()> {
            while !stop.load(Ordering::SeqCst) && max_time.is_none_or(|m| started.elapsed() < m) {
                let Some(mut frame) = capture.next_frame_timeout(Duration::from_millis(100))?
                else {
                    if capture.is_finished() {
                        break;
                    }
                    continue;
                };
                let result = self.process(&mut frame)?;
                let age = frame.captured_at.elapsed().as_secs_f64() * 1e3;
                for p in [&mut period, &mut all] {
                    p.frames += 1;
                    p.detected += u64::from(result.detected);
                    p.faces += result.faces.len() as u64;
                    p.low += result.faces.iter().filter(|f| f.low_confidence).count() as u64;
                    p.times.push(result.times);
                    p.ages.push(age);
                }
                if per_frame {
                    write_json(
                        out,
                        &serde_json::json!({ "kind": "frame", "frame": result }),
                    )?;
                }
                if period_start.elapsed() >= report_every {
                    let report = period.report(
                        "progress",
                        period_start.elapsed().as_secs_f64(),
                        &capture.stats(),
                        self.field_log.as_ref(),
                    );
                    write_json(out, &report)?;
                    self.add_to_tally(&period);
                    period = Period::default();
                    period_start = Instant::now();
                }
            }
            Ok(())
        })();
        let capture_stats = capture.stop();
        self.add_to_tally(&period);
        let log_stats = self.field_log.take().map(FieldLog::close).transpose();
        result?;
        let capture_stats = capture_stats?;
        let mut report = all.report(
            "final",
            started.elapsed().as_secs_f64(),
            &capture_stats,
            None,
        );
        report.field_log = log_stats?;
        write_json(out, &report)?;
        Ok(report)
    }
}

fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| Error::invalid("report", e.to_string()))?;
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing the report to", PathBuf::from("stdout"), e))
}

/// Raises the returned flag on SIGINT or SIGTERM, so [`Pipeline::run`] ends cleanly (field
/// log sealed and fsynced, final report written).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(|e| Error::invalid("signal handler", format!("cannot install it: {e}")))?;
    }
    Ok(flag)
}
