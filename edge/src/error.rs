//! The one error type of the `edge` library.

use std::path::PathBuf;

use firmware_config::exit_code;

/// Everything that can go wrong on the board side. Every variant names the file or device it
/// is about and, where there is one, says how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read, written or synced.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "creating", "syncing", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An image file could not be decoded.
    #[error("cannot decode image {}: {source} (is it a PNG or JPEG file?)", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// An ONNX model could not be loaded or run.
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What went wrong, with tract's explanation.
        reason: String,
    },
    /// An OpenCV cascade XML file is malformed or of an unsupported kind.
    #[error("cascade {}: {reason}", path.display())]
    Cascade {
        /// The XML file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model manifest, device config or other contract file is unusable.
    #[error("{}: {reason}", path.display())]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A camera could not be opened or stopped delivering frames.
    #[error("camera {device}: {reason}")]
    Camera {
        /// The device path, for example `/dev/video0`.
        device: String,
        /// What went wrong and how to fix it.
        reason: String,
    },
    /// A bundle failed verification or activation.
    #[error("bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle folder.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The field log cannot go on (its folder is unusable or a segment cannot be repaired).
    #[error("field log {}: {reason}", path.display())]
    FieldLog {
        /// The segment or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An argument or input is out of range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument or input.
        what: String,
        /// Why it is rejected and what is accepted.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Model`] for `path` from any displayable reason (tract's errors included,
    /// shown with their whole chain).
    pub fn model(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::Model {
            path: path.into(),
            reason: format!("{reason:#}"),
        }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// The exit code of the one table ([`firmware_config::exit_code`]) for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Image { .. }
            | Self::Model { .. }
            | Self::Cascade { .. }
            | Self::Contract { .. }
            | Self::Invalid { .. } => exit_code::BAD_INPUT,
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                exit_code::BAD_INPUT
            }
            Self::Camera { .. } => exit_code::CAMERA,
            Self::Bundle { .. } => exit_code::BUNDLE_REFUSED,
            Self::Io { .. } | Self::FieldLog { .. } => exit_code::FAILURE,
        }
    }
}
