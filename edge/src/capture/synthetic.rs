//! Procedurally drawn cartoon faces with known expressions.
//!
//! Used three ways: as a frame source when no camera is at hand (`--source synthetic`), as
//! ground truth for pipeline tests (each [`Frame`] carries its [`TruthFace`]s), and by the
//! workstation tools to generate the demo's labelled training set ([`write_dataset`]).
//!
//! A face is a head ellipse with hair, two eyes, two brows and a mouth. An [`Expression`]
//! moves the brows (height, inner-end tilt), the eyes (openness) and the mouth (width,
//! curvature, opening) away from the neutral face; [`FaceShape::of`] scales the move by an
//! intensity in 0..=1, so weak expressions are close to neutral and genuinely ambiguous.
//! Position, size, aspect, rotation, skin and hair colour, gaze, per-feature jitter,
//! background and pixel noise are random, so a classifier must learn the features, not
//! the pixels.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Frame, FrameSource, SourceCounters, StopToken, bad_frame};
use crate::Error;

/// The expressions the generator draws (a subset of FER2013's classes, same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expression {
    /// Brows lowered and pulled together, narrowed eyes, tight mouth.
    Angry,
    /// Smiling mouth (open at high intensity), squinting eyes.
    Happy,
    /// The reference face.
    Neutral,
    /// Inner brow ends raised, drooping mouth corners.
    Sad,
    /// Raised brows, wide eyes, round open mouth.
    Surprise,
}

impl Expression {
    /// All expressions, in alphabetical order of their names (ImageFolder class order).
    pub const ALL: [Expression; 5] = [
        Expression::Angry,
        Expression::Happy,
        Expression::Neutral,
        Expression::Sad,
        Expression::Surprise,
    ];

    /// Lower-case class name, as FER2013's folders spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Angry => "angry",
            Self::Happy => "happy",
            Self::Neutral => "neutral",
            Self::Sad => "sad",
            Self::Surprise => "surprise",
        }
    }

    /// The expression with this class name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl std::fmt::Display for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A face whose box and expression are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthFace {
    /// Axis-aligned box around the (rotated) head, in frame pixels.
    pub face: FaceBox,
    /// The expression drawn.
    pub expression: Expression,
    /// How strongly (0 = neutral face, 1 = the full prototype).
    pub intensity: f32,
}

/// Feature geometry of one face, in units of the head's half-width (x) and half-height (y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceShape {
    /// Brow lift above the neutral position (negative: lowered).
    pub brow_raise: f32,
    /// Inner brow end lowered by this much (positive: angry V; negative: sad slant).
    pub brow_tilt: f32,
    /// Eye opening relative to neutral (1 = neutral).
    pub eye_open: f32,
    /// Mouth half-width.
    pub mouth_width: f32,
    /// Corners above the centre by this much (positive: smile; negative: frown).
    pub mouth_curve: f32,
    /// Height of the mouth opening (0 = closed).
    pub mouth_open: f32,
}

impl FaceShape {
    const NEUTRAL: FaceShape = FaceShape {
        brow_raise: 0.0,
        brow_tilt: 0.0,
        eye_open: 1.0,
        mouth_width: 0.36,
        mouth_curve: 0.0,
        mouth_open: 0.0,
    };

    fn prototype(expression: Expression) -> Self {
        match expression {
            Expression::Neutral => Self::NEUTRAL,
            Expression::Happy => Self {
                brow_raise: 0.04,
                brow_tilt: 0.0,
                eye_open: 0.55,
                mouth_width: 0.5,
                mouth_curve: 0.2,
                mouth_open: 0.12,
            },
            Expression::Sad => Self {
                brow_raise: 0.03,
                brow_tilt: -0.14,
                eye_open: 0.7,
                mouth_width: 0.32,
                mouth_curve: -0.16,
                mouth_open: 0.0,
            },
            Expression::Surprise => Self {
                brow_raise: 0.16,
                brow_tilt: 0.0,
                eye_open: 1.7,
                mouth_width: 0.2,
                mouth_curve: 0.0,
                mouth_open: 0.3,
            },
            Expression::Angry => Self {
                brow_raise: -0.06,
                brow_tilt: 0.16,
                eye_open: 0.65,
                mouth_width: 0.3,
                mouth_curve: -0.06,
                mouth_open: 0.04,
            },
        }
    }

    /// The neutral shape moved towards `expression`'s prototype by `intensity` (clamped to
    /// 0..=1).
    pub fn of(expression: Expression, intensity: f32) -> Self {
        let t = intensity.clamp(0.0, 1.0);
        let (n, p) = (Self::NEUTRAL, Self::prototype(expression));
        let lerp = |a: f32, b: f32| a + (b - a) * t;
        Self {
            brow_raise: lerp(n.brow_raise, p.brow_raise),
            brow_tilt: lerp(n.brow_tilt, p.brow_tilt),
            eye_open: lerp(n.eye_open, p.eye_open),
            mouth_width: lerp(n.mouth_width, p.mouth_width),
            mouth_curve: lerp(n.mouth_curve, p.mouth_curve),
            mouth_open: lerp(n.mouth_open, p.mouth_open),
        }
    }
}

/// Everything [`draw_face`] needs to draw one face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceParams {
    /// Head centre, frame pixels.
    pub center: (f32, f32),
    /// Head height in pixels.
    pub height: f32,
    /// Head width / height (about 0.7..0.9).
    pub aspect: f32,
    /// Clockwise rotation in radians.
    pub rotation: f32,
    /// Skin colour.
    pub skin: [u8; 3],
    /// Hair colour.
    pub hair: [u8; 3],
    /// Hairline height (fraction of the half-height above the centre, about 0.5..0.8).
    pub hairline: f32,
    /// Pupil offset within the eye, each in -1..=1.
    pub gaze: (f32, f32),
    /// Feature geometry (the expression).
    pub shape: FaceShape,
}

/// Draws one face onto an RGB image (anti-aliased, 4 samples a pixel) and returns the
/// axis-aligned box around the head, clipped to nothing: it may extend past the edges.
pub fn draw_face(image: &mut ImageBuf, params: &FaceParams) -> Result<FaceBox, Error> {
    if image.format != PixelFormat::Rgb8 {
        return Err(bad_frame(
            "RGB",
            image.width,
            image.height,
            "draw_face draws on Rgb8 images only",
        ));
    }
    if !(params.height > 1.0 && params.aspect > 0.1) {
        return Err(Error::invalid(
            "synthetic face",
            format!(
                "face height {} px and aspect {} are too small to draw",
                params.height, params.aspect
            ),
        ));
    }
    let half_h = params.height / 2.0;
    let half_w = half_h * params.aspect;
    let (sin, cos) = params.rotation.sin_cos();
    let ext_x = ((half_w * cos).powi(2) + (half_h * sin).powi(2)).sqrt();
    let ext_y = ((half_w * sin).powi(2) + (half_h * cos).powi(2)).sqrt();
    let (cx, cy) = params.center;
    let face = FaceBox {
        x: cx - ext_x,
        y: cy - ext_y,
        width: 2.0 * ext_x,
        height: 2.0 * ext_y,
    };
    let painter = Painter::new(params, half_w, half_h);
    let (w, h) = (image.width as i64, image.height as i64);
    let x0 = ((cx - ext_x).floor() as i64).clamp(0, w);
    let x1 = ((cx + ext_x).ceil() as i64 + 1).clamp(0, w);
    let y0 = ((cy - ext_y).floor() as i64).clamp(0, h);
    let y1 = ((cy + ext_y).ceil() as i64 + 1).clamp(0, h);
    const SUB: [f32; 2] = [0.25, 0.75];
    for py in y0..y1 {
        for px in x0..x1 {
            let at = ((py * w + px) * 3) as usize;
            let under = [
                f32::from(image.pixels[at]),
                f32::from(image.pixels[at + 1]),
                f32::from(image.pixels[at + 2]),
            ];
            let mut sum = [0.0f32; 3];
            for sy in SUB {
                for sx in SUB {
                    // Frame point -> head coordinates (unrotated, in half-width/height units).
                    let dx = px as f32 + sx - cx;
                    let dy = py as f32 + sy - cy;
                    let lx = (dx * cos + dy * sin) / half_w;
                    let ly = (-dx * sin + dy * cos) / half_h;
                    let c = painter.colour(lx, ly).unwrap_or(under);
                    for (acc, v) in sum.iter_mut().zip(c) {
                        *acc += v;
                    }
                }
            }
            for (dst, acc) in image.pixels[at..at + 3].iter_mut().zip(sum) {
                *dst = (acc / 4.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(face)
}

/// The colour function of one face in head coordinates.
struct Painter {
    skin: [f32; 3],
    hair: [f32; 3],
    ink: [f32; 3],
    lip: [f32; 3],
    hairline: f32,
    gaze: (f32, f32),
    shape: FaceShape,
    /// Half-height / half-width: converts y distances to x units for stroke widths.
    ratio: f32,
}

const WHITE: [f32; 3] = [245.0, 245.0, 240.0];
const MOUTH_INSIDE: [f32; 3] = [70.0, 15.0, 25.0];
const EYE_X: f32 = 0.36;
const EYE_Y: f32 = -0.12;
const BROW_Y: f32 = -0.36;
const MOUTH_Y: f32 = 0.46;

impl Painter {
    fn new(p: &FaceParams, half_w: f32, half_h: f32) -> Self {
        let f = |c: [u8; 3]| c.map(f32::from);
        let skin = f(p.skin);
        Self {
            skin,
            hair: f(p.hair),
            ink: [35.0, 25.0, 25.0],
            lip: [skin[0] * 0.75 + 30.0, skin[1] * 0.5, skin[2] * 0.5],
            hairline: p.hairline,
            gaze: p.gaze,
            shape: p.shape,
            ratio: half_h / half_w,
        }
    }

    /// Colour at head point (x, y), or `None` outside the head.
    fn colour(&self, x: f32, y: f32) -> Option<[f32; 3]> {
        let r2 = x * x + y * y;
        if r2 > 1.0 {
            return None;
        }
        // Strokes are sized in y units; `sy` rescales an x distance into them.
        let sy = 1.0 / self.ratio;
        let s = &self.shape;
        // Hair: the cap above a hairline that dips at the temples.
        if y < -self.hairline + 0.25 * x * x {
            return Some(self.hair);
        }
        // Brows: thick segments, inner end at |x| = 0.12, outer at 0.62.
        let brow_base = BROW_Y - s.brow_raise;
        for side in [-1.0f32, 1.0] {
            let inner = (side * 0.12, brow_base + s.brow_tilt);
            let outer = (side * 0.62, brow_base - 0.25 * s.brow_tilt);
            if segment_distance(
                (x * sy, y),
                (inner.0 * sy, inner.1),
                (outer.0 * sy, outer.1),
            ) < 0.045
            {
                return Some(self.ink);
            }
        }
        // Eyes: white ellipse, dark outline, pupil.
        for side in [-1.0f32, 1.0] {
            let (ex, ey) = (x - side * EYE_X, y - EYE_Y);
            let (rx, ry) = (0.17, 0.075 * s.eye_open.max(0.05));
            let d = ((ex / rx).powi(2) + (ey / ry).powi(2)).sqrt();
            let outline = 0.035 / ry.max(0.02);
            if d <= 1.0 + outline {
                let pupil_r = 0.075f32.min(ry * 1.1);
                let (gx, gy) = (self.gaze.0 * 0.07, self.gaze.1 * 0.4 * ry);
                let pd = ((ex - gx) * sy).powi(2) + (ey - gy).powi(2);
                if d > 1.0 || pd < (pupil_r * sy.min(1.0)).powi(2) {
                    return Some(self.ink);
                }
                return Some(WHITE);
            }
        }
        // Mouth: a centre curve with corners `mouth_curve` above the middle; an opening
        // below (70%) and above (30%) it, elliptic in profile.
        let hw = s.mouth_width.max(0.05);
        let t = x / hw;
        if t.abs() <= 1.15 {
            let centre = MOUTH_Y + s.mouth_curve * (0.5 - t * t);
            let bulge = (1.0 - t * t).max(0.0).sqrt();
            let top = centre - 0.3 * s.mouth_open * bulge;
            let bottom = centre + 0.7 * s.mouth_open * bulge;
            let lip = 0.03;
            // Vertical distance shrunk by the curve's slope approximates the true distance.
            let slope = 2.0 * s.mouth_curve * t / hw;
            let norm = (1.0 + (slope / sy).powi(2)).sqrt();
            if t.abs() <= 1.0 {
                if y > top && y < bottom {
                    return Some(MOUTH_INSIDE);
                }
                if (y - top).abs() / norm < lip || (y - bottom).abs() / norm < lip {
                    return Some(self.lip);
                }
            } else if (y - centre).abs() / norm < lip * (1.15 - t.abs()) / 0.15 {
                // Tapered corners.
                return Some(self.lip);
            }
        }
        // Skin, a little darker towards the rim for some depth.
        let shade = 1.0 - 0.18 * r2 * r2;
        Some(self.skin.map(|c| c * shade))
    }
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let (apx, apy) = (p.0 - a.0, p.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 {
        ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((apx - t * abx).powi(2) + (apy - t * aby).powi(2)).sqrt()
}

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

    fn random_params(&mut self, expression: Expression) -> (FaceParams, f32) {
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
    fn background(&mut self) -> ImageBuf {
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

    fn add_noise(&mut self, image: &mut ImageBuf) {
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

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    /// The dataset's root folder.
    pub root: PathBuf,
    /// Images per class (in [`Expression::ALL`] order).
    pub per_class: Vec<(Expression, usize)>,
}

/// Writes a balanced, labelled ImageFolder: `root/<class>/<index>.png`, `per_class` crops of
/// each expression drawn with `config` (see [`SyntheticConfig::crops`]) and `seed`.
pub fn write_dataset(
    root: &Path,
    per_class: usize,
    config: &SyntheticConfig,
    seed: u64,
) -> Result<DatasetSummary, Error> {
    let mut faces = SyntheticFaces::new(config.clone(), seed)?;
    let mut written = Vec::new();
    for expression in Expression::ALL {
        let dir = root.join(expression.name());
        std::fs::create_dir_all(&dir)
            .map_err(|source| Error::io("creating the class folder", dir.clone(), source))?;
        for i in 0..per_class {
            let sample = faces.sample_with(expression);
            let path = dir.join(format!("{i:05}.png"));
            super::rgb_image(&sample.image)
                .save(&path)
                .map_err(|source| Error::Image {
                    path: path.clone(),
                    source,
                })?;
        }
        written.push((expression, per_class));
    }
    Ok(DatasetSummary {
        root: root.to_path_buf(),
        per_class: written,
    })
}

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

    fn params(shape: FaceShape) -> FaceParams {
        FaceParams {
            center: (32.0, 32.0),
            height: 56.0,
            aspect: 0.8,
            rotation: 0.0,
            skin: [220, 180, 150],
            hair: [40, 30, 20],
            hairline: 0.65,
            gaze: (0.0, 0.0),
            shape,
        }
    }

    fn canvas() -> ImageBuf {
        ImageBuf::new(64, 64, PixelFormat::Rgb8, vec![0; 64 * 64 * 3]).unwrap()
    }

    fn is_dark(img: &ImageBuf, x: u32, y: u32) -> bool {
        let at = ((y * img.width + x) * 3) as usize;
        img.pixels[at..at + 3].iter().all(|&v| v < 110)
    }

    #[test]
    fn names_round_trip() {
        for e in Expression::ALL {
            assert_eq!(Expression::from_name(e.name()), Some(e));
        }
        assert_eq!(Expression::from_name("disgust"), None);
        let mut names: Vec<_> = Expression::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            Expression::ALL.map(|e| e.name()),
            "ALL must be alphabetical"
        );
    }

    #[test]
    fn zero_intensity_is_neutral_and_shapes_differ() {
        for e in Expression::ALL {
            assert_eq!(
                FaceShape::of(e, 0.0),
                FaceShape::of(Expression::Neutral, 1.0)
            );
        }
        let happy = FaceShape::of(Expression::Happy, 1.0);
        let sad = FaceShape::of(Expression::Sad, 1.0);
        let surprise = FaceShape::of(Expression::Surprise, 1.0);
        let angry = FaceShape::of(Expression::Angry, 1.0);
        assert!(happy.mouth_curve > 0.0 && sad.mouth_curve < 0.0);
        assert!(surprise.mouth_open > happy.mouth_open && surprise.eye_open > 1.0);
        assert!(angry.brow_tilt > 0.0 && sad.brow_tilt < 0.0);
    }

    #[test]
    fn box_is_the_head_and_pixels_change_only_inside() {
        let mut img = canvas();
        let face = draw_face(&mut img, &params(FaceShape::of(Expression::Neutral, 1.0))).unwrap();
        assert!((face.width - 44.8).abs() < 0.01 && (face.height - 56.0).abs() < 0.01);
        assert!((face.x - 9.6).abs() < 0.01 && (face.y - 4.0).abs() < 0.01);
        for y in 0..64 {
            for x in 0..64 {
                let at = ((y * 64 + x) * 3) as usize;
                let changed = img.pixels[at..at + 3] != [0, 0, 0];
                let inside = (x as f32 + 1.0) > face.x
                    && (x as f32) < face.x + face.width
                    && (y as f32 + 1.0) > face.y
                    && (y as f32) < face.y + face.height;
                assert!(
                    !changed || inside,
                    "pixel ({x},{y}) changed outside the box"
                );
            }
        }
        // The head's centre is skin-coloured (bright), the corners untouched.
        assert!(!is_dark(&img, 32, 38));
        assert_eq!(&img.pixels[..3], &[0, 0, 0]);
    }

    #[test]
    fn surprise_opens_the_mouth_and_smiles_curve_up() {
        // Mouth centre at y = 32 + 0.46 * 28 ~ 45; below it is skin unless the mouth is open.
        let mut neutral = canvas();
        draw_face(
            &mut neutral,
            &params(FaceShape::of(Expression::Neutral, 1.0)),
        )
        .unwrap();
        let mut surprise = canvas();
        draw_face(
            &mut surprise,
            &params(FaceShape::of(Expression::Surprise, 1.0)),
        )
        .unwrap();
        assert!(!is_dark(&neutral, 32, 48));
        assert!(is_dark(&surprise, 32, 48));
        // A smile's corners sit higher than its middle; a frown's lower.
        let lip_row = |img: &ImageBuf, x: u32| {
            (36..60).find(|&y| {
                let at = ((y * 64 + x) * 3) as usize;
                img.pixels[at + 1] < 120 && img.pixels[at] > img.pixels[at + 1]
            })
        };
        let mut happy = canvas();
        draw_face(&mut happy, &params(FaceShape::of(Expression::Happy, 1.0))).unwrap();
        let mut sad = canvas();
        draw_face(&mut sad, &params(FaceShape::of(Expression::Sad, 1.0))).unwrap();
        let (hc, hm) = (
            lip_row(&happy, 32 - 9).unwrap(),
            lip_row(&happy, 32).unwrap(),
        );
        let (sc, sm) = (lip_row(&sad, 32 - 7).unwrap(), lip_row(&sad, 32).unwrap());
        assert!(
            hc < hm,
            "smile corner row {hc} should be above the middle {hm}"
        );
        assert!(
            sc > sm,
            "frown corner row {sc} should be below the middle {sm}"
        );
    }

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
        assert!(SyntheticSource::new(SyntheticConfig::default(), 0, Some(0.0)).is_err());
    }

    #[test]
    fn dataset_is_an_image_folder() {
        let dir = tempfile::tempdir().unwrap();
        let summary = write_dataset(dir.path(), 2, &SyntheticConfig::crops(32), 5).unwrap();
        assert_eq!(summary.per_class.len(), 5);
        for e in Expression::ALL {
            let img = image::open(dir.path().join(e.name()).join("00001.png")).unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
        }
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
