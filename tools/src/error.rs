//! The one error type of the `tools` library.

use std::path::PathBuf;

use firmware_config::exit_code;

/// Everything that can go wrong on the workstation side. Every variant names the file,
/// board or command it is about and, where there is one, how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read, written or synced.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file exists but its contents are wrong (bad TOML, bad key, wrong field).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The board-side library (`edge`: bundles, the field log, files) refused or failed.
    #[error(transparent)]
    Bundle(#[from] edge::Error),
    /// A bundle, model or config does not fit the others.
    #[error("{reason}")]
    Mismatch {
        /// What does not fit, naming the files.
        reason: String,
    },
    /// A `--board` address could not be understood.
    #[error("board address {address:?}: {reason}")]
    BoardAddress {
        /// The address as given.
        address: String,
        /// What is accepted.
        reason: String,
    },
    /// A command (ssh, scp, or one run on the board) failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line, for the user to retry by hand.
        command: String,
        /// The exit status.
        status: String,
        /// The exit code, if the command exited (ssh itself uses 255).
        code: Option<i32>,
        /// What it wrote on stderr (trimmed), usually the reason.
        stderr: String,
    },
    /// The board refused a bundle (verification or self-test failed); nothing was changed.
    #[error("the board refused the bundle, its active bundle is unchanged: {reason}")]
    Refused {
        /// The board's reason.
        reason: String,
    },
    /// A field-log segment is damaged; it was kept on the board.
    #[error(
        "segment {segment} on the board is damaged ({reason}); it was kept there: rerun `fer collect` \
             (a transfer error goes away), or pass --accept-damaged to import its intact records and delete it"
    )]
    DamagedSegment {
        /// The segment's file name.
        segment: String,
        /// Where and why frames were skipped.
        reason: String,
    },
    /// Training, exporting or quantizing a round's model failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
    /// Work was stopped on purpose before it finished (the caller's progress hook said so).
    #[error("{failed} of {total} boards failed (see the table above)")]
    FleetPartial {
        /// Boards whose operation failed.
        failed: usize,
        /// Boards selected.
        total: usize,
    },

    #[error("rollout stopped at the canaries: {reason} (the other boards were not touched)")]
    RolloutStopped {
        /// Why.
        reason: String,
    },

    #[error("stopped before finishing: {0}")]
    Interrupted(String),
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

    /// An [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            reason: reason.into(),
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
            Self::Invalid { .. } | Self::BoardAddress { .. } => exit_code::USAGE,
            Self::File { .. } => exit_code::BAD_INPUT,
            Self::Bundle(e) => e.exit_code(),
            Self::Refused { .. } | Self::Mismatch { .. } => exit_code::BUNDLE_REFUSED,
            Self::Command { .. } => exit_code::REMOTE,
            Self::DamagedSegment { .. } => exit_code::DAMAGED_SEGMENT,
            Self::FleetPartial { .. } | Self::RolloutStopped { .. } => exit_code::FLEET_PARTIAL,
            _ => exit_code::FAILURE,
        }
    }
}
