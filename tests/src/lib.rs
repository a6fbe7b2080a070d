//! Helpers for the end-to-end tests in `tests/tests/`: a real OpenSSH server on 127.0.0.1,
//! the built `fer` and `fer-edge` programs, and bundles of a real model.
//!
//! The ssh server runs as the current user on a free port with a throwaway host key and an
//! authorized client key; the client checks the host key against a temporary `known_hosts`
//! holding exactly that key (`StrictHostKeyChecking=yes`): nothing disables host-key checks.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The sshd program (Debian: `openssh-server`).
pub const SSHD: &str = "/usr/sbin/sshd";

/// A built program of the workspace (`fer`, `fer-edge`), next to the test executable.
///
/// # Panics
/// When it has not been built, with the command that builds it.
pub fn program(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the programs first with `cargo build -p tools -p edge --bins` \
         (same profile and CARGO_TARGET_DIR as the tests)",
        path.display()
    );
    path
}

/// Runs the built `fer` with `args`.
pub fn fer(args: &[&str]) -> Output {
    Command::new(program("fer"))
        .args(args)
        .output()
        .expect("running fer")
}

/// Asserts a program succeeded, showing its exit code and both outputs otherwise; returns
/// its stdout.
pub fn expect_success(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The user the tests run as (the ssh login).
pub fn user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("running id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running sshd on 127.0.0.1 with its own keys; stopped when dropped.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port on 127.0.0.1")
}

impl Sshd {
    /// Starts the server, or returns `None` (with a note) when `/usr/sbin/sshd` is missing and
    /// `FER_REQUIRE_SHARED` is not set (CI sets it and installs `openssh-server`).
    pub fn start() -> Option<Self> {
        if !Path::new(SSHD).is_file() {
            assert!(
                !testdata::required(),
                "{SSHD} is missing: install Debian's openssh-server"
            );
            eprintln!("skipping: {SSHD} is missing (Debian: openssh-server)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for (name, comment) in [("host_key", "host"), ("client_key", "client")] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(d.join(name)),
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("copy key");
        // sshd running as root insists on its privilege-separation folder.
        if user() == "root" {
            std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        }
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        for _attempt in 0..5 {
            let port = free_port();
            std::fs::write(
                d.join("known_hosts"),
                format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
            )
            .expect("known_hosts");
            std::fs::write(
                d.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                     PidFile {pid}\nStrictModes no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                     PermitRootLogin prohibit-password\nMaxStartups 100\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                    hk = d.join("host_key").display(),
                    ak = d.join("authorized_keys").display(),
                    pid = d.join("sshd.pid").display(),
                ),
            )
            .expect("sshd_config");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Self { child, dir, port });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Port taken in between, or a slow start: try another port.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start on 127.0.0.1 (see its messages above)");
    }

    /// `--ssh-option` values for `fer`: this server's known_hosts and the client key, strict
    /// host-key checking, no password prompts.
    pub fn fer_options(&self) -> Vec<String> {
        let d = self.dir.path();
        vec![
            format!("UserKnownHostsFile={}", d.join("known_hosts").display()),
            "StrictHostKeyChecking=yes".into(),
            format!("IdentityFile={}", d.join("client_key").display()),
            "IdentitiesOnly=yes".into(),
            "IdentityAgent=none".into(),
            "BatchMode=yes".into(),
        ]
    }

    /// `--ssh-option K=V` pairs as command-line arguments.
    pub fn fer_args(&self) -> Vec<String> {
        self.fer_options()
            .into_iter()
            .flat_map(|o| ["--ssh-option".to_string(), o])
            .collect()
    }

    /// The `ssh://` address of `root` on this server.
    pub fn address(&self, root: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", user(), self.port, root.display())
    }

    /// An `ssh` command to this server (append the remote command).
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-p").arg(self.port.to_string());
        for option in self.fer_options() {
            cmd.arg("-o").arg(option);
        }
        cmd.arg(format!("{}@127.0.0.1", user())).arg("--");
        cmd
    }

    /// An `scp` command to this server (append sources and target).
    pub fn scp(&self) -> Command {
        let mut cmd = Command::new("scp");
        cmd.arg("-q").arg("-P").arg(self.port.to_string());
        for option in self.fer_options() {
            cmd.arg("-o").arg(option);
        }
        cmd
    }

    /// `[user@]127.0.0.1:path` for scp.
    pub fn remote(&self, path: &Path) -> String {
        format!("{}@127.0.0.1:{}", user(), path.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha(bytes: &[u8]) -> firmware_config::Sha256Digest {
    use sha2::Digest as _;
    firmware_config::Sha256Digest(sha2::Sha256::digest(bytes).into())
}

/// An export folder as `fer-train export` writes it, of the peer model, with a self-test
/// whose expected output is what the board's classifier computes (or `wrong` for a broken one).
pub fn peer_export(dir: &Path, model: &Path, run_id: &str, wrong: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let model_bytes = std::fs::read(model).unwrap();
    std::fs::write(dir.join("model.onnx"), &model_bytes).unwrap();
    let mut m = firmware_config::manifest::ModelManifest {
        model_file: "model.onnx".into(),
        model_sha256: sha(&model_bytes),
        training_run_id: run_id.into(),
        ..testdata::peer_manifest()
    };
    let input: Vec<f32> = (0..64 * 64)
        .map(|i| ((i * 37 % 255) as f32) / 127.5 - 1.0)
        .collect();
    let input_bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("selftest.bin"), &input_bytes).unwrap();
    let classifier =
        edge::classify::Classifier::load(&dir.join("model.onnx"), m.clone(), &Default::default())
            .unwrap();
    let mut expected = classifier.run_raw(&input, 1).unwrap();
    if wrong {
        expected.reverse();
    }
    m.self_test.input_file = "selftest.bin".into();
    m.self_test.input_sha256 = sha(&input_bytes);
    m.self_test.expected_output = expected;
    m.self_test.tolerance = 1e-4;
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
}

/// Copies the first `per_class` images (sorted by name, after skipping `skip`) of every
/// class of an ImageFolder; `flat` puts them all in one folder, without class names.
pub fn subset(from: &Path, to: &Path, skip: usize, per_class: usize, flat: bool) -> usize {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut copied = 0;
    for class in classes {
        let name = class.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let dir = if flat {
            to.to_path_buf()
        } else {
            to.join(&name)
        };
        std::fs::create_dir_all(&dir).unwrap();
        for file in files.iter().skip(skip).take(per_class) {
            let target = dir.join(format!(
                "{name}-{}",
                file.file_name().unwrap().to_string_lossy()
            ));
            std::fs::copy(file, target).unwrap();
            copied += 1;
        }
    }
    copied
}
