//! Tests of the signed-bundle format: signing, verification, tampering, rotation.

use super::*;
use crate::bundle::fixtures::{key, make_bundle, message, public};
use firmware_config::config::ClassThreshold;

#[test]
fn a_signature_file_linked_to_dev_zero_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    make_bundle(tmp.path(), &signer, "run-1");
    let sig = tmp.path().join(SIGNATURE_FILE);
    fs::remove_file(&sig).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &sig).unwrap();
    let err = verify_dir(tmp.path(), &public(&signer)).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    fs::remove_file(&sig).unwrap();
    fs::write(&sig, vec![b'#'; MAX_SIGNATURE_BYTES as usize + 1]).unwrap();
    let err = verify_dir(tmp.path(), &public(&signer)).unwrap_err();
    assert!(
        err.to_string().contains("more than a signed file list"),
        "{err}"
    );
}

#[test]
fn a_short_bundle_id_from_a_board_is_shown_not_a_panic() {
    assert_eq!(short_id("abc"), "abc");
    assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
    // 12 bytes would cut a character in two: shown whole.
    assert_eq!(short_id("aéééééé"), "aéééééé");
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
    assert_eq!(sign_dir(tmp.path(), &signer, 1).unwrap().id, made.id);
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
    sign_dir(tmp.path(), &attacker, 1).unwrap();
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
    let err = message(sign_dir(tmp.path(), &signer, 1).unwrap_err());
    assert!(
        err.contains("contempt") && err.contains("happy, sad, neutral"),
        "{err}"
    );

    // A model swapped without a new manifest.
    config.classifier.class_thresholds.pop();
    write_metadata(tmp.path(), &manifest, &config).unwrap();
    fs::write(tmp.path().join("model.onnx"), b"another model").unwrap();
    let err = message(sign_dir(tmp.path(), &signer, 1).unwrap_err());
    assert!(
        err.contains("model.onnx") && err.contains("model_sha256"),
        "{err}"
    );
}
