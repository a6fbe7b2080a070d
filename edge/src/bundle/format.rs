//! The signed-bundle format and its verification.
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
//! Nothing here loads a model: the workstation (`fer bundle`, `fer flash`) signs and checks
//! bundles with this module alone.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use firmware_config::config::{DetectorKind, DeviceConfig};
use firmware_config::manifest::ModelManifest;
use firmware_config::{PublicKey, Sha256Digest, flash};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::durable::write_atomically;
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

const HEADER: &str = "fer-bundle-signature v2";

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
    /// The bundle's version: a board refuses to activate a bundle older than the newest it
    /// has activated (anti-rollback); `fer rollback` to the kept slot is the one way back.
    pub version: u64,
    /// Every file except `bundle.sig`, sorted by name.
    pub files: Vec<FileEntry>,
    /// The ed25519 signature over [`SignedListing::message`].
    pub signature: [u8; 64],
}

impl SignedListing {
    /// The exact bytes that are signed: header, signer and file lines.
    pub fn message(&self) -> String {
        let mut text = format!(
            "{HEADER}\nsigner {}\nversion {}\n",
            self.signer.to_hex(),
            self.version
        );
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
        let version_line = lines
            .next()
            .ok_or_else(|| bad("it ends before the version line (truncated)".into()))?;
        let version = line_value(version_line, "version ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                bad(format!(
                    "expected `version <number>`, found {version_line:?}"
                ))
            })?;
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
            version,
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
    if !firmware_config::is_plain_file_name(name) {
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
pub(super) fn verifying_key(key: &PublicKey, from: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&key.0).map_err(|e| Error::Bundle {
        path: from.to_path_buf(),
        reason: format!("{} is not a valid ed25519 public key: {e}", key.to_hex()),
    })
}

/// The regular files of a bundle folder except `bundle.sig`, sorted; anything else is an error.
pub(super) fn list_bundle_files(dir: &Path) -> Result<Vec<String>> {
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
        short_id(&self.id)
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

/// A bundle version for a bundle built now: the Unix time in seconds, so that bundles built
/// later are newer without a counter to keep on the workstation.
pub fn version_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs every file in `dir` with `key`, writing `bundle.sig`, after checking that the
/// contents form a valid bundle (so a broken bundle is never signed). `version` is the
/// bundle's [`SignedListing::version`] ([`version_now`] for a new build).
pub fn sign_dir(dir: &Path, key: &SigningKey, version: u64) -> Result<VerifiedBundle> {
    let signer = PublicKey(key.verifying_key().to_bytes());
    let mut files = Vec::new();
    for name in list_bundle_files(dir)? {
        let (sha256, size) = hash_file(&dir.join(&name))?;
        files.push(FileEntry { name, size, sha256 });
    }
    let (manifest, config) = check_contents(dir, &files, &signer)?;
    let mut listing = SignedListing {
        signer,
        version,
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

/// Reads and parses the `bundle.sig` of a bundle folder, without checking the signature (see
/// [`verify_dir`] for that): who claims to have signed it, and what.
pub fn read_listing(dir: &Path) -> Result<SignedListing> {
    let sig_path = dir.join(SIGNATURE_FILE);
    let refused = |reason: String| Error::Bundle {
        path: sig_path.clone(),
        reason,
    };
    // Checked before reading: a symlink to /dev/zero or a huge file must not be read whole.
    match fs::symlink_metadata(&sig_path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(refused(
                "not a regular file: a bundle holds only plain files (no folders or symlinks)"
                    .into(),
            ));
        }
        Ok(meta) if meta.len() > MAX_SIGNATURE_BYTES => {
            return Err(refused(format!(
                "{} bytes, more than a signed file list can be ({MAX_SIGNATURE_BYTES})",
                meta.len()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(
                "missing: the bundle is unsigned; sign it with `fer bundle --key`".into(),
            ));
        }
        Err(e) => return Err(Error::io("inspecting", sig_path, e)),
    }
    let mut bytes = Vec::new();
    fs::File::open(&sig_path)
        .and_then(|f| f.take(MAX_SIGNATURE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io("reading", &sig_path, e))?;
    if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(refused("grew while it was read".into()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| refused("malformed signature file: not UTF-8 text".into()))?;
    SignedListing::parse(&text, &sig_path)
}

/// The key-rotation statement a bundle may carry: `fer-key-rotation v1`, `from <hex>`,
/// `to <hex>`, and the `from` key's signature over those three lines.
pub const ROTATION_FILE: &str = "rotation.sig";
const ROTATION_HEADER: &str = "fer-key-rotation v1";

fn rotation_message(from: &PublicKey, to: &PublicKey) -> String {
    format!(
        "{ROTATION_HEADER}\nfrom {}\nto {}\n",
        from.to_hex(),
        to.to_hex()
    )
}

/// Writes into `dir` the statement by which `from` (the key boards trust now) hands trust to
/// `to`. A bundle signed by `to` that carries it is accepted by boards that trust `from`.
pub fn write_rotation(dir: &Path, from: &SigningKey, to: &PublicKey) -> Result<()> {
    let from_public = PublicKey(from.verifying_key().to_bytes());
    if from_public == *to {
        return Err(Error::invalid(
            "key rotation",
            "the new key is the old key: name the key to rotate to",
        ));
    }
    let message = rotation_message(&from_public, to);
    let signature = from.sign(message.as_bytes()).to_bytes();
    let text = format!("{message}signature {}\n", hex::encode(signature));
    let path = dir.join(ROTATION_FILE);
    fs::write(&path, text).map_err(|e| Error::io("writing", &path, e))
}

/// Checks that the statement at `path` is `trusted` handing trust to `signer`.
fn check_rotation(path: &Path, trusted: &PublicKey, signer: &PublicKey) -> Result<()> {
    let refused = |reason: String| Error::Bundle {
        path: path.to_path_buf(),
        reason,
    };
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("inspecting", path, e))?;
    if !meta.file_type().is_file() || meta.len() > 4096 {
        return Err(refused(
            "not a key-rotation statement (a small plain file)".into(),
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let message = rotation_message(trusted, signer);
    let signature = text
        .strip_prefix(&message)
        .and_then(|rest| line_value(rest, "signature "))
        .and_then(|hex| hex::decode(hex).ok())
        .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        .ok_or_else(|| {
            refused(format!(
                "not a statement by the trusted key {trusted} handing trust to the bundle's \
                 signer {signer}: this board does not accept the new key"
            ))
        })?;
    verifying_key(trusted, path)?
        .verify_strict(message.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| refused("the trusted key's signature on it does not verify".into()))
}

/// The largest `bundle.sig` read: a listing of a few files with their hashes is a few KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 256 * 1024;

/// A bundle id shortened for people (its first 12 hex digits); a malformed id from a board
/// is shown whole rather than sliced.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Verifies a bundle folder against the trusted key: signature, exactly the listed files,
/// every size and hash, then the contents. Nothing of the bundle should be loaded before this
/// returns `Ok`.
///
/// A bundle signed by another key verifies only if it carries a key-rotation statement
/// ([`ROTATION_FILE`]) in which the trusted key hands trust to its signer; activating it makes
/// the board trust the new key ([`VerifiedBundle::rotates_trust`]).
pub fn verify_dir(dir: &Path, trusted: &PublicKey) -> Result<VerifiedBundle> {
    let listing = read_listing(dir)?;
    let sig_path = dir.join(SIGNATURE_FILE);
    if listing.signer != *trusted {
        let rotation = dir.join(ROTATION_FILE);
        if !rotation.is_file() {
            return Err(Error::Bundle {
                path: sig_path,
                reason: format!(
                    "signed by key {}, but the trusted key is {}: sign the bundle with the \
                     board's key (`fer bundle --key`), or rotate the board's key with a bundle \
                     carrying a statement signed by the trusted key (`fer bundle --rotate-from`)",
                    listing.signer, trusted
                ),
            });
        }
        check_rotation(&rotation, trusted, &listing.signer)?;
    }
    let key = verifying_key(&listing.signer, &sig_path)?;
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

/// Reads a public key file: 64 hex digits, optionally surrounded by whitespace.
pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    PublicKey::from_hex(text.trim()).map_err(|e| Error::Bundle {
        path: path.to_path_buf(),
        reason: format!("not a public key file (64 hex digits): {e}"),
    })
}

#[cfg(test)]
mod tests;
