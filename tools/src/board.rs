//! Boards as the workstation reaches them: a local folder (`dir:/path`, the library is called
//! directly) or a real board over OpenSSH (`ssh://[user@]host[:port]/path`), where the board
//! side runs `fer-edge bundle ...` and files move with `scp`.
//!
//! The system `ssh` and `scp` are used so that `~/.ssh/config`, agents and `known_hosts`
//! apply. Host keys are always checked: every call passes `StrictHostKeyChecking=yes` first
//! (ssh keeps the first value it is given) and `--ssh-option` refuses options that would
//! weaken it. Add a board's host key to `known_hosts` before the first contact
//! (`ssh-keyscan -H host >> ~/.ssh/known_hosts`, after checking its fingerprint).

use std::io::Read as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge::bundle::{self, Activation, BoardRoot, StatusReport};
use firmware_config::PublicKey;
use firmware_config::exit_code;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A board address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Board {
    /// A board root on this machine (tests, the demo, a board mounted locally).
    Dir(PathBuf),
    /// A board root on a host reached with the system OpenSSH client.
    Ssh(SshBoard),
}

/// A board root on an ssh host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshBoard {
    /// `user@` part, if given (else ssh's config decides).
    pub user: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port, if not ssh's default.
    pub port: Option<u16>,
    /// The board root on the host (absolute).
    pub root: String,
    /// `-o` options passed to every `ssh` and `scp` call (`Key=Value`).
    pub options: Vec<String>,
    /// The `fer-edge` program on the board (a name on its PATH or an absolute path).
    pub agent: String,
}

/// Quotes one word for a POSIX shell (the remote login shell sees ssh's command as text).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:@+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a path for an sftp batch file.
fn sftp_quote(path: &str) -> String {
    format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs `cmd`, returning its stdout, or an [`Error::Command`] with its stderr.
fn run(mut cmd: Command) -> Result<String> {
    run_with_input(&mut cmd, "")
}

/// [`run`] with `input` on the command's stdin.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<String> {
    let line = command_line(cmd);
    let not_started = |e: std::io::Error| Error::Command {
        command: line.clone(),
        status: "not started".into(),
        code: None,
        stderr: format!("{e} (is OpenSSH's client installed? Debian: openssh-client)"),
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(not_started)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(not_started)?;
    }
    // A hostile or broken board must not exhaust the workstation: both streams are read up to
    // a cap; stderr's excess is drained (so the command cannot block on it), stdout's excess
    // stops the command.
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        stderr
            .map(|s| read_capped(s, MAX_STDERR, true))
            .unwrap_or_default()
    });
    let (stdout, overflow) = child
        .stdout
        .take()
        .map(|s| read_capped(s, MAX_STDOUT, false))
        .unwrap_or_default();
    if overflow {
        let _ = child.kill();
    }
    let status = child.wait().map_err(not_started)?;
    let (stderr, _) = errors.join().unwrap_or_default();
    if overflow {
        return Err(Error::Command {
            command: line,
            status: "too much output".into(),
            code: None,
            stderr: format!("more than {MAX_STDOUT} bytes on stdout: stopped"),
        });
    }
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line,
            status: status.to_string(),
            code: status.code(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        })
    }
}

/// The most a board command may print: a status report or a listing of segments is a few KiB.
const MAX_STDOUT: u64 = 4 << 20;
/// The most of a board command's errors kept.
const MAX_STDERR: u64 = 64 << 10;

/// Up to `cap` bytes of `stream`, and whether it held more; `drain` reads (and drops) the rest.
fn read_capped(stream: impl std::io::Read, cap: u64, drain: bool) -> (Vec<u8>, bool) {
    use std::io::Read as _;
    let mut kept = Vec::new();
    let mut stream = stream;
    let _ = (&mut stream).take(cap + 1).read_to_end(&mut kept);
    let overflow = kept.len() as u64 > cap;
    kept.truncate(cap as usize);
    if overflow && drain {
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    }
    (kept, overflow)
}

impl Board {
    /// Parses `dir:/path` or `ssh://[user@]host[:port]/path`. `options` are ssh `-o` options
    /// (`Key=Value`); `agent` is the `fer-edge` program on an ssh board.
    pub fn parse(address: &str, options: &[String], agent: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BoardAddress {
            address: address.to_string(),
            reason: format!(
                "{reason}; use dir:/path/to/board or ssh://user@host[:port]/path/to/board"
            ),
        };
        if let Some(path) = address.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad("no folder after dir:"));
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        let rest = address
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("unknown scheme"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no board root path after the host"))?;
        if path.is_empty() {
            return Err(bad("no board root path after the host"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(user.to_string()), hostport),
            None => (None, authority),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in an IPv6 host"))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            }
        };
        // scp without SFTP (older clients) hands paths to the remote shell: keep them plain.
        if !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        {
            return Err(bad(
                "the board root may only hold letters, digits, '/', '.', '_' and '-'",
            ));
        }
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("no host name"));
        }
        // ssh reads a word starting with '-' as an option, whatever position it is in.
        let plain = |s: &str, extra: &str| {
            !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        if !plain(&host, ".-:_%") {
            return Err(bad(
                "the host may only hold letters, digits, '.', '-', ':' and '_'",
            ));
        }
        if let Some(user) = &user
            && (user.is_empty() || !plain(user, "._-"))
        {
            return Err(bad(
                "the user may only hold letters, digits, '.', '_' and '-', and not start with '-'",
            ));
        }
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("port {p:?} is not a number")))
            })
            .transpose()?;
        for option in options {
            check_ssh_option(option)?;
        }
        Ok(Self::Ssh(SshBoard {
            user,
            host,
            port,
            root: format!("/{path}"),
            options: options.to_vec(),
            agent: agent.to_string(),
        }))
    }

    /// The address, as a user would type it.
    pub fn address(&self) -> String {
        match self {
            Self::Dir(path) => format!("dir:{}", path.display()),
            Self::Ssh(s) => {
                let user = s.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                let port = s.port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("ssh://{user}{}{port}{}", s.host, s.root)
            }
        }
    }

    /// Creates the board root (if needed) trusting `key`; refused if it trusts another key.
    pub fn init_trust(&self, key: &PublicKey) -> Result<StatusReport> {
        match self {
            Self::Dir(root) => {
                BoardRoot::init(root, key)?;
                self.status()
            }
            Self::Ssh(s) => s.agent_json(&["init", "--root", &s.root, "--trust", &key.to_hex()]),
        }
    }

    /// The board's slots, active bundle and field-log folder.
    pub fn status(&self) -> Result<StatusReport> {
        match self {
            Self::Dir(root) => Ok(StatusReport::of(&BoardRoot::open(root)?)?),
            Self::Ssh(s) => s.agent_json(&["status", "--root", &s.root]),
        }
    }

    /// Uploads a bundle into the board's staging folder, has the board verify every hash and
    /// the signature, run the self-test and switch its active slot. The previous bundle stays
    /// in the other slot. `step` is told what is happening.
    pub fn flash(&self, bundle_dir: &Path, step: &mut dyn FnMut(&str)) -> Result<Activation> {
        let name = bundle_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into());
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let staged_name = format!(
            "upload-{}-{stamp}",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        match self {
            Self::Dir(root) => {
                let board = BoardRoot::open(root)?;
                step("copying to the staging folder");
                let staged = board.staging_dir().join(staged_name);
                copy_dir(bundle_dir, &staged)?;
                step("verifying, self-testing and activating on the board");
                board
                    .activate(&staged, bundle::model_self_test)
                    .map_err(refused)
            }
            Self::Ssh(s) => {
                let staged = format!("{}/staging/{staged_name}", s.root);
                step("uploading with scp");
                let mut scp = s.scp();
                scp.arg("-r")
                    .arg("--")
                    .arg(bundle_dir)
                    .arg(s.remote(&staged));
                if let Err(e) = run(scp) {
                    // Best effort: a half-uploaded folder is useless; the upload error matters.
                    let mut cleanup = s.ssh();
                    cleanup.arg(format!("rm -rf -- {}", shell_quote(&staged)));
                    let _ = run(cleanup);
                    return Err(e);
                }
                step("verifying, self-testing and activating on the board");
                s.agent_json(&["activate", "--root", &s.root, &staged])
                    .map_err(refused_by_agent)
            }
        }
    }

    /// Switches the board back to its previous bundle (verified and self-tested there).
    pub fn rollback(&self) -> Result<Activation> {
        match self {
            Self::Dir(root) => BoardRoot::open(root)?
                .rollback(bundle::model_self_test)
                .map_err(refused),
            Self::Ssh(s) => s
                .agent_json(&["rollback", "--root", &s.root])
                .map_err(refused_by_agent),
        }
    }

    /// Runs a shell command on the board (e.g. `systemctl restart fer-edge`).
    pub fn run_shell(&self, command: &str) -> Result<String> {
        match self {
            Self::Dir(root) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(command).current_dir(root);
                run(cmd)
            }
            Self::Ssh(s) => {
                let mut cmd = s.ssh();
                cmd.arg(command);
                run(cmd)
            }
        }
    }

    /// Names of the field-log segments (`seg-*.ferlog`, and `seg-*.ferlog.damaged` moved aside
    /// by the board) in `dir` on the board, sorted.
    pub fn list_segments(&self, dir: &Path) -> Result<Vec<String>> {
        Ok(self
            .list_segment_sizes(dir)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// [`Board::list_segments`] with each segment's size in bytes, so that a segment too
    /// large to be one is never downloaded; also lists the segments the board moved aside as
    /// unreadable (`seg-*.ferlog.damaged`).
    pub fn list_segment_sizes(&self, dir: &Path) -> Result<Vec<(String, u64)>> {
        let extension = format!(".{}", edge::fieldlog::SEGMENT_EXTENSION);
        let is_segment = |n: &str| {
            let n = n.strip_suffix(edge::fieldlog::DAMAGED_SUFFIX).unwrap_or(n);
            n.starts_with(edge::fieldlog::SEGMENT_PREFIX)
                && n.ends_with(&extension)
                && !n.contains('/')
        };
        let mut segments: Vec<(String, u64)> = match self {
            Self::Dir(_) => match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let size = e.metadata().ok()?.len();
                        is_segment(&name).then_some((name, size))
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io("listing", dir, e)),
            },
            Self::Ssh(s) => {
                let quoted = shell_quote(&dir.to_string_lossy());
                let mut cmd = s.ssh();
                cmd.arg(format!(
                    "cd {quoted} 2>/dev/null || exit 0; for f in {p}*.{e} {p}*.{e}{d}; do \
                     [ -f \"$f\" ] && printf '%s %s\\n' \"$(wc -c < \"$f\")\" \"$f\"; done; exit 0",
                    p = edge::fieldlog::SEGMENT_PREFIX,
                    e = edge::fieldlog::SEGMENT_EXTENSION,
                    d = edge::fieldlog::DAMAGED_SUFFIX,
                ));
                let line = command_line(&cmd);
                run(cmd)?
                    .lines()
                    .map(|l| {
                        let parsed = l
                            .trim()
                            .split_once(' ')
                            .and_then(|(size, name)| Some((name.to_string(), size.parse().ok()?)));
                        parsed.ok_or_else(|| Error::Command {
                            command: line.clone(),
                            status: "unexpected output".into(),
                            code: None,
                            stderr: format!("{l:?} is not \"SIZE NAME\""),
                        })
                    })
                    .filter(|r| r.as_ref().map_or(true, |(n, _)| is_segment(n)))
                    .collect::<Result<_>>()?
            }
        };
        segments.sort();
        Ok(segments)
    }

    /// Copies segments `names` from `dir` on the board into the local folder `into`.
    pub fn fetch(&self, dir: &Path, names: &[String], into: &Path) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        match self {
            Self::Dir(_) => {
                for name in names {
                    let (from, to) = (dir.join(name), into.join(name));
                    std::fs::copy(&from, &to).map_err(|e| Error::io("copying", &from, e))?;
                }
                Ok(())
            }
            Self::Ssh(s) => {
                // One sftp session for all files (scp would open a connection per file).
                let mut batch = String::new();
                for name in names {
                    let from = format!("{}/{name}", dir.to_string_lossy());
                    let to = into.join(name);
                    batch.push_str(&format!(
                        "get {} {}\n",
                        sftp_quote(&from),
                        sftp_quote(&to.to_string_lossy())
                    ));
                }
                run_with_input(&mut s.sftp_batch(), &batch).map(drop)
            }
        }
    }

    /// Takes the board's collect lock (`dir/.collect.lock`), waiting up to `wait`: one collector
    /// per board, whatever folder each collects into. The lock lives as long as the returned
    /// guard, and dies with this process (a kernel `flock`, held over ssh by a remote
    /// `flock` that ends with the connection).
    pub fn lock_collect(&self, dir: &Path, wait: Duration) -> Result<BoardLock> {
        let busy = || {
            Error::invalid(
                "board",
                format!(
                    "another `fer collect` holds {} on {}: wait for it to finish",
                    dir.join(COLLECT_LOCK).display(),
                    self.address()
                ),
            )
        };
        match self {
            Self::Dir(_) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
                let path = dir.join(COLLECT_LOCK);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io("opening", &path, e))?;
                if lock_within(&file, &path, wait)? {
                    Ok(BoardLock::File(file))
                } else {
                    Err(busy())
                }
            }
            Self::Ssh(s) => {
                let quoted = shell_quote(&dir.to_string_lossy());
                let lock = shell_quote(&format!("{}/{COLLECT_LOCK}", dir.to_string_lossy()));
                let mut cmd = s.ssh();
                cmd.arg(format!(
                    "mkdir -p {quoted} && exec flock -w {} {lock} -c 'echo locked; exec cat'",
                    wait.as_secs_f64().max(0.1)
                ));
                let line = command_line(&cmd);
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| Error::Command {
                        command: line.clone(),
                        status: "not started".into(),
                        code: None,
                        stderr: e.to_string(),
                    })?;
                let mut first = String::new();
                if let Some(out) = child.stdout.take() {
                    use std::io::BufRead as _;
                    let _ = std::io::BufReader::new(out.take(64)).read_line(&mut first);
                }
                if first.trim() == "locked" {
                    Ok(BoardLock::Remote(child))
                } else {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(busy())
                }
            }
        }
    }

    /// Deletes segments from `dir` on the board, each given by name and the SHA-256 (hex) of
    /// the bytes that were read: a file whose contents differ now (the name was reused) is
    /// left alone. Returns the names that were kept for that reason.
    pub fn delete_verified(
        &self,
        dir: &Path,
        segments: &[(String, String)],
    ) -> Result<Vec<String>> {
        if segments.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Dir(_) => {
                let mut kept = Vec::new();
                for (name, sha256) in segments {
                    let path = dir.join(name);
                    let bytes = match std::fs::read(&path) {
                        Ok(bytes) => bytes,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io("reading", &path, e)),
                    };
                    if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                        kept.push(name.clone());
                        continue;
                    }
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("deleting", &path, e)),
                    }
                }
                Ok(kept)
            }
            Self::Ssh(s) => {
                // One round trip: each file is removed only if its hash matches; the names
                // of the others are printed.
                let script: String = segments
                    .iter()
                    .map(|(name, sha256)| {
                        let path = shell_quote(&format!("{}/{name}", dir.to_string_lossy()));
                        format!(
                            "if [ -f {path} ]; then h=$(sha256sum < {path} | cut -d' ' -f1); \
                             if [ \"$h\" = {sha256} ]; then rm -f -- {path}; else echo {}; fi; fi; ",
                            shell_quote(name)
                        )
                    })
                    .collect();
                let mut cmd = s.ssh();
                cmd.arg(script);
                Ok(run(cmd)?.lines().map(str::to_string).collect())
            }
        }
    }
}

/// Takes the exclusive lock on `file` (at `path`, for errors), polling until `wait` has
/// passed; `false` when another holder kept it that long.
pub(crate) fn lock_within(file: &std::fs::File, path: &Path, wait: Duration) -> Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
        }
    }
}

/// The collect lock's file name inside a board's field-log folder.
pub const COLLECT_LOCK: &str = ".collect.lock";

/// A board's collect lock ([`Board::lock_collect`]), released when dropped.
#[derive(Debug)]
pub enum BoardLock {
    /// A lock on a board folder on this machine.
    File(std::fs::File),
    /// The ssh session whose remote `flock` holds the lock until its input closes.
    Remote(std::process::Child),
}

impl Drop for BoardLock {
    fn drop(&mut self) {
        if let Self::Remote(child) = self {
            // Closing its input ends `cat`, then `flock` releases the lock.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Refuses an `--ssh-option` that is not `Key=Value` or that would weaken host-key checks.
fn check_ssh_option(option: &str) -> Result<()> {
    let invalid = |reason: &str| Error::invalid("--ssh-option", format!("{option:?}: {reason}"));
    let Some((key, value)) = option.split_once(['=', ' ']) else {
        return Err(invalid("give Key=Value, as ssh's -o takes it"));
    };
    if key.is_empty() || key.starts_with('-') {
        return Err(invalid("give Key=Value, as ssh's -o takes it"));
    }
    let key = key.trim().to_ascii_lowercase();
    let weakens = match key.as_str() {
        "stricthostkeychecking" => !value.trim().eq_ignore_ascii_case("yes"),
        "knownhostscommand" | "verifyhostkeydns" | "updatehostkeys" => true,
        _ => false,
    };
    if weakens {
        return Err(invalid(
            "fer always checks host keys (StrictHostKeyChecking=yes); add the board's key to \
             known_hosts instead: ssh-keyscan -H HOST >> ~/.ssh/known_hosts, after checking \
             its fingerprint on the board",
        ));
    }
    Ok(())
}

/// A board library refusal is a refusal to the user, with the board's reason.
/// A failed `fer-edge bundle` call on an ssh board as a refusal when fer-edge exited with the
/// refused-bundle code; anything else (ssh's 255, a missing fer-edge) is a failure to ask.
fn refused_by_agent(e: Error) -> Error {
    let refused = i32::from(exit_code::BUNDLE_REFUSED);
    match e {
        Error::Command {
            stderr,
            code: Some(code),
            ..
        } if code == refused => Error::Refused { reason: stderr },
        other => other,
    }
}

fn refused(e: edge::Error) -> Error {
    match e {
        edge::Error::Bundle { .. } => Error::Refused {
            reason: e.to_string(),
        },
        other => Error::Bundle(other),
    }
}

impl SshBoard {
    fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// `[user@]host:path` for scp (IPv6 addresses in brackets).
    fn remote(&self, path: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.user {
            Some(user) => format!("{user}@{host}:{path}"),
            None => format!("{host}:{path}"),
        }
    }

    fn with_options(&self, cmd: &mut Command) {
        cmd.arg("-o").arg("StrictHostKeyChecking=yes");
        for option in &self.options {
            cmd.arg("-o").arg(option);
        }
    }

    /// `ssh [-p port] -o ... -- destination` (the remote command is appended).
    fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        self.with_options(&mut cmd);
        cmd.arg("--").arg(self.destination());
        cmd
    }

    /// `scp -q [-P port] -o ...` (more flags, then `--`, sources and target are appended).
    fn scp(&self) -> Command {
        let mut cmd = Command::new("scp");
        cmd.arg("-q");
        if let Some(port) = self.port {
            cmd.arg("-P").arg(port.to_string());
        }
        self.with_options(&mut cmd);
        cmd
    }

    /// `sftp -q -b - [-P port] [-o ...] destination` (the batch comes on stdin; sftp stops
    /// at the first failing command).
    fn sftp_batch(&self) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.arg("-q").arg("-b").arg("-");
        if let Some(port) = self.port {
            cmd.arg("-P").arg(port.to_string());
        }
        self.with_options(&mut cmd);
        cmd.arg("--").arg(self.destination());
        cmd
    }

    /// Runs `fer-edge bundle ARGS` on the board and parses its JSON.
    fn agent_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let remote: Vec<String> = [self.agent.as_str(), "bundle"]
            .into_iter()
            .chain(args.iter().copied())
            .map(shell_quote)
            .collect();
        let mut cmd = self.ssh();
        cmd.arg(remote.join(" "));
        let line = command_line(&cmd);
        let stdout = run(cmd)?;
        serde_json::from_str(&stdout).map_err(|e| Error::Command {
            command: line,
            status: "unexpected output".into(),
            code: None,
            stderr: format!(
                "{e} in {stdout:?}: is {} on the board the same toolkit release as this fer?",
                self.agent
            ),
        })
    }
}

/// Copies the plain files of `from` into the new folder `to`.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io("creating", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io("listing", from, e))? {
        let entry = entry.map_err(|e| Error::io("listing", from, e))?;
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).map_err(|e| Error::io("copying", entry.path(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
