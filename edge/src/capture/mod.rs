//! Frame sources: a V4L2 camera, image files or folders, and synthetic faces with known
//! expressions (drawn by [`crate::synthetic`]); plus the capture thread that keeps only the
//! newest frame. Where frames go afterwards is [`crate::display`].
//!
//! Every source yields [`Frame`]s: packed RGB ([`PixelFormat::Rgb8`]) with a sequence number
//! and a capture timestamp. A board runs a source on its own thread through
//! [`CaptureThread`], so a slow model never makes the camera queue (and the latency) grow.
//!
//! ```
//! use edge::capture::{CaptureThread, SourceSpec, StopToken};
//! use firmware_config::config::CameraConfig;
//!
//! let spec: SourceSpec = "synthetic:7".parse()?;
//! let mut source = spec.open(&CameraConfig::default(), Some(3))?;
//! let first = source.next_frame(&StopToken::new())?.expect("a synthetic frame");
//! assert_eq!(first.seq, 0);
//! let capture = CaptureThread::spawn(source);
//! while let Some(frame) = capture.next_frame()? {
//!     assert_eq!(frame.image.format, firmware_config::preprocess::PixelFormat::Rgb8);
//! }
//! # Ok::<(), edge::Error>(())
//! ```

pub mod camera;
pub mod files;
pub mod mjpeg;
pub mod negotiate;
pub mod synthetic;
mod thread;
pub mod yuyv;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firmware_config::config::CameraConfig;
use firmware_config::preprocess::{ImageBuf, PixelFormat};

use crate::Error;
use crate::pixels::rgb_image;

pub use thread::{CaptureStats, CaptureThread};

/// A frame buffer whose layout does not fit its format (an [`Error::Invalid`] naming the
/// format and size).
pub(crate) fn bad_frame(format: &str, width: u32, height: u32, reason: impl Into<String>) -> Error {
    Error::invalid(format!("{format} frame ({width}x{height})"), reason)
}

/// A JPEG decoder error as an [`Error::Invalid`].
pub(crate) fn jpeg_error(e: image::ImageError) -> Error {
    Error::invalid("MJPEG frame", format!("the JPEG decoder refused it: {e}"))
}

/// A folder with no usable image.
pub(crate) fn no_images(folder: &std::path::Path, reason: impl Into<String>) -> Error {
    Error::invalid(format!("image folder {}", folder.display()), reason)
}

/// A captured frame: packed RGB, numbered and timestamped.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the source's sequence, from 0, counting every frame the source produced
    /// (so gaps seen by a consumer are frames the capture thread dropped).
    pub seq: u64,
    /// Wall-clock capture time, milliseconds since the Unix epoch (for field records).
    pub timestamp_ms: u64,
    /// Monotonic capture time (for latency).
    pub captured_at: Instant,
    /// The pixels, always [`PixelFormat::Rgb8`].
    pub image: ImageBuf,
    /// The file the frame came from (image sources only).
    pub path: Option<PathBuf>,
    /// Faces whose box and expression are known (synthetic sources only).
    pub truth: Vec<crate::synthetic::TruthFace>,
}

impl Frame {
    /// A frame captured now from packed RGB bytes.
    pub fn new(seq: u64, width: u32, height: u32, rgb: Vec<u8>) -> Result<Self, Error> {
        Ok(Self {
            seq,
            timestamp_ms: unix_ms(SystemTime::now()),
            captured_at: Instant::now(),
            image: ImageBuf::new(width, height, PixelFormat::Rgb8, rgb)
                .map_err(|e| Error::invalid("frame", e.to_string()))?,
            path: None,
            truth: Vec::new(),
        })
    }

    /// The frame as an `image` crate buffer (for encoding).
    pub fn to_rgb_image(&self) -> image::RgbImage {
        rgb_image(&self.image)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a source has counted so far (problems it survived rather than failing on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Frames produced.
    pub frames: u64,
    /// Inputs skipped: unreadable images in a folder, camera frames that failed to decode.
    pub skipped: u64,
    /// Times the camera disappeared or stalled mid-run.
    pub disconnects: u64,
    /// Times it was opened again after that.
    pub reconnects: u64,
    /// Failed attempts to reopen it.
    pub failed_reopens: u64,
    /// The most recent of those problems, for the operator.
    pub last_problem: Option<String>,
}

/// A producer of frames.
pub trait FrameSource: Send {
    /// The next frame, or `None` when the source has ended or `stop` was raised while it
    /// waited. Sources that wait (a camera reconnecting) check `stop` at least every 100 ms.
    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, Error>;

    /// `true` for sources that produce in real time (a camera, a paced synthetic stream):
    /// the capture thread then drops unconsumed frames instead of waiting for the consumer.
    fn is_live(&self) -> bool;

    /// One line for logs: what the source is (`camera /dev/video0 YUYV 640x480@30`, ...).
    fn describe(&self) -> String;

    /// Problems survived so far.
    fn counters(&self) -> SourceCounters;
}

/// A shared stop flag with an interruptible sleep.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// A token that is not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag (all clones see it).
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// `true` once raised.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` in slices of at most 50 ms; returns `false` (early) when raised.
    pub fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        loop {
            if self.is_stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// Which source to open, as written on the command line.
///
/// * `camera` (the configured device) or `camera:/dev/video2`, or a `/dev/video*` path;
/// * `synthetic` or `synthetic:SEED`: cartoon faces with known expressions, at the
///   configured camera size, paced at the configured fps; `moving` or `moving:SEED`: the same
///   faces moving across a still background (for detection intervals);
/// * `folder:PATH`, `image:PATH`, or any other text: an image file (PNG/JPEG) or a folder of
///   them (the prefixes only make the intent explicit; both accept either).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A V4L2 camera; `None` uses the configured device.
    Camera(Option<String>),
    /// Image file or folder.
    Images {
        /// File or folder.
        path: PathBuf,
        /// Start again after the last image.
        looping: bool,
    },
    /// Procedurally drawn faces.
    Synthetic {
        /// Random seed (same seed, same frames).
        seed: u64,
        /// Faces move across a still background instead of a fresh picture every frame.
        moving: bool,
    },
}

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::invalid(format!("frame source {s:?}"), reason);
        if s.is_empty() {
            return Err(invalid(
                "empty; use camera, camera:/dev/videoN, synthetic[:SEED], moving[:SEED] or an \
                 image file/folder",
            ));
        }
        if s == "camera" {
            return Ok(Self::Camera(None));
        }
        if let Some(device) = s.strip_prefix("camera:") {
            if device.is_empty() {
                return Err(invalid("camera: needs a device, e.g. camera:/dev/video0"));
            }
            return Ok(Self::Camera(Some(device.to_string())));
        }
        if s.starts_with("/dev/video") {
            return Ok(Self::Camera(Some(s.to_string())));
        }
        for (name, moving) in [("synthetic", false), ("moving", true)] {
            if s == name {
                return Ok(Self::Synthetic { seed: 0, moving });
            }
            if let Some(seed) = s.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
                let seed = seed
                    .parse()
                    .map_err(|_| invalid("the synthetic seed must be a whole number"))?;
                return Ok(Self::Synthetic { seed, moving });
            }
        }
        let path = ["folder:", "image:"]
            .iter()
            .find_map(|prefix| s.strip_prefix(prefix))
            .unwrap_or(s);
        if path.is_empty() {
            return Err(invalid(
                "needs a path, e.g. folder:faces/ or image:photo.png",
            ));
        }
        Ok(Self::Images {
            path: PathBuf::from(path),
            looping: false,
        })
    }
}

impl SourceSpec {
    /// Opens the source. `camera` gives the device, size, fps and formats (and the size and
    /// pace of synthetic frames); `limit` ends the source after that many frames.
    pub fn open(
        &self,
        camera: &CameraConfig,
        limit: Option<u64>,
    ) -> Result<Box<dyn FrameSource>, Error> {
        let source: Box<dyn FrameSource> = match self {
            Self::Camera(device) => {
                let mut config = camera.clone();
                if let Some(device) = device {
                    config.device.clone_from(device);
                }
                Box::new(camera::open_camera(&config, camera::Backoff::default())?)
            }
            Self::Images { path, looping } => Box::new(files::ImageSource::open(path, *looping)?),
            Self::Synthetic { seed, moving } => {
                let faces = crate::synthetic::SyntheticConfig {
                    width: camera.width,
                    height: camera.height,
                    ..crate::synthetic::SyntheticConfig::default()
                };
                let fps = (camera.fps > 0).then_some(camera.fps as f32);
                if *moving {
                    Box::new(synthetic::SyntheticSource::moving(faces, *seed, fps)?)
                } else {
                    Box::new(synthetic::SyntheticSource::new(faces, *seed, fps)?)
                }
            }
        };
        Ok(match limit {
            Some(limit) => Box::new(Limited {
                inner: source,
                left: limit,
            }),
            None => source,
        })
    }
}

/// A source that ends after a number of frames.
struct Limited {
    inner: Box<dyn FrameSource>,
    left: u64,
}

impl FrameSource for Limited {
    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        let frame = self.inner.next_frame(stop)?;
        if frame.is_some() {
            self.left -= 1;
        }
        Ok(frame)
    }

    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    fn describe(&self) -> String {
        format!("{} (limited)", self.inner.describe())
    }

    fn counters(&self) -> SourceCounters {
        self.inner.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "camera".parse::<SourceSpec>().unwrap(),
            SourceSpec::Camera(None)
        );
        assert_eq!(
            "camera:/dev/video3".parse::<SourceSpec>().unwrap(),
            SourceSpec::Camera(Some("/dev/video3".into()))
        );
        assert_eq!(
            "/dev/video1".parse::<SourceSpec>().unwrap(),
            SourceSpec::Camera(Some("/dev/video1".into()))
        );
        assert_eq!(
            "synthetic:42".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic {
                seed: 42,
                moving: false
            }
        );
        assert_eq!(
            "moving:7".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic {
                seed: 7,
                moving: true
            }
        );
        assert_eq!(
            "faces/".parse::<SourceSpec>().unwrap(),
            SourceSpec::Images {
                path: "faces/".into(),
                looping: false
            }
        );
        assert_eq!(
            "folder:faces".parse::<SourceSpec>().unwrap(),
            SourceSpec::Images {
                path: "faces".into(),
                looping: false
            }
        );
        assert_eq!(
            "image:a.png".parse::<SourceSpec>().unwrap(),
            SourceSpec::Images {
                path: "a.png".into(),
                looping: false
            }
        );
        assert!("folder:".parse::<SourceSpec>().is_err());
        assert!("synthetic:x".parse::<SourceSpec>().is_err());
        assert!("camera:".parse::<SourceSpec>().is_err());
        assert!("".parse::<SourceSpec>().is_err());
    }

    #[test]
    fn limit_ends_the_source() {
        let mut camera = CameraConfig::default();
        camera.width = 64;
        camera.height = 48;
        camera.fps = 0;
        let mut source = SourceSpec::Synthetic {
            seed: 1,
            moving: false,
        }
        .open(&camera, Some(2))
        .unwrap();
        let stop = StopToken::new();
        assert!(!source.is_live());
        let a = source.next_frame(&stop).unwrap().unwrap();
        let b = source.next_frame(&stop).unwrap().unwrap();
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!((a.image.width, a.image.height), (64, 48));
        assert!(source.next_frame(&stop).unwrap().is_none());
    }

    #[test]
    fn stop_token_interrupts_sleep() {
        let token = StopToken::new();
        assert!(token.sleep(Duration::from_millis(1)));
        let other = token.clone();
        let t = Instant::now();
        let waiter = std::thread::spawn(move || other.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        token.stop();
        assert!(!waiter.join().unwrap());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
