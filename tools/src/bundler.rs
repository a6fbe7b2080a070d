//! `fer bundle`: an exported model + a detector + a device config -> a signed bundle folder.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use edge::bundle::{self, VerifiedBundle};
use firmware_config::PublicKey;
use firmware_config::config::DetectorKind;

use crate::config;
use crate::error::{Error, Result};

/// What goes into a bundle.
#[derive(Debug, Clone)]
pub struct BundleInputs {
    /// The export folder of `fer-train export` (with one manifest), or a manifest file.
    pub model: PathBuf,
    /// The device config, TOML or flash encoding.
    pub config: PathBuf,
    /// The detector file, stored under the config's `detector.model_file` name.
    pub detector: Option<PathBuf>,
    /// More files to ship and sign (e.g. the fp32 sibling of an int8 model).
    pub extra: Vec<PathBuf>,
    /// The bundle folder to create.
    pub out: PathBuf,
    /// Replace `out` if it exists.
    pub force: bool,
    /// The bundle's version; `None`: the current Unix time ([`bundle::version_now`]). A board
    /// refuses a bundle older than the newest it has activated.
    pub version: Option<u64>,
    /// Rotate the fleet's key: the private key boards trust now, which signs a statement
    /// handing trust to the signing key ([`bundle::write_rotation`]).
    pub rotate_from: Option<PathBuf>,
}

fn copy_checked(
    from: &Path,
    to: &Path,
    expected: Option<&firmware_config::Sha256Digest>,
    manifest: &Path,
) -> Result<()> {
    if let Some(expected) = expected {
        let (actual, _) = bundle::hash_file(from)?;
        if actual != *expected {
            return Err(Error::Mismatch {
                reason: format!(
                    "{} has SHA-256 {actual}, but {} expects {expected}: the file and the manifest \
                     come from different exports; export again",
                    from.display(),
                    manifest.display()
                ),
            });
        }
    }
    fs::copy(from, to).map_err(|e| Error::io("copying", from, e))?;
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::invalid("file", format!("{} has no file name", path.display())))
}

/// The manifest `fer-train export` writes for the fp32 model.
pub const FP32_MANIFEST: &str = "model_fp32.manifest.json";

/// The manifest to ship from an export folder: `manifest.json`, else the fp32 model's when
/// `fer-train export` wrote both precisions, else the single `*.manifest.json`.
///
/// fp32 is the default precision because the int8 file, integer (QLinearConv) as it is, still
/// runs slower than fp32 in tract on the machines measured so far (docs/RESULTS.md, "int8 that
/// is integer"); ship int8 by naming its manifest (`--model DIR/model_int8.manifest.json`).
pub fn find_manifest(dir: &Path) -> Result<PathBuf> {
    let plain = dir.join("manifest.json");
    if plain.is_file() {
        return Ok(plain);
    }
    let fp32 = dir.join(FP32_MANIFEST);
    if fp32.is_file() {
        return Ok(fp32);
    }
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io("listing", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::file(
            dir,
            "holds no manifest.json or *.manifest.json: pass the folder `fer-train export` wrote",
        )),
        _ => Err(Error::file(
            dir,
            format!(
                "holds several manifests ({}): pass the one to ship as --model DIR/NAME.manifest.json",
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Builds and signs the bundle. Refuses a config whose class thresholds name classes the
/// model does not have, a config signed for another key, a missing detector, and model files
/// that do not match the manifest.
pub fn build(inputs: &BundleInputs, key: &SigningKey) -> Result<VerifiedBundle> {
    let manifest_path = if inputs.model.is_dir() {
        find_manifest(&inputs.model)?
    } else {
        inputs.model.clone()
    };
    let manifest = config::load_manifest(&manifest_path)?;
    let from_dir = manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut device = config::load_any(&inputs.config)?;
    let signer = PublicKey(key.verifying_key().to_bytes());
    match device.signing_public_key {
        None => device.signing_public_key = Some(signer),
        Some(named) if named != signer => {
            return Err(Error::Mismatch {
                reason: format!(
                    "{} names signing_public_key {named}, but the signing key's public key is \
                     {signer}: sign with the key the board trusts, or fix the config",
                    inputs.config.display()
                ),
            });
        }
        Some(_) => {}
    }
    config::check_against_manifest(&device, &inputs.config, &manifest, &manifest_path)?;

    if inputs.out.exists() {
        let empty = fs::read_dir(&inputs.out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !inputs.force {
            return Err(Error::file(
                &inputs.out,
                "already exists: pick another --out or pass --force to replace it",
            ));
        }
    }
    let out_name = file_name(&inputs.out)?;
    let partial = inputs.out.with_file_name(format!(".{out_name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| Error::io("removing", &partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| Error::io("creating", &partial, e))?;
    let result = (|| {
        copy_checked(
            &from_dir.join(&manifest.model_file),
            &partial.join(&manifest.model_file),
            Some(&manifest.model_sha256),
            &manifest_path,
        )?;
        let input = &manifest.self_test.input_file;
        if input.is_empty() {
            return Err(Error::file(
                &manifest_path,
                "has no self_test.input_file: export the model again with a self-test",
            ));
        }
        copy_checked(
            &from_dir.join(input),
            &partial.join(input),
            Some(&manifest.self_test.input_sha256),
            &manifest_path,
        )?;
        match (device.detector.kind, &inputs.detector) {
            (DetectorKind::None, Some(det)) => {
                return Err(Error::Mismatch {
                    reason: format!(
                        "{} sets detector.kind = \"none\", so the detector {} would never run: drop --detector or set the kind",
                        inputs.config.display(),
                        det.display()
                    ),
                });
            }
            (DetectorKind::None, None) => {}
            (_, Some(det)) => copy_checked(
                det,
                &partial.join(&device.detector.model_file),
                None,
                &manifest_path,
            )?,
            (kind, None) => {
                return Err(Error::Mismatch {
                    reason: format!(
                        "{} uses the {kind:?} detector: pass its file with --detector (e.g. \
                         ../shared/models/ultraface/version-RFB-320_simplified.onnx)",
                        inputs.config.display()
                    ),
                });
            }
        }
        for extra in &inputs.extra {
            let name = file_name(extra)?;
            let target = partial.join(&name);
            if target.exists() || name == bundle::SIGNATURE_FILE {
                return Err(Error::invalid(
                    "--extra",
                    format!(
                        "{} collides with a bundle file named {name}",
                        extra.display()
                    ),
                ));
            }
            copy_checked(extra, &target, None, &manifest_path)?;
        }
        bundle::write_metadata(&partial, &manifest, &device)?;
        if let Some(old) = &inputs.rotate_from {
            bundle::write_rotation(&partial, &crate::keys::load_private(old)?, &signer)?;
        }
        let version = inputs.version.unwrap_or_else(bundle::version_now);
        Ok(bundle::sign_dir(&partial, key, version)?)
    })();
    let signed = match result {
        Ok(signed) => signed,
        Err(e) => {
            fs::remove_dir_all(&partial).map_err(|io| Error::io("removing", &partial, io))?;
            return Err(e);
        }
    };
    if inputs.out.exists() {
        fs::remove_dir_all(&inputs.out).map_err(|e| Error::io("replacing", &inputs.out, e))?;
    }
    fs::rename(&partial, &inputs.out)
        .map_err(|e| Error::io("renaming into place", &inputs.out, e))?;
    Ok(VerifiedBundle {
        dir: inputs.out.clone(),
        ..signed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_naming_a_file_outside_the_bundle_cannot_overwrite_it() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim.bashrc");
        fs::write(&victim, "keep me").unwrap();
        let manifest = testdata::peer_manifest();
        let manifest_path = tmp.path().join("manifest.json");
        fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
        fs::write(tmp.path().join(&manifest.model_file), "not a model").unwrap();
        let config = tmp.path().join("board.toml");
        fs::write(
            &config,
            format!(
                "[detector]\nmodel_file = {:?}\n",
                victim.display().to_string()
            ),
        )
        .unwrap();
        let detector = tmp.path().join("detector.onnx");
        fs::write(&detector, "attacker's bytes").unwrap();
        let inputs = BundleInputs {
            model: manifest_path,
            config: config.clone(),
            detector: Some(detector),
            extra: Vec::new(),
            out: tmp.path().join("bundle"),
            force: false,
            version: None,
            rotate_from: None,
        };
        let key = SigningKey::from_bytes(&[7; 32]);
        let err = build(&inputs, &key).unwrap_err().to_string();
        assert!(
            err.contains("detector.model_file") && err.contains("board.toml"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    }

    #[test]
    fn an_export_folder_names_its_manifest_or_asks_which() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_manifest(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("no manifest.json"), "{err}");
        fs::write(tmp.path().join("model_int8.manifest.json"), "{}").unwrap();
        assert_eq!(
            find_manifest(tmp.path()).unwrap(),
            tmp.path().join("model_int8.manifest.json")
        );
        fs::write(tmp.path().join("other.manifest.json"), "{}").unwrap();
        let err = find_manifest(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("model_int8.manifest.json, other.manifest.json"),
            "{err}"
        );
        // Both precisions from `fer-train export`: fp32, the faster one in tract, is the default.
        fs::write(tmp.path().join(FP32_MANIFEST), "{}").unwrap();
        assert_eq!(
            find_manifest(tmp.path()).unwrap(),
            tmp.path().join(FP32_MANIFEST)
        );
        fs::write(tmp.path().join("manifest.json"), "{}").unwrap();
        assert_eq!(
            find_manifest(tmp.path()).unwrap(),
            tmp.path().join("manifest.json")
        );
    }
}
