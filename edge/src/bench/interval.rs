//! The detection-interval table of `fer-edge bench`: the whole pipeline on a sequence of
//! moving synthetic faces, detecting every frame and every N-th frame, timed on one thread,
//! with the boxes compared against those of per-frame detection.

use std::path::Path;

use firmware_config::config::DeviceConfig;
use firmware_config::manifest::ModelManifest;
use firmware_config::preprocess::FaceBox;
use serde::Serialize;

use crate::capture::Frame;
use crate::classify::Classifier;
use crate::detect::Detector;
use crate::error::Result;
use crate::pipeline::{FrameResult, Latency, Pipeline};
use crate::synthetic::{MovingFaces, SyntheticConfig, SyntheticImage};

/// The moving sequence: frame size, face size, speed and seed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sequence {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames.
    pub frames: usize,
    /// Pixels a face moves per frame.
    pub speed: f32,
    /// Faces in the frame.
    pub faces: u32,
    /// Seed of the sequence.
    pub seed: u64,
}

impl Default for Sequence {
    /// 320x240, one face of 30-50% of the height moving 3 px a frame (90 px/s at 30 fps), 300
    /// frames.
    fn default() -> Self {
        Self {
            width: 320,
            height: 240,
            frames: 300,
            speed: 3.0,
            faces: 1,
            seed: 11,
        }
    }
}

impl Sequence {
    /// The frames, drawn before anything is timed.
    pub fn draw(&self) -> Result<Vec<SyntheticImage>> {
        let config = SyntheticConfig {
            width: self.width,
            height: self.height,
            max_faces: self.faces,
            face_fraction: (0.3, 0.5),
            ..SyntheticConfig::default()
        };
        let mut moving = MovingFaces::new(config, self.seed, self.speed)?;
        Ok((0..self.frames).map(|_| moving.next_image()).collect())
    }
}

/// One detection interval on the sequence.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalRow {
    /// `detector.interval`.
    pub interval: u32,
    /// Frames the detector ran on.
    pub detected_frames: usize,
    /// Frames in the sequence.
    pub frames: usize,
    /// Detection (or carrying the tracks) per frame, milliseconds, mean.
    pub detect_ms: f64,
    /// Classification per frame, milliseconds, mean.
    pub classify_ms: f64,
    /// Whole pipeline per frame (detect or carry, classify, track), one thread.
    pub end_to_end: Latency,
    /// `1000 / end_to_end.mean_ms`.
    pub fps: f64,
    /// Mean IoU of each per-frame-detection box with the nearest box of this run.
    pub iou_vs_every_frame: f64,
    /// The lowest such IoU over the sequence.
    pub min_iou_vs_every_frame: f64,
    /// Frames where a true face's track id differs from its id in the frame before.
    pub id_switches: usize,
}

/// Runs the pipeline over `frames` once per interval (the first run is taken as the per-frame
/// reference, so `intervals` should start with 1).
pub fn run(
    detector_model: &Path,
    classifier_model: &Path,
    manifest: &ModelManifest,
    frames: &[SyntheticImage],
    intervals: &[u32],
) -> Result<Vec<IntervalRow>> {
    let mut reference: Option<Vec<Vec<FaceBox>>> = None;
    let mut rows = Vec::new();
    for &interval in intervals {
        let mut config = DeviceConfig::default();
        config.detector.interval = interval;
        config.field_log.enabled = false;
        let detector = Detector::ultraface(detector_model, &config.detector)?;
        let classifier = Classifier::load(classifier_model, manifest.clone(), &config.classifier)?;
        let mut pipeline = Pipeline::new(detector, classifier, &config)?;
        let mut results: Vec<FrameResult> = Vec::with_capacity(frames.len());
        for (seq, sample) in frames.iter().enumerate() {
            let image = &sample.image;
            let mut frame =
                Frame::new(seq as u64, image.width, image.height, image.pixels.clone())?;
            results.push(pipeline.process(&mut frame)?);
        }
        let boxes: Vec<Vec<FaceBox>> = results
            .iter()
            .map(|r| r.faces.iter().map(|f| f.face).collect())
            .collect();
        let reference = reference.get_or_insert_with(|| boxes.clone());
        let mut ious = Vec::new();
        for (want, got) in reference.iter().zip(&boxes) {
            for w in want {
                ious.push(got.iter().map(|g| f64::from(w.iou(g))).fold(0.0, f64::max));
            }
        }
        let end_to_end = Latency::of(&results.iter().map(|r| r.times.total).collect::<Vec<_>>());
        rows.push(IntervalRow {
            interval,
            detected_frames: results.iter().filter(|r| r.detected).count(),
            frames: results.len(),
            fps: if end_to_end.mean_ms > 0.0 {
                1000.0 / end_to_end.mean_ms
            } else {
                0.0
            },
            detect_ms: mean(&results.iter().map(|r| r.times.detect).collect::<Vec<_>>()),
            classify_ms: mean(&results.iter().map(|r| r.times.classify).collect::<Vec<_>>()),
            end_to_end,
            iou_vs_every_frame: mean(&ious),
            min_iou_vs_every_frame: ious.iter().copied().fold(f64::NAN, f64::min),
            id_switches: id_switches(frames, &results),
        });
    }
    Ok(rows)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Frames where a true face's track (the result box that overlaps it most, IoU > 0.3)
/// changed id since the frame before.
pub fn id_switches(frames: &[SyntheticImage], results: &[FrameResult]) -> usize {
    let mut last: Vec<Option<u32>> = Vec::new();
    let mut switches = 0;
    for (sample, result) in frames.iter().zip(results) {
        last.resize(sample.faces.len(), None);
        for (i, truth) in sample.faces.iter().enumerate() {
            let id = result
                .faces
                .iter()
                .map(|f| (truth.face.iou(&f.face), f.track_id))
                .filter(|(iou, _)| *iou > 0.3)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, id)| id);
            if let (Some(before), Some(now)) = (last[i], id)
                && before != now
            {
                switches += 1;
            }
            if id.is_some() {
                last[i] = id;
            }
        }
    }
    switches
}
