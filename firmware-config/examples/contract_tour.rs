//! A tour of the board contract: a config flashed and read back, a field-log segment written,
//! damaged and recovered.
//!
//! `cargo run -p firmware-config --example contract_tour [OUT_DIR]` writes `device.fercfg` and
//! `field-000000.ferlog` to OUT_DIR (default: a fresh temporary directory) and prints what a
//! board and a workstation would see.

use std::path::PathBuf;

use firmware_config::config::DeviceConfig;
use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use firmware_config::record::FieldRecord;
use firmware_config::segment::{self, SegmentHeader};
use firmware_config::{Sha256Digest, flash};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("fer-contract-tour-{}", std::process::id())),
    };
    std::fs::create_dir_all(&out)?;

    let config = DeviceConfig::default();
    let encoded = flash::encode_config(&config)?;
    let config_path = out.join("device.fercfg");
    std::fs::write(&config_path, &encoded)?;
    let read_back = flash::decode_config(&std::fs::read(&config_path)?)?;
    println!(
        "config: {} bytes flashed to {}, read back identical: {}",
        encoded.len(),
        config_path.display(),
        read_back == config
    );
    let mut future = encoded.clone();
    future[4] += 1;
    println!(
        "config from a newer toolkit: {}",
        flash::decode_config(&future).unwrap_err()
    );

    let header = SegmentHeader {
        device_id: config.device.id.clone(),
        created_ms: 1_763_800_000_000,
        sequence: 0,
    };
    let mut file = segment::encode_header(&header)?;
    let mut starts = Vec::new();
    for seq in 0..5u8 {
        starts.push(file.len());
        let crop = ImageBuf::new(48, 48, PixelFormat::Gray8, vec![seq * 40; 48 * 48])?;
        let record = FieldRecord {
            timestamp_ms: header.created_ms + u64::from(seq) * 1000,
            device_id: header.device_id.clone(),
            model_sha256: Sha256Digest([0xab; 32]),
            frame_seq: u64::from(seq) * 30,
            track_id: u32::from(seq),
            face: FaceBox {
                x: 100.0,
                y: 60.0,
                width: 90.0,
                height: 110.0,
            },
            probabilities: vec![0.38, 0.02, 0.05, 0.31, 0.14, 0.06, 0.04],
            crop,
            frame: None,
        };
        file.extend(segment::encode_record(&record)?);
    }
    file.extend(segment::encode_seal(5));
    let segment_path = out.join("field-000000.ferlog");
    std::fs::write(&segment_path, &file)?;
    let scan = segment::read_segment(&file)?;
    println!(
        "segment: {} records in {} bytes at {}, intact: {}",
        scan.records.len(),
        file.len(),
        segment_path.display(),
        scan.is_intact()
    );

    // One flipped byte inside the third record, then the file cut in the middle of the fifth.
    file[starts[2] + 100] ^= 0x40;
    file.truncate(starts[4] + 50);
    let scan = segment::read_segment(&file)?;
    println!(
        "damaged segment: {} intact records recovered, sealed: {}",
        scan.records.len(),
        scan.sealed
    );
    for skipped in &scan.skipped {
        println!(
            "  skipped {} bytes at offset {}: {}",
            skipped.length, skipped.offset, skipped.reason
        );
    }
    println!(
        "  a writer reopening it cuts the torn tail at byte {}",
        scan.valid_len
    );
    Ok(())
}
