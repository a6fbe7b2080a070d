//! Faces seen and low-confidence faces per bundle, kept beside the field log in
//! `tally.json`.
//!
//! The field log holds only the faces the model was unsure of, so it cannot say how often
//! that happens. The tally can: `fer-edge run` adds every face it classified, and how many of
//! them were low-confidence, to the running bundle's count, and `fer-edge status` reports the
//! tally. A staged rollout (`fer fleet flash --canary`) compares a canary's low-confidence
//! rate on the new bundle with its rate on the previous one.
//!
//! The file is small (one entry per bundle ever run) and replaced atomically, so a crash
//! leaves the previous tally; a run that dies between two writes loses only that period's
//! counts, never a field record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The tally's file name inside the field-log folder.
pub const TALLY_FILE: &str = "tally.json";

/// One bundle's counts on one board.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceCount {
    /// Faces classified.
    pub faces: u64,
    /// Of those, faces below their class's low-confidence threshold.
    pub low_confidence: u64,
    /// When the count last grew (Unix milliseconds, board clock).
    pub updated_ms: u64,
}

impl FaceCount {
    /// The share of faces that were low-confidence (`None` before the first face).
    pub fn rate(&self) -> Option<f64> {
        (self.faces > 0).then(|| self.low_confidence as f64 / self.faces as f64)
    }
}

/// Counts per bundle id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Bundle id to its counts.
    pub bundles: BTreeMap<String, FaceCount>,
}

impl Tally {
    /// The tally file of a field-log folder.
    pub fn path(field_log_dir: &Path) -> PathBuf {
        field_log_dir.join(TALLY_FILE)
    }

    /// Reads the folder's tally; an absent file is an empty tally.
    pub fn read(field_log_dir: &Path) -> Result<Tally> {
        let path = Tally::path(field_log_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(
                    path.display().to_string(),
                    format!("{e}; delete the file to start the tally again"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tally::default()),
            Err(e) => Err(Error::io("reading", path, e)),
        }
    }

    /// Adds `faces` and `low_confidence` to `bundle`'s count in the folder's tally and writes
    /// it back atomically. An unreadable tally is started again rather than stopping the board.
    pub fn add(
        field_log_dir: &Path,
        bundle: &str,
        faces: u64,
        low_confidence: u64,
        now_ms: u64,
    ) -> Result<()> {
        if faces == 0 {
            return Ok(());
        }
        let mut tally = Tally::read(field_log_dir).unwrap_or_else(|e| {
            eprintln!("fer-edge: {e}: starting the tally again");
            Tally::default()
        });
        let count = tally.bundles.entry(bundle.to_string()).or_default();
        count.faces += faces;
        count.low_confidence += low_confidence;
        count.updated_ms = now_ms;
        let json = serde_json::to_vec_pretty(&tally)
            .map_err(|e| Error::invalid("tally", e.to_string()))?;
        std::fs::create_dir_all(field_log_dir)
            .map_err(|e| Error::io("creating", field_log_dir, e))?;
        crate::durable::write_atomically(&Tally::path(field_log_dir), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_bundle_and_survive_a_reread() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Tally::read(dir.path()).unwrap(), Tally::default());
        Tally::add(dir.path(), "b1", 10, 4, 1).unwrap();
        Tally::add(dir.path(), "b1", 30, 6, 2).unwrap();
        Tally::add(dir.path(), "b2", 5, 5, 3).unwrap();
        Tally::add(dir.path(), "b2", 0, 0, 4).unwrap();
        let tally = Tally::read(dir.path()).unwrap();
        let b1 = tally.bundles["b1"];
        assert_eq!((b1.faces, b1.low_confidence, b1.updated_ms), (40, 10, 2));
        assert_eq!(b1.rate(), Some(0.25));
        assert_eq!(tally.bundles["b2"].rate(), Some(1.0));
        assert_eq!(FaceCount::default().rate(), None);
    }

    #[test]
    fn a_corrupt_tally_is_named_and_then_started_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Tally::path(dir.path()), b"{not json").unwrap();
        let err = Tally::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(TALLY_FILE) && err.contains("delete"), "{err}");
        Tally::add(dir.path(), "b1", 3, 1, 9).unwrap();
        assert_eq!(Tally::read(dir.path()).unwrap().bundles["b1"].faces, 3);
    }
}
