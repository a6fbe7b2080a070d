//! `fer`: the workstation command of the facial-expression toolkit.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tools::board::Board;
use tools::collect::{self, CollectOptions, Event};
use tools::{bundler, config, dataset, demo, keys, retrain};

const EXIT_CODES: &str = "Exit codes: 0 success; 1 other failure (files, I/O); 2 bad arguments or \
board address; 3 a bundle, model or config was refused (signature, hashes, self-test, class \
mismatch; the board is unchanged); 4 ssh, scp or a command on the board failed; 5 damaged \
field-log segments were kept on the board.";

/// The workstation side of the FER edge toolkit: keys, configs, signed bundles, flashing
/// boards over ssh, collecting their field logs, datasets, the retrain-and-redeploy loop and
/// a demo of all of it on synthetic faces.
#[derive(Debug, Parser)]
#[command(name = "fer", version, after_help = EXIT_CODES)]
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
    Keygen {
        /// The private key file to create.
        #[arg(long, default_value = "fer-signing.key")]
        out: PathBuf,
        /// Replace an existing key (boards trusting the old one will refuse new bundles).
        #[arg(long)]
        force: bool,
    },
    /// Device configs: TOML for people <-> the binary flashing format.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build and sign a bundle from an exported model, a detector and a device config.
    ///
    /// Refused when the config sets thresholds for classes the model does not have, when the
    /// model files do not match their manifest, or when the config names another signing key.
    /// A config without `signing_public_key` gets the public half of --key.
    Bundle {
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
    },
    /// Install a bundle on a board: upload to staging, verify there, self-test, switch.
    ///
    /// The bundle is first verified here against the key the board trusts; the board verifies
    /// every hash and the signature again, runs the self-test and switches its active slot
    /// atomically. On any failure the running bundle stays active; the previous bundle always
    /// stays in the other slot for `fer rollback`.
    Flash {
        #[command(flatten)]
        board: BoardArgs,
        /// The signed bundle folder (from `fer bundle`).
        #[arg(long)]
        bundle: PathBuf,
        /// First flash of a new board: create its board root trusting the bundle's signing key.
        #[arg(long)]
        init_trust: bool,
        /// A shell command run on the board after switching (e.g. `systemctl restart fer-edge`).
        #[arg(long, value_name = "COMMAND")]
        restart: Option<String>,
    },
    /// Switch a board back to its previous bundle (verified and self-tested first).
    Rollback {
        #[command(flatten)]
        board: BoardArgs,
        /// A shell command run on the board after switching.
        #[arg(long, value_name = "COMMAND")]
        restart: Option<String>,
    },
    /// Show a board's trusted key, both slots and the active bundle.
    Status {
        #[command(flatten)]
        board: BoardArgs,
    },
    /// Pull finished field-log segments into a dataset folder, then delete them on the board.
    ///
    /// Writes INTO/records.jsonl (provenance: device, model, probabilities, time, a stable
    /// record id) and INTO/crops/<device>/<id>.png. Safe to interrupt and run again: no record
    /// is lost or written twice; segments are deleted only after everything is on disk.
    Collect {
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
    },
    /// Dataset folders: statistics, importing collected crops, train/val splits.
    #[command(subcommand)]
    Dataset(DatasetCommand),
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
    Loop {
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
    },
    /// The whole loop on synthetic faces, on this machine's CPU (smaller flags: faster).
    ///
    /// Everything goes into --workdir:
    ///   1. data/: synthetic face crops with known expressions (angry, happy, neutral, sad,
    ///      surprise): a labeled ImageFolder, an unlabeled pool and a validation ImageFolder,
    ///      each drawn from its own seed;
    ///   2. run/: round 1, a small mobile network on gray crops trained with DTA + SNL (EMA
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
    Demo {
        /// The work folder.
        #[arg(long, default_value = "fer-demo", value_name = "DIR")]
        workdir: PathBuf,
        /// Delete the work folder and start over.
        #[arg(long)]
        fresh: bool,
        /// Side of the face images and of the network input, pixels.
        #[arg(long, default_value_t = 48)]
        image_size: u32,
        /// Labeled images per expression.
        #[arg(long, default_value_t = 60)]
        labeled_per_class: usize,
        /// Images in the unlabeled pool.
        #[arg(long, default_value_t = 1200)]
        pool_images: usize,
        /// Validation images per expression.
        #[arg(long, default_value_t = 60)]
        val_per_class: usize,
        /// Training steps of round 1.
        #[arg(long, default_value_t = 300)]
        steps: u64,
        /// Training steps of round 2.
        #[arg(long, default_value_t = 150)]
        round_steps: u64,
        /// Labeled images per step (twice as many unlabeled ones).
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Stop the board after this many low-confidence faces are logged...
        #[arg(long, default_value_t = 60)]
        field_records: u64,
        /// ... or after this many camera frames.
        #[arg(long, default_value_t = 3000)]
        max_frames: u64,
    },
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out, force } => {
            let files = keys::generate(&out, force)?;
            println!(
                "private key: {} (mode 0600, keep it secret)",
                files.private.display()
            );
            println!("public key:  {}", files.public.display());
            println!("signing_public_key = \"{}\"", files.public_key.to_hex());
        }
        Command::Config(cmd) => match cmd {
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
        },
        Command::Bundle {
            model,
            config,
            detector,
            extra,
            key,
            out,
            force,
        } => {
            let key = keys::load_private(&key)?;
            let bar = spinner("hashing, checking and signing");
            let inputs = bundler::BundleInputs {
                model,
                config,
                detector,
                extra,
                out,
                force,
            };
            let result = bundler::build(&inputs, &key);
            bar.finish_and_clear();
            let bundle = result?;
            println!(
                "bundle {} ({} files) signed: {}",
                bundle.short_id(),
                bundle.listing.files.len(),
                bundle.dir.display()
            );
        }
        Command::Flash {
            board,
            bundle,
            init_trust,
            restart: restart_cmd,
        } => {
            let board = board.board()?;
            let signer = edge::bundle::SignedListing::parse(
                &std::fs::read_to_string(bundle.join(edge::bundle::SIGNATURE_FILE))
                    .with_context(|| format!("reading the signature of {}", bundle.display()))?,
                &bundle.join(edge::bundle::SIGNATURE_FILE),
            )?
            .signer;
            if init_trust {
                board.init_trust(&signer)?;
            }
            let trusted = firmware_config::PublicKey::from_hex(&board.status()?.board.trusted_key)
                .map_err(|e| anyhow::anyhow!("the board reports a bad trusted key: {e}"))?;
            // Refuse here first, so a bad bundle never even reaches the board.
            edge::bundle::verify_dir(&bundle, &trusted).map_err(tools::Error::from)?;
            let bar = spinner("flashing");
            let result = board.flash(&bundle, &mut |step| bar.set_message(step.to_string()));
            bar.finish_and_clear();
            let done = result?;
            println!(
                "{}: slot {} active, bundle {} ({})",
                board.address(),
                done.slot,
                &done.bundle_id[..12],
                done.self_test
            );
            if let (Some(slot), Some(id)) = (&done.previous_slot, &done.previous_bundle_id) {
                println!(
                    "previous bundle {} kept in slot {slot} (`fer rollback` switches back)",
                    &id[..12]
                );
            }
            restart(&board, restart_cmd.as_deref())?;
        }
        Command::Rollback {
            board,
            restart: restart_cmd,
        } => {
            let board = board.board()?;
            let done = board.rollback()?;
            println!(
                "{}: rolled back to slot {}, bundle {} ({})",
                board.address(),
                done.slot,
                &done.bundle_id[..12],
                done.self_test
            );
            restart(&board, restart_cmd.as_deref())?;
        }
        Command::Status { board } => {
            let status = board.board()?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Command::Collect {
            board,
            into,
            log_dir,
            accept_damaged,
        } => {
            let board = board.board()?;
            let bar = spinner("listing segments");
            let options = CollectOptions {
                log_dir,
                accept_damaged,
            };
            let mut records = 0usize;
            let result = collect::collect(&board, &into, &options, &mut |event| {
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
            });
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
                into.join(collect::RECORDS_FILE).display()
            );
        }
        Command::Loop {
            board,
            run_dir,
            val,
            pool,
            key,
            config,
            detector,
            rounds,
            steps,
            tolerance,
            calibration,
            calib_images,
            restart: restart_cmd,
        } => {
            let board = board.board()?;
            let setup = retrain::LoopSetup {
                board: board.clone(),
                run_dir: run_dir.clone(),
                calibration: calibration.unwrap_or_else(|| pool.clone()),
                val,
                pool,
                key,
                config,
                detector,
                steps,
                tolerance,
                calib_images,
                progress: trainer::train::Progress::Bar,
            };
            let mut step = |what: &str| println!("  {what}");
            if let Some(first) = retrain::start(&setup, false, &mut step)? {
                print_round(&first);
            }
            for _ in 0..rounds {
                let record = retrain::run_round(&setup, &mut step)?;
                print_round(&record);
                if record.deployed {
                    restart(&board, restart_cmd.as_deref())?;
                }
            }
            let history = retrain::read_history(&run_dir)?;
            let rows: Vec<retrain::TableRow> = history.iter().map(Into::into).collect();
            print!("{}", retrain::table(&rows));
            println!("history: {}", run_dir.join(retrain::HISTORY_FILE).display());
        }
        Command::Demo {
            workdir,
            fresh,
            image_size,
            labeled_per_class,
            pool_images,
            val_per_class,
            steps,
            round_steps,
            batch,
            field_records,
            max_frames,
        } => {
            let options = demo::DemoOptions {
                workdir,
                fresh,
                image_size,
                labeled_per_class,
                pool_images,
                val_per_class,
                steps,
                round_steps,
                batch,
                field_records,
                max_frames,
                progress: trainer::train::Progress::Bar,
            };
            let report = demo::run(&options)?;
            print!("{}", retrain::table(&report.rounds));
            println!(
                "{} s; table: {}; history: {}",
                report.seconds.round(),
                options.workdir.join(demo::ROUNDS_JSON).display(),
                report.history.display()
            );
        }
        Command::Dataset(cmd) => match cmd {
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
        },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .downcast_ref::<tools::Error>()
                .map_or(1, tools::Error::exit_code);
            ExitCode::from(code)
        }
    }
}
