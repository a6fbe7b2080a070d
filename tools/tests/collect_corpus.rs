//! The collect path over hostile segments: whatever a board's log folder holds, `collect`
//! never panics, keeps what it cannot read on the board, and leaves a `records.jsonl` that the
//! next collect, `fer dataset` and retraining can read.
//!
//! The segments are a fixed set of crafted entries (sizes that wrap, NaN and infinities, a
//! device id longer than a file name, a stray seal) and random payloads behind a correct CRC. `scripts/fuzz.sh` runs this test again over the
//! `framed_payload` fuzzer's corpus (`FER_FUZZ_CORPUS`).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use firmware_config::Sha256Digest;
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use firmware_config::record::FieldRecord;
use firmware_config::segment::{self, SegmentHeader};
use tools::board::Board;
use tools::collect::{self, CollectOptions, RECORDS_FILE};

fn record(seq: u64) -> FieldRecord {
    FieldRecord {
        timestamp_ms: 1_700_000_000_000 + seq,
        device_id: "board-1".into(),
        model_sha256: Sha256Digest([3; 32]),
        frame_seq: seq,
        track_id: 1,
        face: FaceBox {
            x: 1.0,
            y: 2.0,
            width: 8.0,
            height: 8.0,
        },
        probabilities: vec![0.5, 0.3, 0.2],
        crop: ImageBuf::new(2, 2, PixelFormat::Gray8, vec![1, 2, 3, 4]).unwrap(),
        frame: None,
    }
}

/// A record entry (variant 0) framed whatever it holds.
fn crafted(record: &FieldRecord) -> Vec<u8> {
    let mut payload = vec![0u8];
    payload.extend(postcard::to_allocvec(record).unwrap());
    payload
}

/// The payloads to frame: `FER_FUZZ_CORPUS`'s files, else crafted records and seeded noise.
fn payloads() -> Vec<Vec<u8>> {
    if let Some(dir) = std::env::var_os("FER_FUZZ_CORPUS") {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("FER_FUZZ_CORPUS={}: {e}", Path::new(&dir).display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        eprintln!(
            "{} corpus inputs from {}",
            files.len(),
            Path::new(&dir).display()
        );
        return files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    }
    let mut wraps = record(10);
    wraps.crop = ImageBuf {
        width: 4_294_853_786,
        height: 1_431_693_603,
        format: PixelFormat::Rgb8,
        pixels: vec![0; 41_258],
    };
    let mut nan = record(11);
    nan.probabilities[2] = f32::NAN;
    let mut infinite = record(12);
    infinite.face.x = f32::NEG_INFINITY;
    let mut long_id = record(13);
    long_id.device_id = "b".repeat(300);
    // A seal entry (variant 1) counting the one record before it: not the segment's end.
    let stray_seal = vec![1, 1];
    let mut out = vec![
        crafted(&wraps),
        crafted(&nan),
        crafted(&infinite),
        crafted(&long_id),
        stray_seal,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in [0usize, 1, 2, 7, 64, 300] {
        let mut noise = crafted(&record(20 + len as u64));
        for byte in noise.iter_mut().skip(1).take(len) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte ^= state as u8;
        }
        out.push(noise);
    }
    out
}

#[test]
fn hostile_segments_never_wedge_collect() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let into = tmp.path().join("collected");
    let payloads = payloads();
    // Every payload gets a segment of its own, between two good records and sealed, so a good
    // record is never lost to its neighbour.
    for (i, payload) in payloads.iter().enumerate() {
        let header = SegmentHeader {
            device_id: "board-1".into(),
            created_ms: 0,
            sequence: i as u64,
        };
        let mut file = segment::encode_header(&header).unwrap();
        file.extend(segment::encode_record(&record(2 * i as u64)).unwrap());
        file.extend(segment::frame_payload(payload.clone()));
        file.extend(segment::encode_record(&record(2 * i as u64 + 1)).unwrap());
        file.extend(segment::encode_seal(3));
        std::fs::write(log.join(format!("seg-{i:010}.ferlog")), file).unwrap();
    }
    let board = Board::Dir(tmp.path().join("board"));
    let options = CollectOptions {
        log_dir: Some(log.clone()),
        accept_damaged: true,
        board_lock_wait: None,
    };
    for round in 0..2 {
        let report = collect::collect(&board, &into, &options, &mut |_| ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        if round == 0 {
            assert!(report.records_new >= 2 * payloads.len(), "{report:?}");
        } else {
            assert_eq!(report.records_new, 0, "{report:?}");
        }
        // The metadata stays readable (no NaN written as null, no torn line) and holds every
        // good record, whatever its neighbour was.
        let ids = collect::known_ids(&into.join(RECORDS_FILE)).unwrap();
        for seq in 0..2 * payloads.len() as u64 {
            let id = collect::record_id(&record(seq)).unwrap();
            assert!(ids.contains(&id), "good record {seq} was lost");
        }
    }
    for line in std::fs::read_to_string(into.join(RECORDS_FILE))
        .unwrap()
        .lines()
    {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["face", "probabilities"] {
            let numbers = value[field].as_array().unwrap();
            assert!(
                numbers.iter().all(serde_json::Value::is_number),
                "a non-finite number reached records.jsonl: {line}"
            );
        }
    }
}
