//! The segment reader must never panic, and what it accepts must hold together.
#![no_main]

use firmware_config::segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(scan) = segment::read_segment(data) {
        assert!(scan.valid_len <= data.len());
        for record in &scan.records {
            record.crop.validate().expect("an accepted record has a consistent crop");
        }
        // Re-reading the intact prefix finds the same records and no damage.
        let again = segment::read_segment(&data[..scan.valid_len]).expect("prefix re-reads");
        assert_eq!(again.records, scan.records);
        assert!(again.skipped.is_empty());
    }
});
