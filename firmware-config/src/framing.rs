//! Byte-level framing shared by [`crate::segment`] and [`crate::flash`]: the prefix both
//! kinds of file start with (magic and schema version), CRC32 (IEEE, as zlib and Ethernet) and
//! COBS (consistent overhead byte stuffing).
//!
//! A COBS frame contains no zero byte, so a zero ends it: after damage a reader skips to the
//! next zero and carries on with the next intact frame.

use alloc::vec::Vec;

use crate::{Error, SCHEMA_VERSION};

/// Bytes of the prefix every contract file starts with: magic (4) and schema version (u16 LE).
pub const PREFIX_LEN: usize = 6;

/// Appends the prefix: `magic`, then [`SCHEMA_VERSION`] as u16 LE.
pub(crate) fn push_prefix(out: &mut Vec<u8>, magic: [u8; 4]) {
    out.extend_from_slice(&magic);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
}

/// Checks the prefix of `bytes`: the magic, then the schema version, so a newer layout is
/// refused before it is misread. Bytes shorter than the prefix are [`Error::Truncated`],
/// reporting `smallest`, the size of the smallest complete file of this kind.
pub(crate) fn check_prefix(bytes: &[u8], magic: [u8; 4], smallest: usize) -> Result<(), Error> {
    if bytes.len() < PREFIX_LEN {
        return Err(Error::Truncated {
            needed: smallest,
            available: bytes.len(),
        });
    }
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != magic {
        return Err(Error::BadMagic {
            expected: magic,
            found,
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SCHEMA_VERSION {
        return Err(Error::UnsupportedSchemaVersion {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32/ISO-HDLC (the zlib, PNG and Ethernet CRC) of `bytes`.
///
/// ```
/// assert_eq!(firmware_config::framing::crc32(b"123456789"), 0xCBF4_3926);
/// ```
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8)
    })
}

/// COBS-encodes `data` and appends the frame delimiter (a zero byte).
pub fn cobs_frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 254 + 2);
    let mut code_at = out.len();
    out.push(0);
    let mut code = 1u8;
    for &byte in data {
        if byte == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(byte);
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out.push(0);
    out
}

/// Decodes one COBS frame body (without its delimiter). `None` if the body is not valid COBS.
pub fn cobs_decode(frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(frame.len());
    let mut i = 0;
    while i < frame.len() {
        let code = usize::from(frame[i]);
        if code == 0 || i + code > frame.len() {
            return None;
        }
        out.extend_from_slice(&frame[i + 1..i + code]);
        i += code;
        if code < 0xFF && i < frame.len() {
            out.push(0);
        }
    }
    Some(out)
}

/// Appends the little-endian CRC32 of `payload` to it.
pub(crate) fn with_crc(mut payload: Vec<u8>) -> Vec<u8> {
    let crc = crc32(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

/// Splits `body` into payload and trailing CRC32 and checks it.
pub(crate) fn check_crc(body: &[u8]) -> Result<&[u8], Error> {
    if body.len() < 4 {
        return Err(Error::Truncated {
            needed: 4,
            available: body.len(),
        });
    }
    let (payload, stored) = body.split_at(body.len() - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32(payload);
    if stored == computed {
        Ok(payload)
    } else {
        Err(Error::CrcMismatch { stored, computed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn cobs_known_vectors() {
        // From the COBS paper / Wikipedia examples.
        assert_eq!(cobs_frame(&[0x00]), vec![0x01, 0x01, 0x00]);
        assert_eq!(cobs_frame(&[0x00, 0x00]), vec![0x01, 0x01, 0x01, 0x00]);
        assert_eq!(
            cobs_frame(&[0x11, 0x22, 0x00, 0x33]),
            vec![0x03, 0x11, 0x22, 0x02, 0x33, 0x00]
        );
        let long: Vec<u8> = (1..=254).collect();
        let framed = cobs_frame(&long);
        assert_eq!(framed[0], 0xFF);
        assert_eq!(framed.len(), 254 + 3);
    }

    proptest! {
        #[test]
        fn cobs_round_trips_and_has_no_inner_zero(data in proptest::collection::vec(any::<u8>(), 0..800)) {
            let framed = cobs_frame(&data);
            prop_assert_eq!(*framed.last().unwrap(), 0);
            prop_assert!(!framed[..framed.len() - 1].contains(&0));
            prop_assert_eq!(cobs_decode(&framed[..framed.len() - 1]).unwrap(), data);
        }
    }
}
