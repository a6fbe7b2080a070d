//! Bundle signing keys: ed25519, the private key as PKCS#8 PEM (readable by OpenSSL) in a
//! file only its owner may read, the public key as one line of 64 hex digits (the same text
//! a `DeviceConfig`'s `signing_public_key` and a board's `trusted.pub` hold).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use firmware_config::PublicKey;

use crate::error::{Error, Result};

/// The two files [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// The private key (mode 0600).
    pub private: PathBuf,
    /// The public key (`<private>.pub`).
    pub public: PathBuf,
    /// The public key itself.
    pub public_key: PublicKey,
}

/// The public key file that belongs to a private key file: `<private>.pub`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates a key pair from the operating system's randomness and writes `private` (mode
/// 0600, refused if it exists unless `overwrite`) and `<private>.pub`.
pub fn generate(private: &Path, overwrite: bool) -> Result<KeyFiles> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    write_private(private, &key, overwrite)?;
    let public_key = PublicKey(key.verifying_key().to_bytes());
    let public = public_path(private);
    fs::write(&public, format!("{}\n", public_key.to_hex()))
        .map_err(|e| Error::io("writing", &public, e))?;
    Ok(KeyFiles {
        private: private.to_path_buf(),
        public,
        public_key,
    })
}

/// Writes `key` as PKCS#8 PEM into a new file with mode 0600.
pub fn write_private(path: &Path, key: &SigningKey, overwrite: bool) -> Result<()> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::file(path, format!("cannot encode the key as PKCS#8: {e}")))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    }
    if overwrite {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("replacing", path, e)),
        }
    }
    // Created with 0600 from the start: there is no moment when others could read it.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::file(
                    path,
                    "already exists: pick another path or pass --force to replace it",
                )
            } else {
                Error::io("creating", path, e)
            }
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}

/// Reads a private key file, refusing one that others may read (as OpenSSH does).
pub fn load_private(path: &Path) -> Result<SigningKey> {
    let meta = fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::file(
            path,
            format!(
                "permissions {mode:04o} are too open for a private key: run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        Error::file(
            path,
            format!("not an ed25519 private key in PKCS#8 PEM ({e}): create one with `fer keygen`"),
        )
    })
}

/// Reads a public key: a file of 64 hex digits, or the 64 hex digits themselves.
pub fn load_public(path_or_hex: &str) -> Result<PublicKey> {
    if let Ok(key) = PublicKey::from_hex(path_or_hex.trim()) {
        return Ok(key);
    }
    let path = Path::new(path_or_hex);
    let text =
        fs::read_to_string(path).map_err(|e| Error::io("reading the public key", path, e))?;
    PublicKey::from_hex(text.trim()).map_err(|_| {
        Error::file(
            path,
            "not a public key (one line of 64 hex digits, as `fer keygen` writes)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("keys/board");
        let files = generate(&private, false).unwrap();
        let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = load_private(&private).unwrap();
        assert_eq!(PublicKey(key.verifying_key().to_bytes()), files.public_key);
        assert_eq!(
            load_public(files.public.to_str().unwrap()).unwrap(),
            files.public_key
        );
        assert_eq!(
            load_public(&files.public_key.to_hex()).unwrap(),
            files.public_key
        );

        let again = generate(&private, false).unwrap_err().to_string();
        assert!(again.contains("already exists"), "{again}");
        let replaced = generate(&private, true).unwrap();
        assert_ne!(replaced.public_key, files.public_key);
    }

    #[test]
    fn readable_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("k");
        generate(&private, false).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_private(&private).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn garbage_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("k");
        fs::write(&private, "not a key").unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_private(&private).unwrap_err().to_string();
        assert!(
            err.contains(&private.display().to_string()) && err.contains("fer keygen"),
            "{err}"
        );
    }
}
