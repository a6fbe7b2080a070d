//! The `fer-train export` and `fer-train bench-export` commands.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_flex::Flex;
use serde::{Deserialize, Serialize};

use super::Error;
use super::ort;
use super::pipeline::{
    CalibChoice, ExportOutcome, ExportRequest, FP32_FILE, INT8_FILE, LabeledTensors, export_model,
    time_batch1,
};
use super::quant::Int8Form;
use super::runtime::TractModel;
use crate::checkpoint;
use crate::data;
use crate::model::{Model, ModelConfig};

/// Arguments of `fer-train export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The run folder `fer-train train` wrote (or its `checkpoint/` folder).
    #[arg(long, value_name = "RUN_DIR")]
    pub checkpoint: PathBuf,
    /// Output folder for the ONNX files, manifests, self-test input and report (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Real images for int8 calibration, searched recursively (e.g. the training pool).
    /// Without it only the fp32 file is written.
    #[arg(long, value_name = "DIR")]
    pub calibration: Option<PathBuf>,
    /// Calibration images to use, taken evenly across the sorted list.
    #[arg(long, default_value_t = 300)]
    pub calib_images: usize,
    /// How activation ranges are chosen: `auto` tries both and keeps the more accurate one on
    /// `--eval` (percentile without `--eval`).
    #[arg(long, value_enum, default_value_t = CalibArg::Auto)]
    pub calib_method: CalibArg,
    /// The form of the int8 file: `integer` (QLinearConv, integer kernels in tract and
    /// onnxruntime: for boards running fer-edge) or `qdq` (Quantize/DequantizeLinear around
    /// float convolutions: for TensorRT's explicit quantization).
    #[arg(long, value_enum, default_value_t = Int8Form::Integer)]
    pub int8_form: Int8Form,
    /// A labeled ImageFolder (same classes as the run) for fp32-vs-int8 accuracy.
    #[arg(long, value_name = "DIR")]
    pub eval: Option<PathBuf>,
    /// Batch-1 runs per file for the latency figures in the report (0: skip).
    #[arg(long, default_value_t = 200)]
    pub latency_runs: usize,
    /// Export the student instead of the EMA teacher.
    #[arg(long)]
    pub student: bool,
}

/// `--calib-method` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CalibArg {
    /// Observed min/max.
    Minmax,
    /// 99.99th percentile at each end.
    Percentile,
    /// Both, keep the better.
    Auto,
}

impl From<CalibArg> for CalibChoice {
    fn from(a: CalibArg) -> Self {
        match a {
            CalibArg::Minmax => CalibChoice::MinMax,
            CalibArg::Percentile => CalibChoice::Percentile,
            CalibArg::Auto => CalibChoice::Auto,
        }
    }
}

/// Collects every parameter's shape in visiting order.
struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dims().to_vec());
    }
}

fn shapes<B: Backend>(model: &Model<B>) -> Vec<Vec<usize>> {
    let mut s = Shapes(Vec::new());
    model.visit(&mut s);
    s.0
}

/// Loads the checkpoint's model and checks that its weights have the shapes its
/// `model.json` describes (a checkpoint of another architecture or class count is refused).
pub fn load_checkpoint_model(
    ckpt: &checkpoint::Checkpoint,
    student: bool,
) -> Result<Model<Flex>, Error> {
    let device = Default::default();
    let config = &ckpt.config.model;
    let fresh = shapes(&config.init::<Flex>(&device)?);
    let weights = if student {
        "student.mpk"
    } else {
        "teacher.mpk"
    };
    let loaded = std::panic::catch_unwind(|| {
        if student {
            ckpt.student::<Flex>(&device)
        } else {
            ckpt.model::<Flex>(&device)
        }
    });
    let model = match loaded {
        Ok(model) => model?,
        Err(_) => {
            return Err(mismatch(
                ckpt,
                config,
                weights,
                "the weights could not be loaded into it",
            ));
        }
    };
    let got = shapes(&model);
    if got != fresh {
        let detail = match fresh.iter().zip(&got).position(|(a, b)| a != b) {
            Some(i) => format!(
                "parameter #{i} has shape {:?}, the configuration needs {:?}",
                got[i], fresh[i]
            ),
            None => format!(
                "{} parameters, the configuration needs {}",
                got.len(),
                fresh.len()
            ),
        };
        return Err(mismatch(ckpt, config, weights, &detail));
    }
    Ok(model)
}

fn mismatch(
    ckpt: &checkpoint::Checkpoint,
    config: &ModelConfig,
    weights: &str,
    detail: &str,
) -> Error {
    crate::Error::checkpoint(
        ckpt.dir.join(weights),
        format!(
            "these weights do not belong to the architecture in config.json ({} backbone, width {}, \
             blocks {:?}, LAE {}, {} classes): {detail}; export the run folder the weights came from",
            config.backbone, config.width, config.blocks, config.lae, config.num_classes
        ),
    )
}

/// Checks early that `out` can be written, naming the path and the fix.
fn check_writable(out: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(out).map_err(|e| Error::write(out, e))?;
    let probe = out.join(".fer-export-probe");
    std::fs::write(&probe, b"").map_err(|e| Error::write(out, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::write(&probe, e))
}

/// Up to `n` images from `folder` (recursively), evenly spread over the sorted list,
/// preprocessed. Unreadable files are skipped.
pub fn load_calibration(
    folder: &Path,
    n: usize,
    ckpt: &checkpoint::Checkpoint,
) -> Result<Vec<f32>, Error> {
    if n == 0 {
        return Err(Error::Calibration(
            "--calib-images must be at least 1".into(),
        ));
    }
    let all = data::list_unlabeled_folder(folder)?;
    let stride = (all.len() as f64 / n as f64).max(1.0);
    let picked: Vec<_> = (0..n.min(all.len()))
        .map(|i| all[((i as f64 * stride) as usize).min(all.len() - 1)].clone())
        .collect();
    let store = data::decode_all(&picked, 2, false)?;
    if store.is_empty() {
        return Err(Error::Calibration(format!(
            "{}: none of the {} images picked could be decoded (first: {})",
            folder.display(),
            picked.len(),
            store
                .unreadable
                .first()
                .map(|(p, r)| format!("{}: {r}", p.display()))
                .unwrap_or_default()
        )));
    }
    data::preprocess_all(&store, &ckpt.config.preprocessing)
}

/// A labeled ImageFolder with the run's classes, preprocessed.
pub fn load_eval(folder: &Path, ckpt: &checkpoint::Checkpoint) -> Result<LabeledTensors, Error> {
    let set = data::list_image_folder(folder, Some(&ckpt.state.class_names))?;
    let store = data::decode_all(&set.samples, 2, false)?;
    if store.is_empty() {
        return Err(crate::Error::dataset(folder, "no readable images"));
    }
    Ok(LabeledTensors {
        source: folder.to_path_buf(),
        inputs: data::preprocess_all(&store, &ckpt.config.preprocessing)?,
        labels: store
            .labels
            .iter()
            .map(|l| l.expect("an ImageFolder labels every image"))
            .collect(),
    })
}

/// A run id: the run folder's name and the checkpoint step.
fn run_id(ckpt: &checkpoint::Checkpoint) -> String {
    let dir = if ckpt.dir.ends_with(checkpoint::CHECKPOINT_DIR) {
        ckpt.dir.parent()
    } else {
        Some(ckpt.dir.as_path())
    };
    let name = dir
        .and_then(|d| std::fs::canonicalize(d).ok())
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    format!("{name}@step{}", ckpt.state.step)
}

/// `fer-train export`.
pub fn run_export(args: &ExportArgs) -> Result<ExportOutcome, Error> {
    let ckpt = checkpoint::load(&args.checkpoint)?;
    check_writable(&args.out)?;
    let model = load_checkpoint_model(&ckpt, args.student)?;
    let calibration = args
        .calibration
        .as_deref()
        .map(|f| load_calibration(f, args.calib_images, &ckpt))
        .transpose()?;
    let eval = args
        .eval
        .as_deref()
        .map(|f| load_eval(f, &ckpt))
        .transpose()?;
    let req = ExportRequest {
        out_dir: &args.out,
        preprocessing: ckpt.config.preprocessing.clone(),
        class_names: ckpt.state.class_names.clone(),
        class_thresholds: ckpt.thresholds.thresholds.clone(),
        run_id: run_id(&ckpt),
        calibration: calibration.as_deref(),
        calibration_source: args.calibration.clone(),
        calib_choice: args.calib_method.into(),
        int8_form: args.int8_form,
        eval: eval.as_ref(),
        latency_runs: args.latency_runs,
    };
    export_model(&model, &ckpt.config.model, &req)
}

/// Arguments of `fer-train bench-export`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A folder `fer-train export` wrote (model_fp32.onnx, model_int8.onnx).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Another ONNX model to time in the same run, e.g. the mini-Xception peer
    /// (../shared/models/peer/fer_mini_xception_nhwc.onnx).
    #[arg(long, value_name = "FILE")]
    pub peer: Option<PathBuf>,
    /// Timed batch-1 runs per model and runtime.
    #[arg(long, default_value_t = 500)]
    pub runs: usize,
}

/// One line of the benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// Model file.
    pub model: PathBuf,
    /// `tract` or `onnxruntime`.
    pub runtime: String,
    /// Median milliseconds per face (batch 1, one thread).
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
}

/// The input shape (without batch) of an ONNX file's first input.
fn sample_shape(path: &Path) -> Result<Vec<usize>, Error> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto;
    use tract_onnx::prelude::Framework;
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| Error::Tract {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
    let bad = |why: &str| Error::Tract {
        path: path.to_path_buf(),
        message: why.to_string(),
    };
    let input = proto
        .graph
        .as_ref()
        .and_then(|g| g.input.first())
        .ok_or_else(|| bad("the graph has no input"))?;
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad("the input is not a tensor"));
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    dims.iter()
        .skip(1)
        .map(|d| match d.value {
            Some(Value::DimValue(n)) if n > 0 => Ok(n as usize),
            _ => Err(bad("only the batch dimension of the input may be symbolic")),
        })
        .collect()
}

/// `fer-train bench-export`: tract fp32, tract int8 and onnxruntime on the same files (and a
/// peer model), batch 1, one thread. onnxruntime rows need `python3` with onnxruntime;
/// without it they are left out and the returned note says why.
pub fn run_bench(args: &BenchArgs) -> Result<(Vec<BenchRow>, Option<String>), Error> {
    let mut models: Vec<PathBuf> = [FP32_FILE, INT8_FILE]
        .iter()
        .map(|f| args.dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if models.is_empty() {
        return Err(Error::read(
            &args.dir.join(FP32_FILE),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no exported model here; run `fer-train export` first",
            ),
        ));
    }
    models.extend(args.peer.clone());
    let mut rows = Vec::new();
    for path in &models {
        let shape = sample_shape(path)?;
        let model = TractModel::open(path, &shape)?;
        let input: Vec<f32> = (0..model.sample_len())
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let (median_ms, min_ms) = time_batch1(&model, &input, args.runs)?;
        rows.push(BenchRow {
            model: path.clone(),
            runtime: "tract".into(),
            median_ms,
            min_ms,
        });
    }
    let note = match ort::available() {
        Err(why) => Some(why),
        Ok(()) => {
            for (path, (median_ms, min_ms)) in models.iter().zip(ort::bench(&models, args.runs)?) {
                rows.push(BenchRow {
                    model: path.clone(),
                    runtime: "onnxruntime".into(),
                    median_ms,
                    min_ms,
                });
            }
            None
        }
    };
    Ok((rows, note))
}

/// `fer-train export` as the binary runs it: export, then print where the files went and
/// the report's numbers.
pub fn main_export(args: &ExportArgs) -> Result<(), Error> {
    let outcome = run_export(args)?;
    let r = &outcome.report;
    println!("{}", super::pipeline::report_markdown(r));
    println!("wrote {}", outcome.fp32_path.display());
    if let Some(p) = &outcome.int8_path {
        println!("wrote {}", p.display());
    } else {
        println!("no --calibration folder: the int8 file was not written");
    }
    Ok(())
}

/// `fer-train bench-export` as the binary runs it: a markdown table on stdout.
pub fn main_bench(args: &BenchArgs) -> Result<(), Error> {
    let (rows, note) = run_bench(args)?;
    println!("| model | runtime | median ms/face | min ms |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} |",
            r.model.display(),
            r.runtime,
            r.median_ms,
            r.min_ms
        );
    }
    if let Some(why) = note {
        println!("\nonnxruntime rows left out: {why}");
    }
    Ok(())
}
