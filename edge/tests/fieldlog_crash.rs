//! The field log under crashes, a full disk, the quota, rate limits and de-duplication.
//!
//! The crash test re-executes this test binary as a writer that `abort()`s in the middle of
//! the write passing byte k (a power cut), for hundreds of k, and checks what survives.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use edge::fieldlog::{Faults, FieldLog, Outcome, list_segments};
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
    FieldRecord::new(
        1_000_000 + i * 1000,
        "crash-board".into(),
        Sha256Digest([i as u8; 32]),
        i,
        i as u32,
        FaceBox {
            x: i as f32,
            y: 2.0,
            width: 16.0,
            height: 16.0,
        },
        vec![0.25, 0.25, 0.5 - i as f32 * 1e-3, i as f32 * 1e-3],
        ImageBuf::new(16, 16, PixelFormat::Gray8, crop).unwrap(),
    )
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
    let later = |j: u64| {
        let mut r = record(j);
        r.timestamp_ms += edge::fieldlog::QUOTA_RESCAN_MS;
        r
    };
    assert!(matches!(
        log.log(&later(refused_at)).unwrap(),
        Outcome::Written { .. }
    ));
    assert_eq!(log.stats().paused, None);
    log.close().unwrap();
    assert!(folder_bytes(&dir) <= 4096);
}

#[test]
fn rate_limit_and_per_track_dedup_use_record_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("log"), 1 << 20, 1 << 22);
    cfg.max_records_per_minute = 3;
    cfg.dedup_window_ms = 5_000;
    let mut log = FieldLog::open(&cfg, "board").unwrap();
    let at = |track: u32, ms: u64| {
        let mut r = record(u64::from(track));
        r.track_id = track;
        r.timestamp_ms = ms;
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
fn a_foreign_file_in_the_log_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seg-0000000003.ferlog"), b"PK\x03\x04 a zip file").unwrap();
    let err = FieldLog::open(&config(&dir, 4096, 16_000), "board")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("seg-0000000003.ferlog") && err.contains("magic"),
        "{err}"
    );
}
