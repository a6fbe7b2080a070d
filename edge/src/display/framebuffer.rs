//! The Linux framebuffer as an output: geometry, pixel packing and scaled, centred frames.

use std::fs::File;
use std::path::{Path, PathBuf};

use firmware_config::preprocess::ImageBuf;

use crate::Error;
use crate::pixels::rgb_image;

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

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::preprocess::PixelFormat;

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
}
