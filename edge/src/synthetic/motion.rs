//! Faces that move: a fixed background and faces gliding across it at a constant speed,
//! bouncing off the edges, with fresh sensor noise in every frame. The sequence a detection
//! interval and its tracker are measured and tested on: every frame knows its boxes, and face
//! `i` of one frame is face `i` of the next.

use firmware_config::preprocess::ImageBuf;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::face::{FaceParams, draw_face};
use super::generator::{SyntheticConfig, SyntheticFaces, SyntheticImage};
use super::{Expression, TruthFace};
use crate::Error;

#[derive(Debug, Clone)]
struct Mover {
    params: FaceParams,
    expression: Expression,
    intensity: f32,
    velocity: (f32, f32),
}

/// A seeded sequence of frames with `config.max_faces` faces moving `speed` pixels a frame.
#[derive(Debug)]
pub struct MovingFaces {
    faces: SyntheticFaces,
    background: ImageBuf,
    movers: Vec<Mover>,
}

impl MovingFaces {
    /// The sequence; the same `seed` gives the same frames. Faces start apart, each heading
    /// in a random direction.
    pub fn new(config: SyntheticConfig, seed: u64, speed: f32) -> Result<Self, Error> {
        if !(speed.is_finite() && speed >= 0.0) {
            return Err(Error::invalid(
                "moving faces",
                format!("speed must be a non-negative number of pixels a frame, got {speed}"),
            ));
        }
        let count = config.max_faces as usize;
        let mut faces = SyntheticFaces::new(config, seed)?;
        let background = faces.background();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6d6f_7669_6e67);
        let mut movers: Vec<Mover> = Vec::new();
        for i in 0..count {
            let expression = Expression::ALL[i % Expression::ALL.len()];
            // A few tries to start apart from the faces placed so far.
            for _ in 0..16 {
                let (params, intensity) = faces.random_params(expression);
                let apart = movers.iter().all(|m| {
                    let d = (m.params.center.0 - params.center.0)
                        .hypot(m.params.center.1 - params.center.1);
                    d > (m.params.height + params.height) / 2.0
                });
                if apart {
                    let angle = rng.random_range(0.0..std::f32::consts::TAU);
                    movers.push(Mover {
                        params,
                        expression,
                        intensity,
                        velocity: (speed * angle.cos(), speed * angle.sin()),
                    });
                    break;
                }
            }
        }
        Ok(Self {
            faces,
            background,
            movers,
        })
    }

    /// The next frame: the faces drawn where they are, then moved for the frame after.
    pub fn next_image(&mut self) -> SyntheticImage {
        let mut image = self.background.clone();
        let (w, h) = (image.width as f32, image.height as f32);
        let mut truth = Vec::with_capacity(self.movers.len());
        for m in &mut self.movers {
            let face = draw_face(&mut image, &m.params).expect("validated parameters");
            truth.push(TruthFace {
                face,
                expression: m.expression,
                intensity: m.intensity,
            });
            // Bounce so that the head stays inside the frame.
            let half = (
                m.params.height * m.params.aspect / 2.0,
                m.params.height / 2.0,
            );
            let (cx, cy) = &mut m.params.center;
            *cx += m.velocity.0;
            *cy += m.velocity.1;
            if *cx - half.0 < 0.0 || *cx + half.0 > w {
                m.velocity.0 = -m.velocity.0;
                *cx = cx.clamp(half.0.min(w / 2.0), (w - half.0).max(w / 2.0));
            }
            if *cy - half.1 < 0.0 || *cy + half.1 > h {
                m.velocity.1 = -m.velocity.1;
                *cy = cy.clamp(half.1.min(h / 2.0), (h - half.1).max(h / 2.0));
            }
        }
        self.faces.add_noise(&mut image);
        SyntheticImage {
            image,
            faces: truth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SyntheticConfig {
        SyntheticConfig {
            width: 160,
            height: 120,
            face_fraction: (0.4, 0.5),
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn faces_move_at_the_speed_and_stay_inside() {
        let mut seq = MovingFaces::new(config(), 3, 4.0).unwrap();
        let mut last: Option<TruthFace> = None;
        for _ in 0..200 {
            let frame = seq.next_image();
            let face = frame.faces[0];
            let (cx, cy) = (
                face.face.x + face.face.width / 2.0,
                face.face.y + face.face.height / 2.0,
            );
            assert!((0.0..=160.0).contains(&cx) && (0.0..=120.0).contains(&cy));
            if let Some(prev) = last {
                let step = (face.face.x - prev.face.x).hypot(face.face.y - prev.face.y);
                assert!(step <= 4.0 + 1e-3, "moved {step} px in one frame");
                assert_eq!(face.expression, prev.expression);
            }
            last = Some(face);
        }
    }

    #[test]
    fn same_seed_same_frames_and_a_still_background() {
        let a = MovingFaces::new(config(), 9, 2.0).unwrap().next_image();
        let b = MovingFaces::new(config(), 9, 2.0).unwrap().next_image();
        assert_eq!(a.image, b.image);
        assert!(MovingFaces::new(config(), 9, f32::NAN).is_err());
        // Far from the face only the noise changes between frames.
        let mut seq = MovingFaces::new(config(), 9, 2.0).unwrap();
        let (first, second) = (seq.next_image(), seq.next_image());
        let corner = |img: &ImageBuf| -> f32 {
            let f = first.faces[0].face;
            let (x0, y0) = if f.x > 80.0 { (0, 0) } else { (140, 100) };
            let mut sum = 0.0;
            for y in y0..y0 + 20 {
                for x in x0..x0 + 20 {
                    sum += f32::from(img.pixels[(y * 160 + x) * 3]);
                }
            }
            sum / 400.0
        };
        assert!((corner(&first.image) - corner(&second.image)).abs() < 3.0);
    }
}
