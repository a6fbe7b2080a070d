//! Signed model bundles and the board's A/B slots.
//!
//! A bundle is one flat folder:
//!
//! | file | what |
//! |---|---|
//! | the manifest's `model_file` (e.g. `model.onnx`) | the expression classifier |
//! | other `*.onnx` files (optional) | e.g. an int8 or fp32 sibling of the model |
//! | the config's `detector.model_file` (unless `kind = "none"`) | the face detector |
//! | `manifest.json` + `manifest.bin` | the [`ModelManifest`], for people and in flash encoding |
//! | `config.toml` + `config.bin` | the [`DeviceConfig`], for people and in flash encoding |
//! | the manifest's `self_test.input_file` | the stored self-test input |
//! | `bundle.sig` | the signed list of every other file's name, size and SHA-256 |
//!
//! `bundle.sig` is text: a header line, the signer's ed25519 public key, one `file` line per
//! file (sorted by name), then the signature over all the bytes before the `signature` line.
//! [`verify_dir`] checks, in this order and before anything is loaded: the format, that the
//! signer is the trusted key, the signature, that the folder holds exactly the listed files,
//! every file's size and hash, and that the contents agree with each other (both encodings
//! of manifest and config decode to the same values, the manifest's hashes match its files,
//! the config names the trusted key and only classes the model has).
//!
//! On the board, [`BoardRoot`] keeps two slots (`slots/a`, `slots/b`) and an `active`
//! symlink switched atomically by `rename(2)`. [`BoardRoot::activate`] copies a staged bundle
//! into a scratch folder, verifies the copy, runs the self-test on it, moves it into the
//! inactive slot and only then switches `active`: a bundle that fails any step leaves the
//! running one active, and the one before it stays in the other slot for
//! [`BoardRoot::rollback`].

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use firmware_config::config::{DetectorKind, DeviceConfig};
use firmware_config::manifest::ModelManifest;
use firmware_config::{PublicKey, Sha256Digest, flash};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Name of the signature file inside a bundle.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// The manifest as JSON, for people.
pub const MANIFEST_JSON: &str = "manifest.json";
/// The manifest in flash encoding ([`flash::encode_manifest`]).
pub const MANIFEST_BIN: &str = "manifest.bin";
/// The device config as TOML, for people.
pub const CONFIG_TOML: &str = "config.toml";
/// The device config in flash encoding ([`flash::encode_config`]).
pub const CONFIG_BIN: &str = "config.bin";
/// The file on a board root holding the public key every bundle must be signed with.
pub const TRUSTED_KEY_FILE: &str = "trusted.pub";

const HEADER: &str = "fer-bundle-signature v1";
const SLOTS: [&str; 2] = ["a", "b"];
const INCOMING: &str = ".incoming";

/// One signed file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// File name inside the bundle folder.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents.
    pub sha256: Sha256Digest,
}

/// The parsed contents of `bundle.sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedListing {
    /// The key that made the signature.
    pub signer: PublicKey,
    /// Every file except `bundle.sig`, sorted by name.
    pub files: Vec<FileEntry>,
    /// The ed25519 signature over [`SignedListing::message`].
    pub signature: [u8; 64],
}

impl SignedListing {
    /// The exact bytes that are signed: header, signer and file lines.
    pub fn message(&self) -> String {
        let mut text = format!("{HEADER}\nsigner {}\n", self.signer.to_hex());
        for f in &self.files {
            text.push_str(&format!(
                "file {} {} {}\n",
                f.sha256.to_hex(),
                f.size,
                f.name
            ));
        }
        text
    }

    /// The bundle's identity: SHA-256 of the signed message, as hex.
    pub fn bundle_id(&self) -> String {
        hex::encode(Sha256::digest(self.message().as_bytes()))
    }

    /// The whole `bundle.sig` text.
    pub fn to_text(&self) -> String {
        format!(
            "{}signature {}\n",
            self.message(),
            hex::encode(self.signature)
        )
    }

    /// Parses `bundle.sig` text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Bundle {
            path: path.to_path_buf(),
            reason: format!("malformed signature file: {reason}; re-create it with `fer bundle`"),
        };
        let mut lines = text.split_inclusive('\n');
        if lines.next() != Some(&format!("{HEADER}\n")) {
            return Err(bad(format!("the first line is not {HEADER:?}")));
        }
        let signer_line = lines
            .next()
            .ok_or_else(|| bad("it ends before the signer line (truncated)".into()))?;
        let signer_hex = line_value(signer_line, "signer ")
            .ok_or_else(|| bad(format!("expected `signer <hex>`, found {signer_line:?}")))?;
        let signer =
            PublicKey::from_hex(signer_hex).map_err(|e| bad(format!("signer key: {e}")))?;
        let mut files: Vec<FileEntry> = Vec::new();
        let mut signature = None;
        for line in lines.by_ref() {
            if let Some(rest) = line_value(line, "file ") {
                let mut parts = rest.splitn(3, ' ');
                let (Some(sha), Some(size), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad(format!(
                        "expected `file <sha256> <size> <name>`, found {line:?}"
                    )));
                };
                let sha256 = Sha256Digest::from_hex(sha)
                    .map_err(|e| bad(format!("hash of {name:?}: {e}")))?;
                let size = size
                    .parse()
                    .map_err(|_| bad(format!("size of {name:?} is not a number: {size:?}")))?;
                check_file_name(name).map_err(bad)?;
                if files.last().is_some_and(|last| last.name.as_str() >= name) {
                    return Err(bad(format!(
                        "file {name:?} is out of order or listed twice"
                    )));
                }
                files.push(FileEntry {
                    name: name.to_string(),
                    size,
                    sha256,
                });
            } else if let Some(sig) = line_value(line, "signature ") {
                let bytes =
                    hex::decode(sig).map_err(|e| bad(format!("signature is not hex: {e}")))?;
                let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| {
                    bad(format!(
                        "signature is {} bytes, an ed25519 signature is 64 (truncated?)",
                        b.len()
                    ))
                })?;
                signature = Some(bytes);
                break;
            } else {
                return Err(bad(format!("unexpected line {line:?}")));
            }
        }
        let signature =
            signature.ok_or_else(|| bad("no complete `signature` line (truncated)".into()))?;
        if lines.next().is_some() {
            return Err(bad("text after the signature line".into()));
        }
        Ok(Self {
            signer,
            files,
            signature,
        })
    }
}

/// `line` without its newline, if it starts with `prefix` and ends with a newline.
fn line_value<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_suffix('\n')?.strip_prefix(prefix)
}

/// Bundle file names are plain: no folders, no hidden files, nothing a shell would expand.
fn check_file_name(name: &str) -> std::result::Result<(), String> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(format!(
            "file name {name:?} is not allowed in a bundle (use letters, digits, '.', '_', '-'; \
             no folders, not starting with '.')"
        ));
    }
    if name == SIGNATURE_FILE {
        return Err(format!("{SIGNATURE_FILE} cannot sign itself"));
    }
    Ok(())
}

/// SHA-256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(Sha256Digest, u64)> {
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((Sha256Digest(hasher.finalize().into()), size))
}

/// The converted verifying key, or an error naming where the key came from.
fn verifying_key(key: &PublicKey, from: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&key.0).map_err(|e| Error::Bundle {
        path: from.to_path_buf(),
        reason: format!("{} is not a valid ed25519 public key: {e}", key.to_hex()),
    })
}

/// The regular files of a bundle folder except `bundle.sig`, sorted; anything else is an error.
fn list_bundle_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("inspecting", &path, e))?;
        if !kind.is_file() {
            return Err(Error::Bundle {
                path,
                reason: "not a regular file: a bundle holds only plain files (no folders or \
                         symlinks)"
                    .into(),
            });
        }
        if name == SIGNATURE_FILE {
            continue;
        }
        check_file_name(&name).map_err(|reason| Error::Bundle {
            path: path.clone(),
            reason,
        })?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A bundle whose signature, hashes and contents were all checked.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The folder it was verified in.
    pub dir: PathBuf,
    /// SHA-256 of the signed listing (hex): the bundle's identity.
    pub id: String,
    /// The signed listing.
    pub listing: SignedListing,
    /// The model manifest (`manifest.bin`, equal to `manifest.json`).
    pub manifest: ModelManifest,
    /// The device config (`config.bin`, equal to `config.toml`).
    pub config: DeviceConfig,
}

impl VerifiedBundle {
    /// The classifier model file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.model_file)
    }

    /// The detector model file, unless the config runs without a detector.
    pub fn detector_path(&self) -> Option<PathBuf> {
        (self.config.detector.kind != DetectorKind::None)
            .then(|| self.dir.join(&self.config.detector.model_file))
    }

    /// The stored self-test input.
    pub fn self_test_input_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.self_test.input_file)
    }

    /// The bundle id shortened for people (12 hex digits).
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// Reads and checks the manifest and config of a bundle folder whose file hashes are known
/// (`files`): both encodings must agree, the manifest's hashes must match, the config must be
/// valid, name `signer` as its signing key and only classes the model has.
fn check_contents(
    dir: &Path,
    files: &[FileEntry],
    signer: &PublicKey,
) -> Result<(ModelManifest, DeviceConfig)> {
    let bad = |file: &str, reason: String| Error::Bundle {
        path: dir.join(file),
        reason,
    };
    let entry = |name: &str, what: &str| {
        files.iter().find(|f| f.name == name).ok_or_else(|| {
            bad(
                name,
                format!("missing: the bundle has no {what}; rebuild it with `fer bundle`"),
            )
        })
    };
    entry(MANIFEST_JSON, "manifest (JSON)")?;
    entry(MANIFEST_BIN, "manifest (flash encoding)")?;
    entry(CONFIG_TOML, "device config (TOML)")?;
    entry(CONFIG_BIN, "device config (flash encoding)")?;

    let read =
        |name: &str| fs::read(dir.join(name)).map_err(|e| Error::io("reading", dir.join(name), e));
    let manifest: ModelManifest = serde_json::from_slice(&read(MANIFEST_JSON)?)
        .map_err(|e| bad(MANIFEST_JSON, format!("not a valid model manifest: {e}")))?;
    manifest
        .validate()
        .map_err(|e| bad(MANIFEST_JSON, format!("{e}")))?;
    let manifest_bin = flash::decode_manifest(&read(MANIFEST_BIN)?)
        .map_err(|e| bad(MANIFEST_BIN, format!("{e}")))?;
    if manifest_bin != manifest {
        return Err(bad(
            MANIFEST_BIN,
            format!("does not decode to the same manifest as {MANIFEST_JSON}; rebuild the bundle"),
        ));
    }
    let config_text = String::from_utf8(read(CONFIG_TOML)?)
        .map_err(|_| bad(CONFIG_TOML, "not UTF-8 text".into()))?;
    let config: DeviceConfig = toml::from_str(&config_text)
        .map_err(|e| bad(CONFIG_TOML, format!("not a valid device config: {e}")))?;
    let config_bin =
        flash::decode_config(&read(CONFIG_BIN)?).map_err(|e| bad(CONFIG_BIN, format!("{e}")))?;
    if config_bin != config {
        return Err(bad(
            CONFIG_BIN,
            format!("does not decode to the same config as {CONFIG_TOML}; rebuild the bundle"),
        ));
    }
    config
        .validate()
        .map_err(|e| bad(CONFIG_TOML, format!("{e}")))?;

    let model = entry(
        &manifest.model_file,
        "model file named by the manifest's model_file",
    )?;
    if model.sha256 != manifest.model_sha256 {
        return Err(bad(
            &manifest.model_file,
            format!(
                "SHA-256 {} differs from the manifest's model_sha256 {}: model and manifest are \
                 from different exports",
                model.sha256, manifest.model_sha256
            ),
        ));
    }
    let input = entry(
        &manifest.self_test.input_file,
        "self-test input named by the manifest",
    )?;
    if input.sha256 != manifest.self_test.input_sha256 {
        return Err(bad(
            &manifest.self_test.input_file,
            format!(
                "SHA-256 {} differs from the manifest's self_test.input_sha256 {}",
                input.sha256, manifest.self_test.input_sha256
            ),
        ));
    }
    if config.detector.kind != DetectorKind::None {
        entry(
            &config.detector.model_file,
            "detector file named by the config's detector.model_file",
        )?;
    }
    match &config.signing_public_key {
        None => {
            return Err(bad(
                CONFIG_TOML,
                "signing_public_key is not set, so the board would refuse every bundle: set it \
                 to the public key from `fer keygen`"
                    .into(),
            ));
        }
        Some(key) if key != signer => {
            return Err(bad(
                CONFIG_TOML,
                format!(
                    "signing_public_key {key} is not the key that signed this bundle ({signer})"
                ),
            ));
        }
        Some(_) => {}
    }
    check_classes(&config, &manifest).map_err(|reason| bad(CONFIG_TOML, reason))?;
    Ok((manifest, config))
}

/// Every class the config sets a threshold for must be a class of the model.
pub fn check_classes(
    config: &DeviceConfig,
    manifest: &ModelManifest,
) -> std::result::Result<(), String> {
    for (i, t) in config.classifier.class_thresholds.iter().enumerate() {
        if !manifest.class_names.contains(&t.class) {
            return Err(format!(
                "classifier.class_thresholds[{i}].class {:?} is not a class of the model (its \
                 classes: {}): fix the config or use the config written for this model",
                t.class,
                manifest.class_names.join(", ")
            ));
        }
    }
    Ok(())
}

/// Writes the manifest and the config into a bundle folder, each for people (JSON, TOML)
/// and in flash encoding.
pub fn write_metadata(dir: &Path, manifest: &ModelManifest, config: &DeviceConfig) -> Result<()> {
    let invalid = |what: &str, e: String| Error::invalid(what, e);
    let json =
        serde_json::to_string_pretty(manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    let manifest_bin =
        flash::encode_manifest(manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    let config_toml =
        toml::to_string_pretty(config).map_err(|e| invalid("device config", e.to_string()))?;
    let config_bin =
        flash::encode_config(config).map_err(|e| invalid("device config", e.to_string()))?;
    for (name, bytes) in [
        (MANIFEST_JSON, json.into_bytes()),
        (MANIFEST_BIN, manifest_bin),
        (CONFIG_TOML, config_toml.into_bytes()),
        (CONFIG_BIN, config_bin),
    ] {
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(|e| Error::io("writing", &path, e))?;
    }
    Ok(())
}

/// Signs every file in `dir` with `key`, writing `bundle.sig`, after checking that the
/// contents form a valid bundle (so a broken bundle is never signed).
pub fn sign_dir(dir: &Path, key: &SigningKey) -> Result<VerifiedBundle> {
    let signer = PublicKey(key.verifying_key().to_bytes());
    let mut files = Vec::new();
    for name in list_bundle_files(dir)? {
        let (sha256, size) = hash_file(&dir.join(&name))?;
        files.push(FileEntry { name, size, sha256 });
    }
    let (manifest, config) = check_contents(dir, &files, &signer)?;
    let mut listing = SignedListing {
        signer,
        files,
        signature: [0; 64],
    };
    listing.signature = key.sign(listing.message().as_bytes()).to_bytes();
    write_atomically(&dir.join(SIGNATURE_FILE), listing.to_text().as_bytes())?;
    Ok(VerifiedBundle {
        dir: dir.to_path_buf(),
        id: listing.bundle_id(),
        listing,
        manifest,
        config,
    })
}

/// Verifies a bundle folder against the trusted key: signature, exactly the listed files,
/// every size and hash, then the contents. Nothing of the bundle should be loaded before this
/// returns `Ok`.
pub fn verify_dir(dir: &Path, trusted: &PublicKey) -> Result<VerifiedBundle> {
    let sig_path = dir.join(SIGNATURE_FILE);
    let text = match fs::read(&sig_path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| Error::Bundle {
            path: sig_path.clone(),
            reason: "malformed signature file: not UTF-8 text".into(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Bundle {
                path: sig_path,
                reason: "missing: the bundle is unsigned; sign it with `fer bundle --key`".into(),
            });
        }
        Err(e) => return Err(Error::io("reading", sig_path, e)),
    };
    let listing = SignedListing::parse(&text, &sig_path)?;
    if listing.signer != *trusted {
        return Err(Error::Bundle {
            path: sig_path,
            reason: format!(
                "signed by key {}, but the trusted key is {}: sign the bundle with the board's \
                 key (`fer bundle --key`), or re-provision the board's trust",
                listing.signer, trusted
            ),
        });
    }
    let key = verifying_key(trusted, &sig_path)?;
    key.verify_strict(
        listing.message().as_bytes(),
        &Signature::from_bytes(&listing.signature),
    )
    .map_err(|_| Error::Bundle {
        path: sig_path.clone(),
        reason: "the signature does not verify: the file list was altered after signing".into(),
    })?;
    let present: BTreeSet<String> = list_bundle_files(dir)?.into_iter().collect();
    let listed: BTreeSet<String> = listing.files.iter().map(|f| f.name.clone()).collect();
    if let Some(extra) = present.difference(&listed).next() {
        return Err(Error::Bundle {
            path: dir.join(extra),
            reason: "not in the signed file list: remove it or rebuild the bundle".into(),
        });
    }
    for entry in &listing.files {
        let path = dir.join(&entry.name);
        if !present.contains(&entry.name) {
            return Err(Error::Bundle {
                path,
                reason: "missing: the signed file list names it (incomplete upload?)".into(),
            });
        }
        let (sha256, size) = hash_file(&path)?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(Error::Bundle {
                path,
                reason: format!(
                    "contents differ from the signed list (signed {} bytes, SHA-256 {}; found \
                     {size} bytes, SHA-256 {sha256}): the file was damaged or tampered with",
                    entry.size, entry.sha256
                ),
            });
        }
    }
    let (manifest, config) = check_contents(dir, &listing.files, &listing.signer)?;
    Ok(VerifiedBundle {
        dir: dir.to_path_buf(),
        id: listing.bundle_id(),
        listing,
        manifest,
        config,
    })
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
    sync_parent(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Reads a public key file: 64 hex digits, optionally surrounded by whitespace.
pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    PublicKey::from_hex(text.trim()).map_err(|e| Error::Bundle {
        path: path.to_path_buf(),
        reason: format!("not a public key file (64 hex digits): {e}"),
    })
}

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
    /// The active slot, if any.
    pub active: Option<String>,
    /// Both slots.
    pub slots: Vec<SlotStatus>,
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
                         `fer-edge bundle init --root DIR --trust KEY` or `fer flash --init-trust`"
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
            active,
            slots,
        })
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
        if staged.parent() == Some(staging.as_path()) {
            fs::remove_dir_all(staged).map_err(|e| Error::io("removing", staged, e))?;
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
        verify_dir(staged, &trusted)?;
        let incoming = self.root.join("slots").join(INCOMING);
        remove_dir_if_exists(&incoming)?;
        fs::create_dir(&incoming).map_err(|e| Error::io("creating", &incoming, e))?;
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
        sync_dir(&incoming)?;
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
        self.switch_to(target)?;
        Ok(Activation {
            slot: target.to_string(),
            bundle_id: verified.id,
            previous_slot: previous,
            previous_bundle_id,
            self_test: report,
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
        Ok(Activation {
            slot: other.to_string(),
            bundle_id: verified.id,
            previous_slot: Some(current),
            previous_bundle_id: current_id,
            self_test: report,
        })
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
}

impl BoardRoot {
    /// The active config's field-log folder; a relative `field_log.directory` is taken
    /// relative to the board root.
    pub fn field_log_dir(&self) -> Result<PathBuf> {
        let bundle = self.open_active()?;
        Ok(self.root.join(&bundle.config.field_log.directory))
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
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
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
             a board root made by `fer-edge bundle init` (or `fer flash --init-trust`)"
        ),
    })
}

/// The self-test the board runs before activating a bundle: its detector loads, and its
/// classifier gives the stored output on the stored input within the manifest's tolerance.
pub fn model_self_test(bundle: &VerifiedBundle) -> std::result::Result<String, String> {
    crate::detect::Detector::from_config(&bundle.config.detector, &bundle.dir)
        .map_err(|e| e.to_string())?;
    crate::classify::Classifier::load(
        &bundle.model_path(),
        bundle.manifest.clone(),
        &bundle.config.classifier,
    )
    .and_then(|classifier| classifier.self_test(&bundle.dir))
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
            Self::Status { root } => {
                let board = BoardRoot::open(&root)?;
                let status = board.status()?;
                let field_log_dir = match status.active {
                    Some(_) => board.field_log_dir().ok(),
                    None => None,
                };
                Ok(to_json(&StatusReport {
                    board: status,
                    field_log_dir,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::config::ClassThreshold;
    use firmware_config::manifest::SelfTest;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn public(key: &SigningKey) -> PublicKey {
        PublicKey(key.verifying_key().to_bytes())
    }

    /// A complete bundle folder (model bytes are arbitrary: the self-test is a closure here).
    fn make_bundle(dir: &Path, signer: &SigningKey, run_id: &str) -> VerifiedBundle {
        fs::create_dir_all(dir).unwrap();
        let model = format!("model bytes of {run_id}").into_bytes();
        fs::write(dir.join("model.onnx"), &model).unwrap();
        fs::write(dir.join("detector.onnx"), b"detector bytes").unwrap();
        let input = 1.5f32.to_le_bytes();
        fs::write(dir.join("selftest.bin"), input).unwrap();
        let manifest = ModelManifest {
            model_sha256: Sha256Digest(Sha256::digest(&model).into()),
            class_names: vec!["happy".into(), "sad".into(), "neutral".into()],
            training_run_id: run_id.into(),
            self_test: SelfTest {
                input_file: "selftest.bin".into(),
                input_sha256: Sha256Digest(Sha256::digest(input).into()),
                expected_output: vec![0.2, 0.3, 0.5],
                tolerance: 1e-4,
            },
            ..ModelManifest::default()
        };
        let mut config = DeviceConfig::default();
        config.signing_public_key = Some(public(signer));
        config
            .classifier
            .class_thresholds
            .push(ClassThreshold::new("sad", 0.5));
        write_metadata(dir, &manifest, &config).unwrap();
        sign_dir(dir, signer).unwrap()
    }

    fn passes(_: &VerifiedBundle) -> std::result::Result<String, String> {
        Ok("self-test passed".into())
    }

    fn message(err: Error) -> String {
        err.to_string()
    }

    #[test]
    fn signed_bundle_verifies_and_has_a_stable_id() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let made = make_bundle(tmp.path(), &signer, "run-1");
        let verified = verify_dir(tmp.path(), &public(&signer)).unwrap();
        assert_eq!(verified.id, made.id);
        assert_eq!(verified.manifest.training_run_id, "run-1");
        assert_eq!(verified.listing.files.len(), 7);
        assert_eq!(
            verified.detector_path(),
            Some(tmp.path().join("detector.onnx"))
        );
        // Signing the same files again gives the same identity (ed25519 is deterministic).
        assert_eq!(sign_dir(tmp.path(), &signer).unwrap().id, made.id);
    }

    #[test]
    fn a_changed_byte_in_any_file_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        let made = make_bundle(tmp.path(), &signer, "run-1");
        for entry in &made.listing.files {
            let path = tmp.path().join(&entry.name);
            let original = fs::read(&path).unwrap();
            let mut tampered = original.clone();
            tampered[original.len() / 2] ^= 0x01;
            fs::write(&path, &tampered).unwrap();
            let err = message(verify_dir(tmp.path(), &public(&signer)).unwrap_err());
            assert!(
                err.contains(&entry.name) && err.contains("tampered"),
                "{}: {err}",
                entry.name
            );
            fs::write(&path, &original).unwrap();
        }
        verify_dir(tmp.path(), &public(&signer)).unwrap();
    }

    #[test]
    fn a_bundle_re_signed_with_another_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (trusted, attacker) = (key(1), key(2));
        make_bundle(tmp.path(), &trusted, "run-1");
        // The attacker changes the thresholds, names their own key in the config and re-signs.
        let mut manifest: ModelManifest =
            serde_json::from_slice(&fs::read(tmp.path().join(MANIFEST_JSON)).unwrap()).unwrap();
        manifest.class_thresholds = vec![0.0; 3];
        let mut config: DeviceConfig =
            toml::from_str(&fs::read_to_string(tmp.path().join(CONFIG_TOML)).unwrap()).unwrap();
        config.signing_public_key = Some(public(&attacker));
        write_metadata(tmp.path(), &manifest, &config).unwrap();
        sign_dir(tmp.path(), &attacker).unwrap();
        let err = message(verify_dir(tmp.path(), &public(&trusted)).unwrap_err());
        assert!(
            err.contains("signed by key") && err.contains(&public(&attacker).to_hex()),
            "{err}"
        );

        // Claiming the trusted key as signer does not help: the signature no longer verifies.
        let sig_path = tmp.path().join(SIGNATURE_FILE);
        let text = fs::read_to_string(&sig_path).unwrap();
        fs::write(
            &sig_path,
            text.replace(&public(&attacker).to_hex(), &public(&trusted).to_hex()),
        )
        .unwrap();
        let err = message(verify_dir(tmp.path(), &public(&trusted)).unwrap_err());
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn missing_extra_and_unsigned_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        make_bundle(tmp.path(), &signer, "run-1");
        let trusted = public(&signer);

        fs::write(tmp.path().join("extra.onnx"), b"x").unwrap();
        let err = message(verify_dir(tmp.path(), &trusted).unwrap_err());
        assert!(
            err.contains("extra.onnx") && err.contains("not in the signed file list"),
            "{err}"
        );
        fs::remove_file(tmp.path().join("extra.onnx")).unwrap();

        let detector = fs::read(tmp.path().join("detector.onnx")).unwrap();
        fs::remove_file(tmp.path().join("detector.onnx")).unwrap();
        let err = message(verify_dir(tmp.path(), &trusted).unwrap_err());
        assert!(
            err.contains("detector.onnx") && err.contains("missing"),
            "{err}"
        );
        fs::write(tmp.path().join("detector.onnx"), detector).unwrap();

        fs::remove_file(tmp.path().join(SIGNATURE_FILE)).unwrap();
        let err = message(verify_dir(tmp.path(), &trusted).unwrap_err());
        assert!(err.contains("unsigned"), "{err}");
    }

    #[test]
    fn truncated_or_garbled_signature_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        make_bundle(tmp.path(), &signer, "run-1");
        let sig_path = tmp.path().join(SIGNATURE_FILE);
        let text = fs::read_to_string(&sig_path).unwrap();
        for cut in [text.len() - 1, text.len() - 20, text.len() / 2, 10, 0] {
            fs::write(&sig_path, &text[..cut]).unwrap();
            let err = message(verify_dir(tmp.path(), &public(&signer)).unwrap_err());
            assert!(
                err.contains("bundle.sig") && err.contains("malformed"),
                "cut at {cut}: {err}"
            );
        }
        // A signature cut to 63 bytes but still on a whole line.
        let short = format!("{}\n", &text[..text.len() - 3]);
        fs::write(&sig_path, short).unwrap();
        let err = message(verify_dir(tmp.path(), &public(&signer)).unwrap_err());
        assert!(err.contains("63 bytes"), "{err}");
    }

    #[test]
    fn contents_that_disagree_are_refused_before_signing() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = key(1);
        make_bundle(tmp.path(), &signer, "run-1");
        // A config that overrides a class the model does not have.
        let mut config: DeviceConfig =
            toml::from_str(&fs::read_to_string(tmp.path().join(CONFIG_TOML)).unwrap()).unwrap();
        config
            .classifier
            .class_thresholds
            .push(ClassThreshold::new("contempt", 0.5));
        let manifest: ModelManifest =
            serde_json::from_slice(&fs::read(tmp.path().join(MANIFEST_JSON)).unwrap()).unwrap();
        write_metadata(tmp.path(), &manifest, &config).unwrap();
        let err = message(sign_dir(tmp.path(), &signer).unwrap_err());
        assert!(
            err.contains("contempt") && err.contains("happy, sad, neutral"),
            "{err}"
        );

        // A model swapped without a new manifest.
        config.classifier.class_thresholds.pop();
        write_metadata(tmp.path(), &manifest, &config).unwrap();
        fs::write(tmp.path().join("model.onnx"), b"another model").unwrap();
        let err = message(sign_dir(tmp.path(), &signer).unwrap_err());
        assert!(
            err.contains("model.onnx") && err.contains("model_sha256"),
            "{err}"
        );
    }

    fn board(tmp: &Path, signer: &SigningKey) -> BoardRoot {
        BoardRoot::init(&tmp.join("board"), &public(signer)).unwrap()
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
