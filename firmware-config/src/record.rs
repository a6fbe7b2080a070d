//! [`FieldRecord`]: one low-confidence face logged on a board.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::Sha256Digest;
use crate::preprocess::{FaceBox, ImageBuf};

/// One face the board was unsure about, with what is needed to learn from it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldRecord {
    /// Milliseconds since the Unix epoch, board clock.
    pub timestamp_ms: u64,
    /// [`crate::config::DeviceIdentity::id`] of the board.
    pub device_id: String,
    /// SHA-256 of the model that classified the face.
    pub model_sha256: Sha256Digest,
    /// Sequence number of the frame since the edge started.
    pub frame_seq: u64,
    /// The face track the record belongs to.
    pub track_id: u32,
    /// Where the face was in the frame.
    pub face: FaceBox,
    /// The (smoothed) class probabilities, in the manifest's class order.
    pub probabilities: Vec<f32>,
    /// The face crop, as the classifier saw it before resizing.
    pub crop: ImageBuf,
    /// The whole frame, if the config asks for it.
    pub frame: Option<ImageBuf>,
}

impl FieldRecord {
    /// A record without the full frame.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        timestamp_ms: u64,
        device_id: String,
        model_sha256: Sha256Digest,
        frame_seq: u64,
        track_id: u32,
        face: FaceBox,
        probabilities: Vec<f32>,
        crop: ImageBuf,
    ) -> Self {
        Self {
            timestamp_ms,
            device_id,
            model_sha256,
            frame_seq,
            track_id,
            face,
            probabilities,
            crop,
            frame: None,
        }
    }

    /// The index and value of the top class.
    pub fn top(&self) -> Option<(usize, f32)> {
        self.probabilities
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}
