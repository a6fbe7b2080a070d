//! Where annotated frames go, as `capture` is where they come from: snapshots in a folder
//! ([`snapshot`]), the Linux framebuffer ([`framebuffer`]), or nowhere.

pub mod framebuffer;
pub mod snapshot;

use std::path::Path;

use firmware_config::config::DisplayOutput;
use firmware_config::preprocess::ImageBuf;

use crate::Error;

pub use framebuffer::{BitField, FbGeometry, Framebuffer};
pub use snapshot::{SnapshotFormat, SnapshotWriter, save_image};

/// Where annotated frames go, from the device config's `display.output`.
#[derive(Debug)]
pub enum Display {
    /// Nowhere.
    None,
    /// Every n-th frame to a folder.
    Snapshots(SnapshotWriter),
    /// The framebuffer device.
    Framebuffer(Framebuffer),
}

impl Display {
    /// Opens the configured output (snapshots are PNG).
    pub fn from_config(output: &DisplayOutput) -> Result<Self, Error> {
        Ok(match output {
            DisplayOutput::Snapshots {
                directory,
                every_n_frames,
            } => Self::Snapshots(SnapshotWriter::new(
                Path::new(directory),
                *every_n_frames,
                SnapshotFormat::Png,
            )?),
            DisplayOutput::Framebuffer { device } => {
                Self::Framebuffer(Framebuffer::open(Path::new(device))?)
            }
            // None, and outputs a newer contract may add, which this build cannot show.
            _ => Self::None,
        })
    }

    /// Sends one (annotated) frame to the output.
    pub fn show(&mut self, frame: &ImageBuf, seq: u64) -> Result<(), Error> {
        match self {
            Self::None => Ok(()),
            Self::Snapshots(writer) => writer.offer(frame, seq).map(drop),
            Self::Framebuffer(fb) => fb.show(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::preprocess::PixelFormat;

    #[test]
    fn display_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let out = DisplayOutput::Snapshots {
            directory: dir.path().join("s").to_string_lossy().into_owned(),
            every_n_frames: 1,
        };
        let mut display = Display::from_config(&out).unwrap();
        display
            .show(
                &ImageBuf::new(4, 4, PixelFormat::Rgb8, vec![0; 48]).unwrap(),
                7,
            )
            .unwrap();
        assert!(dir.path().join("s/frame-00000007.png").exists());
        assert!(matches!(
            Display::from_config(&DisplayOutput::None).unwrap(),
            Display::None
        ));
    }
}
