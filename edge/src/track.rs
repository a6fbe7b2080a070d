//! Per-face tracks across frames: boxes are matched to tracks by IoU, and each track keeps an
//! exponential moving average of its class probabilities, so one odd frame does not flip the
//! label shown or send a face to the field log.
//!
//! Each track also keeps a constant-velocity motion model (box position and size per frame,
//! from its last two detections). Between detections ([`DetectorConfig::interval`]) the
//! pipeline carries the tracks along it ([`Tracker::predict`], [`Tracker::carry`]), and a
//! detection is matched against where a track should be by now, not where it was last seen.
//!
//! [`DetectorConfig::interval`]: firmware_config::config::DetectorConfig::interval

use firmware_config::preprocess::FaceBox;
use serde::Serialize;

/// A box matches a track when their IoU is at least this.
pub const MATCH_IOU: f32 = 0.3;
/// A track not matched for more than this many frames is dropped.
pub const MAX_MISSED_FRAMES: u64 = 15;

/// One face of the current frame with its track.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackedFace {
    /// Stable id of the track (first seen face = 1).
    pub track_id: u32,
    /// The box in this frame.
    pub face: FaceBox,
    /// The smoothed class probabilities.
    pub probabilities: Vec<f32>,
    /// Frames this track has been seen in, this one included.
    pub age: u32,
}

/// Where a track should be in a frame without detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Carried {
    /// The track.
    pub track_id: u32,
    /// Its predicted box.
    pub face: FaceBox,
}

#[derive(Debug, Clone)]
struct Track {
    id: u32,
    face: FaceBox,
    smoothed: Vec<f32>,
    last_frame: u64,
    age: u32,
    /// The box and frame of its last detection, and its motion per frame (x, y, w, h).
    detected: (FaceBox, u64),
    velocity: Option<[f32; 4]>,
}

impl Track {
    /// Blends `probs` into the smoothed probabilities with weight `a` (when they have the
    /// same classes) and counts the frame.
    fn smooth(&mut self, probs: &[f32], a: f32) {
        if self.smoothed.len() == probs.len() {
            for (s, p) in self.smoothed.iter_mut().zip(probs) {
                *s = a * p + (1.0 - a) * *s;
            }
        }
        self.age += 1;
    }

    /// Places the track at `face` in `frame_seq` and reports it.
    fn show(&mut self, face: FaceBox, frame_seq: u64) -> TrackedFace {
        self.face = face;
        self.last_frame = frame_seq;
        TrackedFace {
            track_id: self.id,
            face,
            probabilities: self.smoothed.clone(),
            age: self.age,
        }
    }

    /// Where the motion model puts the track in `frame_seq`.
    fn predict(&self, frame_seq: u64) -> FaceBox {
        let (face, at) = self.detected;
        let Some(v) = self.velocity else {
            return face;
        };
        let dt = frame_seq.saturating_sub(at).min(MAX_MISSED_FRAMES) as f32;
        FaceBox {
            x: face.x + v[0] * dt,
            y: face.y + v[1] * dt,
            width: (face.width + v[2] * dt).max(1.0),
            height: (face.height + v[3] * dt).max(1.0),
        }
    }
}

/// Matches faces to tracks frame by frame and smooths their probabilities.
#[derive(Debug, Clone)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u32,
    smoothing: f32,
    last_detection: Option<u64>,
    changed: bool,
}

impl Tracker {
    /// A tracker; `smoothing` is the weight of the newest frame in `(0, 1]` (1: no smoothing).
    pub fn new(smoothing: f32) -> Self {
        Self {
            tracks: Vec::new(),
            next_id: 1,
            smoothing: smoothing.clamp(f32::MIN_POSITIVE, 1.0),
            last_detection: None,
            changed: false,
        }
    }

    /// Number of live tracks.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// `true` when no track is live.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// `true` when the last detection started a track, or missed one that the detection
    /// before had: the tracks are not settled, so the next frame should be detected too.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Feeds the detected faces of frame `frame_seq` with their raw probabilities (same
    /// order) and returns them tracked, in the same order.
    ///
    /// # Panics
    /// When `faces` and `probabilities` differ in length.
    pub fn update(
        &mut self,
        frame_seq: u64,
        faces: &[FaceBox],
        probabilities: &[Vec<f32>],
    ) -> Vec<TrackedFace> {
        assert_eq!(
            faces.len(),
            probabilities.len(),
            "one probability vector per face"
        );
        // Greedy matching against where each track should be now, best overlap first.
        let predicted: Vec<FaceBox> = self.tracks.iter().map(|t| t.predict(frame_seq)).collect();
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (fi, face) in faces.iter().enumerate() {
            for (ti, at) in predicted.iter().enumerate() {
                let iou = face.iou(at);
                if iou >= MATCH_IOU {
                    pairs.push((iou, fi, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut face_track: Vec<Option<usize>> = vec![None; faces.len()];
        let mut track_taken = vec![false; self.tracks.len()];
        for (_, fi, ti) in pairs {
            if face_track[fi].is_none() && !track_taken[ti] {
                face_track[fi] = Some(ti);
                track_taken[ti] = true;
            }
        }
        let seen_last_time = |t: &Track| Some(t.detected.1) == self.last_detection;
        let mut changed = self
            .tracks
            .iter()
            .zip(&track_taken)
            .any(|(t, taken)| !taken && seen_last_time(t));
        let a = self.smoothing;
        let mut out = Vec::with_capacity(faces.len());
        for (fi, (face, probs)) in faces.iter().zip(probabilities).enumerate() {
            let ti = match face_track[fi] {
                Some(ti) if self.tracks[ti].smoothed.len() == probs.len() => {
                    let t = &mut self.tracks[ti];
                    t.smooth(probs, a);
                    let (before, at) = t.detected;
                    let dt = frame_seq.saturating_sub(at).max(1) as f32;
                    let now = [
                        (face.x - before.x) / dt,
                        (face.y - before.y) / dt,
                        (face.width - before.width) / dt,
                        (face.height - before.height) / dt,
                    ];
                    // Averaged with the previous estimate: detector boxes jitter.
                    t.velocity = Some(match t.velocity {
                        Some(v) => [0, 1, 2, 3].map(|k| 0.5 * (v[k] + now[k])),
                        None => now,
                    });
                    ti
                }
                _ => {
                    changed = true;
                    self.tracks.push(Track {
                        id: self.next_id,
                        face: *face,
                        smoothed: probs.clone(),
                        last_frame: frame_seq,
                        age: 1,
                        detected: (*face, frame_seq),
                        velocity: None,
                    });
                    self.next_id = self.next_id.wrapping_add(1).max(1);
                    self.tracks.len() - 1
                }
            };
            let t = &mut self.tracks[ti];
            t.detected = (*face, frame_seq);
            out.push(t.show(*face, frame_seq));
        }
        self.tracks
            .retain(|t| frame_seq.saturating_sub(t.last_frame) <= MAX_MISSED_FRAMES);
        self.last_detection = Some(frame_seq);
        self.changed = changed;
        out
    }

    /// Where the tracks found by the last detection should be in frame `frame_seq`, for a
    /// frame the detector skips.
    pub fn predict(&self, frame_seq: u64) -> Vec<Carried> {
        self.tracks
            .iter()
            .filter(|t| Some(t.detected.1) == self.last_detection)
            .map(|t| Carried {
                track_id: t.id,
                face: t.predict(frame_seq),
            })
            .collect()
    }

    /// Moves the `carried` tracks (from [`Tracker::predict`]) into frame `frame_seq` with
    /// their raw probabilities (same order) and returns them tracked, in the same order. The
    /// motion model only learns from detections.
    ///
    /// # Panics
    /// When `carried` and `probabilities` differ in length.
    pub fn carry(
        &mut self,
        frame_seq: u64,
        carried: &[Carried],
        probabilities: &[Vec<f32>],
    ) -> Vec<TrackedFace> {
        assert_eq!(
            carried.len(),
            probabilities.len(),
            "one probability vector per face"
        );
        let a = self.smoothing;
        let mut out = Vec::with_capacity(carried.len());
        for (c, probs) in carried.iter().zip(probabilities) {
            let Some(t) = self.tracks.iter_mut().find(|t| t.id == c.track_id) else {
                continue;
            };
            t.smooth(probs, a);
            out.push(t.show(c.face, frame_seq));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32) -> FaceBox {
        FaceBox {
            x,
            y: 10.0,
            width: 40.0,
            height: 40.0,
        }
    }

    #[test]
    fn a_moving_face_keeps_its_track_and_is_smoothed() {
        let mut tracker = Tracker::new(0.5);
        let first = tracker.update(0, &[face(0.0)], &[vec![1.0, 0.0]]);
        let second = tracker.update(1, &[face(5.0)], &[vec![0.0, 1.0]]);
        assert_eq!(first[0].track_id, second[0].track_id);
        assert_eq!(second[0].probabilities, vec![0.5, 0.5]);
        assert_eq!(second[0].age, 2);
    }

    #[test]
    fn separate_faces_get_separate_tracks_and_stale_tracks_expire() {
        let mut tracker = Tracker::new(1.0);
        let out = tracker.update(0, &[face(0.0), face(200.0)], &[vec![1.0], vec![1.0]]);
        assert_ne!(out[0].track_id, out[1].track_id);
        assert_eq!(tracker.len(), 2);
        tracker.update(MAX_MISSED_FRAMES + 1, &[], &[]);
        assert!(tracker.is_empty());
        let again = tracker.update(MAX_MISSED_FRAMES + 2, &[face(0.0)], &[vec![1.0]]);
        assert!(again[0].track_id > out[1].track_id, "ids are never reused");
    }

    #[test]
    fn carried_tracks_follow_their_motion_and_keep_their_ids() {
        let mut tracker = Tracker::new(1.0);
        let first = tracker.update(0, &[face(0.0)], &[vec![1.0]]);
        assert!(tracker.changed(), "a new track is not settled");
        tracker.update(2, &[face(10.0)], &[vec![1.0]]);
        assert!(!tracker.changed());
        // 5 px a frame: two frames on, the carried box is 10 px further.
        let carried = tracker.predict(4);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].track_id, first[0].track_id);
        assert!((carried[0].face.x - 20.0).abs() < 1e-4);
        let out = tracker.carry(4, &carried, &[vec![1.0]]);
        assert_eq!(out[0].face, carried[0].face);
        // Found again 30 px from where it was last shown (IoU 0.14): it is where the motion
        // model put it, so it keeps its track.
        let again = tracker.update(10, &[face(50.0)], &[vec![1.0]]);
        assert_eq!(again[0].track_id, first[0].track_id);
        // A detection that misses it unsettles the tracks and stops carrying it.
        tracker.update(11, &[], &[]);
        assert!(tracker.changed());
        assert!(tracker.predict(12).is_empty());
    }
}
