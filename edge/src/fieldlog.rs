//! The field log: low-confidence faces written as `firmware_config::segment` files, so the
//! next training round learns from exactly the faces the board was unsure about.
//!
//! Guarantees:
//! * A record is acknowledged ([`Outcome::Written`]) only after its bytes were written and
//!   `fsync`ed; an acknowledged record is never lost or damaged by a later crash, power cut or
//!   full disk.
//! * The folder never holds more than `quota_bytes` of segments: at the quota logging pauses
//!   (each refused record is counted) and resumes once `fer collect` has removed segments.
//! * Segments are named `seg-<sequence>.ferlog` (sequence zero-padded to 10 digits), rotated
//!   past `segment_bytes` and sealed with a record count; the seal, and the new segment's
//!   header and folder entry, are `fsync`ed before anything else is written. Only the newest
//!   segment can be unsealed. On start a torn tail is cut at
//!   [`firmware_config::segment::SegmentScan::valid_len`] and that segment sealed.
//! * A full disk (`ENOSPC`) cuts the partial frame off again, pauses logging and says so in
//!   [`FieldLogStats::paused`]; earlier records stay intact. Writing is retried every
//!   [`DISK_FULL_RETRY_MS`].
//! * At most `max_records_per_minute` records a minute (0: no limit), and a track at most once
//!   per `dedup_window_ms`. These policies and the retry timers run on the monotonic clock
//!   ([`Clock`]): a board without an RTC, or an NTP step backwards, cannot silence logging.
//!   The per-track memory is bounded ([`MAX_TRACKS`]).

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use firmware_config::config::FieldLogConfig;
use firmware_config::record::FieldRecord;
use firmware_config::segment::{self, SegmentHeader};
use serde::Serialize;

use crate::durable::sync_dir;
use crate::error::{Error, Result};

/// File name prefix of segments.
pub const SEGMENT_PREFIX: &str = "seg-";
/// File name extension of segments.
pub const SEGMENT_EXTENSION: &str = "ferlog";
/// Appended to the name of a segment moved aside at start because it cannot be read.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// While paused by a full disk, writing is tried again after this long.
pub const DISK_FULL_RETRY_MS: u64 = 60_000;
/// While paused at the quota, the folder is measured again at most this often, to notice
/// segments that `fer collect` removed.
pub const QUOTA_RESCAN_MS: u64 = 10_000;
/// The most tracks whose last record time is remembered for de-duplication; past it, tracks
/// outside the window are forgotten first.
pub const MAX_TRACKS: usize = 1024;

/// Where the field log's policies (de-duplication, rate limit, retry timers) read the time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Milliseconds since this instant, from the monotonic clock: what a board uses.
    Monotonic(Instant),
    /// Milliseconds set by the caller (tests that step time).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn now_ms(&self) -> u64 {
        match self {
            Self::Monotonic(start) => start.elapsed().as_millis() as u64,
            Self::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }
}

/// What happened to one record handed to [`FieldLog::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Written and fsynced: acknowledged.
    Written {
        /// Bytes the record took in its segment.
        bytes: u64,
    },
    /// Logging is disabled in the config.
    Disabled,
    /// The same track was logged less than `dedup_window_ms` ago.
    Duplicate,
    /// `max_records_per_minute` reached.
    RateLimited,
    /// Paused: the record would take the folder past `quota_bytes`.
    QuotaFull,
    /// Paused: the disk is full.
    DiskFull,
    /// Not a record the contract accepts (a non-finite probability from a broken model):
    /// dropped and counted, so that inference goes on and the log stays readable.
    Invalid,
    /// The log folder failed (see [`FieldLog::log_or_pause`]): not acknowledged, logging
    /// paused until a later record succeeds.
    Failed,
}

/// Counters of a field log, reported by the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FieldLogStats {
    /// Records acknowledged.
    pub written: u64,
    /// Records dropped because the contract refuses them ([`Outcome::Invalid`]).
    pub invalid: u64,
    /// Records not written because the log folder failed ([`Outcome::Failed`]).
    pub failed: u64,
    /// Bytes of acknowledged records.
    pub written_bytes: u64,
    /// Records dropped as duplicates of their track.
    pub deduplicated: u64,
    /// Records dropped by the rate limit.
    pub rate_limited: u64,
    /// Records refused at the quota.
    pub quota_refused: u64,
    /// Records refused because the disk was full.
    pub disk_full_refused: u64,
    /// Segments opened by this writer.
    pub segments_opened: u64,
    /// Bytes of torn tail cut off at start.
    pub repaired_bytes: u64,
    /// Bytes of segments in the folder now.
    pub used_bytes: u64,
    /// The configured quota.
    pub quota_bytes: u64,
    /// Why logging is paused now, if it is.
    pub paused: Option<String>,
    /// Unreadable segments (bad magic, a newer schema) renamed to `<name>.damaged` at start,
    /// so that logging goes on; `fer collect --accept-damaged` clears them.
    pub moved_aside: Vec<String>,
}

/// Fault injection for crash and disk-full tests: counts every byte written to segment files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Write only this many bytes in total, then `abort()` the process in the middle of the
    /// write that would pass it (a power cut mid-write).
    pub abort_after_bytes: Option<u64>,
    /// Write only this many bytes in total; the write that would pass it writes part of its
    /// bytes and fails with `ENOSPC`, as do all writes after it.
    pub enospc_after_bytes: Option<u64>,
}

struct Open {
    path: PathBuf,
    file: File,
    len: u64,
    records: u64,
}

/// The field-log writer of one board.
pub struct FieldLog {
    dir: PathBuf,
    config: FieldLogConfig,
    device_id: String,
    current: Option<Open>,
    next_sequence: u64,
    seal_reserve: u64,
    recent: VecDeque<u64>,
    last_by_track: HashMap<u32, u64>,
    disk_full_since: Option<u64>,
    quota_checked_at: Option<u64>,
    faults: Faults,
    bytes_written: u64,
    stats: FieldLogStats,
    clock: Clock,
}

impl std::fmt::Debug for FieldLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldLog")
            .field("dir", &self.dir)
            .field("current", &self.current.as_ref().map(|c| &c.path))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn segment_sequence(name: &str) -> Option<u64> {
    let stem = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_EXTENSION)?
        .strip_suffix('.')?;
    if stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// The segment files of `dir`, oldest first, with their sizes.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let Some(seq) = entry.file_name().to_str().and_then(segment_sequence) else {
            continue;
        };
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("inspecting", entry.path(), e))?;
        if meta.is_file() {
            out.push((seq, entry.path(), meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// A full disk or an exhausted quota (ENOSPC, EDQUOT): pause, retry later.
fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

impl FieldLog {
    /// Opens the field log in `config.directory` (created if missing): measures it, repairs
    /// a torn newest segment and seals it. Records go to a new segment opened on first write.
    pub fn open(config: &FieldLogConfig, device_id: &str) -> Result<Self> {
        Self::open_with_faults(config, device_id, Faults::default())
    }

    /// [`FieldLog::open`] with fault injection (tests only need this).
    pub fn open_with_faults(
        config: &FieldLogConfig,
        device_id: &str,
        faults: Faults,
    ) -> Result<Self> {
        let dir = PathBuf::from(&config.directory);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating field-log folder", &dir, e))?;
        let seal_reserve = segment::encode_seal(u64::MAX).len() as u64;
        let mut log = Self {
            dir,
            config: config.clone(),
            device_id: device_id.to_string(),
            current: None,
            next_sequence: 0,
            seal_reserve,
            recent: VecDeque::new(),
            last_by_track: HashMap::new(),
            disk_full_since: None,
            quota_checked_at: None,
            faults,
            clock: Clock::Monotonic(Instant::now()),
            bytes_written: 0,
            stats: FieldLogStats {
                quota_bytes: config.quota_bytes,
                ..FieldLogStats::default()
            },
        };
        let segments = list_segments(&log.dir)?;
        if let Some((seq, path, _)) = segments.last() {
            log.next_sequence = seq + 1;
            log.repair(path)?;
        }
        log.measure()?;
        Ok(log)
    }

    /// Cuts a torn tail off the newest segment and seals it, so every segment but the one
    /// being written is sealed.
    fn repair(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        let scan = match segment::read_segment(&bytes) {
            Ok(scan) if scan.header.is_some() || !scan.records.is_empty() => scan,
            // Cut before its header was complete: it never held an acknowledged record.
            Ok(_) | Err(firmware_config::Error::Truncated { .. }) => {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io("removing torn segment", path, e))?;
                self.stats.repaired_bytes += bytes.len() as u64;
                return sync_dir(&self.dir);
            }
            // Not a segment this build can extend (a foreign file, a newer schema): moved
            // aside, never deleted, so that logging and inference go on.
            Err(e) => return self.move_aside(path, &e.to_string()),
        };
        if scan.sealed {
            return Ok(());
        }
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening", path, e))?;
        let cut = bytes.len() as u64 - scan.valid_len as u64;
        let open = Open {
            path: path.to_path_buf(),
            file,
            len: scan.valid_len as u64,
            records: scan.records.len() as u64,
        };
        open.file
            .set_len(open.len)
            .and_then(|()| open.file.sync_all())
            .map_err(|e| Error::io("cutting the torn tail of", path, e))?;
        self.stats.repaired_bytes += cut;
        self.current = Some(open);
        match self.seal_current() {
            Ok(()) => Ok(()),
            Err(WriteFail::Other(e)) => Err(e),
            // Full disk: keep it open, the next record's rotation seals it.
            Err(WriteFail::DiskFull) => Ok(()),
        }
    }

    fn move_aside(&mut self, path: &Path, reason: &str) -> Result<()> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(DAMAGED_SUFFIX);
        std::fs::rename(path, &aside).map_err(|e| Error::io("moving aside", path, e))?;
        sync_dir(&self.dir)?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        self.stats.moved_aside.push(format!("{name}: {reason}"));
        Ok(())
    }

    /// Re-measures the folder (segments removed by a collector free quota).
    fn measure(&mut self) -> Result<()> {
        self.stats.used_bytes = list_segments(&self.dir)?.iter().map(|s| s.2).sum();
        Ok(())
    }

    /// The folder the segments are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The counters so far.
    pub fn stats(&self) -> &FieldLogStats {
        &self.stats
    }

    /// Reads the policies' time from `clock` from now on.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// [`FieldLog::log`] for a running board: a failure of the log folder (not a full disk,
    /// which pauses anyway) pauses logging, reported in [`FieldLogStats::paused`], instead of
    /// stopping inference. Earlier records stay intact; the next record tries again.
    pub fn log_or_pause(&mut self, record: &FieldRecord) -> Outcome {
        match self.log(record) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.stats.failed += 1;
                self.stats.paused = Some(format!(
                    "{e}: logging paused, inference goes on; the next record tries again"
                ));
                Outcome::Failed
            }
        }
    }

    /// Writes `record` unless it is a duplicate, over the rate limit, over the quota or the
    /// disk is full. Returns only after an acknowledged record is on disk (fsynced).
    ///
    /// An `Err` means the log folder itself failed (not a full disk): the record is not
    /// acknowledged, earlier records are intact.
    pub fn log(&mut self, record: &FieldRecord) -> Result<Outcome> {
        if !self.config.enabled {
            return Ok(Outcome::Disabled);
        }
        let now = self.clock.now_ms();
        if let Some(&last) = self.last_by_track.get(&record.track_id)
            && now.saturating_sub(last) < u64::from(self.config.dedup_window_ms)
        {
            self.stats.deduplicated += 1;
            return Ok(Outcome::Duplicate);
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= 60_000)
        {
            self.recent.pop_front();
        }
        let limit = self.config.max_records_per_minute;
        if limit > 0 && self.recent.len() >= limit as usize {
            self.stats.rate_limited += 1;
            return Ok(Outcome::RateLimited);
        }
        if let Some(since) = self.disk_full_since {
            if now.saturating_sub(since) < DISK_FULL_RETRY_MS {
                self.stats.disk_full_refused += 1;
                return Ok(Outcome::DiskFull);
            }
            self.disk_full_since = None;
            self.stats.paused = None;
        }
        let Ok(frame) = segment::encode_record(record) else {
            self.stats.invalid += 1;
            return Ok(Outcome::Invalid);
        };
        let frame_len = frame.len() as u64;
        let rotate = match &self.current {
            Some(c) => {
                c.records > 0 && c.len + frame_len + self.seal_reserve > self.config.segment_bytes
            }
            None => true,
        };
        let header = if rotate {
            Some(self.header_bytes(record.timestamp_ms)?)
        } else {
            None
        };
        let mut needed = frame_len + self.seal_reserve;
        if let Some(h) = &header {
            // The new segment's header, and the old segment's seal still to be written.
            needed += h.len() as u64
                + if self.current.is_some() {
                    self.seal_reserve
                } else {
                    0
                };
        }
        if self.stats.used_bytes + needed > self.config.quota_bytes {
            let rescan = self
                .quota_checked_at
                .is_none_or(|t| now.saturating_sub(t) >= QUOTA_RESCAN_MS);
            if rescan {
                self.quota_checked_at = Some(now);
                self.measure()?;
            }
            if self.stats.used_bytes + needed > self.config.quota_bytes {
                self.stats.quota_refused += 1;
                self.stats.paused = Some(format!(
                    "quota: {} of {} bytes used in {}; collect the log (`fer collect`) to resume",
                    self.stats.used_bytes,
                    self.config.quota_bytes,
                    self.dir.display()
                ));
                return Ok(Outcome::QuotaFull);
            }
        }
        let written = match header {
            Some(header) => self
                .seal_current()
                .and_then(|()| self.start_segment(&header)),
            None => Ok(()),
        }
        .and_then(|()| self.append(&frame));
        match written {
            Ok(()) => {}
            Err(WriteFail::DiskFull) => return Ok(self.disk_full(now)),
            Err(WriteFail::Other(e)) => return Err(e),
        }
        if let Some(c) = self.current.as_mut() {
            c.records += 1;
        }
        self.stats.paused = None;
        self.recent.push_back(now);
        self.remember_track(record.track_id, now);
        self.stats.written += 1;
        self.stats.written_bytes += frame_len;
        Ok(Outcome::Written { bytes: frame_len })
    }

    /// Notes when `track` was logged; the map never grows past [`MAX_TRACKS`].
    fn remember_track(&mut self, track: u32, now: u64) {
        if self.last_by_track.len() >= MAX_TRACKS && !self.last_by_track.contains_key(&track) {
            let window = u64::from(self.config.dedup_window_ms);
            self.last_by_track
                .retain(|_, &mut at| now.saturating_sub(at) < window);
            if self.last_by_track.len() >= MAX_TRACKS {
                // All within the window: forget the oldest.
                if let Some(oldest) = self
                    .last_by_track
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(t, _)| *t)
                {
                    self.last_by_track.remove(&oldest);
                }
            }
        }
        self.last_by_track.insert(track, now);
    }

    /// Tracks remembered for de-duplication now (at most [`MAX_TRACKS`]).
    pub fn remembered_tracks(&self) -> usize {
        self.last_by_track.len()
    }

    fn disk_full(&mut self, now: u64) -> Outcome {
        self.disk_full_since = Some(now);
        self.stats.disk_full_refused += 1;
        self.stats.paused = Some(format!(
            "disk full writing {}: logging paused, earlier records are intact; free space on the \
             board (or collect the log) and it resumes within {} s",
            self.dir.display(),
            DISK_FULL_RETRY_MS / 1000
        ));
        Outcome::DiskFull
    }

    fn header_bytes(&self, now: u64) -> Result<Vec<u8>> {
        let header = SegmentHeader {
            device_id: self.device_id.clone(),
            created_ms: now,
            sequence: self.next_sequence,
        };
        segment::encode_header(&header).map_err(|e| Error::invalid("segment header", e.to_string()))
    }

    /// Writes `bytes` through the fault injector; counts them.
    fn raw_write(
        faults: &Faults,
        written: &mut u64,
        file: &mut File,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let total = *written + bytes.len() as u64;
        if let Some(limit) = faults.abort_after_bytes
            && total > limit
        {
            let keep = limit.saturating_sub(*written) as usize;
            // Best effort: the point is to die in the middle of the write.
            let _ = file.write_all(&bytes[..keep]);
            std::process::abort();
        }
        if let Some(limit) = faults.enospc_after_bytes
            && total > limit
        {
            let keep = limit.saturating_sub(*written) as usize;
            file.write_all(&bytes[..keep])?;
            *written += keep as u64;
            return Err(std::io::Error::from_raw_os_error(28));
        }
        file.write_all(bytes)?;
        *written = total;
        Ok(())
    }

    /// Creates the next segment with its header, fsyncs it and the folder.
    fn start_segment(&mut self, header: &[u8]) -> std::result::Result<(), WriteFail> {
        let name = format!(
            "{SEGMENT_PREFIX}{:010}.{SEGMENT_EXTENSION}",
            self.next_sequence
        );
        let path = self.dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WriteFail::from_io(e, "creating", &path))?;
        self.next_sequence += 1;
        let result = Self::raw_write(&self.faults, &mut self.bytes_written, &mut file, header)
            .and_then(|()| file.sync_all());
        if let Err(e) = result {
            // A segment without a complete header holds nothing: remove it again.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(WriteFail::from_io(e, "writing", &path));
        }
        sync_dir(&self.dir).map_err(WriteFail::Other)?;
        self.stats.used_bytes += header.len() as u64;
        self.stats.segments_opened += 1;
        self.current = Some(Open {
            path,
            file,
            len: header.len() as u64,
            records: 0,
        });
        Ok(())
    }

    /// Appends one frame to the open segment and fsyncs it; on failure the partial frame is
    /// cut off again so the next frame cannot be glued to it.
    fn append(&mut self, frame: &[u8]) -> std::result::Result<(), WriteFail> {
        let c = self
            .current
            .as_mut()
            .expect("a segment is open before appending");
        let result = c
            .file
            .seek(SeekFrom::Start(c.len))
            .and_then(|_| {
                Self::raw_write(&self.faults, &mut self.bytes_written, &mut c.file, frame)
            })
            .and_then(|()| c.file.sync_data());
        match result {
            Ok(()) => {
                c.len += frame.len() as u64;
                self.stats.used_bytes += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let path = c.path.clone();
                let cut = c.file.set_len(c.len).and_then(|()| c.file.sync_all());
                if cut.is_err() {
                    // The tail could not be cut: never append to this file again. The torn tail
                    // is cut when the log is next opened.
                    self.current = None;
                }
                Err(WriteFail::from_io(e, "writing", &path))
            }
        }
    }

    /// Writes the seal of the open segment and fsyncs it. On failure the segment stays open
    /// (and whole), so the seal is tried again at the next rotation or at close.
    fn seal_current(&mut self) -> std::result::Result<(), WriteFail> {
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        let seal = segment::encode_seal(c.records);
        let result = c
            .file
            .seek(SeekFrom::Start(c.len))
            .and_then(|_| {
                Self::raw_write(&self.faults, &mut self.bytes_written, &mut c.file, &seal)
            })
            .and_then(|()| c.file.sync_all());
        if let Err(e) = result {
            let path = c.path.clone();
            if c.file.set_len(c.len).is_err() {
                self.current = None;
            }
            return Err(WriteFail::from_io(e, "sealing", &path));
        }
        self.stats.used_bytes += seal.len() as u64;
        self.current = None;
        Ok(())
    }

    /// Seals the open segment (fsynced) and returns the final counters.
    pub fn close(mut self) -> Result<FieldLogStats> {
        match self.seal_current() {
            Ok(()) => Ok(std::mem::take(&mut self.stats)),
            Err(WriteFail::Other(e)) => Err(e),
            Err(WriteFail::DiskFull) => Err(Error::FieldLog {
                path: self.dir.clone(),
                reason: "disk full while sealing the last segment: its records are intact and \
                         it is sealed at the next start"
                    .into(),
            }),
        }
    }
}

impl Drop for FieldLog {
    fn drop(&mut self) {
        // Best effort on unwinding; `close` reports errors.
        let _ = self.seal_current();
    }
}

enum WriteFail {
    DiskFull,
    Other(Error),
}

impl WriteFail {
    fn from_io(e: std::io::Error, action: &'static str, path: &Path) -> Self {
        if is_enospc(&e) {
            Self::DiskFull
        } else {
            Self::Other(Error::io(action, path, e))
        }
    }
}
