//! Frames from image files: one PNG/JPEG, or every PNG/JPEG in a folder (sorted by name).
//!
//! A single file that cannot be decoded is an error naming it. In a folder, an unreadable
//! image is skipped and counted (so one bad file does not stop a batch run); a folder in which
//! no image at all can be read is an error.

use std::path::{Path, PathBuf};

use firmware_config::image_folder::{IMAGE_EXTENSIONS, list_images};

use super::{Frame, FrameSource, SourceCounters, StopToken, no_images};
use crate::Error;
use crate::pixels::rgb_image;

/// Reads images from a file or a folder.
#[derive(Debug)]
pub struct ImageSource {
    root: PathBuf,
    files: Vec<PathBuf>,
    folder: bool,
    looping: bool,
    next: usize,
    /// Frames produced in the current pass (a pass with none while looping is an error).
    produced_this_pass: u64,
    seq: u64,
    counters: SourceCounters,
}

impl ImageSource {
    /// Opens `path` (a file, or a folder of images). With `looping`, the images repeat.
    pub fn open(path: &Path, looping: bool) -> Result<Self, Error> {
        let meta = std::fs::metadata(path)
            .map_err(|source| Error::io("opening the image source", path, source))?;
        let (files, folder) = if meta.is_dir() {
            let files = list_images(path)
                .map_err(|source| Error::io("listing the folder", path, source))?;
            (files, true)
        } else {
            (vec![path.to_path_buf()], false)
        };
        if files.is_empty() {
            return Err(no_images(
                path,
                format!(
                    "the folder holds no image files (looked for .{})",
                    IMAGE_EXTENSIONS.join(", .")
                ),
            ));
        }
        Ok(Self {
            root: path.to_path_buf(),
            files,
            folder,
            looping,
            next: 0,
            produced_this_pass: 0,
            seq: 0,
            counters: SourceCounters::default(),
        })
    }

    /// The files this source reads, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// Decodes an image file to an RGB frame (without sequence number; `seq` is set to 0).
pub fn load_frame(path: &Path) -> Result<Frame, Error> {
    let image = crate::load_image(path)?;
    let mut frame = Frame::new(0, image.width, image.height, rgb_image(&image).into_raw())?;
    frame.path = Some(path.to_path_buf());
    Ok(frame)
}

impl FrameSource for ImageSource {
    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, Error> {
        loop {
            if stop.is_stopped() {
                return Ok(None);
            }
            if self.next == self.files.len() {
                if self.produced_this_pass == 0 {
                    return Err(no_images(
                        &self.root,
                        format!(
                            "none of its {} image files could be decoded (last problem: {})",
                            self.files.len(),
                            self.counters.last_problem.as_deref().unwrap_or("none")
                        ),
                    ));
                }
                if !self.looping {
                    return Ok(None);
                }
                self.next = 0;
                self.produced_this_pass = 0;
            }
            let path = self.files[self.next].clone();
            self.next += 1;
            match load_frame(&path) {
                Ok(mut frame) => {
                    frame.seq = self.seq;
                    self.seq += 1;
                    self.produced_this_pass += 1;
                    self.counters.frames += 1;
                    return Ok(Some(frame));
                }
                Err(e) if self.folder => {
                    self.counters.skipped += 1;
                    self.counters.last_problem = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn is_live(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        let kind = if self.folder {
            format!("folder of {} images", self.files.len())
        } else {
            "image".to_string()
        };
        let looping = if self.looping { ", looping" } else { "" };
        format!("{kind} {}{looping}", self.root.display())
    }

    fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, v: u8) {
        image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn folder_is_sorted_skips_corrupt_files_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("b.png"), 4, 3, 20);
        write_png(&dir.path().join("a.PNG"), 5, 2, 10);
        std::fs::write(dir.path().join("c.jpg"), b"\xFF\xD8 definitely not a jpeg").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let mut src = ImageSource::open(dir.path(), true).unwrap();
        assert_eq!(src.files().len(), 3);
        let stop = StopToken::new();
        let names: Vec<(u64, String, u32)> = (0..4)
            .map(|_| {
                let f = src.next_frame(&stop).unwrap().unwrap();
                let name = f
                    .path
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (f.seq, name, f.image.width)
            })
            .collect();
        assert_eq!(
            names,
            [
                (0, "a.PNG".into(), 5),
                (1, "b.png".into(), 4),
                (2, "a.PNG".into(), 5),
                (3, "b.png".into(), 4)
            ]
        );
        let counters = src.counters();
        assert_eq!(counters.skipped, 1);
        assert!(counters.last_problem.unwrap().contains("c.jpg"));
    }

    #[test]
    fn single_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
        let mut src = ImageSource::open(&bad, false).unwrap();
        let err = src.next_frame(&StopToken::new()).unwrap_err();
        assert!(err.to_string().contains("broken.png"), "{err}");
    }

    #[test]
    fn empty_or_unreadable_folders_and_missing_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageSource::open(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("no image files"), "{err}");
        std::fs::write(dir.path().join("x.png"), b"junk").unwrap();
        let mut src = ImageSource::open(dir.path(), true).unwrap();
        let err = src.next_frame(&StopToken::new()).unwrap_err();
        assert!(err.to_string().contains("could be decoded"), "{err}");
        let err = ImageSource::open(&dir.path().join("missing"), false).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_real_photo_is_read_once_without_looping() {
        let Some(path) = testdata::shared_path("images/astronaut.png") else {
            return;
        };
        let mut src = ImageSource::open(&path, false).unwrap();
        let stop = StopToken::new();
        let frame = src.next_frame(&stop).unwrap().unwrap();
        assert_eq!((frame.image.width, frame.image.height), (512, 512));
        assert!(src.next_frame(&stop).unwrap().is_none());
    }
}
