//! `fer keygen`, `fer bundle`, `fer flash`, `fer rollback` end to end with a real model (the
//! mini-Xception peer from ../shared), to a board folder and to a board over a real sshd
//! whose board side is `fer-edge bundle`. Tampered and foreign-signed bundles are refused by
//! `fer flash` and, uploaded behind its back, by the board itself; the running bundle stays.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edge::bundle::{self, BoardRoot};
use firmware_config::config::{DetectorKind, DeviceConfig};
use firmware_config::manifest::ModelManifest;
use firmware_config::{Sha256Digest, exit_code};
use tests::{Sshd, expect_success, fer};

/// Asserts `fer` failed because the bundle was refused and its message contains `needle`.
fn refused(out: Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BUNDLE_REFUSED.into()),
        "expected a refusal, got: {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    good: [PathBuf; 2],
    tampered: PathBuf,
    foreign: PathBuf,
    failing: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let model = testdata::peer_model()?;
    let detector = testdata::shared_path("models/ultraface/version-RFB-320_simplified.onnx")?;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let key = t.join("keys/fer.key");
    let out = expect_success(fer(&["keygen", "--out", s(&key)]));
    assert!(out.contains("signing_public_key = \""), "{out}");

    let root = t.join("board");
    let mut config = DeviceConfig::default();
    config.device.id = "lab-board-1".into();
    config.detector.kind = DetectorKind::Ultraface;
    config.field_log.directory = s(&root.join("log")).into();
    config.classifier.class_thresholds =
        vec![firmware_config::config::ClassThreshold::new("happy", 0.7)];
    let config_path = t.join("board.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    let mut bundles = Vec::new();
    for (i, wrong) in [(1, false), (2, false), (3, true)] {
        let export = t.join(format!("export-{i}"));
        tests::peer_export(&export, &model, &format!("run-{i}"), wrong);
        let out_dir = t.join(format!("bundle-{i}"));
        expect_success(fer(&[
            "bundle",
            "--model",
            s(&export),
            "--config",
            s(&config_path),
            "--detector",
            s(&detector),
            "--key",
            s(&key),
            "--out",
            s(&out_dir),
        ]));
        bundles.push(out_dir);
    }

    // One byte of the model changed after signing.
    let tampered = t.join("tampered");
    tools::board::copy_dir(&bundles[1], &tampered).unwrap();
    let mut bytes = std::fs::read(tampered.join("model.onnx")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(tampered.join("model.onnx"), bytes).unwrap();

    // Lower thresholds in the manifest, re-signed with the attacker's own key.
    let foreign = t.join("foreign");
    tools::board::copy_dir(&bundles[1], &foreign).unwrap();
    let attacker = tools::keys::generate(&t.join("attacker.key"), false).unwrap();
    let attacker_key = tools::keys::load_private(&attacker.private).unwrap();
    let mut manifest: ModelManifest =
        serde_json::from_str(&std::fs::read_to_string(foreign.join("manifest.json")).unwrap())
            .unwrap();
    manifest.class_thresholds = vec![0.01; 7];
    let mut config: DeviceConfig =
        toml::from_str(&std::fs::read_to_string(foreign.join("config.toml")).unwrap()).unwrap();
    config.signing_public_key = Some(attacker.public_key);
    bundle::write_metadata(&foreign, &manifest, &config).unwrap();
    bundle::sign_dir(&foreign, &attacker_key, bundle::version_now()).unwrap();

    let failing = bundles.pop().unwrap();
    let good = [bundles.remove(0), bundles.remove(0)];
    Some(Fixture {
        _tmp: tmp,
        root,
        key,
        good,
        tampered,
        foreign,
        failing,
    })
}

fn bundle_id(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(bundle::SIGNATURE_FILE)).unwrap();
    bundle::SignedListing::parse(&text, dir)
        .unwrap()
        .bundle_id()
}

/// The whole flash story against one board address; `board_side_activate` uploads a bundle
/// behind `fer flash`'s back and asks the board to activate it, returning its message.
fn flash_story(
    f: &Fixture,
    address: &str,
    extra: &[String],
    board_side_activate: &dyn Fn(&Path) -> String,
) {
    let public = tools::keys::public_path(&f.key);
    let flash = |bundle: &Path, init: bool| {
        let mut args = vec!["flash", "--board", address, "--bundle", s(bundle)];
        if init {
            args.extend(["--trust", s(&public)]);
        }
        args.extend(extra.iter().map(String::as_str));
        fer(&args)
    };
    let out = expect_success(flash(&f.good[0], true));
    assert!(
        out.contains("slot a active") && out.contains("self-test passed"),
        "{out}"
    );
    let out = expect_success(flash(&f.good[1], false));
    assert!(
        out.contains("slot b active") && out.contains("kept in slot a"),
        "{out}"
    );
    let board = BoardRoot::open(&f.root).unwrap();
    let running = bundle::open_for_run(&f.root).unwrap().id;
    assert_eq!(running, bundle_id(&f.good[1]));

    refused(flash(&f.tampered, false), "model.onnx");
    refused(flash(&f.foreign, false), "signed by key");
    refused(flash(&f.failing, false), "self-test failed");
    let msg = board_side_activate(&f.tampered);
    assert!(
        msg.contains("model.onnx") && msg.contains("tampered"),
        "{msg}"
    );
    let msg = board_side_activate(&f.foreign);
    assert!(msg.contains("signed by key"), "{msg}");
    // The board still runs the last good bundle, the one before stays for rollback.
    assert_eq!(bundle::open_for_run(&f.root).unwrap().id, running);
    let status = board.status().unwrap();
    assert_eq!(status.active.as_deref(), Some("b"));
    assert!(
        status.slots.iter().all(|slot| slot.problem.is_none()),
        "{status:?}"
    );

    let mut args = vec!["rollback", "--board", address];
    args.extend(extra.iter().map(String::as_str));
    let out = expect_success(fer(&args));
    assert!(out.contains("rolled back to slot a"), "{out}");
    assert_eq!(
        bundle::open_for_run(&f.root).unwrap().id,
        bundle_id(&f.good[0])
    );
    assert!(
        std::fs::read_dir(board.staging_dir())
            .unwrap()
            .next()
            .is_none(),
        "staging not emptied"
    );

    // The service restart runs on the board, after the switch.
    let marker = f.root.join("restarted");
    let restart = format!("touch {}", s(&marker));
    let mut args = vec![
        "flash",
        "--board",
        address,
        "--bundle",
        s(&f.good[1]),
        "--restart",
        &restart,
    ];
    args.extend(extra.iter().map(String::as_str));
    let out = expect_success(fer(&args));
    assert!(out.contains("slot b active") && marker.exists(), "{out}");
    let mut args = vec!["status", "--board", address];
    args.extend(extra.iter().map(String::as_str));
    let status: serde_json::Value = serde_json::from_str(&expect_success(fer(&args))).unwrap();
    assert_eq!(status["active"], "b");
    assert_eq!(status["field_log_dir"], s(&f.root.join("log")));

    // Collect finds the field log through the active config (no --log-dir).
    let written = board_logs(&f.root.join("log"), 5);
    let into = f.root.with_file_name("collected");
    let mut args = vec!["collect", "--board", address, "--into", s(&into)];
    args.extend(extra.iter().map(String::as_str));
    let out = expect_success(fer(&args));
    assert!(out.contains("5 new record(s)"), "{out}");
    let lines = tools::collect::read_records(&into.join(tools::collect::RECORDS_FILE)).unwrap();
    let ids: Vec<String> = lines.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, written);
}

/// Logs `count` faces with the board's field-log writer; returns their record ids in order.
fn board_logs(dir: &Path, count: u32) -> Vec<String> {
    use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
    let mut config = firmware_config::config::FieldLogConfig::default();
    config.directory = s(dir).into();
    config.dedup_window_ms = 0;
    let mut log = edge::fieldlog::FieldLog::open(&config, "lab-board-1").unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let crop = ImageBuf::new(8, 8, PixelFormat::Gray8, vec![i as u8; 64]).unwrap();
        let face = FaceBox {
            x: 1.0,
            y: 2.0,
            width: 8.0,
            height: 8.0,
        };
        let record = firmware_config::record::FieldRecord {
            timestamp_ms: 1_780_000_000_000 + u64::from(i),
            device_id: "lab-board-1".into(),
            model_sha256: Sha256Digest([1; 32]),
            frame_seq: u64::from(i),
            track_id: i,
            face,
            probabilities: vec![0.2; 7],
            crop,
            frame: None,
        };
        log.log(&record).unwrap();
        ids.push(tools::collect::record_id(&record).unwrap());
    }
    log.close().unwrap();
    ids
}

#[test]
fn flash_to_a_board_folder() {
    let Some(f) = fixture() else { return };
    let address = format!("dir:{}", f.root.display());
    flash_story(&f, &address, &[], &|bundle| {
        let staged = f.root.join("staging").join("behind-the-back");
        tools::board::copy_dir(bundle, &staged).unwrap();
        bundle::activate(&f.root, &staged, bundle::model_self_test)
            .unwrap_err()
            .to_string()
    });
    // A key file others may read is refused before anything is signed.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = fer(&[
        "bundle",
        "--model",
        "x",
        "--config",
        "y",
        "--key",
        s(&f.key),
        "--out",
        "z",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // A new board takes its trust from the key it is given, never from the bundle: a
    // swapped bundle folder is refused and the board trusts the fleet key.
    let new_board = f.root.with_file_name("new-board");
    let public = tools::keys::public_path(&f.key);
    let address = format!("dir:{}", new_board.display());
    refused(
        fer(&[
            "flash",
            "--board",
            &address,
            "--bundle",
            s(&f.foreign),
            "--trust",
            s(&public),
        ]),
        "signed by key",
    );
    assert_eq!(
        BoardRoot::open(&new_board).unwrap().trusted_key().unwrap(),
        tools::keys::load_public(s(&public)).unwrap()
    );
}

#[test]
fn flash_over_ssh_with_the_board_side_in_fer_edge() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(f) = fixture() else { return };
    let agent = tests::program("fer-edge");
    // Host keys are checked: with a known_hosts that lacks this server's key, fer refuses.
    let empty = f.root.with_file_name("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut unknown_host = vec![
        "status".to_string(),
        "--board".into(),
        sshd.address(&f.root),
    ];
    for option in sshd.fer_options() {
        let option = if option.starts_with("UserKnownHostsFile=") {
            format!("UserKnownHostsFile={}", s(&empty))
        } else {
            option
        };
        unknown_host.extend(["--ssh-option".to_string(), option]);
    }
    let out = Command::new(tests::program("fer"))
        .args(&unknown_host)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::REMOTE.into()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");

    let mut extra = sshd.fer_args();
    extra.extend(["--board-agent".to_string(), s(&agent).to_string()]);
    flash_story(&f, &sshd.address(&f.root), &extra, &|bundle| {
        let staged = f.root.join("staging").join("behind-the-back");
        let out = sshd
            .scp()
            .arg("-r")
            .arg(bundle)
            .arg(sshd.remote(&staged))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = sshd
            .ssh()
            .arg(format!(
                "{} bundle activate --root {} {}",
                s(&agent),
                s(&f.root),
                s(&staged)
            ))
            .output()
            .unwrap();
        assert!(!out.status.success(), "the board accepted a bad bundle");
        String::from_utf8_lossy(&out.stderr).into_owned()
    });
}
