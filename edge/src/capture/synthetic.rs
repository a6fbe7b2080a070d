//! Synthetic faces ([`crate::synthetic`]) as a frame source, for boards without a camera
//! and for pipeline tests: each frame carries the faces drawn in it. A fresh picture every
//! frame, or faces moving across a still one ([`crate::synthetic::MovingFaces`]).

use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceCounters, StopToken};
use crate::Error;
use crate::synthetic::{MovingFaces, SyntheticConfig, SyntheticFaces, SyntheticImage};

/// Pixels a moving face travels per frame in a [`SyntheticSource::moving`] source.
pub const MOVING_SPEED: f32 = 3.0;

#[derive(Debug)]
enum Drawer {
    Fresh(SyntheticFaces),
    Moving(MovingFaces),
}

/// Synthetic faces as a frame source, optionally paced to a frame rate (then it is live).
#[derive(Debug)]
pub struct SyntheticSource {
    drawer: Drawer,
    config: SyntheticConfig,
    seed: u64,
    interval: Option<Duration>,
    next_due: Option<Instant>,
    seq: u64,
}

impl SyntheticSource {
    /// A source of `config`-sized frames; `fps` paces it like a camera (`None`: as fast as
    /// the consumer takes frames).
    pub fn new(config: SyntheticConfig, seed: u64, fps: Option<f32>) -> Result<Self, Error> {
        let drawer = Drawer::Fresh(SyntheticFaces::new(config.clone(), seed)?);
        Self::with(drawer, config, seed, fps)
    }

    /// A source whose faces move [`MOVING_SPEED`] pixels a frame across a still background.
    pub fn moving(config: SyntheticConfig, seed: u64, fps: Option<f32>) -> Result<Self, Error> {
        let drawer = Drawer::Moving(MovingFaces::new(config.clone(), seed, MOVING_SPEED)?);
        Self::with(drawer, config, seed, fps)
    }

    fn with(
        drawer: Drawer,
        config: SyntheticConfig,
        seed: u64,
        fps: Option<f32>,
    ) -> Result<Self, Error> {
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
            drawer,
            config,
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
        let sample: SyntheticImage = match &mut self.drawer {
            Drawer::Fresh(faces) => faces.sample(),
            Drawer::Moving(moving) => moving.next_image(),
        };
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
        let c = &self.config;
        let what = match self.drawer {
            Drawer::Fresh(_) => "synthetic faces",
            Drawer::Moving(_) => "moving synthetic faces",
        };
        match self.interval {
            Some(i) => format!(
                "{what} {}x{} seed {} at {:.1} fps",
                c.width,
                c.height,
                self.seed,
                1.0 / i.as_secs_f32()
            ),
            None => format!("{what} {}x{} seed {}", c.width, c.height, self.seed),
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

    #[test]
    fn a_moving_source_moves_its_face_a_little_each_frame() {
        let config = SyntheticConfig {
            width: 64,
            height: 48,
            ..SyntheticConfig::default()
        };
        let mut source = SyntheticSource::moving(config, 2, None).unwrap();
        let stop = StopToken::new();
        let a = source.next_frame(&stop).unwrap().unwrap().truth[0].face;
        let b = source.next_frame(&stop).unwrap().unwrap().truth[0].face;
        let step = (a.x - b.x).hypot(a.y - b.y);
        assert!(step > 0.0 && step <= MOVING_SPEED + 1e-3, "{step}");
        assert!(source.describe().starts_with("moving"));
    }
}
