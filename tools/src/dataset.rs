//! `fer dataset stats|import|split`: the folders the trainer reads.
//!
//! * A labeled set is an ImageFolder: `DIR/<class>/*.png|jpg` (FER2013 comes that way).
//! * An unlabeled pool is a flat folder of images.
//! * A collect folder is what `fer collect` writes (`records.jsonl` + `crops/`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use firmware_config::image_folder::{list_image_folder, list_images};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::collect::{self, RECORDS_FILE};
use crate::error::{Error, Result};

fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    list_images(dir).map_err(|e| Error::io("listing", dir, e))
}

/// Counts of a dataset folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Images per class (ImageFolder), or one entry `"(unlabeled)"` for a flat folder.
    pub per_class: BTreeMap<String, usize>,
    /// Records of a collect folder (`records.jsonl`), if it is one.
    pub collected_records: Option<usize>,
    /// Records per device of a collect folder.
    pub per_device: BTreeMap<String, usize>,
}

impl Stats {
    /// All images.
    pub fn total(&self) -> usize {
        self.per_class.values().sum()
    }
}

/// Counts the images of an ImageFolder (or flat folder) and the records of a collect folder.
pub fn stats(dir: &Path) -> Result<Stats> {
    let mut stats = Stats::default();
    let records = dir.join(RECORDS_FILE);
    if records.is_file() {
        let lines = collect::read_records(&records)?;
        stats.collected_records = Some(lines.len());
        for line in lines {
            *stats.per_device.entry(line.device_id).or_default() += 1;
        }
        return Ok(stats);
    }
    let flat = images_in(dir)?;
    if !flat.is_empty() {
        stats.per_class.insert("(unlabeled)".into(), flat.len());
    }
    let classes = list_image_folder(dir).map_err(|e| Error::io("listing", dir, e))?;
    for class in classes {
        stats.per_class.insert(class.name, class.images.len());
    }
    if stats.per_class.is_empty() {
        return Err(Error::file(
            dir,
            "holds no images: expected DIR/<class>/*.png|jpg, a flat folder of images, or a `fer collect` folder",
        ));
    }
    Ok(stats)
}

/// Copies the crops of a collect folder into an unlabeled pool (file name = record id, so a
/// second import adds nothing twice). Returns (copied, already there).
pub fn import_collected(collected: &Path, pool: &Path) -> Result<(usize, usize)> {
    let lines = collect::read_records(&collected.join(RECORDS_FILE))?;
    fs::create_dir_all(pool).map_err(|e| Error::io("creating", pool, e))?;
    let (mut copied, mut present) = (0, 0);
    for line in lines {
        let target = pool.join(format!("{}.png", line.id));
        if target.exists() {
            present += 1;
            continue;
        }
        let source = collected.join(&line.crop);
        let tmp = pool.join(format!(".{}.png.tmp", line.id));
        fs::copy(&source, &tmp).map_err(|e| Error::io("copying", &source, e))?;
        fs::rename(&tmp, &target).map_err(|e| Error::io("renaming into place", &target, e))?;
        copied += 1;
    }
    Ok((copied, present))
}

/// Splits an ImageFolder into `out/train/<class>` and `out/val/<class>`. Each image's side
/// depends only on its file name and `seed` (a hash), so adding images never moves old ones
/// between train and val. Returns (train, val) counts.
pub fn split(from: &Path, out: &Path, val_fraction: f64, seed: u64) -> Result<(usize, usize)> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::invalid(
            "--val",
            format!("{val_fraction} is outside [0, 1)"),
        ));
    }
    let stats = stats(from)?;
    if stats.per_class.contains_key("(unlabeled)") || stats.collected_records.is_some() {
        return Err(Error::file(
            from,
            "is not an ImageFolder (DIR/<class>/*.png|jpg): only labeled sets can be split",
        ));
    }
    let (mut train, mut val) = (0, 0);
    for class in stats.per_class.keys() {
        for side in ["train", "val"] {
            let dir = out.join(side).join(class);
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        }
        for image in images_in(&from.join(class))? {
            let name = image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut hasher = Sha256::new();
            hasher.update(seed.to_le_bytes());
            hasher.update(class.as_bytes());
            hasher.update(name.as_bytes());
            let draw = u64::from_le_bytes(hasher.finalize()[..8].try_into().unwrap_or_default())
                as f64
                / u64::MAX as f64;
            let side = if draw < val_fraction { "val" } else { "train" };
            let target = out.join(side).join(class).join(&name);
            fs::copy(&image, &target).map_err(|e| Error::io("copying", &image, e))?;
            if side == "val" { val += 1 } else { train += 1 }
        }
    }
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_folder(root: &Path, per_class: &[(&str, usize)]) {
        for (class, n) in per_class {
            fs::create_dir_all(root.join(class)).unwrap();
            for i in 0..*n {
                let img = image::GrayImage::from_pixel(4, 4, image::Luma([i as u8]));
                img.save(root.join(class).join(format!("{i:03}.png")))
                    .unwrap();
            }
        }
    }

    #[test]
    fn stats_count_classes_and_refuse_empty_folders() {
        let tmp = tempfile::tempdir().unwrap();
        image_folder(tmp.path(), &[("happy", 5), ("sad", 3)]);
        let stats = stats(tmp.path()).unwrap();
        assert_eq!(
            stats.per_class,
            BTreeMap::from([("happy".into(), 5), ("sad".into(), 3)])
        );
        assert_eq!(stats.total(), 8);
        let empty = tempfile::tempdir().unwrap();
        let err = super::stats(empty.path()).unwrap_err().to_string();
        assert!(err.contains("holds no images"), "{err}");
    }

    #[test]
    fn split_is_stable_when_images_are_added() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("labeled");
        image_folder(&from, &[("happy", 200), ("sad", 100)]);
        let (train, val) = split(&from, &tmp.path().join("a"), 0.2, 7).unwrap();
        assert_eq!(train + val, 300);
        assert!((40..=80).contains(&val), "val {val} is far from 20% of 300");
        image_folder(&from, &[("happy", 260)]);
        split(&from, &tmp.path().join("b"), 0.2, 7).unwrap();
        let old_val = images_in(&tmp.path().join("a/val/happy")).unwrap();
        for image in old_val {
            let name = image.file_name().unwrap();
            assert!(
                tmp.path().join("b/val/happy").join(name).exists(),
                "{name:?} moved sides"
            );
        }
        assert!(split(&from, &tmp.path().join("c"), 1.5, 7).is_err());
    }
}
