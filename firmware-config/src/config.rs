//! [`DeviceConfig`]: how one board runs.
//!
//! Written by people as TOML on the workstation (`fer config`), flashed to the board in the
//! binary form of [`crate::flash`]. Every struct has a `Default` a user can run, and
//! [`DeviceConfig::validate`] names the field that is wrong.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize, Serializer};

use crate::preprocess::CROP_MARGIN_RANGE;
use crate::{Error, PublicKey};

/// Everything a board needs to run, apart from the model bundle itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// Who the board is.
    pub device: DeviceIdentity,
    /// The V4L2 camera.
    pub camera: CameraConfig,
    /// How faces are found in a frame.
    pub detector: DetectorConfig,
    /// Which classifications count as low-confidence.
    pub classifier: ClassifierConfig,
    /// The field log of low-confidence faces.
    pub field_log: FieldLogConfig,
    /// Overlays and where frames go.
    pub display: DisplayConfig,
    /// The ed25519 key bundles must be signed with; `None` refuses every bundle.
    pub signing_public_key: Option<PublicKey>,
}

/// Identity of a board, stamped into every field record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DeviceIdentity {
    /// Stable machine id (letters, digits, `-`, `_`, `.`), unique in a fleet.
    pub id: String,
    /// Human name, free text.
    pub name: String,
}

impl Default for DeviceIdentity {
    fn default() -> Self {
        Self {
            id: "board-0".to_string(),
            name: "unnamed board".to_string(),
        }
    }
}

/// Camera pixel formats the board can decode, in V4L2 terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CameraPixelFormat {
    /// Packed YUV 4:2:2 (`YUYV`), uncompressed.
    Yuyv,
    /// Motion JPEG (`MJPG`): each frame a JPEG.
    Mjpeg,
}

/// The V4L2 camera and what to ask it for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CameraConfig {
    /// Device node, e.g. `/dev/video0`.
    pub device: String,
    /// Requested frame width in pixels; the driver may pick the nearest it supports.
    pub width: u32,
    /// Requested frame height in pixels.
    pub height: u32,
    /// Requested frames per second.
    pub fps: u32,
    /// Pixel formats in order of preference; the first one the camera offers is used.
    pub pixel_formats: Vec<CameraPixelFormat>,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            device: "/dev/video0".to_string(),
            width: 640,
            height: 480,
            fps: 30,
            pixel_formats: vec![CameraPixelFormat::Yuyv, CameraPixelFormat::Mjpeg],
        }
    }
}

/// Which face detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DetectorKind {
    /// UltraFace (ONNX, run with tract).
    #[default]
    Ultraface,
    /// An OpenCV LBP or Haar cascade (XML), the model-free fallback.
    Cascade,
    /// No detector: each frame is one face (cameras aimed at a face, or pre-cropped images).
    None,
}

/// How faces are found in a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DetectorConfig {
    /// The detector.
    pub kind: DetectorKind,
    /// Model file inside the bundle (ONNX for UltraFace, XML for a cascade).
    pub model_file: String,
    /// Minimum face score, in `[0, 1]`.
    #[serde(serialize_with = "as_written")]
    pub score_threshold: f32,
    /// Boxes overlapping more than this IoU are merged by non-maximum suppression.
    #[serde(serialize_with = "as_written")]
    pub nms_iou: f32,
    /// Faces smaller than this many pixels (shorter side) are ignored.
    pub min_face_size: u32,
    /// The crop margin measured for this detector against the model's training crops
    /// (`fer-edge margin`); when set it replaces the manifest's `preprocessing.crop_margin`.
    /// Negative when the detector's boxes are larger than the training framing.
    #[serde(serialize_with = "option_as_written")]
    pub crop_margin: Option<f32>,
    /// Run the detector on every `interval`-th frame (1: every frame) and carry the tracked
    /// boxes with a motion model in between; it runs sooner when a track is lost, a new face
    /// appears or the picture changes outside the tracked faces. At most [`MAX_DETECT_INTERVAL`].
    pub interval: u32,
}

/// The largest [`DetectorConfig::interval`]: beyond it a carried box drifts too far.
pub const MAX_DETECT_INTERVAL: u32 = 30;

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            kind: DetectorKind::Ultraface,
            model_file: "detector.onnx".to_string(),
            score_threshold: 0.7,
            nms_iou: 0.3,
            min_face_size: 24,
            crop_margin: None,
            interval: 1,
        }
    }
}

/// A per-class low-confidence threshold set on the board, overriding the trained one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClassThreshold {
    /// Class name, as in the model manifest.
    pub class: String,
    /// A face whose top probability is below this is logged.
    #[serde(serialize_with = "as_written")]
    pub threshold: f32,
}

impl ClassThreshold {
    /// A threshold for `class`.
    pub fn new(class: impl Into<String>, threshold: f32) -> Self {
        Self {
            class: class.into(),
            threshold,
        }
    }
}

/// Which classifications count as low-confidence, and how probabilities are smoothed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClassifierConfig {
    /// Threshold for classes with neither an override here nor a trained threshold.
    #[serde(serialize_with = "as_written")]
    pub default_threshold: f32,
    /// Overrides of the manifest's trained thresholds, by class name.
    pub class_thresholds: Vec<ClassThreshold>,
    /// Weight of the newest frame in a track's exponential moving average of probabilities,
    /// in `(0, 1]`; 1 disables smoothing.
    #[serde(serialize_with = "as_written")]
    pub smoothing: f32,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            default_threshold: 0.6,
            class_thresholds: Vec::new(),
            smoothing: 0.5,
        }
    }
}

impl ClassifierConfig {
    /// The effective threshold of `class`: this config's override, else the threshold the model
    /// was trained with, else [`ClassifierConfig::default_threshold`].
    ///
    /// ```
    /// use firmware_config::config::{ClassThreshold, ClassifierConfig};
    /// let mut config = ClassifierConfig::default();
    /// config.class_thresholds.push(ClassThreshold::new("happy", 0.9));
    /// assert_eq!(config.threshold_for("happy", Some(0.7)), 0.9);
    /// assert_eq!(config.threshold_for("sad", Some(0.7)), 0.7);
    /// assert_eq!(config.threshold_for("sad", None), config.default_threshold);
    /// ```
    pub fn threshold_for(&self, class: &str, trained: Option<f32>) -> f32 {
        self.class_thresholds
            .iter()
            .find(|t| t.class == class)
            .map(|t| t.threshold)
            .or(trained)
            .unwrap_or(self.default_threshold)
    }
}

/// What a field record stores besides probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StorePolicy {
    /// The face crop only.
    #[default]
    Crop,
    /// The face crop and the whole frame (much larger).
    CropAndFrame,
}

/// The field log of low-confidence faces, collected for the next training round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FieldLogConfig {
    /// Whether low-confidence faces are logged at all.
    pub enabled: bool,
    /// Directory of the segment files on the board.
    pub directory: String,
    /// A segment is closed (fsynced, sealed) and a new one begun past this size.
    pub segment_bytes: u64,
    /// The log never grows past this many bytes; logging pauses (and is counted) at the quota.
    pub quota_bytes: u64,
    /// At most this many records a minute, over all faces.
    pub max_records_per_minute: u32,
    /// A track is logged at most once in this window, in milliseconds.
    pub dedup_window_ms: u32,
    /// What each record stores.
    pub store: StorePolicy,
}

impl Default for FieldLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: "/var/lib/fer-edge/field-log".to_string(),
            segment_bytes: 4 << 20,
            quota_bytes: 512 << 20,
            max_records_per_minute: 30,
            dedup_window_ms: 10_000,
            store: StorePolicy::Crop,
        }
    }
}

/// Where annotated frames go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisplayOutput {
    /// Nowhere (headless).
    #[default]
    None,
    /// Annotated snapshots written to a directory.
    Snapshots {
        /// Directory the snapshots go to.
        directory: String,
        /// Write one snapshot every this many frames.
        every_n_frames: u32,
    },
    /// The Linux framebuffer device, e.g. `/dev/fb0`.
    Framebuffer {
        /// Device node.
        device: String,
    },
}

/// Overlays and where frames go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DisplayConfig {
    /// Draw boxes, labels, confidence bars and fps on frames.
    pub overlay: bool,
    /// Where frames go.
    pub output: DisplayOutput,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        Self {
            overlay: true,
            output: DisplayOutput::None,
        }
    }
}

impl DeviceConfig {
    /// Checks every field, naming the first one that is wrong.
    ///
    /// ```
    /// use firmware_config::config::DeviceConfig;
    /// let mut config = DeviceConfig::default();
    /// assert!(config.validate().is_ok());
    /// config.camera.width = 0;
    /// assert!(config.validate().unwrap_err().to_string().contains("camera.width"));
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let id = &self.device.id;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::invalid(
                "device.id",
                alloc::format!("{id:?}: use 1+ letters, digits, '-', '_' or '.'"),
            ));
        }
        let cam = &self.camera;
        if cam.device.is_empty() {
            return Err(Error::invalid("camera.device", "empty: e.g. /dev/video0"));
        }
        positive("camera.width", cam.width)?;
        positive("camera.height", cam.height)?;
        positive("camera.fps", cam.fps)?;
        if cam.pixel_formats.is_empty() {
            return Err(Error::invalid(
                "camera.pixel_formats",
                "empty: list at least one of \"yuyv\", \"mjpeg\"",
            ));
        }
        let det = &self.detector;
        unit_interval("detector.score_threshold", det.score_threshold)?;
        if !(det.nms_iou > 0.0 && det.nms_iou <= 1.0) {
            return Err(Error::invalid(
                "detector.nms_iou",
                alloc::format!("{} is outside (0, 1]", det.nms_iou),
            ));
        }
        if det.kind != DetectorKind::None && det.model_file.is_empty() {
            return Err(Error::invalid(
                "detector.model_file",
                "empty: name the detector file in the bundle, or set kind = \"none\"",
            ));
        }
        if det.kind != DetectorKind::None && !crate::is_plain_file_name(&det.model_file) {
            return Err(Error::invalid(
                "detector.model_file",
                alloc::format!(
                    "{:?}: a plain file name in the bundle (letters, digits, '.', '_', '-'), \
                     not a path",
                    det.model_file
                ),
            ));
        }
        if let Some(margin) = det.crop_margin
            && !CROP_MARGIN_RANGE.contains(&margin)
        {
            return Err(Error::invalid(
                "detector.crop_margin",
                alloc::format!(
                    "{margin} is outside [{}, {}]",
                    CROP_MARGIN_RANGE.start(),
                    CROP_MARGIN_RANGE.end()
                ),
            ));
        }
        if !(1..=MAX_DETECT_INTERVAL).contains(&det.interval) {
            return Err(Error::invalid(
                "detector.interval",
                alloc::format!(
                    "{} is outside 1..={MAX_DETECT_INTERVAL} (1 runs the detector on every frame)",
                    det.interval
                ),
            ));
        }
        let cls = &self.classifier;
        unit_interval("classifier.default_threshold", cls.default_threshold)?;
        for (i, t) in cls.class_thresholds.iter().enumerate() {
            unit_interval(
                &alloc::format!("classifier.class_thresholds[{i}]"),
                t.threshold,
            )?;
            if cls.class_thresholds[..i].iter().any(|o| o.class == t.class) {
                return Err(Error::invalid(
                    alloc::format!("classifier.class_thresholds[{i}].class"),
                    alloc::format!("{:?} is listed twice", t.class),
                ));
            }
        }
        if !(cls.smoothing > 0.0 && cls.smoothing <= 1.0) {
            return Err(Error::invalid(
                "classifier.smoothing",
                alloc::format!("{} is outside (0, 1]: 1 disables smoothing", cls.smoothing),
            ));
        }
        let log = &self.field_log;
        if log.enabled {
            if log.directory.is_empty() {
                return Err(Error::invalid("field_log.directory", "empty"));
            }
            let largest = crate::segment::MAX_SEGMENT_BYTES / 2;
            if !(1024..=largest).contains(&log.segment_bytes) {
                return Err(Error::invalid(
                    "field_log.segment_bytes",
                    alloc::format!("{} is outside [1024, {largest}]", log.segment_bytes),
                ));
            }
            if log.quota_bytes < log.segment_bytes {
                return Err(Error::invalid(
                    "field_log.quota_bytes",
                    alloc::format!(
                        "{} is smaller than one segment ({})",
                        log.quota_bytes,
                        log.segment_bytes
                    ),
                ));
            }
        }
        if let DisplayOutput::Snapshots {
            directory,
            every_n_frames,
        } = &self.display.output
        {
            if directory.is_empty() {
                return Err(Error::invalid(
                    "display.output.snapshots.directory",
                    "empty",
                ));
            }
            positive("display.output.snapshots.every_n_frames", *every_n_frames)?;
        }
        Ok(())
    }
}

fn positive(field: &str, value: u32) -> Result<(), Error> {
    if value == 0 {
        Err(Error::invalid(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn unit_interval(field: &str, value: f32) -> Result<(), Error> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            alloc::format!("{value} is outside [0, 1]"),
        ))
    }
}

/// [`as_written`] for an optional value (TOML leaves `None` out).
fn option_as_written<S: Serializer>(value: &Option<f32>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) if serializer.is_human_readable() => as_written(v, serializer),
        other => other.serialize(serializer),
    }
}

/// Writes an f32 the way a person wrote it in text formats (TOML, JSON): `0.7`, not the
/// `0.699999988079071` of its widening to f64. Binary formats (postcard) keep the four bytes.
fn as_written<S: Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        // The shortest decimal that reads back as this f32, read as an f64.
        let shortest = alloc::format!("{value}")
            .parse()
            .unwrap_or(f64::from(*value));
        serializer.serialize_f64(shortest)
    } else {
        serializer.serialize_f32(*value)
    }
}
