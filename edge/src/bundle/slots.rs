//! The board's A/B slots and activation.
//!
//! A board root holds `trusted.pub` (the key every bundle must be signed with), two slots
//! (`slots/a`, `slots/b`), an `active` symlink switched atomically by `rename(2)`, and
//! `staging/` for uploads. [`BoardRoot::activate`] copies a staged bundle into a scratch
//! folder, verifies the copy, runs the self-test on it, moves it into the inactive slot and
//! only then switches `active`: a bundle that fails any step leaves the running one active,
//! and the one before it stays in the other slot for [`BoardRoot::rollback`].

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use firmware_config::PublicKey;
use serde::{Deserialize, Serialize};

use super::format::{
    SIGNATURE_FILE, VerifiedBundle, list_bundle_files, read_public_key, verify_dir, verifying_key,
};
use crate::durable::{sync_dir, write_atomically};
use crate::error::{Error, Result};

/// The file on a board root holding the public key every bundle must be signed with.
pub const TRUSTED_KEY_FILE: &str = "trusted.pub";
/// The file on a board root holding the newest bundle version it has activated.
pub const NEWEST_VERSION_FILE: &str = "newest-version";

const SLOTS: [&str; 2] = ["a", "b"];
const INCOMING: &str = ".incoming";
/// The file on a board root that holds `<slot> <starts>` while a newly activated slot is on
/// trial: it has not yet run for [`HEALTHY_AFTER`].
pub const TRIAL_FILE: &str = "trial";
/// The file on a board root that records the last automatic fallback ([`Fallback`]).
pub const FALLBACK_FILE: &str = "fallback.json";
/// Starts a new slot gets to run for [`HEALTHY_AFTER`] before the board goes back to the
/// other slot by itself.
pub const MAX_TRIAL_STARTS: u32 = 3;
/// How long a new slot must run before its trial ends.
pub const HEALTHY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// An automatic fallback: the board started the other slot instead of the active one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// The slot that failed.
    pub from_slot: String,
    /// The slot that runs now.
    pub to_slot: String,
    /// Why the failed slot was left.
    pub reason: String,
}

/// Free space kept beyond the bundle's size when activating.
pub const ACTIVATION_MARGIN_BYTES: u64 = 16 << 20;

/// What [`BoardRoot::activate`] and [`BoardRoot::rollback`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The slot that is active now (`a` or `b`).
    pub slot: String,
    /// The id of the bundle now active.
    pub bundle_id: String,
    /// The slot that was active before, kept for rollback.
    pub previous_slot: Option<String>,
    /// The id of the bundle active before.
    pub previous_bundle_id: Option<String>,
    /// The self-test's report.
    pub self_test: String,
    /// What went wrong without changing the outcome (a staged upload that could not be
    /// removed).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One slot as [`BoardRoot::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// `a` or `b`.
    pub slot: String,
    /// Whether `active` points here.
    pub active: bool,
    /// The bundle id if the slot holds a bundle that verifies.
    pub bundle_id: Option<String>,
    /// The model's training run, if the bundle verifies.
    pub training_run_id: Option<String>,
    /// Why the slot's bundle does not verify (or that it is empty).
    pub problem: Option<String>,
}

/// The state of a board root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardStatus {
    /// The board root.
    pub root: PathBuf,
    /// The trusted public key (hex).
    pub trusted_key: String,
    /// The newest bundle version activated here: older bundles are refused.
    #[serde(default)]
    pub newest_version: u64,
    /// The active slot, if any.
    pub active: Option<String>,
    /// Both slots.
    pub slots: Vec<SlotStatus>,
    /// The active slot is on trial: `(slot, starts so far)`.
    #[serde(default)]
    pub trial: Option<(String, u32)>,
    /// The last automatic fallback, until the next activation.
    #[serde(default)]
    pub fallback: Option<Fallback>,
}

/// A board root: `trusted.pub`, `slots/{a,b}`, the `active` symlink, and `staging/`.
#[derive(Debug, Clone)]
pub struct BoardRoot {
    root: PathBuf,
}

impl BoardRoot {
    /// Creates (or re-opens) a board root that trusts `key`. An existing root that trusts a
    /// different key is refused: changing the trust anchor is a deliberate, manual act.
    pub fn init(root: &Path, key: &PublicKey) -> Result<Self> {
        verifying_key(key, root)?;
        for dir in [root.to_path_buf(), root.join("slots"), root.join("staging")] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        }
        let key_path = root.join(TRUSTED_KEY_FILE);
        if key_path.exists() {
            let existing = read_public_key(&key_path)?;
            if existing != *key {
                return Err(Error::Bundle {
                    path: key_path,
                    reason: format!(
                        "already trusts key {existing}, not {key}: delete this file on the board \
                         to re-provision it deliberately"
                    ),
                });
            }
        } else {
            write_atomically(&key_path, format!("{}\n", key.to_hex()).as_bytes())?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing board root (it must hold `trusted.pub`).
    pub fn open(root: &Path) -> Result<Self> {
        let key_path = root.join(TRUSTED_KEY_FILE);
        if !key_path.is_file() {
            return Err(Error::Bundle {
                path: key_path,
                reason: "missing: this is not an initialised board root; initialise it with \
                         `fer-edge bundle init --root DIR --trust KEY` or `fer flash --trust KEY`"
                    .into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The root folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where uploads are staged before [`BoardRoot::activate`].
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// The key every bundle must be signed with.
    pub fn trusted_key(&self) -> Result<PublicKey> {
        read_public_key(&self.root.join(TRUSTED_KEY_FILE))
    }

    /// The slot on trial and how many times it was started, if one is.
    pub fn trial(&self) -> Result<Option<(String, u32)>> {
        let path = self.root.join(TRIAL_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        let parsed = text.trim().split_once(' ').and_then(|(slot, starts)| {
            let slot = SLOTS.iter().find(|s| **s == slot)?;
            Some(((*slot).to_string(), starts.parse().ok()?))
        });
        // A damaged trial file counts as a trial that has used up its starts.
        Ok(Some(parsed.unwrap_or_else(|| {
            (
                self.active_slot().ok().flatten().unwrap_or_default(),
                MAX_TRIAL_STARTS,
            )
        })))
    }

    /// The last automatic fallback, if one happened since the last activation.
    pub fn fallback(&self) -> Result<Option<Fallback>> {
        let path = self.root.join(FALLBACK_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(serde_json::from_str(&text).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", path, e)),
        }
    }

    /// Ends the trial of the active slot: it ran long enough ([`HEALTHY_AFTER`]).
    pub fn mark_healthy(&self) -> Result<()> {
        remove_file_if_exists(&self.root.join(TRIAL_FILE))
    }

    /// Starts the board: verifies the active bundle and runs `load` on it (models, self-test).
    /// When the active slot does not verify, does not load, or is on trial and has been
    /// started [`MAX_TRIAL_STARTS`] times without running for [`HEALTHY_AFTER`], the board
    /// switches to the other slot by itself if that one verifies and loads, and records a
    /// [`Fallback`]. Otherwise the active slot's error is returned.
    pub fn start<T>(
        &self,
        load: impl Fn(&VerifiedBundle) -> Result<T>,
    ) -> Result<(VerifiedBundle, T)> {
        let _lock = self.lock()?;
        let trusted = self.trusted_key()?;
        let active = self.active_slot()?.ok_or_else(|| Error::Bundle {
            path: self.root.join("active"),
            reason: "no bundle is active yet: flash one with `fer flash`".into(),
        })?;
        let try_slot = |slot: &str| {
            let bundle = verify_dir(&self.slot_dir(slot), &trusted)?;
            let loaded = load(&bundle)?;
            Ok::<_, Error>((bundle, loaded))
        };
        let failure = match self.trial()? {
            Some((slot, starts)) if slot == active && starts >= MAX_TRIAL_STARTS => Error::Bundle {
                path: self.slot_dir(&active),
                reason: format!(
                    "started {starts} times since its activation without running {} s",
                    HEALTHY_AFTER.as_secs()
                ),
            },
            trial => {
                if let Some((slot, starts)) = trial.filter(|(slot, _)| *slot == active) {
                    write_atomically(
                        &self.root.join(TRIAL_FILE),
                        format!("{slot} {}\n", starts + 1).as_bytes(),
                    )?;
                }
                match try_slot(&active) {
                    Ok(started) => return Ok(started),
                    Err(e) => e,
                }
            }
        };
        let other = if active == "a" { "b" } else { "a" };
        if !self.slot_dir(other).is_dir() {
            return Err(failure);
        }
        let Ok(started) = try_slot(other) else {
            return Err(failure);
        };
        self.switch_to(other)?;
        remove_file_if_exists(&self.root.join(TRIAL_FILE))?;
        let record = Fallback {
            from_slot: active,
            to_slot: other.to_string(),
            reason: failure.to_string(),
        };
        let json = serde_json::to_string_pretty(&record)
            .map_err(|e| Error::invalid("fallback record", e.to_string()))?;
        write_atomically(&self.root.join(FALLBACK_FILE), json.as_bytes())?;
        Ok(started)
    }

    /// The newest bundle version activated here (0 before the first activation).
    pub fn newest_version(&self) -> Result<u64> {
        let path = self.root.join(NEWEST_VERSION_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| Error::Bundle {
                path,
                reason: format!("{:?} is not a version number", text.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("reading", path, e)),
        }
    }

    fn slot_dir(&self, slot: &str) -> PathBuf {
        self.root.join("slots").join(slot)
    }

    /// The active slot's name, from the `active` symlink.
    pub fn active_slot(&self) -> Result<Option<String>> {
        let link = self.root.join("active");
        match fs::read_link(&link) {
            Ok(target) => {
                let slot = SLOTS
                    .iter()
                    .find(|s| target == Path::new("slots").join(s))
                    .ok_or_else(|| Error::Bundle {
                        path: link.clone(),
                        reason: format!(
                            "points to {}, expected slots/a or slots/b",
                            target.display()
                        ),
                    })?;
                Ok(Some((*slot).to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading the symlink", link, e)),
        }
    }

    /// Verifies and returns the active bundle.
    pub fn open_active(&self) -> Result<VerifiedBundle> {
        let slot = self.active_slot()?.ok_or_else(|| Error::Bundle {
            path: self.root.join("active"),
            reason: "no bundle is active yet: flash one with `fer flash`".into(),
        })?;
        verify_dir(&self.slot_dir(&slot), &self.trusted_key()?)
    }

    /// Both slots and which is active; each slot's bundle is verified.
    pub fn status(&self) -> Result<BoardStatus> {
        let trusted = self.trusted_key()?;
        let active = self.active_slot()?;
        let slots = SLOTS
            .iter()
            .map(|slot| {
                let dir = self.slot_dir(slot);
                let (bundle_id, training_run_id, problem) = if dir.is_dir() {
                    match verify_dir(&dir, &trusted) {
                        Ok(b) => (Some(b.id), Some(b.manifest.training_run_id), None),
                        Err(e) => (None, None, Some(e.to_string())),
                    }
                } else {
                    (None, None, Some("empty".to_string()))
                };
                SlotStatus {
                    slot: (*slot).to_string(),
                    active: active.as_deref() == Some(*slot),
                    bundle_id,
                    training_run_id,
                    problem,
                }
            })
            .collect();
        Ok(BoardStatus {
            root: self.root.clone(),
            trusted_key: trusted.to_hex(),
            newest_version: self.newest_version()?,
            trial: self.trial()?,
            fallback: self.fallback()?,
            active,
            slots,
        })
    }

    /// The active config's field-log folder; a relative `field_log.directory` is taken
    /// relative to the board root.
    pub fn field_log_dir(&self) -> Result<PathBuf> {
        let bundle = self.open_active()?;
        Ok(self.root.join(&bundle.config.field_log.directory))
    }

    /// Holds the board's lock file (`.lock`) until dropped: one activation at a time.
    fn lock(&self) -> Result<File> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        file.lock().map_err(|e| Error::io("locking", &path, e))?;
        Ok(file)
    }

    /// Points `active` at `slot` atomically (a new symlink renamed over the old one).
    fn switch_to(&self, slot: &str) -> Result<()> {
        let tmp = self.root.join(".active.new");
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &tmp, e)),
        }
        std::os::unix::fs::symlink(Path::new("slots").join(slot), &tmp)
            .map_err(|e| Error::io("creating the symlink", &tmp, e))?;
        let link = self.root.join("active");
        fs::rename(&tmp, &link).map_err(|e| Error::io("switching", &link, e))?;
        sync_dir(&self.root)
    }

    /// Installs the bundle in `staged` and makes it active: copies it into a scratch folder
    /// under the root, verifies the copy against the trusted key, runs `self_test` on it,
    /// moves it into the inactive slot and switches `active`. On any failure the active
    /// bundle stays as it was. A staged folder under this root's `staging/` is removed
    /// afterwards, whatever the outcome.
    pub fn activate(
        &self,
        staged: &Path,
        self_test: impl FnOnce(&VerifiedBundle) -> std::result::Result<String, String>,
    ) -> Result<Activation> {
        let result = self.activate_inner(staged, self_test);
        let staging = self.staging_dir();
        if staged.parent() == Some(staging.as_path())
            && let Err(e) = fs::remove_dir_all(staged)
        {
            // The outcome is the activation's: a staged copy left behind is reported, and
            // removed with the next upload's cleanup at the latest.
            return result.map(|mut done| {
                done.warnings.push(format!(
                    "could not remove the staged upload {}: {e}",
                    staged.display()
                ));
                done
            });
        }
        result
    }

    fn activate_inner(
        &self,
        staged: &Path,
        self_test: impl FnOnce(&VerifiedBundle) -> std::result::Result<String, String>,
    ) -> Result<Activation> {
        let _lock = self.lock()?;
        let trusted = self.trusted_key()?;
        // Refuse early, before copying anything, and name the staged path in the error.
        let staged_bundle = verify_dir(staged, &trusted)?;
        let version = staged_bundle.listing.version;
        let size: u64 = staged_bundle.listing.files.iter().map(|f| f.size).sum();
        let newest = self.newest_version()?;
        if version < newest {
            return Err(Error::Bundle {
                path: staged.to_path_buf(),
                reason: format!(
                    "version {version} is older than version {newest}, the newest this board \
                     has activated: downgrades are refused (`fer rollback` returns to the \
                     bundle kept in the other slot; to ship an old model, bundle it again)"
                ),
            });
        }
        let incoming = self.root.join("slots").join(INCOMING);
        remove_dir_if_exists(&incoming)?;
        // The copy is the one extra bundle on disk (the old slot is replaced, not kept
        // beside); a margin keeps the field log and the system writable afterwards.
        let free = crate::durable::free_bytes(&self.root)?;
        let needed = size.saturating_add(ACTIVATION_MARGIN_BYTES);
        if free < needed {
            return Err(Error::Bundle {
                path: staged.to_path_buf(),
                reason: format!(
                    "{size} bytes to install but only {free} free on the board (with a margin \
                     of {ACTIVATION_MARGIN_BYTES}): free space (or collect the field log) and \
                     flash again; the active bundle is unchanged"
                ),
            });
        }
        fs::create_dir(&incoming).map_err(|e| Error::io("creating", &incoming, e))?;
        let copied = (|| {
            for name in list_bundle_files(staged)?
                .iter()
                .map(String::as_str)
                .chain([SIGNATURE_FILE])
            {
                let (from, to) = (staged.join(name), incoming.join(name));
                fs::copy(&from, &to).map_err(|e| Error::io("copying", &from, e))?;
                File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io("syncing", &to, e))?;
            }
            sync_dir(&incoming)
        })();
        if let Err(e) = copied {
            // A half copy is useless and takes the space the next try needs.
            let _ = remove_dir_if_exists(&incoming);
            return Err(e);
        }
        // What runs later is the copy, so the copy is what must verify.
        let verified = match verify_dir(&incoming, &trusted) {
            Ok(v) => v,
            Err(e) => {
                remove_dir_if_exists(&incoming)?;
                return Err(e);
            }
        };
        let report = match self_test(&verified) {
            Ok(report) => report,
            Err(reason) => {
                remove_dir_if_exists(&incoming)?;
                return Err(Error::Bundle {
                    path: staged.to_path_buf(),
                    reason: format!("self-test failed, the active bundle is unchanged: {reason}"),
                });
            }
        };
        let previous = self.active_slot()?;
        let target = match previous.as_deref() {
            Some("a") => "b",
            _ => "a",
        };
        let target_dir = self.slot_dir(target);
        remove_dir_if_exists(&target_dir)?;
        fs::rename(&incoming, &target_dir).map_err(|e| Error::io("moving into", &target_dir, e))?;
        sync_dir(&self.root.join("slots"))?;
        let previous_bundle_id = match &previous {
            Some(slot) => verify_dir(&self.slot_dir(slot), &trusted)
                .ok()
                .map(|b| b.id),
            None => None,
        };
        // The version first: a crash before the switch leaves the older bundle running, which
        // is allowed; the trust after: a bundle that rotates the key verifies under either.
        if version > newest {
            write_atomically(
                &self.root.join(NEWEST_VERSION_FILE),
                format!("{version}\n").as_bytes(),
            )?;
        }
        write_atomically(
            &self.root.join(TRIAL_FILE),
            format!("{target} 0\n").as_bytes(),
        )?;
        self.switch_to(target)?;
        remove_file_if_exists(&self.root.join(FALLBACK_FILE))?;
        if verified.listing.signer != trusted {
            write_atomically(
                &self.root.join(TRUSTED_KEY_FILE),
                format!("{}\n", verified.listing.signer.to_hex()).as_bytes(),
            )?;
        }
        Ok(Activation {
            slot: target.to_string(),
            bundle_id: verified.id,
            previous_slot: previous,
            previous_bundle_id,
            self_test: report,
            warnings: Vec::new(),
        })
    }

    /// Switches back to the other slot after verifying its bundle and running `self_test`
    /// on it. Refused when the other slot is empty or its bundle does not verify.
    pub fn rollback(
        &self,
        self_test: impl FnOnce(&VerifiedBundle) -> std::result::Result<String, String>,
    ) -> Result<Activation> {
        let _lock = self.lock()?;
        let trusted = self.trusted_key()?;
        let current = self.active_slot()?.ok_or_else(|| Error::Bundle {
            path: self.root.join("active"),
            reason: "no bundle is active, so there is nothing to roll back from".into(),
        })?;
        let other = if current == "a" { "b" } else { "a" };
        let other_dir = self.slot_dir(other);
        if !other_dir.is_dir() {
            return Err(Error::Bundle {
                path: other_dir,
                reason: "empty: there is no previous bundle to roll back to".into(),
            });
        }
        let verified = verify_dir(&other_dir, &trusted)?;
        let report = self_test(&verified).map_err(|reason| Error::Bundle {
            path: other_dir.clone(),
            reason: format!("self-test of the previous bundle failed, nothing changed: {reason}"),
        })?;
        let current_id = verify_dir(&self.slot_dir(&current), &trusted)
            .ok()
            .map(|b| b.id);
        self.switch_to(other)?;
        // An explicit rollback goes to a bundle that ran before: no trial.
        remove_file_if_exists(&self.root.join(TRIAL_FILE))?;
        Ok(Activation {
            slot: other.to_string(),
            bundle_id: verified.id,
            previous_slot: Some(current),
            previous_bundle_id: current_id,
            self_test: report,
            warnings: Vec::new(),
        })
    }
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", dir, e)),
    }
}

/// Verifies `staged` and activates it on the board root `root` (see [`BoardRoot::activate`]).
pub fn activate(
    root: &Path,
    staged: &Path,
    self_test: impl FnOnce(&VerifiedBundle) -> std::result::Result<String, String>,
) -> Result<Activation> {
    BoardRoot::open(root)?.activate(staged, self_test)
}

/// Opens the bundle `fer-edge run --bundle PATH` should run, verified: `PATH` is a board root
/// (its active bundle), or a bundle folder inside one (`ROOT/active`, `ROOT/slots/a`), checked
/// against that root's trusted key. The symlink is resolved first, so a switch while the
/// edge loads cannot mix files of two bundles.
pub fn open_for_run(path: &Path) -> Result<VerifiedBundle> {
    if path.join(TRUSTED_KEY_FILE).is_file() {
        return BoardRoot::open(path)?.open_active();
    }
    let dir = fs::canonicalize(path).map_err(|e| Error::io("opening the bundle", path, e))?;
    for ancestor in dir.ancestors().skip(1).take(2) {
        if ancestor.join(TRUSTED_KEY_FILE).is_file() {
            return verify_dir(&dir, &BoardRoot::open(ancestor)?.trusted_key()?);
        }
    }
    Err(Error::Bundle {
        path: path.to_path_buf(),
        reason: format!(
            "no {TRUSTED_KEY_FILE} in it or above it, so there is no key to verify it with: pass \
             a board root made by `fer-edge bundle init` (or `fer flash --trust`)"
        ),
    })
}

#[cfg(test)]
mod tests;
