use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

const EXAMPLE: &str = r#"
[defaults]
ssh_options = ["ConnectTimeout=10"]

[[board]]
name = "lobby-1"
address = "ssh://jetson@10.0.0.11/var/lib/fer-edge"
tags = ["lobby", "canary"]

[[board]]
name = "dock-2"
address = "ssh://jetson@10.0.0.12:2222/var/lib/fer-edge"
tags = ["dock"]
agent = "/opt/fer/fer-edge"
[board.config]
device = { name = "dock camera 2" }
detector = { interval = 3 }
"#;

fn parse(text: &str) -> Result<Inventory> {
    Inventory::parse(text, Path::new("fleet.toml"))
}

fn refused(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn the_example_parses_with_defaults_tags_and_overrides() {
    let fleet = parse(EXAMPLE).unwrap();
    assert_eq!(fleet.boards.len(), 2);
    let Board::Ssh(dock) = fleet.board(&fleet.boards[1]).unwrap() else {
        panic!("an ssh board");
    };
    assert_eq!(dock.port, Some(2222));
    assert_eq!(dock.agent, "/opt/fer/fer-edge");
    assert_eq!(dock.options, ["ConnectTimeout=10"]);
    let config = fleet
        .config_for(&fleet.boards[1], &DeviceConfig::default())
        .unwrap();
    assert_eq!(config.detector.interval, 3);
    assert_eq!(config.device.name, "dock camera 2");
    assert_eq!(
        config.camera,
        DeviceConfig::default().camera,
        "the rest is kept"
    );
    let canaries = fleet.select(&["canary".into()]).unwrap();
    assert_eq!(canaries.len(), 1);
    assert_eq!(canaries[0].name, "lobby-1");
    assert_eq!(fleet.select(&[]).unwrap().len(), 2);
    let err = fleet.select(&["lobyy".into()]).unwrap_err().to_string();
    assert!(err.contains("lobyy"), "{err}");
}

#[test]
fn mistakes_are_refused_naming_the_board_and_the_fix() {
    let two = |a: &str, b: &str| {
        format!(
            "[[board]]\nname = \"{a}\"\naddress = \"dir:/tmp/a\"\n\n[[board]]\nname = \"{b}\"\naddress = \"dir:/tmp/b\"\n"
        )
    };
    let err = refused(&two("cam", "cam"));
    assert!(
        err.contains("fleet.toml") && err.contains("already used by board 1"),
        "{err}"
    );
    let err = refused(&two("cam", "../up"));
    assert!(
        err.contains("board 2") && err.contains("letters, digits"),
        "{err}"
    );
    let err = refused("[[board]]\nname = \"cam\"\naddress = \"http://cam/\"\n");
    assert!(err.contains("board 1") && err.contains("ssh://"), "{err}");
    let err = refused("[[board]]\nname = \"cam\"\nadress = \"dir:/x\"\n");
    assert!(err.contains("adress"), "{err}");
    let err = refused(
        "[[board]]\nname = \"cam\"\naddress = \"dir:/x\"\n[board.config]\ndetector = { interval = 0 }\n",
    );
    assert!(err.contains("detector.interval"), "{err}");
    let err = refused(
        "[[board]]\nname = \"cam\"\naddress = \"dir:/x\"\n[board.config]\ncamera = { widht = 3 }\n",
    );
    assert!(err.contains("widht"), "{err}");
    let err = refused("[defaults]\n");
    assert!(err.contains("no board"), "{err}");
}

#[test]
fn for_each_bounds_concurrency_keeps_order_and_isolates_failures() {
    let mut text = String::new();
    for i in 0..6 {
        text.push_str(&format!(
            "[[board]]\nname = \"b{i}\"\naddress = \"dir:/tmp/fleet-b{i}\"\n"
        ));
    }
    let fleet = parse(&text).unwrap();
    let boards = fleet.select(&[]).unwrap();
    let running = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let outcomes = for_each(
        &fleet,
        &boards,
        2,
        |entry, _| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            if entry.name == "b3" {
                Err(Error::invalid("board", "down"))
            } else {
                Ok(entry.name.clone())
            }
        },
        |_, _| {
            finished.fetch_add(1, Ordering::SeqCst);
        },
    );
    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert_eq!(finished.load(Ordering::SeqCst), 6);
    let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["b0", "b1", "b2", "b3", "b4", "b5"]);
    assert_eq!(outcomes.iter().filter(|o| o.result.is_err()).count(), 1);
    assert!(outcomes[3].result.is_err());
}

#[test]
fn failures_are_diagnosed_in_words() {
    let ssh = |stderr: &str| Error::Command {
        command: "ssh".into(),
        status: "exit status: 255".into(),
        code: Some(255),
        stderr: stderr.into(),
    };
    assert!(
        diagnose(&ssh(
            "ssh: connect to host 127.0.0.1 port 1: Connection refused"
        ))
        .contains("refused")
    );
    assert!(diagnose(&ssh("Host key verification failed.")).contains("known_hosts"));
    assert!(
        diagnose(&ssh(
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@"
        ))
        .contains("changed")
    );
    let full_disk = ssh("scp: Connection closed\nscp: dest open \"/x\": No space left on device");
    assert_eq!(
        diagnose(&full_disk),
        "ssh: scp: dest open \"/x\": No space left on device",
        "the reason, not the long command line"
    );
}

/// Writes `count` sealed records into a board's field log at `dir`.
fn board_writes(dir: &Path, device: &str, first: u64, count: u64) {
    use edge::fieldlog::FieldLog;
    use firmware_config::Sha256Digest;
    use firmware_config::config::FieldLogConfig;
    use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
    use firmware_config::record::FieldRecord;
    let mut config = FieldLogConfig::default();
    config.directory = dir.to_string_lossy().into_owned();
    config.max_records_per_minute = 0;
    config.dedup_window_ms = 0;
    let mut log = FieldLog::open(&config, device).unwrap();
    for seq in first..first + count {
        let record = FieldRecord {
            timestamp_ms: 1_700_000_000_000 + seq,
            device_id: device.into(),
            model_sha256: Sha256Digest([1; 32]),
            frame_seq: seq,
            track_id: 1,
            face: FaceBox {
                x: 0.0,
                y: 0.0,
                width: 4.0,
                height: 4.0,
            },
            probabilities: vec![0.5, 0.5],
            crop: ImageBuf::new(2, 2, PixelFormat::Gray8, vec![seq as u8; 4]).unwrap(),
            frame: None,
        };
        log.log(&record).unwrap();
    }
    log.close().unwrap();
}

#[test]
fn the_service_collects_every_cycle_and_backs_off_a_failing_board() {
    use std::sync::atomic::AtomicBool;

    use super::service::{self, ServiceOptions};

    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for (name, log) in [("b0", "log0"), ("b1", "log1"), ("broken", "missing/log")] {
        text.push_str(&format!(
            "[[board]]\nname = \"{name}\"\naddress = \"dir:{}\"\nlog_dir = {:?}\n",
            tmp.path().join(name).display(),
            tmp.path().join(log).display().to_string()
        ));
    }
    std::fs::write(tmp.path().join("missing"), b"a file, not a folder").unwrap();
    let fleet = parse(&text).unwrap();
    let boards = fleet.select(&[]).unwrap();
    board_writes(&tmp.path().join("log0"), "b0", 0, 5);
    board_writes(&tmp.path().join("log1"), "b1", 0, 3);
    let into = tmp.path().join("field");
    let options = ServiceOptions {
        into: into.clone(),
        every: Duration::ZERO,
        cycles: Some(12),
        jobs: 2,
        accept_damaged: false,
    };
    let mut backing_off = Vec::new();
    let mut written = 5;
    let states = service::run(
        &fleet,
        &boards,
        &options,
        &AtomicBool::new(false),
        &mut |report, states| {
            backing_off.push(report.backing_off);
            assert_eq!(states.len(), 3, "one entry per board, whatever the cycle");
            // b0 keeps logging between cycles.
            board_writes(&tmp.path().join("log0"), "b0", written, 2);
            written += 2;
        },
    )
    .unwrap();
    // The last two records were written after the last cycle.
    assert_eq!(states[0].records, written - 2);
    assert_eq!(states[1].records, 3);
    assert_eq!(states[2].records, 0);
    assert!(states[2].last_problem.is_some());
    // The broken board is tried at cycles 0, 1, 3 and 7 (waits of 1, 2, 4 cycles).
    assert_eq!(backing_off, [0, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
    assert_eq!(states[2].failures, 4);
    let lines = std::fs::read_to_string(into.join("b0").join(crate::collect::RECORDS_FILE))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(lines, written - 2, "each record once");
}

#[test]
fn service_intervals_parse_with_units_and_refuse_nonsense() {
    use super::service::parse_every;
    assert_eq!(parse_every("15m"), Ok(Duration::from_secs(900)));
    assert_eq!(parse_every("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_every("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_every("300"), Ok(Duration::from_secs(300)));
    for bad in ["", "0m", "15 minutes", "m", "1d"] {
        assert!(parse_every(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_canary_rate_is_judged_against_the_previous_bundle_only_with_enough_faces() {
    use edge::tally::{FaceCount, Tally};
    use rollout::{RateLimit, judge_rate};
    let count = |faces, low_confidence| FaceCount {
        faces,
        low_confidence,
        updated_ms: 0,
    };
    let tally = Tally {
        bundles: [
            ("old".to_string(), count(200, 20)),
            ("same".to_string(), count(100, 15)),
            ("worse".to_string(), count(100, 16)),
            ("new-idle".to_string(), count(10, 10)),
        ]
        .into(),
    };
    let limit = RateLimit {
        factor: 1.5,
        min_faces: 50,
    };
    // 15% is exactly 1.5 x 10%: allowed; 16% is not.
    let ok = judge_rate(Some(&tally), "same", Some("old"), limit).unwrap();
    assert!(
        ok.contains("15.0% of 100") && ok.contains("10.0% of 200"),
        "{ok}"
    );
    let bad = judge_rate(Some(&tally), "worse", Some("old"), limit).unwrap_err();
    assert!(bad.contains("16.0%") && bad.contains("1.5x"), "{bad}");
    // Too few faces on either side, no previous bundle, or no tally: noted, not judged.
    for (new, previous, tally) in [
        ("new-idle", Some("old"), Some(&tally)),
        ("worse", Some("unknown"), Some(&tally)),
        ("worse", None, Some(&tally)),
        ("worse", Some("old"), None),
    ] {
        let note = judge_rate(tally, new, previous, limit).unwrap();
        assert!(note.starts_with("rate not judged"), "{note}");
    }
}
