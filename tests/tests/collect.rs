//! `fer collect` end to end: segments written by the board's real field-log writer, pulled
//! over a real sshd or from a local board folder, interrupted at every step and killed at
//! random moments, then run again: the workstation ends up with exactly the records the
//! board wrote, each once.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use edge::fieldlog::{FieldLog, Outcome};
use firmware_config::Sha256Digest;
use firmware_config::config::FieldLogConfig;
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use firmware_config::record::FieldRecord;
use tests::Sshd;
use tools::board::Board;
use tools::collect::{self, CollectOptions, RECORDS_FILE};

/// Writes `count` records with the board's field-log writer into `dir`, small segments so
/// there are many, and returns the ids of the acknowledged ones.
fn board_writes(dir: &Path, count: u32, first_ms: u64) -> BTreeSet<String> {
    let mut config = FieldLogConfig::default();
    config.directory = dir.to_string_lossy().into_owned();
    config.segment_bytes = 8192;
    config.quota_bytes = 64 << 20;
    config.max_records_per_minute = 0;
    config.dedup_window_ms = 0;
    let mut log = FieldLog::open(&config, "lab-board-1").unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..count {
        let pixels: Vec<u8> = (0..48 * 48)
            .map(|p| ((p as u32 * 7 + i * 13) % 251) as u8)
            .collect();
        let crop = ImageBuf::new(48, 48, PixelFormat::Gray8, pixels).unwrap();
        let face = FaceBox {
            x: 10.0 + i as f32,
            y: 20.0,
            width: 48.0,
            height: 48.0,
        };
        let record = FieldRecord {
            timestamp_ms: first_ms + u64::from(i) * 40,
            device_id: "lab-board-1".into(),
            model_sha256: Sha256Digest([9; 32]),
            frame_seq: u64::from(i),
            track_id: i % 3,
            face,
            probabilities: vec![0.4, 0.35, 0.25],
            crop,
            frame: None,
        };
        if let Outcome::Written { .. } = log.log(&record).unwrap() {
            ids.insert(collect::record_id(&record).unwrap());
        }
    }
    log.close().unwrap();
    ids
}

/// The ids in `records.jsonl`, asserting that none is there twice and every crop exists.
fn collected(into: &Path) -> BTreeSet<String> {
    let path = into.join(RECORDS_FILE);
    if !path.exists() {
        return BTreeSet::new();
    }
    let lines = collect::read_records(&path).unwrap();
    let ids: BTreeSet<String> = lines.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids.len(), lines.len(), "a record was written twice");
    for line in &lines {
        let crop = image::open(into.join(&line.crop)).unwrap();
        assert_eq!((crop.width(), crop.height()), (48, 48));
        assert_eq!(line.device_id, "lab-board-1");
    }
    ids
}

fn options(log_dir: &Path) -> CollectOptions {
    CollectOptions {
        log_dir: Some(log_dir.to_path_buf()),
        accept_damaged: false,
        board_lock_wait: None,
    }
}

#[test]
fn collect_stopped_at_every_step_then_rerun_neither_loses_nor_doubles() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("board/log");
    let board = Board::Dir(tmp.path().join("board"));
    let written = board_writes(&log_dir, 24, 1_700_000_000_000);
    assert_eq!(written.len(), 24);
    // A clean run to learn how many steps there are.
    let reference = tmp.path().join("reference");
    let mut steps = 0usize;
    let first = {
        let backup = tmp.path().join("backup");
        tools::board::copy_dir(&log_dir, &backup).unwrap();
        let report = collect::collect(&board, &reference, &options(&log_dir), &mut |_| {
            steps += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        tools::board::copy_dir(&backup, &log_dir).unwrap();
        report
    };
    assert_eq!(first.records_new, 24);
    assert!(first.segments_collected > 3, "{first:?}");
    assert_eq!(collected(&reference), written);
    // The crops join an unlabeled pool once, however often they are imported.
    let pool = tmp.path().join("pool");
    assert_eq!(
        tools::dataset::import_collected(&reference, &pool).unwrap(),
        (24, 0)
    );
    assert_eq!(
        tools::dataset::import_collected(&reference, &pool).unwrap(),
        (0, 24)
    );
    assert_eq!(tools::dataset::stats(&pool).unwrap().total(), 24);

    for stop_at in 0..steps {
        let into = tmp.path().join(format!("into-{stop_at}"));
        let backup = tmp.path().join("backup");
        let mut seen = 0usize;
        let err = collect::collect(&board, &into, &options(&log_dir), &mut |_| {
            seen += 1;
            if seen > stop_at {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
        assert!(matches!(err, tools::Error::Interrupted(_)), "{err}");
        // What the board still holds plus what the workstation has is everything, at once.
        let report = collect::collect(&board, &into, &options(&log_dir), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            collected(&into),
            written,
            "stopped after {stop_at} steps: {report:?}"
        );
        assert!(board.list_segments(&log_dir).unwrap().is_empty());
        tools::board::copy_dir(&backup, &log_dir).unwrap();
    }
}

#[test]
fn unsealed_and_damaged_segments_stay_on_the_board() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let board = Board::Dir(tmp.path().to_path_buf());
    let written = board_writes(&log_dir, 30, 1_700_000_000_000);
    let names = board.list_segments(&log_dir).unwrap();
    // Damage one byte in the middle of the second segment.
    let damaged = log_dir.join(&names[1]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&damaged, bytes).unwrap();
    let into = tmp.path().join("into");
    let err = collect::collect(&board, &into, &options(&log_dir), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(matches!(err, tools::Error::DamagedSegment { .. }), "{err}");
    assert!(err.to_string().contains(&names[1]), "{err}");
    assert_eq!(
        board.list_segments(&log_dir).unwrap(),
        vec![names[1].clone()]
    );
    let partial = collected(&into);
    assert!(partial.len() < written.len() && partial.is_subset(&written));

    let accept = CollectOptions {
        accept_damaged: true,
        ..options(&log_dir)
    };
    let report =
        collect::collect(&board, &into, &accept, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert!(board.list_segments(&log_dir).unwrap().is_empty());
    let all = collected(&into);
    assert!(
        all.is_subset(&written) && all.len() >= written.len() - 2,
        "{} of {}",
        all.len(),
        written.len()
    );
}

#[test]
fn collect_over_ssh_killed_at_random_moments_then_rerun() {
    let Some(sshd) = Sshd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("board");
    let log_dir = root.join("log");
    let written = board_writes(&log_dir, 80, 1_750_000_000_000);
    let into = tmp.path().join("into");
    let fer = tests::program("fer");
    let collect_cmd = || {
        let mut cmd = Command::new(&fer);
        cmd.arg("collect")
            .arg("--board")
            .arg(sshd.address(&root))
            .args(sshd.fer_args())
            .arg("--into")
            .arg(&into)
            .arg("--log-dir")
            .arg(&log_dir);
        cmd
    };
    // Kill runs at spread-out moments; a later run may finish before its kill.
    let mut kills = 0;
    for delay_ms in [30u64, 90, 150, 220, 300, 400, 520, 700] {
        // Its own process group, killed whole (with its ssh and scp), as a terminal's ^C or
        // a power cut would.
        let mut child = collect_cmd().process_group(0).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            let group = format!("-{}", child.id());
            let status = Command::new("kill")
                .args(["-KILL", "--", &group])
                .status()
                .unwrap();
            assert!(status.success());
            kills += 1;
        }
        child.wait().unwrap();
        let have = collected(&into);
        assert!(
            have.is_subset(&written),
            "a record the board never wrote appeared"
        );
    }
    let started = Instant::now();
    let out = collect_cmd().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{kills} runs killed; the final run took {:?}",
        started.elapsed()
    );
    assert_eq!(collected(&into), written);
    // Only the collect lock's file stays beside the log.
    assert!(
        Board::Dir(root.clone())
            .list_segments(&log_dir)
            .unwrap()
            .is_empty(),
        "segments left on the board"
    );

    // New records later: only they are added.
    let more = board_writes(&log_dir, 10, 1_760_000_000_000);
    let out = collect_cmd().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: HashSet<String> = collected(&into).into_iter().collect();
    assert_eq!(all.len(), written.len() + more.len());
}

#[test]
fn a_segment_name_reused_by_a_restarted_board_is_not_deleted_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("board/log");
    let board = Board::Dir(tmp.path().join("board"));
    let first = board_writes(&log_dir, 2, 1_700_000_000_000);
    // What the board writes after its log folder was emptied and it restarted: the same
    // segment name, seg-0000000000, with other records.
    let restarted = tmp.path().join("restarted");
    let second = board_writes(&restarted, 2, 1_710_000_000_000);
    let into = tmp.path().join("into");
    let report = collect::collect(&board, &into, &options(&log_dir), &mut |event| {
        if *event == collect::Event::Synced {
            std::fs::remove_dir_all(&log_dir).unwrap();
            tools::board::copy_dir(&restarted, &log_dir).unwrap();
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(collected(&into), first);
    assert_eq!(report.changed_on_board, ["seg-0000000000.ferlog"]);
    // The new segment is still there, and the next collect imports it.
    collect::collect(&board, &into, &options(&log_dir), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        collected(&into),
        first.union(&second).cloned().collect::<BTreeSet<_>>()
    );
}

#[test]
fn a_segment_the_board_moved_aside_is_reported_then_cleared_with_accept_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let board = Board::Dir(tmp.path().to_path_buf());
    let written = board_writes(&log_dir, 2, 1_700_000_000_000);
    let aside = "seg-0000000007.ferlog.damaged";
    std::fs::write(log_dir.join(aside), b"PK\x03\x04 not a segment").unwrap();
    let into = tmp.path().join("into");
    let err = collect::collect(&board, &into, &options(&log_dir), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(err.to_string().contains(aside), "{err}");
    assert_eq!(collected(&into), written);
    assert!(log_dir.join(aside).exists(), "kept on the board");

    let accept = CollectOptions {
        accept_damaged: true,
        ..options(&log_dir)
    };
    collect::collect(&board, &into, &accept, &mut |_| ControlFlow::Continue(())).unwrap();
    assert!(!log_dir.join(aside).exists(), "cleared from the board");
    assert_eq!(
        std::fs::read(into.join(collect::DAMAGED_DIR).join(aside)).unwrap(),
        b"PK\x03\x04 not a segment"
    );
    assert_eq!(collected(&into), written);
}

#[test]
fn two_collectors_of_one_board_never_run_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let board = Board::Dir(tmp.path().to_path_buf());
    let written = board_writes(&log_dir, 2, 1_700_000_000_000);
    // Another workstation (or another --into folder) is collecting this board.
    let other = board
        .lock_collect(&log_dir, Duration::from_millis(10))
        .unwrap();
    let brief = CollectOptions {
        board_lock_wait: Some(Duration::from_millis(200)),
        ..options(&log_dir)
    };
    let into = tmp.path().join("into");
    let err =
        collect::collect(&board, &into, &brief, &mut |_| ControlFlow::Continue(())).unwrap_err();
    assert!(err.to_string().contains("another `fer collect`"), "{err}");
    assert_eq!(board.list_segments(&log_dir).unwrap().len(), 1);
    drop(other);
    collect::collect(&board, &into, &brief, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(collected(&into), written);
}

#[test]
fn a_segment_too_large_to_be_one_is_never_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let board = Board::Dir(tmp.path().to_path_buf());
    let written = board_writes(&log_dir, 2, 1_700_000_000_000);
    // A hostile board's "segment" one byte over the cap (sparse: no disk used).
    let huge = "seg-0000000009.ferlog";
    std::fs::File::create(log_dir.join(huge))
        .unwrap()
        .set_len(firmware_config::segment::MAX_SEGMENT_BYTES + 1)
        .unwrap();
    let into = tmp.path().join("into");
    let err = collect::collect(&board, &into, &options(&log_dir), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(huge) && err.to_string().contains("more than a segment"),
        "{err}"
    );
    assert_eq!(collected(&into), written);
    assert!(log_dir.join(huge).exists(), "left on the board");
    assert!(
        std::fs::read_dir(&into).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".incoming")),
        "nothing of it downloaded"
    );
}

#[test]
fn a_hostile_board_over_ssh_cannot_wedge_or_flood_collect() {
    let Some(sshd) = Sshd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("board");
    let log_dir = root.join("log");
    let written = board_writes(&log_dir, 2, 1_700_000_000_000);
    // A "segment" over the size cap (sparse), and one the board moved aside.
    let huge = "seg-0000000008.ferlog";
    std::fs::File::create(log_dir.join(huge))
        .unwrap()
        .set_len(firmware_config::segment::MAX_SEGMENT_BYTES + 1)
        .unwrap();
    let aside = "seg-0000000009.ferlog.damaged";
    std::fs::write(log_dir.join(aside), b"not a segment").unwrap();
    let into = tmp.path().join("into");
    let fer = tests::program("fer");
    let collect = |extra: &[&str]| {
        Command::new(&fer)
            .arg("collect")
            .arg("--board")
            .arg(sshd.address(&root))
            .args(sshd.fer_args())
            .arg("--into")
            .arg(&into)
            .arg("--log-dir")
            .arg(&log_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = collect(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(firmware_config::exit_code::DAMAGED_SEGMENT.into()),
        "{stderr}"
    );
    assert!(stderr.contains(huge) || stderr.contains(aside), "{stderr}");
    assert_eq!(collected(&into), written);
    assert!(log_dir.join(huge).exists() && log_dir.join(aside).exists());
    // The oversized file was never downloaded.
    assert!(std::fs::read_dir(&into).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".incoming")
    }),);
    let out = collect(&["--accept-damaged"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !log_dir.join(aside).exists(),
        "cleared with --accept-damaged"
    );
    assert!(
        log_dir.join(huge).exists(),
        "never fetched, so never deleted"
    );
    assert_eq!(
        std::fs::read(into.join(collect::DAMAGED_DIR).join(aside)).unwrap(),
        b"not a segment"
    );
    assert_eq!(collected(&into), written);
}
