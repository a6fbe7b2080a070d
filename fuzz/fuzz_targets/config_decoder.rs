//! The flash decoders must never panic, and what they accept must encode and decode again.
#![no_main]

use firmware_config::flash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = flash::decode_config(data) {
        let bytes = flash::encode_config(&config).expect("an accepted config encodes");
        flash::decode_config(&bytes).expect("and decodes again");
    }
    if let Ok(manifest) = flash::decode_manifest(data) {
        let bytes = flash::encode_manifest(&manifest).expect("an accepted manifest encodes");
        flash::decode_manifest(&bytes).expect("and decodes again");
    }
});
