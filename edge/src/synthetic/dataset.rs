//! A labelled ImageFolder of synthetic face crops, written to disk.

use std::path::{Path, PathBuf};

use super::{Expression, SyntheticConfig, SyntheticFaces};
use crate::Error;
use crate::pixels::rgb_image;

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    /// The dataset's root folder.
    pub root: PathBuf,
    /// Images per class (in [`Expression::ALL`] order).
    pub per_class: Vec<(Expression, usize)>,
}

/// Writes a balanced, labelled ImageFolder: `root/<class>/<index>.png`, `per_class` crops of
/// each expression drawn with `config` (see [`SyntheticConfig::crops`]) and `seed`.
pub fn write_dataset(
    root: &Path,
    per_class: usize,
    config: &SyntheticConfig,
    seed: u64,
) -> Result<DatasetSummary, Error> {
    let mut faces = SyntheticFaces::new(config.clone(), seed)?;
    let mut written = Vec::new();
    for expression in Expression::ALL {
        let dir = root.join(expression.name());
        std::fs::create_dir_all(&dir)
            .map_err(|source| Error::io("creating the class folder", dir.clone(), source))?;
        for i in 0..per_class {
            let sample = faces.sample_with(expression);
            let path = dir.join(format!("{i:05}.png"));
            rgb_image(&sample.image)
                .save(&path)
                .map_err(|source| Error::Image {
                    path: path.clone(),
                    source,
                })?;
        }
        written.push((expression, per_class));
    }
    Ok(DatasetSummary {
        root: root.to_path_buf(),
        per_class: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_is_an_image_folder() {
        let dir = tempfile::tempdir().unwrap();
        let summary = write_dataset(dir.path(), 2, &SyntheticConfig::crops(32), 5).unwrap();
        assert_eq!(summary.per_class.len(), 5);
        for e in Expression::ALL {
            let img = image::open(dir.path().join(e.name()).join("00001.png")).unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
        }
    }
}
