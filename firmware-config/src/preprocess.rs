//! Pixel buffers, face crops and model-input preprocessing: the one implementation.
//!
//! The trainer (evaluation, calibration, export self-test) and the board call the same
//! functions, with the parameters a [`crate::manifest::ModelManifest`] carries, so what a
//! model saw in training is exactly what it sees in the field.
//!
//! ```
//! use firmware_config::preprocess::{ImageBuf, PixelFormat, Preprocessing};
//!
//! let face = ImageBuf::new(48, 48, PixelFormat::Gray8, vec![128; 48 * 48])?;
//! let input = Preprocessing::default().apply(&face.view())?;
//! assert_eq!(input.len(), 64 * 64); // 1 channel, 64 x 64, as the default manifest says
//! # Ok::<(), firmware_config::Error>(())
//! ```

use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Colour channels the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ColorChannels {
    /// One channel, luma (BT.601 from RGB).
    #[default]
    Gray,
    /// Three channels, red, green, blue.
    Rgb,
}

impl ColorChannels {
    /// Number of channels.
    pub const fn count(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::Rgb => 3,
        }
    }
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TensorLayout {
    /// Batch, channels, height, width (our models).
    #[default]
    Nchw,
    /// Batch, height, width, channels (Keras-style models such as the mini-Xception peer).
    Nhwc,
}

/// How a face crop is resized to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResizeFilter {
    /// Bilinear with half-pixel centres.
    #[default]
    Bilinear,
    /// Nearest neighbour.
    Nearest,
}

/// `x = (p * scale - mean[c]) / std[c]` for a pixel value `p` in 0..=255.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Applied to the raw 0..=255 value first (1/255 maps to 0..=1).
    pub scale: f32,
    /// Per-channel mean, one per input channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, one per input channel, non-zero.
    pub std: Vec<f32>,
}

impl Normalization {
    /// A normalisation.
    pub fn new(scale: f32, mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self { scale, mean, std }
    }
}

impl Default for Normalization {
    /// Maps 0..=255 to -1..=1 for one channel.
    fn default() -> Self {
        Self {
            scale: 1.0 / 255.0,
            mean: vec![0.5],
            std: vec![0.5],
        }
    }
}

/// Everything between a detected face and the model's input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocessing {
    /// Input width in pixels.
    pub input_width: u32,
    /// Input height in pixels.
    pub input_height: u32,
    /// Input channels.
    pub channels: ColorChannels,
    /// Tensor layout.
    pub layout: TensorLayout,
    /// The crop around a detected face grows by this fraction of its size on each side.
    pub crop_margin: f32,
    /// Resize filter.
    pub resize: ResizeFilter,
    /// Value normalisation.
    pub normalization: Normalization,
}

impl Default for Preprocessing {
    /// 64 x 64 grayscale, NCHW, bilinear, values in -1..=1, a 10% crop margin.
    fn default() -> Self {
        Self {
            input_width: 64,
            input_height: 64,
            channels: ColorChannels::Gray,
            layout: TensorLayout::Nchw,
            crop_margin: 0.1,
            resize: ResizeFilter::Bilinear,
            normalization: Normalization::default(),
        }
    }
}

impl Preprocessing {
    /// The input tensor shape for a batch of `batch`, in this layout.
    pub fn input_shape(&self, batch: usize) -> [usize; 4] {
        let (c, h, w) = (
            self.channels.count(),
            self.input_height as usize,
            self.input_width as usize,
        );
        match self.layout {
            TensorLayout::Nchw => [batch, c, h, w],
            TensorLayout::Nhwc => [batch, h, w, c],
        }
    }

    /// Checks sizes and that the normalisation has one non-zero std per channel.
    pub fn validate(&self) -> Result<(), Error> {
        if self.input_width == 0 || self.input_height == 0 {
            return Err(Error::invalid(
                "preprocessing.input_width/input_height",
                "must be greater than 0",
            ));
        }
        if !CROP_MARGIN_RANGE.contains(&self.crop_margin) {
            return Err(Error::invalid(
                "preprocessing.crop_margin",
                alloc::format!(
                    "{} is outside [{}, {}]",
                    self.crop_margin,
                    CROP_MARGIN_RANGE.start(),
                    CROP_MARGIN_RANGE.end()
                ),
            ));
        }
        let n = &self.normalization;
        let c = self.channels.count();
        if n.mean.len() != c || n.std.len() != c {
            return Err(Error::invalid(
                "preprocessing.normalization",
                alloc::format!(
                    "{} mean and {} std values for {c} channel(s)",
                    n.mean.len(),
                    n.std.len()
                ),
            ));
        }
        if n.std.iter().any(|s| *s == 0.0 || !s.is_finite()) || !n.scale.is_finite() {
            return Err(Error::invalid(
                "preprocessing.normalization.std",
                "every std must be finite and non-zero",
            ));
        }
        Ok(())
    }
}

/// How the bytes of an image are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PixelFormat {
    /// One byte per pixel, luma.
    Gray8,
    /// Three bytes per pixel: red, green, blue.
    Rgb8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub const fn channels(self) -> usize {
        match self {
            Self::Gray8 => 1,
            Self::Rgb8 => 3,
        }
    }
}

/// A borrowed, tightly packed image (rows follow each other without padding).
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel layout.
    pub format: PixelFormat,
    /// `width * height * format.channels()` bytes.
    pub data: &'a [u8],
}

impl<'a> ImageView<'a> {
    /// A view, checked for a non-empty size and a matching buffer length.
    pub fn new(
        width: u32,
        height: u32,
        format: PixelFormat,
        data: &'a [u8],
    ) -> Result<Self, Error> {
        check_size(width, height, format, data.len())?;
        Ok(Self {
            width,
            height,
            format,
            data,
        })
    }

    fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let c = self.format.channels();
        let at = (y * self.width as usize + x) * c;
        &self.data[at..at + c]
    }
}

/// An owned, tightly packed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuf {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel layout.
    pub format: PixelFormat,
    /// `width * height * format.channels()` bytes.
    pub pixels: Vec<u8>,
}

impl ImageBuf {
    /// An image, checked for a non-empty size and a matching buffer length.
    pub fn new(
        width: u32,
        height: u32,
        format: PixelFormat,
        pixels: Vec<u8>,
    ) -> Result<Self, Error> {
        check_size(width, height, format, pixels.len())?;
        Ok(Self {
            width,
            height,
            format,
            pixels,
        })
    }

    /// An image from the 8-bit RGBA pixels an image decoder produced, by the one rule every
    /// decoded file follows on both sides: an image without colour (`has_color` false: gray,
    /// gray and alpha) stays [`PixelFormat::Gray8`] with its luma as stored; a colour image
    /// stays [`PixelFormat::Rgb8`], and only [`Preprocessing`] turns it gray (BT.601), never
    /// the decoder (the `image` crate's own conversion weighs channels by Rec. 709). Alpha is
    /// dropped.
    ///
    /// ```
    /// use firmware_config::preprocess::{ImageBuf, PixelFormat};
    ///
    /// let gray = ImageBuf::from_decoded_rgba(2, 1, false, &[9, 9, 9, 255, 7, 7, 7, 0])?;
    /// assert_eq!((gray.format, gray.pixels), (PixelFormat::Gray8, vec![9, 7]));
    /// let rgb = ImageBuf::from_decoded_rgba(1, 1, true, &[1, 2, 3, 4])?;
    /// assert_eq!((rgb.format, rgb.pixels), (PixelFormat::Rgb8, vec![1, 2, 3]));
    /// # Ok::<(), firmware_config::Error>(())
    /// ```
    pub fn from_decoded_rgba(
        width: u32,
        height: u32,
        has_color: bool,
        rgba: &[u8],
    ) -> Result<Self, Error> {
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(4))
            .unwrap_or(usize::MAX);
        if rgba.len() != expected {
            return Err(Error::invalid(
                "decoded image",
                alloc::format!(
                    "{} RGBA bytes for {width}x{height}, expected {expected}",
                    rgba.len()
                ),
            ));
        }
        let pixels = rgba.chunks_exact(4);
        let (format, pixels) = if has_color {
            (
                PixelFormat::Rgb8,
                pixels.flat_map(|p| [p[0], p[1], p[2]]).collect(),
            )
        } else {
            (PixelFormat::Gray8, pixels.map(|p| p[0]).collect())
        };
        Self::new(width, height, format, pixels)
    }

    /// Borrows the image.
    pub fn view(&self) -> ImageView<'_> {
        ImageView {
            width: self.width,
            height: self.height,
            format: self.format,
            data: &self.pixels,
        }
    }

    /// Checks that the buffer length matches the size (for decoded, untrusted records).
    pub fn validate(&self) -> Result<(), Error> {
        check_size(self.width, self.height, self.format, self.pixels.len())
    }
}

fn check_size(width: u32, height: u32, format: PixelFormat, len: usize) -> Result<(), Error> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(
            "image",
            alloc::format!("empty image ({width}x{height})"),
        ));
    }
    // Sizes come from the wire: a crafted width x height must not wrap (on 32-bit boards
    // neither) into the length of a small buffer.
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(format.channels()));
    match expected {
        Some(expected) if expected == len => Ok(()),
        Some(expected) => Err(Error::invalid(
            "image.pixels",
            alloc::format!(
                "{len} bytes for a {width}x{height} {format:?} image, expected {expected}"
            ),
        )),
        None => Err(Error::invalid(
            "image",
            alloc::format!("{width}x{height} {format:?} does not fit in memory"),
        )),
    }
}

/// A face box in frame pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct FaceBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
}

impl FaceBox {
    /// Intersection over union with `other` (0 when either is empty).
    pub fn iou(&self, other: &FaceBox) -> f32 {
        let ix = (self.x + self.width).min(other.x + other.width) - self.x.max(other.x);
        let iy = (self.y + self.height).min(other.y + other.height) - self.y.max(other.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.width * self.height + other.width * other.height - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// The crop margins a manifest or a detector config may set. Below 0 the crop is smaller than
/// the box (a detector whose boxes are looser than the training crops); -0.45 still keeps a
/// tenth of the box.
pub const CROP_MARGIN_RANGE: core::ops::RangeInclusive<f32> = -0.45..=2.0;

/// Cuts a square crop around `face`, its side `max(width, height) * (1 + 2 * margin)`, centred
/// on the box (`margin` is clamped to [`CROP_MARGIN_RANGE`]). Parts outside the frame repeat the nearest edge pixel, so the face stays centred
/// at frame borders. The crop keeps the frame's pixel format.
pub fn crop_face(frame: &ImageView<'_>, face: &FaceBox, margin: f32) -> Result<ImageBuf, Error> {
    if !(face.width > 0.0 && face.height > 0.0) {
        return Err(Error::invalid("face", alloc::format!("empty box {face:?}")));
    }
    let side = round(
        face.width.max(face.height)
            * (1.0 + 2.0 * margin.clamp(*CROP_MARGIN_RANGE.start(), *CROP_MARGIN_RANGE.end())),
    )
    .max(1);
    let (cx, cy) = (face.x + face.width / 2.0, face.y + face.height / 2.0);
    let x0 = round(cx - side as f32 / 2.0);
    let y0 = round(cy - side as f32 / 2.0);
    let side = side as u32;
    let c = frame.format.channels();
    let mut pixels = Vec::with_capacity(side as usize * side as usize * c);
    let (max_x, max_y) = (i64::from(frame.width) - 1, i64::from(frame.height) - 1);
    for dy in 0..i64::from(side) {
        let y = (y0 + dy).clamp(0, max_y) as usize;
        for dx in 0..i64::from(side) {
            let x = (x0 + dx).clamp(0, max_x) as usize;
            pixels.extend_from_slice(frame.pixel(x, y));
        }
    }
    ImageBuf::new(side, side, frame.format, pixels)
}

/// The crop a board classifies for `face`: the frame itself when the box covers the whole
/// frame, else [`crop_face`] with `margin`. "No detector" means the image already is the face
/// in the framing the model was trained on (a folder of face crops, a camera framed on one
/// face), so it is not padded or squared: a 10% margin on 48x48 FER2013 crops shrank every face
/// and cost 5 points of accuracy on the board that the trainer never saw.
pub fn board_crop(frame: &ImageView<'_>, face: &FaceBox, margin: f32) -> Result<ImageBuf, Error> {
    let whole = FaceBox {
        x: 0.0,
        y: 0.0,
        width: frame.width as f32,
        height: frame.height as f32,
    };
    if *face == whole {
        return ImageBuf::new(frame.width, frame.height, frame.format, frame.data.to_vec());
    }
    crop_face(frame, face, margin)
}

impl Preprocessing {
    /// Number of values in one sample's input tensor.
    pub fn input_len(&self) -> usize {
        self.input_width as usize * self.input_height as usize * self.channels.count()
    }

    /// Turns a face crop into one sample of model input: resize to the input size, convert
    /// channels (RGB to gray by BT.601 luma), normalise `(p * scale - mean[c]) / std[c]`, and
    /// lay out as the manifest says (CHW or HWC, without the batch dimension).
    pub fn apply(&self, face: &ImageView<'_>) -> Result<Vec<f32>, Error> {
        let mut out = alloc::vec![0.0; self.input_len()];
        self.apply_into(face, &mut out)?;
        Ok(out)
    }

    /// [`Preprocessing::apply`] into a caller's buffer of [`Preprocessing::input_len`] values
    /// (one slot of a batch), without allocating.
    pub fn apply_into(&self, face: &ImageView<'_>, out: &mut [f32]) -> Result<(), Error> {
        self.validate()?;
        check_size(face.width, face.height, face.format, face.data.len())?;
        if out.len() != self.input_len() {
            return Err(Error::invalid(
                "output buffer",
                alloc::format!("{} values, expected {}", out.len(), self.input_len()),
            ));
        }
        let (ow, oh) = (self.input_width as usize, self.input_height as usize);
        let channels = self.channels.count();
        let sx = face.width as f32 / ow as f32;
        let sy = face.height as f32 / oh as f32;
        for oy in 0..oh {
            for ox in 0..ow {
                for c in 0..channels {
                    let raw = match self.resize {
                        ResizeFilter::Nearest => {
                            let x = ((ox as f32 + 0.5) * sx) as usize;
                            let y = ((oy as f32 + 0.5) * sy) as usize;
                            sample(
                                face,
                                x.min(face.width as usize - 1),
                                y.min(face.height as usize - 1),
                                self.channels,
                                c,
                            )
                        }
                        ResizeFilter::Bilinear => bilinear(face, ox, oy, sx, sy, self.channels, c),
                    };
                    let value = (raw * self.normalization.scale - self.normalization.mean[c])
                        / self.normalization.std[c];
                    let at = match self.layout {
                        TensorLayout::Nchw => (c * oh + oy) * ow + ox,
                        TensorLayout::Nhwc => (oy * ow + ox) * channels + c,
                    };
                    out[at] = value;
                }
            }
        }
        Ok(())
    }
}

/// Channel `c` of pixel (x, y), converted to the model's channels, as 0..=255.
fn sample(img: &ImageView<'_>, x: usize, y: usize, to: ColorChannels, c: usize) -> f32 {
    let p = img.pixel(x, y);
    match (img.format, to) {
        (PixelFormat::Gray8, _) => f32::from(p[0]),
        (PixelFormat::Rgb8, ColorChannels::Rgb) => f32::from(p[c]),
        (PixelFormat::Rgb8, ColorChannels::Gray) => {
            0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
        }
    }
}

/// Rounds half away from zero (`f32::round` is not in `core`).
fn round(x: f32) -> i64 {
    if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    }
}

/// Bilinear sample with half-pixel centres (as OpenCV's INTER_LINEAR and PyTorch's
/// `align_corners=False`), clamped at the borders.
fn bilinear(
    img: &ImageView<'_>,
    ox: usize,
    oy: usize,
    sx: f32,
    sy: f32,
    to: ColorChannels,
    c: usize,
) -> f32 {
    let (w, h) = (img.width as usize, img.height as usize);
    let fx = ((ox as f32 + 0.5) * sx - 0.5).max(0.0);
    let fy = ((oy as f32 + 0.5) * sy - 0.5).max(0.0);
    let (x0, y0) = ((fx as usize).min(w - 1), (fy as usize).min(h - 1));
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
    let top = sample(img, x0, y0, to, c) * (1.0 - ax) + sample(img, x1, y0, to, c) * ax;
    let bottom = sample(img, x0, y1, to, c) * (1.0 - ax) + sample(img, x1, y1, to, c) * ax;
    top * (1.0 - ay) + bottom * ay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: u32, height: u32, f: impl Fn(u32, u32) -> u8) -> ImageBuf {
        let mut px = Vec::new();
        for y in 0..height {
            for x in 0..width {
                px.push(f(x, y));
            }
        }
        ImageBuf::new(width, height, PixelFormat::Gray8, px).unwrap()
    }

    #[test]
    fn identity_size_is_exact_and_normalised() {
        let img = gray(4, 3, |x, y| (x * 10 + y) as u8);
        let pre = Preprocessing {
            input_width: 4,
            input_height: 3,
            normalization: Normalization {
                scale: 1.0,
                mean: vec![0.0],
                std: vec![1.0],
            },
            ..Preprocessing::default()
        };
        let out = pre.apply(&img.view()).unwrap();
        assert_eq!(out[4 + 2], 21.0);
        let pre = Preprocessing {
            normalization: Normalization {
                scale: 1.0 / 255.0,
                mean: vec![0.5],
                std: vec![0.5],
            },
            ..pre
        };
        let out = pre.apply(&img.view()).unwrap();
        // p / 127.5 - 1, the mini-Xception convention.
        assert!((out[4 + 2] - (21.0 / 127.5 - 1.0)).abs() < 1e-6);
    }

    #[test]
    fn bilinear_upscale_of_a_ramp_stays_a_ramp() {
        let img = gray(2, 1, |x, _| if x == 0 { 0 } else { 100 });
        let pre = Preprocessing {
            input_width: 4,
            input_height: 1,
            normalization: Normalization {
                scale: 1.0,
                mean: vec![0.0],
                std: vec![1.0],
            },
            ..Preprocessing::default()
        };
        let out = pre.apply(&img.view()).unwrap();
        assert_eq!(out, vec![0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn rgb_to_gray_and_layouts() {
        let img = ImageBuf::new(1, 1, PixelFormat::Rgb8, vec![255, 0, 0]).unwrap();
        let unit = Normalization {
            scale: 1.0,
            mean: vec![0.0, 0.0, 0.0],
            std: vec![1.0, 1.0, 1.0],
        };
        let gray = Preprocessing {
            input_width: 1,
            input_height: 1,
            normalization: Normalization {
                scale: 1.0,
                mean: vec![0.0],
                std: vec![1.0],
            },
            ..Preprocessing::default()
        };
        assert!((gray.apply(&img.view()).unwrap()[0] - 0.299 * 255.0).abs() < 1e-3);
        let two = ImageBuf::new(2, 1, PixelFormat::Rgb8, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let chw = Preprocessing {
            input_width: 2,
            input_height: 1,
            channels: ColorChannels::Rgb,
            layout: TensorLayout::Nchw,
            resize: ResizeFilter::Nearest,
            normalization: unit.clone(),
            ..Preprocessing::default()
        };
        assert_eq!(
            chw.apply(&two.view()).unwrap(),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
        let hwc = Preprocessing {
            layout: TensorLayout::Nhwc,
            ..chw
        };
        assert_eq!(
            hwc.apply(&two.view()).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn crop_is_square_centred_and_edge_padded() {
        let frame = gray(10, 10, |x, y| (y * 10 + x) as u8);
        let face = FaceBox {
            x: 0.0,
            y: 0.0,
            width: 4.0,
            height: 2.0,
        };
        let crop = crop_face(&frame.view(), &face, 0.0).unwrap();
        assert_eq!((crop.width, crop.height), (4, 4));
        // Centre (2, 1): rows -1..3 clamp the first row to row 0.
        assert_eq!(&crop.pixels[..4], &[0, 1, 2, 3]);
        assert_eq!(&crop.pixels[4..8], &[0, 1, 2, 3]);
        assert_eq!(&crop.pixels[8..12], &[10, 11, 12, 13]);
        let wide = crop_face(&frame.view(), &face, 0.25).unwrap();
        assert_eq!(wide.width, 6);
    }

    #[test]
    fn the_whole_frame_is_its_own_crop_whatever_the_margin() {
        let frame = gray(6, 4, |x, y| (y * 6 + x) as u8);
        let whole = FaceBox {
            x: 0.0,
            y: 0.0,
            width: 6.0,
            height: 4.0,
        };
        let crop = board_crop(&frame.view(), &whole, 0.1).unwrap();
        assert_eq!(crop, frame, "not squared, not padded");
        // Any other box is cut with the margin, as crop_face does.
        let part = FaceBox {
            width: 4.0,
            ..whole
        };
        assert_eq!(
            board_crop(&frame.view(), &part, 0.25).unwrap(),
            crop_face(&frame.view(), &part, 0.25).unwrap()
        );
    }

    #[test]
    fn bad_buffers_are_refused() {
        assert!(ImageBuf::new(2, 2, PixelFormat::Rgb8, vec![0; 11]).is_err());
        assert!(ImageBuf::new(0, 2, PixelFormat::Gray8, vec![]).is_err());
        let img = gray(2, 2, |_, _| 0);
        let mut short = vec![0.0; 3];
        assert!(
            Preprocessing::default()
                .apply_into(&img.view(), &mut short)
                .is_err()
        );
    }

    #[test]
    fn iou_of_boxes() {
        let a = FaceBox {
            x: 0.0,
            y: 0.0,
            width: 2.0,
            height: 2.0,
        };
        let b = FaceBox { x: 1.0, ..a };
        assert!((a.iou(&b) - 2.0 / 6.0).abs() < 1e-6);
        assert_eq!(a.iou(&FaceBox { x: 5.0, ..a }), 0.0);
        assert_eq!(a.iou(&a), 1.0);
    }
}
