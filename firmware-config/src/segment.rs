//! The field-log segment file: how boards store [`FieldRecord`]s and workstations read them.
//!
//! ```text
//! "FERL" | schema version (u16 LE) | header frame | record frame | ... | seal frame
//! frame = COBS(postcard(value) ++ CRC32 LE) ++ 0x00
//! ```
//!
//! A frame never contains a zero byte before its end, so after damage a reader skips to the
//! next zero and carries on: [`read_segment`] returns every intact record and reports where it
//! skipped and why. The seal frame, written when the board closes a segment, carries the record
//! count: a segment without it was cut short (or is still being written).
//!
//! ```
//! use firmware_config::segment::{self, SegmentHeader};
//!
//! let header = SegmentHeader { device_id: "board-7".into(), created_ms: 1, sequence: 0 };
//! let mut file = segment::encode_header(&header)?;
//! file.extend(segment::encode_seal(0));
//! let scan = segment::read_segment(&file)?;
//! assert!(scan.sealed && scan.records.is_empty() && scan.skipped.is_empty());
//! # Ok::<(), firmware_config::Error>(())
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::framing::{check_crc, check_prefix, cobs_decode, cobs_frame, push_prefix, with_crc};
use crate::record::FieldRecord;

/// The first bytes of every segment file.
pub const MAGIC: [u8; 4] = *b"FERL";
/// The largest segment a reader accepts: `field_log.segment_bytes` is at most half of it, and
/// one record (a crop and a frame) fits in the other half. A workstation never downloads or
/// reads more than this from a board.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes before the header frame: magic and schema version.
pub use crate::framing::PREFIX_LEN;

/// Who wrote a segment, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// The board's device id.
    pub device_id: String,
    /// Milliseconds since the Unix epoch when the segment was opened.
    pub created_ms: u64,
    /// Position of the segment in the board's log (0, 1, 2, ...).
    pub sequence: u64,
}

#[derive(Serialize)]
enum EntryRef<'a> {
    Record(&'a FieldRecord),
    Seal { records: u64 },
}

/// The same variants, in the same order, as [`EntryRef`].
#[derive(Deserialize)]
enum Entry {
    Record(FieldRecord),
    Seal { records: u64 },
}

/// The magic, schema version and header frame that open a segment file.
pub fn encode_header(header: &SegmentHeader) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    push_prefix(&mut out, MAGIC);
    out.extend(frame(header, "segment header")?);
    Ok(out)
}

/// One record as a self-delimiting frame, to append to a segment.
pub fn encode_record(record: &FieldRecord) -> Result<Vec<u8>, Error> {
    record.validate()?;
    frame(&EntryRef::Record(record), "field record")
}

/// The frame that closes a segment holding `records` records.
pub fn encode_seal(records: u64) -> Vec<u8> {
    // A two-field enum of integers always serialises.
    frame(&EntryRef::Seal { records }, "segment seal").unwrap_or_default()
}

fn frame<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, Error> {
    let payload = postcard::to_allocvec(value).map_err(|e| Error::malformed(what, e))?;
    Ok(frame_payload(payload))
}

/// Frames any payload the way records are framed (CRC, then COBS), whatever it holds: lets
/// fuzzers and tests reach the decoder behind the CRC with bytes no writer would produce.
pub fn frame_payload(payload: Vec<u8>) -> Vec<u8> {
    cobs_frame(&with_crc(payload))
}

/// A stretch of a segment that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// Byte offset of the stretch in the file.
    pub offset: usize,
    /// Its length in bytes.
    pub length: usize,
    /// Why it was skipped.
    pub reason: Error,
}

/// What [`read_segment`] found in a segment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SegmentScan {
    /// The header, unless its frame was damaged.
    pub header: Option<SegmentHeader>,
    /// Every intact record, in file order.
    pub records: Vec<FieldRecord>,
    /// Every damaged stretch, in file order.
    pub skipped: Vec<Skipped>,
    /// `true` when a seal frame with the matching record count ends the segment.
    pub sealed: bool,
    /// Length of the file up to the end of the last intact frame: a writer reopening a segment
    /// cuts a torn tail here.
    pub valid_len: usize,
}

impl SegmentScan {
    /// `true` when the segment is sealed and nothing was skipped.
    pub fn is_intact(&self) -> bool {
        self.sealed && self.skipped.is_empty() && self.header.is_some()
    }
}

/// Reads a segment file, recovering every intact record.
///
/// Fails only where the file cannot be read at all: fewer than [`PREFIX_LEN`] bytes, another
/// magic, or another schema version. Everything else is reported in [`SegmentScan::skipped`].
pub fn read_segment(bytes: &[u8]) -> Result<SegmentScan, Error> {
    check_prefix(bytes, MAGIC, PREFIX_LEN)?;
    let mut scan = SegmentScan {
        header: None,
        records: Vec::new(),
        skipped: Vec::new(),
        sealed: false,
        valid_len: PREFIX_LEN,
    };
    let mut at = PREFIX_LEN;
    let mut first = true;
    // Where the last accepted seal frame lies: an entry after it shows the seal was not the end.
    let mut seal_at = None;
    while at < bytes.len() {
        let Some(len) = bytes[at..].iter().position(|&b| b == 0) else {
            scan.skipped.push(Skipped {
                offset: at,
                length: bytes.len() - at,
                reason: Error::Truncated {
                    needed: bytes.len() - at + 1,
                    available: bytes.len() - at,
                },
            });
            break;
        };
        let end = at + len + 1;
        let outcome = if first {
            decode_frame::<SegmentHeader>(&bytes[at..at + len], "segment header").map(|h| {
                scan.header = Some(h);
            })
        } else {
            decode_frame::<Entry>(&bytes[at..at + len], "segment entry").and_then(|entry| {
                if let Some((offset, length)) = seal_at.take().filter(|_| scan.sealed) {
                    unseal(&mut scan, offset, length);
                }
                let is_seal = matches!(entry, Entry::Seal { .. });
                accept(&mut scan, entry)?;
                if is_seal {
                    seal_at = Some((at, end - at));
                }
                Ok(())
            })
        };
        match outcome {
            Ok(()) => scan.valid_len = end,
            Err(reason) => scan.skipped.push(Skipped {
                offset: at,
                length: end - at,
                reason,
            }),
        }
        first = false;
        at = end;
    }
    Ok(scan)
}

/// A seal followed by more entries did not end the segment: it is reported as a skipped stretch
/// and the records after it are still recovered, so a stray seal never hides a record.
fn unseal(scan: &mut SegmentScan, offset: usize, length: usize) {
    scan.sealed = false;
    let at = scan.skipped.partition_point(|s| s.offset < offset);
    scan.skipped.insert(
        at,
        Skipped {
            offset,
            length,
            reason: Error::invalid("segment seal", "more entries follow it"),
        },
    );
}

fn accept(scan: &mut SegmentScan, entry: Entry) -> Result<(), Error> {
    match entry {
        Entry::Record(record) => {
            record.validate()?;
            scan.records.push(record);
        }
        Entry::Seal { records } => {
            if records != scan.records.len() as u64 {
                return Err(Error::invalid(
                    "segment seal",
                    alloc::format!(
                        "seals {records} records but {} were read intact",
                        scan.records.len()
                    ),
                ));
            }
            scan.sealed = true;
        }
    }
    Ok(())
}

fn decode_frame<T: for<'de> Deserialize<'de>>(body: &[u8], what: &'static str) -> Result<T, Error> {
    if body.is_empty() {
        return Err(Error::Truncated {
            needed: 1,
            available: 0,
        });
    }
    let decoded = cobs_decode(body).ok_or_else(|| Error::Malformed {
        what,
        detail: "invalid COBS framing".into(),
    })?;
    let payload = check_crc(&decoded)?;
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|e| Error::malformed(what, e))?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what,
            detail: alloc::format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}
