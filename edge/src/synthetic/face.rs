//! Drawing one face with a given expression: its feature geometry ([`FaceShape`]), its pose
//! and colours ([`FaceParams`]), and the anti-aliased painter ([`draw_face`]).

use firmware_config::preprocess::{FaceBox, ImageBuf, PixelFormat};

use super::Expression;
use crate::Error;

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
        return Err(Error::invalid(
            format!("RGB frame ({}x{})", image.width, image.height),
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
}
