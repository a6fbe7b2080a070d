//! Locating the real data in `../shared` for tests.
//!
//! The data (FER2013, UltraFace, the mini-Xception peer, real photos) is never copied into
//! the repository. Tests ask for a path relative to the shared folder:
//!
//! * `FER_SHARED_DIR` names the folder; otherwise it is `../shared` beside the workspace.
//! * Where a path is missing, [`shared_path`] returns `None` and prints why, so a user's fresh
//!   clone still passes; with `FER_REQUIRE_SHARED=1` (set by `.ci/run`) it panics instead,
//!   so CI can never silently skip a real-data test.
//!
//! ```
//! if let Some(photo) = testdata::shared_path("images/astronaut.png") {
//!     assert!(photo.ends_with("images/astronaut.png"));
//! }
//! ```

use std::path::{Path, PathBuf};

use firmware_config::manifest::{
    ColorChannels, ModelManifest, Normalization, Preprocessing, ResizeFilter, TensorLayout,
};

/// Environment variable naming the shared data folder.
pub const SHARED_DIR_VAR: &str = "FER_SHARED_DIR";
/// Environment variable that turns a missing shared file into a test failure.
pub const REQUIRE_VAR: &str = "FER_REQUIRE_SHARED";

/// The shared data folder: `$FER_SHARED_DIR`, else `../shared` beside the workspace root.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os(SHARED_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("..").join("shared"),
    }
}

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testdata lives one level below the workspace root")
        .to_path_buf()
}

/// `true` when missing shared data must fail the test (CI).
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The path of `relative` inside the shared folder, or `None` (with a note on stderr) when it
/// is absent and not required.
///
/// # Panics
/// When the path is absent and `FER_REQUIRE_SHARED=1`.
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    let path = shared_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} not found: set {SHARED_DIR_VAR} to the folder holding the shared data \
         (see DATA.md), or put it at ../shared beside the repository",
        path.display()
    );
    assert!(!required(), "{why} ({REQUIRE_VAR}=1, so this is a failure)");
    eprintln!("skipping: {why}");
    None
}

/// The file name of the mini-Xception peer in `models/peer`.
pub const PEER_MODEL: &str = "fer_mini_xception_nhwc.onnx";

/// The mini-Xception peer's ONNX file in the shared folder, as [`shared_path`] finds it.
pub fn peer_model() -> Option<PathBuf> {
    shared_path(&format!("models/peer/{PEER_MODEL}"))
}

/// The mini-Xception peer model as DATA.md describes it: NHWC gray 64x64, `x / 127.5 - 1`,
/// output `predictions` in Keras class order (not alphabetical). Hash and self-test are left
/// to the caller.
pub fn peer_manifest() -> ModelManifest {
    ModelManifest {
        model_file: PEER_MODEL.into(),
        input_name: "input".into(),
        output_name: "predictions".into(),
        logits_name: None,
        preprocessing: Preprocessing {
            input_width: 64,
            input_height: 64,
            channels: ColorChannels::Gray,
            layout: TensorLayout::Nhwc,
            crop_margin: 0.0,
            resize: ResizeFilter::Bilinear,
            normalization: Normalization::new(1.0 / 127.5, vec![1.0], vec![1.0]),
        },
        class_names: [
            "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
        ]
        .map(String::from)
        .to_vec(),
        ..ModelManifest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_none_unless_required() {
        let missing = "no/such/file/anywhere.bin";
        if required() {
            let caught = std::panic::catch_unwind(|| shared_path(missing));
            assert!(caught.is_err(), "a required missing path must panic");
        } else {
            assert_eq!(shared_path(missing), None);
        }
    }

    #[test]
    fn peer_manifest_is_valid() {
        peer_manifest().validate().unwrap();
    }

    #[test]
    fn root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").exists());
    }
}
