//! The board (`edge`) and the trainer decode an image file to the same bytes, so a model sees
//! in the field exactly the pixels it was trained on: gray files stay one gray channel, colour
//! files stay RGB, PNG and JPEG alike.

use std::path::Path;

use firmware_config::preprocess::{ImageBuf, PixelFormat};

/// Decodes `path` on both sides, checks they agree and returns the image.
fn decode_both(path: &Path) -> ImageBuf {
    let board = edge::load_image(path).unwrap();
    let trainer = trainer::data::decode_file(path).unwrap();
    assert_eq!(board, trainer, "{}", path.display());
    board
}

#[test]
fn png_and_jpeg_decode_to_the_same_bytes_in_the_trainer_and_on_the_board() {
    let tmp = tempfile::tempdir().unwrap();
    let at = |name: &str| tmp.path().join(name);
    let level = |x: u32, y: u32| (x * 37 + y * 11) as u8;
    let gray = image::GrayImage::from_fn(24, 16, |x, y| image::Luma([level(x, y)]));
    let rgb = image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([level(x, y), level(y, x), 255 - level(x, y)])
    });
    gray.save(at("gray.png")).unwrap();
    gray.save(at("gray.jpg")).unwrap();
    rgb.save(at("rgb.png")).unwrap();
    rgb.save(at("rgb.jpg")).unwrap();
    image::DynamicImage::ImageLuma8(gray.clone())
        .into_luma_alpha8()
        .save(at("gray-alpha.png"))
        .unwrap();
    image::DynamicImage::ImageLuma8(gray.clone())
        .into_luma16()
        .save(at("gray-16bit.png"))
        .unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone())
        .into_rgba8()
        .save(at("rgba.png"))
        .unwrap();

    for name in ["gray.png", "gray.jpg", "gray-alpha.png", "gray-16bit.png"] {
        let image = decode_both(&at(name));
        assert_eq!(image.format, PixelFormat::Gray8, "{name}");
    }
    for name in ["rgb.png", "rgb.jpg", "rgba.png"] {
        let image = decode_both(&at(name));
        assert_eq!(image.format, PixelFormat::Rgb8, "{name}");
    }
    // Lossless files keep their exact pixels.
    assert_eq!(decode_both(&at("gray.png")).pixels, gray.into_raw());
    assert_eq!(
        decode_both(&at("gray-alpha.png")).pixels,
        decode_both(&at("gray.png")).pixels
    );
    assert_eq!(decode_both(&at("rgba.png")).pixels, rgb.into_raw());

    if let Some(photo) = testdata::shared_path("images/astronaut.png") {
        decode_both(&photo);
    }
}
