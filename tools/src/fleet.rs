//! Fleets: the boards of `fleet.toml`, and running one operation on many of them at once.
//!
//! ```toml
//! # fleet.toml
//! [defaults]
//! ssh_options = ["ConnectTimeout=10"]   # -o options for every board
//! agent = "fer-edge"                    # the board program
//!
//! [[board]]
//! name = "lobby-1"
//! address = "ssh://jetson@10.0.0.11/var/lib/fer-edge"
//! tags = ["lobby", "canary"]
//!
//! [[board]]
//! name = "dock-2"
//! address = "ssh://jetson@10.0.0.12:2222/var/lib/fer-edge"
//! tags = ["dock"]
//! [board.config]                        # overrides of the fleet's device config
//! device = { name = "dock camera 2" }
//! detector = { interval = 3 }
//! ```
//!
//! [`service`] runs collect every few minutes as a service; [`rollout`] flashes canaries first
//! and promotes a bundle only while they stay healthy; [`report`] draws the page a person
//! looks at to decide when to retrain.
//!
//! [`Inventory::load`] refuses duplicate names, bad addresses, unknown keys and overrides that
//! do not make a valid device config, naming the board. [`for_each`] runs an operation on
//! the selected boards with bounded concurrency; each board's outcome is its own, so one that
//! is down, slow or hostile fails alone.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use firmware_config::config::DeviceConfig;
use serde::{Deserialize, Serialize};

use crate::board::Board;
use crate::error::{Error, Result};

/// What applies to every board unless the board says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    /// ssh `-o` options (`Key=Value`) for every board.
    pub ssh_options: Vec<String>,
    /// The `fer-edge` program on the boards.
    pub agent: Option<String>,
}

/// One board of the inventory, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardEntry {
    /// A short unique name (letters, digits, `-`, `_`, `.`): tables, folders and state use it.
    pub name: String,
    /// `ssh://[user@]host[:port]/board/root` or `dir:/path`.
    pub address: String,
    /// Groups it belongs to (`--tag` selects by them).
    #[serde(default)]
    pub tags: Vec<String>,
    /// More ssh `-o` options, after the defaults.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// The `fer-edge` program on this board, if not the default.
    #[serde(default)]
    pub agent: Option<String>,
    /// Overrides of the fleet's device config (the same tables and keys as a config file).
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// The field-log folder on the board, when collect should not take it from the active
    /// config (a board without a bundle yet, a log on another disk).
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    board: Vec<BoardEntry>,
}

/// A validated `fleet.toml`.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it was read from.
    pub path: PathBuf,
    /// Defaults for every board.
    pub defaults: Defaults,
    /// The boards, in file order.
    pub boards: Vec<BoardEntry>,
}

/// A plain name: letters, digits, `-`, `_`, `.`, not starting with `.`.
fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Inventory {
    /// Reads and validates a fleet file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        Self::parse(&text, path)
    }

    /// Validates the text of a fleet file read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::file(path, reason);
        let file: FleetFile =
            toml::from_str(text).map_err(|e| bad(format!("not a fleet file: {e}")))?;
        if file.board.is_empty() {
            return Err(bad(
                "lists no board: add a [[board]] with a name and an address".into(),
            ));
        }
        let inventory = Self {
            path: path.to_path_buf(),
            defaults: file.defaults,
            boards: file.board,
        };
        for (i, entry) in inventory.boards.iter().enumerate() {
            let at = format!("board {} ({:?})", i + 1, entry.name);
            if !is_plain(&entry.name) {
                return Err(bad(format!(
                    "{at}: the name must be letters, digits, '-', '_' or '.'"
                )));
            }
            if let Some(first) = inventory.boards[..i]
                .iter()
                .position(|b| b.name == entry.name)
            {
                return Err(bad(format!(
                    "{at}: the name is already used by board {}; names must be unique",
                    first + 1
                )));
            }
            if let Some(tag) = entry.tags.iter().find(|t| !is_plain(t)) {
                return Err(bad(format!("{at}: tag {tag:?} is not a plain name")));
            }
            inventory
                .board(entry)
                .map_err(|e| bad(format!("{at}: {e}")))?;
            inventory
                .config_for(entry, &DeviceConfig::default())
                .map_err(|e| bad(format!("{at}: [board.config] {e}")))?;
        }
        Ok(inventory)
    }

    /// The board an entry names, with the defaults applied.
    pub fn board(&self, entry: &BoardEntry) -> Result<Board> {
        let options: Vec<String> = self
            .defaults
            .ssh_options
            .iter()
            .chain(&entry.ssh_options)
            .cloned()
            .collect();
        let agent = entry
            .agent
            .as_deref()
            .or(self.defaults.agent.as_deref())
            .unwrap_or("fer-edge");
        Board::parse(&entry.address, &options, agent)
    }

    /// `base` with the entry's overrides applied, validated.
    pub fn config_for(&self, entry: &BoardEntry, base: &DeviceConfig) -> Result<DeviceConfig> {
        let Some(overrides) = &entry.config else {
            return Ok(base.clone());
        };
        let invalid = |reason: String| Error::invalid("device config override", reason);
        let mut merged = toml::Table::try_from(base).map_err(|e| invalid(e.to_string()))?;
        merge(&mut merged, overrides);
        let config: DeviceConfig = merged.try_into().map_err(|e| invalid(e.to_string()))?;
        config.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    /// The boards carrying any of `tags` (all boards when `tags` is empty), in file order;
    /// an unknown tag is an error, so a typo selects nothing silently.
    pub fn select(&self, tags: &[String]) -> Result<Vec<&BoardEntry>> {
        if let Some(tag) = tags
            .iter()
            .find(|t| !self.boards.iter().any(|b| b.tags.contains(t)))
        {
            return Err(Error::invalid(
                "--tag",
                format!("no board of {} has tag {tag:?}", self.path.display()),
            ));
        }
        Ok(self
            .boards
            .iter()
            .filter(|b| tags.is_empty() || b.tags.iter().any(|t| tags.contains(t)))
            .collect())
    }
}

/// Merges `over` into `base`, table by table (a value in `over` replaces the one in `base`).
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => merge(inner, more),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// One board's outcome of a fleet operation.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The board's name.
    pub name: String,
    /// What the operation returned, or why it failed.
    pub result: Result<T>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs `op` on every board, at most `jobs` at a time, and returns the outcomes in the order
/// of `boards`. `done` is called as each board finishes (for progress).
pub fn for_each<T: Send>(
    inventory: &Inventory,
    boards: &[&BoardEntry],
    jobs: usize,
    op: impl Fn(&BoardEntry, &Board) -> Result<T> + Sync,
    done: impl Fn(&str, bool) + Sync,
) -> Vec<Outcome<T>> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Outcome<T>>>> = boards.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, boards.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(entry) = boards.get(i) else { break };
                    let start = Instant::now();
                    let result = inventory.board(entry).and_then(|board| op(entry, &board));
                    done(&entry.name, result.is_ok());
                    let outcome = Outcome {
                        name: entry.name.clone(),
                        result,
                        elapsed: start.elapsed(),
                    };
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|s| s.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

/// What `fer fleet check` found on one board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The `fer-edge --version` line, or `local` for a `dir:` board.
    pub agent_version: String,
    /// The active bundle's id, if any.
    pub active_bundle: Option<String>,
    /// The newest bundle version the board accepts.
    pub newest_version: u64,
    /// An automatic fallback since the last activation, if any.
    pub fell_back: bool,
}

/// Checks one board: reachable, host key accepted, its agent's version, its active bundle.
pub fn check(board: &Board) -> Result<Check> {
    let agent_version = match board {
        Board::Dir(_) => "local".to_string(),
        Board::Ssh(s) => board
            .run_shell(&format!(
                "{} --version",
                crate::board::shell_quote(&s.agent)
            ))?
            .trim()
            .to_string(),
    };
    let status = board.status()?;
    Ok(Check {
        agent_version,
        active_bundle: active_bundle(&status.board),
        newest_version: status.board.newest_version,
        fell_back: status.board.fallback.is_some(),
    })
}

/// The id of the bundle in a board's active slot, if any.
pub fn active_bundle(status: &edge::bundle::BoardStatus) -> Option<String> {
    let active = status.active.as_ref()?;
    status
        .slots
        .iter()
        .find(|s| &s.slot == active)
        .and_then(|s| s.bundle_id.clone())
}

/// A short reason for a failed board: what a person checks first.
pub fn diagnose(error: &Error) -> String {
    let text = error.to_string();
    let first = |needle: &str| text.contains(needle);
    if first("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        "host key changed (check the board, then update known_hosts)".into()
    } else if first("Host key verification failed") || first("No matching host key") {
        "host key not trusted (add it to known_hosts)".into()
    } else if first("Connection refused") {
        "unreachable: connection refused".into()
    } else if first("timed out") || first("No route to host") || first("Could not resolve") {
        "unreachable: no answer".into()
    } else if first("Permission denied") {
        "login refused (key or user)".into()
    } else if let Error::Command {
        command,
        stderr,
        status,
        ..
    } = error
    {
        // The command line is long and the same for every board: the reason is in stderr.
        let program = command.split_whitespace().next().unwrap_or("command");
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(status);
        format!(
            "{program}: {}",
            reason.chars().take(160).collect::<String>()
        )
    } else {
        text.lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(160)
            .collect()
    }
}

/// A board switched by [`flash`] or [`rollback`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Switched {
    /// The slot active now.
    pub slot: String,
    /// The bundle active now.
    pub bundle_id: String,
    /// The bundle active before, if any.
    pub previous_bundle_id: Option<String>,
}

impl From<edge::bundle::Activation> for Switched {
    fn from(a: edge::bundle::Activation) -> Self {
        Self {
            slot: a.slot,
            bundle_id: a.bundle_id,
            previous_bundle_id: a.previous_bundle_id,
        }
    }
}

/// Refuses a shared bundle for boards whose inventory entry overrides the device config: the
/// bundle's config would silently replace their overrides.
pub fn check_shared_bundle(boards: &[&BoardEntry]) -> Result<()> {
    let with: Vec<&str> = boards
        .iter()
        .filter(|b| b.config.is_some())
        .map(|b| b.name.as_str())
        .collect();
    if with.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        "fleet flash",
        format!(
            "board(s) {} override the device config in the inventory, and one bundle carries \
             one config: leave them out (--tag) and bundle their merged config separately",
            with.join(", ")
        ),
    ))
}

/// Flashes `bundle` on one board the way `fer flash` does (verified here against the key the
/// board trusts, then uploaded, verified and self-tested there), then runs `restart` on it.
pub fn flash(board: &Board, bundle: &Path, restart: Option<&str>) -> Result<Switched> {
    let trusted = firmware_config::PublicKey::from_hex(&board.status()?.board.trusted_key)
        .map_err(|e| Error::invalid("trusted key", format!("the board reports a bad one: {e}")))?;
    edge::bundle::verify_dir(bundle, &trusted)?;
    let done = board.flash(bundle, &mut |_| {})?;
    if let Some(command) = restart {
        board.run_shell(command)?;
    }
    Ok(done.into())
}

/// Switches one board back to its previous bundle, then runs `restart` on it.
pub fn rollback(board: &Board, restart: Option<&str>) -> Result<Switched> {
    let done = board.rollback()?;
    if let Some(command) = restart {
        board.run_shell(command)?;
    }
    Ok(done.into())
}

/// The field-log collect of one board ([`collect_into`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Collected {
    /// The board's own collect folder.
    pub into: PathBuf,
    /// Records written this time.
    pub records_new: usize,
    /// Records that were already there.
    pub records_known: usize,
    /// Segments collected and deleted on the board.
    pub segments: usize,
    /// Damaged segments (kept on the board unless `accept_damaged`).
    pub damaged: usize,
}

/// Collects one board into `root/<name>/` (a collect folder of its own, so boards never wait
/// for each other's folder lock). Every record keeps the board's address and device id. The
/// field-log folder is `log_dir` if known, else the entry's `log_dir`, else the active
/// config's.
pub fn collect_into(
    root: &Path,
    entry: &BoardEntry,
    board: &Board,
    log_dir: Option<&Path>,
    accept_damaged: bool,
) -> Result<Collected> {
    let into = root.join(&entry.name);
    let options = crate::collect::CollectOptions {
        accept_damaged,
        log_dir: log_dir
            .map(Path::to_path_buf)
            .or_else(|| entry.log_dir.clone()),
        ..crate::collect::CollectOptions::default()
    };
    let report = crate::collect::collect(board, &into, &options, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(Collected {
        into,
        records_new: report.records_new,
        records_known: report.records_known,
        segments: report.segments_collected,
        damaged: report.damaged.len(),
    })
}

/// A plain-text table: a header row, then one row per board, columns padded to fit.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The table of a fleet operation: one row per board with its `cells` when it succeeded,
/// or what went wrong in the last column; and the error to end with if any board failed.
pub fn report<T>(
    header: &[&str],
    outcomes: &[Outcome<T>],
    cells: impl Fn(&T) -> Vec<String>,
) -> (String, Option<Error>) {
    let mut rows = Vec::new();
    let mut failed = 0;
    for o in outcomes {
        let mut row = vec![
            o.name.clone(),
            String::new(),
            format!("{:.1}s", o.elapsed.as_secs_f64()),
        ];
        match &o.result {
            Ok(value) => {
                row[1] = "ok".into();
                row.extend(cells(value));
            }
            Err(e) => {
                failed += 1;
                row[1] = "FAILED".into();
                row.extend(header.iter().map(|_| "-".to_string()));
                row.push(diagnose(e));
            }
        }
        rows.push(row);
    }
    let mut full = vec!["board", "result", "time"];
    full.extend_from_slice(header);
    full.push("problem");
    let error = (failed > 0).then_some(Error::FleetPartial {
        failed,
        total: outcomes.len(),
    });
    (table(&full, &rows), error)
}

pub mod report;
pub mod rollout;
pub mod service;
#[cfg(test)]
mod tests;
