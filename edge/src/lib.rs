//! On-board face and expression inference.
//!
//! The pipeline of `fer-edge run`: a frame source, face detection ([`detect`]: UltraFace in
//! tract, an OpenCV cascade, or the whole frame), expression classification of every face in
//! one batch ([`classify`], preprocessing taken from the model manifest through
//! `firmware_config`), per-face tracks with smoothed probabilities ([`track`]), overlays, and
//! the crash-safe field log of low-confidence faces ([`fieldlog`]); [`pipeline`] ties them
//! together and measures every stage, [`bench`] measures them alone.
//!
//! Frames come from [`capture`] (a camera, image files, or [`synthetic`] faces) and go to
//! [`display`] (snapshots, the framebuffer). [`bundle`] verifies signed model bundles and
//! switches the board's A/B slots; [`durable`] holds the writes that survive a power cut.

pub mod bench;
pub mod bundle;
pub mod capture;
pub mod classify;
pub mod detect;
pub mod display;
pub mod durable;
pub mod error;
pub mod fieldlog;
pub mod margin;
pub mod overlay;
pub mod pipeline;
pub mod pixels;
pub mod synthetic;
pub mod tally;
pub mod track;

pub use error::{Error, Result};
pub use pixels::{load_image, rgb_image};

use std::path::Path;

use firmware_config::config::DeviceConfig;

/// Reads a device config: `*.toml` as TOML, anything else in flash encoding (`config.bin`).
/// Every field is checked.
pub fn read_config(path: &Path) -> Result<DeviceConfig> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let fail = |reason: String| Error::Contract {
        path: path.to_path_buf(),
        reason,
    };
    let config = if path.extension().is_some_and(|e| e == "toml") {
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
        toml::from_str::<DeviceConfig>(&text)
            .map_err(|e| fail(format!("not a device config: {e}")))?
    } else {
        firmware_config::flash::decode_config(&bytes)
            .map_err(|e| fail(format!("not a flash-encoded device config: {e}")))?
    };
    config.validate().map_err(|e| fail(e.to_string()))?;
    Ok(config)
}

/// Sets how many threads tract's matrix products use (1 = the calling thread only).
pub fn set_threads(threads: usize) {
    use tract_linalg::multithread::{Executor, set_default_executor};
    set_default_executor(if threads <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(threads)
    });
}
