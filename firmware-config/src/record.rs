//! [`FieldRecord`]: one low-confidence face logged on a board.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::preprocess::{FaceBox, ImageBuf};
use crate::{Error, Sha256Digest};

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
    /// Checks what decoding cannot: pixel buffers that match their sizes (with checked
    /// arithmetic, so crafted dimensions cannot wrap), and a face box and probabilities that
    /// are finite. JSON has no NaN: one would be written as `null` in the collected metadata,
    /// and every later reader of that file would refuse it.
    ///
    /// ```
    /// use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
    /// use firmware_config::record::FieldRecord;
    /// use firmware_config::Sha256Digest;
    ///
    /// let mut record = FieldRecord {
    ///     timestamp_ms: 0,
    ///     device_id: "board".into(),
    ///     model_sha256: Sha256Digest([0; 32]),
    ///     frame_seq: 0,
    ///     track_id: 0,
    ///     face: FaceBox { x: 0.0, y: 0.0, width: 1.0, height: 1.0 },
    ///     probabilities: vec![0.5, 0.5],
    ///     crop: ImageBuf::new(1, 1, PixelFormat::Gray8, vec![0])?,
    ///     frame: None,
    /// };
    /// assert!(record.validate().is_ok());
    /// record.probabilities[1] = f32::NAN;
    /// assert!(record.validate().is_err());
    /// # Ok::<(), firmware_config::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.crop.validate()?;
        if let Some(frame) = &self.frame {
            frame.validate()?;
        }
        let b = &self.face;
        if ![b.x, b.y, b.width, b.height].iter().all(|v| v.is_finite()) {
            return Err(Error::invalid(
                "record.face",
                alloc::format!("a box with a non-finite value: {b:?}"),
            ));
        }
        if let Some(i) = self.probabilities.iter().position(|p| !p.is_finite()) {
            return Err(Error::invalid(
                alloc::format!("record.probabilities[{i}]"),
                alloc::format!("{} is not a finite number", self.probabilities[i]),
            ));
        }
        Ok(())
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
