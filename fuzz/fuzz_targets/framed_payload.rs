//! Arbitrary payloads behind a correct CRC and COBS framing, after a valid segment header:
//! the part of the reader that the plain segment fuzzer almost never reaches. Whatever the
//! reader accepts must be collectable: sizes that match the pixels, finite numbers only.
#![no_main]

use firmware_config::segment::{self, SegmentHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let header = SegmentHeader {
        device_id: "fuzz".into(),
        created_ms: 0,
        sequence: 0,
    };
    let mut file = segment::encode_header(&header).expect("a header encodes");
    file.extend(segment::frame_payload(payload.to_vec()));
    let Ok(scan) = segment::read_segment(&file) else {
        return;
    };
    for record in &scan.records {
        record.validate().expect("an accepted record is valid");
        let pixels = u64::from(record.crop.width)
            * u64::from(record.crop.height)
            * record.crop.format.channels() as u64;
        assert_eq!(pixels, record.crop.pixels.len() as u64);
        assert!(record.probabilities.iter().all(|p| p.is_finite()));
        // What the workstation stores is what the board wrote.
        let again = segment::encode_record(record).expect("an accepted record re-encodes");
        assert!(!again.is_empty());
    }
});
