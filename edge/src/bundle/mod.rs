//! Signed model bundles and the board's A/B slots, in three parts:
//!
//! * [`format`]: the signed-bundle format, signing and verification ([`verify_dir`]); it
//!   loads no model, so the workstation uses it too;
//! * [`slots`]: the board root, its two slots and atomic activation and rollback
//!   ([`BoardRoot`]);
//! * [`command`]: `fer-edge bundle ...` ([`BundleCommand`]) and the model self-test run before
//!   activation ([`model_self_test`]).

pub mod command;
pub mod format;
pub mod slots;

#[cfg(test)]
mod fixtures;

pub use command::{BundleCommand, StatusReport, load_models, model_self_test};
pub use format::{
    CONFIG_BIN, CONFIG_TOML, FileEntry, MANIFEST_BIN, MANIFEST_JSON, ROTATION_FILE, SIGNATURE_FILE,
    SignedListing, VerifiedBundle, check_classes, hash_file, read_listing, read_public_key,
    short_id, sign_dir, verify_dir, version_now, write_metadata, write_rotation,
};
pub use slots::{
    Activation, BoardRoot, BoardStatus, FALLBACK_FILE, Fallback, HEALTHY_AFTER, MAX_TRIAL_STARTS,
    NEWEST_VERSION_FILE, SlotStatus, TRIAL_FILE, TRUSTED_KEY_FILE, activate, open_for_run,
};
