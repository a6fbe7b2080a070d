//! The contract between the workstation and the board.
//!
//! Everything the two sides must agree on, and nothing else:
//!
//! * [`config::DeviceConfig`]: how a board runs (camera, detector, thresholds, field logging,
//!   display, identity, the bundle signing key).
//! * [`manifest::ModelManifest`]: what a model file expects and produces (input, preprocessing,
//!   class names in output order, trained per-class thresholds, file hash, self-test vector).
//! * [`preprocess`]: the one implementation of crop, resize, channel conversion, normalisation
//!   and layout, used by the trainer and the board alike, so the two can never disagree.
//! * [`record::FieldRecord`]: one low-confidence face logged on the board.
//! * [`segment`]: the field-log file format: a header, then self-delimiting COBS frames with a
//!   CRC32 each, so a reader resynchronises after damage and returns every intact record.
//! * [`flash`]: the binary encoding of configs and manifests written to boards (magic, schema
//!   version, length, postcard payload, CRC32).
//! * [`exit_code`]: the exit codes of `fer`, `fer-edge` and `fer-train`, one table for all three.
//! * `image_folder` (with the `std` feature): how labeled images lie on disk, and so the order
//!   of the classes, which is the order of the model's outputs.
//!
//! `no_std` + `alloc`: microcontroller-class boards can read it too. It depends on serde and
//! postcard only; CRC32 and COBS are implemented here (see [`framing`]).
//!
//! ```
//! use firmware_config::{config::DeviceConfig, flash};
//!
//! let config = DeviceConfig::default();
//! let bytes = flash::encode_config(&config)?;
//! assert_eq!(flash::decode_config(&bytes)?, config);
//! # Ok::<(), firmware_config::Error>(())
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod config;
pub mod digest;
pub mod error;
pub mod exit_code;
pub mod flash;
pub mod framing;
#[cfg(feature = "std")]
pub mod image_folder;
pub mod manifest;
pub mod preprocess;
pub mod record;
pub mod segment;

pub use digest::{PublicKey, Sha256Digest};
pub use error::Error;

/// Whether `name` may name a file inside a bundle: letters, digits, `.`, `_` and `-`, not
/// starting with `.`. No folders, no absolute paths: a name from a config or a manifest must
/// never point outside the bundle, on the workstation that writes it nor on the board.
///
/// ```
/// use firmware_config::is_plain_file_name;
/// assert!(is_plain_file_name("detector.onnx"));
/// for bad in ["", ".hidden", "../x", "/home/u/.bashrc", "a/b", "a b"] {
///     assert!(!is_plain_file_name(bad), "{bad}");
/// }
/// ```
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The schema version this build writes and reads. A reader refuses any other version with
/// [`Error::UnsupportedSchemaVersion`] rather than guessing at a layout it does not know.
pub const SCHEMA_VERSION: u16 = 1;
