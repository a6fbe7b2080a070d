//! The retrain-and-redeploy loop behind `fer loop` (and the second half of `fer demo`).
//!
//! A run folder `RUN_DIR` (from `fer-train train`) is round 1. Every later round:
//!
//! 1. collects the board's finished field-log segments into `RUN_DIR/collected` and copies
//!    the new crops into the unlabeled pool ([`crate::collect`], [`crate::dataset`]);
//! 2. trains `RUN_DIR/rounds/round-NNN`, warm-started from the incumbent (weights, EMA
//!    teacher and DTA thresholds) with the enlarged pool as unlabeled data;
//! 3. exports it (fp32 + int8, calibrated on the pool; fp32 is shipped, the faster one in tract);
//! 4. scores the new fp32 model and the incumbent's on the same validation folder, as the
//!    board sees it: its runtime, preprocessing, detector and crop margin ([`score_model`]);
//! 5. bundles, signs and flashes it only if it is not worse ([`gate`]);
//! 6. appends a [`RoundRecord`] to `RUN_DIR/rounds.jsonl`.
//!
//! The incumbent is the last round the gate accepted; a rejected model is never the base of
//! the next round. An interrupted round is picked up again: its training resumes from its
//! checkpoint and the board never sees a half-finished round.

use std::fs;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use edge::classify::Classifier;
use edge::detect::Detector;
use edge::margin::Framing;
use firmware_config::config::{ClassifierConfig, DetectorConfig, DetectorKind};
use serde::{Deserialize, Serialize};
use trainer::TrainConfig;
use trainer::checkpoint;
use trainer::export::cli::{CalibArg, ExportArgs, run_export};
use trainer::export::pipeline::manifest_file;
use trainer::export::quant::Int8Form;
use trainer::train::{self, Progress, TrainSummary};

use crate::board::Board;
use crate::bundler::{self, BundleInputs};
use crate::collect::{self, CollectOptions};
use crate::dataset;
use crate::error::{Error, Result};
use crate::keys;

/// The history of rounds inside the run folder, one JSON [`RoundRecord`] per line.
pub const HISTORY_FILE: &str = "rounds.jsonl";
/// The folder of the rounds after the first, inside the run folder.
pub const ROUNDS_DIR: &str = "rounds";
/// The collect folder (`fer collect --into`) inside the run folder.
pub const COLLECT_DIR: &str = "collected";

/// A model's result on the validation folder.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Images scored.
    pub images: u64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Mean over classes of the F1 score.
    pub macro_f1: f64,
}

/// The gate's decision on a new model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Gate {
    /// Flash it (it becomes the incumbent).
    pub deploy: bool,
    /// Both scores and why, for people.
    pub reason: String,
}

/// Deploy `candidate` only if it is not worse than `incumbent` on both accuracy and macro-F1
/// (each may drop by at most `tolerance`, 0 for "not worse at all"). Scores of different
/// validation sets are not comparable: refused. Without an incumbent there is nothing to lose.
pub fn gate(candidate: &Score, incumbent: Option<&Score>, tolerance: f64) -> Gate {
    let Some(old) = incumbent else {
        return Gate {
            deploy: true,
            reason: format!(
                "no earlier model: accuracy {:.2}%, macro-F1 {:.4}",
                100.0 * candidate.accuracy,
                candidate.macro_f1
            ),
        };
    };
    if old.images != candidate.images {
        return Gate {
            deploy: false,
            reason: format!(
                "not comparable: scored on {} and {} images; score both on the same folder",
                candidate.images, old.images
            ),
        };
    }
    let accuracy_ok = candidate.accuracy + tolerance >= old.accuracy;
    let f1_ok = candidate.macro_f1 + tolerance >= old.macro_f1;
    let scores = format!(
        "accuracy {:.2}% (was {:.2}%), macro-F1 {:.4} (was {:.4}), tolerance {tolerance}",
        100.0 * candidate.accuracy,
        100.0 * old.accuracy,
        candidate.macro_f1,
        old.macro_f1
    );
    let verdict = match (accuracy_ok, f1_ok) {
        (true, true) => "not worse",
        (false, true) => "worse accuracy",
        (true, false) => "worse macro-F1",
        (false, false) => "worse accuracy and macro-F1",
    };
    Gate {
        deploy: accuracy_ok && f1_ok,
        reason: format!("{verdict}: {scores}"),
    }
}

/// How the board meets a validation face: its detector, the margin measured for it, and the
/// camera frame a face crop is placed in ([`Framing`]). Without a detector the crop is the face.
#[derive(Debug)]
pub struct BoardView {
    detector: Detector,
    config: DetectorConfig,
    framing: Framing,
}

impl BoardView {
    /// The view of the board that `config` (a device config file) and `detector` (its
    /// detector file, if the config names a detector) describe.
    pub fn from_config(config: &Path, detector: Option<&Path>) -> Result<Self> {
        let device = crate::config::load_any(config)?;
        let found = match (device.detector.kind, detector) {
            (DetectorKind::None, _) => Detector::WholeFrame,
            (_, Some(path)) => Detector::from_file(&device.detector, path)?,
            (kind, None) => {
                return Err(Error::file(
                    config,
                    format!("uses the {kind:?} detector: pass its file with --detector"),
                ));
            }
        };
        let framing = Framing::for_detector(&found, device.camera.width, device.camera.height);
        Ok(Self {
            detector: found,
            config: device.detector,
            framing,
        })
    }
}

/// Scores an exported model (its manifest file) on a labeled ImageFolder of face crops the
/// way the board classifies a face ([`BoardView`]): tract, the manifest's preprocessing and
/// the model file it names; with a detector, each crop is placed in a camera frame, found and
/// cut with the detector's margin, and a face the detector misses counts as wrong.
pub fn score_model(manifest_path: &Path, val: &Path, board: &BoardView) -> Result<Score> {
    let classifier =
        Classifier::from_manifest_file(manifest_path, None, &ClassifierConfig::default())?
            .with_detector_margin(&board.config);
    let report = classifier.evaluate_folder(&board.detector, val, None, board.framing)?;
    Ok(Score {
        images: report.images,
        accuracy: report.accuracy,
        macro_f1: report.macro_f1,
    })
}

/// The incumbent a round was compared with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Incumbent {
    /// Its round.
    pub round: u32,
    /// Its score on this round's validation folder.
    pub score: Score,
}

/// One line of `rounds.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RoundRecord {
    /// 1 for the starting run, then 2, 3, ...
    pub round: u32,
    /// The round's run folder (checkpoint, metrics).
    pub run_dir: PathBuf,
    /// The run it was warm-started from (none for round 1).
    pub warm_start: Option<PathBuf>,
    /// The fp32 model's manifest (the model scored and shipped).
    pub manifest: PathBuf,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Labeled images trained on (from the run's summary, when it has one).
    pub labeled: Option<usize>,
    /// Unlabeled images trained on (pool, collected crops, hidden labels).
    pub unlabeled: Option<usize>,
    /// Field records newly collected from the board this round.
    pub collected: usize,
    /// Crops newly copied into the unlabeled pool this round.
    pub added_to_pool: usize,
    /// The model's score on the validation folder.
    pub score: Score,
    /// The incumbent, re-scored on the same folder (none for round 1).
    pub incumbent: Option<Incumbent>,
    /// The gate's decision.
    pub gate: Gate,
    /// The per-class thresholds in the manifest (the board logs faces below them).
    pub thresholds: Vec<f32>,
    /// Flashed to the board by this round.
    pub deployed: bool,
    /// The bundle flashed.
    pub bundle_id: Option<String>,
    /// The board address.
    pub board: String,
    /// Wall time of the round, seconds.
    pub seconds: f64,
    /// When it finished (RFC 3339 UTC).
    pub finished: String,
}

/// The rounds so far (empty when there is no history yet).
pub fn read_history(run_dir: &Path) -> Result<Vec<RoundRecord>> {
    let path = run_dir.join(HISTORY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::file(
                    &path,
                    format!(
                        "line {} is not a round record ({e}); remove the line to go on",
                        i + 1
                    ),
                )
            })
        })
        .collect()
}

fn append_history(run_dir: &Path, record: &RoundRecord) -> Result<()> {
    let path = run_dir.join(HISTORY_FILE);
    let line =
        serde_json::to_string(record).map_err(|e| Error::invalid("round record", e.to_string()))?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io("opening", &path, e))?;
    writeln!(file, "{line}")
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("appending to", &path, e))
}

/// The last round the gate accepted.
pub fn incumbent(history: &[RoundRecord]) -> Option<&RoundRecord> {
    history.iter().rev().find(|r| r.gate.deploy)
}

/// Everything a round needs.
#[derive(Debug, Clone)]
pub struct LoopSetup {
    /// The board to collect from and flash.
    pub board: Board,
    /// The starting run folder (round 1); history and later rounds live inside it.
    pub run_dir: PathBuf,
    /// The fixed validation ImageFolder every round is scored on.
    pub val: PathBuf,
    /// The unlabeled pool that collected crops join.
    pub pool: PathBuf,
    /// The private signing key.
    pub key: PathBuf,
    /// The device config bundled with every model.
    pub config: PathBuf,
    /// The detector file bundled with every model.
    pub detector: Option<PathBuf>,
    /// Training steps of each new round.
    pub steps: u64,
    /// How much accuracy and macro-F1 may drop and still pass the gate.
    pub tolerance: f64,
    /// Images for int8 calibration, searched recursively.
    pub calibration: PathBuf,
    /// Calibration images to use.
    pub calib_images: usize,
    /// Training progress display.
    pub progress: Progress,
}

fn round_dir(setup: &LoopSetup, round: u32) -> PathBuf {
    setup
        .run_dir
        .join(ROUNDS_DIR)
        .join(format!("round-{round:03}"))
}

/// Trains `dir` with `config`, or finishes what an interrupted call left there: a finished
/// run is read back, an unfinished one resumes from its checkpoint.
pub fn train_or_resume(
    config: TrainConfig,
    dir: &Path,
    progress: Progress,
) -> Result<TrainSummary> {
    if checkpoint::exists(dir) {
        let ckpt = checkpoint::load(dir)?;
        let summary = dir.join("summary.json");
        if ckpt.state.step < ckpt.config.steps {
            return Ok(train::resume(dir, None, progress)?);
        }
        if summary.is_file() {
            let text =
                fs::read_to_string(&summary).map_err(|e| Error::io("reading", &summary, e))?;
            return serde_json::from_str(&text).map_err(|e| {
                Error::file(
                    &summary,
                    format!("not a training summary ({e}); delete the run folder to train again"),
                )
            });
        }
    }
    if dir.join(checkpoint::CHECKPOINT_DIR).exists() {
        // A checkpoint without its summary: the run died while finishing; train it again.
        let ckpt = dir.join(checkpoint::CHECKPOINT_DIR);
        fs::remove_dir_all(&ckpt).map_err(|e| Error::io("removing", &ckpt, e))?;
    }
    Ok(train::train(config, dir, progress)?)
}

fn export(setup: &LoopSetup, run: &Path, out: &Path) -> Result<PathBuf> {
    let outcome = run_export(&ExportArgs {
        checkpoint: run.to_path_buf(),
        out: out.to_path_buf(),
        calibration: Some(setup.calibration.clone()),
        calib_images: setup.calib_images,
        calib_method: CalibArg::Percentile,
        int8_form: Int8Form::Integer,
        eval: Some(setup.val.clone()),
        latency_runs: 0,
        student: false,
    })?;
    // fp32 is shipped: int8 still runs slower than fp32 in tract (docs/RESULTS.md "int8 that is integer").
    let name = outcome
        .fp32_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(out.join(manifest_file(&name)))
}

fn deploy(
    setup: &LoopSetup,
    manifest: &Path,
    out: &Path,
    on_step: &mut dyn FnMut(&str),
) -> Result<String> {
    on_step("bundling and signing");
    let key = keys::load_private(&setup.key)?;
    let bundle = bundler::build(
        &BundleInputs {
            model: manifest.to_path_buf(),
            config: setup.config.clone(),
            detector: setup.detector.clone(),
            extra: Vec::new(),
            out: out.to_path_buf(),
            force: true,
            version: None,
            rotate_from: None,
        },
        &key,
    )?;
    let done = setup.board.flash(&bundle.dir, on_step)?;
    Ok(done.bundle_id)
}

fn summary_of(run: &Path) -> Option<TrainSummary> {
    let text = fs::read_to_string(run.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    collect::rfc3339(ms)
}

/// What a round trained, and on what: the parts of its [`RoundRecord`] that differ between
/// the starting run and the rounds after it.
struct Trained {
    round: u32,
    run_dir: PathBuf,
    warm_start: Option<PathBuf>,
    class_names: Vec<String>,
    labeled: Option<usize>,
    unlabeled: Option<usize>,
    thresholds: Vec<f32>,
    collected: usize,
    added_to_pool: usize,
}

/// Exports a trained round, scores it (and the incumbent `base`, if any) on the validation
/// folder, gates it, deploys it when the gate passes and `flash` allows, and appends its
/// record to the history.
fn finish_round(
    setup: &LoopSetup,
    started: Instant,
    trained: Trained,
    base: Option<&RoundRecord>,
    flash: bool,
    on_step: &mut dyn FnMut(&str),
) -> Result<RoundRecord> {
    let round = trained.round;
    let dir = round_dir(setup, round);
    on_step(&format!("round {round}: exporting fp32 + int8"));
    let manifest = export(setup, &trained.run_dir, &dir.join("export"))?;
    on_step(&format!(
        "round {round}: {}",
        if base.is_some() {
            "scoring both models"
        } else {
            "scoring on the validation folder"
        }
    ));
    let board = BoardView::from_config(&setup.config, setup.detector.as_deref())?;
    let score = score_model(&manifest, &setup.val, &board)?;
    let incumbent = match base {
        Some(base) => Some(Incumbent {
            round: base.round,
            score: score_model(&base.manifest, &setup.val, &board)?,
        }),
        None => None,
    };
    let mut decision = gate(
        &score,
        incumbent.as_ref().map(|i| &i.score),
        setup.tolerance,
    );
    let bundle_id = match (decision.deploy, flash) {
        (true, true) => Some(deploy(setup, &manifest, &dir.join("bundle"), on_step)?),
        (true, false) => {
            decision
                .reason
                .push_str("; the starting run is the baseline, not flashed by this command");
            None
        }
        (false, _) => None,
    };
    let record = RoundRecord {
        round,
        run_dir: trained.run_dir,
        warm_start: trained.warm_start,
        manifest,
        class_names: trained.class_names,
        labeled: trained.labeled,
        unlabeled: trained.unlabeled,
        collected: trained.collected,
        added_to_pool: trained.added_to_pool,
        score,
        incumbent,
        gate: decision,
        thresholds: trained.thresholds,
        deployed: bundle_id.is_some(),
        bundle_id,
        board: setup.board.address(),
        seconds: started.elapsed().as_secs_f64(),
        finished: now(),
    };
    append_history(&setup.run_dir, &record)?;
    Ok(record)
}

/// Makes the starting run round 1 when the history is empty: exports it, scores it and,
/// with `flash`, bundles and flashes it. Returns `None` when the history already has rounds.
pub fn start(
    setup: &LoopSetup,
    flash: bool,
    on_step: &mut dyn FnMut(&str),
) -> Result<Option<RoundRecord>> {
    if !read_history(&setup.run_dir)?.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    let ckpt = checkpoint::load(&setup.run_dir)?;
    let summary = summary_of(&setup.run_dir);
    let trained = Trained {
        round: 1,
        run_dir: setup.run_dir.clone(),
        warm_start: None,
        class_names: ckpt.state.class_names.clone(),
        labeled: summary.as_ref().map(|s| s.labeled),
        unlabeled: summary.as_ref().map(|s| s.unlabeled),
        thresholds: ckpt.thresholds.thresholds.clone(),
        collected: 0,
        added_to_pool: 0,
    };
    finish_round(setup, started, trained, None, flash, on_step).map(Some)
}

/// Runs one round after the first (see the module docs) and records it.
pub fn run_round(setup: &LoopSetup, on_step: &mut dyn FnMut(&str)) -> Result<RoundRecord> {
    let started = Instant::now();
    let history = read_history(&setup.run_dir)?;
    let last = history.last().ok_or_else(|| {
        Error::invalid(
            "history",
            format!(
                "{} has no round 1 yet: start the loop first",
                setup.run_dir.join(HISTORY_FILE).display()
            ),
        )
    })?;
    let round = last.round + 1;
    let base = incumbent(&history).ok_or_else(|| {
        Error::file(
            setup.run_dir.join(HISTORY_FILE),
            "no round was ever accepted, so there is no model to continue from",
        )
    })?;
    let dir = round_dir(setup, round);

    // 1. Field data.
    let (mut collected, mut added) = (0, 0);
    if setup.board.status()?.board.active.is_some() {
        on_step(&format!("round {round}: collecting the field log"));
        let into = setup.run_dir.join(COLLECT_DIR);
        let report =
            collect::collect(&setup.board, &into, &CollectOptions::default(), &mut |_| {
                ControlFlow::Continue(())
            })?;
        collected = report.records_new;
        on_step(&format!(
            "round {round}: {collected} new field record(s); adding their crops to the pool"
        ));
        added = dataset::import_collected(&into, &setup.pool)?.0;
    }

    // 2. Train, warm-started from the incumbent.
    let config = round_config(setup, base, round)?;
    on_step(&format!(
        "round {round}: training {} steps from round {}",
        setup.steps, base.round
    ));
    let summary = train_or_resume(config, &dir, setup.progress)?;

    // 3-6. Export, score both on the same folder, deploy only what passed, record.
    let trained = Trained {
        round,
        run_dir: dir,
        warm_start: Some(base.run_dir.clone()),
        class_names: summary.class_names,
        labeled: Some(summary.labeled),
        unlabeled: Some(summary.unlabeled),
        thresholds: summary.thresholds,
        collected,
        added_to_pool: added,
    };
    finish_round(setup, started, trained, Some(base), true, on_step)
}

/// The training config of round `round`: `base`'s, warm-started from it, with the pool among
/// its unlabeled folders, the loop's steps and a seed of its own.
pub fn round_config(setup: &LoopSetup, base: &RoundRecord, round: u32) -> Result<TrainConfig> {
    let mut config = checkpoint::load(&base.run_dir)?.config;
    config.warm_start = Some(base.run_dir.clone());
    if !config.data.unlabeled.contains(&setup.pool) {
        config.data.unlabeled.push(setup.pool.clone());
    }
    config.steps = setup.steps;
    config.seed = config.seed.wrapping_add(u64::from(round));
    Ok(config)
}

/// Exports the run in `run` into `out` and scores its shipped model on the validation folder
/// the way rounds are scored, for a run outside the history (a control).
pub fn score_run(setup: &LoopSetup, run: &Path, out: &Path) -> Result<Score> {
    let manifest = export(setup, run, out)?;
    let board = BoardView::from_config(&setup.config, setup.detector.as_deref())?;
    score_model(&manifest, &setup.val, &board)
}

/// One row of the rounds table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TableRow {
    /// Round number.
    pub round: u32,
    /// Labeled images.
    pub labeled: Option<usize>,
    /// Unlabeled images.
    pub unlabeled: Option<usize>,
    /// Field records collected for this round.
    pub field_records: usize,
    /// Validation accuracy of the round's shipped (fp32) model.
    pub val_accuracy: f64,
    /// Its validation macro-F1.
    pub macro_f1: f64,
    /// Smallest and largest per-class threshold.
    pub thresholds: (f32, f32),
    /// Accepted by the gate.
    pub accepted: bool,
    /// Flashed to the board.
    pub deployed: bool,
    /// The gate's reason.
    pub gate: String,
}

impl From<&RoundRecord> for TableRow {
    fn from(r: &RoundRecord) -> Self {
        let lo = r.thresholds.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = r
            .thresholds
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        TableRow {
            round: r.round,
            labeled: r.labeled,
            unlabeled: r.unlabeled,
            field_records: r.collected,
            val_accuracy: r.score.accuracy,
            macro_f1: r.score.macro_f1,
            thresholds: if r.thresholds.is_empty() {
                (0.0, 0.0)
            } else {
                (lo, hi)
            },
            accepted: r.gate.deploy,
            deployed: r.deployed,
            gate: r.gate.reason.clone(),
        }
    }
}

/// The rounds as a plain-text table.
pub fn table(rows: &[TableRow]) -> String {
    let count = |n: Option<usize>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut out = format!(
        "{:>5}  {:>7}  {:>9}  {:>13}  {:>7}  {:>8}  {:>11}  {:>8}\n",
        "round",
        "labeled",
        "unlabeled",
        "field records",
        "val acc",
        "macro-F1",
        "thresholds",
        "deployed"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>5}  {:>7}  {:>9}  {:>13}  {:>6.1}%  {:>8.4}  {:>11}  {:>8}\n",
            r.round,
            count(r.labeled),
            count(r.unlabeled),
            r.field_records,
            100.0 * r.val_accuracy,
            r.macro_f1,
            format!("{:.2}-{:.2}", r.thresholds.0, r.thresholds.1),
            if r.deployed { "yes" } else { "no" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(images: u64, accuracy: f64, macro_f1: f64) -> Score {
        Score {
            images,
            accuracy,
            macro_f1,
        }
    }

    #[test]
    fn the_gate_passes_only_models_that_are_not_worse() {
        let old = score(100, 0.80, 0.78);
        assert!(gate(&score(100, 0.80, 0.78), Some(&old), 0.0).deploy);
        assert!(gate(&score(100, 0.85, 0.80), Some(&old), 0.0).deploy);
        let worse_acc = gate(&score(100, 0.79, 0.90), Some(&old), 0.0);
        assert!(!worse_acc.deploy);
        assert!(
            worse_acc.reason.starts_with("worse accuracy:"),
            "{}",
            worse_acc.reason
        );
        let worse_f1 = gate(&score(100, 0.90, 0.77), Some(&old), 0.0);
        assert!(!worse_f1.deploy);
        assert!(
            worse_f1.reason.starts_with("worse macro-F1"),
            "{}",
            worse_f1.reason
        );
        assert!(!gate(&score(100, 0.70, 0.70), Some(&old), 0.0).deploy);
        // Within the tolerance a small drop passes; beyond it, not.
        assert!(gate(&score(100, 0.79, 0.775), Some(&old), 0.01).deploy);
        assert!(!gate(&score(100, 0.78, 0.775), Some(&old), 0.01).deploy);
        // Both scores are in the reason.
        let r = gate(&score(100, 0.85, 0.80), Some(&old), 0.0).reason;
        assert!(
            r.contains("85.00%") && r.contains("80.00%") && r.contains("0.7800"),
            "{r}"
        );
    }

    #[test]
    fn the_gate_deploys_a_first_model_and_refuses_other_validation_sets() {
        assert!(gate(&score(10, 0.1, 0.1), None, 0.0).deploy);
        let g = gate(&score(90, 0.99, 0.99), Some(&score(100, 0.5, 0.5)), 0.0);
        assert!(
            !g.deploy && g.reason.contains("not comparable"),
            "{}",
            g.reason
        );
    }

    fn record(round: u32, deploy: bool, thresholds: Vec<f32>) -> RoundRecord {
        RoundRecord {
            round,
            run_dir: PathBuf::from(format!("run/{round}")),
            warm_start: None,
            manifest: PathBuf::from("m.json"),
            class_names: vec!["a".into(), "b".into()],
            labeled: Some(10),
            unlabeled: None,
            collected: 3,
            added_to_pool: 3,
            score: score(4, 0.75, 0.7),
            incumbent: None,
            gate: Gate {
                deploy,
                reason: "r".into(),
            },
            thresholds,
            deployed: deploy,
            bundle_id: None,
            board: "dir:b".into(),
            seconds: 1.0,
            finished: "t".into(),
        }
    }

    #[test]
    fn history_round_trips_and_the_incumbent_is_the_last_accepted_round() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_history(tmp.path()).unwrap().is_empty());
        let rounds = [
            record(1, true, vec![0.6, 0.8]),
            record(2, true, vec![0.55, 0.9]),
            record(3, false, vec![]),
        ];
        for r in &rounds {
            append_history(tmp.path(), r).unwrap();
        }
        let history = read_history(tmp.path()).unwrap();
        assert_eq!(history, rounds);
        assert_eq!(incumbent(&history).unwrap().round, 2);
        let rows: Vec<TableRow> = history.iter().map(TableRow::from).collect();
        assert_eq!(rows[1].thresholds, (0.55, 0.9));
        let text = table(&rows);
        assert!(
            text.contains("0.55-0.90") && text.contains("75.0%"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().nth(3).unwrap().ends_with("no"), "{text}");

        fs::write(tmp.path().join(HISTORY_FILE), "{\"round\": 1}\n").unwrap();
        let err = read_history(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains(HISTORY_FILE) && err.contains("line 1"),
            "{err}"
        );
    }
}
