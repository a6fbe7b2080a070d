//! Per-face tracks across frames: boxes are matched to tracks by IoU, and each track keeps an
//! exponential moving average of its class probabilities, so one odd frame does not flip the
//! label shown or send a face to the field log.

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

#[derive(Debug, Clone)]
struct Track {
    id: u32,
    face: FaceBox,
    smoothed: Vec<f32>,
    last_frame: u64,
    age: u32,
}

/// Matches faces to tracks frame by frame and smooths their probabilities.
#[derive(Debug, Clone)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u32,
    smoothing: f32,
}

impl Tracker {
    /// A tracker; `smoothing` is the weight of the newest frame in `(0, 1]` (1: no smoothing).
    pub fn new(smoothing: f32) -> Self {
        Self {
            tracks: Vec::new(),
            next_id: 1,
            smoothing: smoothing.clamp(f32::MIN_POSITIVE, 1.0),
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

    /// Feeds the faces of frame `frame_seq` with their raw probabilities (same order) and
    /// returns them tracked, in the same order.
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
        // Greedy matching, best overlap first.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (fi, face) in faces.iter().enumerate() {
            for (ti, track) in self.tracks.iter().enumerate() {
                let iou = face.iou(&track.face);
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
        let a = self.smoothing;
        let mut out = Vec::with_capacity(faces.len());
        for (fi, (face, probs)) in faces.iter().zip(probabilities).enumerate() {
            let ti = match face_track[fi] {
                Some(ti) if self.tracks[ti].smoothed.len() == probs.len() => {
                    let t = &mut self.tracks[ti];
                    for (s, p) in t.smoothed.iter_mut().zip(probs) {
                        *s = a * p + (1.0 - a) * *s;
                    }
                    t.age += 1;
                    ti
                }
                _ => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        face: *face,
                        smoothed: probs.clone(),
                        last_frame: frame_seq,
                        age: 1,
                    });
                    self.next_id = self.next_id.wrapping_add(1).max(1);
                    self.tracks.len() - 1
                }
            };
            let t = &mut self.tracks[ti];
            t.face = *face;
            t.last_frame = frame_seq;
            out.push(TrackedFace {
                track_id: t.id,
                face: *face,
                probabilities: t.smoothed.clone(),
                age: t.age,
            });
        }
        self.tracks
            .retain(|t| frame_seq.saturating_sub(t.last_frame) <= MAX_MISSED_FRAMES);
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
}
