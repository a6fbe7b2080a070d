//! `fer-edge bundle ...`, and the self-test the board runs before it activates a bundle:
//! the one part of `bundle` that loads models.

use std::path::PathBuf;

use firmware_config::PublicKey;
use serde::{Deserialize, Serialize};

use super::format::{VerifiedBundle, verify_dir};
use super::slots::{BoardRoot, BoardStatus, activate};
use crate::classify::Classifier;
use crate::detect::Detector;
use crate::error::{Error, Result};

/// `fer-edge bundle ...`: the board side of `fer flash`, `fer rollback` and `fer collect`.
/// Every subcommand prints one JSON document on stdout, so the workstation can parse it.
///
/// `fer-edge` exposes it as a subcommand: `Bundle { #[command(subcommand)] cmd: BundleCommand }`,
/// run as `println!("{}", cmd.run()?)`.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum BundleCommand {
    /// Verify a bundle folder: signature, every file's hash, and its contents.
    Verify {
        /// The bundle folder.
        dir: PathBuf,
        /// The board root whose trusted key must have signed it.
        #[arg(long, conflicts_with = "key")]
        root: Option<PathBuf>,
        /// The trusted public key (64 hex digits) instead of a board root's.
        #[arg(long, required_unless_present = "root")]
        key: Option<String>,
    },
    /// Create a board root (slots, staging) that trusts the given public key.
    Init {
        /// The board root folder.
        #[arg(long)]
        root: PathBuf,
        /// The public key bundles must be signed with (64 hex digits, from `fer keygen`).
        #[arg(long)]
        trust: String,
    },
    /// Verify a staged bundle, run its self-test and make it active (the old one stays for rollback).
    Activate {
        /// The board root folder.
        #[arg(long)]
        root: PathBuf,
        /// The uploaded bundle folder (removed afterwards if it is under ROOT/staging).
        staged: PathBuf,
    },
    /// Switch back to the previous bundle (verified and self-tested first).
    Rollback {
        /// The board root folder.
        #[arg(long)]
        root: PathBuf,
    },
    /// Show the trusted key, both slots, the active one and the field-log folder.
    Status {
        /// The board root folder.
        #[arg(long)]
        root: PathBuf,
    },
}

/// The JSON `fer-edge bundle status` prints: the board's state and where its field log is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Slots, active slot and trusted key.
    #[serde(flatten)]
    pub board: BoardStatus,
    /// The active config's field-log folder (relative paths resolved against the root).
    pub field_log_dir: Option<PathBuf>,
    /// Faces seen and low-confidence faces per bundle, from the field-log folder's tally
    /// (absent from older boards, or when unreadable).
    #[serde(default)]
    pub tally: Option<crate::tally::Tally>,
}

impl StatusReport {
    /// The status of a board root, with its field-log folder and face tally.
    pub fn of(board: &BoardRoot) -> Result<StatusReport> {
        let status = board.status()?;
        let field_log_dir = match status.active {
            Some(_) => board.field_log_dir().ok(),
            None => None,
        };
        let tally = field_log_dir
            .as_deref()
            .and_then(|dir| crate::tally::Tally::read(dir).ok());
        Ok(StatusReport {
            board: status,
            field_log_dir,
            tally,
        })
    }
}

fn parse_key_arg(text: &str) -> Result<PublicKey> {
    PublicKey::from_hex(text.trim()).map_err(|e| {
        Error::invalid(
            "public key",
            format!("{e} (use the hex line of `fer keygen`)"),
        )
    })
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// Loads a verified bundle's detector and classifier and runs the classifier's self-test
/// (the stored input must give the stored output within the manifest's tolerance). Returns
/// both models and the self-test's report.
pub fn load_models(bundle: &VerifiedBundle) -> Result<(Detector, Classifier, String)> {
    let detector = Detector::from_config(&bundle.config.detector, &bundle.dir)?;
    let classifier = Classifier::load(
        &bundle.model_path(),
        bundle.manifest.clone(),
        &bundle.config.classifier,
    )?
    .with_detector_margin(&bundle.config.detector);
    let report = classifier.self_test(&bundle.dir)?;
    Ok((detector, classifier, report))
}

/// The self-test the board runs before activating a bundle: [`load_models`], reduced to its
/// report.
pub fn model_self_test(bundle: &VerifiedBundle) -> std::result::Result<String, String> {
    load_models(bundle)
        .map(|(_, _, report)| report)
        .map_err(|e| e.to_string())
}

impl BundleCommand {
    /// Runs the subcommand and returns the JSON to print; activation and rollback run
    /// [`model_self_test`] first.
    pub fn run(self) -> Result<String> {
        self.run_with(model_self_test)
    }

    /// [`BundleCommand::run`] with another self-test (for boards that test more, and tests).
    pub fn run_with(
        self,
        self_test: impl FnOnce(&VerifiedBundle) -> std::result::Result<String, String>,
    ) -> Result<String> {
        match self {
            Self::Verify { dir, root, key } => {
                let trusted = match (root, key) {
                    (Some(root), _) => BoardRoot::open(&root)?.trusted_key()?,
                    (None, Some(key)) => parse_key_arg(&key)?,
                    (None, None) => {
                        return Err(Error::invalid("arguments", "give --root or --key"));
                    }
                };
                let bundle = verify_dir(&dir, &trusted)?;
                Ok(to_json(&serde_json::json!({
                    "bundle_id": bundle.id,
                    "files": bundle.listing.files,
                    "training_run_id": bundle.manifest.training_run_id,
                })))
            }
            Self::Init { root, trust } => {
                let board = BoardRoot::init(&root, &parse_key_arg(&trust)?)?;
                Ok(to_json(&board.status()?))
            }
            Self::Activate { root, staged } => Ok(to_json(&activate(&root, &staged, self_test)?)),
            Self::Rollback { root } => Ok(to_json(&BoardRoot::open(&root)?.rollback(self_test)?)),
            Self::Status { root } => Ok(to_json(&StatusReport::of(&BoardRoot::open(&root)?)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::fixtures::{key, make_bundle, passes, public};
    use firmware_config::config::DeviceConfig;

    #[test]
    fn the_cli_prints_json_the_workstation_parses() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let root = tmp.path().join("board");
        let init = BundleCommand::Init {
            root: root.clone(),
            trust: public(&signer).to_hex(),
        };
        init.run_with(passes).unwrap();
        let made = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
        let out = BundleCommand::Activate {
            root: root.clone(),
            staged: made.dir.clone(),
        }
        .run_with(passes)
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["bundle_id"], made.id.as_str());
        assert_eq!(value["self_test"], "self-test passed");
        let status: serde_json::Value = serde_json::from_str(
            &BundleCommand::Status { root: root.clone() }
                .run_with(passes)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["active"], "a");
        assert_eq!(
            status["field_log_dir"],
            root.join(DeviceConfig::default().field_log.directory)
                .to_str()
                .unwrap()
        );
    }
}
