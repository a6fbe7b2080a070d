//! The exit codes of `fer`, `fer-edge` and `fer-train`: one table, one meaning per code.
//!
//! Scripts, CI and the systemd unit of the board (`RestartPreventExitStatus`) rely on these
//! numbers, so a code never changes its meaning and no two meanings share a code. Each
//! binary's `--help` lists the rows that apply to it ([`help`]); README.md shows the table.
//!
//! | code | name | meaning | returned by |
//! |---|---|---|---|
//! | 0 | [`SUCCESS`] | success | all |
//! | 1 | [`FAILURE`] | any other failure (I/O, a full disk, the field log, plotting) | all |
//! | 2 | [`USAGE`] | bad command line or argument (clap's own code), bad board address | all |
//! | 3 | [`BAD_INPUT`] | bad input file: image, model, manifest, config, dataset, checkpoint, cascade | all |
//! | 4 | [`CAMERA`] | the camera could not be opened or was lost | `fer-edge` |
//! | 5 | [`BUNDLE_REFUSED`] | a bundle was refused (signature, hashes, self-test, classes); the board is unchanged | `fer-edge`, `fer` |
//! | 6 | [`REMOTE`] | ssh, scp or a command on the board failed | `fer` |
//! | 7 | [`DAMAGED_SEGMENT`] | damaged field-log segments were kept on the board | `fer` |
//! | 8 | [`BACKEND_UNAVAILABLE`] | the compute backend is not usable here (no GPU, no LibTorch) | `fer-train` |
//! | 9 | [`FLEET_PARTIAL`] | a fleet command failed on some boards (its table says which); the others are done | `fer` |
//!
//! ```
//! use firmware_config::exit_code::{self, Program};
//!
//! let help = exit_code::help(Program::Edge);
//! assert!(help.contains("4  the camera could not be opened or was lost"));
//! assert!(!help.contains("ssh"));
//! ```

use alloc::string::String;

/// Success.
pub const SUCCESS: u8 = 0;
/// Any other failure: I/O, a full disk, the field log, plotting.
pub const FAILURE: u8 = 1;
/// A bad command line or argument (what clap exits with), or a bad board address.
pub const USAGE: u8 = 2;
/// A bad input file: image, model, manifest, config, dataset, checkpoint, cascade.
pub const BAD_INPUT: u8 = 3;
/// The camera could not be opened or was lost.
pub const CAMERA: u8 = 4;
/// A bundle was refused (signature, hashes, self-test, classes); the board is unchanged.
pub const BUNDLE_REFUSED: u8 = 5;
/// ssh, scp or a command on the board failed.
pub const REMOTE: u8 = 6;
/// Damaged field-log segments were kept on the board.
pub const DAMAGED_SEGMENT: u8 = 7;
/// The compute backend is not usable on this machine (no GPU, no LibTorch).
pub const BACKEND_UNAVAILABLE: u8 = 8;
/// A fleet command failed on some boards (its table says which); the others are done.
pub const FLEET_PARTIAL: u8 = 9;

/// The three programs of the toolkit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `fer`, the workstation command.
    Fer,
    /// `fer-edge`, the board command.
    Edge,
    /// `fer-train`, the trainer.
    Train,
}

/// One row of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode {
    /// The process exit status.
    pub code: u8,
    /// What it means, for people.
    pub meaning: &'static str,
    /// The programs that return it.
    pub used_by: &'static [Program],
}

const ALL: &[Program] = &[Program::Fer, Program::Edge, Program::Train];

/// Every exit code, in order.
pub const TABLE: [ExitCode; 10] = [
    ExitCode {
        code: SUCCESS,
        meaning: "success",
        used_by: ALL,
    },
    ExitCode {
        code: FAILURE,
        meaning: "any other failure (I/O, a full disk, the field log, plotting)",
        used_by: ALL,
    },
    ExitCode {
        code: USAGE,
        meaning: "bad command line or argument, bad board address",
        used_by: ALL,
    },
    ExitCode {
        code: BAD_INPUT,
        meaning: "bad input file: image, model, manifest, config, dataset, checkpoint, cascade",
        used_by: ALL,
    },
    ExitCode {
        code: CAMERA,
        meaning: "the camera could not be opened or was lost",
        used_by: &[Program::Edge],
    },
    ExitCode {
        code: BUNDLE_REFUSED,
        meaning: "a bundle was refused (signature, hashes, self-test, classes); the board is \
                  unchanged",
        used_by: &[Program::Fer, Program::Edge],
    },
    ExitCode {
        code: REMOTE,
        meaning: "ssh, scp or a command on the board failed",
        used_by: &[Program::Fer],
    },
    ExitCode {
        code: DAMAGED_SEGMENT,
        meaning: "damaged field-log segments were kept on the board",
        used_by: &[Program::Fer],
    },
    ExitCode {
        code: BACKEND_UNAVAILABLE,
        meaning: "the compute backend is not usable here (no GPU, no LibTorch)",
        used_by: &[Program::Train],
    },
    ExitCode {
        code: FLEET_PARTIAL,
        meaning: "a fleet command failed on some boards (its table says which); the others \
                  are done",
        used_by: &[Program::Fer],
    },
];

/// The rows of [`TABLE`] that `program` returns, as the text its `--help` ends with.
pub fn help(program: Program) -> String {
    let mut text = String::from("Exit codes (the same table for fer, fer-edge and fer-train):");
    for row in TABLE.iter().filter(|row| row.used_by.contains(&program)) {
        text.push_str(&alloc::format!("\n  {}  {}", row.code, row.meaning));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(usize::from(row.code), i, "{row:?}");
            assert!(!row.used_by.is_empty(), "{row:?}");
        }
    }

    #[test]
    fn help_lists_only_the_program_s_codes() {
        let fer = help(Program::Fer);
        assert!(fer.contains("\n  6  ssh, scp"), "{fer}");
        assert!(!fer.contains("camera"), "{fer}");
        let train = help(Program::Train);
        assert!(train.contains("\n  8  the compute backend"), "{train}");
        assert!(!train.contains("bundle"), "{train}");
    }
}
