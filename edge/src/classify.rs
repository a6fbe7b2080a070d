//! Expression classification: crop every face with the manifest's margin, preprocess it with
//! the manifest's one implementation (`firmware_config`), and classify all faces of a frame in
//! one tract batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use firmware_config::config::{ClassifierConfig, DetectorConfig};
use firmware_config::flash;
use firmware_config::image_folder::{ImageClass, list_image_folder};
use firmware_config::manifest::ModelManifest;
use firmware_config::preprocess::{FaceBox, ImageBuf, ImageView, board_crop};
use serde::Serialize;
use tract_onnx::prelude::*;

use crate::detect::Detector;
use crate::error::{Error, Result};
use crate::margin::Framing;

/// Faces beyond this many in one frame are classified in further batches.
pub const MAX_BATCH: usize = 16;

/// One operator's share of a model's run in tract ([`Classifier::profile`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTime {
    /// tract's name for the operator after optimisation (e.g. `Conv`, `OptMatMul`).
    pub op: String,
    /// Nodes of the plan running it.
    pub nodes: usize,
    /// Milliseconds per run over all those nodes.
    pub mean_ms: f64,
    /// Fraction of the time spent in all nodes.
    pub share: f64,
}

/// The class probabilities of one face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Probabilities in the manifest's class order.
    pub probabilities: Vec<f32>,
    /// Index of the most probable class.
    pub class_index: usize,
    /// Its probability.
    pub confidence: f32,
}

impl Classification {
    /// Wraps a probability vector (at least one value).
    pub fn from_probabilities(probabilities: Vec<f32>) -> Self {
        let (class_index, confidence) = probabilities
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        Self {
            probabilities,
            class_index,
            confidence,
        }
    }
}

/// Reads a model manifest: `*.json` as JSON, anything else in flash encoding
/// (`manifest.bin`). The schema version and every field are checked.
pub fn read_manifest(path: &Path) -> Result<ModelManifest> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let fail = |reason: String| Error::Contract {
        path: path.to_path_buf(),
        reason,
    };
    let manifest = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice::<ModelManifest>(&bytes)
            .map_err(|e| fail(format!("not a model manifest: {e}")))?
    } else {
        flash::decode_manifest(&bytes)
            .map_err(|e| fail(format!("not a flash-encoded model manifest: {e}")))?
    };
    manifest.validate().map_err(|e| {
        fail(format!(
            "{e} (re-export the model with this toolkit release)"
        ))
    })?;
    Ok(manifest)
}

/// Reads a manifest file and finds the model it describes: `model` if given, else the
/// manifest's `model_file` beside the manifest.
pub fn manifest_and_model(
    manifest_path: &Path,
    model: Option<&Path>,
) -> Result<(ModelManifest, PathBuf)> {
    let manifest = read_manifest(manifest_path)?;
    let model = match model {
        Some(model) => model.to_path_buf(),
        None => manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&manifest.model_file),
    };
    Ok((manifest, model))
}

/// A loaded expression classifier with its manifest and effective thresholds.
pub struct Classifier {
    model_path: PathBuf,
    model_bytes: Vec<u8>,
    manifest: ModelManifest,
    thresholds: Vec<f32>,
    output_ix: usize,
    max_batch: Mutex<usize>,
    plans: Mutex<HashMap<usize, Arc<TypedRunnableModel>>>,
    crop_margin: f32,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model_path", &self.model_path)
            .field("classes", &self.manifest.class_names)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads `model_path` as described by `manifest`, with the low-confidence thresholds
    /// resolved per class: `config`'s override, else the manifest's trained threshold, else
    /// `config.default_threshold`.
    pub fn load(
        model_path: &Path,
        manifest: ModelManifest,
        config: &ClassifierConfig,
    ) -> Result<Self> {
        manifest.validate().map_err(|e| Error::Contract {
            path: model_path.to_path_buf(),
            reason: format!("its manifest is unusable: {e}"),
        })?;
        for t in &config.class_thresholds {
            if manifest.class_index(&t.class).is_none() {
                return Err(Error::invalid(
                    "classifier.class_thresholds",
                    format!(
                        "class {:?} is not one of the model's {:?}",
                        t.class, manifest.class_names
                    ),
                ));
            }
        }
        let model_bytes =
            std::fs::read(model_path).map_err(|e| Error::io("reading", model_path, e))?;
        let thresholds = manifest
            .class_names
            .iter()
            .enumerate()
            .map(|(i, name)| config.threshold_for(name, manifest.trained_threshold(i)))
            .collect();
        let model = tract_onnx::onnx()
            .model_for_read(&mut &model_bytes[..])
            .map_err(|e| Error::model(model_path, e))?;
        let label = |o: &OutletId| {
            model
                .outlet_label(*o)
                .unwrap_or(&model.node(o.node).name)
                .to_string()
        };
        let inputs: Vec<String> = model
            .input_outlets()
            .map_err(|e| Error::model(model_path, e))?
            .iter()
            .map(label)
            .collect();
        if inputs.len() != 1 || inputs[0] != manifest.input_name {
            return Err(Error::model(
                model_path,
                format!(
                    "model inputs {inputs:?}, but the manifest names one input {:?}: wrong model or manifest",
                    manifest.input_name
                ),
            ));
        }
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(|e| Error::model(model_path, e))?
            .iter()
            .map(label)
            .collect();
        let output_ix = outputs
            .iter()
            .position(|o| *o == manifest.output_name)
            .ok_or_else(|| {
                Error::model(
                    model_path,
                    format!(
                        "no output {:?} (the manifest's output_name) among {outputs:?}",
                        manifest.output_name
                    ),
                )
            })?;
        let classifier = Self {
            model_path: model_path.to_path_buf(),
            model_bytes,
            thresholds,
            output_ix,
            max_batch: Mutex::new(MAX_BATCH),
            plans: Mutex::new(HashMap::new()),
            crop_margin: manifest.preprocessing.crop_margin,
            manifest,
        };
        // Compile and run the one-face plan now, so a model that does not fit its manifest
        // fails at start-up rather than on the first face.
        let len = classifier.manifest.preprocessing.input_len();
        classifier.run_raw(&vec![0.0; len], 1)?;
        Ok(classifier)
    }

    /// Loads the manifest file `manifest_path` and its model: `model` if given, else the one
    /// named in the manifest, beside it ([`manifest_and_model`]).
    pub fn from_manifest_file(
        manifest_path: &Path,
        model: Option<&Path>,
        config: &ClassifierConfig,
    ) -> Result<Self> {
        let (manifest, model) = manifest_and_model(manifest_path, model)?;
        Self::load(&model, manifest, config)
    }

    /// Uses the margin measured for the board's detector (`fer-edge margin`, the config's
    /// `detector.crop_margin`) instead of the manifest's, when there is one.
    pub fn with_detector_margin(mut self, detector: &DetectorConfig) -> Self {
        if let Some(margin) = detector.crop_margin {
            self.crop_margin = margin;
        }
        self
    }

    /// The margin faces are cropped with: the detector's measured one, else the manifest's.
    pub fn crop_margin(&self) -> f32 {
        self.crop_margin
    }

    /// The manifest the model was loaded with.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The effective low-confidence threshold of every class, in class order.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// `true` when the top probability is below its class's threshold: the face is logged.
    pub fn is_low_confidence(&self, c: &Classification) -> bool {
        c.confidence < self.thresholds[c.class_index]
    }

    fn plan(&self, batch: usize) -> Result<Arc<TypedRunnableModel>> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&batch) {
            return Ok(plan.clone());
        }
        let shape = self.manifest.preprocessing.input_shape(batch);
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &self.model_bytes[..])
            .and_then(|mut m| {
                m.set_input_fact(0, f32::fact(shape).into())?;
                m.into_optimized()?.into_runnable()
            })
            .map_err(|e| {
                Error::model(
                    &self.model_path,
                    format!(
                        "cannot run it on input {shape:?} (the manifest's preprocessing): {e:#}"
                    ),
                )
            })?;
        plans.insert(batch, plan.clone());
        Ok(plan)
    }

    /// tract's own per-node profile of the one-face plan, summed by operator: `iterations`
    /// timed runs (after 5 untimed ones) on a constant input, heaviest operator first.
    pub fn profile(&self, iterations: usize) -> Result<Vec<OpTime>> {
        use tract_onnx::tract_core::plan::{SimpleState, eval};
        let plan = self.plan(1)?;
        let len = self.manifest.preprocessing.input_len();
        let input = Tensor::from_shape(
            &self.manifest.preprocessing.input_shape(1),
            &vec![0.1f32; len],
        )
        .map_err(|e| Error::invalid("model input", format!("{e:#}")))?;
        let mut state = SimpleState::new(&plan).map_err(|e| Error::model(&self.model_path, e))?;
        let mut per_node: HashMap<usize, (String, std::time::Duration)> = HashMap::new();
        let runs = iterations.max(1);
        for i in 0..runs + 5 {
            state
                .run_plan_with_eval(
                    tvec!(input.clone().into_tvalue()),
                    |ctx, op_state, node, inputs| {
                        let start = std::time::Instant::now();
                        let out = eval(ctx, op_state, node, inputs);
                        if i >= 5 {
                            let entry = per_node.entry(node.id).or_insert_with(|| {
                                (node.op().name().to_string(), Default::default())
                            });
                            entry.1 += start.elapsed();
                        }
                        out
                    },
                )
                .map_err(|e| Error::model(&self.model_path, e))?;
        }
        let total: f64 = per_node.values().map(|(_, t)| t.as_secs_f64()).sum();
        let mut by_op: Vec<OpTime> = Vec::new();
        for (op, time) in per_node.into_values() {
            let ms = time.as_secs_f64() * 1e3 / runs as f64;
            match by_op.iter_mut().find(|o| o.op == op) {
                Some(o) => {
                    o.nodes += 1;
                    o.mean_ms += ms;
                }
                None => by_op.push(OpTime {
                    op,
                    nodes: 1,
                    mean_ms: ms,
                    share: 0.0,
                }),
            }
        }
        for o in &mut by_op {
            o.share = if total > 0.0 {
                o.mean_ms / (total * 1e3 / runs as f64)
            } else {
                0.0
            };
        }
        by_op.sort_by(|a, b| b.mean_ms.total_cmp(&a.mean_ms));
        Ok(by_op)
    }

    /// Runs the model on `batch` samples already preprocessed into `input` (batch-major) and
    /// returns the `output_name` values, `batch * classes` of them.
    pub fn run_raw(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let shape = self.manifest.preprocessing.input_shape(batch);
        let tensor = Tensor::from_shape(&shape, input)
            .map_err(|e| Error::invalid("model input", format!("{e:#}")))?;
        let plan = self.plan(batch)?;
        let outputs = plan
            .run(tvec!(tensor.into_tvalue()))
            .map_err(|e| Error::model(&self.model_path, e))?;
        let values = outputs[self.output_ix]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|e| Error::model(&self.model_path, e))?;
        let classes = self.manifest.class_names.len();
        if values.len() != batch * classes {
            return Err(Error::model(
                &self.model_path,
                format!(
                    "output {:?} has {} values for {batch} face(s), expected {classes} per face (one per class in the manifest)",
                    self.manifest.output_name,
                    values.len()
                ),
            ));
        }
        Ok(values.to_vec())
    }

    /// Classifies face crops (any size and pixel format): all in one batch, up to
    /// [`MAX_BATCH`] at a time.
    pub fn classify_crops(&self, crops: &[ImageView<'_>]) -> Result<Vec<Classification>> {
        let pre = &self.manifest.preprocessing;
        let len = pre.input_len();
        let classes = self.manifest.class_names.len();
        let mut out = Vec::with_capacity(crops.len());
        let mut start = 0;
        while start < crops.len() {
            let max_batch = *self.max_batch.lock().unwrap_or_else(|p| p.into_inner());
            let chunk = &crops[start..(start + max_batch).min(crops.len())];
            let mut input = vec![0f32; len * chunk.len()];
            for (crop, slot) in chunk.iter().zip(input.chunks_exact_mut(len)) {
                pre.apply_into(crop, slot)
                    .map_err(|e| Error::invalid("face crop", e.to_string()))?;
            }
            let values = match self.run_raw(&input, chunk.len()) {
                Ok(v) => v,
                // A model exported with a fixed batch of one: classify one face at a time.
                Err(_) if chunk.len() > 1 => {
                    *self.max_batch.lock().unwrap_or_else(|p| p.into_inner()) = 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.extend(
                values
                    .chunks_exact(classes)
                    .map(|p| Classification::from_probabilities(p.to_vec())),
            );
            start += chunk.len();
        }
        Ok(out)
    }

    /// Crops every face of `frame` (square, with [`Classifier::crop_margin`]; a box that covers the
    /// whole frame is the frame itself, see [`board_crop`]) and classifies them in one batch.
    /// Returns the crops (for the field log) and their classifications.
    pub fn classify_faces(
        &self,
        frame: &ImageView<'_>,
        faces: &[FaceBox],
    ) -> Result<(Vec<ImageBuf>, Vec<Classification>)> {
        let margin = self.crop_margin;
        let crops = faces
            .iter()
            .map(|f| {
                board_crop(frame, f, margin).map_err(|e| Error::invalid("face box", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let views: Vec<ImageView<'_>> = crops.iter().map(ImageBuf::view).collect();
        let classes = self.classify_crops(&views)?;
        Ok((crops, classes))
    }

    /// Runs the manifest's self-test: the stored input file (little-endian f32 in the input
    /// layout) must give the stored output within the tolerance. Returns a one-line summary.
    pub fn self_test(&self, dir: &Path) -> Result<String> {
        let test = &self.manifest.self_test;
        let path = dir.join(&test.input_file);
        let fail = |reason: String| Error::Bundle {
            path: path.clone(),
            reason,
        };
        if test.input_file.is_empty() {
            return Err(fail("the manifest has no self-test input".into()));
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let len = self.manifest.preprocessing.input_len();
        if bytes.len() % (4 * len) != 0 || bytes.is_empty() {
            return Err(fail(format!(
                "{} bytes is not a whole number of {len}-value f32 inputs",
                bytes.len()
            )));
        }
        let input: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let output = self.run_raw(&input, input.len() / len)?;
        if output.len() != test.expected_output.len() {
            return Err(fail(format!(
                "the model gave {} values, the manifest expects {}",
                output.len(),
                test.expected_output.len()
            )));
        }
        let worst = output
            .iter()
            .zip(&test.expected_output)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |m, d| {
                if m.is_nan() || d.is_nan() {
                    f32::NAN
                } else {
                    m.max(d)
                }
            });
        if worst.is_nan() || worst > test.tolerance {
            return Err(fail(format!(
                "self-test output differs by {worst:e}, more than the tolerance {:e}: the model computes something else than at export",
                test.tolerance
            )));
        }
        Ok(format!(
            "self-test passed: max difference {worst:.2e} <= {:.2e}",
            test.tolerance
        ))
    }
}

/// Accuracy on one class of an image folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    /// Class (folder) name.
    pub class: String,
    /// Images of the class.
    pub images: u64,
    /// Of them, classified as the class.
    pub correct: u64,
    /// `correct / images`.
    pub accuracy: f64,
}

/// What [`Classifier::evaluate_folder`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FolderReport {
    /// Images classified.
    pub images: u64,
    /// Of them, correct.
    pub correct: u64,
    /// Overall accuracy.
    pub accuracy: f64,
    /// Mean of the per-class accuracies (robust to class imbalance).
    pub balanced_accuracy: f64,
    /// Mean over the classes present of the F1 score (a face not found counts against its
    /// class's recall).
    pub macro_f1: f64,
    /// Images in which the detector found no face (counted as wrong).
    pub no_face: u64,
    /// Per class, in the manifest's class order (classes without a folder are left out).
    pub per_class: Vec<ClassReport>,
    /// `confusion[true][predicted]`, manifest class order.
    pub confusion: Vec<Vec<u64>>,
}

impl Classifier {
    /// Classifies every image of an ImageFolder whose class folders are named like the
    /// manifest's classes: detect (the best face), crop, preprocess, classify, just as on the
    /// board; `framing` says how an image reaches the detector (a face-crop folder with a
    /// detector: placed in a camera-sized frame). `per_class` caps the images taken from each
    /// class (the first ones by name).
    pub fn evaluate_folder(
        &self,
        detector: &Detector,
        root: &Path,
        per_class: Option<usize>,
        framing: Framing,
    ) -> Result<FolderReport> {
        let names = &self.manifest.class_names;
        let n = names.len();
        let mut confusion = vec![vec![0u64; n]; n];
        let mut counts = vec![0u64; n];
        let mut no_face = 0;
        let classes = list_image_folder(root).map_err(|e| Error::io("listing", root, e))?;
        if classes.iter().all(|c| c.images.is_empty()) {
            return Err(Error::invalid(
                format!("image folder {}", root.display()),
                "no <class>/<image>.png|jpg found: expected one sub-folder per class",
            ));
        }
        for ImageClass { name, images } in classes {
            let truth = self.manifest.class_index(&name).ok_or_else(|| {
                Error::invalid(
                    format!("class folder {}", root.join(&name).display()),
                    format!("{name:?} is not one of the model's classes {names:?}"),
                )
            })?;
            for path in images.iter().take(per_class.unwrap_or(usize::MAX)) {
                let image = crate::load_image(path)?;
                counts[truth] += 1;
                let (frame, found) = framing.detect(detector, &image)?;
                let Some(face) = found else {
                    no_face += 1;
                    continue;
                };
                let (_, result) = self.classify_faces(&frame.view(), &[face])?;
                confusion[truth][result[0].class_index] += 1;
            }
        }
        let per_class: Vec<ClassReport> = (0..n)
            .filter(|&c| counts[c] > 0)
            .map(|c| ClassReport {
                class: names[c].clone(),
                images: counts[c],
                correct: confusion[c][c],
                accuracy: confusion[c][c] as f64 / counts[c] as f64,
            })
            .collect();
        let images: u64 = counts.iter().sum();
        let correct: u64 = (0..n).map(|c| confusion[c][c]).sum();
        let f1 = |c: usize| {
            let tp = confusion[c][c] as f64;
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let (p, r) = (tp / predicted.max(1) as f64, tp / counts[c] as f64);
            if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            }
        };
        let present: Vec<usize> = (0..n).filter(|&c| counts[c] > 0).collect();
        let macro_f1 = present.iter().map(|&c| f1(c)).sum::<f64>() / present.len().max(1) as f64;
        Ok(FolderReport {
            images,
            correct,
            accuracy: if images > 0 {
                correct as f64 / images as f64
            } else {
                0.0
            },
            balanced_accuracy: per_class.iter().map(|c| c.accuracy).sum::<f64>()
                / per_class.len().max(1) as f64,
            macro_f1,
            no_face,
            per_class,
            confusion,
        })
    }
}
