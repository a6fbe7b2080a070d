//! The whole loop on real FER2013 faces, with the board behind a real sshd on 127.0.0.1:
//! train round 1, `fer loop --rounds 0` (export + score), `fer bundle` + `fer flash`, the
//! board's `fer-edge run` on a folder of FER2013 val images filling its field log, `fer loop`
//! (collect over ssh, retrain on the collected crops, gate, bundle + flash over ssh), and
//! finally the board running the second bundle: its `fer-edge run` names it, and the faces it
//! logs carry the second model's hash.

use std::path::Path;
use std::process::Output;

use tests::{Sshd, expect_success, fer, subset};
use tools::collect::{RECORDS_FILE, read_records};
use tools::retrain::{self, RoundRecord};
use trainer::train::Progress;

const SIDE: usize = 32;

fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `fer-edge run` on the board, over ssh, on the board's folder of frames.
fn run_edge_on_board(sshd: &Sshd, agent: &Path, root: &Path, frames: &Path) -> (Output, u64) {
    let out = sshd
        .ssh()
        .arg(format!(
            "{} run --bundle {} --source folder:{} --report-every 600",
            s(agent),
            s(root),
            s(frames)
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fer-edge run on the board failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a final report");
    let report: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(report["kind"], "final", "{stdout}");
    let written = report["field_log"]["written"]
        .as_u64()
        .expect("the field log is on");
    (out, written)
}

#[test]
fn whole_loop_over_ssh_on_fer2013_faces() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(fer_train) = testdata::shared_path("data/fer2013/train") else {
        return;
    };
    let Some(fer_val) = testdata::shared_path("data/fer2013/val") else {
        return;
    };
    let agent = tests::program("fer-edge");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // Workstation data: labeled, unlabeled pool and validation from FER2013; the board's
    // "camera" is a folder of other FER2013 val images.
    let (labeled, pool, val) = (t.join("labeled"), t.join("pool"), t.join("val"));
    assert_eq!(subset(&fer_train, &labeled, 0, 6, false), 42);
    assert_eq!(subset(&fer_train, &pool, 6, 6, true), 42);
    assert_eq!(subset(&fer_val, &val, 0, 5, false), 35);
    let frames = t.join("board-camera");
    assert_eq!(subset(&fer_val, &frames, 5, 4, true), 28);

    let run = t.join("run");
    // Round 1 as `fer demo` trains it: DTA + SNL, a small residual network on gray crops.
    let round_one = tools::demo::face_crop_training(SIDE, &labeled, &pool, 20, 8);
    trainer::train::train(round_one, &run, Progress::Hidden).unwrap();

    let key = t.join("keys/fer.key");
    expect_success(fer(&["keygen", "--out", s(&key)]));
    let mut device = tools::demo::face_crop_board("fer2013-board");
    // A 20-step model's trained thresholds sit near its mean confidence (about 1/7), so it
    // would log almost nothing; the board is told to log every face below 0.5 instead.
    device.classifier.class_thresholds = std::fs::read_dir(&fer_val)
        .unwrap()
        .map(|e| {
            let class = e.unwrap().file_name().to_string_lossy().into_owned();
            firmware_config::config::ClassThreshold::new(class, 0.5)
        })
        .collect();
    let config = t.join("board.toml");
    std::fs::write(&config, toml::to_string(&device).unwrap()).unwrap();

    let root = t.join("board");
    let mut ssh_args = sshd.fer_args();
    ssh_args.extend(["--board-agent".to_string(), s(&agent).to_string()]);
    let address = sshd.address(&root);
    let with_board = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--board", &address]);
        all.extend(ssh_args.iter().map(String::as_str));
        fer(&all)
    };
    let loop_args = |rounds: &str| {
        vec![
            "loop",
            "--run",
            s(&run),
            "--val",
            s(&val),
            "--pool",
            s(&pool),
            "--key",
            s(&key),
            "--config",
            s(&config),
            "--steps",
            "8",
            "--tolerance",
            "1",
            "--rounds",
            rounds,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<String>>()
    };

    // Round 1: exported and scored by the loop, then bundled and flashed by hand.
    let args = loop_args("0");
    expect_success(with_board(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let history = retrain::read_history(&run).unwrap();
    assert_eq!(history.len(), 1);
    let first: &RoundRecord = &history[0];
    assert!(
        !first.deployed,
        "round 1 is the baseline, flashed by the user"
    );
    let bundle_one = t.join("bundle-1");
    expect_success(fer(&[
        "bundle",
        "--model",
        s(first.manifest.parent().unwrap()),
        "--config",
        s(&config),
        "--key",
        s(&key),
        "--out",
        s(&bundle_one),
    ]));
    let out = expect_success(with_board(&[
        "flash",
        "--bundle",
        s(&bundle_one),
        "--trust",
        s(&tools::keys::public_path(&key)),
    ]));
    assert!(out.contains("self-test passed"), "{out}");

    // The board classifies the FER2013 frames; an early model is unsure of most of them.
    let (edge_out, logged) = run_edge_on_board(&sshd, &agent, &root, &frames);
    assert!(
        (1..=28).contains(&logged),
        "{logged} low-confidence faces logged: {}",
        String::from_utf8_lossy(&edge_out.stdout)
    );
    let model_one = edge::classify::read_manifest(&first.manifest)
        .unwrap()
        .model_sha256;

    // Round 2: collect over ssh, retrain, gate (tolerance 1: always deploy), flash over ssh.
    let args = loop_args("1");
    let out = expect_success(with_board(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let history = retrain::read_history(&run).unwrap();
    assert_eq!(history.len(), 2);
    let second = &history[1];
    assert_eq!(
        second.collected as u64, logged,
        "every logged face collected"
    );
    assert_eq!(second.added_to_pool, second.collected);
    assert_eq!(second.unlabeled, Some(42 + second.collected));
    assert_eq!(second.warm_start.as_ref(), Some(&run));
    assert!(second.gate.deploy && second.deployed, "{:?}", second.gate);
    assert!(out.contains(&second.gate.reason), "{out}");
    let collected = read_records(&run.join("collected").join(RECORDS_FILE)).unwrap();
    assert_eq!(collected.len() as u64, logged);
    assert!(
        collected
            .iter()
            .all(|r| r.model_sha256 == model_one.to_hex()),
        "the first field log came from round 1's model"
    );

    // The board now runs the second bundle: fer-edge names it, its log carries its model.
    let second_id = second.bundle_id.clone().expect("round 2 was flashed");
    let status: serde_json::Value =
        serde_json::from_str(&expect_success(with_board(&["status"]))).unwrap();
    let active = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|slot| slot["active"] == true)
        .expect("an active slot");
    assert_eq!(active["bundle_id"], second_id.as_str(), "{status}");
    let (edge_out_two, logged_two) = run_edge_on_board(&sshd, &agent, &root, &frames);
    let names = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        names(&edge_out_two).contains(&format!("bundle {}", &second_id[..12])),
        "{}",
        names(&edge_out_two)
    );
    assert!(!names(&edge_out).contains(&second_id[..12]));
    let into = t.join("collected-after");
    expect_success(with_board(&["collect", "--into", s(&into)]));
    let after = read_records(&into.join(RECORDS_FILE)).unwrap();
    assert_eq!(after.len() as u64, logged_two);
    let model_two = edge::classify::read_manifest(&second.manifest)
        .unwrap()
        .model_sha256;
    assert_ne!(model_two, model_one);
    assert!(
        after.iter().all(|r| r.model_sha256 == model_two.to_hex()),
        "the board logs with round 2's model"
    );
}
