//! Procedurally drawn cartoon faces with known expressions.
//!
//! Used three ways: as a frame source when no camera is at hand (`--source synthetic`,
//! [`crate::capture::synthetic`]), as ground truth for pipeline tests (each frame carries its
//! [`TruthFace`]s), and by the workstation tools to generate the demo's labelled training set
//! ([`write_dataset`]).
//!
//! * [`face`]: drawing one face. A face is a head ellipse with hair, two eyes, two brows and a
//!   mouth. An [`Expression`] moves the brows (height, inner-end tilt), the eyes (openness)
//!   and the mouth (width, curvature, opening) away from the neutral face; [`FaceShape::of`]
//!   scales the move by an intensity in 0..=1, so weak expressions are close to neutral and
//!   genuinely ambiguous.
//! * [`generator`]: whole images ([`SyntheticFaces`]). Position, size, aspect, rotation, skin
//!   and hair colour, gaze, per-feature jitter, background and pixel noise are random, so a
//!   classifier must learn the features, not the pixels.
//! * [`motion`]: faces moving across a still background ([`MovingFaces`]), for detection
//!   intervals and tracking.
//! * [`dataset`]: a labelled ImageFolder of face crops on disk.

pub mod dataset;
pub mod face;
pub mod generator;
pub mod motion;

pub use dataset::{DatasetSummary, write_dataset};
pub use face::{FaceParams, FaceShape, draw_face};
pub use generator::{SyntheticConfig, SyntheticFaces, SyntheticImage};
pub use motion::MovingFaces;

use firmware_config::preprocess::FaceBox;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
