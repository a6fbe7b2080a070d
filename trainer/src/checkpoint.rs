//! Checkpoints: everything needed to deploy a model or to continue training bit-for-bit.
//!
//! `run_dir/checkpoint/` holds
//! * `config.json`: the [`TrainConfig`] (model, algorithm, data, optimiser, seed, ...);
//! * `model.json`: the [`ModelConfig`] alone (what an exporter needs);
//! * `student.mpk`, `teacher.mpk`: the weights the training continues from (burn's named
//!   MessagePack, full precision);
//! * `model.mpk`: the model to deploy, the teacher with its BatchNorm statistics
//!   re-estimated on weak views (see `algorithm/teacher.rs`);
//! * `optimizer.mpk`: the AdamW moments;
//! * `state.json`: the step, the DTA state and the class names ([`TrainState`]);
//! * `thresholds.json`: the per-class thresholds the board uses ([`Thresholds`]).
//!
//! A checkpoint is written to `checkpoint.tmp/` and then renamed into place, so an interrupted
//! save never destroys the previous one. The model to deploy is [`Checkpoint::model`].

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder as _};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, DtaState};
use crate::error::{Error, Result, read_json, write_json};
use crate::model::{Model, ModelConfig};
use crate::train::config::TrainConfig;

/// Name of the checkpoint folder inside a run folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// The recorder used for weights and optimiser state.
pub type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Training progress saved with a checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Number of optimisation steps done (the next step to run).
    pub step: u64,
    /// Dynamic-threshold state.
    pub dta: DtaState,
    /// Class names in output order.
    pub class_names: Vec<String>,
}

/// The per-class confidence thresholds written with every checkpoint: the board logs exactly
/// the faces whose top probability falls below its class's threshold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// One threshold per class.
    pub thresholds: Vec<f32>,
    /// The algorithm that produced them (`fixed`/`supervised`: the fixed threshold).
    pub algorithm: Algorithm,
    /// The step they belong to.
    pub step: u64,
}

/// A loaded checkpoint (configs and state; weights are loaded on demand for a backend).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// The training configuration.
    pub config: TrainConfig,
    /// Step, DTA state, classes.
    pub state: TrainState,
    /// Per-class thresholds.
    pub thresholds: Thresholds,
}

fn load_weights<B: Backend>(
    dir: &Path,
    name: &str,
    config: &ModelConfig,
    device: &B::Device,
) -> Result<Model<B>> {
    let model = config.init::<B>(device)?;
    let path = dir.join(name);
    let record = Recorder::new()
        .load(path.clone(), device)
        .map_err(|e| Error::checkpoint(path.with_extension("mpk"), e.to_string()))?;
    Ok(model.load_record(record))
}

impl Checkpoint {
    /// The model to deploy (the EMA teacher with re-estimated BatchNorm statistics), on
    /// backend `B`. Checkpoints written before `model.mpk` existed give their teacher.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        let name = if self.dir.join("model.mpk").is_file() {
            "model"
        } else {
            "teacher"
        };
        load_weights(&self.dir, name, &self.config.model, device)
    }

    /// The EMA teacher as training left it (what a resumed or warm-started run continues).
    pub fn teacher<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        load_weights(&self.dir, "teacher", &self.config.model, device)
    }

    /// The student (the network the optimiser trains).
    pub fn student<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        load_weights(&self.dir, "student", &self.config.model, device)
    }

    /// Path of the optimiser state (without the `.mpk` extension the recorder adds).
    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join("optimizer")
    }
}

/// Whether `run_dir` holds a checkpoint.
pub fn exists(run_dir: &Path) -> bool {
    run_dir.join(CHECKPOINT_DIR).join("state.json").exists()
}

/// Loads the checkpoint of `run_dir` (or of `run_dir` itself when it is a checkpoint folder).
pub fn load(run_dir: &Path) -> Result<Checkpoint> {
    let dir = if run_dir.join("state.json").exists() {
        run_dir.to_path_buf()
    } else {
        run_dir.join(CHECKPOINT_DIR)
    };
    if !dir.join("state.json").exists() {
        return Err(Error::checkpoint(
            &dir,
            "no checkpoint here (state.json missing); give the run folder `fer-train train` wrote",
        ));
    }
    let config: TrainConfig = read_json(&dir.join("config.json"))?;
    let state: TrainState = read_json(&dir.join("state.json"))?;
    let thresholds: Thresholds = read_json(&dir.join("thresholds.json"))?;
    if state.class_names.len() != config.model.num_classes
        || thresholds.thresholds.len() != config.model.num_classes
    {
        return Err(Error::checkpoint(
            &dir,
            format!(
                "inconsistent: {} classes in state.json, {} thresholds, model has {}",
                state.class_names.len(),
                thresholds.thresholds.len(),
                config.model.num_classes
            ),
        ));
    }
    Ok(Checkpoint {
        dir,
        config,
        state,
        thresholds,
    })
}

/// What [`save`] writes besides the configs.
#[derive(Debug)]
pub struct SaveParts<'a, S: Backend, T: Backend, R> {
    /// The student.
    pub student: &'a Model<S>,
    /// The teacher.
    pub teacher: &'a Model<T>,
    /// The model to deploy.
    pub deployed: &'a Model<T>,
    /// The optimiser record.
    pub optimizer: R,
}

/// Writes a checkpoint into `run_dir/checkpoint` (atomically replacing the previous one).
pub fn save<S: Backend, T: Backend, R: burn::record::Record<S>>(
    run_dir: &Path,
    config: &TrainConfig,
    state: &TrainState,
    thresholds: &Thresholds,
    parts: SaveParts<'_, S, T, R>,
) -> Result<PathBuf> {
    let final_dir = run_dir.join(CHECKPOINT_DIR);
    let tmp = run_dir.join(format!("{CHECKPOINT_DIR}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("removing", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    write_json(&tmp.join("config.json"), config)?;
    write_json(&tmp.join("model.json"), &config.model)?;
    write_json(&tmp.join("state.json"), state)?;
    write_json(&tmp.join("thresholds.json"), thresholds)?;
    let recorder = Recorder::new();
    let record_err = |name: &str, e: burn::record::RecorderError| {
        Error::checkpoint(tmp.join(format!("{name}.mpk")), e.to_string())
    };
    recorder
        .record(parts.student.clone().into_record(), tmp.join("student"))
        .map_err(|e| record_err("student", e))?;
    recorder
        .record(parts.teacher.clone().into_record(), tmp.join("teacher"))
        .map_err(|e| record_err("teacher", e))?;
    recorder
        .record(parts.deployed.clone().into_record(), tmp.join("model"))
        .map_err(|e| record_err("model", e))?;
    <Recorder as burn::record::Recorder<S>>::record(
        &recorder,
        parts.optimizer,
        tmp.join("optimizer"),
    )
    .map_err(|e| record_err("optimizer", e))?;
    let old = run_dir.join(format!("{CHECKPOINT_DIR}.old"));
    if final_dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io("removing", &old, e))?;
        }
        std::fs::rename(&final_dir, &old).map_err(|e| Error::io("renaming", &final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io("renaming", &tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io("removing", &old, e))?;
    }
    Ok(final_dir)
}
