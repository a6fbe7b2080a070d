//! Compute backends: `flex` (pure-Rust CPU, always built), `cuda` (feature `cuda`) and
//! `tch` (LibTorch, feature `tch`).
//!
//! burn panics deep inside a backend when its device is missing, so [`BackendKind::check`]
//! looks for the driver first and returns an ordinary error naming what is missing.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which burn backend runs training, evaluation and benchmarks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn-flex on the CPU.
    #[default]
    Flex,
    /// burn-cuda on the first NVIDIA GPU (feature `cuda`).
    Cuda,
    /// LibTorch on the CPU (feature `tch`).
    Tch,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|kind| kind.name()).collect();
                Error::config(
                    "backend",
                    format!("unknown backend {s:?}; use {}", names.join(", ")),
                )
            })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Folders where the CUDA driver library usually lives (x86 distributions, WSL, Jetson).
const CUDA_LIB_DIRS: [&str; 7] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/cuda/lib64",
    "/usr/lib/wsl/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu/tegra",
];

fn cuda_driver_present() -> std::result::Result<(), String> {
    let device_nodes = ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvhost-ctrl"];
    if !device_nodes.iter().any(|p| Path::new(p).exists()) {
        return Err(format!(
            "no NVIDIA device node ({}) exists: no GPU or no driver loaded",
            device_nodes.join(", ")
        ));
    }
    let mut dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    dirs.extend(CUDA_LIB_DIRS.iter().map(|d| d.to_string()));
    if !dirs.iter().any(|d| {
        Path::new(d).join("libcuda.so.1").exists() || Path::new(d).join("libcuda.so").exists()
    }) {
        return Err(
            "libcuda.so.1 (the NVIDIA driver library) was not found in LD_LIBRARY_PATH or the \
             usual library folders"
                .into(),
        );
    }
    Ok(())
}

/// NVIDIA GPUs this process may use: the `/dev/nvidiaN` device nodes (a Jetson's integrated
/// GPU, which has none of them, counts as one when its `nvhost-ctrl` node exists), or fewer
/// when `CUDA_VISIBLE_DEVICES` lists fewer.
fn gpu_count() -> usize {
    let present = gpus_present();
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(list) => list
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .count()
            .min(present),
        Err(_) => present,
    }
}

fn gpus_present() -> usize {
    let numbered = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("nvidia")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0);
    if numbered == 0 && Path::new("/dev/nvhost-ctrl").exists() {
        1
    } else {
        numbered
    }
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Cuda, BackendKind::Tch];

    /// Whether this build includes the backend.
    pub fn compiled(self) -> bool {
        match self {
            BackendKind::Flex => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Tch => cfg!(feature = "tch"),
        }
    }

    /// Checks that the backend is built in and its device exists, before burn touches it.
    pub fn check(self) -> Result<()> {
        if !self.compiled() {
            return Err(Error::Backend {
                backend: self.name(),
                reason: format!(
                    "this fer-train was built without it; rebuild with `cargo build --release \
                     -p trainer --features {}`",
                    self.name()
                ),
            });
        }
        if self == BackendKind::Cuda {
            cuda_driver_present().map_err(|reason| Error::Backend {
                backend: "cuda",
                reason: format!("{reason}; use --backend flex on this machine"),
            })?;
        }
        Ok(())
    }

    /// [`BackendKind::check`], and that `count` devices exist: CUDA needs that many GPUs.
    pub fn check_devices(self, count: usize) -> Result<()> {
        if count == 0 {
            return Err(Error::config("devices", "must be at least 1"));
        }
        self.check()?;
        if self == BackendKind::Cuda {
            let gpus = gpu_count();
            if count > gpus {
                return Err(Error::Backend {
                    backend: "cuda",
                    reason: format!(
                        "--devices {count} asks for {count} GPUs but {gpus} are present \
                         and visible (/dev/nvidiaN, CUDA_VISIBLE_DEVICES); pass --devices \
                         {gpus} or fewer"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Cuda => "cuda",
            BackendKind::Tch => "tch",
        }
    }
}

/// Runs `$body` with the type alias `$ad` bound to the autodiff backend of `$kind` and
/// `$dev` to its default device (after [`BackendKind::check`]); or, given a count, `$devs`
/// to that many devices (GPUs 0..count for CUDA, the one CPU repeated otherwise, after
/// [`BackendKind::check_devices`]).
#[macro_export]
#[doc(hidden)]
macro_rules! with_backend {
    ($kind:expr, |$ad:ident, $dev:ident| $body:expr) => {
        $crate::with_backend!($kind, 1, |$ad, devices| {
            let $dev = devices.into_iter().next().expect("one device");
            $body
        })
    };
    ($kind:expr, $count:expr, |$ad:ident, $devs:ident| $body:expr) => {{
        let kind: $crate::backend::BackendKind = $kind;
        let count: usize = $count;
        match kind.check_devices(count) {
            Err(e) => Err(e),
            Ok(()) => match kind {
                #[cfg(feature = "cuda")]
                $crate::backend::BackendKind::Cuda => {
                    type $ad = burn::backend::Autodiff<burn::backend::Cuda>;
                    let $devs: Vec<_> = (0..count)
                        .map(burn::backend::cuda::CudaDevice::new)
                        .collect();
                    $body
                }
                #[cfg(feature = "tch")]
                $crate::backend::BackendKind::Tch => {
                    type $ad = burn::backend::Autodiff<burn::backend::LibTorch>;
                    let $devs = vec![burn::backend::libtorch::LibTorchDevice::Cpu; count];
                    $body
                }
                _ => {
                    type $ad = burn::backend::Autodiff<burn_flex::Flex>;
                    let $devs = vec![burn_flex::FlexDevice; count];
                    $body
                }
            },
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
            // serde's names (configs) are the same.
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.name())
            );
        }
        assert!("metal".parse::<BackendKind>().is_err());
        assert!(BackendKind::Flex.check().is_ok());
    }

    #[test]
    fn missing_backends_fail_with_a_message_not_a_panic() {
        #[cfg(not(feature = "cuda"))]
        assert!(
            BackendKind::Cuda
                .check()
                .unwrap_err()
                .to_string()
                .contains("--features cuda")
        );
        // With the feature but without a GPU the device check answers instead.
        if cfg!(feature = "cuda") && cuda_driver_present().is_err() {
            let err = BackendKind::Cuda.check().unwrap_err().to_string();
            assert!(err.contains("--backend flex"), "{err}");
        }
    }
}
