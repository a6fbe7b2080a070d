//! Overlays on frames: face boxes, labels, confidence bars, fps. Where the annotated frames
//! go (snapshots, the framebuffer) is [`crate::display`].
//!
//! Drawing uses embedded-graphics on [`Canvas`], a `DrawTarget` over a packed RGB
//! [`ImageBuf`], so the same code draws on a board without a GPU or a window system.
//!
//! ```
//! use edge::overlay::{FaceOverlay, draw_overlays};
//! use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
//!
//! let mut frame = ImageBuf::new(160, 120, PixelFormat::Rgb8, vec![0; 160 * 120 * 3]).unwrap();
//! let face = FaceOverlay {
//!     face: FaceBox { x: 40.0, y: 30.0, width: 50.0, height: 60.0 },
//!     label: "happy".into(),
//!     confidence: 0.87,
//!     uncertain: false,
//! };
//! draw_overlays(&mut frame, &[face], Some(14.5))?;
//! assert!(frame.pixels.iter().any(|&v| v != 0));
//! # Ok::<(), edge::Error>(())
//! ```

use std::convert::Infallible;

use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_9X15};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyleBuilder};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyleBuilder, Rectangle, StrokeAlignment};
use embedded_graphics::text::{Baseline, Text};
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};

use crate::Error;

/// Box colour of a confident face.
pub const CONFIDENT: Rgb888 = Rgb888::new(40, 220, 60);
/// Box colour of a face below its class threshold (the ones the field log keeps).
pub const UNCERTAIN: Rgb888 = Rgb888::new(255, 150, 0);

/// A packed RGB image as an embedded-graphics draw target (pixels outside are clipped).
#[derive(Debug)]
pub struct Canvas<'a> {
    width: u32,
    height: u32,
    pixels: &'a mut [u8],
}

impl<'a> Canvas<'a> {
    /// A canvas over an [`PixelFormat::Rgb8`] image.
    pub fn new(image: &'a mut ImageBuf) -> Result<Self, Error> {
        if image.format != PixelFormat::Rgb8 {
            return Err(Error::invalid(
                "overlay target",
                format!(
                    "overlays draw on RGB frames, this one is {:?}",
                    image.format
                ),
            ));
        }
        Ok(Self {
            width: image.width,
            height: image.height,
            pixels: &mut image.pixels,
        })
    }
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Infallible>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(p, c) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) else {
                continue;
            };
            if x < self.width && y < self.height {
                let at = (y as usize * self.width as usize + x as usize) * 3;
                self.pixels[at..at + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// What to draw for one face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceOverlay {
    /// The face box in frame pixels.
    pub face: FaceBox,
    /// The label (the expression, possibly with a track id).
    pub label: String,
    /// Top-class probability, 0..=1 (the bar's fill and the percentage).
    pub confidence: f32,
    /// Below its class threshold: drawn in [`UNCERTAIN`] instead of [`CONFIDENT`].
    pub uncertain: bool,
}

/// The face box as a whole-pixel rectangle (rounded outwards is not needed: boxes are
/// estimates; rounding keeps the drawn box centred on the estimate).
pub fn face_rectangle(face: &FaceBox) -> Rectangle {
    let x = face.x.round() as i32;
    let y = face.y.round() as i32;
    let w = face.width.round().max(1.0) as u32;
    let h = face.height.round().max(1.0) as u32;
    Rectangle::new(Point::new(x, y), Size::new(w, h))
}

/// Line width of face boxes for a frame of this height (2 px at VGA).
pub fn stroke_width(frame_height: u32) -> u32 {
    (frame_height / 240).clamp(1, 4)
}

fn font_for(frame_height: u32) -> &'static MonoFont<'static> {
    if frame_height >= 360 {
        &FONT_9X15
    } else {
        &FONT_6X10
    }
}

/// Draws a face's box (inside its rectangle), label and confidence bar.
pub fn draw_face(canvas: &mut Canvas<'_>, face: &FaceOverlay) {
    let colour = if face.uncertain { UNCERTAIN } else { CONFIDENT };
    let rect = face_rectangle(&face.face);
    let stroke = stroke_width(canvas.height);
    let style = PrimitiveStyleBuilder::new()
        .stroke_color(colour)
        .stroke_width(stroke)
        .stroke_alignment(StrokeAlignment::Inside)
        .build();
    let Ok(()) = rect.into_styled(style).draw(canvas);

    // Label above the box, or inside its top edge when the box touches the frame's top.
    let font = font_for(canvas.height);
    let text = format!(
        "{} {:.0}%",
        face.label,
        (face.confidence.clamp(0.0, 1.0) * 100.0)
    );
    let text_style = MonoTextStyleBuilder::new()
        .font(font)
        .text_color(Rgb888::BLACK)
        .background_color(colour)
        .build();
    let text_h = font.character_size.height as i32;
    let label_y = if rect.top_left.y >= text_h {
        rect.top_left.y - text_h
    } else {
        rect.top_left.y + stroke as i32
    };
    let Ok(_) = Text::with_baseline(
        &text,
        Point::new(rect.top_left.x, label_y),
        text_style,
        Baseline::Top,
    )
    .draw(canvas);

    // Confidence bar under the box: an outline as wide as the box, filled to the confidence.
    let bar_h = (stroke * 3).max(4);
    let bar_top = rect.top_left + Point::new(0, rect.size.height as i32 + 2);
    let outline = PrimitiveStyleBuilder::new()
        .stroke_color(colour)
        .stroke_width(1)
        .stroke_alignment(StrokeAlignment::Inside)
        .fill_color(Rgb888::BLACK)
        .build();
    let Ok(()) = Rectangle::new(bar_top, Size::new(rect.size.width, bar_h))
        .into_styled(outline)
        .draw(canvas);
    let filled = ((rect.size.width.saturating_sub(2)) as f32 * face.confidence.clamp(0.0, 1.0))
        .round() as u32;
    if filled > 0 {
        let fill = PrimitiveStyleBuilder::new().fill_color(colour).build();
        let Ok(()) = Rectangle::new(
            bar_top + Point::new(1, 1),
            Size::new(filled, bar_h.saturating_sub(2)),
        )
        .into_styled(fill)
        .draw(canvas);
    }
}

/// Draws the frame rate in the top-left corner, white on black.
pub fn draw_fps(canvas: &mut Canvas<'_>, fps: f32) {
    let style = MonoTextStyleBuilder::new()
        .font(font_for(canvas.height))
        .text_color(Rgb888::WHITE)
        .background_color(Rgb888::BLACK)
        .build();
    let Ok(_) = Text::with_baseline(
        &format!("{fps:.1} fps"),
        Point::new(2, 2),
        style,
        Baseline::Top,
    )
    .draw(canvas);
}

/// Draws every face and, if given, the frame rate.
pub fn draw_overlays(
    image: &mut ImageBuf,
    faces: &[FaceOverlay],
    fps: Option<f32>,
) -> Result<(), Error> {
    let mut canvas = Canvas::new(image)?;
    for face in faces {
        draw_face(&mut canvas, face);
    }
    if let Some(fps) = fps {
        draw_fps(&mut canvas, fps);
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn black(width: u32, height: u32) -> ImageBuf {
        ImageBuf::new(
            width,
            height,
            PixelFormat::Rgb8,
            vec![0; (width * height * 3) as usize],
        )
        .unwrap()
    }

    fn px(img: &ImageBuf, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * img.width + x) * 3) as usize;
        [img.pixels[at], img.pixels[at + 1], img.pixels[at + 2]]
    }

    #[test]
    fn a_box_changes_exactly_its_border_pixels() {
        // A 480-line frame gets a 2 px stroke.
        let mut img = black(64, 480);
        let rect = face_rectangle(&FaceBox {
            x: 10.0,
            y: 20.0,
            width: 30.0,
            height: 40.0,
        });
        let style = PrimitiveStyleBuilder::new()
            .stroke_color(CONFIDENT)
            .stroke_width(stroke_width(480))
            .stroke_alignment(StrokeAlignment::Inside)
            .build();
        let mut canvas = Canvas::new(&mut img).unwrap();
        let Ok(()) = rect.into_styled(style).draw(&mut canvas);
        let colour = [CONFIDENT.r(), CONFIDENT.g(), CONFIDENT.b()];
        for y in 0..480 {
            for x in 0..64 {
                let inside = (10..40).contains(&x) && (20..60).contains(&y);
                let border = inside && !((12..38).contains(&x) && (22..58).contains(&y));
                let want = if border { colour } else { [0; 3] };
                assert_eq!(px(&img, x, y), want, "pixel ({x},{y})");
            }
        }
    }

    #[test]
    fn drawing_off_the_edges_is_clipped() {
        let mut img = black(20, 20);
        let mut canvas = Canvas::new(&mut img).unwrap();
        let Ok(()) = canvas.draw_iter([
            Pixel(Point::new(-1, 5), Rgb888::WHITE),
            Pixel(Point::new(20, 5), Rgb888::WHITE),
            Pixel(Point::new(3, 4), Rgb888::WHITE),
        ]);
        assert_eq!(img.pixels.iter().filter(|&&v| v == 255).count(), 3);
        assert_eq!(px(&img, 3, 4), [255; 3]);
        let mut grey = ImageBuf::new(2, 2, PixelFormat::Gray8, vec![0; 4]).unwrap();
        assert!(Canvas::new(&mut grey).is_err());
    }

    #[test]
    fn label_bar_and_fps_land_where_expected() {
        let mut img = black(200, 150);
        let face = FaceOverlay {
            face: FaceBox {
                x: 50.0,
                y: 40.0,
                width: 80.0,
                height: 60.0,
            },
            label: "sad".into(),
            confidence: 0.5,
            uncertain: true,
        };
        draw_overlays(&mut img, &[face], Some(9.5)).unwrap();
        let orange = [UNCERTAIN.r(), UNCERTAIN.g(), UNCERTAIN.b()];
        // Box corner, label background above the box (6x10 font at this height).
        assert_eq!(px(&img, 50, 40), orange);
        assert_eq!(px(&img, 50, 30), orange, "label background");
        // Bar: 2 px below the box (y = 102..106), filled to half of the inner 78 px.
        assert_eq!(px(&img, 51 + 38, 104), orange);
        assert_eq!(px(&img, 51 + 40, 104), [0; 3]);
        // fps text on black in the corner: some white pixels there.
        let white = (0..12)
            .flat_map(|y| (0..60).map(move |x| (x, y)))
            .filter(|&(x, y)| px(&img, x, y) == [255; 3])
            .count();
        assert!(white > 20, "{white} white pixels");
    }
}
