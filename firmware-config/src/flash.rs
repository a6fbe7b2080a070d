//! The binary form of [`DeviceConfig`] and [`ModelManifest`] written to boards.
//!
//! ```text
//! magic (4) | schema version (u16 LE) | payload length (u32 LE) | postcard payload | CRC32 LE
//! ```
//!
//! The CRC covers everything before it. Decoding checks, in this order, the magic, the schema
//! version (a newer layout is refused before it is misread), the length, the CRC, the payload
//! and finally [`DeviceConfig::validate`] / [`ModelManifest::validate`].

use alloc::vec::Vec;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::DeviceConfig;
use crate::framing::{PREFIX_LEN, check_crc};
use crate::manifest::ModelManifest;
use crate::{Error, framing};

/// Magic of an encoded [`DeviceConfig`].
pub const CONFIG_MAGIC: [u8; 4] = *b"FERC";
/// Magic of an encoded [`ModelManifest`].
pub const MANIFEST_MAGIC: [u8; 4] = *b"FERM";
/// The prefix and the payload length (u32 LE).
const HEADER_LEN: usize = PREFIX_LEN + 4;

/// Encodes a config for flashing (after validating it).
pub fn encode_config(config: &DeviceConfig) -> Result<Vec<u8>, Error> {
    config.validate()?;
    encode(CONFIG_MAGIC, config, "device config")
}

/// Decodes and validates a flashed config.
pub fn decode_config(bytes: &[u8]) -> Result<DeviceConfig, Error> {
    let config: DeviceConfig = decode(CONFIG_MAGIC, bytes, "device config")?;
    config.validate()?;
    Ok(config)
}

/// Encodes a manifest for flashing (after validating it).
pub fn encode_manifest(manifest: &ModelManifest) -> Result<Vec<u8>, Error> {
    manifest.validate()?;
    encode(MANIFEST_MAGIC, manifest, "model manifest")
}

/// Decodes and validates a flashed manifest.
pub fn decode_manifest(bytes: &[u8]) -> Result<ModelManifest, Error> {
    let manifest: ModelManifest = decode(MANIFEST_MAGIC, bytes, "model manifest")?;
    manifest.validate()?;
    Ok(manifest)
}

fn encode<T: Serialize>(magic: [u8; 4], value: &T, what: &'static str) -> Result<Vec<u8>, Error> {
    let payload = postcard::to_allocvec(value).map_err(|e| Error::malformed(what, e))?;
    let len =
        u32::try_from(payload.len()).map_err(|_| Error::invalid(what, "larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    framing::push_prefix(&mut out, magic);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = framing::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode<T: DeserializeOwned>(
    magic: [u8; 4],
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    let truncated = |needed| Error::Truncated {
        needed,
        available: bytes.len(),
    };
    framing::check_prefix(bytes, magic, HEADER_LEN + 4)?;
    if bytes.len() < HEADER_LEN {
        return Err(truncated(HEADER_LEN + 4));
    }
    let len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    let total = HEADER_LEN + len + 4;
    if bytes.len() < total {
        return Err(truncated(total));
    }
    if bytes.len() > total {
        return Err(Error::Malformed {
            what,
            detail: alloc::format!("{} bytes after the end", bytes.len() - total),
        });
    }
    let covered = check_crc(bytes)?;
    let (value, rest) =
        postcard::take_from_bytes(&covered[HEADER_LEN..]).map_err(|e| Error::malformed(what, e))?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what,
            detail: alloc::format!("{} unread payload bytes", rest.len()),
        });
    }
    Ok(value)
}
