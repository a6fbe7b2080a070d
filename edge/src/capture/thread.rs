//! The capture thread: runs a [`FrameSource`] and hands the consumer only the newest frame.
//!
//! A queue of one: when the consumer (detection + classification) is slower than a live
//! source, the unconsumed frame is replaced and counted as dropped, so the frame the consumer
//! gets is never older than one capture interval. A non-live source (files, unpaced synthetic
//! frames) instead waits for the consumer, so batch runs see every frame.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceCounters, StopToken};
use crate::Error;

/// Counts of the capture thread, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames the source produced.
    pub captured: u64,
    /// Frames handed to the consumer.
    pub delivered: u64,
    /// Frames replaced before the consumer took them.
    pub dropped: u64,
    /// The source's own counters (skipped inputs, camera reconnects).
    pub source: SourceCounters,
}

#[derive(Default)]
struct Slot {
    frame: Option<Frame>,
    ended: bool,
    error: Option<Error>,
    stats: CaptureStats,
}

struct Shared {
    slot: Mutex<Slot>,
    /// Signalled when a frame arrives or the source ends.
    filled: Condvar,
    /// Signalled when the consumer takes a frame or stops.
    emptied: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves plain counters and an Option: still usable.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running capture thread. Dropping it stops and joins the thread.
pub struct CaptureThread {
    shared: Arc<Shared>,
    stop: StopToken,
    handle: Option<JoinHandle<()>>,
    description: String,
}

impl std::fmt::Debug for CaptureThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureThread")
            .field("source", &self.description)
            .field("stats", &self.stats())
            .finish()
    }
}

impl CaptureThread {
    /// Starts capturing from `source` on a thread named `capture`.
    pub fn spawn(mut source: Box<dyn FrameSource>) -> Self {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            filled: Condvar::new(),
            emptied: Condvar::new(),
        });
        let stop = StopToken::new();
        let description = source.describe();
        let handle = {
            let (shared, stop) = (Arc::clone(&shared), stop.clone());
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || run(source.as_mut(), &shared, &stop))
                .expect("spawning the capture thread")
        };
        Self {
            shared,
            stop,
            handle: Some(handle),
            description,
        }
    }

    /// What is being captured (the source's description).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Waits for the newest frame not yet taken. `Ok(None)` once the source has ended (or
    /// after [`CaptureThread::stop`]); the source's error is returned once, then `None`.
    pub fn next_frame(&self) -> Result<Option<Frame>, Error> {
        self.wait(None)
    }

    /// Like [`CaptureThread::next_frame`], but gives up after `timeout` with `Ok(None)`
    /// while the source is still running (check [`CaptureThread::is_finished`]).
    pub fn next_frame_timeout(&self, timeout: Duration) -> Result<Option<Frame>, Error> {
        self.wait(Some(Instant::now() + timeout))
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Option<Frame>, Error> {
        let mut slot = self.shared.lock();
        loop {
            if let Some(frame) = slot.frame.take() {
                slot.stats.delivered += 1;
                self.shared.emptied.notify_all();
                return Ok(Some(frame));
            }
            if slot.ended {
                return slot.error.take().map_or(Ok(None), Err);
            }
            slot = match deadline {
                None => self
                    .shared
                    .filled
                    .wait(slot)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.shared
                        .filled
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// `true` once the source has ended and every frame was taken.
    pub fn is_finished(&self) -> bool {
        let slot = self.shared.lock();
        slot.ended && slot.frame.is_none()
    }

    /// The counts so far.
    pub fn stats(&self) -> CaptureStats {
        self.shared.lock().stats.clone()
    }

    /// Stops the source, joins the thread and returns the final counts.
    pub fn stop(mut self) -> Result<CaptureStats, Error> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        self.stop.stop();
        self.shared.emptied.notify_all();
        match self.handle.take().map(JoinHandle::join) {
            Some(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::invalid(
                    "capture thread",
                    format!("it panicked: {message}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for CaptureThread {
    fn drop(&mut self) {
        // A panic was already reported on stderr by the panic hook; nothing more to do here.
        let _ = self.shutdown();
    }
}

fn run(source: &mut dyn FrameSource, shared: &Shared, stop: &StopToken) {
    let live = source.is_live();
    let outcome = loop {
        if stop.is_stopped() {
            break Ok(());
        }
        match source.next_frame(stop) {
            Ok(Some(frame)) => {
                let mut slot = shared.lock();
                while !live && slot.frame.is_some() && !stop.is_stopped() {
                    slot = shared
                        .emptied
                        .wait_timeout(slot, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if slot.frame.replace(frame).is_some() {
                    slot.stats.dropped += 1;
                }
                slot.stats.captured += 1;
                slot.stats.source = source.counters();
                shared.filled.notify_all();
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let mut slot = shared.lock();
    slot.ended = true;
    slot.error = outcome.err();
    slot.stats.source = source.counters();
    shared.filled.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted source: `count` frames, each after `interval`, optionally failing at the end.
    struct Script {
        seq: u64,
        count: u64,
        interval: Duration,
        live: bool,
        fail: bool,
    }

    impl FrameSource for Script {
        fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, Error> {
            if self.seq == self.count {
                return if self.fail {
                    Err(Error::invalid("script", "scripted failure"))
                } else {
                    Ok(None)
                };
            }
            if !stop.sleep(self.interval) {
                return Ok(None);
            }
            let frame = Frame::new(self.seq, 2, 1, vec![self.seq as u8; 6])?;
            self.seq += 1;
            Ok(Some(frame))
        }
        fn is_live(&self) -> bool {
            self.live
        }
        fn describe(&self) -> String {
            "script".into()
        }
        fn counters(&self) -> SourceCounters {
            SourceCounters {
                frames: self.seq,
                ..SourceCounters::default()
            }
        }
    }

    fn script(count: u64, interval_ms: u64, live: bool, fail: bool) -> Box<dyn FrameSource> {
        Box::new(Script {
            seq: 0,
            count,
            interval: Duration::from_millis(interval_ms),
            live,
            fail,
        })
    }

    #[test]
    fn a_slow_consumer_gets_the_newest_frame_and_drops_are_counted() {
        let capture = CaptureThread::spawn(script(40, 2, true, false));
        let mut seen = Vec::new();
        while let Some(frame) = capture.next_frame().unwrap() {
            // Never older than the newest captured frame at the time it was taken.
            seen.push(frame.seq);
            std::thread::sleep(Duration::from_millis(15));
        }
        let stats = capture.stop().unwrap();
        assert_eq!(stats.captured, 40);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(
            *seen.last().unwrap(),
            39,
            "the last frame is always delivered"
        );
        assert_eq!(stats.delivered, seen.len() as u64);
        assert_eq!(stats.dropped + stats.delivered, stats.captured);
        assert!(stats.dropped > 10, "{stats:?}");
        assert_eq!(stats.source.frames, 40);
    }

    #[test]
    fn a_batch_source_loses_nothing() {
        let capture = CaptureThread::spawn(script(25, 0, false, false));
        let mut seen = Vec::new();
        while let Some(frame) = capture.next_frame().unwrap() {
            seen.push(frame.seq);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        assert!(capture.is_finished());
        assert_eq!(capture.stop().unwrap().dropped, 0);
    }

    #[test]
    fn the_source_error_is_reported_once() {
        let capture = CaptureThread::spawn(script(2, 0, false, true));
        assert!(capture.next_frame().unwrap().is_some());
        assert!(capture.next_frame().unwrap().is_some());
        let err = capture.next_frame().unwrap_err();
        assert!(err.to_string().contains("scripted failure"));
        assert!(capture.next_frame().unwrap().is_none());
    }

    #[test]
    fn stop_ends_an_endless_source_promptly() {
        let capture = CaptureThread::spawn(script(u64::MAX, 20, true, false));
        assert!(
            capture
                .next_frame_timeout(Duration::from_secs(10))
                .unwrap()
                .is_some()
        );
        let t = Instant::now();
        let stats = capture.stop().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "stop took {:?}",
            t.elapsed()
        );
        assert!(stats.captured >= 1);
    }

    #[test]
    fn timeout_returns_none_while_running() {
        let capture = CaptureThread::spawn(script(1, 2_000, true, false));
        let got = capture
            .next_frame_timeout(Duration::from_millis(20))
            .unwrap();
        assert!(got.is_none());
        assert!(!capture.is_finished());
    }
}
