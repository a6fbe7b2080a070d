//! Face detection: UltraFace (ONNX in tract), an OpenCV cascade (the model-free fallback), or
//! none (the whole frame is the face).

pub mod cascade;
pub mod schedule;
pub mod ultraface;
mod xml;

use std::path::Path;

use firmware_config::config::{DetectorConfig, DetectorKind};
use firmware_config::preprocess::{FaceBox, ImageView, PixelFormat};
use serde::Serialize;

pub use cascade::{Cascade, CascadeParams};
pub use schedule::{Decision, DetectSchedule};
pub use ultraface::UltraFace;

use crate::error::{Error, Result};

/// One face found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// The box in frame pixels.
    pub face: FaceBox,
    /// UltraFace: the face probability in `[0, 1]`. Cascade: the number of raw windows merged
    /// into the box. No detector: 1.
    pub score: f32,
}

/// A face detector chosen by [`DetectorConfig::kind`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Detector {
    /// UltraFace in tract.
    UltraFace(UltraFace),
    /// An OpenCV LBP or Haar cascade.
    Cascade {
        /// The cascade.
        cascade: Cascade,
        /// Its search parameters.
        params: CascadeParams,
    },
    /// No detector: every frame is one face, the whole frame.
    WholeFrame,
}

impl Detector {
    /// Loads UltraFace from `path` with the thresholds of `config`.
    pub fn ultraface(path: &Path, config: &DetectorConfig) -> Result<Self> {
        UltraFace::load(
            path,
            config.score_threshold,
            config.nms_iou,
            config.min_face_size,
        )
        .map(Self::UltraFace)
    }

    /// Loads an OpenCV cascade XML from `path`; `config.min_face_size` bounds the search.
    pub fn cascade(path: &Path, config: &DetectorConfig) -> Result<Self> {
        let cascade = Cascade::from_file(path)?;
        let params = CascadeParams {
            min_size: config.min_face_size,
            ..CascadeParams::default()
        };
        Ok(Self::Cascade { cascade, params })
    }

    /// The detector `config` describes, its `model_file` (a plain name) in `dir` (a bundle's
    /// folder, or an unbundled config's).
    pub fn from_config(config: &DetectorConfig, dir: &Path) -> Result<Self> {
        Self::from_file(config, &dir.join(&config.model_file))
    }

    /// The detector `config` describes, loaded from `path` (a workstation file, not yet in a
    /// bundle); `kind = "none"` needs no file.
    pub fn from_file(config: &DetectorConfig, path: &Path) -> Result<Self> {
        match config.kind {
            DetectorKind::Ultraface => Self::ultraface(path, config),
            DetectorKind::Cascade => Self::cascade(path, config),
            DetectorKind::None => Ok(Self::WholeFrame),
            other => Err(Error::invalid(
                "detector.kind",
                format!("{other:?} is not supported by this build"),
            )),
        }
    }

    /// A short name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::UltraFace(_) => "ultraface",
            Self::Cascade { .. } => "cascade",
            Self::WholeFrame => "none",
        }
    }

    /// Finds the faces in `frame`, best first.
    pub fn detect(&self, frame: &ImageView<'_>) -> Result<Vec<Detection>> {
        match self {
            Self::UltraFace(model) => model.detect(frame),
            Self::Cascade { cascade, params } => {
                let gray = to_gray(frame);
                Ok(cascade
                    .detect(frame.width as usize, frame.height as usize, &gray, params)
                    .into_iter()
                    .map(|hit| Detection {
                        face: FaceBox {
                            x: hit.rect.x as f32,
                            y: hit.rect.y as f32,
                            width: hit.rect.width as f32,
                            height: hit.rect.height as f32,
                        },
                        score: hit.neighbors as f32,
                    })
                    .collect())
            }
            Self::WholeFrame => Ok(vec![Detection {
                face: FaceBox {
                    x: 0.0,
                    y: 0.0,
                    width: frame.width as f32,
                    height: frame.height as f32,
                },
                score: 1.0,
            }]),
        }
    }
}

/// BT.601 luma of a frame (a copy for gray frames).
pub fn to_gray(frame: &ImageView<'_>) -> Vec<u8> {
    match frame.format {
        PixelFormat::Rgb8 => frame
            .data
            .chunks_exact(3)
            .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32 + 0.5) as u8)
            .collect(),
        _ => frame.data.to_vec(),
    }
}

/// Greedy non-maximum suppression: best score first, dropping boxes that overlap a kept one
/// by more than `iou`.
pub fn nms(mut found: Vec<Detection>, iou: f32) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        if kept.iter().all(|k| k.face.iou(&d.face) <= iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            face: FaceBox {
                x,
                y: 0.0,
                width: 10.0,
                height: 10.0,
            },
            score,
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let kept = nms(vec![det(0.0, 0.8), det(1.0, 0.9), det(50.0, 0.75)], 0.3);
        assert_eq!(kept, vec![det(1.0, 0.9), det(50.0, 0.75)]);
    }

    #[test]
    fn whole_frame_detector_returns_the_frame() {
        let px = vec![0u8; 6 * 4];
        let frame = ImageView::new(6, 4, PixelFormat::Gray8, &px).unwrap();
        let found = Detector::WholeFrame.detect(&frame).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].face.width, found[0].face.height), (6.0, 4.0));
    }
}
