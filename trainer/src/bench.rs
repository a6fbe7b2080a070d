//! Throughput benchmarks: training (forward + backward + AdamW step) and inference images per
//! second of a model, and the same network in PyTorch (`trainer/bench/torch_reference.py`)
//! when `python3` can import `torch`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};

/// Measured throughput of one model on one backend.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BenchResult {
    /// What ran (`burn-flex`, `pytorch`, ...).
    pub runtime: String,
    /// The architecture.
    pub model: ModelConfig,
    /// Number of parameters.
    pub parameters: usize,
    /// Batch size.
    pub batch: usize,
    /// Training images per second.
    pub train_images_per_second: f64,
    /// Inference images per second.
    pub infer_images_per_second: f64,
}

/// The PyTorch reference: measured, or why not.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// The script ran.
    Measured(BenchResult),
    /// The script could not run (no python3, no torch, ...).
    Skipped(String),
}

fn input<B: burn::tensor::backend::Backend>(
    config: &ModelConfig,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let len = batch * config.input_channels * config.input_height * config.input_width;
    let data: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_data(
        TensorData::new(
            data,
            [
                batch,
                config.input_channels,
                config.input_height,
                config.input_width,
            ],
        ),
        device,
    )
}

/// Times `iters` training steps and `iters` inference batches (after one warm-up each).
pub fn bench_model<B: AutodiffBackend>(
    config: &ModelConfig,
    batch: usize,
    iters: usize,
    runtime: &str,
    device: &B::Device,
) -> Result<BenchResult> {
    let mut model: Model<B> = config.init(device)?;
    let parameters = burn::module::Module::num_params(&model);
    let mut optim = AdamWConfig::new().init::<B, Model<B>>();
    let x = input::<B>(config, batch, device);
    let mut targets = vec![0.0f32; batch * config.num_classes];
    for i in 0..batch {
        targets[i * config.num_classes + i % config.num_classes] = 1.0 / batch as f32;
    }
    let targets = Tensor::<B, 2>::from_data(
        TensorData::new(targets, [batch, config.num_classes]),
        device,
    );
    let mut rng = StdRng::seed_from_u64(0);
    let mut train_step = |model: Model<B>| {
        let logits = model.forward_train(x.clone(), &mut rng);
        let loss = -(burn::tensor::activation::log_softmax(logits, 1) * targets.clone()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(1e-3, model, grads)
    };
    model = train_step(model);
    let start = Instant::now();
    for _ in 0..iters {
        model = train_step(model);
    }
    // Reading a value back makes sure queued device work has finished.
    let _ = model.head.bias.as_ref().map(|b| b.val().into_data());
    let train = (iters * batch) as f64 / start.elapsed().as_secs_f64();
    let inference = model.valid();
    let xi = input::<B::InnerBackend>(config, batch, device);
    let _ = inference.forward(xi.clone()).into_data();
    let start = Instant::now();
    for _ in 0..iters {
        let _ = inference.forward(xi.clone()).into_data();
    }
    let infer = (iters * batch) as f64 / start.elapsed().as_secs_f64();
    Ok(BenchResult {
        runtime: runtime.to_string(),
        model: config.clone(),
        parameters,
        batch,
        train_images_per_second: train,
        infer_images_per_second: infer,
    })
}

/// Runs the PyTorch reference script on the same architecture; `Skipped` with the reason when
/// python3 or torch is missing.
pub fn torch_reference(
    script: &Path,
    config: &ModelConfig,
    batch: usize,
    iters: usize,
    cuda: bool,
) -> Result<Reference> {
    if !script.exists() {
        return Err(Error::config(
            "bench.torch_script",
            format!("{} does not exist", script.display()),
        ));
    }
    let json = serde_json::to_string(config).map_err(|cause| Error::Json {
        path: script.to_path_buf(),
        cause,
    })?;
    let output = match Command::new("python3")
        .arg(script)
        .args([
            "--config",
            &json,
            "--batch",
            &batch.to_string(),
            "--iters",
            &iters.to_string(),
            "--device",
            if cuda { "cuda" } else { "cpu" },
        ])
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            return Ok(Reference::Skipped(format!(
                "python3 could not be started: {e}"
            )));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.code() == Some(3) {
        return Ok(Reference::Skipped(stdout.trim().to_string()));
    }
    if !output.status.success() {
        return Err(Error::config(
            "bench.torch_script",
            format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    #[derive(Deserialize)]
    struct Measured {
        parameters: usize,
        train_images_per_second: f64,
        infer_images_per_second: f64,
        torch: String,
    }
    let m: Measured = serde_json::from_str(stdout.trim()).map_err(|cause| Error::Json {
        path: script.to_path_buf(),
        cause,
    })?;
    Ok(Reference::Measured(BenchResult {
        runtime: format!("pytorch {}", m.torch),
        model: config.clone(),
        parameters: m.parameters,
        batch,
        train_images_per_second: m.train_images_per_second,
        infer_images_per_second: m.infer_images_per_second,
    }))
}
