//! Annotated frames saved as PNG or JPEG files, every n-th frame.

use std::fs::File;
use std::path::{Path, PathBuf};

use firmware_config::preprocess::ImageBuf;

use crate::Error;
use crate::pixels::rgb_image;

/// File format of snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// Lossless PNG.
    Png,
    /// JPEG at quality 90 (about a tenth of the size).
    Jpeg,
}

impl SnapshotFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
        }
    }
}

/// Writes every n-th frame to a folder as `frame-<seq>.png` (or `.jpg`).
#[derive(Debug)]
pub struct SnapshotWriter {
    dir: PathBuf,
    every_n: u64,
    format: SnapshotFormat,
    offered: u64,
    written: u64,
}

impl SnapshotWriter {
    /// Creates the folder if needed. `every_n_frames` of 0 is refused.
    pub fn new(dir: &Path, every_n_frames: u32, format: SnapshotFormat) -> Result<Self, Error> {
        if every_n_frames == 0 {
            return Err(Error::invalid(
                "display.output.every_n_frames",
                "must be at least 1 (1 = every frame)",
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating the snapshot folder", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            every_n: u64::from(every_n_frames),
            format,
            offered: 0,
            written: 0,
        })
    }

    /// Saves the frame if it is the n-th since the last one saved; returns the file written.
    pub fn offer(&mut self, frame: &ImageBuf, seq: u64) -> Result<Option<PathBuf>, Error> {
        let due = self.offered.is_multiple_of(self.every_n);
        self.offered += 1;
        if !due {
            return Ok(None);
        }
        let path = self
            .dir
            .join(format!("frame-{seq:08}.{}", self.format.extension()));
        save_image(frame, &path, self.format)?;
        self.written += 1;
        Ok(Some(path))
    }

    /// Snapshots written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// Writes an image as PNG or JPEG (quality 90).
pub fn save_image(frame: &ImageBuf, path: &Path, format: SnapshotFormat) -> Result<(), Error> {
    let rgb = rgb_image(frame);
    let result = match format {
        SnapshotFormat::Png => rgb.save_with_format(path, image::ImageFormat::Png),
        SnapshotFormat::Jpeg => File::create(path)
            .map_err(image::ImageError::IoError)
            .and_then(|file| {
                let mut out = std::io::BufWriter::new(file);
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&rgb)
            }),
    };
    result.map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io("writing the snapshot", path, io),
        other => Error::Image {
            path: path.to_path_buf(),
            source: other,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::preprocess::PixelFormat;

    #[test]
    fn snapshots_are_valid_pngs_every_n_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            SnapshotWriter::new(&dir.path().join("snaps"), 2, SnapshotFormat::Png).unwrap();
        let mut img = ImageBuf::new(32, 24, PixelFormat::Rgb8, vec![0; 32 * 24 * 3]).unwrap();
        img.pixels[0] = 200;
        let written: Vec<_> = (0..5).map(|seq| writer.offer(&img, seq).unwrap()).collect();
        assert_eq!(written.iter().flatten().count(), 3);
        let first = written[0].as_ref().unwrap();
        assert!(first.ends_with("frame-00000000.png"));
        let bytes = std::fs::read(first).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(back.into_raw(), img.pixels);
        assert_eq!(writer.written(), 3);
        let jpeg = dir.path().join("x.jpg");
        save_image(&img, &jpeg, SnapshotFormat::Jpeg).unwrap();
        assert_eq!(image::open(&jpeg).unwrap().width(), 32);
        assert!(SnapshotWriter::new(dir.path(), 0, SnapshotFormat::Png).is_err());
        let err = save_image(
            &img,
            &dir.path().join("no/such/dir/x.png"),
            SnapshotFormat::Png,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no/such/dir/x.png"), "{err}");
    }
}
