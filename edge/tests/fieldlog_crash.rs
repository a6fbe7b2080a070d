//! The field log under crashes, a full disk, the quota, rate limits and de-duplication.
//!
//! The crash test re-executes this test binary as a writer that `abort()`s in the middle of
//! the write passing byte k (a power cut), for hundreds of k, and checks what survives.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge::fieldlog::{Clock, Faults, FieldLog, MAX_TRACKS, Outcome, list_segments};
use firmware_config::Sha256Digest;
use firmware_config::config::FieldLogConfig;
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use firmware_config::record::FieldRecord;
use firmware_config::segment;

const CHILD_DIR: &str = "FER_FIELDLOG_CHILD_DIR";
const CHILD_ABORT: &str = "FER_FIELDLOG_CHILD_ABORT_AFTER";
const CRASH_TEST: &str = "field_log_keeps_every_acknowledged_record_across_hundreds_of_kill_points";
const RECORDS: u64 = 30;
const SEGMENT: u64 = 2048;
const QUOTA: u64 = 8000;

// The contract's structs are non-exhaustive: no struct literals outside their crate.
#[allow(clippy::field_reassign_with_default)]
fn config(dir: &Path, segment_bytes: u64, quota_bytes: u64) -> FieldLogConfig {
    let mut c = FieldLogConfig::default();
    c.directory = dir.display().to_string();
    c.segment_bytes = segment_bytes;
    c.quota_bytes = quota_bytes;
    c.max_records_per_minute = 0;
    c.dedup_window_ms = 0;
    c
}

/// Record `i`: every field derived from `i`, so a reader can check it byte for byte.
fn record(i: u64) -> FieldRecord {
    let crop: Vec<u8> = (0..16 * 16)
        .map(|p| (p as u64 * 7 + i * 13) as u8)
        .collect();
    FieldRecord {
        timestamp_ms: 1_000_000 + i * 1000,
        device_id: "crash-board".into(),
        model_sha256: Sha256Digest([i as u8; 32]),
        frame_seq: i,
        track_id: i as u32,
        face: FaceBox {
            x: i as f32,
            y: 2.0,
            width: 16.0,
            height: 16.0,
        },
        probabilities: vec![0.25, 0.25, 0.5 - i as f32 * 1e-3, i as f32 * 1e-3],
        crop: ImageBuf::new(16, 16, PixelFormat::Gray8, crop).unwrap(),
        frame: None,
    }
}

/// The crash writer: logs the records, printing `ACK i` after each acknowledged one.
fn child(dir: &Path, abort_after: u64) -> ! {
    let faults = Faults {
        abort_after_bytes: Some(abort_after),
        ..Faults::default()
    };
    let mut log =
        FieldLog::open_with_faults(&config(dir, SEGMENT, QUOTA), "crash-board", faults).unwrap();
    let mut out = std::io::stdout().lock();
    // The test harness has printed "test NAME ... " without a newline: end that line first.
    writeln!(out).unwrap();
    for i in 0..RECORDS {
        match log.log(&record(i)).unwrap() {
            Outcome::Written { .. } => writeln!(out, "ACK {i}").unwrap(),
            Outcome::QuotaFull => writeln!(out, "QUOTA {i}").unwrap(),
            other => panic!("unexpected {other:?}"),
        }
        out.flush().unwrap();
    }
    log.close().unwrap();
    writeln!(out, "CLOSED").unwrap();
    out.flush().unwrap();
    std::process::exit(0);
}

fn folder_bytes(dir: &Path) -> u64 {
    list_segments(dir).unwrap().iter().map(|s| s.2).sum()
}

/// Every record in the folder, checked against [`record`], with whether each segment is intact.
fn read_back(dir: &Path) -> (BTreeSet<u64>, bool) {
    let mut seen = BTreeSet::new();
    let mut intact = true;
    for (_, path, _) in list_segments(dir).unwrap() {
        let scan = match segment::read_segment(&std::fs::read(&path).unwrap()) {
            Ok(scan) => scan,
            // Killed while writing the header: the segment never held a record.
            Err(firmware_config::Error::Truncated { .. }) => {
                intact = false;
                continue;
            }
            Err(e) => panic!("{}: {e}", path.display()),
        };
        intact &= scan.is_intact();
        for r in scan.records {
            assert_eq!(
                r,
                record(r.frame_seq),
                "record {} read back changed",
                r.frame_seq
            );
            assert!(
                seen.insert(r.frame_seq),
                "record {} read twice",
                r.frame_seq
            );
        }
    }
    (seen, intact)
}

#[test]
fn field_log_keeps_every_acknowledged_record_across_hundreds_of_kill_points() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let k = std::env::var(CHILD_ABORT).unwrap().parse().unwrap();
        child(Path::new(&dir), k);
    }
    let exe = std::env::current_exe().unwrap();
    // Every 19 bytes over the whole run (headers, records, seals, rotations, the quota) and
    // past its end; four kill points at a time, as fsync dominates.
    let points: Vec<u64> = (0..QUOTA + 200).step_by(19).collect();
    let results: Vec<(bool, bool)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (exe, points) = (&exe, &points);
                s.spawn(move || {
                    points
                        .iter()
                        .skip(w)
                        .step_by(4)
                        .map(|&k| kill_at(exe, k))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let kill_points = results.iter().filter(|r| !r.0).count();
    assert!(kill_points >= 400, "only {kill_points} kill points");
    assert!(
        results.iter().any(|r| r.1),
        "the runs never reached the quota"
    );
}

/// Runs the writer until it aborts in the write passing byte `k`, checks the folder, restarts
/// the log on it and checks again. Returns (writer finished, writer reached the quota).
fn kill_at(exe: &Path, k: u64) -> (bool, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let out = Command::new(exe)
        .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &dir)
        .env(CHILD_ABORT, k.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acked: BTreeSet<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ACK ")?.parse().ok())
        .collect();
    let closed = stdout.lines().any(|l| l == "CLOSED");
    let quota_reached = stdout.lines().any(|l| l.starts_with("QUOTA "));
    // Either it finished, or it died by abort() (SIGABRT) in the middle of a write.
    assert!(
        closed || out.status.signal() == Some(6),
        "k={k}: the writer failed otherwise ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        folder_bytes(&dir) <= QUOTA,
        "k={k}: the folder passed the quota"
    );
    let (found, _) = read_back(&dir);
    assert_eq!(
        found, acked,
        "k={k}: what survives must be exactly what was acknowledged"
    );

    // Restart: the torn tail is cut, every segment sealed, nothing acknowledged lost.
    let mut log = FieldLog::open(&config(&dir, SEGMENT, QUOTA), "crash-board").unwrap();
    if k.is_multiple_of(10) {
        let next = acked.last().map_or(0, |a| a + 1) + 1000;
        let outcome = log.log(&record(next)).unwrap();
        let mut expected = acked.clone();
        if matches!(outcome, Outcome::Written { .. }) {
            expected.insert(next);
        }
        log.close().unwrap();
        assert_eq!(
            read_back(&dir).0,
            expected,
            "k={k}: writing after the restart"
        );
    } else {
        log.close().unwrap();
    }
    let (after, intact) = read_back(&dir);
    assert!(after.is_superset(&acked), "k={k}: the restart lost records");
    assert!(
        intact,
        "k={k}: a segment is torn or unsealed after the restart"
    );
    assert!(
        folder_bytes(&dir) <= QUOTA,
        "k={k}: the restart passed the quota"
    );
    (closed, quota_reached)
}

#[test]
fn full_disk_pauses_logging_and_keeps_earlier_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let faults = Faults {
        enospc_after_bytes: Some(2000),
        ..Faults::default()
    };
    let mut log =
        FieldLog::open_with_faults(&config(&dir, 1 << 20, 1 << 22), "board", faults).unwrap();
    let mut acked = BTreeSet::new();
    let mut i = 0;
    let full_at = loop {
        match log.log(&record(i)).unwrap() {
            Outcome::Written { .. } => acked.insert(i),
            Outcome::DiskFull => break i,
            other => panic!("{other:?}"),
        };
        i += 1;
    };
    assert!(!acked.is_empty() && full_at < 10);
    let paused = log.stats().paused.clone().unwrap();
    assert!(
        paused.contains("disk full") && paused.contains("log"),
        "{paused}"
    );
    // Within the retry window nothing is attempted; the refusals are counted.
    assert_eq!(log.log(&record(full_at + 1)).unwrap(), Outcome::DiskFull);
    assert_eq!(log.stats().disk_full_refused, 2);
    // The partial frame was cut off again: the file is exactly the acknowledged records.
    let (_, path, _) = list_segments(&dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let scan = segment::read_segment(&bytes).unwrap();
    assert_eq!(scan.valid_len, bytes.len());
    assert!(scan.skipped.is_empty());
    assert_eq!(read_back(&dir).0, acked);
    // Sealing needs space too: close says so, and the next start seals it.
    let err = log.close().unwrap_err().to_string();
    assert!(err.contains("disk full"), "{err}");
    FieldLog::open(&config(&dir, 1 << 20, 1 << 22), "board")
        .unwrap()
        .close()
        .unwrap();
    let (after, intact) = read_back(&dir);
    assert_eq!(after, acked);
    assert!(intact);
}

#[test]
fn quota_pauses_until_segments_are_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let cfg = config(&dir, 1024, 4096);
    let mut log = FieldLog::open(&cfg, "board").unwrap();
    let clock = Arc::new(AtomicU64::new(0));
    log.set_clock(Clock::Manual(clock.clone()));
    let mut i = 0;
    while matches!(log.log(&record(i)).unwrap(), Outcome::Written { .. }) {
        i += 1;
    }
    let refused_at = i;
    assert!(refused_at > 5, "only {refused_at} records fit");
    assert!(folder_bytes(&dir) <= 4096);
    assert_eq!(log.stats().quota_refused, 1);
    assert!(log.stats().paused.as_deref().unwrap().contains("quota"));
    // `fer collect` removes the oldest sealed segment; the writer notices on its next rescan.
    let (_, oldest, _) = list_segments(&dir).unwrap().remove(0);
    std::fs::remove_file(oldest).unwrap();
    clock.store(edge::fieldlog::QUOTA_RESCAN_MS, Ordering::SeqCst);
    assert!(matches!(
        log.log(&record(refused_at)).unwrap(),
        Outcome::Written { .. }
    ));
    assert_eq!(log.stats().paused, None);
    log.close().unwrap();
    assert!(folder_bytes(&dir) <= 4096);
}

#[test]
fn rate_limit_and_per_track_dedup_follow_the_monotonic_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("log"), 1 << 20, 1 << 22);
    cfg.max_records_per_minute = 3;
    cfg.dedup_window_ms = 5_000;
    let mut log = FieldLog::open(&cfg, "board").unwrap();
    let clock = Arc::new(AtomicU64::new(0));
    log.set_clock(Clock::Manual(clock.clone()));
    // The record's own (wall-clock) time runs backwards here; only the monotonic one counts.
    let at = |track: u32, ms: u64| {
        clock.store(ms, Ordering::SeqCst);
        let mut r = record(u64::from(track));
        r.track_id = track;
        r.timestamp_ms = 1_000_000_000 - ms;
        r
    };
    assert!(matches!(
        log.log(&at(1, 0)).unwrap(),
        Outcome::Written { .. }
    ));
    assert_eq!(log.log(&at(1, 4_999)).unwrap(), Outcome::Duplicate);
    assert!(matches!(
        log.log(&at(1, 5_000)).unwrap(),
        Outcome::Written { .. }
    ));
    assert!(matches!(
        log.log(&at(2, 5_001)).unwrap(),
        Outcome::Written { .. }
    ));
    assert_eq!(log.log(&at(3, 5_002)).unwrap(), Outcome::RateLimited);
    // A minute after the first record, one slot is free again.
    assert!(matches!(
        log.log(&at(3, 60_000)).unwrap(),
        Outcome::Written { .. }
    ));
    let stats = log.close().unwrap();
    assert_eq!(
        (stats.written, stats.deduplicated, stats.rate_limited),
        (4, 1, 1)
    );
    cfg.enabled = false;
    let mut off = FieldLog::open(&cfg, "board").unwrap();
    assert_eq!(off.log(&at(9, 0)).unwrap(), Outcome::Disabled);
}

#[test]
fn a_foreign_or_newer_newest_segment_does_not_stop_logging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seg-0000000003.ferlog"), b"PK\x03\x04 a zip file").unwrap();
    // A segment from a newer schema: right magic, a version this build does not know.
    let mut newer = segment::MAGIC.to_vec();
    newer.extend([0xff, 0x7f]);
    std::fs::write(dir.join("seg-0000000001.ferlog"), &newer).unwrap();
    let mut log = FieldLog::open(&config(&dir, 4096, 16_000), "board").unwrap();
    assert!(matches!(
        log.log(&record(1)).unwrap(),
        Outcome::Written { .. }
    ));
    let stats = log.close().unwrap();
    assert_eq!(stats.moved_aside.len(), 1, "{stats:?}");
    assert!(
        stats.moved_aside[0].contains("seg-0000000003.ferlog"),
        "{stats:?}"
    );
    // Nothing is deleted: the foreign file is kept beside the log, renamed.
    assert_eq!(
        std::fs::read(dir.join("seg-0000000003.ferlog.damaged")).unwrap(),
        b"PK\x03\x04 a zip file"
    );
    // The new record went to a new segment after the one moved aside.
    let new: Vec<_> = list_segments(&dir)
        .unwrap()
        .into_iter()
        .filter(|(seq, _, _)| *seq > 3)
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let scan = segment::read_segment(&std::fs::read(&new[0].1).unwrap()).unwrap();
    assert_eq!(scan.records, vec![record(1)]);
}

#[test]
fn a_nan_probability_from_a_broken_model_does_not_stop_logging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut log = FieldLog::open(&config(&dir, 1 << 20, 1 << 22), "board").unwrap();
    let mut broken = record(1);
    broken.probabilities[0] = f32::NAN;
    assert_eq!(log.log(&broken).unwrap(), Outcome::Invalid);
    assert!(matches!(
        log.log(&record(2)).unwrap(),
        Outcome::Written { .. }
    ));
    let stats = log.close().unwrap();
    assert_eq!((stats.written, stats.invalid), (1, 1));
    let (seqs, _) = read_back(&dir);
    assert_eq!(seqs, BTreeSet::from([2]));
}

#[test]
fn a_failing_log_folder_pauses_logging_instead_of_stopping_the_board() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut log = FieldLog::open(&config(&dir, 1 << 20, 1 << 22), "board").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(log.log_or_pause(&record(1)), Outcome::Failed);
    assert!(log.stats().paused.is_some(), "{:?}", log.stats());
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(
        log.log_or_pause(&record(2)),
        Outcome::Written { .. }
    ));
    assert_eq!(log.stats().paused, None);
    let stats = log.close().unwrap();
    assert_eq!((stats.written, stats.failed), (1, 1));
}

#[test]
fn a_wall_clock_stepping_back_does_not_silence_logging() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("log"), 1 << 20, 1 << 22);
    cfg.dedup_window_ms = 5_000;
    cfg.max_records_per_minute = 0;
    let mut log = FieldLog::open(&cfg, "board").unwrap();
    let clock = Arc::new(AtomicU64::new(0));
    log.set_clock(Clock::Manual(clock.clone()));
    // One track, a record every 6 s of real time, while the board's clock is stepped back an
    // hour (NTP on a board without an RTC): every record is a new one.
    for i in 0..5u64 {
        clock.store(i * 6_000, Ordering::SeqCst);
        let mut r = record(i);
        r.track_id = 7;
        r.timestamp_ms = 1_700_000_000_000 - i * 3_600_000;
        assert!(
            matches!(log.log(&r).unwrap(), Outcome::Written { .. }),
            "record {i}"
        );
    }
    // The per-track memory stays bounded however many tracks pass.
    for track in 0..(MAX_TRACKS as u32 + 50) {
        clock.store(40_000 + u64::from(track), Ordering::SeqCst);
        let mut r = record(100);
        r.track_id = 1000 + track;
        log.log(&r).unwrap();
        assert!(log.remembered_tracks() <= MAX_TRACKS);
    }
    log.close().unwrap();
}
