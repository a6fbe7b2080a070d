//! `fer demo`: the whole loop on synthetic faces, on this machine's CPU.
//!
//! 1. Synthetic face crops with known expressions (angry, happy, neutral, sad, surprise):
//!    a small labeled ImageFolder, a larger unlabeled pool and a validation ImageFolder,
//!    each from its own seed.
//! 2. Round 1: a small residual network (gray input) trained with DTA + SNL.
//! 3. Exported to fp32 + int8 ONNX with a manifest carrying the trained thresholds.
//! 4. A signing key, a device config and a board folder (`dir:`) trusting the key; the model
//!    is bundled, signed and flashed there.
//! 5. The board's pipeline (the edge library: whole-frame detector, fp32 classifier, tracker,
//!    field log) runs on a synthetic camera until enough low-confidence faces are logged, or
//!    a frame limit is reached.
//! 6. Round 2 ([`crate::retrain::run_round`], the round of `fer loop`): collect, add the
//!    crops to the pool, warm-started retraining, scoring both rounds on the validation set,
//!    the gate, and a flash only when round 2 is not worse.
//! 7. A control: round 2's training again (same round-1 start, steps and seed) without the
//!    collected faces, so the table separates what the field faces added from what more
//!    training added.
//! 8. A table of the rounds, also written as `WORKDIR/rounds.json`.
//!
//! Re-running continues where the last run stopped; `fresh` starts over.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edge::capture::synthetic::SyntheticSource;
use edge::capture::{CaptureThread, Frame, FrameSource, SourceCounters, StopToken};
use edge::pipeline::Pipeline;
use edge::rgb_image;
use edge::synthetic::{SyntheticConfig, SyntheticFaces, write_dataset};
use firmware_config::config::{DetectorKind, DeviceConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use trainer::TrainConfig;
use trainer::data::LabeledSource;
use trainer::data::loader::LabeledAugmentation;
use trainer::model::{Backbone, ModelConfig};
use trainer::train::Progress;

use crate::board::Board;
use crate::error::{Error, Result};
use crate::retrain::{self, LoopSetup, RoundRecord, Score, TableRow};
use crate::{config, keys};

/// The file that marks a folder as a demo work folder (only such folders are ever deleted).
pub const MARKER: &str = ".fer-demo";
/// The table of rounds, as JSON, in the work folder.
pub const ROUNDS_JSON: &str = "rounds.json";
/// The pool's subfolder of synthetic faces (collected crops go beside it).
const SYNTHETIC_POOL: &str = "synthetic";

/// The knobs of the demo; [`Default`] is `fer demo` without flags.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// The work folder.
    pub workdir: PathBuf,
    /// Delete the work folder first (only if it is a demo work folder).
    pub fresh: bool,
    /// Side of the face crops and of the network input, pixels.
    pub image_size: u32,
    /// Labeled images per class.
    pub labeled_per_class: usize,
    /// Unlabeled pool images.
    pub pool_images: usize,
    /// Validation images per class.
    pub val_per_class: usize,
    /// Training steps of round 1.
    pub steps: u64,
    /// Training steps of round 2 (warm-started).
    pub round_steps: u64,
    /// Labeled images per step (the unlabeled batch is twice as large).
    pub batch: usize,
    /// Stop the board once this many low-confidence faces are logged.
    pub field_records: u64,
    /// ... or after this many camera frames.
    pub max_frames: u64,
    /// Training progress on the terminal.
    pub progress: Progress,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            workdir: PathBuf::from("fer-demo"),
            fresh: false,
            image_size: 32,
            labeled_per_class: 60,
            pool_images: 1200,
            val_per_class: 60,
            steps: 150,
            round_steps: 75,
            batch: 16,
            field_records: 60,
            max_frames: 3000,
            progress: Progress::Bar,
        }
    }
}

/// What the board did in step 5.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FieldRun {
    /// Frames processed.
    pub frames: u64,
    /// Faces classified.
    pub faces: u64,
    /// Of them, below their class's threshold.
    pub low_confidence: u64,
    /// Records the field log acknowledged.
    pub logged: u64,
}

/// Round 2 against its control, all three scored like the rounds: the shipped fp32 export on
/// the validation folder, through the board's classifier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Control {
    /// Steps round 2 and the control trained from round 1.
    pub steps: u64,
    /// Round 1's validation accuracy.
    pub round_one: f64,
    /// Round 2's, trained with the collected field faces in the pool.
    pub round_two: f64,
    /// The control's, trained the same way without them.
    pub without_field: f64,
}

impl Control {
    /// One line for the terminal.
    pub fn describe(&self) -> String {
        format!(
            "control: {} more steps from round 1 without the field faces: {:.2}% on val; with \
             them (round 2): {:.2}%; round 1: {:.2}%. More training added {:+.2} points, the field faces {:+.2}.",
            self.steps,
            100.0 * self.without_field,
            100.0 * self.round_two,
            100.0 * self.round_one,
            100.0 * (self.without_field - self.round_one),
            100.0 * (self.round_two - self.without_field),
        )
    }
}

/// What `WORKDIR/rounds.json` holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DemoReport {
    /// One row per round.
    pub rounds: Vec<TableRow>,
    /// The board run between the rounds (absent when a re-run found it done).
    pub field: Option<FieldRun>,
    /// Round 2 against the same training without the field faces.
    #[serde(default)]
    pub control: Option<Control>,
    /// The board folder (`dir:` address).
    pub board: String,
    /// The full history (`rounds.jsonl`).
    pub history: PathBuf,
    /// The training plots of every round (thresholds per class, pseudo-label rate).
    #[serde(default)]
    pub plots: Vec<PathBuf>,
    /// Wall time of this call, seconds.
    pub seconds: f64,
}

/// The paths inside a work folder.
#[derive(Debug, Clone)]
struct Layout {
    labeled: PathBuf,
    pool: PathBuf,
    val: PathBuf,
    key: PathBuf,
    config: PathBuf,
    board: PathBuf,
    run: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        Layout {
            labeled: root.join("data/labeled"),
            pool: root.join("data/unlabeled"),
            val: root.join("data/val"),
            key: root.join("keys/fer-signing.key"),
            config: root.join("board.toml"),
            board: root.join("board"),
            run: root.join("run"),
        }
    }
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

fn prepare_workdir(options: &DemoOptions) -> Result<()> {
    let dir = &options.workdir;
    let marker = dir.join(MARKER);
    let is_demo = marker.is_file();
    let is_empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if !is_demo && !is_empty {
        return Err(Error::file(
            dir,
            "exists and is not a `fer demo` work folder: pass another --workdir",
        ));
    }
    if options.fresh && is_demo {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io("removing", dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    std::fs::write(&marker, b"fer demo work folder\n").map_err(|e| Error::io("writing", &marker, e))
}

fn crops(options: &DemoOptions) -> SyntheticConfig {
    SyntheticConfig::crops(options.image_size)
}

/// Writes the three data sets, unless a complete earlier run left them.
fn make_data(options: &DemoOptions, layout: &Layout) -> Result<()> {
    let done = options.workdir.join("data/.complete");
    if done.is_file() {
        return Ok(());
    }
    let data = options.workdir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| Error::io("removing", &data, e))?;
    }
    let bar = spinner("drawing synthetic faces");
    write_dataset(
        &layout.labeled,
        options.labeled_per_class,
        &crops(options),
        1,
    )?;
    write_dataset(&layout.val, options.val_per_class, &crops(options), 3)?;
    // The pool is one flat folder: its images carry no label, not even in a folder name.
    let pool = layout.pool.join(SYNTHETIC_POOL);
    std::fs::create_dir_all(&pool).map_err(|e| Error::io("creating", &pool, e))?;
    let mut faces = SyntheticFaces::new(crops(options), 2)?;
    for i in 0..options.pool_images {
        let path = pool.join(format!("{i:05}.png"));
        rgb_image(&faces.sample().image)
            .save(&path)
            .map_err(|e| Error::file(&path, format!("cannot write the image: {e}")))?;
    }
    bar.finish_and_clear();
    println!(
        "data: {} labeled, {} unlabeled, {} validation faces (5 expressions, {}x{} px)",
        5 * options.labeled_per_class,
        options.pool_images,
        5 * options.val_per_class,
        options.image_size,
        options.image_size
    );
    std::fs::write(&done, b"").map_err(|e| Error::io("writing", &done, e))
}

/// A board whose camera frames are already face crops (the demo's synthetic camera, a folder
/// of FER2013 images): no detector (every frame is one face), no smoothing and no
/// de-duplication (consecutive frames are different faces), the field log in the board's
/// `field-log` folder.
pub fn face_crop_board(device_id: &str) -> DeviceConfig {
    let mut device = DeviceConfig::default();
    device.device.id = device_id.into();
    device.detector.kind = DetectorKind::None;
    device.detector.model_file = String::new();
    device.classifier.smoothing = 1.0;
    device.field_log.directory = "field-log".into();
    device.field_log.dedup_window_ms = 0;
    device.field_log.max_records_per_minute = 0;
    device
}

fn device_config(options: &DemoOptions) -> DeviceConfig {
    let mut device = face_crop_board("demo-board");
    device.device.name = "fer demo board (synthetic camera)".into();
    device.camera.width = options.image_size;
    device.camera.height = options.image_size;
    device
}

/// A short DTA + SNL run (a few hundred steps) of a small residual network on `side` x `side`
/// gray face crops, for a [`face_crop_board`]: ImageFolder `labeled`, unlabeled `pool`.
pub fn face_crop_training(
    side: usize,
    labeled: &Path,
    pool: &Path,
    steps: u64,
    batch: usize,
) -> TrainConfig {
    let model = ModelConfig {
        input_width: side,
        input_height: side,
        input_channels: 1,
        ..ModelConfig::for_backbone(Backbone::Resnet)
    };
    let mut config = TrainConfig::for_model(model);
    // Frames are face crops and the board's detector is the whole frame: no margin.
    config.preprocessing.crop_margin = 0.0;
    config.data.labeled = LabeledSource::ImageFolder {
        path: labeled.to_path_buf(),
    };
    config.data.unlabeled = vec![pool.to_path_buf()];
    config.steps = steps;
    config.labeled_batch = batch;
    // FER2013's heavy augmentation (rotation, scale, random erasing) keeps a few hundred steps
    // near chance on small synthetic crops: 21% after 200 steps at 32 px, 5 classes.
    config.data.labeled_augmentation = LabeledAugmentation::Weak;
    config.unlabeled_ratio = 2;
    config.optimizer.warmup_steps = (steps / 10).max(1);
    config.checkpoint_every = 0;
    // A few hundred steps instead of tens of thousands: faster teacher and threshold EMAs.
    config.algorithm.ema_momentum = 0.99;
    config.algorithm.dta_momentum = 0.99;
    config
}

/// A synthetic camera that ends after a number of frames.
struct Bounded {
    inner: SyntheticSource,
    left: u64,
}

impl FrameSource for Bounded {
    fn next_frame(&mut self, stop: &StopToken) -> std::result::Result<Option<Frame>, edge::Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.inner.next_frame(stop)
    }

    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    fn describe(&self) -> String {
        format!("{} ({} frames at most)", self.inner.describe(), self.left)
    }

    fn counters(&self) -> SourceCounters {
        self.inner.counters()
    }
}

/// Reads the pipeline's per-frame JSON lines: counts acknowledged field records and raises
/// `stop` at the target.
struct FrameWatcher {
    stop: Arc<AtomicBool>,
    target: u64,
    logged: u64,
    line: Vec<u8>,
    bar: ProgressBar,
}

impl FrameWatcher {
    fn frame(&mut self, line: &[u8]) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        if value["kind"] != "frame" {
            return;
        }
        let faces = value["frame"]["faces"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        self.logged += faces
            .iter()
            .filter(|f| f["logged"].get("written").is_some())
            .count() as u64;
        self.bar.inc(1);
        self.bar
            .set_message(format!("{} low-confidence face(s) logged", self.logged));
        if self.logged >= self.target {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

impl Write for FrameWatcher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.frame(&line);
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the board's active bundle on a synthetic camera (step 5).
fn run_board(options: &DemoOptions, board: &Path) -> Result<FieldRun> {
    let bundle = edge::bundle::open_for_run(board)?;
    let mut device = bundle.config.clone();
    device.field_log.directory = board
        .join(&device.field_log.directory)
        .display()
        .to_string();
    // As `fer-edge run --bundle` starts: both models load and the self-test passes.
    let (detector, classifier, _) = edge::bundle::load_models(&bundle)?;
    let pipeline = Pipeline::new(detector, classifier, &device)?;
    let source = Bounded {
        inner: SyntheticSource::new(crops(options), 4, None)?,
        left: options.max_frames,
    };
    let capture = CaptureThread::spawn(Box::new(source));
    let stop = Arc::new(AtomicBool::new(false));
    let bar = ProgressBar::new(options.max_frames);
    bar.set_style(
        ProgressStyle::with_template("board {bar:30} {pos}/{len} frames, {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut watcher = FrameWatcher {
        stop: Arc::clone(&stop),
        target: options.field_records,
        logged: 0,
        line: Vec::new(),
        bar: bar.clone(),
    };
    let report = pipeline.run(
        capture,
        &stop,
        None,
        Duration::from_secs(3600),
        true,
        &mut watcher,
    );
    bar.finish_and_clear();
    let report = report?;
    Ok(FieldRun {
        frames: report.frames,
        faces: report.faces,
        low_confidence: report.low_confidence,
        logged: report.field_log.map_or(0, |s| s.written),
    })
}

fn step(what: &str) {
    println!("  {what}");
}

fn print_round(record: &RoundRecord) {
    println!(
        "round {}: val accuracy {:.2}%, macro-F1 {:.4}; gate: {}; {}",
        record.round,
        100.0 * record.score.accuracy,
        record.score.macro_f1,
        record.gate.reason,
        if record.deployed {
            format!(
                "flashed bundle {}",
                record
                    .bundle_id
                    .as_deref()
                    .map_or("", |id| &id[..12.min(id.len())])
            )
        } else {
            "not flashed".to_string()
        }
    );
}

/// The control's run folder and export, beside the rounds.
const CONTROL_DIR: &str = "control";
/// The control's score, in its run folder, so that a re-run does not export it again.
const CONTROL_SCORE: &str = "score.json";

/// Trains round 2's control (or reads back a finished one) and scores it like the rounds:
/// round 2's config from the same start, without the crops collected in the field. It needs
/// nothing from the board, so [`run`] trains it on a thread while the board and round 2 work.
fn train_control(setup: &LoopSetup, layout: &Layout, base: &RoundRecord) -> Result<(u64, Score)> {
    let mut config = retrain::round_config(setup, base, base.round + 1)?;
    // The pool as round 1 had it: the synthetic faces, not the crops collected since.
    config.data.unlabeled = vec![layout.pool.join(SYNTHETIC_POOL)];
    config.data.field.clear();
    let steps = config.steps;
    let dir = layout.run.join(CONTROL_DIR);
    let scored = dir.join(CONTROL_SCORE);
    if let Some(score) = std::fs::read(&scored)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        return Ok((steps, score));
    }
    println!(
        "control: round 2's {steps} steps from round 1 again, without the field faces, on a \
         second thread"
    );
    retrain::train_or_resume(config, &dir, Progress::Hidden)?;
    let score = retrain::score_run(setup, &dir, &dir.join("export"))?;
    let json = serde_json::to_vec_pretty(&score)
        .map_err(|e| Error::invalid("control score", e.to_string()))?;
    std::fs::write(&scored, json).map_err(|e| Error::io("writing", &scored, e))?;
    Ok((steps, score))
}

/// The PNG plots in the rounds' run folders, in round order.
fn plots(history: &[RoundRecord]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for record in history {
        let dir = &record.run_dir;
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
        let mut pngs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        pngs.sort();
        found.extend(pngs);
    }
    Ok(found)
}

/// Runs the demo (see the module docs) and returns what it wrote to `rounds.json`.
pub fn run(options: &DemoOptions) -> Result<DemoReport> {
    let started = Instant::now();
    prepare_workdir(options)?;
    let layout = Layout::new(&options.workdir);
    make_data(options, &layout)?;

    if !layout.key.is_file() {
        keys::generate(&layout.key, false)?;
    }
    let public = keys::load_public(&keys::public_path(&layout.key).display().to_string())?;
    let text = config::to_toml(&device_config(options))?;
    std::fs::write(&layout.config, text).map_err(|e| Error::io("writing", &layout.config, e))?;
    let board = Board::Dir(layout.board.clone());
    if !layout.board.join(edge::bundle::TRUSTED_KEY_FILE).is_file() {
        board.init_trust(&public)?;
    }

    let setup = LoopSetup {
        board: board.clone(),
        run_dir: layout.run.clone(),
        val: layout.val.clone(),
        pool: layout.pool.clone(),
        key: layout.key.clone(),
        config: layout.config.clone(),
        detector: None,
        steps: options.round_steps,
        tolerance: 0.0,
        calibration: layout.pool.clone(),
        calib_images: 200,
        progress: options.progress,
    };
    let mut history = retrain::read_history(&layout.run)?;
    let mut field = None;
    if history.is_empty() {
        println!(
            "round 1: training {} steps (DTA + SNL, residual backbone, {}x{} gray)",
            options.steps, options.image_size, options.image_size
        );
        let summary = retrain::train_or_resume(
            face_crop_training(
                options.image_size as usize,
                &layout.labeled,
                &layout.pool,
                options.steps,
                options.batch,
            ),
            &layout.run,
            options.progress,
        )?;
        println!(
            "round 1: trained in {:.0} s ({:.0} images/s)",
            summary.seconds, summary.images_per_second
        );
        let record = retrain::start(&setup, true, &mut step)?;
        if let Some(record) = record {
            print_round(&record);
        }
        history = retrain::read_history(&layout.run)?;
    }
    let first = history.first().cloned().ok_or_else(|| {
        Error::invalid("demo", "round 1 left no record in the history".to_string())
    })?;
    let control = std::thread::scope(|scope| -> Result<_> {
        let control = scope.spawn(|| train_control(&setup, &layout, &first));
        if history.len() == 1 {
            let run = run_board(options, &layout.board)?;
            println!(
                "board: {} frames, {} low-confidence, {} logged to the field log",
                run.frames, run.low_confidence, run.logged
            );
            field = Some(run);
            print_round(&retrain::run_round(&setup, &mut step)?);
            history = retrain::read_history(&layout.run)?;
        }
        let (steps, score) = control
            .join()
            .map_err(|_| Error::invalid("demo", "the control's thread panicked".to_string()))??;
        Ok(history.get(1).map(|second| Control {
            steps,
            round_one: first.score.accuracy,
            round_two: second.score.accuracy,
            without_field: score.accuracy,
        }))
    })?;
    let rows: Vec<TableRow> = history.iter().map(TableRow::from).collect();
    let report = DemoReport {
        rounds: rows,
        field,
        control,
        board: board.address(),
        history: layout.run.join(retrain::HISTORY_FILE),
        plots: plots(&history)?,
        seconds: started.elapsed().as_secs_f64(),
    };
    let path = options.workdir.join(ROUNDS_JSON);
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::invalid("rounds table", e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| Error::io("writing", &path, e))?;
    Ok(report)
}
