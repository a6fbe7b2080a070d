//! Overlays on frames (face boxes, labels, confidence bars, fps) and where frames go:
//! annotated snapshots in a folder, the Linux framebuffer, or nowhere.
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
use std::fs::File;
use std::path::{Path, PathBuf};

use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_9X15};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyleBuilder};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyleBuilder, Rectangle, StrokeAlignment};
use embedded_graphics::text::{Baseline, Text};
use firmware_config::config::DisplayOutput;
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};

use crate::Error;
use crate::capture::rgb_image;

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

/// One colour channel's place in a framebuffer pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitField {
    /// Lowest bit of the channel.
    pub offset: u32,
    /// Bits in the channel.
    pub length: u32,
}

/// A framebuffer's visible geometry and pixel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FbGeometry {
    /// Visible width in pixels.
    pub width: u32,
    /// Visible height in pixels.
    pub height: u32,
    /// Bytes per line (may exceed `width * bytes per pixel`).
    pub stride: u32,
    /// 16 (e.g. RGB565), 24 or 32 (e.g. XRGB8888).
    pub bits_per_pixel: u32,
    /// Red channel.
    pub red: BitField,
    /// Green channel.
    pub green: BitField,
    /// Blue channel.
    pub blue: BitField,
}

impl FbGeometry {
    /// RGB565, the usual 16-bit panel format.
    pub fn rgb565(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            stride: width * 2,
            bits_per_pixel: 16,
            red: BitField {
                offset: 11,
                length: 5,
            },
            green: BitField {
                offset: 5,
                length: 6,
            },
            blue: BitField {
                offset: 0,
                length: 5,
            },
        }
    }

    /// XRGB8888 (bytes B, G, R, X in memory), the usual 32-bit format.
    pub fn xrgb8888(width: u32, height: u32) -> Self {
        let field = |offset| BitField { offset, length: 8 };
        Self {
            width,
            height,
            stride: width * 4,
            bits_per_pixel: 32,
            red: field(16),
            green: field(8),
            blue: field(0),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !matches!(self.bits_per_pixel, 16 | 24 | 32) {
            return Err(format!(
                "{} bits per pixel is not supported (16, 24 or 32 are)",
                self.bits_per_pixel
            ));
        }
        for (name, f) in [
            ("red", self.red),
            ("green", self.green),
            ("blue", self.blue),
        ] {
            if f.length == 0 || f.length > 8 || f.offset + f.length > self.bits_per_pixel {
                return Err(format!(
                    "the {name} channel ({} bits at bit {}) does not fit a {}-bit pixel",
                    f.length, f.offset, self.bits_per_pixel
                ));
            }
        }
        if self.width == 0 || self.height == 0 {
            return Err("the visible area is empty".into());
        }
        if (self.stride as u64) < u64::from(self.width) * u64::from(self.bits_per_pixel / 8) {
            return Err(format!("the line length {} is too short", self.stride));
        }
        Ok(())
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> usize {
        self.bits_per_pixel as usize / 8
    }

    /// One RGB pixel in this layout (little-endian, as framebuffers on ARM and x86 are).
    pub fn encode(&self, rgb: [u8; 3], out: &mut [u8]) {
        let pack = |v: u8, f: BitField| (u32::from(v) >> (8 - f.length)) << f.offset;
        let value = pack(rgb[0], self.red) | pack(rgb[1], self.green) | pack(rgb[2], self.blue);
        out.copy_from_slice(&value.to_le_bytes()[..self.bytes_per_pixel()]);
    }
}

/// The Linux framebuffer (`/dev/fbN`): frames are scaled to fit (keeping their aspect,
/// nearest neighbour), centred, converted to its pixel format and written in place.
#[derive(Debug)]
pub struct Framebuffer {
    file: File,
    path: PathBuf,
    geometry: FbGeometry,
    line: Vec<u8>,
}

impl Framebuffer {
    /// Opens a framebuffer device and reads its geometry (FBIOGET_VSCREENINFO and
    /// FBIOGET_FSCREENINFO).
    #[cfg(target_os = "linux")]
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening the framebuffer", path, e))?;
        let geometry = fbdev::geometry(&file).map_err(|e| {
            Error::invalid(
                format!("framebuffer {}", path.display()),
                format!(
                    "reading its geometry failed ({e}): is it a framebuffer device (/dev/fbN)? \
                     Use display.output = snapshots or none otherwise"
                ),
            )
        })?;
        Self::with_geometry(file, path, geometry)
    }

    /// Framebuffers are a Linux device; elsewhere opening one is an error.
    #[cfg(not(target_os = "linux"))]
    pub fn open(path: &Path) -> Result<Self, Error> {
        Err(Error::invalid(
            format!("framebuffer {}", path.display()),
            "framebuffer output needs Linux; use display.output = snapshots",
        ))
    }

    /// A framebuffer over an already open file with a known geometry (a memory-backed
    /// framebuffer, or a file standing in for one).
    pub fn with_geometry(file: File, path: &Path, geometry: FbGeometry) -> Result<Self, Error> {
        geometry
            .check()
            .map_err(|reason| Error::invalid(format!("framebuffer {}", path.display()), reason))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            geometry,
            line: Vec::new(),
        })
    }

    /// The geometry in use.
    pub fn geometry(&self) -> FbGeometry {
        self.geometry
    }

    /// Shows a frame (scaled to fit, centred; the border is left as it was).
    pub fn show(&mut self, frame: &ImageBuf) -> Result<(), Error> {
        use std::os::unix::fs::FileExt;
        let g = self.geometry;
        let src = rgb_image(frame);
        let (sw, sh) = (u64::from(src.width()), u64::from(src.height()));
        let (gw, gh) = (u64::from(g.width), u64::from(g.height));
        // Largest size with the frame's aspect that fits.
        let (dw, dh) = if sw * gh >= sh * gw {
            (gw, (sh * gw / sw).max(1))
        } else {
            ((sw * gh / sh).max(1), gh)
        };
        let (ox, oy) = ((gw - dw) / 2, (gh - dh) / 2);
        let bpp = g.bytes_per_pixel();
        self.line.resize(dw as usize * bpp, 0);
        for y in 0..dh {
            let sy = (y * sh / dh) as u32;
            for x in 0..dw {
                let sx = (x * sw / dw) as u32;
                let p = src.get_pixel(sx, sy).0;
                let at = x as usize * bpp;
                g.encode(p, &mut self.line[at..at + bpp]);
            }
            let offset = (oy + y) * u64::from(g.stride) + ox * bpp as u64;
            self.file
                .write_all_at(&self.line, offset)
                .map_err(|e| Error::io("writing to the framebuffer", &self.path, e))?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod fbdev {
    //! The two framebuffer ioctls, with the kernel's structs (linux/fb.h).
    use std::os::fd::AsRawFd;

    use super::{BitField, FbGeometry};

    const FBIOGET_VSCREENINFO: libc::Ioctl = 0x4600;
    const FBIOGET_FSCREENINFO: libc::Ioctl = 0x4602;

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct FbBitfield {
        offset: u32,
        length: u32,
        msb_right: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct FbVarScreeninfo {
        xres: u32,
        yres: u32,
        xres_virtual: u32,
        yres_virtual: u32,
        xoffset: u32,
        yoffset: u32,
        bits_per_pixel: u32,
        grayscale: u32,
        red: FbBitfield,
        green: FbBitfield,
        blue: FbBitfield,
        transp: FbBitfield,
        nonstd: u32,
        activate: u32,
        height: u32,
        width: u32,
        accel_flags: u32,
        pixclock: u32,
        left_margin: u32,
        right_margin: u32,
        upper_margin: u32,
        lower_margin: u32,
        hsync_len: u32,
        vsync_len: u32,
        sync: u32,
        vmode: u32,
        rotate: u32,
        colorspace: u32,
        reserved: [u32; 4],
    }

    #[repr(C)]
    #[derive(Default)]
    struct FbFixScreeninfo {
        id: [u8; 16],
        smem_start: libc::c_ulong,
        smem_len: u32,
        kind: u32,
        type_aux: u32,
        visual: u32,
        xpanstep: u16,
        ypanstep: u16,
        ywrapstep: u16,
        line_length: u32,
        mmio_start: libc::c_ulong,
        mmio_len: u32,
        accel: u32,
        capabilities: u16,
        reserved: [u16; 2],
    }

    pub(super) fn geometry(file: &std::fs::File) -> std::io::Result<FbGeometry> {
        let fd = file.as_raw_fd();
        let mut var = FbVarScreeninfo::default();
        let mut fix = FbFixScreeninfo::default();
        // SAFETY: both requests write exactly one struct of the kernel's layout (repr(C)
        // copies of linux/fb.h) into memory we own for the duration of the call.
        let ok = unsafe {
            libc::ioctl(fd, FBIOGET_VSCREENINFO, &mut var as *mut FbVarScreeninfo) == 0
                && libc::ioctl(fd, FBIOGET_FSCREENINFO, &mut fix as *mut FbFixScreeninfo) == 0
        };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
        let field = |f: FbBitfield| BitField {
            offset: f.offset,
            length: f.length,
        };
        let stride = if fix.line_length > 0 {
            fix.line_length
        } else {
            var.xres_virtual * var.bits_per_pixel / 8
        };
        // The visible area starts at the panning offset; we draw at the top-left of the
        // virtual screen, which is what is shown unless something pans it.
        Ok(FbGeometry {
            width: var.xres,
            height: var.yres,
            stride,
            bits_per_pixel: var.bits_per_pixel,
            red: field(var.red),
            green: field(var.green),
            blue: field(var.blue),
        })
    }
}

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

    #[test]
    fn snapshots_are_valid_pngs_every_n_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            SnapshotWriter::new(&dir.path().join("snaps"), 2, SnapshotFormat::Png).unwrap();
        let mut img = black(32, 24);
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

    #[test]
    fn pixel_formats_pack_channels() {
        let mut two = [0u8; 2];
        let g = FbGeometry::rgb565(1, 1);
        g.encode([255, 0, 0], &mut two);
        assert_eq!(u16::from_le_bytes(two), 0xF800);
        g.encode([0, 255, 0], &mut two);
        assert_eq!(u16::from_le_bytes(two), 0x07E0);
        g.encode([0, 0, 255], &mut two);
        assert_eq!(u16::from_le_bytes(two), 0x001F);
        let mut four = [0u8; 4];
        FbGeometry::xrgb8888(1, 1).encode([1, 2, 3], &mut four);
        assert_eq!(four, [3, 2, 1, 0], "B, G, R, X in memory");
        let mut bad = FbGeometry::xrgb8888(4, 4);
        bad.bits_per_pixel = 8;
        assert!(bad.check().is_err());
    }

    #[test]
    fn framebuffer_gets_the_scaled_centred_frame_at_its_stride() {
        let file = tempfile::NamedTempFile::new().unwrap();
        // 8x4 screen with 4 bytes of line padding; a 2x2 frame is scaled to 4x4, centred.
        let mut g = FbGeometry::xrgb8888(8, 4);
        g.stride = 36;
        file.as_file().set_len(36 * 4).unwrap();
        let mut fb = Framebuffer::with_geometry(file.reopen().unwrap(), file.path(), g).unwrap();
        let frame = ImageBuf::new(
            2,
            2,
            PixelFormat::Rgb8,
            vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255],
        )
        .unwrap();
        fb.show(&frame).unwrap();
        let mem = std::fs::read(file.path()).unwrap();
        let at = |x: usize, y: usize| &mem[y * 36 + x * 4..y * 36 + x * 4 + 4];
        assert_eq!(at(0, 0), [0, 0, 0, 0], "left border untouched");
        assert_eq!(at(2, 0), [0, 0, 255, 0], "red");
        assert_eq!(at(5, 1), [0, 255, 0, 0], "green");
        assert_eq!(at(2, 3), [255, 0, 0, 0], "blue");
        assert_eq!(at(5, 3), [255, 255, 255, 0], "white");
        assert_eq!(at(6, 2), [0, 0, 0, 0], "right border untouched");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_regular_file_is_not_a_framebuffer() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = Framebuffer::open(file.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&file.path().display().to_string()) && text.contains("geometry"));
        let err = Framebuffer::open(Path::new("/dev/fb-missing")).unwrap_err();
        assert!(err.to_string().contains("/dev/fb-missing"));
    }

    #[test]
    fn display_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let out = DisplayOutput::Snapshots {
            directory: dir.path().join("s").to_string_lossy().into_owned(),
            every_n_frames: 1,
        };
        let mut display = Display::from_config(&out).unwrap();
        display.show(&black(4, 4), 7).unwrap();
        assert!(dir.path().join("s/frame-00000007.png").exists());
        assert!(matches!(
            Display::from_config(&DisplayOutput::None).unwrap(),
            Display::None
        ));
    }
}
