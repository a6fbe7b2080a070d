//! Staged rollouts: `fer fleet flash --canary N --soak DURATION`.
//!
//! 1. The first N selected boards (the canaries) are flashed.
//! 2. For the soak, each canary is checked every [`RolloutOptions::poll`]: the new bundle must
//!    still be active and the board must not have fallen back by itself. A soak of at least
//!    [`HEALTHY_AFTER`] also asks that the canaries ran long enough to end their trial. At the
//!    end of the soak, a canary's low-confidence rate on the new bundle (from the face tally
//!    that `fer-edge run` keeps, [`edge::tally`]) must stay within [`RateLimit::factor`] of its
//!    rate on the bundle it ran before, once both have seen [`RateLimit::min_faces`] faces;
//!    with fewer, the rate is not judged and the row says so.
//! 3. Only then are the other boards flashed. A canary that fails to flash or to stay healthy
//!    stops the rollout: the canaries still running the new bundle are rolled back, the rest
//!    of the fleet is never touched.
//!
//! Every step is written to a state file before the next begins, so an interrupted rollout
//! (SIGINT, a crash, a reboot of the workstation) resumes where it was when the same command
//! runs again: flashed boards are not flashed twice and the soak keeps its end time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edge::bundle::HEALTHY_AFTER;
use edge::tally::{FaceCount, Tally};
use serde::{Deserialize, Serialize};

use super::{BoardEntry, Inventory, active_bundle, diagnose, flash, for_each};
use crate::board::Board;
use crate::error::{Error, Result};

/// What a rollout does.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    /// The signed bundle.
    pub bundle: PathBuf,
    /// How many boards go first.
    pub canaries: usize,
    /// How long the canaries must stay healthy.
    pub soak: Duration,
    /// How often the canaries are checked during the soak.
    pub poll: Duration,
    /// Boards flashed at the same time.
    pub jobs: usize,
    /// A shell command run on each board after switching.
    pub restart: Option<String>,
    /// The state file.
    pub state: PathBuf,
    /// The low-confidence rate check (`None`: off).
    pub rate_limit: Option<RateLimit>,
}

/// How much worse a canary's low-confidence rate may get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// The new bundle's rate may be at most this many times the previous bundle's.
    pub factor: f64,
    /// Faces each bundle must have seen on the canary before the rates are compared.
    pub min_faces: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            factor: 1.5,
            min_faces: 50,
        }
    }
}

/// Compares a canary's low-confidence rate on `new` with its rate on `previous`: `Err` with
/// the problem when it is over the limit, `Ok` with what was found otherwise.
pub fn judge_rate(
    tally: Option<&Tally>,
    new: &str,
    previous: Option<&str>,
    limit: RateLimit,
) -> std::result::Result<String, String> {
    let count = |id: &str| {
        tally
            .and_then(|t| t.bundles.get(id))
            .copied()
            .unwrap_or_default()
    };
    let describe = |c: FaceCount| {
        format!(
            "{:.1}% of {} faces",
            100.0 * c.rate().unwrap_or(0.0),
            c.faces
        )
    };
    let now = count(new);
    let Some(previous) = previous else {
        return Ok(format!(
            "rate not judged: no previous bundle ({})",
            describe(now)
        ));
    };
    let before = count(previous);
    if now.faces < limit.min_faces || before.faces < limit.min_faces {
        return Ok(format!(
            "rate not judged: {} now, {} before (needs {} each)",
            now.faces, before.faces, limit.min_faces
        ));
    }
    let (r_now, r_before) = (now.rate().unwrap_or(0.0), before.rate().unwrap_or(0.0));
    let verdict = format!(
        "low-confidence {} vs {} before",
        describe(now),
        describe(before)
    );
    if r_now > limit.factor * r_before {
        Err(format!(
            "{verdict}: more than {}x the previous rate",
            limit.factor
        ))
    } else {
        Ok(verdict)
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Flashing the canaries.
    Canaries,
    /// Watching the canaries until `until_ms` (Unix milliseconds).
    Soak {
        /// When the soak ends.
        until_ms: u64,
    },
    /// Flashing the other boards.
    Promote,
    /// Every board was tried; see each board's `problem`.
    Done,
    /// Stopped at the canaries; the rest of the fleet was not touched.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// One board in a rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardProgress {
    /// The new bundle was activated on it.
    pub flashed: bool,
    /// It was switched back to its previous bundle by the rollout.
    pub rolled_back: bool,
    /// What went wrong, if anything.
    pub problem: Option<String>,
    /// What the soak found on a healthy canary (its low-confidence rates).
    #[serde(default)]
    pub note: Option<String>,
}

/// The state file of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The bundle being rolled out.
    pub bundle_id: String,
    /// The canaries, in order.
    pub canaries: Vec<String>,
    /// The other boards, in order.
    pub rest: Vec<String>,
    /// Where it stands.
    #[serde(flatten)]
    pub phase: Phase,
    /// Every board's progress.
    pub boards: BTreeMap<String, BoardProgress>,
}

impl RolloutState {
    /// `true` once nothing more will happen.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Stopped { .. })
    }

    fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid("rollout state", e.to_string()))?;
        edge::durable::write_atomically(path, &json).map_err(Error::from)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state to continue from: the file's, when it is a rollout of the same bundle that has
/// not finished; a new one otherwise. A different bundle's unfinished rollout is an error.
fn resume_or_start(
    options: &RolloutOptions,
    bundle_id: &str,
    boards: &[&BoardEntry],
) -> Result<RolloutState> {
    if let Ok(bytes) = std::fs::read(&options.state) {
        let state: RolloutState = serde_json::from_slice(&bytes).map_err(|e| {
            Error::file(
                &options.state,
                format!("not a rollout state file ({e}); move it away to start over"),
            )
        })?;
        if !state.finished() {
            if state.bundle_id != bundle_id {
                return Err(Error::file(
                    &options.state,
                    format!(
                        "a rollout of bundle {} has not finished: run it to the end, or move \
                         this file away to abandon it",
                        edge::bundle::short_id(&state.bundle_id)
                    ),
                ));
            }
            return Ok(state);
        }
    }
    if options.canaries == 0 || options.canaries >= boards.len() {
        return Err(Error::invalid(
            "--canary",
            format!(
                "{} canaries for {} selected boards: at least one canary and one board after it",
                options.canaries,
                boards.len()
            ),
        ));
    }
    let names: Vec<String> = boards.iter().map(|b| b.name.clone()).collect();
    Ok(RolloutState {
        bundle_id: bundle_id.to_string(),
        canaries: names[..options.canaries].to_vec(),
        rest: names[options.canaries..].to_vec(),
        phase: Phase::Canaries,
        boards: names
            .iter()
            .map(|n| (n.clone(), BoardProgress::default()))
            .collect(),
    })
}

/// Flashes the boards named in `names` that are not flashed yet; records each outcome.
fn flash_some(
    inventory: &Inventory,
    names: &[String],
    state: &mut RolloutState,
    options: &RolloutOptions,
) -> usize {
    let todo: Vec<&BoardEntry> = inventory
        .boards
        .iter()
        .filter(|b| names.contains(&b.name) && !state.boards[&b.name].flashed)
        .collect();
    let outcomes = for_each(
        inventory,
        &todo,
        options.jobs,
        |_, board| flash(board, &options.bundle, options.restart.as_deref()),
        |_, _| {},
    );
    let mut failed = 0;
    for o in outcomes {
        let progress = state.boards.entry(o.name).or_default();
        match o.result {
            Ok(_) => {
                progress.flashed = true;
                progress.problem = None;
            }
            Err(e) => {
                failed += 1;
                progress.problem = Some(diagnose(&e));
            }
        }
    }
    failed
}

/// A canary's check: `Err` with why it is not healthy, `Ok` with a note at the soak's end.
fn check_canary(
    board: &Board,
    bundle_id: &str,
    last: bool,
    options: &RolloutOptions,
) -> std::result::Result<Option<String>, String> {
    let report = board.status().map_err(|e| diagnose(&e))?;
    let status = &report.board;
    if let Some(fallback) = &status.fallback {
        return Err(format!("fell back by itself: {}", fallback.reason));
    }
    if active_bundle(status).as_deref() != Some(bundle_id) {
        return Err("the new bundle is no longer active".into());
    }
    if last && options.soak >= HEALTHY_AFTER && status.trial.is_some() {
        return Err(format!(
            "still on trial after the soak: it has not run for {} s in a row",
            HEALTHY_AFTER.as_secs()
        ));
    }
    match options.rate_limit {
        Some(limit) if last => {
            let previous = status
                .slots
                .iter()
                .find(|s| !s.active)
                .and_then(|s| s.bundle_id.as_deref());
            judge_rate(report.tally.as_ref(), bundle_id, previous, limit).map(Some)
        }
        _ => Ok(None),
    }
}

/// Rolls back the canaries that still run the new bundle, and stops the rollout.
fn stop_at_canaries(
    inventory: &Inventory,
    state: &mut RolloutState,
    options: &RolloutOptions,
    reason: String,
) {
    let names = state.canaries.clone();
    let todo: Vec<&BoardEntry> = inventory
        .boards
        .iter()
        .filter(|b| names.contains(&b.name) && state.boards[&b.name].flashed)
        .collect();
    let outcomes = for_each(
        inventory,
        &todo,
        options.jobs,
        |_, board| {
            // Only a board still running the new bundle is switched: one that fell back by
            // itself already runs the old one, and switching it would bring the new one back.
            let status = board.status()?.board;
            if active_bundle(&status).as_deref() == Some(state.bundle_id.as_str()) {
                super::rollback(board, options.restart.as_deref()).map(|_| true)
            } else {
                Ok(false)
            }
        },
        |_, _| {},
    );
    for o in outcomes {
        let progress = state.boards.entry(o.name).or_default();
        match o.result {
            Ok(switched) => progress.rolled_back = switched,
            Err(e) => progress.problem = Some(format!("rollback failed: {}", diagnose(&e))),
        }
    }
    state.phase = Phase::Stopped { reason };
}

/// Runs (or resumes) a rollout over `boards` and returns its final state; the state file is
/// rewritten after every step. Returns early, with the state saved, when `stop` is raised.
pub fn run(
    inventory: &Inventory,
    boards: &[&BoardEntry],
    options: &RolloutOptions,
    stop: &AtomicBool,
    on_phase: &mut dyn FnMut(&RolloutState),
) -> Result<RolloutState> {
    let signature = options.bundle.join(edge::bundle::SIGNATURE_FILE);
    let text =
        std::fs::read_to_string(&signature).map_err(|e| Error::io("reading", &signature, e))?;
    let bundle_id = edge::bundle::SignedListing::parse(&text, &options.bundle)?.bundle_id();
    let mut state = resume_or_start(options, &bundle_id, boards)?;
    state.save(&options.state)?;
    while !state.finished() && !stop.load(Ordering::SeqCst) {
        on_phase(&state);
        match state.phase.clone() {
            Phase::Canaries => {
                let canaries = state.canaries.clone();
                if flash_some(inventory, &canaries, &mut state, options) > 0 {
                    let failed: Vec<String> = canaries
                        .iter()
                        .filter(|c| !state.boards[*c].flashed)
                        .cloned()
                        .collect();
                    let reason = format!("canary {} did not take the bundle", failed.join(", "));
                    stop_at_canaries(inventory, &mut state, options, reason);
                } else {
                    state.phase = Phase::Soak {
                        until_ms: now_ms() + options.soak.as_millis() as u64,
                    };
                }
            }
            Phase::Soak { until_ms } => {
                let last = now_ms() >= until_ms;
                let canaries: Vec<&BoardEntry> = inventory
                    .boards
                    .iter()
                    .filter(|b| state.canaries.contains(&b.name))
                    .collect();
                let checks = for_each(
                    inventory,
                    &canaries,
                    options.jobs,
                    |_, board| Ok(check_canary(board, &state.bundle_id, last, options)),
                    |_, _| {},
                );
                let mut unhealthy: Vec<(String, String)> = Vec::new();
                for o in checks {
                    match o.result {
                        Ok(Err(problem)) => unhealthy.push((o.name, problem)),
                        Ok(Ok(note)) => state.boards.entry(o.name).or_default().note = note,
                        Err(e) => unhealthy.push((o.name, diagnose(&e))),
                    }
                }
                if let Some((name, problem)) = unhealthy.first() {
                    for (n, p) in &unhealthy {
                        state.boards.entry(n.clone()).or_default().problem = Some(p.clone());
                    }
                    let reason = format!("canary {name} is not healthy: {problem}");
                    stop_at_canaries(inventory, &mut state, options, reason);
                } else if last {
                    state.phase = Phase::Promote;
                } else {
                    let left = Duration::from_millis(until_ms.saturating_sub(now_ms()));
                    super::service::sleep_until(
                        std::time::Instant::now() + left.min(options.poll),
                        stop,
                    );
                    continue;
                }
            }
            Phase::Promote => {
                let rest = state.rest.clone();
                flash_some(inventory, &rest, &mut state, options);
                state.phase = Phase::Done;
            }
            Phase::Done | Phase::Stopped { .. } => {}
        }
        state.save(&options.state)?;
    }
    state.save(&options.state)?;
    Ok(state)
}
