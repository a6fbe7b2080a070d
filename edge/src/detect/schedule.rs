//! When to run the detector: every [`DetectorConfig::interval`]-th frame, and sooner when
//! what the tracker carries can no longer be trusted.
//!
//! Between detections the pipeline carries the tracks with their motion model
//! ([`crate::track::Tracker::predict`]). The detector runs again before the interval is up
//! when
//! * the last detection started a track or missed one ([`crate::track::Tracker::changed`]):
//!   a new track has no motion yet, a lost one may be elsewhere;
//! * a carried box has left the frame;
//! * the picture changed outside the faces: a coarse grid of mean brightness is kept from
//!   the last detected frame, and a cell away from every face (then and now) that moved by
//!   more than [`SCENE_CHANGE`] levels means something new may have come into view.
//!
//! [`DetectorConfig::interval`]: firmware_config::config::DetectorConfig::interval

use firmware_config::preprocess::{FaceBox, ImageView};

/// Cells of the brightness grid, across and down.
pub const GRID: (usize, usize) = (8, 6);
/// Mean brightness change (0..255) of a grid cell away from the faces that counts as a change
/// in the picture. Sensor noise moves a cell's mean by well under one level.
pub const SCENE_CHANGE: f32 = 12.0;
/// Every this many pixels across and down are sampled for the grid.
const SAMPLE_STEP: usize = 4;

/// Why a frame is detected or carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Run the detector: the interval is up (or is 1), or nothing was detected yet.
    Interval,
    /// Run the detector: the last detection started or lost a track.
    TracksChanged,
    /// Run the detector: a carried box left the frame.
    LeftFrame,
    /// Run the detector: the picture changed away from the faces.
    SceneChanged,
    /// Skip the detector and carry the tracks.
    Carry,
}

impl Decision {
    /// `true` when the detector runs.
    pub fn detects(self) -> bool {
        self != Self::Carry
    }
}

/// Decides frame by frame whether the detector runs.
#[derive(Debug, Clone)]
pub struct DetectSchedule {
    interval: u32,
    since_detection: u32,
    reference: Option<Reference>,
}

#[derive(Debug, Clone)]
struct Reference {
    size: (u32, u32),
    grid: Vec<f32>,
    faces: Vec<FaceBox>,
}

impl DetectSchedule {
    /// A schedule that detects at least every `interval` frames (0 is taken as 1).
    pub fn new(interval: u32) -> Self {
        Self {
            interval: interval.max(1),
            since_detection: 0,
            reference: None,
        }
    }

    /// Whether to detect `frame`, where the tracker would carry `carried` boxes, and
    /// `tracks_changed` from the tracker.
    pub fn decide(
        &self,
        frame: &ImageView<'_>,
        carried: &[FaceBox],
        tracks_changed: bool,
    ) -> Decision {
        let Some(reference) = &self.reference else {
            return Decision::Interval;
        };
        if self.interval == 1 || self.since_detection + 1 >= self.interval {
            return Decision::Interval;
        }
        if tracks_changed {
            return Decision::TracksChanged;
        }
        let (w, h) = (frame.width as f32, frame.height as f32);
        let inside = |f: &FaceBox| {
            let (cx, cy) = (f.x + f.width / 2.0, f.y + f.height / 2.0);
            (0.0..w).contains(&cx) && (0.0..h).contains(&cy)
        };
        if !carried.iter().all(inside) {
            return Decision::LeftFrame;
        }
        if reference.size != (frame.width, frame.height) {
            return Decision::SceneChanged;
        }
        let grid = brightness_grid(frame);
        let gw = GRID.0;
        let (cw, ch) = (w / gw as f32, h / GRID.1 as f32);
        for (i, (now, then)) in grid.iter().zip(&reference.grid).enumerate() {
            let cell = FaceBox {
                x: (i % gw) as f32 * cw,
                y: (i / gw) as f32 * ch,
                width: cw,
                height: ch,
            };
            let near_a_face = reference
                .faces
                .iter()
                .chain(carried)
                .any(|f| overlaps(&grow(f, 0.25), &cell));
            if !near_a_face && (now - then).abs() > SCENE_CHANGE {
                return Decision::SceneChanged;
            }
        }
        Decision::Carry
    }

    /// Records that `frame` was detected, with these faces found.
    pub fn detected(&mut self, frame: &ImageView<'_>, faces: &[FaceBox]) {
        self.since_detection = 0;
        // With interval 1 the grid is never compared: not worth computing.
        self.reference = Some(Reference {
            size: (frame.width, frame.height),
            grid: if self.interval > 1 {
                brightness_grid(frame)
            } else {
                Vec::new()
            },
            faces: faces.to_vec(),
        });
    }

    /// Records that `frame` was carried.
    pub fn carried(&mut self) {
        self.since_detection += 1;
    }
}

/// `f` grown by `by` of its size on every side.
fn grow(f: &FaceBox, by: f32) -> FaceBox {
    FaceBox {
        x: f.x - by * f.width,
        y: f.y - by * f.height,
        width: f.width * (1.0 + 2.0 * by),
        height: f.height * (1.0 + 2.0 * by),
    }
}

fn overlaps(a: &FaceBox, b: &FaceBox) -> bool {
    a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
}

/// Mean brightness of each [`GRID`] cell, row by row, from every [`SAMPLE_STEP`]-th pixel
/// (the first channel: luma for gray frames, red for RGB, enough to see a change).
fn brightness_grid(frame: &ImageView<'_>) -> Vec<f32> {
    let (gw, gh) = GRID;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = frame.format.channels();
    let mut sum = vec![0u32; gw * gh];
    let mut count = vec![0u32; gw * gh];
    for y in (0..h).step_by(SAMPLE_STEP) {
        let row = (y * gh / h) * gw;
        for x in (0..w).step_by(SAMPLE_STEP) {
            let cell = row + x * gw / w;
            sum[cell] += u32::from(frame.data[(y * w + x) * channels]);
            count[cell] += 1;
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(&s, &c)| if c == 0 { 0.0 } else { s as f32 / c as f32 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::preprocess::{ImageBuf, PixelFormat};

    fn frame(fill: impl Fn(usize, usize) -> u8) -> ImageBuf {
        let (w, h) = (160, 120);
        let pixels = (0..w * h).map(|i| fill(i % w, i / w)).collect();
        ImageBuf::new(w as u32, h as u32, PixelFormat::Gray8, pixels).unwrap()
    }

    fn face(x: f32) -> FaceBox {
        FaceBox {
            x,
            y: 40.0,
            width: 40.0,
            height: 40.0,
        }
    }

    #[test]
    fn detects_every_interval_and_carries_in_between() {
        let still = frame(|_, _| 100);
        let mut schedule = DetectSchedule::new(3);
        let mut decisions = Vec::new();
        for _ in 0..7 {
            let d = schedule.decide(&still.view(), &[face(60.0)], false);
            if d.detects() {
                schedule.detected(&still.view(), &[face(60.0)]);
            } else {
                schedule.carried();
            }
            decisions.push(d);
        }
        use Decision::{Carry, Interval};
        assert_eq!(
            decisions,
            [Interval, Carry, Carry, Interval, Carry, Carry, Interval]
        );
        let every = DetectSchedule::new(1);
        assert_eq!(
            every.decide(&still.view(), &[], false),
            Decision::Interval,
            "nothing detected yet"
        );
    }

    #[test]
    fn changed_tracks_a_box_leaving_or_a_new_region_detect_early() {
        let still = frame(|_, _| 100);
        let mut schedule = DetectSchedule::new(5);
        schedule.detected(&still.view(), &[face(60.0)]);
        assert_eq!(
            schedule.decide(&still.view(), &[face(60.0)], true),
            Decision::TracksChanged
        );
        assert_eq!(
            schedule.decide(&still.view(), &[face(150.0)], false),
            Decision::LeftFrame
        );
        // The face itself changing (it moved, it smiles) is no reason to detect.
        let face_moved = frame(|x, y| {
            if (70..110).contains(&x) && (40..80).contains(&y) {
                200
            } else {
                100
            }
        });
        assert_eq!(
            schedule.decide(&face_moved.view(), &[face(70.0)], false),
            Decision::Carry
        );
        // Something bright entering the left edge is.
        let entering = frame(|x, _| if x < 20 { 220 } else { 100 });
        assert_eq!(
            schedule.decide(&entering.view(), &[face(60.0)], false),
            Decision::SceneChanged
        );
        // Sensor noise is not.
        let noisy = frame(|x, y| 100 + ((x * 7 + y * 13) % 9) as u8);
        assert_eq!(
            schedule.decide(&noisy.view(), &[face(60.0)], false),
            Decision::Carry
        );
    }
}
