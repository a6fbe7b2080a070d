//! The seeded generator of whole images with faces whose box and expression are known.

use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::face::{FaceParams, FaceShape, draw_face};
use super::{Expression, TruthFace};
use crate::Error;

/// How [`SyntheticFaces`] draws its images.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Faces per image: a random number in 1..=max_faces, placed without overlapping.
    pub max_faces: u32,
    /// Head height as a fraction of the image's smaller side, drawn from this range.
    pub face_fraction: (f32, f32),
    /// Largest rotation, degrees (either way).
    pub max_rotation_deg: f32,
    /// Standard deviation of the Gaussian pixel noise (0..255 scale).
    pub noise_std: f32,
    /// Expression intensity range; low values give faces close to neutral (ambiguous).
    pub intensity: (f32, f32),
}

impl Default for SyntheticConfig {
    /// Camera-like frames: 640x480, one face of 30-70% of the height.
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            max_faces: 1,
            face_fraction: (0.3, 0.7),
            max_rotation_deg: 12.0,
            noise_std: 6.0,
            intensity: (0.25, 1.0),
        }
    }
}

impl SyntheticConfig {
    /// Face crops for a training set: `side` x `side`, the head filling 75-95% of it.
    pub fn crops(side: u32) -> Self {
        Self {
            width: side,
            height: side,
            max_faces: 1,
            face_fraction: (0.75, 0.95),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::invalid("synthetic config", reason));
        let (lo, hi) = self.face_fraction;
        let (ilo, ihi) = self.intensity;
        if self.width < 16 || self.height < 16 {
            return bad(format!(
                "{}x{} is too small; faces need at least 16x16 pixels",
                self.width, self.height
            ));
        }
        if self.max_faces == 0 {
            return bad("max_faces must be at least 1".into());
        }
        if !(0.05..=1.0).contains(&lo) || !(lo..=1.0).contains(&hi) {
            return bad(format!(
                "face_fraction {lo}..{hi} must be an increasing range within 0.05..1"
            ));
        }
        if !(0.0..=1.0).contains(&ilo) || !(ilo..=1.0).contains(&ihi) {
            return bad(format!(
                "intensity {ilo}..{ihi} must be an increasing range within 0..1"
            ));
        }
        if !(self.noise_std >= 0.0 && self.max_rotation_deg >= 0.0) {
            return bad("noise_std and max_rotation_deg must not be negative".into());
        }
        Ok(())
    }
}

/// One generated image and the faces in it.
#[derive(Debug, Clone)]
pub struct SyntheticImage {
    /// RGB pixels.
    pub image: ImageBuf,
    /// The faces drawn, with their expressions.
    pub faces: Vec<TruthFace>,
}

/// A seeded generator of face images with known expressions.
#[derive(Debug)]
pub struct SyntheticFaces {
    config: SyntheticConfig,
    rng: StdRng,
}

impl SyntheticFaces {
    /// A generator; the same `seed` gives the same images.
    pub fn new(config: SyntheticConfig, seed: u64) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// An image with random expressions (uniform over [`Expression::ALL`]).
    pub fn sample(&mut self) -> SyntheticImage {
        let expression = Expression::ALL[self.rng.random_range(0..Expression::ALL.len())];
        self.sample_with(expression)
    }

    /// An image whose first face shows `expression` (others, if any, are random).
    pub fn sample_with(&mut self, expression: Expression) -> SyntheticImage {
        let (w, h) = (self.config.width, self.config.height);
        let mut image = self.background();
        let count = self.rng.random_range(1..=self.config.max_faces);
        let mut faces: Vec<TruthFace> = Vec::new();
        for i in 0..count {
            let expression = if i == 0 {
                expression
            } else {
                Expression::ALL[self.rng.random_range(0..Expression::ALL.len())]
            };
            // A few tries to place a face that overlaps none drawn so far.
            for _ in 0..8 {
                let (params, intensity) = self.random_params(expression);
                let half = params.height / 2.0;
                let probe = FaceBox {
                    x: params.center.0 - half,
                    y: params.center.1 - half,
                    width: 2.0 * half,
                    height: 2.0 * half,
                };
                if faces.iter().any(|f| f.face.iou(&probe) > 0.0) {
                    continue;
                }
                let face = draw_face(&mut image, &params).expect("validated parameters");
                faces.push(TruthFace {
                    face,
                    expression,
                    intensity,
                });
                break;
            }
        }
        self.add_noise(&mut image);
        debug_assert_eq!((image.width, image.height), (w, h));
        SyntheticImage { image, faces }
    }

    pub(super) fn random_params(&mut self, expression: Expression) -> (FaceParams, f32) {
        let c = &self.config;
        let (w, h) = (c.width as f32, c.height as f32);
        let rng = &mut self.rng;
        let height = w.min(h) * rng.random_range(c.face_fraction.0..=c.face_fraction.1);
        let aspect = rng.random_range(0.72..0.9);
        // Keep the head inside the image, but let it touch the borders.
        let (mx, my) = ((w - height * aspect) / 2.0, (h - height) / 2.0);
        let center = (
            w / 2.0 + rng.random_range(-1.0..=1.0) * mx.max(0.0),
            h / 2.0 + rng.random_range(-1.0..=1.0) * my.max(0.0),
        );
        let rotation = rng.random_range(-1.0..=1.0) * c.max_rotation_deg.to_radians();
        let intensity = rng.random_range(c.intensity.0..=c.intensity.1);
        let mut shape = FaceShape::of(expression, intensity);
        let mut jitter = |v: &mut f32, amount: f32| *v += rng.random_range(-amount..=amount);
        jitter(&mut shape.brow_raise, 0.025);
        jitter(&mut shape.brow_tilt, 0.025);
        jitter(&mut shape.eye_open, 0.12);
        jitter(&mut shape.mouth_width, 0.04);
        jitter(&mut shape.mouth_curve, 0.025);
        shape.mouth_open = (shape.mouth_open + rng.random_range(-0.02..=0.02)).max(0.0);
        // Skin from pale to dark along a warm ramp; hair dark to blond or grey.
        let tone = rng.random_range(0.0f32..=1.0);
        let skin = [
            (250.0 - 150.0 * tone) as u8,
            (215.0 - 150.0 * tone) as u8,
            (185.0 - 140.0 * tone) as u8,
        ];
        let hair_tone = rng.random_range(0.0f32..=1.0);
        let hair = if rng.random_bool(0.15) {
            [170, 170, 165]
        } else {
            [
                (20.0 + 150.0 * hair_tone * hair_tone) as u8,
                (15.0 + 110.0 * hair_tone * hair_tone) as u8,
                (10.0 + 50.0 * hair_tone) as u8,
            ]
        };
        let params = FaceParams {
            center,
            height,
            aspect,
            rotation,
            skin,
            hair,
            hairline: rng.random_range(0.5..0.8),
            gaze: (rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0)),
            shape,
        };
        (params, intensity)
    }

    /// A two-colour gradient with a few soft blobs.
    pub(super) fn background(&mut self) -> ImageBuf {
        let (w, h) = (self.config.width, self.config.height);
        let rng = &mut self.rng;
        let colour = |rng: &mut StdRng| [0; 3].map(|_: u8| rng.random_range(20.0f32..235.0));
        let (a, b) = (colour(rng), colour(rng));
        let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..3)
            .map(|_| {
                let c = colour(rng);
                (
                    rng.random_range(0.0..w as f32),
                    rng.random_range(0.0..h as f32),
                    rng.random_range(0.05..0.3) * w.min(h) as f32,
                    c,
                )
            })
            .collect();
        let diagonal = (w + h) as f32;
        let mut px = vec![0.0f32; w as usize * h as usize * 3];
        for y in 0..h {
            for x in 0..w {
                let t = (x + y) as f32 / diagonal;
                let at = (y as usize * w as usize + x as usize) * 3;
                for k in 0..3 {
                    px[at + k] = a[k] * (1.0 - t) + b[k] * t;
                }
            }
        }
        // Blobs fade as exp(-d^2 / r^2): beyond 3 r they no longer change a pixel.
        for &(bx, by, r, c) in &blobs {
            let x0 = (bx - 3.0 * r).max(0.0) as u32;
            let x1 = ((bx + 3.0 * r).max(0.0) as u32).min(w);
            let y0 = (by - 3.0 * r).max(0.0) as u32;
            let y1 = ((by + 3.0 * r).max(0.0) as u32).min(h);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d2 = ((x as f32 - bx).powi(2) + (y as f32 - by).powi(2)) / (r * r);
                    let alpha = 0.6 * (-d2).exp();
                    let at = (y as usize * w as usize + x as usize) * 3;
                    for (v, c) in px[at..at + 3].iter_mut().zip(c) {
                        *v = *v * (1.0 - alpha) + c * alpha;
                    }
                }
            }
        }
        let pixels = px.into_iter().map(|v| v as u8).collect();
        ImageBuf::new(w, h, PixelFormat::Rgb8, pixels).expect("size matches")
    }

    pub(super) fn add_noise(&mut self, image: &mut ImageBuf) {
        let std = self.config.noise_std;
        if std <= 0.0 {
            return;
        }
        // Per-pixel noise from a fast generator seeded by the main one (same seed, same
        // images), roughly Gaussian: the sum of four uniforms.
        let mut noise = SplitMix64(self.rng.random());
        let unit = |bits: u64| (bits & 0xFFFF) as f32 / 65536.0;
        for px in image.pixels.chunks_exact_mut(3) {
            // One luma-like value per pixel plus a little per channel (sensor-like).
            let r = noise.next();
            let common =
                (unit(r) + unit(r >> 16) + unit(r >> 32) + unit(r >> 48) - 2.0) * 3f32.sqrt();
            let r = noise.next();
            for (k, v) in px.iter_mut().enumerate() {
                let own = (unit(r >> (16 * k)) - 0.5) * 12f32.sqrt();
                let n = (common + 0.3 * own) * std;
                *v = (f32::from(*v) + n).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// SplitMix64, a tiny fast generator for pixel noise.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_seeded_and_inside_the_image() {
        let config = SyntheticConfig::crops(48);
        let mut a = SyntheticFaces::new(config.clone(), 3).unwrap();
        let mut b = SyntheticFaces::new(config, 3).unwrap();
        for _ in 0..20 {
            let (x, y) = (a.sample(), b.sample());
            assert_eq!(x.image, y.image);
            assert_eq!(x.faces, y.faces);
            assert_eq!(x.faces.len(), 1);
            let f = x.faces[0].face;
            let c = (f.x + f.width / 2.0, f.y + f.height / 2.0);
            assert!((0.0..48.0).contains(&c.0) && (0.0..48.0).contains(&c.1));
            assert!((0.25..=1.0).contains(&x.faces[0].intensity));
        }
        let mut c = SyntheticFaces::new(SyntheticConfig::crops(48), 4).unwrap();
        assert_ne!(
            c.sample().image,
            SyntheticFaces::new(SyntheticConfig::crops(48), 3)
                .unwrap()
                .sample()
                .image
        );
    }

    #[test]
    fn several_faces_do_not_overlap() {
        let config = SyntheticConfig {
            width: 320,
            height: 240,
            max_faces: 3,
            face_fraction: (0.2, 0.3),
            ..SyntheticConfig::default()
        };
        let mut faces = SyntheticFaces::new(config, 11).unwrap();
        let mut total = 0;
        for _ in 0..10 {
            let s = faces.sample_with(Expression::Happy);
            assert_eq!(s.faces[0].expression, Expression::Happy);
            total += s.faces.len();
            for (i, a) in s.faces.iter().enumerate() {
                for b in &s.faces[i + 1..] {
                    assert!(a.face.iou(&b.face) < 0.2);
                }
            }
        }
        assert!(total > 10, "some images should have more than one face");
    }

    #[test]
    fn bad_configs_are_refused() {
        let tiny = SyntheticConfig {
            width: 8,
            ..SyntheticConfig::default()
        };
        assert!(SyntheticFaces::new(tiny, 0).is_err());
        let backwards = SyntheticConfig {
            intensity: (0.9, 0.1),
            ..SyntheticConfig::default()
        };
        let err = SyntheticFaces::new(backwards, 0).unwrap_err();
        assert!(err.to_string().contains("intensity"), "{err}");
    }

    /// The face cut out at its true box (as a detector would), 16x16 grey levels,
    /// standardised (skin tone and brightness removed).
    fn features(sample: &SyntheticImage) -> Vec<f32> {
        let face = &sample.faces[0].face;
        let crop = firmware_config::preprocess::crop_face(&sample.image.view(), face, 0.0).unwrap();
        let side = crop.width as usize;
        let grey: Vec<f32> = (0..16 * 16)
            .map(|i| {
                let (x, y) = ((i % 16) * side / 16, (i / 16) * side / 16);
                let p = &crop.pixels[(y * side + x) * 3..];
                0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
            })
            .collect();
        let mean = grey.iter().sum::<f32>() / grey.len() as f32;
        let var = grey.iter().map(|g| (g - mean).powi(2)).sum::<f32>() / grey.len() as f32;
        grey.iter()
            .map(|g| (g - mean) / var.sqrt().max(1.0))
            .collect()
    }

    #[test]
    fn expressions_are_learnable_but_not_trivially() {
        // Nearest class mean on aligned crops: the classes must carry signal far above chance
        // (20%), yet rotation, shape jitter, weak intensities and noise keep such a trivial
        // model from being perfect.
        let mut faces = SyntheticFaces::new(SyntheticConfig::crops(32), 9).unwrap();
        let dim = 16 * 16;
        let mut means = vec![vec![0.0f32; dim]; Expression::ALL.len()];
        for (c, &e) in Expression::ALL.iter().enumerate() {
            for _ in 0..60 {
                for (m, f) in means[c].iter_mut().zip(features(&faces.sample_with(e))) {
                    *m += f / 60.0;
                }
            }
        }
        let (mut right, mut total) = (0, 0);
        for (c, &e) in Expression::ALL.iter().enumerate() {
            for _ in 0..60 {
                let f = features(&faces.sample_with(e));
                let dist =
                    |m: &Vec<f32>| m.iter().zip(&f).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
                let best = (0..means.len())
                    .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                    .unwrap();
                right += usize::from(best == c);
                total += 1;
            }
        }
        let accuracy = right as f32 / total as f32;
        eprintln!("nearest-mean accuracy on synthetic faces: {accuracy:.2}");
        assert!(accuracy > 0.45 && accuracy < 0.9, "accuracy {accuracy}");
    }
}
