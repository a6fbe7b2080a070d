//! UltraFace (Ultra-Light-Fast-Generic-Face-Detector-1MB) run with tract: input resize and
//! normalisation, SSD prior boxes, box decoding and non-maximum suppression.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use firmware_config::manifest::{
    ColorChannels, Normalization, Preprocessing, ResizeFilter, TensorLayout,
};
use firmware_config::preprocess::{FaceBox, ImageView};
use tract_onnx::prelude::*;

use super::{Detection, nms};
use crate::error::{Error, Result};

/// Strides of the four feature maps and the prior box sizes (input pixels) at each.
const STRIDES: [u32; 4] = [8, 16, 32, 64];
const MIN_BOXES: [&[f32]; 4] = [
    &[10.0, 16.0, 24.0],
    &[32.0, 48.0],
    &[64.0, 96.0],
    &[128.0, 192.0, 256.0],
];
/// SSD box-coding variances: centre offsets and log-size offsets.
const CENTER_VARIANCE: f32 = 0.1;
const SIZE_VARIANCE: f32 = 0.2;

/// A loaded UltraFace model and its post-processing parameters.
#[derive(Debug)]
pub struct UltraFace {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    input: Preprocessing,
    /// (cx, cy, w, h) relative to the input size.
    priors: Vec<[f32; 4]>,
    scores_ix: usize,
    boxes_ix: usize,
    /// Faces scoring below this are dropped.
    pub score_threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_iou: f32,
    /// Faces whose shorter side is below this many frame pixels are dropped.
    pub min_face_size: u32,
}

impl UltraFace {
    /// Loads an UltraFace ONNX file (RFB-320 or slim-320 or a fixed-size variant: the input size
    /// is read from the model, 320x240 when the model leaves it open).
    pub fn load(
        path: &Path,
        score_threshold: f32,
        nms_iou: f32,
        min_face_size: u32,
    ) -> Result<Self> {
        let model_err = |e: TractError| Error::model(path, e);
        if !path.is_file() {
            return Err(Error::model(
                path,
                "no such file: pass the UltraFace ONNX file (version-RFB-320_simplified.onnx)",
            ));
        }
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(model_err)?;
        let fact = model.input_fact(0).map_err(model_err)?.clone();
        let (width, height) = match fact.shape.as_concrete_finite() {
            Ok(Some(s)) if s.len() == 4 && s[1] == 3 => (s[3], s[2]),
            _ => (320, 240),
        };
        model
            .set_input_fact(0, f32::fact([1, 3, height, width]).into())
            .map_err(model_err)?;
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(model_err)?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .unwrap_or(&model.node(o.node).name)
                    .to_string()
            })
            .collect();
        let find = |name: &str, fallback: usize| {
            outputs
                .iter()
                .position(|o| o == name)
                .or((outputs.len() == 2).then_some(fallback))
                .ok_or_else(|| {
                    Error::model(
                        path,
                        format!(
                            "no `{name}` output among {outputs:?}: is this an UltraFace model?"
                        ),
                    )
                })
        };
        let (scores_ix, boxes_ix) = (find("scores", 0)?, find("boxes", 1)?);
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(model_err)?;
        let priors = priors(width as u32, height as u32);
        let input = Preprocessing {
            input_width: width as u32,
            input_height: height as u32,
            channels: ColorChannels::Rgb,
            layout: TensorLayout::Nchw,
            resize: ResizeFilter::Bilinear,
            crop_margin: 0.0,
            normalization: Normalization::new(1.0, vec![127.0; 3], vec![128.0; 3]),
        };
        let detector = Self {
            path: path.to_path_buf(),
            plan,
            input,
            priors,
            scores_ix,
            boxes_ix,
            score_threshold,
            nms_iou,
            min_face_size,
        };
        // Fail now, not on the first frame, if the outputs do not match the priors.
        let probe = vec![128u8; width * height * 3];
        let view = ImageView::new(
            width as u32,
            height as u32,
            firmware_config::preprocess::PixelFormat::Rgb8,
            &probe,
        )
        .map_err(|e| Error::model(path, e))?;
        detector.detect(&view)?;
        Ok(detector)
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The network input size (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        (self.input.input_width, self.input.input_height)
    }

    /// Finds faces in a frame (gray frames are fed as three equal channels).
    pub fn detect(&self, frame: &ImageView<'_>) -> Result<Vec<Detection>> {
        let data = self
            .input
            .apply(frame)
            .map_err(|e| Error::invalid("frame", e.to_string()))?;
        let shape = self.input.input_shape(1);
        let tensor = Tensor::from_shape(&shape, &data).map_err(|e| Error::model(&self.path, e))?;
        let outputs = self
            .plan
            .run(tvec!(tensor.into_tvalue()))
            .map_err(|e| Error::model(&self.path, e))?;
        let view = |ix: usize| {
            outputs[ix]
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .map_err(|e| Error::model(&self.path, e))
        };
        let (scores, boxes) = (view(self.scores_ix)?, view(self.boxes_ix)?);
        let n = self.priors.len();
        if scores.len() != n * 2 || boxes.len() != n * 4 {
            return Err(Error::model(
                &self.path,
                format!(
                    "{} scores and {} box values for {n} prior boxes (expected [1,{n},2] and [1,{n},4])",
                    scores.len(),
                    boxes.len()
                ),
            ));
        }
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let mut found = Vec::new();
        for (i, prior) in self.priors.iter().enumerate() {
            let score = scores[i * 2 + 1];
            if score < self.score_threshold {
                continue;
            }
            let b = &boxes[i * 4..i * 4 + 4];
            let cx = prior[0] + b[0] * CENTER_VARIANCE * prior[2];
            let cy = prior[1] + b[1] * CENTER_VARIANCE * prior[3];
            let w = prior[2] * (b[2] * SIZE_VARIANCE).exp();
            let h = prior[3] * (b[3] * SIZE_VARIANCE).exp();
            let x0 = (cx - w / 2.0).clamp(0.0, 1.0) * fw;
            let y0 = (cy - h / 2.0).clamp(0.0, 1.0) * fh;
            let x1 = (cx + w / 2.0).clamp(0.0, 1.0) * fw;
            let y1 = (cy + h / 2.0).clamp(0.0, 1.0) * fh;
            let face = FaceBox {
                x: x0,
                y: y0,
                width: x1 - x0,
                height: y1 - y0,
            };
            if face.width.min(face.height) >= self.min_face_size as f32 {
                found.push(Detection { face, score });
            }
        }
        Ok(nms(found, self.nms_iou))
    }
}

/// The SSD prior boxes of UltraFace for an input of `width` x `height`, in the order of the
/// model's outputs: per stride, row by row, column by column, each min size.
///
/// A prior's centre is `((i + 0.5) * stride / width, (j + 0.5) * stride / height)`, as in the
/// training code; where the input is a multiple of the stride this is DATA.md's
/// `((i + 0.5) / fm_w, (j + 0.5) / fm_h)`. (At 320x240 the two differ for the 8- and 4-row
/// maps of strides 32 and 64, whose last row only partly covers the image.)
pub fn priors(width: u32, height: u32) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (stride, sizes) in STRIDES.iter().zip(MIN_BOXES) {
        let fm_w = width.div_ceil(*stride);
        let fm_h = height.div_ceil(*stride);
        for j in 0..fm_h {
            for i in 0..fm_w {
                let cx = (i as f32 + 0.5) * *stride as f32 / width as f32;
                let cy = (j as f32 + 0.5) * *stride as f32 / height as f32;
                for size in sizes {
                    out.push([
                        cx.clamp(0.0, 1.0),
                        cy.clamp(0.0, 1.0),
                        (size / width as f32).clamp(0.0, 1.0),
                        (size / height as f32).clamp(0.0, 1.0),
                    ]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priors_match_the_model_outputs() {
        let p = priors(320, 240);
        assert_eq!(p.len(), 4420);
        // First prior: stride 8, cell (0, 0), 10 px.
        assert_eq!(p[0], [4.0 / 320.0, 4.0 / 240.0, 10.0 / 320.0, 10.0 / 240.0]);
        // Last prior: stride 64, cell (4, 3), 256 px (its height clamped to the image).
        let last = p[4419];
        assert!((last[0] - 288.0 / 320.0).abs() < 1e-6 && (last[1] - 224.0 / 240.0).abs() < 1e-6);
        assert!((last[2] - 0.8).abs() < 1e-6 && (last[3] - 1.0).abs() < 1e-6);
    }
}
