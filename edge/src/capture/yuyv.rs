//! YUYV (YUV 4:2:2, `Y0 U Y1 V`) to packed RGB, BT.601 limited range.
//!
//! This is the uncompressed format every UVC webcam offers. Two horizontally adjacent pixels
//! share one chroma pair, so a line must have an even width. Limited range (Y in 16..=235,
//! U/V in 16..=240) is what UVC cameras send; values outside it are clamped after conversion.

use super::bad_frame;
use crate::Error;

/// Converts one YUYV frame to packed RGB (3 bytes a pixel, no row padding), replacing `rgb`.
///
/// `stride` is the driver's bytes per line (`bytesperline`, at least `2 * width`; V4L2 may pad
/// lines). Returns an error naming the mismatch for an odd width, a zero size, a stride that is
/// too small, or a buffer too short for `height` lines (a truncated frame).
pub fn yuyv_to_rgb(
    yuyv: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    rgb: &mut Vec<u8>,
) -> Result<(), Error> {
    let bad = |reason: String| bad_frame("YUYV", width, height, reason);
    if width == 0 || height == 0 {
        return Err(bad("the frame is empty".into()));
    }
    if !width.is_multiple_of(2) {
        return Err(bad(
            "YUYV packs two pixels per chroma pair, so the width must be even".into(),
        ));
    }
    let line = width as usize * 2;
    if stride < line {
        return Err(bad(format!(
            "a line needs {line} bytes but the stride is {stride}"
        )));
    }
    let needed = stride * (height as usize - 1) + line;
    if yuyv.len() < needed {
        return Err(bad(format!(
            "the buffer holds {} bytes, {needed} are needed (truncated frame?)",
            yuyv.len()
        )));
    }
    rgb.clear();
    rgb.reserve(width as usize * height as usize * 3);
    for row in yuyv.chunks(stride).take(height as usize) {
        for quad in row[..line].chunks_exact(4) {
            let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
            rgb.extend_from_slice(&yuv_to_rgb(y0, u, v));
            rgb.extend_from_slice(&yuv_to_rgb(y1, u, v));
        }
    }
    Ok(())
}

/// One BT.601 limited-range YCbCr sample to RGB (the integer form of ITU-R BT.601, 8-bit
/// fixed point, rounded).
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

/// Packed RGB to YUYV with the inverse BT.601 limited-range matrix (chroma from the pair's
/// mean). Used to build test frames and by `fer-edge bench`; `width` must be even.
pub fn rgb_to_yuyv(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| bad_frame("RGB", width, height, reason);
    if !width.is_multiple_of(2) {
        return Err(bad("YUYV needs an even width".into()));
    }
    let needed = width as usize * height as usize * 3;
    if rgb.len() != needed {
        return Err(bad(format!(
            "the buffer holds {} bytes, {needed} expected",
            rgb.len()
        )));
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 2);
    for pair in rgb.chunks_exact(6) {
        let (y0, u0, v0) = rgb_to_yuv(pair[0], pair[1], pair[2]);
        let (y1, u1, v1) = rgb_to_yuv(pair[3], pair[4], pair[5]);
        let u = (u16::from(u0) + u16::from(u1)).div_ceil(2) as u8;
        let v = (u16::from(v0) + u16::from(v1)).div_ceil(2) as u8;
        out.extend_from_slice(&[y0, u, y1, v]);
    }
    Ok(out)
}

fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (y as u8, u as u8, v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: [u8; 3], want: [u8; 3]) -> bool {
        got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 2)
    }

    /// BT.601 limited-range codes of the primaries (as a colour-bar generator emits them).
    const PURE: [([u8; 3], [u8; 3]); 8] = [
        ([16, 128, 128], [0, 0, 0]),
        ([235, 128, 128], [255, 255, 255]),
        ([81, 90, 240], [255, 0, 0]),
        ([145, 54, 34], [0, 255, 0]),
        ([41, 240, 110], [0, 0, 255]),
        ([210, 16, 146], [255, 255, 0]),
        ([170, 166, 16], [0, 255, 255]),
        ([106, 202, 222], [255, 0, 255]),
    ];

    #[test]
    fn pure_colours_from_real_yuyv_bytes() {
        for ([y, u, v], want) in PURE {
            // Two identical pixels: Y0 U Y1 V.
            let frame = [y, u, y, v];
            let mut rgb = Vec::new();
            yuyv_to_rgb(&frame, 2, 1, 4, &mut rgb).unwrap();
            assert_eq!(rgb.len(), 6);
            for px in rgb.chunks(3) {
                let got = [px[0], px[1], px[2]];
                assert!(
                    close(got, want),
                    "YUV {y},{u},{v}: got {got:?}, want {want:?}"
                );
            }
        }
    }

    #[test]
    fn byte_order_is_y0_u_y1_v() {
        // Black then white in one pair: the pixels take Y0 and Y1, sharing neutral chroma.
        let mut rgb = Vec::new();
        yuyv_to_rgb(&[16, 128, 235, 128], 2, 1, 4, &mut rgb).unwrap();
        assert_eq!(rgb, [0, 0, 0, 255, 255, 255]);
        // A chroma byte read as luma would turn neutral grey (Y=128) coloured.
        yuyv_to_rgb(&[128, 128, 128, 128], 2, 1, 4, &mut rgb).unwrap();
        assert!(rgb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn padded_lines_skip_the_padding() {
        // 2x2 frame, stride 8: 4 bytes of pixels then 4 bytes of junk per line.
        let frame = [
            235, 128, 235, 128, 9, 9, 9, 9, //
            16, 128, 16, 128, 9, 9, 9, 9,
        ];
        let mut rgb = Vec::new();
        yuyv_to_rgb(&frame, 2, 2, 8, &mut rgb).unwrap();
        assert_eq!(&rgb[..6], &[255; 6]);
        assert_eq!(&rgb[6..], &[0; 6]);
        // The last line needs no padding after it.
        yuyv_to_rgb(&frame[..12], 2, 2, 8, &mut rgb).unwrap();
        assert_eq!(rgb.len(), 12);
    }

    #[test]
    fn rejects_odd_width_short_buffer_and_small_stride() {
        let mut rgb = Vec::new();
        let err = yuyv_to_rgb(&[0; 12], 3, 2, 6, &mut rgb).unwrap_err();
        assert!(err.to_string().contains("even"), "{err}");
        let err = yuyv_to_rgb(&[0; 10], 4, 2, 8, &mut rgb).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = yuyv_to_rgb(&[0; 16], 4, 2, 4, &mut rgb).unwrap_err();
        assert!(err.to_string().contains("stride"), "{err}");
        assert!(yuyv_to_rgb(&[], 0, 0, 0, &mut rgb).is_err());
    }

    #[test]
    fn rgb_round_trip_stays_close() {
        let rgb: Vec<u8> = [
            [255, 0, 0],
            [255, 0, 0],
            [30, 200, 90],
            [30, 200, 90],
            [128, 128, 128],
            [128, 128, 128],
        ]
        .concat();
        let yuyv = rgb_to_yuyv(&rgb, 6, 1).unwrap();
        assert_eq!(yuyv.len(), 12);
        let mut back = Vec::new();
        yuyv_to_rgb(&yuyv, 6, 1, 12, &mut back).unwrap();
        for (a, b) in rgb.iter().zip(&back) {
            assert!(a.abs_diff(*b) <= 3, "{rgb:?} -> {back:?}");
        }
    }
}
