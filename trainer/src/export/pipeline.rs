//! The whole export: fp32 ONNX, parity check against burn, calibration, int8 ONNX (integer
//! QLinearConv or QDQ, [`Int8Form`]), manifests with self-test vectors, and a report (JSON +
//! markdown) in one folder.
//!
//! Files written into the output folder:
//! * `model_fp32.onnx`, `model_fp32.manifest.json`
//! * `model_int8.onnx`, `model_int8.manifest.json` (when calibration images are given)
//! * `selftest_input.bin`: one preprocessed input, little-endian f32 in the input layout
//! * `export_report.json`, `export_report.md`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use firmware_config::manifest::{ModelManifest, Precision, Preprocessing, SelfTest, TensorLayout};
use firmware_config::{SCHEMA_VERSION, Sha256Digest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Error;
use super::calib::{CalibMethod, TensorStats, calibrate};
use super::graph::Graph;
use super::model_graph::{INPUT_NAME, LOGITS_NAME, PROBS_NAME, model_graph};
use super::quant::{ActivationQuant, Int8Form};
use super::runtime::TractModel;
use crate::eval::{EvalReport, argmax_rows};
use crate::model::{Model, ModelConfig};

/// The fp32 model file.
pub const FP32_FILE: &str = "model_fp32.onnx";
/// The int8 model file.
pub const INT8_FILE: &str = "model_int8.onnx";
/// The self-test input shared by both manifests.
pub const SELFTEST_FILE: &str = "selftest_input.bin";
/// The report, as JSON.
pub const REPORT_JSON: &str = "export_report.json";
/// The report, as markdown.
pub const REPORT_MD: &str = "export_report.md";
/// Largest |tract - burn| allowed on the logits of the fp32 file.
pub const PARITY_TOLERANCE: f32 = 1e-4;
/// Self-test tolerance of the fp32 file (float summation order differs between CPUs).
pub const FP32_SELFTEST_TOLERANCE: f32 = 1e-4;
/// Self-test tolerance of the int8 file: a rounding flip at one QuantizeLinear on another CPU
/// moves the output by a quantization step, not by float noise.
pub const INT8_SELFTEST_TOLERANCE: f32 = 1e-2;
/// Batch size of calibration and evaluation runs.
const BATCH: usize = 64;

/// The manifest file beside a model file.
pub fn manifest_file(model_file: &str) -> String {
    format!("{}.manifest.json", model_file.trim_end_matches(".onnx"))
}

/// How the activation ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibChoice {
    /// Observed min/max.
    MinMax,
    /// The 99.99th percentile at each end.
    Percentile,
    /// Both; with an evaluation set the more accurate one wins, without one percentile.
    Auto,
}

impl CalibChoice {
    fn candidates(self) -> Vec<CalibMethod> {
        let percentile = CalibMethod::Percentile(CalibMethod::DEFAULT_PERCENTILE);
        match self {
            CalibChoice::MinMax => vec![CalibMethod::MinMax],
            CalibChoice::Percentile => vec![percentile],
            CalibChoice::Auto => vec![percentile, CalibMethod::MinMax],
        }
    }
}

/// Preprocessed, labeled images (`[N, C, H, W]` flat).
#[derive(Debug, Clone)]
pub struct LabeledTensors {
    /// Where they came from (for the report).
    pub source: PathBuf,
    /// The inputs.
    pub inputs: Vec<f32>,
    /// One class index per image.
    pub labels: Vec<usize>,
}

/// Everything an export needs besides the model.
#[derive(Debug, Clone)]
pub struct ExportRequest<'a> {
    /// The output folder (created if missing).
    pub out_dir: &'a Path,
    /// The preprocessing the model was trained with.
    pub preprocessing: Preprocessing,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Per-class thresholds from training.
    pub class_thresholds: Vec<f32>,
    /// The training run's id.
    pub run_id: String,
    /// Preprocessed calibration images (`[N, C, H, W]` flat); `None`: fp32 only.
    pub calibration: Option<&'a [f32]>,
    /// Where the calibration images came from (for the report).
    pub calibration_source: Option<PathBuf>,
    /// Calibration method.
    pub calib_choice: CalibChoice,
    /// The form of the int8 file.
    pub int8_form: Int8Form,
    /// Evaluation images for the accuracy comparison.
    pub eval: Option<&'a LabeledTensors>,
    /// Batch-1 runs per file for the latency figures (0: no latency measurement).
    pub latency_runs: usize,
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the output folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// One calibration method tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibTrial {
    /// Method name.
    pub method: String,
    /// int8 evaluation with it (when an evaluation set was given).
    pub eval: Option<EvalSummary>,
}

/// Accuracy figures of one model on the evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Images evaluated.
    pub count: usize,
    /// Fraction correct.
    pub accuracy: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
}

impl From<&EvalReport> for EvalSummary {
    fn from(r: &EvalReport) -> Self {
        Self {
            count: r.count,
            accuracy: r.accuracy,
            macro_f1: r.macro_f1,
        }
    }
}

/// Calibrated range and quantization of one activation tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRow {
    /// Tensor name.
    pub tensor: String,
    /// Smallest calibration value.
    pub min: f32,
    /// Largest calibration value.
    pub max: f32,
    /// Range used (chosen method).
    pub range: (f32, f32),
    /// uint8 scale.
    pub scale: f32,
    /// uint8 zero point.
    pub zero_point: u8,
}

/// Batch-1 latency of one file in tract on this machine (single thread).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// File name.
    pub file: String,
    /// Median milliseconds per face.
    pub median_ms: f64,
    /// Fastest run, milliseconds.
    pub min_ms: f64,
    /// Runs timed.
    pub runs: usize,
}

/// What an export did and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportReport {
    /// Training run id.
    pub run_id: String,
    /// Model configuration.
    pub model: ModelConfig,
    /// Files written (models, self-test input).
    pub files: Vec<FileEntry>,
    /// Parameters in the fp32 graph.
    pub parameters: usize,
    /// Largest |tract - burn| on the logits of the self-test batch (fp32 file).
    pub parity_max_abs_diff: f32,
    /// Largest |int8 - fp32| on the probabilities of the self-test batch.
    pub int8_probs_max_abs_diff: Option<f32>,
    /// Calibration folder and image count.
    pub calibration: Option<(PathBuf, usize)>,
    /// The calibration methods tried, in order.
    pub calib_trials: Vec<CalibTrial>,
    /// The method used for the int8 file.
    pub calib_method: Option<String>,
    /// The form of the int8 file.
    #[serde(default)]
    pub int8_form: Option<Int8Form>,
    /// Per-tensor activation ranges (chosen method).
    pub activations: Vec<ActivationRow>,
    /// Evaluation folder.
    pub eval_source: Option<PathBuf>,
    /// fp32 accuracy on it.
    pub fp32_eval: Option<EvalSummary>,
    /// int8 accuracy on it.
    pub int8_eval: Option<EvalSummary>,
    /// Latency of each file.
    pub latency: Vec<Latency>,
}

/// The result of [`export_model`].
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The fp32 ONNX file.
    pub fp32_path: PathBuf,
    /// The int8 ONNX file, when calibrated.
    pub int8_path: Option<PathBuf>,
    /// The fp32 manifest.
    pub fp32_manifest: ModelManifest,
    /// The int8 manifest.
    pub int8_manifest: Option<ModelManifest>,
    /// The report (also written as JSON and markdown).
    pub report: ExportReport,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn write(path: &Path, bytes: &[u8]) -> Result<FileEntry, Error> {
    std::fs::write(path, bytes).map_err(|e| Error::write(path, e))?;
    Ok(FileEntry {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: bytes.len() as u64,
        sha256: hex::encode(sha256(bytes)),
    })
}

/// Runs `model` over `inputs` in batches; returns the rows of output `index`.
pub fn run_batched(model: &TractModel, inputs: &[f32], index: usize) -> Result<Vec<f32>, Error> {
    let per = model.sample_len();
    let mut out = Vec::new();
    for chunk in inputs.chunks(BATCH * per) {
        let mut outputs = model.run(chunk)?;
        out.append(&mut outputs[index].1);
    }
    Ok(out)
}

/// Accuracy of a loaded model on labeled images.
pub fn evaluate_tract(
    model: &TractModel,
    set: &LabeledTensors,
    class_names: &[String],
) -> Result<EvalReport, Error> {
    let probs = run_batched(model, &set.inputs, 1)?;
    let predicted = argmax_rows(&probs, class_names.len());
    Ok(EvalReport::from_predictions(
        class_names,
        &set.labels,
        &predicted,
    ))
}

/// Median and minimum milliseconds of batch-1 runs of `model` on `input`.
pub fn time_batch1(model: &TractModel, input: &[f32], runs: usize) -> Result<(f64, f64), Error> {
    for _ in 0..runs.div_ceil(10).max(3) {
        model.run(input)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        model.run(input)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}

fn burn_logits<B: Backend>(
    model: &Model<B>,
    inputs: &[f32],
    shape: [usize; 4],
) -> Result<Vec<f32>, Error> {
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(TensorData::new(inputs.to_vec(), shape), &device);
    model
        .forward(x)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("reading burn's logits: {e:?}")))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// A deterministic input in the normalised value range, for exports without images.
fn synthetic_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + 13) % 255) as f32 / 127.5 - 1.0)
        .collect()
}

/// Exports `model` as described in the module documentation.
pub fn export_model<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    req: &ExportRequest<'_>,
) -> Result<ExportOutcome, Error> {
    check_request(config, req)?;
    std::fs::create_dir_all(req.out_dir).map_err(|e| Error::write(req.out_dir, e))?;
    let sample_shape = [
        config.input_channels,
        config.input_height,
        config.input_width,
    ];
    let per: usize = sample_shape.iter().product();
    let graph = model_graph(model, config)?;

    // Self-test batch: real images when there are some (up to 8), the first is the stored input.
    let images = req
        .calibration
        .or(req.eval.map(|e| e.inputs.as_slice()))
        .filter(|s| !s.is_empty());
    let check_batch: Vec<f32> = match images {
        Some(s) => s[..s.len().min(8 * per)].to_vec(),
        None => synthetic_input(per),
    };
    let n_check = check_batch.len() / per;
    let selftest_input = &check_batch[..per];
    let selftest_bytes: Vec<u8> = selftest_input
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let selftest_entry = write(&req.out_dir.join(SELFTEST_FILE), &selftest_bytes)?;

    let fp32_path = req.out_dir.join(FP32_FILE);
    let fp32_bytes = graph.to_onnx_bytes()?;
    let fp32_entry = write(&fp32_path, &fp32_bytes)?;
    let fp32 = TractModel::load(&fp32_bytes, &fp32_path, &sample_shape, &[])?;
    let fp32_out = fp32.run(&check_batch)?;
    let fp32_logits = fp32.output(&fp32_out, LOGITS_NAME)?;
    let fp32_probs = fp32.output(&fp32_out, PROBS_NAME)?;
    let reference = burn_logits(
        model,
        &check_batch,
        [n_check, sample_shape[0], sample_shape[1], sample_shape[2]],
    )?;
    let parity = max_abs_diff(fp32_logits, &reference);
    if parity.is_nan() || parity > PARITY_TOLERANCE {
        return Err(Error::Invalid(format!(
            "{}: tract's logits differ from burn's by {parity} (allowed {PARITY_TOLERANCE}); the export \
             does not reproduce the model and was not used",
            fp32_path.display()
        )));
    }
    let classes = config.num_classes;
    let fp32_manifest = manifest(
        req,
        FP32_FILE,
        &fp32_bytes,
        Precision::Fp32,
        &selftest_entry,
        &fp32_probs[..classes],
        FP32_SELFTEST_TOLERANCE,
    );
    write_json(&req.out_dir.join(manifest_file(FP32_FILE)), &fp32_manifest)?;

    let mut report = ExportReport {
        run_id: req.run_id.clone(),
        model: config.clone(),
        files: vec![fp32_entry, selftest_entry.clone()],
        parameters: graph.parameter_count(),
        parity_max_abs_diff: parity,
        int8_probs_max_abs_diff: None,
        calibration: None,
        calib_trials: Vec::new(),
        calib_method: None,
        int8_form: None,
        activations: Vec::new(),
        eval_source: req.eval.map(|e| e.source.clone()),
        fp32_eval: None,
        int8_eval: None,
        latency: Vec::new(),
    };
    if let Some(eval) = req.eval {
        report.fp32_eval = Some((&evaluate_tract(&fp32, eval, &req.class_names)?).into());
    }
    if req.latency_runs > 0 {
        let (median_ms, min_ms) = time_batch1(&fp32, selftest_input, req.latency_runs)?;
        report.latency.push(Latency {
            file: FP32_FILE.into(),
            median_ms,
            min_ms,
            runs: req.latency_runs,
        });
    }

    let mut int8_path = None;
    let mut int8_manifest = None;
    if let Some(calib) = req.calibration {
        let tensors = req.int8_form.calibrated_tensors(&graph);
        let stats = calibrate(&graph, &sample_shape, calib, BATCH, &tensors)?;
        report.calibration = Some((
            req.calibration_source.clone().unwrap_or_default(),
            calib.len() / per,
        ));
        let mut best: Option<(Graph, Vec<u8>, CalibMethod, Option<EvalSummary>)> = None;
        for method in req.calib_choice.candidates() {
            let acts = activation_params(&stats, method);
            let qgraph = req.int8_form.quantize(&graph, &acts)?;
            let bytes = qgraph.to_onnx_bytes()?;
            let eval = match req.eval {
                Some(eval) => {
                    let m = TractModel::load(&bytes, Path::new(INT8_FILE), &sample_shape, &[])?;
                    Some(EvalSummary::from(&evaluate_tract(
                        &m,
                        eval,
                        &req.class_names,
                    )?))
                }
                None => None,
            };
            report.calib_trials.push(CalibTrial {
                method: method.name(),
                eval: eval.clone(),
            });
            let better = match (&best, &eval) {
                (None, _) => true,
                (Some((_, _, _, Some(b))), Some(e)) => {
                    (e.accuracy, e.macro_f1) > (b.accuracy, b.macro_f1)
                }
                _ => false,
            };
            if better {
                best = Some((qgraph, bytes, method, eval));
            }
        }
        let (_, bytes, method, eval) = best.expect("at least one calibration candidate");
        report.calib_method = Some(method.name());
        report.int8_form = Some(req.int8_form);
        report.int8_eval = eval;
        report.activations = activation_rows(&stats, method);
        let path = req.out_dir.join(INT8_FILE);
        report.files.push(write(&path, &bytes)?);
        let int8 = TractModel::load(&bytes, &path, &sample_shape, &[])?;
        let int8_out = int8.run(&check_batch)?;
        let int8_probs = int8.output(&int8_out, PROBS_NAME)?;
        report.int8_probs_max_abs_diff = Some(max_abs_diff(int8_probs, fp32_probs));
        let m = manifest(
            req,
            INT8_FILE,
            &bytes,
            Precision::Int8,
            &selftest_entry,
            &int8_probs[..classes],
            INT8_SELFTEST_TOLERANCE,
        );
        write_json(&req.out_dir.join(manifest_file(INT8_FILE)), &m)?;
        if req.latency_runs > 0 {
            let (median_ms, min_ms) = time_batch1(&int8, selftest_input, req.latency_runs)?;
            report.latency.push(Latency {
                file: INT8_FILE.into(),
                median_ms,
                min_ms,
                runs: req.latency_runs,
            });
        }
        int8_path = Some(path);
        int8_manifest = Some(m);
    }
    write_json(&req.out_dir.join(REPORT_JSON), &report)?;
    let md = report_markdown(&report);
    let md_path = req.out_dir.join(REPORT_MD);
    std::fs::write(&md_path, md).map_err(|e| Error::write(&md_path, e))?;
    Ok(ExportOutcome {
        fp32_path,
        int8_path,
        fp32_manifest,
        int8_manifest,
        report,
    })
}

fn check_request(config: &ModelConfig, req: &ExportRequest<'_>) -> Result<(), Error> {
    let pre = &req.preprocessing;
    pre.validate()
        .map_err(|e| Error::Invalid(format!("preprocessing: {e}")))?;
    let expected = [
        config.input_channels,
        config.input_height,
        config.input_width,
    ];
    let given = [
        pre.channels.count(),
        pre.input_height as usize,
        pre.input_width as usize,
    ];
    if expected != given || pre.layout != TensorLayout::Nchw {
        return Err(Error::Invalid(format!(
            "the preprocessing gives {:?} {given:?} inputs but the model takes NCHW {expected:?}",
            pre.layout
        )));
    }
    if req.class_names.len() != config.num_classes {
        return Err(Error::Invalid(format!(
            "{} class names for a model with {} classes",
            req.class_names.len(),
            config.num_classes
        )));
    }
    if !req.class_thresholds.is_empty() && req.class_thresholds.len() != config.num_classes {
        return Err(Error::Invalid(format!(
            "{} class thresholds for a model with {} classes",
            req.class_thresholds.len(),
            config.num_classes
        )));
    }
    let per = pre.input_len();
    if let Some(c) = req.calibration
        && (c.is_empty() || !c.len().is_multiple_of(per))
    {
        return Err(Error::Calibration(format!(
            "{}: no calibration images (or a partial one: {} values, {per} per image)",
            req.calibration_source
                .as_deref()
                .unwrap_or(Path::new("calibration set"))
                .display(),
            c.len()
        )));
    }
    if let Some(e) = req.eval
        && (e.labels.is_empty() || e.inputs.len() != e.labels.len() * per)
    {
        return Err(Error::Invalid(format!(
            "{}: {} evaluation labels for {} values ({per} per image)",
            e.source.display(),
            e.labels.len(),
            e.inputs.len()
        )));
    }
    Ok(())
}

/// uint8 parameters of every calibrated tensor under `method`.
pub fn activation_params(
    stats: &BTreeMap<String, TensorStats>,
    method: CalibMethod,
) -> BTreeMap<String, ActivationQuant> {
    stats
        .iter()
        .map(|(name, s)| {
            let (lo, hi) = s.range(method);
            (name.clone(), ActivationQuant::from_range(lo, hi))
        })
        .collect()
}

fn activation_rows(
    stats: &BTreeMap<String, TensorStats>,
    method: CalibMethod,
) -> Vec<ActivationRow> {
    stats
        .values()
        .map(|s| {
            let range = s.range(method);
            let q = ActivationQuant::from_range(range.0, range.1);
            ActivationRow {
                tensor: s.name.clone(),
                min: s.min,
                max: s.max,
                range,
                scale: q.scale,
                zero_point: q.zero_point,
            }
        })
        .collect()
}

fn manifest(
    req: &ExportRequest<'_>,
    file: &str,
    bytes: &[u8],
    precision: Precision,
    selftest: &FileEntry,
    expected: &[f32],
    tolerance: f32,
) -> ModelManifest {
    let input_sha = Sha256Digest::from_hex(&selftest.sha256).expect("hex of a sha256");
    ModelManifest {
        schema_version: SCHEMA_VERSION,
        model_file: file.to_string(),
        model_sha256: Sha256Digest(sha256(bytes)),
        precision,
        input_name: INPUT_NAME.to_string(),
        output_name: PROBS_NAME.to_string(),
        logits_name: Some(LOGITS_NAME.to_string()),
        preprocessing: req.preprocessing.clone(),
        class_names: req.class_names.clone(),
        class_thresholds: req.class_thresholds.clone(),
        training_run_id: req.run_id.clone(),
        self_test: SelfTest {
            input_file: SELFTEST_FILE.to_string(),
            input_sha256: input_sha,
            expected_output: expected.to_vec(),
            tolerance,
        },
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| Error::write(path, e))
}

fn pct(e: &Option<EvalSummary>) -> String {
    e.as_ref().map_or("-".into(), |e| {
        format!("{:.2}% / {:.4}", e.accuracy * 100.0, e.macro_f1)
    })
}

/// The report as markdown.
pub fn report_markdown(r: &ExportReport) -> String {
    let mut s = format!(
        "# Export report: run {}\n\nModel: {} backbone, width {}, blocks {:?}, LAE {}, input {}x{}x{}, {} classes, {} parameters.\n\n",
        r.run_id,
        r.model.backbone,
        r.model.width,
        r.model.blocks,
        r.model.lae,
        r.model.input_channels,
        r.model.input_height,
        r.model.input_width,
        r.model.num_classes,
        r.parameters
    );
    s += &format!(
        "Parity: max |tract fp32 - burn| on the logits = {:.3e}.\n",
        r.parity_max_abs_diff
    );
    if let Some(d) = r.int8_probs_max_abs_diff {
        s += &format!("int8 vs fp32: max |probs difference| on the self-test batch = {d:.3e}.\n");
    }
    s += "\n## Files\n\n| file | bytes | sha256 |\n|---|---|---|\n";
    for f in &r.files {
        s += &format!("| {} | {} | {} |\n", f.file, f.bytes, f.sha256);
    }
    if let Some(src) = &r.eval_source {
        s += &format!(
            "\n## Accuracy on {}\n\n| model | accuracy / macro-F1 |\n|---|---|\n",
            src.display()
        );
        s += &format!(
            "| fp32 | {} |\n| int8 | {} |\n",
            pct(&r.fp32_eval),
            pct(&r.int8_eval)
        );
    }
    if let Some((src, n)) = &r.calibration {
        s += &format!(
            "\n## Calibration\n\n{n} images from {}; method used: {}; int8 form: {}.\n\n",
            src.display(),
            r.calib_method.as_deref().unwrap_or("-"),
            r.int8_form.map_or("-", Int8Form::name)
        );
        s += "| method | int8 accuracy / macro-F1 |\n|---|---|\n";
        for t in &r.calib_trials {
            s += &format!("| {} | {} |\n", t.method, pct(&t.eval));
        }
        s += "\n| tensor | min | max | range used | scale | zero point |\n|---|---|---|---|---|---|\n";
        for a in &r.activations {
            s += &format!(
                "| {} | {:.4} | {:.4} | [{:.4}, {:.4}] | {:.6} | {} |\n",
                a.tensor, a.min, a.max, a.range.0, a.range.1, a.scale, a.zero_point
            );
        }
    }
    if !r.latency.is_empty() {
        s += "\n## Latency (tract, this machine, batch 1, single thread)\n\n| file | median ms | min ms | runs |\n|---|---|---|---|\n";
        for l in &r.latency {
            s += &format!(
                "| {} | {:.3} | {:.3} | {} |\n",
                l.file, l.median_ms, l.min_ms, l.runs
            );
        }
    }
    s
}
