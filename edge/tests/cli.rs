//! The `fer-edge` binary: JSON output, exit codes and clear errors for bad input, and a
//! pipeline run stopped by SIGTERM that still seals its field log and reports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use edge::fieldlog::list_segments;
use firmware_config::exit_code::{self, Program};
use firmware_config::segment;

fn fer_edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fer-edge"))
}

#[test]
fn detect_prints_the_astronaut_as_json() {
    let Some(image) = testdata::shared_path("images/astronaut.png") else {
        return;
    };
    let Some(model) = testdata::shared_path("models/ultraface/version-RFB-320_simplified.onnx")
    else {
        return;
    };
    let out = fer_edge()
        .arg("detect")
        .arg(&image)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let faces = json["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{json}");
    assert!(
        (faces[0]["face"]["x"].as_f64().unwrap() - 180.0).abs() <= 10.0,
        "{json}"
    );
}

#[test]
fn help_lists_the_exit_code_table() {
    let out = fer_edge().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(&exit_code::help(Program::Edge)),
        "the exit-code table is missing from --help:\n{help}"
    );
}

#[test]
fn bad_input_gives_exit_code_3_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 truncated jpeg").unwrap();
    let out = fer_edge()
        .args(["detect", "--detector", "none"])
        .arg(&corrupt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{stderr}"
    );
    assert!(
        stderr.contains("corrupt.jpg") && stderr.contains("cannot decode"),
        "{stderr}"
    );

    let manifest = dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        br#"{"schema_version": 7, "class_names": ["a", "b"]}"#,
    )
    .unwrap();
    let out = fer_edge()
        .arg("classify")
        .arg(&corrupt)
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{stderr}"
    );
    assert!(
        stderr.contains("manifest.json") && stderr.contains("schema version 7"),
        "{stderr}"
    );

    let out = fer_edge()
        .args(["detect", "--detector", "ultraface"])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::BAD_INPUT.into()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));

    let out = fer_edge().args(["run", "--frames", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(exit_code::BAD_INPUT.into()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bundle"));
}

/// A model manifest for the peer model and a config (no detector, every face low-confidence,
/// logging into `dir/log`) in `dir`.
fn peer_setup(dir: &Path, model: &Path) -> (PathBuf, PathBuf) {
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "schema_version": 1,
            "model_file": "peer.onnx",
            "input_name": "input",
            "output_name": "predictions",
            "logits_name": null,
            "preprocessing": {
                "input_width": 64, "input_height": 64, "channels": "gray", "layout": "nhwc",
                "crop_margin": 0.0, "resize": "bilinear",
                "normalization": {"scale": 1.0 / 127.5, "mean": [1.0], "std": [1.0]}
            },
            "class_names": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::copy(model, dir.join("peer.onnx")).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"test-board\"\nname = \"cli test\"\n\n[camera]\nwidth = 160\nheight = 120\nfps = 30\n\n\
             [detector]\nkind = \"none\"\n\n[classifier]\ndefault_threshold = 1.0\n\n\
             [field_log]\ndirectory = \"{}\"\nsegment_bytes = 65536\nquota_bytes = 10485760\n\
             max_records_per_minute = 0\ndedup_window_ms = 0\n",
            dir.join("log").display()
        ),
    )
    .unwrap();
    (manifest, config)
}

#[test]
fn missing_camera_gives_exit_code_4() {
    let Some(model) = testdata::peer_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = peer_setup(dir.path(), &model);
    let out = fer_edge()
        .arg("run")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--config")
        .arg(&config)
        .args(["--source", "camera:/dev/video-none-here", "--frames", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::CAMERA.into()),
        "{stderr}"
    );
    assert!(stderr.contains("/dev/video-none-here"), "{stderr}");
}

#[test]
fn a_detection_interval_skips_the_detector_and_zero_is_refused() {
    let (Some(model), Some(detector)) = (
        testdata::peer_model(),
        testdata::shared_path("models/ultraface/version-RFB-320_simplified.onnx"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = peer_setup(dir.path(), &model);
    std::fs::copy(&detector, dir.path().join("detector.onnx")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let with_interval = |n: u32| {
        text.replace(
            "[detector]\nkind = \"none\"\n",
            &format!(
                "[detector]\nkind = \"ultraface\"\nmodel_file = \"detector.onnx\"\ninterval = {n}\n"
            ),
        )
    };
    std::fs::write(&config, with_interval(3)).unwrap();
    let run = || {
        fer_edge()
            .arg("run")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--config")
            .arg(&config)
            .args(["--source", "moving:4", "--frames", "30"])
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The source is paced like a camera: a busy machine drops frames (counted in capture).
    let frames = last["frames"].as_u64().unwrap();
    let detected = last["detected_frames"].as_u64().unwrap();
    assert!(frames >= 10 && detected < frames, "{last}");
    assert!(3 * detected >= frames, "at least every third frame: {last}");
    let faces = last["faces"].as_u64().unwrap();
    assert!(4 * faces >= 3 * frames, "the face is carried: {last}");

    std::fs::write(&config, with_interval(0)).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{stderr}"
    );
    assert!(stderr.contains("detector.interval"), "{stderr}");
}

#[test]
fn sigterm_ends_the_run_with_a_final_report_and_a_sealed_field_log() {
    let Some(model) = testdata::peer_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = peer_setup(dir.path(), &model);
    let mut child = fer_edge()
        .arg("run")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--config")
        .arg(&config)
        .args(["--source", "synthetic:5", "--report-every", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["kind"], "progress", "{first}");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let last: serde_json::Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["kind"], "final", "{last}");
    let frames = last["frames"].as_u64().unwrap();
    let written = last["field_log"]["written"].as_u64().unwrap();
    assert!(
        frames >= 1 && written == frames,
        "every face is below threshold 1.0: {last}"
    );
    let mut records = 0;
    for (_, path, _) in list_segments(&dir.path().join("log")).unwrap() {
        let scan = segment::read_segment(&std::fs::read(&path).unwrap()).unwrap();
        assert!(scan.is_intact(), "{} is not sealed", path.display());
        records += scan.records.len() as u64;
        for r in &scan.records {
            assert_eq!(r.device_id, "test-board");
            assert_eq!(r.probabilities.len(), 7);
        }
    }
    assert_eq!(records, written);
}

#[test]
fn the_systemd_unit_runs_a_command_line_fer_edge_accepts() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fer-edge.service"))
            .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/fer-edge "))
        .expect("an ExecStart line running /usr/local/bin/fer-edge");
    // The same arguments against an empty folder instead of the board root: the command line
    // parses (not exit 2) and the bundle is refused (exit 5) because nothing is trusted there.
    let root = tempfile::tempdir().unwrap();
    let args: Vec<String> = exec
        .split_whitespace()
        .map(|a| a.replace("/var/lib/fer-edge", &root.path().display().to_string()))
        .collect();
    let out = fer_edge().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BUNDLE_REFUSED.into()),
        "{stderr}"
    );
    assert!(stderr.contains("trusted.pub"), "{stderr}");
    let restart_prevented = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .unwrap();
    assert_eq!(
        restart_prevented,
        format!("{} {}", exit_code::BAD_INPUT, exit_code::BUNDLE_REFUSED),
        "the unit must not loop on a bad input or a refused bundle"
    );
}

/// A signed bundle of the peer model (no detector), made as `fer bundle` would.
#[allow(clippy::field_reassign_with_default)] // the contract's structs are non-exhaustive
fn signed_peer_bundle(dir: &Path, model: &Path, log_dir: &Path) -> String {
    use firmware_config::config::{DetectorKind, DeviceConfig};
    use firmware_config::{PublicKey, Sha256Digest, flash};
    use sha2::{Digest, Sha256};
    let sha = |bytes: &[u8]| Sha256Digest(Sha256::digest(bytes).into());
    let (manifest_path, _) = peer_setup(dir, model);
    let mut manifest = edge::classify::read_manifest(&manifest_path).unwrap();
    std::fs::remove_file(dir.join("config.toml")).unwrap();
    std::fs::rename(dir.join("peer.onnx"), dir.join("model.onnx")).unwrap();
    manifest.model_file = "model.onnx".into();
    manifest.model_sha256 = sha(&std::fs::read(dir.join("model.onnx")).unwrap());
    let input: Vec<f32> = (0..64 * 64).map(|i| (i % 97) as f32 / 48.0 - 1.0).collect();
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("selftest.bin"), &bytes).unwrap();
    let classifier = edge::classify::Classifier::load(
        &dir.join("model.onnx"),
        manifest.clone(),
        &Default::default(),
    )
    .unwrap();
    manifest.self_test.input_file = "selftest.bin".into();
    manifest.self_test.input_sha256 = sha(&bytes);
    manifest.self_test.expected_output = classifier.run_raw(&input, 1).unwrap();
    manifest.self_test.tolerance = 1e-4;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let public = PublicKey(key.verifying_key().to_bytes());
    let mut config = DeviceConfig::default();
    config.device.id = "bundle-board".into();
    config.detector.kind = DetectorKind::None;
    config.classifier.default_threshold = 1.0;
    config.field_log.directory = log_dir.display().to_string();
    config.signing_public_key = Some(public);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifest.bin"),
        flash::encode_manifest(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("config.toml"), toml::to_string(&config).unwrap()).unwrap();
    std::fs::write(
        dir.join("config.bin"),
        flash::encode_config(&config).unwrap(),
    )
    .unwrap();
    edge::bundle::sign_dir(dir, &key, 1).unwrap();
    public.to_hex()
}

#[test]
fn run_verifies_the_bundle_before_loading_it() {
    let Some(model) = testdata::peer_model() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let trust = signed_peer_bundle(&bundle, &model, &tmp.path().join("log"));
    let run = |trust: &str| {
        fer_edge()
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .args(["--trust", trust, "--source", "synthetic:1", "--frames", "3"])
            .output()
            .unwrap()
    };
    let out = run(&trust);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("self-test passed"), "{stderr}");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let report: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(report["frames"], 3, "{report}");

    // Another key, then a tampered model: refused with exit code 5 before anything runs.
    let other = firmware_config::PublicKey([9; 32]).to_hex();
    assert_eq!(
        run(&other).status.code(),
        Some(exit_code::BUNDLE_REFUSED.into())
    );
    let mut bytes = std::fs::read(bundle.join("model.onnx")).unwrap();
    let last_byte = bytes.len() - 1;
    bytes[last_byte] ^= 1;
    std::fs::write(bundle.join("model.onnx"), bytes).unwrap();
    let out = run(&trust);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BUNDLE_REFUSED.into()),
        "{stderr}"
    );
    assert!(stderr.contains("model.onnx"), "{stderr}");
}
