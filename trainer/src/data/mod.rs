//! Datasets: labeled ImageFolders and FER2013 CSV files, unlabeled folders, field-log segments;
//! the label budget; decoding; batches built by background threads.
//!
//! Every image is decoded once, by a pool of threads, when a dataset is loaded (unreadable
//! files are skipped and counted, or fail under `strict`); during training, background
//! threads ([`loader`]) augment and preprocess the batches ahead of the model, so the model
//! never waits on decoding or augmentation. Preprocessing (resize, channels, normalisation,
//! layout) always goes through [`Preprocessing::apply_into`], the implementation the board
//! runs too.

pub mod augment;
pub mod loader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use firmware_config::image_folder::{self, IMAGE_EXTENSIONS, list_images_recursive};
use firmware_config::manifest::Preprocessing;
use firmware_config::preprocess::{ImageBuf, PixelFormat};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The FER2013 expressions, in the CSV's `emotion` index order.
pub const FER2013_CSV_CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

/// Where labeled images come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LabeledSource {
    /// `root/<class>/*.{jpg,jpeg,png}`; classes are the sub-folder names, sorted.
    ImageFolder {
        /// The root folder.
        path: PathBuf,
    },
    /// The FER2013 CSV (`emotion,pixels,Usage`), rows of one `Usage` (e.g. `Training`,
    /// `PublicTest`); class names are [`FER2013_CSV_CLASSES`].
    Fer2013Csv {
        /// The CSV file.
        path: PathBuf,
        /// Only rows whose `Usage` column equals this.
        usage: String,
    },
}

impl LabeledSource {
    /// The folder or file.
    pub fn path(&self) -> &Path {
        match self {
            LabeledSource::ImageFolder { path } | LabeledSource::Fer2013Csv { path, .. } => path,
        }
    }

    /// A source from a path: a `.csv` file is FER2013 (with `usage`), anything else an
    /// ImageFolder.
    pub fn from_path(path: impl Into<PathBuf>, usage: &str) -> Self {
        let path = path.into();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            LabeledSource::Fer2013Csv {
                path,
                usage: usage.to_string(),
            }
        } else {
            LabeledSource::ImageFolder { path }
        }
    }
}

/// How many labeled images training may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LabelBudget {
    /// Every labeled image.
    #[default]
    All,
    /// This many images of every class (chosen at random with the seed).
    PerClass(usize),
    /// This fraction of every class (at least one image each).
    Fraction(f64),
}

/// Where a sample's pixels are.
#[derive(Clone, Debug)]
pub enum SampleSource {
    /// An image file, decoded at load time.
    File(PathBuf),
    /// Pixels already in memory (a CSV row, a field-log crop).
    Pixels(Arc<ImageBuf>),
}

/// One image with an optional label.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Stable identifier: the file path, `file.csv#row` or `segment#record`.
    pub id: String,
    /// Where the pixels are.
    pub source: SampleSource,
    /// Class index, if known.
    pub label: Option<usize>,
}

/// A labeled dataset as listed (not yet decoded).
#[derive(Clone, Debug)]
pub struct LabeledSet {
    /// Class names, in label-index order.
    pub classes: Vec<String>,
    /// The samples, all labeled.
    pub samples: Vec<Sample>,
}

impl LabeledSet {
    /// Number of samples of each class.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            if let Some(label) = s.label {
                counts[label] += 1;
            }
        }
        counts
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::dataset(
            dir,
            "does not exist or is not a folder; check the path",
        ));
    }
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io("listing", dir, e))?
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| Error::io("listing", dir, e))
        })
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// Lists an ImageFolder by the contract's one listing
/// ([`firmware_config::image_folder::list_image_folder`]: class order = label order). With
/// `classes`, the folder must only contain those classes (e.g. a validation folder must match
/// the training classes); without, the sorted sub-folder names become the classes.
pub fn list_image_folder(root: &Path, classes: Option<&[String]>) -> Result<LabeledSet> {
    if !root.is_dir() {
        return Err(Error::dataset(
            root,
            "does not exist or is not a folder; check the path",
        ));
    }
    let folders =
        image_folder::list_image_folder(root).map_err(|e| Error::io("listing", root, e))?;
    if folders.is_empty() {
        return Err(Error::dataset(
            root,
            "no class folders: an ImageFolder is root/<class>/<image>.jpg|png",
        ));
    }
    let names: Vec<String> = folders.iter().map(|f| f.name.clone()).collect();
    let classes: Vec<String> = match classes {
        Some(known) => {
            if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
                return Err(Error::dataset(
                    root.join(unknown),
                    format!(
                        "unknown class folder {unknown:?}; the model's classes are {known:?} \
                         (rename or remove the folder)"
                    ),
                ));
            }
            known.to_vec()
        }
        None => names.clone(),
    };
    let mut samples = Vec::new();
    for folder in folders {
        let label = classes
            .iter()
            .position(|c| *c == folder.name)
            .expect("checked above");
        for path in folder.images {
            samples.push(Sample {
                id: path.display().to_string(),
                source: SampleSource::File(path),
                label: Some(label),
            });
        }
    }
    if samples.is_empty() {
        return Err(Error::dataset(
            root,
            format!(
                "the class folders {names:?} hold no images ({})",
                IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    Ok(LabeledSet { classes, samples })
}

/// Reads a FER2013 CSV (`emotion,pixels,Usage`; 48x48 grayscale as 2304 space-separated
/// values), keeping the rows whose usage is `usage`.
pub fn read_fer2013_csv(path: &Path, usage: &str) -> Result<LabeledSet> {
    if !path.is_file() {
        return Err(Error::dataset(path, "does not exist; check the path"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or_default();
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let find =
        |name: &str| {
            columns.iter().position(|c| c.eq_ignore_ascii_case(name)).ok_or_else(|| {
            Error::dataset(
                path,
                format!("header {header:?} has no {name:?} column (expected emotion,pixels,Usage)"),
            )
        })
        };
    let (emotion_col, pixels_col, usage_col) = (find("emotion")?, find("pixels")?, find("Usage")?);
    let mut samples = Vec::new();
    for (number, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let row_err =
            |reason: String| Error::dataset(path, format!("line {}: {reason}", number + 1));
        if fields.len() != columns.len() {
            return Err(row_err(format!(
                "{} fields, expected {}",
                fields.len(),
                columns.len()
            )));
        }
        if fields[usage_col] != usage {
            continue;
        }
        let emotion: usize = fields[emotion_col]
            .parse()
            .ok()
            .filter(|e| *e < FER2013_CSV_CLASSES.len())
            .ok_or_else(|| row_err(format!("emotion {:?} is not 0..=6", fields[emotion_col])))?;
        let pixels = fields[pixels_col]
            .split_ascii_whitespace()
            .map(|v| v.parse::<u8>())
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|e| row_err(format!("pixels: {e}")))?;
        let side = (pixels.len() as f64).sqrt() as u32;
        let image = ImageBuf::new(side, side, PixelFormat::Gray8, pixels)
            .map_err(|e| row_err(format!("pixels do not form a square image: {e}")))?;
        samples.push(Sample {
            id: format!("{}#{}", path.display(), number + 1),
            source: SampleSource::Pixels(Arc::new(image)),
            label: Some(emotion),
        });
    }
    if samples.is_empty() {
        return Err(Error::dataset(
            path,
            format!(
                "no rows with Usage {usage:?} (FER2013 uses Training, PublicTest, PrivateTest)"
            ),
        ));
    }
    Ok(LabeledSet {
        classes: FER2013_CSV_CLASSES.iter().map(|s| s.to_string()).collect(),
        samples,
    })
}

/// Lists a labeled source. With `classes`, labels are mapped onto those names by name and a
/// class that is not among them is an error.
pub fn list_labeled(source: &LabeledSource, classes: Option<&[String]>) -> Result<LabeledSet> {
    let set = match source {
        LabeledSource::ImageFolder { path } => return list_image_folder(path, classes),
        LabeledSource::Fer2013Csv { path, usage } => read_fer2013_csv(path, usage)?,
    };
    let Some(known) = classes else {
        return Ok(set);
    };
    let map: Vec<usize> = set
        .classes
        .iter()
        .map(|name| {
            known.iter().position(|k| k == name).ok_or_else(|| {
                Error::dataset(
                    source.path(),
                    format!("class {name:?} is not among the model's classes {known:?}"),
                )
            })
        })
        .collect::<Result<_>>()?;
    Ok(LabeledSet {
        classes: known.to_vec(),
        samples: set
            .samples
            .into_iter()
            .map(|s| Sample {
                label: s.label.map(|l| map[l]),
                ..s
            })
            .collect(),
    })
}

/// Lists every image under `root`, recursively, as unlabeled samples.
pub fn list_unlabeled_folder(root: &Path) -> Result<Vec<Sample>> {
    let out: Vec<Sample> = list_images_recursive(root)
        .map_err(|e| Error::io("listing", root, e))?
        .into_iter()
        .map(|path| Sample {
            id: path.display().to_string(),
            source: SampleSource::File(path),
            label: None,
        })
        .collect();
    if out.is_empty() {
        return Err(Error::dataset(
            root,
            format!(
                "no images ({}) anywhere under this folder",
                IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// Reads the field-log segments under `root` (recursively; every file starting with the
/// segment magic) and returns their face crops as unlabeled samples, with the number of
/// damaged frames that were skipped.
pub fn list_field_segments(root: &Path) -> Result<(Vec<Sample>, usize)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for path in read_dir_sorted(dir)? {
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut samples = Vec::new();
    let mut skipped = 0;
    let mut segments = 0;
    for path in files {
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        if !bytes.starts_with(&firmware_config::segment::MAGIC) {
            continue;
        }
        segments += 1;
        let scan = firmware_config::segment::read_segment(&bytes).map_err(|e| Error::Segment {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        skipped += scan.skipped.len();
        for (i, record) in scan.records.into_iter().enumerate() {
            record.crop.validate().map_err(|e| Error::Segment {
                path: path.clone(),
                reason: format!("record {i}: {e}"),
            })?;
            samples.push(Sample {
                id: format!("{}#{i}", path.display()),
                source: SampleSource::Pixels(Arc::new(record.crop)),
                label: None,
            });
        }
    }
    if segments == 0 {
        return Err(Error::dataset(
            root,
            "no field-log segments here (files starting with the FERL magic, as `fer collect` \
             writes them)",
        ));
    }
    Ok((samples, skipped))
}

/// Splits a labeled set by the budget (with `seed`): the chosen samples stay labeled, the rest
/// become unlabeled with their labels kept hidden (to measure pseudo-label accuracy).
pub fn apply_budget(
    set: &LabeledSet,
    budget: LabelBudget,
    seed: u64,
    origin: &Path,
) -> Result<(Vec<Sample>, Vec<Sample>)> {
    let mut by_class: Vec<Vec<&Sample>> = vec![Vec::new(); set.classes.len()];
    for s in &set.samples {
        by_class[s.label.expect("labeled set")].push(s);
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6c61_6265_6c73);
    let (mut labeled, mut hidden) = (Vec::new(), Vec::new());
    for (class, mut members) in by_class.into_iter().enumerate() {
        let take = match budget {
            LabelBudget::All => members.len(),
            LabelBudget::PerClass(n) => {
                if n > members.len() {
                    return Err(Error::dataset(
                        origin,
                        format!(
                            "class {:?} has {} labeled images but --labels-per-class asks for {n}; \
                             lower the budget or add images",
                            set.classes[class],
                            members.len()
                        ),
                    ));
                }
                n
            }
            LabelBudget::Fraction(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(Error::config(
                        "data.budget",
                        format!("labeled fraction {f} must lie in (0, 1]"),
                    ));
                }
                ((members.len() as f64 * f).round() as usize).clamp(1, members.len().max(1))
            }
        };
        if members.is_empty() {
            return Err(Error::dataset(
                origin,
                format!(
                    "class {:?} has no labeled images; every class needs at least one",
                    set.classes[class]
                ),
            ));
        }
        members.shuffle(&mut rng);
        labeled.extend(members[..take].iter().map(|s| (*s).clone()));
        hidden.extend(members[take..].iter().map(|s| (*s).clone()));
    }
    Ok((labeled, hidden))
}

/// Decoded images of a dataset, shared by the training threads.
#[derive(Debug, Default)]
pub struct ImageStore {
    /// The decoded samples.
    pub images: Vec<Arc<ImageBuf>>,
    /// Known labels (`None` for truly unlabeled images).
    pub labels: Vec<Option<usize>>,
    /// Identifiers, parallel to `images`.
    pub ids: Vec<String>,
    /// Files that could not be decoded: `(path, reason)`.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl ImageStore {
    /// Number of decoded samples.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// Decodes one image file by the toolkit's one rule
/// ([`ImageBuf::from_decoded_rgba`]): images without colour stay one gray channel, colour
/// images stay RGB, exactly as the board decodes them.
pub fn decode_file(path: &Path) -> Result<ImageBuf> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let img = image::load_from_memory(&bytes).map_err(|e| bad(e.to_string()))?;
    let has_color = img.color().has_color();
    let rgba = img.into_rgba8();
    ImageBuf::from_decoded_rgba(rgba.width(), rgba.height(), has_color, rgba.as_raw())
        .map_err(|e| bad(e.to_string()))
}

/// Decodes `samples` on `threads` background threads. Unreadable files are skipped and listed
/// in [`ImageStore::unreadable`], or, with `strict`, are an error.
pub fn decode_all(samples: &[Sample], threads: usize, strict: bool) -> Result<ImageStore> {
    let threads = threads.clamp(1, 64).min(samples.len().max(1));
    let (tx, rx) = mpsc::channel::<(usize, Result<Arc<ImageBuf>>)>();
    let chunk = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (part, slice) in samples.chunks(chunk).enumerate() {
            let tx = tx.clone();
            scope.spawn(move || {
                for (i, sample) in slice.iter().enumerate() {
                    let decoded = match &sample.source {
                        SampleSource::Pixels(px) => Ok(px.clone()),
                        SampleSource::File(path) => decode_file(path).map(Arc::new),
                    };
                    if tx.send((part * chunk + i, decoded)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    drop(tx);
    let mut results: BTreeMap<usize, Result<Arc<ImageBuf>>> = rx.into_iter().collect();
    let mut store = ImageStore::default();
    for (i, sample) in samples.iter().enumerate() {
        match results.remove(&i).expect("every sample is decoded once") {
            Ok(img) => {
                store.images.push(img);
                store.labels.push(sample.label);
                store.ids.push(sample.id.clone());
            }
            Err(err) if strict => return Err(err),
            Err(err) => {
                let path = match &sample.source {
                    SampleSource::File(p) => p.clone(),
                    SampleSource::Pixels(_) => PathBuf::from(&sample.id),
                };
                store.unreadable.push((path, err.to_string()));
            }
        }
    }
    Ok(store)
}

/// Preprocesses (no augmentation) every image of `store` into one `[N, C, H, W]` buffer.
pub fn preprocess_all(store: &ImageStore, pre: &Preprocessing) -> Result<Vec<f32>> {
    let len = pre.input_len();
    let mut out = vec![0.0; store.len() * len];
    for (img, slot) in store.images.iter().zip(out.chunks_mut(len)) {
        pre.apply_into(&img.view(), slot)
            .map_err(|e| Error::config("preprocessing", e.to_string()))?;
    }
    Ok(out)
}

/// Writes the chosen labeled sample ids, one a line, to `path`.
pub fn write_id_list(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut text = String::new();
    for s in samples {
        text.push_str(&s.id);
        text.push('\t');
        text.push_str(&s.label.map(|l| l.to_string()).unwrap_or_default());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| Error::io("writing", path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a tiny ImageFolder with `per_class` PNGs of 8x8 for each class name.
    pub(crate) fn write_folder(root: &Path, classes: &[&str], per_class: usize) {
        for (c, name) in classes.iter().enumerate() {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img = image::GrayImage::from_fn(8, 8, |x, y| {
                    image::Luma([((x + y) as usize * 10 + c * 40 + i) as u8])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }

    #[test]
    fn image_folder_lists_classes_and_rejects_problems() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &["happy", "sad"], 3);
        std::fs::write(dir.path().join("happy/notes.txt"), "x").unwrap();
        let set = list_image_folder(dir.path(), None).unwrap();
        assert_eq!(set.classes, vec!["happy", "sad"]);
        assert_eq!(set.counts(), vec![3, 3]);
        // Unknown class folder against a known class list.
        let known = vec!["happy".to_string()];
        let err = list_image_folder(dir.path(), Some(&known))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown class folder \"sad\""), "{err}");
        // Empty folders.
        let empty = tempfile::tempdir().unwrap();
        let err = list_image_folder(empty.path(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no class folders"), "{err}");
        std::fs::create_dir(empty.path().join("angry")).unwrap();
        let err = list_image_folder(empty.path(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hold no images"), "{err}");
        assert!(list_unlabeled_folder(empty.path()).is_err());
    }

    #[test]
    fn unreadable_images_are_counted_or_fatal_when_strict() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &["a", "b"], 2);
        std::fs::write(dir.path().join("a/broken.jpg"), b"not a jpeg").unwrap();
        let set = list_image_folder(dir.path(), None).unwrap();
        assert_eq!(set.samples.len(), 5);
        let store = decode_all(&set.samples, 2, false).unwrap();
        assert_eq!(store.len(), 4);
        assert_eq!(store.unreadable.len(), 1);
        assert!(store.unreadable[0].0.ends_with("a/broken.jpg"));
        let err = decode_all(&set.samples, 2, true).unwrap_err().to_string();
        assert!(err.contains("broken.jpg"), "{err}");
        // Order and labels survive the parallel decode.
        assert_eq!(store.labels, vec![Some(0), Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn unlabeled_folders_are_recursive() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(&dir.path().join("round1"), &["x", "y"], 2);
        let samples = list_unlabeled_folder(dir.path()).unwrap();
        assert_eq!(samples.len(), 4);
        assert!(samples.iter().all(|s| s.label.is_none()));
    }

    #[test]
    fn budget_per_class_and_fraction() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &["a", "b", "c"], 5);
        let set = list_image_folder(dir.path(), None).unwrap();
        let (labeled, hidden) =
            apply_budget(&set, LabelBudget::PerClass(2), 1, dir.path()).unwrap();
        assert_eq!(labeled.len(), 6);
        assert_eq!(hidden.len(), 9);
        assert!(
            hidden.iter().all(|s| s.label.is_some()),
            "hidden labels are kept"
        );
        let (again, _) = apply_budget(&set, LabelBudget::PerClass(2), 1, dir.path()).unwrap();
        let ids = |v: &[Sample]| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&labeled), ids(&again), "same seed, same choice");
        let (other, _) = apply_budget(&set, LabelBudget::PerClass(2), 2, dir.path()).unwrap();
        assert_ne!(ids(&labeled), ids(&other));
        let (frac, _) = apply_budget(&set, LabelBudget::Fraction(0.4), 1, dir.path()).unwrap();
        assert_eq!(frac.len(), 6);
        let err = apply_budget(&set, LabelBudget::PerClass(9), 1, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("class \"a\" has 5") && err.contains("asks for 9"),
            "{err}"
        );
        let file = dir.path().join("labeled.txt");
        write_id_list(&file, &labeled).unwrap();
        assert_eq!(std::fs::read_to_string(file).unwrap().lines().count(), 6);
    }

    #[test]
    fn fer2013_csv_rows_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fer.csv");
        let px = |v: u8| vec![v.to_string(); 4].join(" ");
        std::fs::write(
            &path,
            format!(
                "emotion,pixels,Usage\n3,{},Training\n6,{},Training\n0,{},PublicTest\n",
                px(1),
                px(2),
                px(3)
            ),
        )
        .unwrap();
        let set = read_fer2013_csv(&path, "Training").unwrap();
        assert_eq!(set.samples.len(), 2);
        assert_eq!(set.samples[1].label, Some(6));
        // Mapped onto alphabetical folder classes by name.
        let alphabetical: Vec<String> = {
            let mut v: Vec<String> = FER2013_CSV_CLASSES.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        let source = LabeledSource::from_path(&path, "Training");
        let mapped = list_labeled(&source, Some(&alphabetical)).unwrap();
        assert_eq!(mapped.samples[1].label, Some(4), "neutral");
        let store = decode_all(&mapped.samples, 1, true).unwrap();
        assert_eq!((store.images[0].width, store.images[0].pixels[0]), (2, 1));
        std::fs::write(&path, "emotion,pixels,Usage\n9,1 2 3 4,Training\n").unwrap();
        let err = read_fer2013_csv(&path, "Training").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("fer.csv"), "{err}");
        std::fs::write(&path, "a,b\n").unwrap();
        assert!(
            read_fer2013_csv(&path, "Training")
                .unwrap_err()
                .to_string()
                .contains("emotion")
        );
    }

    #[test]
    fn field_segments_become_unlabeled_crops() {
        use firmware_config::record::FieldRecord;
        use firmware_config::segment::{SegmentHeader, encode_header, encode_record};
        let dir = tempfile::tempdir().unwrap();
        let header = SegmentHeader {
            device_id: "board-1".into(),
            created_ms: 1,
            sequence: 0,
        };
        let mut bytes = encode_header(&header).unwrap();
        for i in 0..3u8 {
            let crop = ImageBuf::new(4, 4, PixelFormat::Gray8, vec![i; 16]).unwrap();
            let record = FieldRecord {
                timestamp_ms: i as u64,
                device_id: "board-1".into(),
                model_sha256: firmware_config::Sha256Digest([0; 32]),
                frame_seq: i as u64,
                track_id: 0,
                face: Default::default(),
                probabilities: vec![0.5, 0.5],
                crop,
                frame: None,
            };
            bytes.extend(encode_record(&record).unwrap());
        }
        std::fs::create_dir(dir.path().join("board-1")).unwrap();
        std::fs::write(dir.path().join("board-1/seg-0.ferlog"), &bytes).unwrap();
        std::fs::write(dir.path().join("README"), "not a segment").unwrap();
        let (samples, skipped) = list_field_segments(dir.path()).unwrap();
        assert_eq!((samples.len(), skipped), (3, 0));
        let store = decode_all(&samples, 2, true).unwrap();
        assert_eq!(store.images[2].pixels[0], 2);
        let empty = tempfile::tempdir().unwrap();
        assert!(list_field_segments(empty.path()).is_err());
    }
}
