//! The one error type of the `trainer` library.

use std::path::PathBuf;

/// Everything that can go wrong in the trainer library. Each variant names the file or setting
/// involved and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The setting, e.g. `model.regions`.
        field: String,
        /// Why it is rejected and what would be accepted.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {cause}")]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error (part of the message).
        cause: std::io::Error,
    },
    /// A JSON file (config, state, metrics) could not be parsed or written.
    #[error("JSON in {path}: {cause}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser error (part of the message).
        cause: serde_json::Error,
    },
    /// A dataset is unusable (empty folder, unknown class, too few labels, bad CSV row ...).
    #[error("dataset {path}: {reason}")]
    Dataset {
        /// The folder or file of the dataset.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An image could not be decoded (only an error under `--strict`; otherwise it is skipped
    /// and counted).
    #[error("image {path}: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A checkpoint is missing, incomplete or does not match the configuration.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A field-log segment could not be read.
    #[error("field-log segment {path}: {reason}")]
    Segment {
        /// The segment file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The requested compute backend is not usable on this machine.
    #[error("backend {backend} unavailable: {reason}")]
    Backend {
        /// The backend name (`cuda`, `tch`, ...).
        backend: &'static str,
        /// Why, and what to use instead.
        reason: String,
    },
    /// A data-parallel replica could not exchange with the others (burn's collective).
    #[error("device replica {peer}: {reason}")]
    Collective {
        /// The replica's index (0 is the leader).
        peer: usize,
        /// What failed.
        reason: String,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// The drawing backend's message.
        reason: String,
    },
    /// Reading or writing an export file failed; `hint` says how to fix it.
    #[error("{path}: {source}{hint}")]
    File {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
        /// How to fix it, when known (starts with a separator).
        hint: String,
    },
    /// An ONNX graph is malformed (a bug in the exporter, or a hand-built graph).
    #[error("graph {graph}: {reason}")]
    InvalidGraph {
        /// Graph name.
        graph: String,
        /// What is wrong.
        reason: String,
    },
    /// tract could not load or run a model.
    #[error("tract on {path}: {message}")]
    Tract {
        /// The ONNX file (or the in-memory graph's name).
        path: PathBuf,
        /// tract's message.
        message: String,
    },
    /// Calibration for int8 quantization could not be done.
    #[error("calibration: {0}")]
    Calibration(String),
    /// Bad shapes or parameters given to an export, folding or quantization step.
    #[error("{0}")]
    Invalid(String),
}

/// Result with the trainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            cause,
        }
    }

    /// An [`Error::Dataset`] for `path`.
    pub fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Checkpoint`] for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Reads a JSON file into `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })
}

/// Writes `value` as pretty JSON to `path` (through a temporary file, so a crash never leaves a
/// half-written file behind).
pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))
}
