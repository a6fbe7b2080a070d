//! Device configs on the workstation: TOML for people, the flash encoding for boards
//! (`fer config encode|decode|check`).

use std::fs;
use std::path::Path;

use firmware_config::config::DeviceConfig;
use firmware_config::flash;
use firmware_config::manifest::ModelManifest;

use crate::error::{Error, Result};

/// Reads and validates a TOML device config; errors name the file, the field and the fix.
pub fn load_toml(path: &Path) -> Result<DeviceConfig> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading the config", path, e))?;
    let config: DeviceConfig = toml::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format!("not a valid device config: {e}(`fer config template` prints a complete one)"),
        )
    })?;
    config
        .validate()
        .map_err(|e| Error::file(path, e.to_string()))?;
    Ok(config)
}

/// Reads and validates a device config in flash encoding.
pub fn load_binary(path: &Path) -> Result<DeviceConfig> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading the config", path, e))?;
    let config = flash::decode_config(&bytes)
        .map_err(|e| Error::file(path, format!("not a flashable device config: {e}")))?;
    config
        .validate()
        .map_err(|e| Error::file(path, e.to_string()))?;
    Ok(config)
}

/// Reads a config in either form: the flash encoding (recognised by its magic) or TOML.
pub fn load_any(path: &Path) -> Result<DeviceConfig> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading the config", path, e))?;
    if bytes.starts_with(&flash::CONFIG_MAGIC) {
        load_binary(path)
    } else {
        load_toml(path)
    }
}

/// The config as TOML text.
pub fn to_toml(config: &DeviceConfig) -> Result<String> {
    toml::to_string_pretty(config)
        .map_err(|e| Error::invalid("device config", format!("cannot write TOML: {e}")))
}

/// The config in flash encoding.
pub fn to_binary(config: &DeviceConfig) -> Result<Vec<u8>> {
    flash::encode_config(config).map_err(|e| Error::invalid("device config", e.to_string()))
}

/// TOML file -> flash encoding file.
pub fn encode(toml_path: &Path, out: &Path) -> Result<DeviceConfig> {
    let config = load_toml(toml_path)?;
    fs::write(out, to_binary(&config)?).map_err(|e| Error::io("writing", out, e))?;
    Ok(config)
}

/// Flash encoding file -> TOML text.
pub fn decode(bin_path: &Path) -> Result<String> {
    to_toml(&load_binary(bin_path)?)
}

/// Checks that the classes a config sets thresholds for are classes of the model.
pub fn check_against_manifest(
    config: &DeviceConfig,
    config_path: &Path,
    manifest: &ModelManifest,
    manifest_path: &Path,
) -> Result<()> {
    edge::bundle::check_classes(config, manifest).map_err(|reason| Error::Mismatch {
        reason: format!(
            "{} does not fit the model of {}: {reason}",
            config_path.display(),
            manifest_path.display()
        ),
    })
}

/// Reads and validates a model manifest (JSON, as `fer-train export` writes it).
pub fn load_manifest(path: &Path) -> Result<ModelManifest> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading the manifest", path, e))?;
    let manifest: ModelManifest = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("not a model manifest: {e}")))?;
    manifest
        .validate()
        .map_err(|e| Error::file(path, e.to_string()))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::config::ClassThreshold;

    fn full_config() -> DeviceConfig {
        let mut config = DeviceConfig::default();
        config.device.id = "lab-7".into();
        config
            .classifier
            .class_thresholds
            .push(ClassThreshold::new("happy", 0.8));
        config.signing_public_key = Some(firmware_config::PublicKey([7; 32]));
        config
    }

    #[test]
    fn toml_binary_toml_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("board.toml");
        fs::write(&toml_path, to_toml(&full_config()).unwrap()).unwrap();
        let bin = dir.path().join("board.bin");
        assert_eq!(encode(&toml_path, &bin).unwrap(), full_config());
        assert_eq!(load_any(&bin).unwrap(), full_config());
        let back: DeviceConfig = toml::from_str(&decode(&bin).unwrap()).unwrap();
        assert_eq!(back, full_config());
    }

    #[test]
    fn the_template_prints_floats_as_written() {
        let text = to_toml(&DeviceConfig::default()).unwrap();
        assert!(text.contains("score_threshold = 0.7\n"), "{text}");
        assert!(text.contains("nms_iou = 0.3\n"), "{text}");
        let back: DeviceConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, DeviceConfig::default());
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        fs::write(&path, "[camera]\nwidth = 0\n").unwrap();
        let err = load_toml(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains("camera.width"),
            "{err}"
        );

        fs::write(&path, "[camera]\nwidht = 640\n").unwrap();
        let err = load_toml(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("widht"), "{err}");

        let bin = dir.path().join("bad.bin");
        let mut bytes = to_binary(&full_config()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&bin, bytes).unwrap();
        let err = load_any(&bin).unwrap_err().to_string();
        assert!(err.contains("bad.bin") && err.contains("CRC"), "{err}");
    }
}
