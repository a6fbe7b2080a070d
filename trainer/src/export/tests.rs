//! Export tests: the ONNX writer read back by tract, parity with burn for both backbones
//! with LAE on and off (random inputs and real FER2013 faces), int8 files, manifests and
//! self-tests, the onnxruntime cross-check, and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_flex::Flex;
use firmware_config::manifest::{ModelManifest, Precision};
use prost::Message;
use sha2::{Digest, Sha256};

use super::calib::{CalibMethod, calibrate};
use super::graph::{ConvAttrs, Dim, Graph, Op, TensorData as Data, ValueInfo};
use super::model_graph::model_graph;
use super::pipeline::{
    CalibChoice, ExportRequest, FP32_FILE, INT8_FILE, LabeledTensors, SELFTEST_FILE,
    activation_params, export_model, manifest_file,
};
use super::quant::Int8Form;
use super::runtime::TractModel;
use super::{Error, ort};
use crate::model::{Backbone, Model, ModelConfig};
use crate::train::preprocessing_for;

/// Moves every float parameter and running statistic off its initial value (running
/// variances start at 1 and stay positive), so BN folding and every weight matter.
struct Perturb;

impl<B: Backend> ModuleMapper<B> for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let device = tensor.device();
        let shape = tensor.shape();
        let scale = Tensor::<B, D>::random(shape.clone(), Distribution::Uniform(0.6, 1.4), &device);
        let shift = Tensor::<B, D>::random(shape, Distribution::Uniform(-0.1, 0.1), &device);
        Param::from_mapped_value(id, tensor * scale + shift, mapper)
    }
}

fn config(backbone: Backbone, lae: bool) -> ModelConfig {
    ModelConfig {
        width: 8,
        blocks: vec![1, 1, 1],
        input_height: 48,
        input_width: 48,
        lae,
        ..ModelConfig::for_backbone(backbone)
    }
}

fn model(config: &ModelConfig) -> Model<Flex> {
    config
        .init::<Flex>(&Default::default())
        .unwrap()
        .map(&mut Perturb)
}

fn burn_logits(model: &Model<Flex>, input: &[f32], config: &ModelConfig) -> Vec<f32> {
    let n = input.len() / (config.input_height * config.input_width * config.input_channels);
    let shape = [
        n,
        config.input_channels,
        config.input_height,
        config.input_width,
    ];
    let x =
        Tensor::<Flex, 4>::from_data(TensorData::new(input.to_vec(), shape), &Default::default());
    model
        .forward(x)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
}

fn random_input(n: usize, config: &ModelConfig) -> Vec<f32> {
    let len = n * config.input_channels * config.input_height * config.input_width;
    Tensor::<Flex, 1>::random([len], Distribution::Normal(0.0, 1.0), &Default::default())
        .into_data()
        .into_vec::<f32>()
        .unwrap()
}

/// Up to `per_class` FER2013 validation faces of every class, preprocessed for `config`.
fn fer_val(per_class: usize, config: &ModelConfig) -> Option<LabeledTensors> {
    let root = testdata::shared_path("data/fer2013/val")?;
    let set = crate::data::list_image_folder(&root, None).unwrap();
    let mut taken = vec![0; set.classes.len()];
    let samples: Vec<_> = set
        .samples
        .iter()
        .filter(|s| {
            let c = s.label.unwrap();
            taken[c] += 1;
            taken[c] <= per_class
        })
        .cloned()
        .collect();
    let store = crate::data::decode_all(&samples, 2, true).unwrap();
    Some(LabeledTensors {
        source: root,
        inputs: crate::data::preprocess_all(&store, &preprocessing_for(config)).unwrap(),
        labels: store.labels.iter().map(|l| l.unwrap()).collect(),
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn shape(config: &ModelConfig) -> [usize; 3] {
    [
        config.input_channels,
        config.input_height,
        config.input_width,
    ]
}

#[test]
fn hand_built_graph_runs_in_tract_with_any_batch() {
    let input = ValueInfo {
        name: "x".into(),
        dims: vec![Dim::Batch, Dim::Fixed(2), Dim::Fixed(2), Dim::Fixed(2)],
    };
    let mut g = Graph::new("tiny", input);
    let two = g.add_initializer("two", vec![], Data::F32(vec![2.0]));
    let half = g.add_node("half", Op::Div, &["x", &two]);
    let axes = g.add_initializer("axes", vec![2], Data::I64(vec![2, 3]));
    let sum = g.add_node("sum", Op::ReduceSum { keepdims: false }, &[&half, &axes]);
    let probs = g.add_node("probs", Op::Softmax { axis: 1 }, &[&sum]);
    g.outputs = vec![
        ValueInfo {
            name: sum.clone(),
            dims: vec![Dim::Batch, Dim::Fixed(2)],
        },
        ValueInfo {
            name: probs,
            dims: vec![Dim::Batch, Dim::Fixed(2)],
        },
    ];
    let bytes = g.to_onnx_bytes().unwrap();
    let model = TractModel::load(&bytes, Path::new("tiny"), &[2, 2, 2], &[]).unwrap();
    for n in [1, 3] {
        let x: Vec<f32> = (0..n * 8).map(|i| i as f32).collect();
        let out = model.run(&x).unwrap();
        assert_eq!(out[0].0, vec![n, 2]);
        for s in 0..n {
            for c in 0..2 {
                let expected: f32 = x[s * 8 + c * 4..s * 8 + c * 4 + 4].iter().sum::<f32>() / 2.0;
                assert_eq!(out[0].1[s * 2 + c], expected);
            }
            let p = &out[1].1[s * 2..s * 2 + 2];
            assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
        }
    }
    assert!(model.run(&[0.0; 7]).is_err(), "a partial sample is refused");
}

#[test]
fn invalid_graphs_are_refused_with_the_reason() {
    let input = ValueInfo {
        name: "x".into(),
        dims: vec![Dim::Batch, Dim::Fixed(4)],
    };
    let mut g = Graph::new("bad", input);
    g.add_node("y", Op::Relu, &["nowhere"]);
    let err = g.to_onnx_bytes().unwrap_err().to_string();
    assert!(err.contains("reads nowhere before it is defined"), "{err}");
    let mut g = Graph::new(
        "bad",
        ValueInfo {
            name: "x".into(),
            dims: vec![Dim::Batch],
        },
    );
    g.add_initializer("w", vec![2, 2], Data::F32(vec![1.0; 3]));
    let err = g.to_onnx_bytes().unwrap_err().to_string();
    assert!(err.contains("3 elements for shape [2, 2]"), "{err}");
}

/// tract on the fp32 file equals burn's forward within 1e-4 on the logits: both backbones,
/// LAE on and off, random inputs and (with ../shared) real faces.
#[test]
fn fp32_export_matches_burn() {
    let faces = fer_val(2, &config(Backbone::Resnet, true));
    for backbone in [Backbone::Resnet, Backbone::Mobile] {
        for lae in [true, false] {
            let cfg = config(backbone, lae);
            let m = model(&cfg);
            let graph = model_graph(&m, &cfg).unwrap();
            let ops: Vec<_> = graph.nodes.iter().map(|n| n.op.op_type()).collect();
            assert!(!ops.contains(&"BatchNormalization"));
            if backbone == Backbone::Mobile {
                assert!(
                    graph
                        .nodes
                        .iter()
                        .any(|n| matches!(n.op, Op::Conv(ConvAttrs { group, .. }) if group > 1))
                );
            }
            let bytes = graph.to_onnx_bytes().unwrap();
            let tract = TractModel::load(&bytes, Path::new("parity"), &shape(&cfg), &[]).unwrap();
            let mut inputs = vec![random_input(3, &cfg)];
            inputs.extend(faces.as_ref().map(|f| f.inputs.clone()));
            for x in inputs {
                let out = tract.run(&x).unwrap();
                let reference = burn_logits(&m, &x, &cfg);
                let diff = max_abs_diff(&out[0].1, &reference);
                let spread = reference.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                assert!(
                    spread > 1e-2,
                    "{backbone} lae {lae}: logits are trivially small"
                );
                assert!(
                    diff <= 1e-4,
                    "{backbone} lae {lae}: tract differs from burn by {diff}"
                );
            }
        }
    }
}

/// Both int8 forms load in tract and stay close to fp32 on real faces: QDQ around every
/// Conv/Gemm, or every Conv a QLinearConv; Softmax reads the float logits in both.
#[test]
fn int8_export_runs_and_stays_close() {
    let cfg = config(Backbone::Mobile, true);
    let Some(faces) = fer_val(6, &cfg) else {
        return;
    };
    let m = model(&cfg);
    let graph = model_graph(&m, &cfg).unwrap();
    let fp32 = TractModel::load(
        &graph.to_onnx_bytes().unwrap(),
        Path::new("fp32"),
        &shape(&cfg),
        &[],
    )
    .unwrap();
    let reference = fp32.run(&faces.inputs).unwrap();
    let count = |g: &Graph, f: fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
    let convs = count(&graph, |op| matches!(op, Op::Conv(_)));
    for form in [Int8Form::Integer, Int8Form::Qdq] {
        let tensors = form.calibrated_tensors(&graph);
        let stats = calibrate(&graph, &shape(&cfg), &faces.inputs, 16, &tensors).unwrap();
        assert_eq!(stats.len(), tensors.len());
        for method in [CalibMethod::MinMax, CalibMethod::Percentile(99.99)] {
            let q = form
                .quantize(&graph, &activation_params(&stats, method))
                .unwrap();
            match form {
                Int8Form::Integer => {
                    assert_eq!(count(&q, |op| matches!(op, Op::QLinearConv(_))), convs);
                    assert_eq!(count(&q, |op| matches!(op, Op::Conv(_))), 0);
                    assert!(
                        count(&q, |op| *op == Op::Relu) < count(&graph, |op| *op == Op::Relu),
                        "the ReLUs after convolutions are folded into them"
                    );
                }
                Int8Form::Qdq => assert!(
                    count(&q, |op| matches!(op, Op::DequantizeLinear { .. }))
                        >= 2 * count(&q, |op| matches!(op, Op::Conv(_) | Op::Gemm)),
                    "every Conv/Gemm needs dequantized input and weights"
                ),
            }
            let softmax = q.nodes.iter().find(|n| n.name == "probs").unwrap();
            assert_eq!(
                softmax.inputs,
                vec!["logits".to_string()],
                "Softmax must read the float logits"
            );
            let int8 = TractModel::load(
                &q.to_onnx_bytes().unwrap(),
                Path::new("int8"),
                &shape(&cfg),
                &[],
            )
            .unwrap();
            let out = int8.run(&faces.inputs).unwrap();
            let spread = reference[0].1.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let logit_diff = max_abs_diff(&out[0].1, &reference[0].1);
            assert!(logit_diff > 0.0, "{form:?}: int8 must actually quantize");
            assert!(
                logit_diff < 0.1 * spread.max(1.0),
                "{form:?} {method:?}: logits moved by {logit_diff} (spread {spread})"
            );
            assert!(
                max_abs_diff(&out[1].1, &reference[1].1) < 0.1,
                "{form:?} {method:?}: probabilities moved too far"
            );
        }
    }
}

fn read_manifest(dir: &Path, file: &str) -> ModelManifest {
    let text = std::fs::read_to_string(dir.join(manifest_file(file))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sha_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A full export writes both files with manifests whose hashes and self-tests hold, and the
/// report; with python3 + onnxruntime, both files pass onnx.checker and agree with tract
/// (the int8 file within its quantization error), for both int8 forms.
#[test]
fn export_writes_files_manifests_and_self_tests() {
    for form in [Int8Form::Integer, Int8Form::Qdq] {
        export_and_check(form);
    }
}

fn export_and_check(form: Int8Form) {
    let cfg = config(Backbone::Resnet, true);
    let m = model(&cfg);
    let calib = match fer_val(4, &cfg) {
        Some(f) => f.inputs,
        None => random_input(24, &cfg),
    };
    let dir = tempfile::tempdir().unwrap();
    let classes: Vec<String> = (0..7).map(|i| format!("class{i}")).collect();
    let req = ExportRequest {
        out_dir: dir.path(),
        preprocessing: preprocessing_for(&cfg),
        class_names: classes.clone(),
        class_thresholds: vec![0.5; 7],
        run_id: "test-run".into(),
        calibration: Some(&calib),
        calibration_source: Some(PathBuf::from("calib")),
        calib_choice: CalibChoice::Percentile,
        int8_form: form,
        eval: None,
        latency_runs: 3,
    };
    let outcome = export_model(&m, &cfg, &req).unwrap();
    assert!(outcome.report.parity_max_abs_diff <= 1e-4);
    assert_eq!(outcome.report.latency.len(), 2);
    assert_eq!(
        outcome.report.activations.len(),
        outcome
            .report
            .activations
            .iter()
            .filter(|a| a.scale > 0.0)
            .count()
    );
    for (file, precision) in [(FP32_FILE, Precision::Fp32), (INT8_FILE, Precision::Int8)] {
        let manifest = read_manifest(dir.path(), file);
        assert_eq!(manifest.precision, precision);
        assert_eq!(manifest.class_names, classes);
        assert_eq!(manifest.training_run_id, "test-run");
        assert_eq!(
            manifest.model_sha256.to_hex(),
            sha_hex(&dir.path().join(file))
        );
        let input_path = dir.path().join(&manifest.self_test.input_file);
        assert_eq!(
            manifest.self_test.input_sha256.to_hex(),
            sha_hex(&input_path)
        );
        let input: Vec<f32> = std::fs::read(&input_path)
            .unwrap()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let tract = TractModel::open(&dir.path().join(file), &shape(&cfg)).unwrap();
        let probs = &tract.run(&input).unwrap()[1].1;
        assert_eq!(probs.len(), 7);
        assert!(
            max_abs_diff(probs, &manifest.self_test.expected_output)
                <= manifest.self_test.tolerance
        );
    }
    assert!(dir.path().join(super::pipeline::REPORT_MD).exists());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(super::pipeline::REPORT_JSON)).unwrap(),
    )
    .unwrap();
    assert_eq!(report["run_id"], "test-run");
    assert_eq!(report["int8_form"], form.name());
    let int8_ops = tract_onnx::pb::ModelProto::decode(
        std::fs::read(dir.path().join(INT8_FILE))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
    .graph
    .unwrap()
    .node
    .iter()
    .map(|n| n.op_type.clone())
    .collect::<Vec<_>>();
    assert_eq!(
        int8_ops.contains(&"QLinearConv".to_string()),
        form == Int8Form::Integer,
        "{form:?}: {int8_ops:?}"
    );

    match ort::available() {
        Err(why) => eprintln!("skipping the onnxruntime cross-check: {why}"),
        Ok(()) => {
            let input = dir.path().join(SELFTEST_FILE);
            let x: Vec<f32> = std::fs::read(&input)
                .unwrap()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let models = [(FP32_FILE, 1e-4, 1e-5), (INT8_FILE, 0.1, 0.05)]
                .iter()
                .map(|(file, logit_tol, prob_tol)| {
                    let path = dir.path().join(file);
                    let out = TractModel::open(&path, &shape(&cfg))
                        .unwrap()
                        .run(&x)
                        .unwrap();
                    ort::CheckModel {
                        path,
                        tract: BTreeMap::from([
                            ("logits".into(), out[0].1.clone()),
                            ("probs".into(), out[1].1.clone()),
                        ]),
                        tolerance: BTreeMap::from([
                            ("logits".into(), *logit_tol),
                            ("probs".into(), *prob_tol),
                        ]),
                    }
                })
                .collect();
            let spec = ort::CheckSpec {
                input,
                shape: vec![1, 1, 48, 48],
                models,
            };
            let (ok, summary) = ort::check(&spec, &dir.path().join("ort_check.json")).unwrap();
            eprintln!("onnxruntime check ({form:?}): {summary}");
            assert!(ok, "{form:?}: onnxruntime disagrees with tract: {summary}");
        }
    }
}

#[test]
fn bad_requests_name_the_problem() {
    let cfg = config(Backbone::Mobile, false);
    let m = model(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let base = ExportRequest {
        out_dir: dir.path(),
        preprocessing: preprocessing_for(&cfg),
        class_names: (0..7).map(|i| i.to_string()).collect(),
        class_thresholds: Vec::new(),
        run_id: "r".into(),
        calibration: None,
        calibration_source: None,
        calib_choice: CalibChoice::MinMax,
        int8_form: Int8Form::default(),
        eval: None,
        latency_runs: 0,
    };
    let empty: Vec<f32> = Vec::new();
    let req = ExportRequest {
        calibration: Some(&empty),
        calibration_source: Some("calib/none".into()),
        ..base.clone()
    };
    let err = export_model(&m, &cfg, &req).unwrap_err();
    assert!(
        matches!(err, Error::Calibration(_)) && err.to_string().contains("calib/none"),
        "{err}"
    );
    let req = ExportRequest {
        class_names: vec!["a".into(), "b".into()],
        ..base.clone()
    };
    let err = export_model(&m, &cfg, &req).unwrap_err().to_string();
    assert!(
        err.contains("2 class names for a model with 7 classes"),
        "{err}"
    );
    let other = ModelConfig {
        input_height: 64,
        input_width: 64,
        ..cfg.clone()
    };
    let req = ExportRequest {
        preprocessing: preprocessing_for(&other),
        ..base.clone()
    };
    let err = export_model(&m, &cfg, &req).unwrap_err().to_string();
    assert!(err.contains("the model takes NCHW [1, 48, 48]"), "{err}");
    // An output path under a regular file can not be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("out");
    let req = ExportRequest {
        out_dir: &out,
        ..base
    };
    let err = export_model(&m, &cfg, &req).unwrap_err().to_string();
    assert!(err.contains(&out.display().to_string()), "{err}");
}

/// Trains a small model on FER2013 (supervised, a few hundred labels per class), exports it
/// through the CLI path, and checks the int8 file's accuracy on the whole FER2013 val split
/// against the fp32 file's. Then the CLI's refusals: weights of another architecture, an
/// empty calibration folder, an unwritable output path.
#[test]
fn trained_model_int8_accuracy_within_one_point_and_cli_errors() {
    use super::cli::{CalibArg, ExportArgs, run_export};
    use crate::data::{LabelBudget, LabeledSource};
    use crate::train::{Progress, TrainConfig, train};
    let (Some(train_dir), Some(val_dir)) = (
        testdata::shared_path("data/fer2013/train"),
        testdata::shared_path("data/fer2013/val"),
    ) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");
    let mut cfg = TrainConfig::for_model(ModelConfig {
        width: 8,
        blocks: vec![1, 1, 1],
        input_height: 48,
        input_width: 48,
        rrd: false,
        ..ModelConfig::for_backbone(Backbone::Mobile)
    });
    cfg.algorithm.algorithm = crate::algorithm::Algorithm::Supervised;
    cfg.data.labeled = LabeledSource::ImageFolder {
        path: train_dir.clone(),
    };
    cfg.data.budget = LabelBudget::PerClass(300);
    cfg.steps = 150;
    cfg.labeled_batch = 32;
    cfg.checkpoint_every = 0;
    cfg.optimizer.warmup_steps = 10;
    cfg.optimizer.learning_rate = 5e-3;
    train(cfg, &run, Progress::Hidden).unwrap();

    let out = work.path().join("export");
    let args = ExportArgs {
        checkpoint: run.clone(),
        out: out.clone(),
        calibration: Some(train_dir.clone()),
        calib_images: 128,
        calib_method: CalibArg::Auto,
        int8_form: Int8Form::Integer,
        eval: Some(val_dir.clone()),
        latency_runs: 0,
        // The EMA teacher barely moves in a short run; the student is the trained network.
        student: true,
    };
    let outcome = run_export(&args).unwrap();
    let r = &outcome.report;
    let (fp32, int8) = (r.fp32_eval.clone().unwrap(), r.int8_eval.clone().unwrap());
    eprintln!("fp32 {fp32:?}\nint8 {int8:?}\ntrials {:?}", r.calib_trials);
    assert_eq!(fp32.count, 3589);
    // The model must have learned something (uniform guessing: 1/7 = 0.143): for a constant
    // predictor the int8 comparison would be vacuous.
    assert!(
        fp32.accuracy > 0.16 && fp32.macro_f1 > 0.1,
        "the model did not learn: {fp32:?}"
    );
    assert!(
        (fp32.accuracy - int8.accuracy).abs() <= 0.01,
        "int8 {int8:?} vs fp32 {fp32:?}"
    );
    assert_eq!(r.calib_trials.len(), 2);
    assert!(outcome.int8_path.unwrap().exists());
    let manifest = read_manifest(&out, INT8_FILE);
    assert_eq!(manifest.class_names.len(), 7);
    assert_eq!(manifest.class_thresholds.len(), 7);
    assert!(
        manifest.training_run_id.ends_with("@step150"),
        "{}",
        manifest.training_run_id
    );

    // An empty calibration folder.
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = run_export(&ExportArgs {
        calibration: Some(empty.clone()),
        eval: None,
        ..args.clone()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(&empty.display().to_string())
            && err.to_string().contains("no images"),
        "{err}"
    );
    // An output path that can not be created (its parent is a file).
    let blocker = work.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let err = run_export(&ExportArgs {
        out: blocker.join("out"),
        ..args.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("blocker/out") && err.contains("--out"),
        "{err}"
    );
    // Weights of another architecture (config.json edited after training).
    let ckpt_dir = run.join(crate::checkpoint::CHECKPOINT_DIR);
    let config_path = ckpt_dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["model"]["width"] = serde_json::json!(16);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = run_export(&ExportArgs {
        calibration: None,
        eval: None,
        ..args
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("do not belong to the architecture") && err.contains("student.mpk"),
        "{err}"
    );
}
