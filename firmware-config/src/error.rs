//! The one error type of the contract.

use alloc::string::String;
use core::fmt;

/// Why encoding, decoding or validating contract data failed.
///
/// Decoding distinguishes the ways bytes go wrong, so that a tool can say whether a file is
/// not ours at all ([`Error::BadMagic`]), from a newer toolkit
/// ([`Error::UnsupportedSchemaVersion`]), cut short ([`Error::Truncated`]), damaged
/// ([`Error::CrcMismatch`]) or well-framed but not a valid value ([`Error::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the expected magic: this is not that kind of file.
    BadMagic {
        /// What the file must start with.
        expected: [u8; 4],
        /// What it starts with.
        found: [u8; 4],
    },
    /// Written with a schema version this build does not read.
    UnsupportedSchemaVersion {
        /// The version in the data.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The data ends before the structure does.
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes that are there.
        available: usize,
    },
    /// The checksum over the payload does not match: the bytes were damaged.
    CrcMismatch {
        /// The checksum stored with the data.
        stored: u32,
        /// The checksum computed over the data as read.
        computed: u32,
    },
    /// Intact framing, but the payload does not decode as the expected type.
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's reason.
        detail: String,
    },
    /// A value decoded, but a field is out of range or inconsistent.
    Invalid {
        /// The field, as a dotted path (`camera.width`).
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(what: &'static str, err: postcard::Error) -> Self {
        Self::Malformed {
            what,
            detail: alloc::format!("{err}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { expected, found } => write!(
                f,
                "bad magic {:?} (expected {:?}): not a file of this kind",
                Ascii(found),
                Ascii(expected)
            ),
            Self::UnsupportedSchemaVersion { found, supported } => {
                if found > supported {
                    write!(
                        f,
                        "schema version {found} is newer than this build reads ({supported}): \
                         update this program to the toolkit release that wrote the data"
                    )
                } else {
                    write!(
                        f,
                        "schema version {found} is not one this build reads ({supported}): \
                         re-create the data with this toolkit release"
                    )
                }
            }
            Self::Truncated { needed, available } => write!(
                f,
                "truncated: needs {needed} bytes, only {available} present"
            ),
            Self::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x}): the data is damaged"
            ),
            Self::Malformed { what, detail } => write!(f, "malformed {what}: {detail}"),
            Self::Invalid { field, reason } => write!(f, "invalid `{field}`: {reason}"),
        }
    }
}

impl core::error::Error for Error {}

/// Shows magic bytes as text where printable.
struct Ascii<'a>(&'a [u8; 4]);

impl fmt::Debug for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}
