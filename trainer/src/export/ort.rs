//! Cross-checks and timings with the reference ONNX tools (the `onnx` checker and
//! onnxruntime) through `python3`: there is no onnxruntime in our Rust dependency set, and
//! an independent implementation is the point of the check. The script is embedded, so the
//! binary needs only `python3 -m pip install onnx onnxruntime numpy`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::Error;

/// The embedded check/bench script.
pub const SCRIPT: &str = include_str!("onnx_check.py");

/// `Ok` when `python3` can import onnx, onnxruntime and numpy; otherwise why not.
pub fn available() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err("python3 cannot import onnx, onnxruntime and numpy \
                      (python3 -m pip install onnx onnxruntime numpy)"
            .to_string()),
        Err(e) => Err(format!("python3 not runnable: {e}")),
    }
}

/// One model of a [`check`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckModel {
    /// The ONNX file.
    pub path: PathBuf,
    /// Output name to the values tract produced on the input.
    pub tract: std::collections::BTreeMap<String, Vec<f32>>,
    /// Output name to the largest allowed |onnxruntime - tract|.
    pub tolerance: std::collections::BTreeMap<String, f32>,
}

/// Input and models of a [`check`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckSpec {
    /// Little-endian f32 input file.
    pub input: PathBuf,
    /// Its shape, batch first.
    pub shape: Vec<usize>,
    /// The models.
    pub models: Vec<CheckModel>,
}

fn run_script(mode: &str, spec: &Path) -> Result<(bool, String), Error> {
    let fail = |e: std::io::Error| {
        Error::Invalid(format!("running python3 for the onnxruntime {mode}: {e}"))
    };
    let mut child = Command::new("python3")
        .arg("-")
        .arg(mode)
        .arg(spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(SCRIPT.as_bytes())
        .map_err(fail)?;
    let out = child.wait_with_output().map_err(fail)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "onnxruntime {mode} of {} failed: {}",
            spec.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((out.status.success(), stdout))
}

/// Runs onnx.checker and onnxruntime on every model of `spec` (written to `spec_path`) and
/// compares with tract's outputs. Returns whether all passed and the script's JSON summary.
pub fn check(spec: &CheckSpec, spec_path: &Path) -> Result<(bool, serde_json::Value), Error> {
    let text = serde_json::to_string(spec).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(spec_path, text).map_err(|e| Error::write(spec_path, e))?;
    let (ok, stdout) = run_script("check", spec_path)?;
    let summary = serde_json::from_str(stdout.trim())
        .map_err(|e| Error::Invalid(format!("onnxruntime check printed {stdout:?}: {e}")))?;
    Ok((ok, summary))
}

#[derive(Deserialize)]
struct Timing {
    median_ms: f64,
    min_ms: f64,
}

/// Median and minimum batch-1 milliseconds of each model in onnxruntime (one thread).
pub fn bench(models: &[PathBuf], runs: usize) -> Result<Vec<(f64, f64)>, Error> {
    let spec_path = std::env::temp_dir().join(format!("fer-ort-bench-{}.json", std::process::id()));
    let spec = serde_json::json!({ "runs": runs.max(1), "models": models });
    std::fs::write(&spec_path, spec.to_string()).map_err(|e| Error::write(&spec_path, e))?;
    let result = run_script("bench", &spec_path);
    // The spec is scratch; a failure to remove it does not matter.
    let _ = std::fs::remove_file(&spec_path);
    let (_, stdout) = result?;
    let timings: std::collections::BTreeMap<String, Timing> =
        serde_json::from_str(stdout.trim())
            .map_err(|e| Error::Invalid(format!("onnxruntime bench printed {stdout:?}: {e}")))?;
    models
        .iter()
        .map(|m| {
            let key = m.to_string_lossy();
            timings
                .get(key.as_ref())
                .map(|t| (t.median_ms, t.min_ms))
                .ok_or_else(|| Error::Invalid(format!("onnxruntime bench has no timing for {key}")))
        })
        .collect()
}
