//! `fer demo` end to end with tiny settings: data, round 1, flash to a board folder, the
//! board's pipeline filling its field log, collect, round 2 with the gate, the table.

use std::process::{Command, Output};

use edge::bundle::BoardRoot;
use tools::demo::{DemoReport, ROUNDS_JSON};
use tools::retrain::{self, RoundRecord};

fn fer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fer"))
        .args(args)
        .output()
        .unwrap()
}

const TINY: [&str; 16] = [
    "--image-size",
    "32",
    "--labeled-per-class",
    "6",
    "--pool-images",
    "40",
    "--val-per-class",
    "6",
    "--steps",
    "20",
    "--round-steps",
    "4",
    "--batch",
    "8",
    "--field-records",
    "6",
];

#[test]
fn demo_runs_both_rounds_and_deploys_what_the_gate_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let work_s = work.to_str().unwrap();
    let mut args = vec!["demo", "--workdir", work_s, "--max-frames", "300"];
    args.extend(TINY);
    let out = fer(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("round  labeled  unlabeled  field records"),
        "{stdout}"
    );

    let report: DemoReport =
        serde_json::from_str(&std::fs::read_to_string(work.join(ROUNDS_JSON)).unwrap()).unwrap();
    let field = report.field.as_ref().expect("the board ran");
    assert!(field.logged > 0 && field.frames <= 300, "{field:?}");
    let history: Vec<RoundRecord> = retrain::read_history(&work.join("run")).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(report.rounds.len(), 2);
    let (first, second) = (&history[0], &history[1]);
    assert!(first.deployed && first.gate.deploy);
    assert_eq!(second.collected as u64, field.logged);
    assert!(second.collected > 0 && second.added_to_pool == second.collected);
    assert_eq!(report.rounds[1].field_records, second.collected);
    assert_eq!(
        second.unlabeled,
        Some(40 + second.collected),
        "the pool grew by the collected crops"
    );

    // The gate follows the printed scores (tolerance 0), and only what passed was flashed.
    let old = second.incumbent.as_ref().expect("round 2 had an incumbent");
    assert_eq!(old.round, 1);
    assert_eq!(old.score, first.score, "same model, same validation set");
    let not_worse =
        second.score.accuracy >= old.score.accuracy && second.score.macro_f1 >= old.score.macro_f1;
    assert_eq!(second.gate.deploy, not_worse, "{:?}", second.gate);
    assert_eq!(second.deployed, second.gate.deploy);
    assert!(stdout.contains(&second.gate.reason), "{stdout}");

    // The control: round 2's steps from round 1 without the field faces, scored like the rounds.
    assert!(
        report.plots.len() >= 2 && report.plots.iter().all(|p| p.is_file()),
        "{:?}",
        report.plots
    );
    let control = report.control.as_ref().expect("a control row");
    assert_eq!(control.steps, 4);
    assert_eq!(control.round_one, first.score.accuracy);
    assert_eq!(control.round_two, second.score.accuracy);
    assert!((0.0..=1.0).contains(&control.without_field), "{control:?}");
    assert!(stdout.contains(&control.describe()), "{stdout}");
    let control_config = trainer::checkpoint::load(&work.join("run/control"))
        .unwrap()
        .config;
    assert!(
        control_config
            .data
            .unlabeled
            .iter()
            .all(|p| p.ends_with("synthetic")),
        "the control never sees the collected crops: {:?}",
        control_config.data.unlabeled
    );

    // The board's active bundle verifies and is the model the gate chose.
    let active = BoardRoot::open(&work.join("board"))
        .unwrap()
        .open_active()
        .unwrap();
    let expected = if second.deployed { second } else { first };
    let manifest = edge::classify::read_manifest(&expected.manifest).unwrap();
    assert_eq!(active.manifest.model_sha256, manifest.model_sha256);
    assert_eq!(
        active.manifest.training_run_id, manifest.training_run_id,
        "round {} is active",
        expected.round
    );

    // Running again continues: the finished demo only prints its table.
    let again = fer(&args);
    assert!(again.status.success());
    assert_eq!(
        retrain::read_history(&work.join("run")).unwrap().len(),
        2,
        "nothing was retrained"
    );
    let again_stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again_stdout.contains("deployed"));
    assert!(
        again_stdout.contains(&control.describe()) && !again_stdout.contains("second thread"),
        "the control is read back, not trained or exported again: {again_stdout}"
    );

    // `fer loop` runs the next round on the same run folder and board.
    let w = |p: &str| work.join(p).to_str().unwrap().to_string();
    let board = format!("dir:{}", w("board"));
    let (run, val, pool, key, config) = (
        w("run"),
        w("data/val"),
        w("data/unlabeled"),
        w("keys/fer-signing.key"),
        w("board.toml"),
    );
    let out = fer(&[
        "loop", "--board", &board, "--run", &run, "--val", &val, "--pool", &pool, "--key", &key,
        "--config", &config, "--steps", "3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = retrain::read_history(&work.join("run")).unwrap();
    assert_eq!(history.len(), 3);
    let third = &history[2];
    let base = retrain::incumbent(&history[..2]).unwrap();
    assert_eq!(third.warm_start.as_ref(), Some(&base.run_dir));
    assert_eq!(third.collected, 0, "the field log was already collected");
    assert_eq!(third.deployed, third.gate.deploy);
    assert!(stdout.contains(&third.gate.reason), "{stdout}");
    assert_eq!(stdout.matches("\n    3 ").count(), 1, "{stdout}");

    // A folder that is not a demo work folder is never touched.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let refused = fer(&["demo", "--fresh", "--workdir", foreign.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a `fer demo` work folder"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(foreign.join("keep.txt").is_file());
}

#[test]
fn loop_and_demo_help_say_what_happens() {
    let help = String::from_utf8_lossy(&fer(&["loop", "--help"]).stdout).into_owned();
    for needle in ["rounds.jsonl", "warm-started", "--tolerance", "not flashed"] {
        assert!(help.contains(needle), "{needle} missing:\n{help}");
    }
    let help = String::from_utf8_lossy(&fer(&["demo", "--help"]).stdout).into_owned();
    for needle in ["rounds.json", "--fresh", "field log", "DTA + SNL"] {
        assert!(help.contains(needle), "{needle} missing:\n{help}");
    }
}
