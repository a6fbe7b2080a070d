//! Synthetic faces ([`crate::synthetic`]) as a frame source, for boards without a camera
//! and for pipeline tests: each frame carries the faces drawn in it.

use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceCounters, StopToken};
use crate::Error;
use crate::synthetic::{SyntheticConfig, SyntheticFaces};

/// Synthetic faces as a frame source, optionally paced to a frame rate (then it is live).
#[derive(Debug)]
pub struct SyntheticSource {
    faces: SyntheticFaces,
    seed: u64,
    interval: Option<Duration>,
    next_due: Option<Instant>,
    seq: u64,
}

impl SyntheticSource {
    /// A source of `config`-sized frames; `fps` paces it like a camera (`None`: as fast as
    /// the consumer takes frames).
    pub fn new(config: SyntheticConfig, seed: u64, fps: Option<f32>) -> Result<Self, Error> {
        let interval = match fps {
            Some(fps) if fps.is_finite() && fps > 0.0 => Some(Duration::from_secs_f32(1.0 / fps)),
            Some(fps) => {
                return Err(Error::invalid(
                    "synthetic source",
                    format!("fps must be positive, got {fps}"),
                ));
            }
            None => None,
        };
        Ok(Self {
            faces: SyntheticFaces::new(config, seed)?,
            seed,
            interval,
            next_due: None,
            seq: 0,
        })
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, Error> {
        if let (Some(interval), Some(due)) = (self.interval, self.next_due) {
            if !stop.sleep(due.saturating_duration_since(Instant::now())) {
                return Ok(None);
            }
            self.next_due = Some(due + interval);
        } else if let Some(interval) = self.interval {
            self.next_due = Some(Instant::now() + interval);
        }
        let sample = self.faces.sample();
        let image = sample.image;
        let mut frame = Frame::new(self.seq, image.width, image.height, image.pixels)?;
        frame.truth = sample.faces;
        self.seq += 1;
        Ok(Some(frame))
    }

    fn is_live(&self) -> bool {
        self.interval.is_some()
    }

    fn describe(&self) -> String {
        let c = self.faces.config();
        match self.interval {
            Some(i) => format!(
                "synthetic faces {}x{} seed {} at {:.1} fps",
                c.width,
                c.height,
                self.seed,
                1.0 / i.as_secs_f32()
            ),
            None => format!(
                "synthetic faces {}x{} seed {}",
                c.width, c.height, self.seed
            ),
        }
    }

    fn counters(&self) -> SourceCounters {
        SourceCounters {
            frames: self.seq,
            ..SourceCounters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_needs_a_positive_frame_rate() {
        assert!(SyntheticSource::new(SyntheticConfig::default(), 0, Some(0.0)).is_err());
    }

    #[test]
    fn paced_source_is_live_and_numbers_frames() {
        let config = SyntheticConfig {
            width: 32,
            height: 32,
            ..SyntheticConfig::default()
        };
        let mut source = SyntheticSource::new(config, 1, Some(200.0)).unwrap();
        assert!(source.is_live());
        let stop = StopToken::new();
        let t = Instant::now();
        for seq in 0..4 {
            let frame = source.next_frame(&stop).unwrap().unwrap();
            assert_eq!(frame.seq, seq);
            assert_eq!(frame.truth.len(), 1);
        }
        // Three intervals of 5 ms at least.
        assert!(t.elapsed() >= Duration::from_millis(14));
        assert_eq!(source.counters().frames, 4);
    }
}
