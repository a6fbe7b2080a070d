//! Image files and pixel buffers: decoding a file by the toolkit's one gray/RGB rule, and an
//! [`ImageBuf`] as the `image` crate's RGB buffer for encoders.

use std::path::Path;

use firmware_config::preprocess::{ImageBuf, PixelFormat};

use crate::error::{Error, Result};

/// Decodes a PNG or JPEG file by the toolkit's one rule ([`ImageBuf::from_decoded_rgba`]):
/// images without colour stay one gray channel, colour images stay RGB.
pub fn load_image(path: &Path) -> Result<ImageBuf> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let decoded = image::load_from_memory(&bytes).map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })?;
    let has_color = decoded.color().has_color();
    let rgba = decoded.into_rgba8();
    ImageBuf::from_decoded_rgba(rgba.width(), rgba.height(), has_color, rgba.as_raw())
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))
}

/// An [`ImageBuf`] as an `image` crate RGB buffer (grey is expanded).
pub fn rgb_image(img: &ImageBuf) -> image::RgbImage {
    let rgb = match img.format {
        PixelFormat::Gray8 => img.pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        _ => img.pixels.clone(),
    };
    image::RgbImage::from_raw(img.width, img.height, rgb)
        .expect("an ImageBuf's length matches its size")
}
