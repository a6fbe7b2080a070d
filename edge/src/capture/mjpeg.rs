//! MJPEG frames to packed RGB.
//!
//! A UVC camera's MJPEG frame is a baseline JPEG, but many cameras leave out the Huffman
//! tables (no DHT segment) to save bandwidth: the UVC/AVI1 convention says the decoder must
//! assume the standard tables of ITU-T T.81 Annex K.3. [`ensure_huffman_tables`] inserts them
//! when missing, so any JPEG decoder accepts the frame.

use std::borrow::Cow;
use std::io::Cursor;

use image::ImageDecoder;
use image::codecs::jpeg::JpegDecoder;

use super::{bad_frame, jpeg_error};
use crate::Error;

const SOI: u8 = 0xD8;
const DHT: u8 = 0xC4;
const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;

// ITU-T T.81 Annex K.3, tables K.3-K.6: (class << 4 | id, code counts per length 1..=16, values).
const LUMA_DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const CHROMA_DC_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const LUMA_AC_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
const LUMA_AC_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];
const CHROMA_AC_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const CHROMA_AC_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// The standard DHT segment (marker included) defining all four Annex K tables.
pub fn standard_dht_segment() -> Vec<u8> {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &LUMA_DC_BITS, &DC_VALUES),
        (0x10, &LUMA_AC_BITS, &LUMA_AC_VALUES),
        (0x01, &CHROMA_DC_BITS, &DC_VALUES),
        (0x11, &CHROMA_AC_BITS, &CHROMA_AC_VALUES),
    ];
    let body: usize = tables.iter().map(|(_, _, v)| 1 + 16 + v.len()).sum();
    let length = u16::try_from(body + 2).expect("the four standard tables fit in a segment");
    let mut seg = Vec::with_capacity(body + 4);
    seg.extend_from_slice(&[0xFF, DHT]);
    seg.extend_from_slice(&length.to_be_bytes());
    for (class_id, bits, values) in tables {
        seg.push(class_id);
        seg.extend_from_slice(bits);
        seg.extend_from_slice(values);
    }
    seg
}

/// Returns the frame unchanged when it defines Huffman tables before its first scan, or a copy
/// with the standard tables inserted just before the first SOS segment.
pub fn ensure_huffman_tables(jpeg: &[u8]) -> Result<Cow<'_, [u8]>, Error> {
    let bad = |reason: String| bad_frame("MJPEG", 0, 0, reason);
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != SOI {
        return Err(bad(format!(
            "no JPEG start-of-image marker in the first bytes ({} bytes in the frame)",
            jpeg.len()
        )));
    }
    let mut pos = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while pos < jpeg.len() && jpeg[pos] == 0xFF && jpeg.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if pos + 4 > jpeg.len() || jpeg[pos] != 0xFF {
            return Err(bad(format!(
                "the marker structure ends at byte {pos} before any scan (truncated frame?)"
            )));
        }
        let marker = jpeg[pos + 1];
        match marker {
            DHT => return Ok(Cow::Borrowed(jpeg)),
            SOS => {
                let mut fixed = Vec::with_capacity(jpeg.len() + 432);
                fixed.extend_from_slice(&jpeg[..pos]);
                fixed.extend_from_slice(&standard_dht_segment());
                fixed.extend_from_slice(&jpeg[pos..]);
                return Ok(Cow::Owned(fixed));
            }
            EOI => return Err(bad("the frame ends before any scan".into())),
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
                if len < 2 {
                    return Err(bad(format!(
                        "segment 0xFF{marker:02X} at byte {pos} has an invalid length {len}"
                    )));
                }
                pos += 2 + len;
            }
        }
    }
}

/// Decodes one MJPEG frame (with or without its Huffman tables) to packed RGB, replacing
/// `rgb`; returns the frame's width and height. Grayscale JPEGs are expanded to RGB.
pub fn decode_mjpeg(jpeg: &[u8], rgb: &mut Vec<u8>) -> Result<(u32, u32), Error> {
    let complete = ensure_huffman_tables(jpeg)?;
    let decoder = JpegDecoder::new(Cursor::new(complete.as_ref())).map_err(jpeg_error)?;
    let (width, height) = decoder.dimensions();
    let colour = decoder.color_type();
    let mut raw = vec![0; usize::try_from(decoder.total_bytes()).unwrap_or(usize::MAX)];
    decoder.read_image(&mut raw).map_err(jpeg_error)?;
    rgb.clear();
    match colour {
        image::ColorType::Rgb8 => rgb.extend_from_slice(&raw),
        image::ColorType::L8 => rgb.extend(raw.iter().flat_map(|&g| [g, g, g])),
        other => {
            return Err(bad_frame(
                "MJPEG",
                width,
                height,
                format!("unsupported JPEG colour type {other:?} (expected YCbCr or grey)"),
            ));
        }
    }
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;

    /// Byte ranges of every DHT segment (marker included) before the first scan.
    fn dht_segments(jpeg: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut pos = 2;
        while jpeg[pos + 1] != SOS {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            if jpeg[pos + 1] == DHT {
                out.push(pos..pos + 2 + len);
            }
            pos += 2 + len;
        }
        out
    }

    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let segments = dht_segments(jpeg);
        assert!(
            !segments.is_empty(),
            "the test JPEG must have tables to strip"
        );
        let mut out = Vec::new();
        let mut last = 0;
        for seg in segments {
            out.extend_from_slice(&jpeg[last..seg.start]);
            last = seg.end;
        }
        out.extend_from_slice(&jpeg[last..]);
        out
    }

    /// A real photo as a baseline JPEG (the encoder writes the Annex K tables, like cameras).
    fn real_jpeg() -> Option<(Vec<u8>, u32, u32)> {
        let path = testdata::shared_path("images/astronaut.png")?;
        let photo = image::open(&path).unwrap().to_rgb8();
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&photo)
            .unwrap();
        Some((jpeg, photo.width(), photo.height()))
    }

    #[test]
    fn standard_tables_match_an_independent_encoder() {
        // image's encoder writes T.81 K.3 tables, one DHT per table; ours joins the same four.
        let mut jpeg = Vec::new();
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([10, 200, 30]));
        JpegEncoder::new(&mut jpeg).encode_image(&img).unwrap();
        let mut theirs: Vec<Vec<u8>> = Vec::new();
        for seg in dht_segments(&jpeg) {
            theirs.push(jpeg[seg.start + 4..seg.end].to_vec());
        }
        let ours = standard_dht_segment();
        let joined: Vec<u8> = theirs.iter().flatten().copied().collect();
        let mine = ours[4..].to_vec();
        assert_eq!(
            usize::from(u16::from_be_bytes([ours[2], ours[3]])),
            ours.len() - 2
        );
        // Compare as sets of tables: the encoder may order them differently.
        let split = |mut b: &[u8]| {
            let mut tables = Vec::new();
            while !b.is_empty() {
                let n: usize = b[1..17].iter().map(|&c| usize::from(c)).sum();
                tables.push(b[..17 + n].to_vec());
                b = &b[17 + n..];
            }
            tables.sort();
            tables
        };
        assert_eq!(split(&mine), split(&joined));
    }

    #[test]
    fn a_real_jpeg_with_its_tables_stripped_decodes_identically() {
        let Some((jpeg, width, height)) = real_jpeg() else {
            return;
        };
        let stripped = strip_dht(&jpeg);
        assert!(dht_segments(&stripped).is_empty());
        // Without the fix-up, the decoder refuses the frame.
        assert!(image::load_from_memory(&stripped).is_err());
        let mut reference = Vec::new();
        assert_eq!(
            decode_mjpeg(&jpeg, &mut reference).unwrap(),
            (width, height)
        );
        let mut fixed = Vec::new();
        assert_eq!(
            decode_mjpeg(&stripped, &mut fixed).unwrap(),
            (width, height)
        );
        assert_eq!(fixed.len(), (width * height * 3) as usize);
        assert!(
            fixed == reference,
            "decoding with inserted tables must be exact"
        );
    }

    #[test]
    fn frames_with_tables_are_not_copied() {
        let mut jpeg = Vec::new();
        let img = image::GrayImage::from_pixel(8, 8, image::Luma([90]));
        JpegEncoder::new(&mut jpeg).encode_image(&img).unwrap();
        assert!(matches!(
            ensure_huffman_tables(&jpeg).unwrap(),
            Cow::Borrowed(_)
        ));
        let mut rgb = Vec::new();
        assert_eq!(decode_mjpeg(&jpeg, &mut rgb).unwrap(), (8, 8));
        assert!(
            rgb.chunks(3)
                .all(|p| p[0] == p[1] && p[1] == p[2] && p[0].abs_diff(90) <= 2)
        );
    }

    #[test]
    fn garbage_and_truncated_frames_are_errors() {
        let mut rgb = Vec::new();
        let err = decode_mjpeg(b"not a jpeg at all", &mut rgb).unwrap_err();
        assert!(err.to_string().contains("start-of-image"), "{err}");
        let mut jpeg = Vec::new();
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]));
        JpegEncoder::new(&mut jpeg).encode_image(&img).unwrap();
        let err = decode_mjpeg(&jpeg[..20], &mut rgb).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
