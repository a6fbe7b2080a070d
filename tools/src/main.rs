//! `fer`: the workstation command of the facial-expression toolkit.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use firmware_config::exit_code::{self, Program};
use indicatif::{ProgressBar, ProgressStyle};
use tools::board::Board;
use tools::collect::{self, CollectOptions, Event};
use tools::{bundler, config, dataset, demo, fleet, keys, retrain};
use trainer::train::Progress;

/// The workstation side of the FER edge toolkit: keys, configs, signed bundles, flashing
/// boards over ssh, collecting their field logs, datasets, the retrain-and-redeploy loop and
/// a demo of all of it on synthetic faces.
#[derive(Debug, Parser)]
#[command(name = "fer", version, after_help = exit_code::help(Program::Fer))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct BoardArgs {
    /// The board: `ssh://[user@]host[:port]/board/root` (OpenSSH: ~/.ssh/config, agent and
    /// known_hosts apply) or `dir:/path/to/board/root` (a board root on this machine).
    #[arg(long)]
    board: String,
    /// An option for every ssh and scp call, as `-o` takes it (`Key=Value`); repeatable.
    /// Host keys are checked unless you say otherwise here.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    ssh_options: Vec<String>,
    /// The `fer-edge` program on the board.
    #[arg(long, default_value = "fer-edge", value_name = "PROGRAM")]
    board_agent: String,
}

impl BoardArgs {
    fn board(&self) -> tools::Result<Board> {
        Board::parse(&self.board, &self.ssh_options, &self.board_agent)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an ed25519 signing key: KEY (PKCS#8 PEM, mode 0600) and KEY.pub (hex).
    ///
    /// Put the printed public key into the device config's `signing_public_key`.
    Keygen(KeygenArgs),
    /// Device configs: TOML for people <-> the binary flashing format.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build and sign a bundle from an exported model, a detector and a device config.
    ///
    /// Refused when the config sets thresholds for classes the model does not have, when the
    /// model files do not match their manifest, or when the config names another signing key.
    /// A config without `signing_public_key` gets the public half of --key.
    Bundle(BundleArgs),
    /// Install a bundle on a board: upload to staging, verify there, self-test, switch.
    ///
    /// The bundle is first verified here against the key the board trusts; the board verifies
    /// every hash and the signature again, runs the self-test and switches its active slot
    /// atomically. On any failure the running bundle stays active; the previous bundle always
    /// stays in the other slot for `fer rollback`.
    Flash(FlashArgs),
    /// Switch a board back to its previous bundle (verified and self-tested first).
    Rollback(RollbackArgs),
    /// Show a board's trusted key, both slots and the active bundle.
    Status(BoardArgs),
    /// Pull finished field-log segments into a dataset folder, then delete them on the board.
    ///
    /// Writes INTO/records.jsonl (provenance: device, model, probabilities, time, a stable
    /// record id) and INTO/crops/<device>/<id>.png. Safe to interrupt and run again: no record
    /// is lost or written twice; segments are deleted only after everything is on disk.
    Collect(CollectArgs),
    /// Dataset folders: statistics, importing collected crops, train/val splits.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Many boards at once, from a fleet.toml inventory (name, address, tags, per-board config
    /// overrides): check, status, collect, with --jobs boards at a time. A board that is down
    /// or slow fails alone; every command ends with a table per board, and exit code 9 if any
    /// board failed.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Close the loop: collect -> retrain -> gate on validation -> bundle + flash if not worse.
    ///
    /// RUN_DIR (a `fer-train train` run folder) is round 1: on the first call it is exported
    /// (fp32 + int8) and scored on --val as the baseline (not flashed: it is what the board
    /// already runs). Then each round:
    ///   1. collects the board's finished field-log segments into RUN_DIR/collected and copies
    ///      the new crops into --pool;
    ///   2. trains RUN_DIR/rounds/round-NNN for --steps steps, warm-started from the
    ///      incumbent (weights, EMA teacher, DTA thresholds), with --pool added to the
    ///      run's unlabeled data;
    ///   3. exports it to fp32 + int8 ONNX (int8 calibrated on --calibration, default --pool);
    ///   4. scores the new fp32 model (the one shipped) and the incumbent's on --val as the board
    ///      classifies (tract, the manifest's preprocessing), each image one face;
    ///   5. gate: only if neither accuracy nor macro-F1 dropped by more than --tolerance is it
    ///      bundled with --config and --detector, signed with --key and flashed; both scores
    ///      and the decision are printed;
    ///   6. appends the round to RUN_DIR/rounds.jsonl.
    ///
    /// The incumbent is the last round the gate accepted. An interrupted round resumes its
    /// training when run again. Ends with a table of all rounds.
    #[command(name = "loop", verbatim_doc_comment)]
    Loop(LoopArgs),
    /// The whole loop on synthetic faces, on this machine's CPU (smaller flags: faster).
    ///
    /// Everything goes into --workdir:
    ///   1. data/: synthetic face crops with known expressions (angry, happy, neutral, sad,
    ///      surprise): a labeled ImageFolder, an unlabeled pool and a validation ImageFolder,
    ///      each drawn from its own seed;
    ///   2. run/: round 1, a small residual network on gray crops trained with DTA + SNL (EMA
    ///      teacher and threshold momentum 0.99 for a run of a few hundred steps);
    ///   3. run/rounds/round-001/export: fp32 + int8 ONNX, manifests with the trained
    ///      per-class thresholds;
    ///   4. keys/, board.toml, board/: a signing key, a device config (no detector: every
    ///      frame is one face; no smoothing, no de-duplication) and a board folder trusting
    ///      the key; the fp32 model is bundled, signed and flashed there (`dir:` board);
    ///   5. the board's pipeline (fer-edge's library: classifier, tracker, field log) runs on
    ///      a synthetic camera until --field-records low-confidence faces are logged to
    ///      board/field-log, or --max-frames frames;
    ///   6. round 2, exactly a `fer loop` round: collect the field log into run/collected,
    ///      add the crops to the pool, retrain warm-started from round 1, score both rounds'
    ///      fp32 models on the validation set, flash round 2 only if it is not worse;
    ///   7. a table of the rounds (labeled, unlabeled, field records collected, validation
    ///      accuracy, macro-F1, threshold range, deployed), also written to
    ///      WORKDIR/rounds.json; run/rounds.jsonl holds the full history.
    ///
    /// Running it again continues where it stopped (a finished demo only prints its
    /// table); --fresh starts over. Only a folder made by `fer demo` is ever deleted.
    #[command(verbatim_doc_comment)]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// The private key file to create.
    #[arg(long, default_value = "fer-signing.key")]
    out: PathBuf,
    /// Replace an existing key (boards trusting the old one will refuse new bundles).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct BundleArgs {
    /// The export folder of `fer-train export` (its fp32 model is shipped by default: int8
    /// runs slower in tract), or a manifest file such as DIR/model_int8.manifest.json.
    #[arg(long)]
    model: PathBuf,
    /// The device config (TOML, or the flashing format).
    #[arg(long)]
    config: PathBuf,
    /// The face detector (stored as the config's detector.model_file).
    #[arg(long)]
    detector: Option<PathBuf>,
    /// More files to ship and sign (e.g. the fp32 model beside an int8 one); repeatable.
    #[arg(long)]
    extra: Vec<PathBuf>,
    /// The private signing key (from `fer keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The bundle folder to create.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// The bundle's version (default: the current Unix time). Boards refuse a bundle older
    /// than the newest they have activated.
    #[arg(long)]
    version: Option<u64>,
    /// Rotate the fleet's key: the private key the boards trust now. It signs a statement
    /// handing trust to --key; boards that activate this bundle trust --key from then on, and
    /// refuse bundles signed by the old key.
    #[arg(long, value_name = "OLD_KEY")]
    rotate_from: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FlashArgs {
    #[command(flatten)]
    board: BoardArgs,
    /// The signed bundle folder (from `fer bundle`).
    #[arg(long)]
    bundle: PathBuf,
    /// First flash of a new board: create its board root trusting this public key (a file
    /// from `fer keygen`, e.g. keys/fleet.key.pub, or 64 hex digits). The bundle must be
    /// signed by it: trust never comes from the bundle itself.
    #[arg(long, value_name = "PUBLIC_KEY")]
    trust: Option<String>,
    /// A shell command run on the board after switching (e.g. `systemctl restart fer-edge`).
    #[arg(long, value_name = "COMMAND")]
    restart: Option<String>,
}

#[derive(Debug, Args)]
struct RollbackArgs {
    #[command(flatten)]
    board: BoardArgs,
    /// A shell command run on the board after switching.
    #[arg(long, value_name = "COMMAND")]
    restart: Option<String>,
}

#[derive(Debug, Args)]
struct CollectArgs {
    #[command(flatten)]
    board: BoardArgs,
    /// The collect folder.
    #[arg(long)]
    into: PathBuf,
    /// The field-log folder on the board (default: the active config's field_log.directory).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Import the intact records of damaged segments and delete them anyway.
    #[arg(long)]
    accept_damaged: bool,
}

#[derive(Debug, Args)]
struct FleetArgs {
    /// The inventory (see `fer fleet --help` and docs/fleet.md).
    #[arg(long, default_value = "fleet.toml")]
    fleet: PathBuf,
    /// Only boards with this tag; repeatable (any of them).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Boards handled at the same time.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Per board: reachable over ssh, host key accepted, the fer-edge version, the active
    /// bundle, the newest accepted version, an automatic fallback.
    Check(FleetArgs),
    /// Per board: the active slot and bundle, the other slot, a bundle on trial.
    Status(FleetArgs),
    /// Flash one signed bundle on every selected board, as `fer flash` does on one: verified
    /// here against each board's trusted key, then uploaded, verified, self-tested and switched
    /// there. A board that refuses keeps its running bundle. Boards with config overrides in
    /// the inventory are refused (one bundle carries one config).
    Flash {
        #[command(flatten)]
        fleet: FleetArgs,
        /// The signed bundle folder (from `fer bundle`).
        #[arg(long)]
        bundle: PathBuf,
        /// A shell command run on each board after switching (e.g. `systemctl restart fer-edge`).
        #[arg(long, value_name = "COMMAND")]
        restart: Option<String>,
        /// Staged rollout: flash the first N selected boards, watch them for --soak, then
        /// flash the rest only if they stayed healthy (new bundle still active, no automatic
        /// fallback, with a soak of a minute or more past their trial, and a low-confidence
        /// rate within --max-rate-ratio of the previous bundle's); otherwise roll the
        /// canaries back and stop. Resumes from --state when run again.
        #[arg(long, value_name = "N")]
        canary: Option<usize>,
        /// How long the canaries must stay healthy: 30m, 90s, 2h.
        #[arg(long, requires = "canary", value_parser = fleet::service::parse_every, default_value = "10m")]
        soak: std::time::Duration,
        /// The rollout's state file (default: rollout.json beside the fleet file).
        #[arg(long, requires = "canary")]
        state: Option<PathBuf>,
        /// At the soak's end, a canary's low-confidence rate on the new bundle (faces below
        /// their threshold / faces classified, counted by `fer-edge run`) may be at most this
        /// many times its rate on the previous bundle. 0 turns the check off.
        #[arg(long, requires = "canary", default_value_t = fleet::rollout::RateLimit::default().factor)]
        max_rate_ratio: f64,
        /// Faces each bundle must have seen on a canary before the rates are compared; with
        /// fewer the rate is not judged (the table says so).
        #[arg(long, requires = "canary", default_value_t = fleet::rollout::RateLimit::default().min_faces)]
        min_faces: u64,
    },
    /// Write a static HTML page with PNG plots from what `fer fleet collect` gathered: logged
    /// faces per day, low-confidence faces per hour by model, the class mix per board,
    /// data waiting on each board, and a table (records, last record, last collect,
    /// failures). Open OUT/index.html in a browser.
    Report {
        /// The folder `fer fleet collect --into` wrote.
        #[arg(long)]
        field: PathBuf,
        /// Where the page and its plots go.
        #[arg(long)]
        out: PathBuf,
        /// A model manifest whose class names label the class mix (default: class 0, 1, ...).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Print (or write with --out) one board's device config: BASE with the board's
    /// `[board.config]` overrides from the inventory, validated. Bundle it with `fer bundle
    /// --config` for that board.
    Config {
        /// The inventory.
        #[arg(long, default_value = "fleet.toml")]
        fleet: PathBuf,
        /// The board's name in the inventory.
        #[arg(long)]
        board: String,
        /// The fleet's device config (TOML or the flashing format).
        #[arg(long)]
        base: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Switch every selected board back to its previous bundle.
    Rollback {
        #[command(flatten)]
        fleet: FleetArgs,
        /// A shell command run on each board after switching.
        #[arg(long, value_name = "COMMAND")]
        restart: Option<String>,
    },
    /// Collect every board's finished field-log segments into INTO/<board name>/ (one collect
    /// folder per board; each record keeps its board's address and device id). `fer dataset
    /// import INTO/<name> POOL` adds them to a training pool.
    ///
    /// With --every it runs as a service (docs/fleet.md has a systemd unit): a JSON line per
    /// cycle, the boards' states in INTO/service-state.json, boards with the most data
    /// waiting first, a failing board retried after 1, 2, 4, ... 16 cycles; SIGINT or SIGTERM
    /// ends it after the current cycle.
    Collect {
        #[command(flatten)]
        fleet: FleetArgs,
        /// The folder that gets one collect folder per board.
        #[arg(long)]
        into: PathBuf,
        /// Import the intact records of damaged segments and delete them anyway.
        #[arg(long)]
        accept_damaged: bool,
        /// Run as a service, one cycle every this long: 15m, 90s, 2h.
        #[arg(long, value_parser = fleet::service::parse_every)]
        every: Option<std::time::Duration>,
        /// With --every: stop after this many cycles.
        #[arg(long, requires = "every")]
        cycles: Option<u64>,
    },
}

#[derive(Debug, Args)]
struct LoopArgs {
    #[command(flatten)]
    board: BoardArgs,
    /// The starting run folder (round 1); the history and later rounds are kept in it.
    #[arg(long = "run", value_name = "RUN_DIR")]
    run_dir: PathBuf,
    /// The fixed validation ImageFolder (DIR/<class>/*.png), same classes as the run.
    #[arg(long, value_name = "DIR")]
    val: PathBuf,
    /// The unlabeled pool collected crops are added to.
    #[arg(long, value_name = "DIR")]
    pool: PathBuf,
    /// The private signing key (from `fer keygen`), trusted by the board.
    #[arg(long)]
    key: PathBuf,
    /// The device config bundled with every model (TOML or the flashing format).
    #[arg(long, value_name = "CONFIG")]
    config: PathBuf,
    /// The face detector file bundled with every model.
    #[arg(long, value_name = "FILE")]
    detector: Option<PathBuf>,
    /// Rounds to run, one after another.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Training steps of each round.
    #[arg(long, default_value_t = 500)]
    steps: u64,
    /// How much accuracy and macro-F1 (fractions, 0..1) may drop and still pass the gate.
    #[arg(long, default_value_t = 0.0)]
    tolerance: f64,
    /// Images for int8 calibration, searched recursively (default: --pool).
    #[arg(long, value_name = "DIR")]
    calibration: Option<PathBuf>,
    /// Calibration images to use.
    #[arg(long, default_value_t = 300)]
    calib_images: usize,
    /// A shell command run on the board after each flash (e.g. `systemctl restart fer-edge`).
    #[arg(long, value_name = "COMMAND")]
    restart: Option<String>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// The work folder.
    #[arg(long, default_value = "fer-demo", value_name = "DIR")]
    workdir: PathBuf,
    /// Delete the work folder and start over.
    #[arg(long)]
    fresh: bool,
    /// Side of the face images and of the network input, pixels.
    #[arg(long, default_value_t = demo::DemoOptions::default().image_size)]
    image_size: u32,
    /// Labeled images per expression.
    #[arg(long, default_value_t = demo::DemoOptions::default().labeled_per_class)]
    labeled_per_class: usize,
    /// Images in the unlabeled pool.
    #[arg(long, default_value_t = demo::DemoOptions::default().pool_images)]
    pool_images: usize,
    /// Validation images per expression.
    #[arg(long, default_value_t = demo::DemoOptions::default().val_per_class)]
    val_per_class: usize,
    /// Training steps of round 1.
    #[arg(long, default_value_t = demo::DemoOptions::default().steps)]
    steps: u64,
    /// Training steps of round 2.
    #[arg(long, default_value_t = demo::DemoOptions::default().round_steps)]
    round_steps: u64,
    /// Labeled images per step (twice as many unlabeled ones).
    #[arg(long, default_value_t = demo::DemoOptions::default().batch)]
    batch: usize,
    /// Stop the board after this many low-confidence faces are logged...
    #[arg(long, default_value_t = demo::DemoOptions::default().field_records)]
    field_records: u64,
    /// ... or after this many camera frames.
    #[arg(long, default_value_t = demo::DemoOptions::default().max_frames)]
    max_frames: u64,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// TOML -> flashing format (validated first; errors name the field).
    Encode {
        /// The TOML config.
        input: PathBuf,
        /// The binary file to write.
        output: PathBuf,
    },
    /// Flashing format -> TOML (on stdout, or into --out).
    Decode {
        /// The binary config.
        input: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate a config (either form), optionally against a model manifest's classes.
    Check {
        /// The config, TOML or binary.
        input: PathBuf,
        /// A model manifest (manifest.json) whose classes the thresholds must name.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Print a complete default config as TOML, to edit.
    Template,
}

#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// Count images per class (ImageFolder), or records per device (a collect folder).
    Stats {
        /// The folder.
        dir: PathBuf,
    },
    /// Copy the crops of a collect folder into an unlabeled pool (no duplicates).
    Import {
        /// The collect folder (`fer collect --into`).
        #[arg(long)]
        from: PathBuf,
        /// The unlabeled pool folder.
        #[arg(long)]
        into: PathBuf,
    },
    /// Split an ImageFolder into OUT/train and OUT/val, stable under additions.
    Split {
        /// The labeled ImageFolder.
        #[arg(long)]
        from: PathBuf,
        /// The output folder.
        #[arg(long)]
        into: PathBuf,
        /// The fraction of each class that goes to val.
        #[arg(long, default_value_t = 0.1)]
        val: f64,
        /// Seed of the split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

impl From<BundleArgs> for bundler::BundleInputs {
    fn from(args: BundleArgs) -> Self {
        Self {
            model: args.model,
            config: args.config,
            detector: args.detector,
            extra: args.extra,
            out: args.out,
            force: args.force,
            version: args.version,
            rotate_from: args.rotate_from,
        }
    }
}

impl From<&CollectArgs> for CollectOptions {
    fn from(args: &CollectArgs) -> Self {
        Self {
            log_dir: args.log_dir.clone(),
            accept_damaged: args.accept_damaged,
            board_lock_wait: None,
        }
    }
}

impl TryFrom<&LoopArgs> for retrain::LoopSetup {
    type Error = tools::Error;

    fn try_from(args: &LoopArgs) -> tools::Result<Self> {
        Ok(Self {
            board: args.board.board()?,
            run_dir: args.run_dir.clone(),
            calibration: args
                .calibration
                .clone()
                .unwrap_or_else(|| args.pool.clone()),
            val: args.val.clone(),
            pool: args.pool.clone(),
            key: args.key.clone(),
            config: args.config.clone(),
            detector: args.detector.clone(),
            steps: args.steps,
            tolerance: args.tolerance,
            calib_images: args.calib_images,
            progress: Progress::Bar,
        })
    }
}

impl From<DemoArgs> for demo::DemoOptions {
    fn from(args: DemoArgs) -> Self {
        Self {
            workdir: args.workdir,
            fresh: args.fresh,
            image_size: args.image_size,
            labeled_per_class: args.labeled_per_class,
            pool_images: args.pool_images,
            val_per_class: args.val_per_class,
            steps: args.steps,
            round_steps: args.round_steps,
            batch: args.batch,
            field_records: args.field_records,
            max_frames: args.max_frames,
            progress: Progress::Bar,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => cmd_keygen(&args),
        Command::Config(command) => cmd_config(command),
        Command::Bundle(args) => cmd_bundle(args),
        Command::Flash(args) => cmd_flash(&args),
        Command::Rollback(args) => cmd_rollback(&args),
        Command::Status(board) => cmd_status(&board),
        Command::Collect(args) => cmd_collect(&args),
        Command::Dataset(command) => cmd_dataset(command),
        Command::Fleet(command) => cmd_fleet(command),
        Command::Loop(args) => cmd_loop(&args),
        Command::Demo(args) => cmd_demo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .downcast_ref::<tools::Error>()
                .map_or(exit_code::FAILURE, tools::Error::exit_code);
            ExitCode::from(code)
        }
    }
}

fn cmd_keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let files = keys::generate(&args.out, args.force)?;
    println!(
        "private key: {} (mode 0600, keep it secret)",
        files.private.display()
    );
    println!("public key:  {}", files.public.display());
    println!("signing_public_key = \"{}\"", files.public_key.to_hex());
    Ok(())
}

fn cmd_config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Encode { input, output } => {
            config::encode(&input, &output)?;
            println!("wrote {}", output.display());
        }
        ConfigCommand::Decode { input, out } => {
            let text = config::decode(&input)?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        ConfigCommand::Check { input, manifest } => {
            let device = config::load_any(&input)?;
            if let Some(manifest_path) = manifest {
                let manifest = config::load_manifest(&manifest_path)?;
                config::check_against_manifest(&device, &input, &manifest, &manifest_path)?;
            }
            println!("{}: valid", input.display());
        }
        ConfigCommand::Template => print!(
            "{}",
            config::to_toml(&firmware_config::config::DeviceConfig::default())?
        ),
    }
    Ok(())
}

fn cmd_bundle(args: BundleArgs) -> anyhow::Result<()> {
    let key = keys::load_private(&args.key)?;
    let bar = spinner("hashing, checking and signing");
    let result = bundler::build(&args.into(), &key);
    bar.finish_and_clear();
    let bundle = result?;
    println!(
        "bundle {} ({} files) signed: {}",
        bundle.short_id(),
        bundle.listing.files.len(),
        bundle.dir.display()
    );
    Ok(())
}

fn cmd_flash(args: &FlashArgs) -> anyhow::Result<()> {
    let board = args.board.board()?;
    if let Some(key) = &args.trust {
        board.init_trust(&keys::load_public(key)?)?;
    }
    let trusted = firmware_config::PublicKey::from_hex(&board.status()?.board.trusted_key)
        .map_err(|e| anyhow::anyhow!("the board reports a bad trusted key: {e}"))?;
    // Refuse here first, so a bad bundle never even reaches the board.
    edge::bundle::verify_dir(&args.bundle, &trusted).map_err(tools::Error::from)?;
    let bar = spinner("flashing");
    let result = board.flash(&args.bundle, &mut |step| bar.set_message(step.to_string()));
    bar.finish_and_clear();
    let done = result?;
    println!(
        "{}: slot {} active, bundle {} ({})",
        board.address(),
        done.slot,
        edge::bundle::short_id(&done.bundle_id),
        done.self_test
    );
    if let (Some(slot), Some(id)) = (&done.previous_slot, &done.previous_bundle_id) {
        println!(
            "previous bundle {} kept in slot {slot} (`fer rollback` switches back)",
            edge::bundle::short_id(id)
        );
    }
    restart(&board, args.restart.as_deref())
}

fn cmd_rollback(args: &RollbackArgs) -> anyhow::Result<()> {
    let board = args.board.board()?;
    let done = board.rollback()?;
    println!(
        "{}: rolled back to slot {}, bundle {} ({})",
        board.address(),
        done.slot,
        edge::bundle::short_id(&done.bundle_id),
        done.self_test
    );
    restart(&board, args.restart.as_deref())
}

fn cmd_status(board: &BoardArgs) -> anyhow::Result<()> {
    let status = board.board()?.status()?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

fn cmd_collect(args: &CollectArgs) -> anyhow::Result<()> {
    let board = args.board.board()?;
    let bar = spinner("listing segments");
    let mut records = 0usize;
    let result = collect::collect(
        &board,
        &args.into,
        &CollectOptions::from(args),
        &mut |event| {
            match event {
                Event::Listed(n) => bar.set_message(format!("fetching {n} segment(s)")),
                Event::Fetched => bar.set_message("verifying records"),
                Event::Record(_) => {
                    records += 1;
                    bar.set_message(format!("{records} new record(s) written"));
                }
                Event::Synced => bar.set_message("deleting collected segments on the board"),
                _ => {}
            }
            ControlFlow::Continue(())
        },
    );
    bar.finish_and_clear();
    let report = result?;
    println!(
        "{} segment(s) collected, {} new record(s), {} already collected, {} segment(s) still being written{} -> {}",
        report.segments_collected,
        report.records_new,
        report.records_known,
        report.segments_unsealed,
        if report.damaged.is_empty() {
            String::new()
        } else {
            format!(", {} damaged (imported)", report.damaged.len())
        },
        args.into.join(collect::RECORDS_FILE).display()
    );
    Ok(())
}

/// Runs `op` on the selected boards of the fleet with a progress bar, prints the table, and
/// fails with exit code 9 when a board failed.
fn on_fleet<T: Send>(
    args: &FleetArgs,
    what: &str,
    header: &[&str],
    op: impl Fn(&fleet::BoardEntry, &Board) -> tools::Result<T> + Sync,
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    let inventory = fleet::Inventory::load(&args.fleet)?;
    let boards = inventory.select(&args.tags)?;
    let bar = ProgressBar::new(boards.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} boards ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    let outcomes = fleet::for_each(&inventory, &boards, args.jobs, op, |_, _| bar.inc(1));
    bar.finish_and_clear();
    let (table, error) = fleet::report(header, &outcomes, cells);
    println!("{table}");
    match error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn cmd_fleet(command: FleetCommand) -> anyhow::Result<()> {
    let short = |id: &Option<String>| {
        id.as_deref()
            .map_or("-".into(), |i| edge::bundle::short_id(i).to_string())
    };
    match command {
        FleetCommand::Check(args) => on_fleet(
            &args,
            "checking",
            &["fer-edge", "active bundle", "newest version", "fallback"],
            |_, board| fleet::check(board),
            |c| {
                vec![
                    c.agent_version.clone(),
                    short(&c.active_bundle),
                    c.newest_version.to_string(),
                    if c.fell_back { "yes" } else { "no" }.into(),
                ]
            },
        ),
        FleetCommand::Status(args) => on_fleet(
            &args,
            "reading status",
            &["active", "bundle", "other slot", "trial"],
            |_, board| board.status(),
            |s| {
                let slot = |active: bool| {
                    s.board
                        .slots
                        .iter()
                        .find(|slot| slot.active == active)
                        .map(|slot| short(&slot.bundle_id))
                        .unwrap_or_else(|| "-".into())
                };
                vec![
                    s.board.active.clone().unwrap_or_else(|| "-".into()),
                    slot(true),
                    slot(false),
                    s.board.trial.as_ref().map_or("-".into(), |(slot, starts)| {
                        format!("{slot} ({starts} starts)")
                    }),
                ]
            },
        ),
        FleetCommand::Flash {
            fleet: args,
            bundle,
            restart,
            canary: Some(canaries),
            soak,
            state,
            max_rate_ratio,
            min_faces,
        } => {
            let state = state.unwrap_or_else(|| {
                args.fleet
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("rollout.json")
            });
            rollout(
                &args,
                fleet::rollout::RolloutOptions {
                    bundle,
                    canaries,
                    soak,
                    poll: (soak / 10).clamp(
                        std::time::Duration::from_millis(200),
                        std::time::Duration::from_secs(30),
                    ),
                    jobs: args.jobs,
                    restart,
                    state,
                    rate_limit: (max_rate_ratio > 0.0).then_some(fleet::rollout::RateLimit {
                        factor: max_rate_ratio,
                        min_faces,
                    }),
                },
            )
        }
        FleetCommand::Flash {
            fleet: args,
            bundle,
            restart,
            canary: None,
            ..
        } => {
            let inventory = fleet::Inventory::load(&args.fleet)?;
            fleet::check_shared_bundle(&inventory.select(&args.tags)?)?;
            on_fleet(
                &args,
                "flashing",
                &["slot", "bundle", "previous"],
                |_, board| fleet::flash(board, &bundle, restart.as_deref()),
                |f| switched_cells(f, &short),
            )
        }
        FleetCommand::Config {
            fleet,
            board,
            base,
            out,
        } => {
            let inventory = fleet::Inventory::load(&fleet)?;
            let entry = inventory
                .boards
                .iter()
                .find(|b| b.name == board)
                .ok_or_else(|| {
                    tools::Error::invalid(
                        "--board",
                        format!("no board {board:?} in {}", fleet.display()),
                    )
                })?;
            let merged = inventory.config_for(entry, &config::load_any(&base)?)?;
            let text = config::to_toml(&merged)?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        FleetCommand::Report {
            field,
            out,
            manifest,
        } => {
            let classes = match manifest {
                Some(path) => {
                    edge::classify::read_manifest(&path)
                        .map_err(tools::Error::from)?
                        .class_names
                }
                None => Vec::new(),
            };
            let page = fleet::report::write(&field, &out, &classes)?;
            println!("report: {}", page.display());
            Ok(())
        }
        FleetCommand::Rollback {
            fleet: args,
            restart,
        } => on_fleet(
            &args,
            "rolling back",
            &["slot", "bundle", "previous"],
            |_, board| fleet::rollback(board, restart.as_deref()),
            |f| switched_cells(f, &short),
        ),
        FleetCommand::Collect {
            fleet: args,
            into,
            accept_damaged,
            every: Some(every),
            cycles,
        } => collect_service(
            &args,
            fleet::service::ServiceOptions {
                into,
                every,
                cycles,
                jobs: args.jobs,
                accept_damaged,
            },
        ),
        FleetCommand::Collect {
            fleet: args,
            into,
            accept_damaged,
            every: None,
            ..
        } => on_fleet(
            &args,
            "collecting",
            &["new records", "known", "segments", "damaged", "folder"],
            |entry, board| fleet::collect_into(&into, entry, board, None, accept_damaged),
            |c| {
                vec![
                    c.records_new.to_string(),
                    c.records_known.to_string(),
                    c.segments.to_string(),
                    c.damaged.to_string(),
                    c.into.display().to_string(),
                ]
            },
        ),
    }
}

fn rollout(args: &FleetArgs, options: fleet::rollout::RolloutOptions) -> anyhow::Result<()> {
    use fleet::rollout::Phase;
    let inventory = fleet::Inventory::load(&args.fleet)?;
    let boards = inventory.select(&args.tags)?;
    fleet::check_shared_bundle(&boards)?;
    let stop = edge::pipeline::stop_on_signals().map_err(tools::Error::from)?;
    let mut last = None;
    let state = fleet::rollout::run(&inventory, &boards, &options, &stop, &mut |state| {
        let phase = match &state.phase {
            Phase::Canaries => format!("flashing canaries {}", state.canaries.join(", ")),
            Phase::Soak { .. } => format!("soaking for {} s", options.soak.as_secs()),
            Phase::Promote => format!("promoting to {} board(s)", state.rest.len()),
            other => format!("{other:?}"),
        };
        if last.as_ref() != Some(&phase) {
            println!("{phase}");
            last = Some(phase);
        }
    })?;
    let rows: Vec<Vec<String>> = state
        .canaries
        .iter()
        .map(|n| (n, "canary"))
        .chain(state.rest.iter().map(|n| (n, "rest")))
        .map(|(name, role)| {
            let p = state.boards.get(name).cloned().unwrap_or_default();
            vec![
                name.clone(),
                role.into(),
                if p.flashed { "yes" } else { "no" }.into(),
                if p.rolled_back { "yes" } else { "no" }.into(),
                p.problem.or(p.note).unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{}",
        fleet::table(
            &[
                "board",
                "role",
                "flashed",
                "rolled back",
                "problem or soak note"
            ],
            &rows
        )
    );
    println!("state: {}", options.state.display());
    match state.phase {
        Phase::Done if state.boards.values().all(|p| p.problem.is_none()) => Ok(()),
        Phase::Done => Err(tools::Error::FleetPartial {
            failed: state
                .boards
                .values()
                .filter(|p| p.problem.is_some())
                .count(),
            total: state.boards.len(),
        }
        .into()),
        Phase::Stopped { reason } => Err(tools::Error::RolloutStopped { reason }.into()),
        _ => Err(tools::Error::Interrupted(
            "the rollout was interrupted; run the same command again to resume it".into(),
        )
        .into()),
    }
}

fn switched_cells(f: &fleet::Switched, short: &dyn Fn(&Option<String>) -> String) -> Vec<String> {
    vec![
        f.slot.clone(),
        short(&Some(f.bundle_id.clone())),
        short(&f.previous_bundle_id),
    ]
}

fn collect_service(
    args: &FleetArgs,
    options: fleet::service::ServiceOptions,
) -> anyhow::Result<()> {
    let inventory = fleet::Inventory::load(&args.fleet)?;
    let boards = inventory.select(&args.tags)?;
    let stop = edge::pipeline::stop_on_signals().map_err(tools::Error::from)?;
    std::fs::create_dir_all(&options.into)
        .with_context(|| format!("creating {}", options.into.display()))?;
    let state_path = fleet::service::state_path(&options.into);
    let mut written = Ok(());
    fleet::service::run(
        &inventory,
        &boards,
        &options,
        &stop,
        &mut |report, states| {
            if let Ok(line) = serde_json::to_string(report) {
                println!("{line}");
            }
            if written.is_ok() {
                written = serde_json::to_vec_pretty(states)
                    .map_err(anyhow::Error::from)
                    .and_then(|json| Ok(edge::durable::write_atomically(&state_path, &json)?));
            }
        },
    )?;
    written.with_context(|| format!("writing {}", state_path.display()))
}

fn cmd_dataset(command: DatasetCommand) -> anyhow::Result<()> {
    match command {
        DatasetCommand::Stats { dir } => print_stats(&dir, &dataset::stats(&dir)?),
        DatasetCommand::Import { from, into } => {
            let (copied, present) = dataset::import_collected(&from, &into)?;
            println!(
                "{copied} crop(s) copied into {}, {present} already there",
                into.display()
            );
        }
        DatasetCommand::Split {
            from,
            into,
            val,
            seed,
        } => {
            let (train, val) = dataset::split(&from, &into, val, seed)?;
            println!("{train} train / {val} val image(s) in {}", into.display());
        }
    }
    Ok(())
}

fn cmd_loop(args: &LoopArgs) -> anyhow::Result<()> {
    let setup = retrain::LoopSetup::try_from(args)?;
    let mut step = |what: &str| println!("  {what}");
    if let Some(first) = retrain::start(&setup, false, &mut step)? {
        print_round(&first);
    }
    for _ in 0..args.rounds {
        let record = retrain::run_round(&setup, &mut step)?;
        print_round(&record);
        if record.deployed {
            restart(&setup.board, args.restart.as_deref())?;
        }
    }
    let history = retrain::read_history(&args.run_dir)?;
    let rows: Vec<retrain::TableRow> = history.iter().map(Into::into).collect();
    print!("{}", retrain::table(&rows));
    println!(
        "history: {}",
        args.run_dir.join(retrain::HISTORY_FILE).display()
    );
    Ok(())
}

fn cmd_demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = demo::DemoOptions::from(args);
    let report = demo::run(&options)?;
    print!("{}", retrain::table(&report.rounds));
    if let Some(control) = &report.control {
        println!("{}", control.describe());
    }
    for plot in &report.plots {
        println!("plot: {}", plot.display());
    }
    println!(
        "{} s; table: {}; history: {}",
        report.seconds.round(),
        options.workdir.join(demo::ROUNDS_JSON).display(),
        report.history.display()
    );
    Ok(())
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

fn restart(board: &Board, command: Option<&str>) -> anyhow::Result<()> {
    if let Some(command) = command {
        board
            .run_shell(command)
            .with_context(|| format!("restarting the service on {}", board.address()))?;
        println!("restarted: {command}");
    }
    Ok(())
}

fn print_round(record: &retrain::RoundRecord) {
    println!(
        "round {}: {}; {}",
        record.round,
        record.gate.reason,
        match &record.bundle_id {
            Some(id) if record.deployed => format!("flashed bundle {}", &id[..12.min(id.len())]),
            _ => "not flashed".to_string(),
        }
    );
}

fn print_stats(dir: &Path, stats: &dataset::Stats) {
    if let Some(records) = stats.collected_records {
        println!("{}: {records} collected record(s)", dir.display());
        for (device, n) in &stats.per_device {
            println!("  {device:<24} {n:>8}");
        }
        return;
    }
    let total = stats.total().max(1);
    println!("{}: {} image(s)", dir.display(), stats.total());
    for (class, n) in &stats.per_class {
        println!(
            "  {class:<24} {n:>8} {:>6.1}%",
            100.0 * *n as f64 / total as f64
        );
    }
}
