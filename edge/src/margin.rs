//! Measuring the crop margin of a detector: how the boxes it draws around faces relate to the
//! framing of the face crops the model was trained on.
//!
//! A model trained on face crops (FER2013's 48x48 faces, or a dataset cut by another
//! detector) expects faces framed the way those crops are. On a board, [`board_crop`] cuts
//! `max(w, h) * (1 + 2 * margin)` around the detector's box, so the margin that reproduces the
//! training framing depends on the detector, and is measured here rather than guessed:
//!
//! 1. each training crop is scaled to [`FACE_SHARE`] of the frame height and placed in the
//!    middle of a frame of the board camera's size, whose border repeats the crop's edge
//!    pixels (no artificial edge for the detector to latch onto);
//! 2. the detector's most confident box whose centre lies inside the placed crop is kept;
//! 3. that crop's margin is `(S / max(w, h) - 1) / 2` (`S` the placed crop's side), the
//!    margin that makes [`board_crop`] cut exactly the training framing around that box.
//!
//! The median over the images is the measurement; the quartiles say how consistent it is, and
//! the share of crops with a face found says whether the detector suits these faces at all.
//!
//! [`board_crop`]: firmware_config::preprocess::board_crop

use std::path::PathBuf;

use firmware_config::preprocess::{FaceBox, ImageBuf, ImageView, PixelFormat};
use serde::Serialize;

use crate::detect::Detector;
use crate::error::{Error, Result};

/// The placed crop's side as a share of the frame height.
pub const FACE_SHARE: f32 = 0.5;

/// How an image of a face-crop folder reaches the detector when the board path is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// As it is: the image is a camera frame, or (no detector) the face itself.
    AsIs,
    /// Placed in a board-camera frame of this size by [`place_in_frame`], so that a detector
    /// meets a face crop the way it meets a face in the field.
    InFrame {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
}

impl Framing {
    /// [`Framing::InFrame`] for a detector, [`Framing::AsIs`] without one.
    pub fn for_detector(detector: &Detector, width: u32, height: u32) -> Self {
        match detector {
            Detector::WholeFrame => Framing::AsIs,
            _ => Framing::InFrame { width, height },
        }
    }

    /// The frame the detector sees for `image`, and the face box to classify (`None`: the
    /// detector found no face).
    pub fn detect(
        self,
        detector: &Detector,
        image: &ImageBuf,
    ) -> Result<(ImageBuf, Option<FaceBox>)> {
        match self {
            Framing::AsIs => {
                let best = detector.detect(&image.view())?.into_iter().next();
                Ok((image.clone(), best.map(|d| d.face)))
            }
            Framing::InFrame { width, height } => {
                let side = (height as f32 * FACE_SHARE).round() as u32;
                let (frame, placed) = place_in_frame(&image.view(), width, height, side)?;
                let found = find_placed_face(detector, &frame.view(), &placed)?;
                Ok((frame, found))
            }
        }
    }
}

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarginReport {
    /// Crops tried.
    pub images: usize,
    /// Crops in which the detector found the face.
    pub detected: usize,
    /// The median margin (the value to put in the manifest).
    pub margin: f32,
    /// Its lower quartile.
    pub lower_quartile: f32,
    /// Its upper quartile.
    pub upper_quartile: f32,
    /// Median horizontal offset of the box centre from the crop centre, as a share of the
    /// crop side (positive: right).
    pub offset_x: f32,
    /// Median vertical offset (positive: down).
    pub offset_y: f32,
}

/// `crop` scaled to a square of `side` pixels in the middle of a `width x height` frame whose
/// border repeats the crop's edge pixels; returns the frame (RGB) and where the crop is.
pub fn place_in_frame(
    crop: &ImageView<'_>,
    width: u32,
    height: u32,
    side: u32,
) -> Result<(ImageBuf, FaceBox)> {
    if side == 0 || side > width || side > height {
        return Err(Error::invalid(
            "margin frame",
            format!("a {side}px face does not fit a {width}x{height} frame"),
        ));
    }
    let owned = ImageBuf::new(crop.width, crop.height, crop.format, crop.data.to_vec())
        .map_err(|e| Error::invalid("face crop", e.to_string()))?;
    let scaled = image::imageops::resize(
        &crate::rgb_image(&owned),
        side,
        side,
        image::imageops::FilterType::Triangle,
    );
    let (x0, y0) = ((width - side) / 2, (height - side) / 2);
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        let sy = y.saturating_sub(y0).min(side - 1);
        for x in 0..width {
            let sx = x.saturating_sub(x0).min(side - 1);
            pixels.extend_from_slice(&scaled.get_pixel(sx, sy).0);
        }
    }
    let frame = ImageBuf::new(width, height, PixelFormat::Rgb8, pixels)
        .map_err(|e| Error::invalid("margin frame", e.to_string()))?;
    let placed = FaceBox {
        x: x0 as f32,
        y: y0 as f32,
        width: side as f32,
        height: side as f32,
    };
    Ok((frame, placed))
}

/// The detector's most confident box centred inside `placed`, if any.
pub fn find_placed_face(
    detector: &Detector,
    frame: &ImageView<'_>,
    placed: &FaceBox,
) -> Result<Option<FaceBox>> {
    let inside = |f: &FaceBox| {
        let (cx, cy) = (f.x + f.width / 2.0, f.y + f.height / 2.0);
        cx >= placed.x
            && cx <= placed.x + placed.width
            && cy >= placed.y
            && cy <= placed.y + placed.height
    };
    Ok(detector
        .detect(frame)?
        .into_iter()
        .filter(|d| inside(&d.face))
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .map(|d| d.face))
}

/// The margin at which `board_crop` around `found` cuts exactly `placed`.
pub fn margin_for(found: &FaceBox, placed: &FaceBox) -> f32 {
    (placed.width / found.width.max(found.height) - 1.0) / 2.0
}

/// At most `limit` image files under `root` (a folder, searched recursively, or one image),
/// taken evenly across the sorted list.
pub fn sample_images(root: &std::path::Path, limit: usize) -> Result<Vec<PathBuf>> {
    let all = if root.is_dir() {
        firmware_config::image_folder::list_images_recursive(root)
            .map_err(|e| Error::io("listing", root, e))?
    } else {
        vec![root.to_path_buf()]
    };
    if all.is_empty() {
        return Err(Error::invalid(
            root.display().to_string(),
            "holds no PNG or JPEG face crops",
        ));
    }
    let n = limit.clamp(1, all.len());
    Ok((0..n).map(|i| all[i * all.len() / n].clone()).collect())
}

fn quantile(sorted: &[f32], q: f32) -> f32 {
    let at = ((sorted.len() - 1) as f32 * q).round() as usize;
    sorted[at]
}

/// Measures the margin of `detector` on the crops in `images` (files), in frames of
/// `width x height` (the board camera's size).
pub fn measure(
    detector: &Detector,
    images: &[PathBuf],
    width: u32,
    height: u32,
) -> Result<MarginReport> {
    if matches!(detector, Detector::WholeFrame) {
        return Err(Error::invalid(
            "detector",
            "with no detector the whole image is the crop; there is no margin to measure",
        ));
    }
    let side = (height as f32 * FACE_SHARE).round() as u32;
    let (mut margins, mut dx, mut dy) = (Vec::new(), Vec::new(), Vec::new());
    for path in images {
        let crop = crate::load_image(path)?;
        let (frame, placed) = place_in_frame(&crop.view(), width, height, side)?;
        if let Some(found) = find_placed_face(detector, &frame.view(), &placed)? {
            margins.push(margin_for(&found, &placed));
            let centre = |f: &FaceBox| (f.x + f.width / 2.0, f.y + f.height / 2.0);
            let ((fx, fy), (px, py)) = (centre(&found), centre(&placed));
            dx.push((fx - px) / placed.width);
            dy.push((fy - py) / placed.height);
        }
    }
    if margins.is_empty() {
        return Err(Error::invalid(
            "detector",
            format!(
                "found no face in any of the {} crops; check that the images are face crops \
                 and that the detector suits them",
                images.len()
            ),
        ));
    }
    for v in [&mut margins, &mut dx, &mut dy] {
        v.sort_by(f32::total_cmp);
    }
    Ok(MarginReport {
        images: images.len(),
        detected: margins.len(),
        margin: quantile(&margins, 0.5),
        lower_quartile: quantile(&margins, 0.25),
        upper_quartile: quantile(&margins, 0.75),
        offset_x: quantile(&dx, 0.5),
        offset_y: quantile(&dy, 0.5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crop_sits_in_the_middle_and_the_border_repeats_its_edges() {
        // A 2x2 crop: 10 20 / 30 40, scaled to 2 (no change) in a 6x4 frame.
        let crop = ImageBuf::new(2, 2, PixelFormat::Gray8, vec![10, 20, 30, 40]).unwrap();
        let (frame, placed) = place_in_frame(&crop.view(), 6, 4, 2).unwrap();
        assert_eq!(
            placed,
            FaceBox {
                x: 2.0,
                y: 1.0,
                width: 2.0,
                height: 2.0
            }
        );
        let gray: Vec<u8> = frame.pixels.chunks(3).map(|p| p[0]).collect();
        assert_eq!(
            gray,
            vec![
                10, 10, 10, 20, 20, 20, //
                10, 10, 10, 20, 20, 20, //
                30, 30, 30, 40, 40, 40, //
                30, 30, 30, 40, 40, 40,
            ]
        );
        assert!(place_in_frame(&crop.view(), 6, 4, 5).is_err());
    }

    #[test]
    fn the_margin_makes_the_board_crop_equal_the_placed_crop() {
        let placed = FaceBox {
            x: 100.0,
            y: 60.0,
            width: 120.0,
            height: 120.0,
        };
        // A detector box of 80 px needs 20 px more on each side: margin 0.25.
        let found = FaceBox {
            x: 120.0,
            y: 80.0,
            width: 80.0,
            height: 70.0,
        };
        let m = margin_for(&found, &placed);
        assert!((m - 0.25).abs() < 1e-6, "{m}");
        assert_eq!(80.0 * (1.0 + 2.0 * m), placed.width);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
    }

    #[test]
    fn no_detector_has_no_margin_to_measure() {
        let err = measure(&Detector::WholeFrame, &[], 320, 240).unwrap_err();
        assert!(err.to_string().contains("whole image is the crop"), "{err}");
    }
}
