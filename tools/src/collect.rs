//! `fer collect`: pull finished field-log segments off a board into a dataset folder.
//!
//! The folder `INTO` gets `records.jsonl` (one provenance line per record), `crops/<device>/
//! <id>.png` (and `frames/<device>/<id>.png` where the board stored whole frames). A record's
//! id is the SHA-256 of its encoding, so it is the same on every run.
//!
//! Nothing is lost and nothing is doubled, wherever the process is killed:
//! * segments are copied into `INTO/.incoming-<pid>` (earlier runs' are removed) and checked
//!   with [`firmware_config::segment::read_segment`]; the newest segment, if unsealed, is still
//!   being written and stays on the board untouched; damaged ones (an older unsealed one, a
//!   frame that fails its CRC) stay too unless `--accept-damaged`;
//! * a record's image is written (temporary file, fsync, rename) before its JSONL line, and a
//!   line is appended only if its id is not in the file yet; a torn last line is cut off;
//! * segments are deleted on the board only after the JSONL file and the images are fsynced.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use edge::durable::sync_dir;
use firmware_config::preprocess::{ImageBuf, PixelFormat};
use firmware_config::record::FieldRecord;
use firmware_config::segment;
use image::ImageEncoder as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::board::Board;
use crate::error::{Error, Result};

/// The provenance file inside the collect folder.
pub const RECORDS_FILE: &str = "records.jsonl";
/// The folder inside the collect folder where `--accept-damaged` keeps the segments a board
/// had moved aside as unreadable.
pub const DAMAGED_DIR: &str = "damaged";
const INCOMING: &str = ".incoming";

/// One line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Stable record id: the first 32 hex digits of the SHA-256 of the record's encoding.
    pub id: String,
    /// The board that logged it.
    pub device_id: String,
    /// The model that was unsure (SHA-256 of its ONNX file).
    pub model_sha256: String,
    /// When, in milliseconds since the Unix epoch (board clock).
    pub timestamp_ms: u64,
    /// The same time as RFC 3339 UTC text.
    pub time: String,
    /// Frame number on the board.
    pub frame_seq: u64,
    /// Track of the face on the board.
    pub track_id: u32,
    /// The face box in the frame (pixels): x, y, width, height.
    pub face: [f32; 4],
    /// The model's class probabilities, in the manifest's class order.
    pub probabilities: Vec<f32>,
    /// Index of the most probable class.
    pub top_class: usize,
    /// Its probability.
    pub top_probability: f32,
    /// The crop, relative to the collect folder.
    pub crop: String,
    /// The whole frame, if the board stored it.
    pub frame: Option<String>,
    /// The segment file it came from.
    pub segment: String,
    /// The board address it was collected from.
    pub board: String,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectReport {
    /// Segments imported and deleted on the board.
    pub segments_collected: usize,
    /// Segments left on the board because they are still being written.
    pub segments_unsealed: usize,
    /// Records added to `records.jsonl`.
    pub records_new: usize,
    /// Records that were already there (an earlier, interrupted run).
    pub records_known: usize,
    /// Damaged segments kept on the board: name and reason.
    pub damaged: Vec<(String, String)>,
    /// Segments imported but left on the board because their contents changed between the
    /// fetch and the delete (the name was reused); the next collect reads them again.
    pub changed_on_board: Vec<String>,
}

/// What [`collect`] is doing, for progress bars (and for tests that stop it anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The board holds this many segments.
    Listed(usize),
    /// The segments were copied over.
    Fetched,
    /// A record's image and provenance line are written.
    Record(String),
    /// Images and `records.jsonl` are synced to disk.
    Synced,
    /// The collected segments were deleted on the board.
    Deleted(usize),
}

/// Options of [`collect`].
#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    /// The field-log folder on the board; default: the active config's `field_log.directory`.
    pub log_dir: Option<PathBuf>,
    /// Import the intact records of damaged segments and delete them, instead of keeping them.
    pub accept_damaged: bool,
    /// How long to wait for another collector of the same board; default [`BOARD_LOCK_WAIT`].
    pub board_lock_wait: Option<std::time::Duration>,
}

/// How long `collect` waits for another collector of the same board by default.
pub const BOARD_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A record's stable id.
pub fn record_id(record: &FieldRecord) -> Result<String> {
    let bytes = segment::encode_record(record)
        .map_err(|e| Error::invalid("field record", e.to_string()))?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..16]))
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-22T19:35:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn too_large(size: u64) -> String {
    format!(
        "{size} bytes, more than a segment can be ({}): not fetched or read",
        segment::MAX_SEGMENT_BYTES
    )
}

/// A fetched segment's bytes, or `None` when it holds more than a segment can (read no
/// further than that: the listing's size may have changed since).
fn read_capped(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| {
            f.take(segment::MAX_SEGMENT_BYTES + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| Error::io("reading", path, e))?;
    Ok((bytes.len() as u64 <= segment::MAX_SEGMENT_BYTES).then_some(bytes))
}

/// Reads the ids in `records.jsonl`, first cutting off a torn last line (a run killed while
/// appending); any other unreadable line is an error naming it.
pub fn known_ids(path: &Path) -> Result<HashSet<String>> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening", path, e))?;
        file.set_len(keep as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("cutting the torn last line of", path, e))?;
        bytes.truncate(keep);
    }
    let text = String::from_utf8(bytes).map_err(|_| Error::file(path, "not UTF-8 text"))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<Provenance>(line)
                .map(|p| p.id)
                .map_err(|e| {
                    Error::file(
                        path,
                        format!("line {}: {e} (fix or remove the line, then rerun)", i + 1),
                    )
                })
        })
        .collect()
}

/// Reads every line of `records.jsonl`.
pub fn read_records(path: &Path) -> Result<Vec<Provenance>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

fn safe_component(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = if clean.is_empty() || clean.starts_with('.') {
        format!("_{clean}")
    } else {
        clean
    };
    // A device id comes from the board: one longer than a file name may be must not make every
    // later collect fail. Cut, with a digest of the whole id so that cut ids stay apart.
    if clean.len() <= MAX_COMPONENT {
        return clean;
    }
    let digest = hex::encode(&Sha256::digest(text.as_bytes())[..6]);
    format!("{}-{digest}", &clean[..MAX_COMPONENT - digest.len() - 1])
}

/// The longest device folder name under `crops/` and `frames/` (ASCII after cleaning).
const MAX_COMPONENT: usize = 64;

/// Writes an image as PNG through a temporary file, fsync and rename.
fn write_png(path: &Path, image: &ImageBuf) -> Result<()> {
    let color = match image.format {
        PixelFormat::Gray8 => image::ExtendedColorType::L8,
        PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
        other => {
            return Err(Error::invalid(
                "image",
                format!("pixel format {other:?} cannot be saved as PNG"),
            ));
        }
    };
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&image.pixels, image.width, image.height, color)
        .map_err(|e| Error::file(path, format!("cannot encode PNG: {e}")))?;
    let tmp = path.with_extension("png.tmp");
    let mut file = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(&png)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}

/// Takes the folder's lock, waiting up to two seconds: a process forked just then (by this
/// program's own threads) holds a copy of the descriptor until it execs.
fn lock_briefly(lock: &File, path: &Path) -> Result<()> {
    if crate::board::lock_within(lock, path, std::time::Duration::from_secs(2))? {
        return Ok(());
    }
    Err(Error::file(
        path,
        "another `fer collect` is writing into this folder: wait for it to finish",
    ))
}

/// Removes the download folders of earlier runs (`.incoming-<pid>`).
fn remove_stale_incoming(into: &Path) -> Result<()> {
    for entry in fs::read_dir(into).map_err(|e| Error::io("listing", into, e))? {
        let path = entry.map_err(|e| Error::io("listing", into, e))?.path();
        let stale = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(INCOMING));
        if stale && path.is_dir() {
            fs::remove_dir_all(&path).map_err(|e| Error::io("removing", &path, e))?;
        }
    }
    Ok(())
}

fn stop(flow: ControlFlow<()>, at: &str) -> Result<()> {
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(Error::Interrupted(at.to_string())),
    }
}

/// Collects the board's finished segments into `into` (see the module docs for the
/// guarantees). `on_event` sees every step; returning `Break` stops right there, as a kill
/// would.
pub fn collect(
    board: &Board,
    into: &Path,
    options: &CollectOptions,
    on_event: &mut dyn FnMut(&Event) -> ControlFlow<()>,
) -> Result<CollectReport> {
    fs::create_dir_all(into).map_err(|e| Error::io("creating", into, e))?;
    let lock_path = into.join(".lock");
    let lock = File::create(&lock_path).map_err(|e| Error::io("creating", &lock_path, e))?;
    lock_briefly(&lock, &lock_path)?;

    let log_dir = match &options.log_dir {
        Some(dir) => dir.clone(),
        None => board.status()?.field_log_dir.ok_or_else(|| {
            Error::invalid(
                "board",
                format!(
                    "{} has no active bundle to read field_log.directory from: pass --log-dir",
                    board.address()
                ),
            )
        })?,
    };
    // One collector per board: two that collect into different folders must not import the
    // same segments, nor delete what the other has not recorded yet.
    let wait = options.board_lock_wait.unwrap_or(BOARD_LOCK_WAIT);
    let _board_lock = board.lock_collect(&log_dir, wait)?;
    let mut report = CollectReport::default();
    // A segment larger than any board writes is not fetched: a broken or hostile board must
    // not fill the workstation's disk or memory. It stays on the board, reported as damaged.
    let (names, oversized): (Vec<_>, Vec<_>) = board
        .list_segment_sizes(&log_dir)?
        .into_iter()
        .partition(|(_, size)| *size <= segment::MAX_SEGMENT_BYTES);
    for (name, size) in oversized {
        report.damaged.push((name, too_large(size)));
    }
    // Segments the board moved aside as unreadable stay there unless --accept-damaged, which
    // fetches them into DAMAGED_DIR for inspection and clears them from the board.
    let (aside, names): (Vec<_>, Vec<_>) = names
        .into_iter()
        .map(|(name, _)| name)
        .partition(|name| name.ends_with(edge::fieldlog::DAMAGED_SUFFIX));
    for name in &aside {
        report.damaged.push((
            name.clone(),
            "moved aside by the board as unreadable".to_string(),
        ));
    }
    let aside = if options.accept_damaged {
        aside
    } else {
        Vec::new()
    };
    let names: Vec<String> = names.into_iter().chain(aside).collect();
    stop(on_event(&Event::Listed(names.len())), "after listing")?;

    // A folder of this run's own: a killed run's leftover scp cannot write into it.
    remove_stale_incoming(into)?;
    let incoming = into.join(format!("{INCOMING}-{}", std::process::id()));
    fs::create_dir_all(&incoming).map_err(|e| Error::io("creating", &incoming, e))?;
    board.fetch(&log_dir, &names, &incoming)?;
    stop(on_event(&Event::Fetched), "after fetching")?;

    let records_path = into.join(RECORDS_FILE);
    let mut known = known_ids(&records_path)?;
    let mut jsonl = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&records_path)
        .map_err(|e| Error::io("opening", &records_path, e))?;
    let mut done = Vec::new();
    let mut image_dirs = HashSet::new();
    for name in &names {
        let path = incoming.join(name);
        if name.ends_with(edge::fieldlog::DAMAGED_SUFFIX) {
            let kept = into.join(DAMAGED_DIR);
            fs::create_dir_all(&kept).map_err(|e| Error::io("creating", &kept, e))?;
            let bytes = read_capped(&path)?.unwrap_or_default();
            fs::rename(&path, kept.join(name)).map_err(|e| Error::io("keeping", &path, e))?;
            image_dirs.insert(kept);
            done.push((name.clone(), hex::encode(Sha256::digest(&bytes))));
            continue;
        }
        let Some(bytes) = read_capped(&path)? else {
            report
                .damaged
                .push((name.clone(), too_large(segment::MAX_SEGMENT_BYTES + 1)));
            continue;
        };
        let scan = match segment::read_segment(&bytes) {
            Ok(scan) => scan,
            Err(e) => {
                report.damaged.push((name.clone(), e.to_string()));
                continue;
            }
        };
        // Only the newest segment may still be open for writing; the writer seals it later.
        // A torn tail (a frame without its end) is what a segment being written looks like.
        let newest = names.last() == Some(name);
        let torn_tail_only = scan.skipped.iter().all(|skip| {
            skip.offset + skip.length == bytes.len()
                && matches!(skip.reason, firmware_config::Error::Truncated { .. })
        });
        if newest && !scan.sealed && torn_tail_only {
            report.segments_unsealed += 1;
            continue;
        }
        if !scan.sealed || !scan.skipped.is_empty() || scan.header.is_none() {
            let reason = scan
                .skipped
                .iter()
                .map(|s| format!("{} bytes at offset {}: {}", s.length, s.offset, s.reason))
                .collect::<Vec<_>>()
                .join("; ");
            let reason = if scan.sealed {
                reason
            } else {
                format!("not sealed; {reason}")
            };
            report.damaged.push((name.clone(), reason));
            if !options.accept_damaged {
                continue;
            }
        }
        for record in &scan.records {
            let id = record_id(record)?;
            if known.contains(&id) {
                report.records_known += 1;
                continue;
            }
            let device = safe_component(&record.device_id);
            let crop_rel = format!("crops/{device}/{id}.png");
            let crop_dir = into.join("crops").join(&device);
            fs::create_dir_all(&crop_dir).map_err(|e| Error::io("creating", &crop_dir, e))?;
            write_png(&into.join(&crop_rel), &record.crop)?;
            image_dirs.insert(crop_dir);
            let frame_rel = match &record.frame {
                Some(frame) => {
                    let rel = format!("frames/{device}/{id}.png");
                    let dir = into.join("frames").join(&device);
                    fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
                    write_png(&into.join(&rel), frame)?;
                    image_dirs.insert(dir);
                    Some(rel)
                }
                None => None,
            };
            let (top_class, top_probability) = record.top().unwrap_or((0, 0.0));
            let line = Provenance {
                id: id.clone(),
                device_id: record.device_id.clone(),
                model_sha256: record.model_sha256.to_hex(),
                timestamp_ms: record.timestamp_ms,
                time: rfc3339(record.timestamp_ms),
                frame_seq: record.frame_seq,
                track_id: record.track_id,
                face: [
                    record.face.x,
                    record.face.y,
                    record.face.width,
                    record.face.height,
                ],
                probabilities: record.probabilities.clone(),
                top_class,
                top_probability,
                crop: crop_rel,
                frame: frame_rel,
                segment: name.clone(),
                board: board.address(),
            };
            let mut text = serde_json::to_string(&line)
                .map_err(|e| Error::invalid("record", e.to_string()))?;
            text.push('\n');
            // One write call per line: a kill leaves at most one torn line, cut on the next run.
            jsonl
                .write_all(text.as_bytes())
                .map_err(|e| Error::io("appending to", &records_path, e))?;
            known.insert(id.clone());
            report.records_new += 1;
            stop(on_event(&Event::Record(id)), "after a record")?;
        }
        done.push((name.clone(), hex::encode(Sha256::digest(&bytes))));
    }
    for dir in &image_dirs {
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    jsonl
        .sync_all()
        .map_err(|e| Error::io("syncing", &records_path, e))?;
    sync_dir(into)?;
    stop(on_event(&Event::Synced), "after syncing")?;

    // By name *and* content: a board whose log folder was emptied and restarted reuses the
    // names from seg-0000000000 on, and such a new segment must not be deleted unread.
    report.changed_on_board = board.delete_verified(&log_dir, &done)?;
    report.segments_collected = done.len() - report.changed_on_board.len();
    stop(on_event(&Event::Deleted(done.len())), "after deleting")?;
    fs::remove_dir_all(&incoming).map_err(|e| Error::io("removing", &incoming, e))?;

    if let Some((segment, reason)) = report.damaged.first().filter(|_| !options.accept_damaged) {
        return Err(Error::DamagedSegment {
            segment: match report.damaged.len() {
                1 => segment.clone(),
                n => format!("{segment} (and {} more)", n - 1),
            },
            reason: reason.clone(),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_376_100_000), "2026-11-22T19:35:00.000Z");
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let line = serde_json::to_string(&Provenance {
            id: "abc".into(),
            device_id: "d".into(),
            model_sha256: "00".into(),
            timestamp_ms: 1,
            time: rfc3339(1),
            frame_seq: 2,
            track_id: 3,
            face: [0.0, 0.0, 8.0, 8.0],
            probabilities: vec![0.5, 0.5],
            top_class: 0,
            top_probability: 0.5,
            crop: "crops/d/abc.png".into(),
            frame: None,
            segment: "seg-0000000000.ferlog".into(),
            board: "dir:/b".into(),
        })
        .unwrap();
        fs::write(&path, format!("{line}\n{{\"id\": \"tor")).unwrap();
        assert_eq!(
            known_ids(&path).unwrap(),
            HashSet::from(["abc".to_string()])
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{line}\n"));
        fs::write(&path, format!("garbage\n{line}\n")).unwrap();
        let err = known_ids(&path).unwrap_err().to_string();
        assert!(
            err.contains("records.jsonl") && err.contains("line 1"),
            "{err}"
        );
    }
}
