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
mod tests {
    use super::*;
    use crate::bundle::fixtures::{key, make_bundle, make_versioned, message, passes, public};
    use crate::bundle::format::{sign_dir, write_rotation};
    use ed25519_dalek::SigningKey;

    fn board(tmp: &Path, signer: &SigningKey) -> BoardRoot {
        BoardRoot::init(&tmp.join("board"), &public(signer)).unwrap()
    }

    #[test]
    fn a_board_without_room_for_the_bundle_refuses_it_before_copying() {
        let tmp = tempfile::tempdir().unwrap();
        let small = tmp.path().join("small");
        fs::create_dir(&small).unwrap();
        // A file system smaller than the activation margin: root can mount one, others skip.
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&small)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mounting a 4 MiB tmpfs needs root");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(small.clone());
        let signer = key(1);
        let board = BoardRoot::init(&small.join("board"), &public(&signer)).unwrap();
        let bundle = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
        let err = message(board.activate(&bundle.dir, passes).unwrap_err());
        assert!(err.contains("free on the board"), "{err}");
        assert_eq!(board.active_slot().unwrap(), None);
        assert!(!small.join("board/slots").join(INCOMING).exists());
    }

    #[test]
    fn a_new_slot_that_keeps_failing_falls_back_to_the_previous_one_by_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let board = board(tmp.path(), &signer);
        let good = make_bundle(&tmp.path().join("good"), &signer, "good");
        let crashy = make_bundle(&tmp.path().join("crashy"), &signer, "crashy");
        board.activate(&good.dir, passes).unwrap();
        board.mark_healthy().unwrap();
        board.activate(&crashy.dir, passes).unwrap();
        assert_eq!(board.trial().unwrap(), Some(("b".into(), 0)));
        // Passes its self-test, then crashes at run time: three starts without a healthy run.
        let id = |b: &VerifiedBundle| Ok(b.id.clone());
        for start in 1..=MAX_TRIAL_STARTS {
            let (running, _) = board.start(id).unwrap();
            assert_eq!(running.id, crashy.id, "start {start}");
        }
        let (running, _) = board.start(id).unwrap();
        assert_eq!(running.id, good.id);
        let status = board.status().unwrap();
        assert_eq!(status.active.as_deref(), Some("a"));
        let fallback = status.fallback.unwrap();
        assert_eq!(
            (fallback.from_slot.as_str(), fallback.to_slot.as_str()),
            ("b", "a")
        );
        assert!(
            fallback.reason.contains("started 3 times"),
            "{}",
            fallback.reason
        );
        assert_eq!(status.trial, None);
        // The previous slot is not on trial: it keeps starting.
        for _ in 0..5 {
            assert_eq!(board.start(id).unwrap().0.id, good.id);
        }
    }

    #[test]
    fn an_active_slot_that_no_longer_verifies_starts_the_other_one() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let board = board(tmp.path(), &signer);
        let first = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
        let second = make_bundle(&tmp.path().join("b2"), &signer, "run-2");
        board.activate(&first.dir, passes).unwrap();
        board.activate(&second.dir, passes).unwrap();
        board.mark_healthy().unwrap();
        // Storage damage in the active slot.
        fs::write(board.slot_dir("b").join("model.onnx"), b"bit rot").unwrap();
        let (running, _) = board.start(|b| Ok(b.id.clone())).unwrap();
        assert_eq!(running.id, first.id);
        let fallback = board.fallback().unwrap().unwrap();
        assert!(
            fallback.reason.contains("model.onnx"),
            "{}",
            fallback.reason
        );
        // A model that does not load counts the same: both slots bad is the active's error.
        fs::write(board.slot_dir("b").join("model.onnx"), b"bit rot").unwrap();
        let err = board
            .start(|_| Err::<(), _>(Error::invalid("model", "does not load")))
            .unwrap_err();
        assert!(err.to_string().contains("does not load"), "{err}");
    }

    #[test]
    fn an_older_signed_bundle_cannot_be_activated_again() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let board = board(tmp.path(), &signer);
        let flawed = make_versioned(&tmp.path().join("v5"), &signer, "flawed", 5);
        let fixed = make_versioned(&tmp.path().join("v7"), &signer, "fixed", 7);
        let between = make_versioned(&tmp.path().join("v6"), &signer, "between", 6);
        board.activate(&flawed.dir, passes).unwrap();
        board.activate(&fixed.dir, passes).unwrap();
        assert_eq!(board.status().unwrap().newest_version, 7);
        for old in [&flawed, &between] {
            let err = message(board.activate(&old.dir, passes).unwrap_err());
            assert!(err.contains("older than version 7"), "{err}");
            assert_eq!(board.open_active().unwrap().id, fixed.id);
        }
        // The explicit way back is to the kept slot, and it does not lower the bar.
        let back = board.rollback(passes).unwrap();
        assert_eq!(back.bundle_id, flawed.id);
        assert_eq!(board.newest_version().unwrap(), 7);
        let err = message(board.activate(&between.dir, passes).unwrap_err());
        assert!(err.contains("older than version 7"), "{err}");
        // The same version again is a re-flash, not a downgrade.
        let again = make_versioned(&tmp.path().join("v7b"), &signer, "fixed-again", 7);
        board.activate(&again.dir, passes).unwrap();
    }

    #[test]
    fn a_new_signing_key_is_trusted_only_through_a_statement_by_the_trusted_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new, stranger) = (key(1), key(2), key(3));
        let board = board(tmp.path(), &old);
        board
            .activate(&make_bundle(&tmp.path().join("b0"), &old, "r0").dir, passes)
            .unwrap();
        let rotating = |name: &str, statement_by: &SigningKey| {
            let dir = tmp.path().join(name);
            make_versioned(&dir, &new, name, 2);
            write_rotation(&dir, statement_by, &public(&new)).unwrap();
            sign_dir(&dir, &new, 2).unwrap()
        };
        let unsigned = make_versioned(&tmp.path().join("plain"), &new, "plain", 2);
        let err = message(board.activate(&unsigned.dir, passes).unwrap_err());
        assert!(err.contains("rotate"), "{err}");
        let forged = rotating("forged", &stranger);
        let err = message(board.activate(&forged.dir, passes).unwrap_err());
        assert!(err.contains("rotation.sig"), "{err}");
        assert_eq!(board.trusted_key().unwrap(), public(&old));

        let rotation = rotating("rotation", &old);
        board.activate(&rotation.dir, passes).unwrap();
        assert_eq!(board.trusted_key().unwrap(), public(&new));
        assert_eq!(board.open_active().unwrap().id, rotation.id);
        // The old key is revoked: its bundles, and its own rotations, are refused now.
        let by_old = make_versioned(&tmp.path().join("by-old"), &old, "by-old", 3);
        assert!(board.activate(&by_old.dir, passes).is_err());
        let dir = tmp.path().join("old-rotates");
        make_versioned(&dir, &stranger, "old-rotates", 3);
        write_rotation(&dir, &old, &public(&stranger)).unwrap();
        sign_dir(&dir, &stranger, 3).unwrap();
        assert!(board.activate(&dir, passes).is_err());
        let by_new = make_versioned(&tmp.path().join("by-new"), &new, "by-new", 3);
        board.activate(&by_new.dir, passes).unwrap();
    }

    #[test]
    fn activation_switches_slots_and_keeps_the_previous_bundle() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let board = board(tmp.path(), &signer);
        let first = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
        let second = make_bundle(&tmp.path().join("b2"), &signer, "run-2");

        let done = board.activate(&first.dir, passes).unwrap();
        assert_eq!(
            (done.slot.as_str(), done.previous_slot.as_deref()),
            ("a", None)
        );
        assert_eq!(board.open_active().unwrap().id, first.id);
        // A staged folder outside ROOT/staging belongs to the caller and stays.
        assert!(first.dir.is_dir());

        let done = board.activate(&second.dir, passes).unwrap();
        assert_eq!(
            (done.slot.as_str(), done.previous_slot.as_deref()),
            ("b", Some("a"))
        );
        assert_eq!(done.previous_bundle_id.as_deref(), Some(first.id.as_str()));
        assert_eq!(board.open_active().unwrap().id, second.id);

        let back = board.rollback(passes).unwrap();
        assert_eq!(
            (back.slot.as_str(), back.bundle_id.as_str()),
            ("a", first.id.as_str())
        );
        assert_eq!(
            board.open_active().unwrap().manifest.training_run_id,
            "run-1"
        );
        let status = board.status().unwrap();
        assert_eq!(status.active.as_deref(), Some("a"));
        assert!(status.slots.iter().all(|s| s.problem.is_none()));
    }

    #[test]
    fn a_failing_bundle_leaves_the_board_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let (signer, attacker) = (key(1), key(2));
        let board = board(tmp.path(), &signer);
        let first = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
        let second = make_bundle(&tmp.path().join("b2"), &signer, "run-2");
        board.activate(&first.dir, passes).unwrap();
        board.activate(&second.dir, passes).unwrap();
        let before = board.status().unwrap();

        let broken = make_bundle(&tmp.path().join("b3"), &signer, "run-3");
        let err = message(
            board
                .activate(&broken.dir, |_| Err("output differs by 0.4".into()))
                .unwrap_err(),
        );
        assert!(
            err.contains("self-test failed") && err.contains("0.4"),
            "{err}"
        );
        assert_eq!(board.status().unwrap(), before);

        let mut model = fs::read(broken.model_path()).unwrap();
        model[0] ^= 0x80;
        fs::write(broken.model_path(), model).unwrap();
        let err = message(board.activate(&broken.dir, passes).unwrap_err());
        assert!(
            err.contains("model.onnx") && err.contains("tampered"),
            "{err}"
        );
        assert_eq!(board.status().unwrap(), before);

        let foreign = make_bundle(&tmp.path().join("b4"), &attacker, "run-4");
        let err = message(board.activate(&foreign.dir, passes).unwrap_err());
        assert!(err.contains("signed by key"), "{err}");
        assert_eq!(board.status().unwrap(), before);
        assert!(!board.path().join("slots").join(INCOMING).exists());
        assert_eq!(board.open_active().unwrap().id, second.id);
    }

    #[test]
    fn staged_uploads_are_removed_and_rollback_needs_a_previous_bundle() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let board = board(tmp.path(), &signer);
        let staged = board.staging_dir().join("upload-1");
        make_bundle(&staged, &signer, "run-1");
        board.activate(&staged, passes).unwrap();
        assert!(!staged.exists());
        let err = message(board.rollback(passes).unwrap_err());
        assert!(err.contains("no previous bundle"), "{err}");

        let err = message(BoardRoot::init(board.path(), &public(&key(3))).unwrap_err());
        assert!(err.contains("already trusts"), "{err}");
        let err = message(BoardRoot::open(&tmp.path().join("nowhere")).unwrap_err());
        assert!(err.contains("trusted.pub") && err.contains("init"), "{err}");
    }

    #[test]
    fn the_edge_opens_the_active_bundle_through_the_root_or_the_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let board = board(tmp.path(), &signer);
        let made = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
        board.activate(&made.dir, passes).unwrap();
        assert_eq!(open_for_run(board.path()).unwrap().id, made.id);
        let via_link = open_for_run(&board.path().join("active")).unwrap();
        assert_eq!(
            via_link.dir,
            fs::canonicalize(board.path().join("slots/a")).unwrap()
        );
        let err = message(open_for_run(&made.dir).unwrap_err());
        assert!(err.contains("no trusted.pub"), "{err}");
        // A file changed on the board after activation is caught when the edge starts.
        fs::write(board.path().join("slots/a/selftest.bin"), b"zzzz").unwrap();
        let err = message(open_for_run(board.path()).unwrap_err());
        assert!(err.contains("selftest.bin"), "{err}");
    }
}
