//! A complete, signed bundle for the tests of `format`, `slots` and `command`.

use std::fs;
use std::path::Path;

use ed25519_dalek::SigningKey;
use firmware_config::config::{ClassThreshold, DeviceConfig};
use firmware_config::manifest::{ModelManifest, SelfTest};
use firmware_config::{PublicKey, Sha256Digest};
use sha2::{Digest, Sha256};

use super::{VerifiedBundle, sign_dir, write_metadata};
use crate::error::Error;

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn public(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

/// A complete bundle folder (model bytes are arbitrary: the self-test is a closure here),
/// version 1.
pub(crate) fn make_bundle(dir: &Path, signer: &SigningKey, run_id: &str) -> VerifiedBundle {
    make_versioned(dir, signer, run_id, 1)
}

/// [`make_bundle`] with a version of its own.
pub(crate) fn make_versioned(
    dir: &Path,
    signer: &SigningKey,
    run_id: &str,
    version: u64,
) -> VerifiedBundle {
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
    sign_dir(dir, signer, version).unwrap()
}

pub(crate) fn passes(_: &VerifiedBundle) -> std::result::Result<String, String> {
    Ok("self-test passed".into())
}

pub(crate) fn message(err: Error) -> String {
    err.to_string()
}
