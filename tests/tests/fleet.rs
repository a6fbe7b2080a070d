//! `fer fleet` over a real sshd on 127.0.0.1: boards that answer, one that is down, tags, the
//! per-board table and the exit code that says a board failed; flashing and rolling back a
//! real bundle on several boards at once; the collect service.

use std::path::Path;

use edge::bundle::BoardRoot;
use firmware_config::exit_code;
use tests::{Sshd, fer};

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Logs `count` faces with the board's field-log writer into `log` as board `device`;
/// `face(i)` gives the i-th record's time (ms), model (one byte of its hash) and top class of
/// five.
fn log_faces(log: &Path, device: &str, count: u64, face: impl Fn(u64) -> (u64, u8, usize)) {
    use edge::fieldlog::FieldLog;
    use firmware_config::Sha256Digest;
    use firmware_config::config::FieldLogConfig;
    use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
    use firmware_config::record::FieldRecord;

    let mut config = FieldLogConfig::default();
    config.directory = s(log).to_string();
    config.max_records_per_minute = 0;
    config.dedup_window_ms = 0;
    let mut writer = FieldLog::open(&config, device).unwrap();
    for i in 0..count {
        let (timestamp_ms, model, top) = face(i);
        let mut probabilities = vec![0.1f32; 5];
        probabilities[top] = 0.6;
        writer
            .log(&FieldRecord {
                timestamp_ms,
                device_id: device.into(),
                model_sha256: Sha256Digest([model; 32]),
                frame_seq: i,
                track_id: i as u32,
                face: FaceBox {
                    x: 1.0,
                    y: 1.0,
                    width: 8.0,
                    height: 8.0,
                },
                probabilities,
                crop: ImageBuf::new(2, 2, PixelFormat::Gray8, vec![i as u8; 4]).unwrap(),
                frame: None,
            })
            .unwrap();
    }
    writer.close().unwrap();
}

/// The text of a fleet file for three board roots in `dir` behind `sshd` (cam-0, cam-1, cam-2,
/// tag "up", each trusting `public`) and one board that is down (cam-down, tag "down": nothing
/// listens on port 1), with the roots.
fn ssh_fleet(
    sshd: &Sshd,
    dir: &Path,
    public: &firmware_config::PublicKey,
) -> (String, Vec<std::path::PathBuf>) {
    let agent = tests::program("fer-edge");
    let options: Vec<String> = sshd
        .fer_options()
        .iter()
        .map(|o| format!("{o:?}"))
        .collect();
    let mut text = format!(
        "[defaults]\nssh_options = [{}, \"ConnectTimeout=5\"]\nagent = {:?}\n",
        options.join(", "),
        s(&agent)
    );
    let mut roots = Vec::new();
    for i in 0..3 {
        let root = dir.join(format!("board-{i}"));
        BoardRoot::init(&root, public).unwrap();
        text.push_str(&format!(
            "\n[[board]]\nname = \"cam-{i}\"\naddress = {:?}\ntags = [\"up\"]\n",
            sshd.address(&root)
        ));
        roots.push(root);
    }
    text.push_str(
        "\n[[board]]\nname = \"cam-down\"\naddress = \"ssh://127.0.0.1:1/srv/fer\"\ntags = [\"down\"]\n",
    );
    (text, roots)
}

/// `count` signed peer bundles (versions 1, 2, ...) for a detector-less board config, all
/// signed by one key made in `t`.
struct Bundles {
    public: firmware_config::PublicKey,
    dirs: Vec<std::path::PathBuf>,
    ids: Vec<String>,
}

fn signed_bundles(t: &Path, count: u64) -> Option<Bundles> {
    let config = "[device]\nid = \"fleet-board\"\n".to_string();
    let detector = testdata::shared_path("models/ultraface/version-RFB-320_simplified.onnx")?;
    signed_bundles_with(t, &vec![config; count as usize], Some(&detector))
}

/// One signed peer bundle per board config text (versions 1, 2, ...), all signed by one key
/// made in `t`, with `detector` when the configs use one.
fn signed_bundles_with(t: &Path, configs: &[String], detector: Option<&Path>) -> Option<Bundles> {
    let model = testdata::peer_model()?;
    let key = t.join("fleet.key");
    let public = tools::keys::generate(&key, false).unwrap().public_key;
    let (mut dirs, mut ids) = (Vec::new(), Vec::new());
    for (i, text) in (1..).zip(configs) {
        let config = t.join(format!("board-{i}.toml"));
        std::fs::write(&config, text).unwrap();
        let export = t.join(format!("export-{i}"));
        tests::peer_export(&export, &model, &format!("run-{i}"), false);
        let out_dir = t.join(format!("bundle-{i}"));
        let version = i.to_string();
        let mut args = vec![
            "bundle",
            "--model",
            s(&export),
            "--config",
            s(&config),
            "--key",
            s(&key),
            "--out",
            s(&out_dir),
            "--version",
            &version,
        ];
        if let Some(detector) = detector {
            args.extend(["--detector", s(detector)]);
        }
        tests::expect_success(fer(&args));
        ids.push(edge::bundle::verify_dir(&out_dir, &public).unwrap().id);
        dirs.push(out_dir);
    }
    Some(Bundles { public, dirs, ids })
}

#[test]
fn a_board_that_is_down_fails_alone_and_sets_the_exit_code() {
    let Some(sshd) = Sshd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("fleet.key");
    let public = tools::keys::generate(&key, false).unwrap().public_key;
    let (text, _) = ssh_fleet(&sshd, tmp.path(), &public);
    let fleet = tmp.path().join("fleet.toml");
    std::fs::write(&fleet, text).unwrap();

    let out = fer(&["fleet", "check", "--fleet", s(&fleet), "--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{stdout}\n{stderr}"
    );
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for (i, row) in rows[..3].iter().enumerate() {
        assert!(row.starts_with(&format!("cam-{i} ")), "{stdout}");
        assert!(row.contains(" ok ") && row.contains("fer-edge"), "{stdout}");
    }
    assert!(
        rows[3].starts_with("cam-down")
            && rows[3].contains("FAILED")
            && rows[3].contains("refused"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 4 boards failed"), "{stderr}");

    let out = fer(&["fleet", "status", "--fleet", s(&fleet), "--tag", "up"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        4,
        "a header and the three boards: {stdout}"
    );

    let out = fer(&["fleet", "status", "--fleet", s(&fleet), "--tag", "upp"]);
    assert_eq!(out.status.code(), Some(exit_code::USAGE.into()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upp"));
}

#[test]
fn the_collect_service_runs_its_cycles_and_keeps_the_boards_states() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..2 {
        let log = tmp.path().join(format!("log-{i}"));
        log_faces(&log, &format!("cam-{i}"), 4, |seq| {
            (1_700_000_000_000 + seq * 1000, 2, 0)
        });
        text.push_str(&format!(
            "[[board]]\nname = \"cam-{i}\"\naddress = \"dir:{}\"\nlog_dir = {:?}\n",
            s(&tmp.path().join(format!("board-{i}"))),
            s(&log)
        ));
    }
    let fleet = tmp.path().join("fleet.toml");
    std::fs::write(&fleet, text).unwrap();
    let into = tmp.path().join("field");
    let out = fer(&[
        "fleet",
        "collect",
        "--fleet",
        s(&fleet),
        "--into",
        s(&into),
        "--every",
        "1s",
        "--cycles",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cycles: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cycles.len(), 2, "{stdout}");
    assert_eq!(cycles[0]["records_new"], 8, "{stdout}");
    assert_eq!(cycles[1]["records_new"], 0, "{stdout}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(into.join("service-state.json")).unwrap()).unwrap();
    for board in state.as_array().unwrap() {
        assert_eq!(board["records"], 4, "{state}");
        assert_eq!(board["failures"], 0, "{state}");
    }
    for i in 0..2 {
        let records = std::fs::read_to_string(into.join(format!("cam-{i}/records.jsonl"))).unwrap();
        assert_eq!(records.lines().count(), 4);
        assert!(records.contains(&format!("\"device_id\":\"cam-{i}\"")));
    }
}

#[test]
fn a_bundle_is_flashed_and_rolled_back_on_every_board_but_the_one_that_is_down() {
    let Some(sshd) = Sshd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let Some(Bundles {
        public,
        dirs: bundles,
        ids,
    }) = signed_bundles(t, 2)
    else {
        return;
    };
    let (mut text, roots) = ssh_fleet(&sshd, t, &public);
    let fleet = t.join("fleet.toml");
    std::fs::write(&fleet, &text).unwrap();
    for (bundle, id) in bundles.iter().zip(&ids) {
        let out = fer(&[
            "fleet",
            "flash",
            "--fleet",
            s(&fleet),
            "--bundle",
            s(bundle),
            "--jobs",
            "3",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(exit_code::FLEET_PARTIAL.into()),
            "{stdout}"
        );
        assert_eq!(
            stdout.lines().filter(|l| l.contains(" ok ")).count(),
            3,
            "{stdout}"
        );
        for root in &roots {
            assert_eq!(&active(root), id);
        }
    }
    let out = fer(&["fleet", "rollback", "--fleet", s(&fleet), "--jobs", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{stdout}"
    );
    for root in &roots {
        assert_eq!(active(root), ids[0], "{stdout}");
    }

    // A board with config overrides does not take a shared bundle.
    text.push_str("[board.config]\ndetector = { interval = 2 }\n");
    std::fs::write(&fleet, &text).unwrap();
    let out = fer(&[
        "fleet",
        "flash",
        "--fleet",
        s(&fleet),
        "--bundle",
        s(&bundles[1]),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit_code::USAGE.into()), "{stderr}");
    assert!(
        stderr.contains("cam-down") && stderr.contains("override"),
        "{stderr}"
    );
    for root in &roots {
        assert_eq!(active(root), ids[0], "nothing was flashed");
    }
    // ... it gets its own config, the fleet's with its overrides, to bundle.
    let base = t.join("board-1.toml");
    let out = tests::expect_success(fer(&[
        "fleet",
        "config",
        "--fleet",
        s(&fleet),
        "--board",
        "cam-down",
        "--base",
        s(&base),
    ]));
    let merged: firmware_config::config::DeviceConfig = toml::from_str(&out).unwrap();
    assert_eq!(merged.detector.interval, 2);
    assert_eq!(merged.device.id, "fleet-board");
}

/// Three signed peer bundles (versions 1, 2, 3) and `boards` board folders trusting their key,
/// listed in a fleet file; every board runs bundle 1.
struct Rollout {
    _tmp: tempfile::TempDir,
    fleet: std::path::PathBuf,
    state: std::path::PathBuf,
    roots: Vec<std::path::PathBuf>,
    bundles: Vec<std::path::PathBuf>,
    ids: Vec<String>,
}

fn rollout_fixture(boards: usize) -> Option<Rollout> {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let Bundles {
        public,
        dirs: bundles,
        ids,
    } = signed_bundles(t, 3)?;
    let mut text = String::new();
    let mut roots = Vec::new();
    for i in 0..boards {
        let root = t.join(format!("board-{i}"));
        BoardRoot::init(&root, &public).unwrap();
        text.push_str(&format!(
            "[[board]]\nname = \"cam-{i}\"\naddress = \"dir:{}\"\n",
            s(&root)
        ));
        roots.push(root);
    }
    let fleet = t.join("fleet.toml");
    std::fs::write(&fleet, text).unwrap();
    tests::expect_success(fer(&[
        "fleet",
        "flash",
        "--fleet",
        s(&fleet),
        "--bundle",
        s(&bundles[0]),
    ]));
    Some(Rollout {
        state: t.join("rollout.json"),
        _tmp: tmp,
        fleet,
        roots,
        bundles,
        ids,
    })
}

fn active(root: &Path) -> String {
    edge::bundle::open_for_run(root).unwrap().id
}

fn rollout_cmd(f: &Rollout, bundle: usize, canaries: &str, soak: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(tests::program("fer"));
    cmd.args([
        "fleet",
        "flash",
        "--fleet",
        s(&f.fleet),
        "--bundle",
        s(&f.bundles[bundle]),
    ])
    .args(["--canary", canaries, "--soak", soak, "--state", s(&f.state)]);
    cmd
}

fn phase(f: &Rollout) -> serde_json::Value {
    std::fs::read(&f.state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[test]
fn a_canary_that_falls_back_stops_the_rollout_and_the_rest_is_never_touched() {
    let Some(f) = rollout_fixture(4) else { return };
    let child = rollout_cmd(&f, 1, "2", "8s")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the canaries run bundle 2, the first crashes at every start until it falls back.
    let start = std::time::Instant::now();
    while active(&f.roots[0]) != f.ids[1] || phase(&f)["phase"] != "soak" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{}",
            phase(&f)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let board = BoardRoot::open(&f.roots[0]).unwrap();
    for _ in 0..=edge::bundle::MAX_TRIAL_STARTS {
        board.start(|_| Ok(())).unwrap();
    }
    assert_eq!(
        active(&f.roots[0]),
        f.ids[0],
        "the board fell back by itself"
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{stdout}"
    );
    assert!(stdout.contains("fell back"), "{stdout}");
    let state = phase(&f);
    assert_eq!(state["phase"], "stopped", "{state}");
    assert_eq!(
        state["boards"]["cam-0"]["rolled_back"], false,
        "it already fell back: {state}"
    );
    assert_eq!(state["boards"]["cam-1"]["rolled_back"], true, "{state}");
    for root in &f.roots {
        assert_eq!(active(root), f.ids[0], "{stdout}");
    }
    assert_eq!(state["boards"]["cam-2"]["flashed"], false);
}

#[test]
fn an_interrupted_rollout_resumes_where_it_was_and_promotes() {
    let Some(f) = rollout_fixture(3) else { return };
    let mut child = rollout_cmd(&f, 1, "1", "3s").spawn().unwrap();
    let start = std::time::Instant::now();
    while phase(&f)["phase"] != "soak" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{}",
            phase(&f)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(terminate(child.id()), "SIGTERM sent");
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(phase(&f)["phase"], "soak", "the state kept the soak");
    assert_eq!(active(&f.roots[1]), f.ids[0], "the rest waits for the soak");

    let out = rollout_cmd(&f, 1, "1", "3s").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(phase(&f)["phase"], "done");
    for root in &f.roots {
        assert_eq!(active(root), f.ids[1]);
    }
    // The canary was flashed once: its other slot still holds bundle 1.
    let status = BoardRoot::open(&f.roots[0]).unwrap().status().unwrap();
    let other = status.slots.iter().find(|s| !s.active).unwrap();
    assert_eq!(other.bundle_id.as_deref(), Some(f.ids[0].as_str()));
}

/// Sends SIGTERM to a child process.
fn terminate(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Chromium from Debian (`scripts/setup.sh` installs it), or `None` with a note; CI
/// (`FER_REQUIRE_SHARED=1`) makes a missing one a failure.
fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some(name.to_string());
        }
    }
    assert!(
        !testdata::required(),
        "chromium is missing: run scripts/setup.sh (Debian's chromium)"
    );
    eprintln!("skipping: chromium is missing (Debian: chromium)");
    None
}

#[test]
fn the_fleet_report_loads_in_a_real_browser_with_every_plot() {
    let Some(browser) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut text = String::new();
    // Two boards, three days, two model versions, a class mix that differs per board.
    for b in 0..2u64 {
        let log = t.join(format!("log-{b}"));
        log_faces(&log, &format!("cam-{b}"), 60, |i| {
            let model = if i < 30 { 1 } else { 2 };
            (
                1_764_000_000_000 + i * 4_000_000,
                model,
                ((i + b * 3) % 5) as usize,
            )
        });
        text.push_str(&format!(
            "[[board]]\nname = \"cam-{b}\"\naddress = \"dir:{}\"\nlog_dir = {:?}\n",
            s(&t.join(format!("board-{b}"))),
            s(&log)
        ));
    }
    let fleet = t.join("fleet.toml");
    std::fs::write(&fleet, text).unwrap();
    let field = t.join("field");
    tests::expect_success(fer(&[
        "fleet",
        "collect",
        "--fleet",
        s(&fleet),
        "--into",
        s(&field),
        "--every",
        "1s",
        "--cycles",
        "1",
    ]));
    let out_dir = t.join("report");
    let out = tests::expect_success(fer(&[
        "fleet",
        "report",
        "--field",
        s(&field),
        "--out",
        s(&out_dir),
    ]));
    let page = out_dir.join("index.html");
    assert!(out.contains(s(&page)), "{out}");

    let url = format!("file://{}", s(&page));
    let headless = |extra: &[&str]| {
        std::process::Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=10000",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dom = headless(&["--dump-dom"]);
    let html = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(
        html.contains("data-images=\"ok\""),
        "not every plot loaded:\n{html}\n{log}"
    );
    assert!(html.contains("cam-0") && html.contains("cam-1"), "{html}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Failed to load"))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:#?}");

    let shot = t.join("report.png");
    let screenshot = headless(&[
        &format!("--screenshot={}", s(&shot)),
        "--window-size=1280,2400",
    ]);
    assert!(
        shot.is_file(),
        "{}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    // FER_KEEP_SCREENSHOT=path keeps the screenshot for a person to look at.
    if let Some(keep) = std::env::var_os("FER_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let image = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (1280, 2400));
    // The plots' colours are on the page, not only white and text grey.
    let coloured = image
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            r.max(g).max(b) - r.min(g).min(b) > 80
        })
        .count();
    assert!(
        coloured > 2000,
        "{coloured} coloured pixels: are the plots drawn?"
    );
}

/// Board config of the eight-board test: each image is one face (no detector), the field log
/// lives in the board root, and every face under `threshold` is logged.
fn folder_board(threshold: f32) -> String {
    let mut device = tools::demo::face_crop_board("fleet-board");
    device.classifier.default_threshold = threshold;
    device.classifier.class_thresholds = testdata::peer_manifest()
        .class_names
        .iter()
        .map(|c| firmware_config::config::ClassThreshold::new(c.clone(), threshold))
        .collect();
    toml::to_string(&device).unwrap()
}

/// The board's own `fer-edge run` of its active bundle on its folder of frames; returns the
/// records its field log accepted.
fn run_board(root: &Path, frames: &Path) -> u64 {
    let out = std::process::Command::new(tests::program("fer-edge"))
        .args(["run", "--bundle", s(root), "--report-every", "600"])
        .arg(format!("--source=folder:{}", s(frames)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["kind"], "final", "{stdout}");
    report["field_log"]["written"]
        .as_u64()
        .expect("the log is on")
}

/// A rollout of `bundle` to two canaries, then the rest, in the background; `during_soak`
/// runs once the canaries are soaking (the soak must outlast it). Returns the rollout's
/// output and its state file.
fn rollout_with(
    fleet: &Path,
    bundle: &Path,
    state: &Path,
    soak: &str,
    during_soak: impl FnOnce(),
) -> (std::process::Output, serde_json::Value) {
    let child = std::process::Command::new(tests::program("fer"))
        .args(["fleet", "flash", "--fleet", s(fleet), "--bundle", s(bundle)])
        .args(["--canary", "2", "--soak", soak, "--min-faces", "20"])
        .args(["--jobs", "4", "--state", s(state)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read_state = || -> serde_json::Value {
        std::fs::read(state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let start = std::time::Instant::now();
    while read_state()["phase"] != "soak" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "{}",
            read_state()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    during_soak();
    let out = child.wait_with_output().unwrap();
    (out, read_state())
}

/// Eight boards behind one sshd, each running `fer-edge run` on its own folder of FER2013
/// faces: a rollout whose bundle breaks on one canary stops and leaves every board on a
/// verified bundle; a bundle that makes the canaries unsure of far more faces stops at the
/// low-confidence rate check; a good rollout reaches all eight; and `fer fleet collect`,
/// three cycles with one board down in the second, brings every logged face exactly once.
#[test]
fn eight_boards_running_fer_edge_roll_out_and_collect_every_face_once() {
    const BOARDS: usize = 8;
    let Some(sshd) = Sshd::start() else { return };
    let Some(val) = testdata::shared_path("data/fer2013/val") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Bundles 1, 2 and 4 log the faces under 0.5; bundle 3 (the same model) nearly all of
    // them. Versions only go up: a board that ran bundle 3 refuses bundle 2 afterwards, so the
    // good rollout after the failed ones is a new build, bundle 4.
    let configs = [
        folder_board(0.5),
        folder_board(0.5),
        folder_board(0.99),
        folder_board(0.5),
    ];
    let Some(Bundles {
        public,
        dirs: bundles,
        ids,
    }) = signed_bundles_with(t, &configs, None)
    else {
        return;
    };
    let options: Vec<String> = sshd
        .fer_options()
        .iter()
        .map(|o| format!("{o:?}"))
        .collect();
    let header = format!(
        "[defaults]\nssh_options = [{}, \"ConnectTimeout=5\"]\nagent = {:?}\n",
        options.join(", "),
        s(&tests::program("fer-edge"))
    );
    let (mut roots, mut frames) = (Vec::new(), Vec::new());
    for i in 0..BOARDS {
        let root = t.join(format!("board-{i}"));
        BoardRoot::init(&root, &public).unwrap();
        let folder = t.join(format!("frames-{i}"));
        assert_eq!(tests::subset(&val, &folder, i * 3, 3, true), 21);
        roots.push(root);
        frames.push(folder);
    }
    let fleet = t.join("fleet.toml");
    let write_fleet = |down: Option<usize>| {
        let mut text = header.clone();
        for (i, root) in roots.iter().enumerate() {
            let address = if Some(i) == down {
                "ssh://127.0.0.1:1/srv/fer".to_string()
            } else {
                sshd.address(root)
            };
            text.push_str(&format!(
                "\n[[board]]\nname = \"cam-{i}\"\naddress = {address:?}\n"
            ));
        }
        std::fs::write(&fleet, text).unwrap();
    };
    write_fleet(None);
    let mut logged = [0u64; BOARDS];

    // Every board takes bundle 1 and runs it: each tally holds bundle 1's rate.
    tests::expect_success(fer(&[
        "fleet",
        "flash",
        "--fleet",
        s(&fleet),
        "--bundle",
        s(&bundles[0]),
        "--jobs",
        "4",
    ]));
    for i in 0..BOARDS {
        logged[i] += run_board(&roots[i], &frames[i]);
    }
    let tally = edge::tally::Tally::read(&roots[0].join("field-log")).unwrap();
    let before = tally.bundles[&ids[0]];
    assert_eq!(before.faces, 21);
    assert!(
        before.rate().unwrap() < 0.6,
        "bundle 3 must be able to be 1.5x worse: {before:?}"
    );

    // Bundle 2 breaks on canary cam-0 (its copy is damaged on disk): cam-0 falls back by
    // itself when it starts, the rollout stops and cam-1 is rolled back.
    let (out, state) = rollout_with(&fleet, &bundles[1], &t.join("a.json"), "20s", || {
        let slot = BoardRoot::open(&roots[0]).unwrap().status().unwrap().active;
        let slot_dir = roots[0].join("slots").join(slot.unwrap());
        for entry in std::fs::read_dir(&slot_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "onnx") {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.push(0);
                std::fs::write(&path, bytes).unwrap();
            }
        }
        logged[0] += run_board(&roots[0], &frames[0]);
        logged[1] += run_board(&roots[1], &frames[1]);
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{stdout}"
    );
    assert_eq!(state["phase"], "stopped", "{state}");
    assert!(
        state["boards"]["cam-0"]["problem"]
            .as_str()
            .unwrap()
            .contains("fell back"),
        "{state}"
    );
    assert_eq!(state["boards"]["cam-1"]["rolled_back"], true, "{state}");
    for root in &roots {
        assert_eq!(active(root), ids[0], "every board on verified bundle 1");
    }

    // Bundle 3 makes the canaries unsure of almost every face: the rate check stops it.
    let (out, state) = rollout_with(&fleet, &bundles[2], &t.join("b.json"), "25s", || {
        logged[0] += run_board(&roots[0], &frames[0]);
        logged[1] += run_board(&roots[1], &frames[1]);
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{stdout}"
    );
    assert!(
        stdout.contains("more than 1.5x the previous rate"),
        "{stdout}"
    );
    for root in &roots {
        assert_eq!(active(root), ids[0]);
    }
    assert_eq!(state["boards"]["cam-2"]["flashed"], false, "{state}");

    // Bundle 4: the canaries keep bundle 1's rate and it reaches all eight.
    let (out, state) = rollout_with(&fleet, &bundles[3], &t.join("c.json"), "25s", || {
        logged[0] += run_board(&roots[0], &frames[0]);
        logged[1] += run_board(&roots[1], &frames[1]);
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state["phase"], "done", "{state}");
    assert!(
        state["boards"]["cam-0"]["note"]
            .as_str()
            .unwrap()
            .starts_with("low-confidence"),
        "{state}"
    );
    for root in &roots {
        assert_eq!(active(root), ids[3]);
        // As after a minute of running: more short runs below must not end a trial.
        BoardRoot::open(root).unwrap().mark_healthy().unwrap();
    }

    // Three collect cycles; cam-7 is down during the second while every board logs more.
    let pool = t.join("field");
    let collect = || fer(&["fleet", "collect", "--fleet", s(&fleet), "--into", s(&pool)]);
    for i in 0..BOARDS {
        logged[i] += run_board(&roots[i], &frames[i]);
    }
    tests::expect_success(collect());
    write_fleet(Some(BOARDS - 1));
    for i in 0..BOARDS {
        logged[i] += run_board(&roots[i], &frames[i]);
    }
    let out = collect();
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    write_fleet(None);
    tests::expect_success(collect());
    for (i, logged) in logged.iter().enumerate() {
        let records = tools::collect::read_records(
            &pool
                .join(format!("cam-{i}"))
                .join(tools::collect::RECORDS_FILE),
        )
        .unwrap();
        let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), records.len(), "cam-{i}: no record twice");
        assert_eq!(records.len() as u64, *logged, "cam-{i}: every logged face");
    }
    assert!(logged.iter().all(|n| *n > 0), "{logged:?}");
}
