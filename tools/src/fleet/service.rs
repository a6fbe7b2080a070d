//! `fer fleet collect --every`: collect every board again and again, as a service.
//!
//! Each cycle collects the boards that are due, at most `jobs` at a time, the boards with the
//! most field-log bytes waiting first (they are nearest their quota). A board that fails is
//! retried after 1, 2, 4, ... cycles (at most [`MAX_BACKOFF_CYCLES`]) and is due every cycle
//! again once it succeeds. The state is one small entry per board: memory does not grow with
//! the cycles. Collect's own per-board lock keeps a service and a person's `fer collect` of the
//! same board from running at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{BoardEntry, Inventory, collect_into, diagnose, for_each};
use crate::board::Board;
use crate::error::Result;

/// The longest wait, in cycles, before a failing board is tried again.
pub const MAX_BACKOFF_CYCLES: u32 = 16;

/// What the service does.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The folder with one collect folder per board.
    pub into: PathBuf,
    /// Time from the start of one cycle to the start of the next.
    pub every: Duration,
    /// Stop after this many cycles (`None`: until stopped).
    pub cycles: Option<u64>,
    /// Boards collected at the same time.
    pub jobs: usize,
    /// Import the intact records of damaged segments and delete them anyway.
    pub accept_damaged: bool,
}

/// One board's standing in the service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardState {
    /// The board's name.
    pub name: String,
    /// Records collected since the service started.
    pub records: u64,
    /// Failures in a row (0 after a success).
    pub failures: u32,
    /// The first cycle in which it is due again.
    pub due_cycle: u64,
    /// Bytes of finished segments found waiting at the last listing.
    pub waiting_bytes: u64,
    /// Unix milliseconds of its last successful collect.
    pub last_success_ms: Option<u64>,
    /// Why its last attempt failed, if it did.
    pub last_problem: Option<String>,
}

/// One line of the service's log (printed as JSON, one per cycle).
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// The cycle, from 0.
    pub cycle: u64,
    /// Boards collected this cycle.
    pub attempted: usize,
    /// Of them, failed.
    pub failed: usize,
    /// Boards skipped while they back off.
    pub backing_off: usize,
    /// New records this cycle, all boards.
    pub records_new: u64,
    /// Seconds the cycle took.
    pub seconds: f64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A board's field-log folder and the bytes of finished segments waiting in it (0 when it
/// cannot be listed: the collect that follows reports why). The folder is handed to that
/// collect, so it does not ask the board for its status again.
fn waiting(entry: &BoardEntry, board: &Board) -> (Option<PathBuf>, u64) {
    let dir = entry
        .log_dir
        .clone()
        .or_else(|| board.status().ok().and_then(|s| s.field_log_dir));
    let bytes = dir.as_ref().map_or(0, |dir| {
        board
            .list_segment_sizes(dir)
            .map_or(0, |sizes| sizes.iter().map(|(_, size)| size).sum())
    });
    (dir, bytes)
}

/// Runs the service over `boards` until `stop` is raised or `options.cycles` have run;
/// `on_cycle` gets each cycle's report and the boards' states. Returns the final states.
pub fn run(
    inventory: &Inventory,
    boards: &[&BoardEntry],
    options: &ServiceOptions,
    stop: &AtomicBool,
    on_cycle: &mut dyn FnMut(&CycleReport, &[BoardState]),
) -> Result<Vec<BoardState>> {
    let mut states: Vec<BoardState> = boards
        .iter()
        .map(|b| BoardState {
            name: b.name.clone(),
            ..BoardState::default()
        })
        .collect();
    let mut cycle = 0u64;
    while !stop.load(Ordering::SeqCst) && options.cycles.is_none_or(|n| cycle < n) {
        let started = Instant::now();
        let mut due: Vec<usize> = (0..boards.len())
            .filter(|&i| states[i].due_cycle <= cycle)
            .collect();
        let listed = for_each(
            inventory,
            &due.iter().map(|&i| boards[i]).collect::<Vec<_>>(),
            options.jobs,
            |entry, board| Ok(waiting(entry, board)),
            |_, _| {},
        );
        let mut log_dirs: HashMap<String, PathBuf> = HashMap::new();
        for (&i, listing) in due.iter().zip(listed) {
            let (dir, bytes) = listing.result.unwrap_or((None, 0));
            states[i].waiting_bytes = bytes;
            if let Some(dir) = dir {
                log_dirs.insert(listing.name, dir);
            }
        }
        due.sort_by_key(|&i| std::cmp::Reverse(states[i].waiting_bytes));
        let order: Vec<&BoardEntry> = due.iter().map(|&i| boards[i]).collect();
        let outcomes = for_each(
            inventory,
            &order,
            options.jobs,
            |entry, board| {
                let dir = log_dirs.get(&entry.name).map(PathBuf::as_path);
                collect_into(&options.into, entry, board, dir, options.accept_damaged)
            },
            |_, _| {},
        );
        let mut report = CycleReport {
            cycle,
            attempted: due.len(),
            failed: 0,
            backing_off: boards.len() - due.len(),
            records_new: 0,
            seconds: 0.0,
        };
        for (&i, outcome) in due.iter().zip(&outcomes) {
            let state = &mut states[i];
            match &outcome.result {
                Ok(collected) => {
                    state.records += collected.records_new as u64;
                    report.records_new += collected.records_new as u64;
                    state.failures = 0;
                    state.due_cycle = cycle + 1;
                    state.last_success_ms = Some(now_ms());
                    state.last_problem = None;
                }
                Err(e) => {
                    report.failed += 1;
                    state.failures = state.failures.saturating_add(1);
                    let wait = 1u64 << (state.failures - 1).min(MAX_BACKOFF_CYCLES.ilog2());
                    state.due_cycle = cycle + wait.min(u64::from(MAX_BACKOFF_CYCLES));
                    state.last_problem = Some(diagnose(e));
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        on_cycle(&report, &states);
        cycle += 1;
        if options.cycles.is_some_and(|n| cycle >= n) {
            break;
        }
        sleep_until(started + options.every, stop);
    }
    Ok(states)
}

/// Parses a service interval: `90s`, `15m`, `2h`, or plain seconds (`300`).
pub fn parse_every(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: write a whole number and a unit, e.g. 15m, 90s, 2h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        other => return Err(format!("{text:?}: unknown unit {other:?}; use s, m or h")),
    };
    if seconds == 0 {
        return Err(format!(
            "{text:?}: the interval must be at least one second"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// Sleeps until `when` or until `stop` is raised, whichever comes first.
pub(super) fn sleep_until(when: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= when {
            return;
        }
        std::thread::sleep((when - now).min(Duration::from_millis(200)));
    }
}

/// Where `fer fleet collect --every` writes the boards' states after every cycle, for a person
/// or a monitoring check to read: `INTO/service-state.json`.
pub fn state_path(into: &Path) -> PathBuf {
    into.join("service-state.json")
}
