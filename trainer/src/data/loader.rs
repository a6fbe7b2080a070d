//! Training batches, built ahead of the model by background threads.
//!
//! Every batch is a pure function of `(seed, step)` ([`make_batch`]): which samples it holds
//! (class-balanced labeled samples, uniformly drawn unlabeled ones) and how they are augmented.
//! So worker `w` of `W` simply builds steps `start + w, start + w + W, ...` into its own bounded channel and the
//! consumer reads the channels round-robin: batches arrive in step order, and a resumed run
//! sees exactly the batches an uninterrupted one would have seen.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use firmware_config::manifest::Preprocessing;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::ImageStore;
use super::augment::{Strength, augment};
use crate::error::{Error, Result};

/// The decoded training data.
#[derive(Debug)]
pub struct TrainSets {
    /// Labeled images (within the label budget).
    pub labeled: ImageStore,
    /// Unlabeled images: the rest of the labeled pool (labels hidden), unlabeled folders and
    /// field crops.
    pub unlabeled: ImageStore,
    /// Indices into `labeled` for every class.
    pub by_class: Vec<Vec<usize>>,
}

impl TrainSets {
    /// Groups the labeled images by class; every class must have at least one.
    pub fn new(labeled: ImageStore, unlabeled: ImageStore, classes: &[String]) -> Result<Self> {
        let mut by_class = vec![Vec::new(); classes.len()];
        for (i, label) in labeled.labels.iter().enumerate() {
            by_class[label.expect("labeled images carry labels")].push(i);
        }
        if let Some(c) = by_class.iter().position(Vec::is_empty) {
            return Err(Error::dataset(
                "labeled data",
                format!(
                    "class {:?} has no readable labeled image; class-balanced sampling needs \
                     at least one per class",
                    classes[c]
                ),
            ));
        }
        Ok(TrainSets {
            labeled,
            unlabeled,
            by_class,
        })
    }
}

/// How labeled samples are drawn.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// A uniform class, then a uniform member of it: every class equally often.
    #[default]
    Balanced,
    /// A uniform labeled sample: classes as often as the data has them.
    Natural,
}

/// How labeled samples are augmented.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LabeledAugmentation {
    /// Flip, rotation, scale, shift and random erasing ([`Strength::Fer`]).
    #[default]
    Fer,
    /// Flip and a small shift, the teacher's weak view ([`Strength::Weak`]).
    Weak,
}

impl std::str::FromStr for Sampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "balanced" => Ok(Sampling::Balanced),
            "natural" => Ok(Sampling::Natural),
            other => Err(Error::config(
                "data.sampling",
                format!("unknown sampling {other:?}; use balanced or natural"),
            )),
        }
    }
}

impl std::str::FromStr for LabeledAugmentation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fer" => Ok(LabeledAugmentation::Fer),
            "weak" => Ok(LabeledAugmentation::Weak),
            other => Err(Error::config(
                "data.labeled_augmentation",
                format!("unknown augmentation {other:?}; use fer or weak"),
            )),
        }
    }
}

impl LabeledAugmentation {
    fn strength(self) -> Strength {
        match self {
            LabeledAugmentation::Fer => Strength::Fer,
            LabeledAugmentation::Weak => Strength::Weak,
        }
    }
}

/// What a batch holds.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    /// Seed of the run.
    pub seed: u64,
    /// Labeled samples per batch.
    pub labeled_batch: usize,
    /// Unlabeled samples per batch (0: none).
    pub unlabeled_batch: usize,
    /// How labeled samples are drawn.
    pub sampling: Sampling,
    /// How labeled samples are augmented.
    pub augmentation: LabeledAugmentation,
}

/// One training step's inputs, preprocessed (`[N, C, H, W]` buffers).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The step this batch belongs to.
    pub step: u64,
    /// Weakly augmented labeled images.
    pub labeled: Vec<f32>,
    /// Their classes.
    pub labels: Vec<usize>,
    /// Weak views of the unlabeled images (for the teacher).
    pub weak: Vec<f32>,
    /// Strong views of the same images (for the student).
    pub strong: Vec<f32>,
    /// Hidden labels of the unlabeled images, where known.
    pub hidden: Vec<Option<usize>>,
}

impl Batch {
    /// Cuts the batch into `parts` equal shards, in order (one per data-parallel device). Both
    /// the labeled and the unlabeled part must divide evenly.
    pub fn split(self, parts: usize) -> Vec<Batch> {
        if parts == 1 {
            return vec![self];
        }
        let (nl, nu) = (self.labels.len() / parts, self.hidden.len() / parts);
        assert_eq!(
            nl * parts,
            self.labels.len(),
            "labeled batch divides evenly"
        );
        assert_eq!(
            nu * parts,
            self.hidden.len(),
            "unlabeled batch divides evenly"
        );
        let len = if self.labels.is_empty() {
            0
        } else {
            self.labeled.len() / self.labels.len()
        };
        let (l, u) = (nl * len, nu * len);
        (0..parts)
            .map(|k| Batch {
                step: self.step,
                labeled: self.labeled[k * l..(k + 1) * l].to_vec(),
                labels: self.labels[k * nl..(k + 1) * nl].to_vec(),
                weak: self.weak[k * u..(k + 1) * u].to_vec(),
                strong: self.strong[k * u..(k + 1) * u].to_vec(),
                hidden: self.hidden[k * nu..(k + 1) * nu].to_vec(),
            })
            .collect()
    }
}

/// A random stream for `(seed, step, stream)`, independent of every other triple (SplitMix64
/// finaliser over the mixed words).
pub fn step_rng(seed: u64, step: u64, stream: u64) -> StdRng {
    let mut z = seed
        .wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Stream ids of [`step_rng`].
pub mod streams {
    /// Labeled sampling and augmentation.
    pub const LABELED: u64 = 1;
    /// Unlabeled sampling and augmentation.
    pub const UNLABELED: u64 = 2;
    /// Random region dropout in the model.
    pub const MODEL: u64 = 3;
    /// Weak views for re-estimating the teacher's BatchNorm statistics.
    pub const CALIBRATION: u64 = 4;
}

fn preprocess(
    pre: &Preprocessing,
    img: &firmware_config::preprocess::ImageBuf,
    out: &mut [f32],
) -> Result<()> {
    pre.apply_into(&img.view(), out)
        .map_err(|e| Error::config("preprocessing", e.to_string()))
}

/// Builds the batch of `step` (deterministic in `plan.seed` and `step`).
pub fn make_batch(
    sets: &TrainSets,
    pre: &Preprocessing,
    plan: &BatchPlan,
    step: u64,
) -> Result<Batch> {
    let len = pre.input_len();
    let mut rng = step_rng(plan.seed, step, streams::LABELED);
    let mut labeled = vec![0.0; plan.labeled_batch * len];
    let mut labels = Vec::with_capacity(plan.labeled_batch);
    for slot in labeled.chunks_mut(len) {
        let index = match plan.sampling {
            Sampling::Balanced => {
                let class = rng.random_range(0..sets.by_class.len());
                let members = &sets.by_class[class];
                members[rng.random_range(0..members.len())]
            }
            Sampling::Natural => rng.random_range(0..sets.labeled.len()),
        };
        let img = augment(
            &sets.labeled.images[index],
            plan.augmentation.strength(),
            &mut rng,
        );
        preprocess(pre, &img, slot)?;
        labels.push(sets.labeled.labels[index].expect("labeled images carry labels"));
    }
    let count = if sets.unlabeled.is_empty() {
        0
    } else {
        plan.unlabeled_batch
    };
    let mut rng = step_rng(plan.seed, step, streams::UNLABELED);
    let mut weak = vec![0.0; count * len];
    let mut strong = vec![0.0; count * len];
    let mut hidden = Vec::with_capacity(count);
    for (w, s) in weak.chunks_mut(len).zip(strong.chunks_mut(len)) {
        let index = rng.random_range(0..sets.unlabeled.len());
        let original = &sets.unlabeled.images[index];
        preprocess(pre, &augment(original, Strength::Weak, &mut rng), w)?;
        preprocess(pre, &augment(original, Strength::Strong, &mut rng), s)?;
        hidden.push(sets.unlabeled.labels[index]);
    }
    Ok(Batch {
        step,
        labeled,
        labels,
        weak,
        strong,
        hidden,
    })
}

/// `count` weak views of training images (labeled and unlabeled alike, drawn uniformly),
/// preprocessed `[count, C, H, W]`: batch `index` of the BatchNorm re-estimation at `step`
/// (deterministic in `seed`, `step` and `index`).
pub fn weak_views(
    sets: &TrainSets,
    pre: &Preprocessing,
    seed: u64,
    step: u64,
    index: u64,
    count: usize,
) -> Result<Vec<f32>> {
    let len = pre.input_len();
    let mut rng = step_rng(seed ^ index.rotate_left(32), step, streams::CALIBRATION);
    let total = sets.labeled.len() + sets.unlabeled.len();
    let mut out = vec![0.0; count * len];
    for slot in out.chunks_mut(len) {
        let k = rng.random_range(0..total);
        let img = if k < sets.labeled.len() {
            &sets.labeled.images[k]
        } else {
            &sets.unlabeled.images[k - sets.labeled.len()]
        };
        preprocess(pre, &augment(img, Strength::Weak, &mut rng), slot)?;
    }
    Ok(out)
}

/// Builds batches `start..end` on background threads, in order.
#[derive(Debug)]
pub struct BatchLoader {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    start: u64,
    next: u64,
    end: u64,
}

impl BatchLoader {
    /// Starts `workers` threads (at least one), each keeping up to two batches ready.
    pub fn spawn(
        sets: Arc<TrainSets>,
        pre: Preprocessing,
        plan: BatchPlan,
        start: u64,
        end: u64,
        workers: usize,
    ) -> Self {
        let workers = workers.max(1) as u64;
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx): (SyncSender<Result<Batch>>, _) = sync_channel(2);
            let (sets, pre, plan) = (sets.clone(), pre.clone(), plan.clone());
            handles.push(std::thread::spawn(move || {
                let mut step = start + w;
                while step < end {
                    let batch = make_batch(&sets, &pre, &plan, step);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                    step += workers;
                }
            }));
            receivers.push(rx);
        }
        BatchLoader {
            receivers,
            handles,
            start,
            next: start,
            end,
        }
    }

    /// The next batch in step order, or `None` after the last step.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.end {
            return None;
        }
        let worker = (self.next - self.start) % self.receivers.len() as u64;
        let rx = &self.receivers[worker as usize];
        self.next += 1;
        Some(rx.recv().unwrap_or_else(|_| {
            Err(Error::dataset(
                "batch loader",
                "a background batch thread stopped unexpectedly",
            ))
        }))
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Closing the channels makes blocked workers return.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::preprocess::{ImageBuf, PixelFormat};

    fn store(n: usize, labeled: bool) -> ImageStore {
        let mut s = ImageStore::default();
        for i in 0..n {
            let img = ImageBuf::new(8, 8, PixelFormat::Gray8, vec![(i * 30) as u8; 64]).unwrap();
            s.images.push(Arc::new(img));
            s.labels.push(labeled.then_some(i % 2));
            s.ids.push(i.to_string());
        }
        s
    }

    fn pre() -> Preprocessing {
        Preprocessing {
            input_width: 8,
            input_height: 8,
            ..Preprocessing::default()
        }
    }

    #[test]
    fn batches_are_deterministic_ordered_and_balanced() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let sets = Arc::new(TrainSets::new(store(6, true), store(5, false), &classes).unwrap());
        let plan = BatchPlan {
            seed: 4,
            labeled_batch: 64,
            unlabeled_batch: 3,
            sampling: Sampling::Balanced,
            augmentation: LabeledAugmentation::Fer,
        };
        let mut loader = BatchLoader::spawn(sets.clone(), pre(), plan.clone(), 2, 7, 3);
        let mut steps = Vec::new();
        while let Some(batch) = loader.next_batch() {
            let batch = batch.unwrap();
            assert_eq!(batch, make_batch(&sets, &pre(), &plan, batch.step).unwrap());
            assert_eq!(batch.labeled.len(), 64 * 64);
            assert_eq!(batch.weak.len(), 3 * 64);
            assert_ne!(batch.weak, batch.strong);
            let ones = batch.labels.iter().filter(|l| **l == 1).count();
            assert!((16..=48).contains(&ones), "balanced classes: {ones}");
            steps.push(batch.step);
        }
        assert_eq!(steps, vec![2, 3, 4, 5, 6]);
        let other = make_batch(&sets, &pre(), &BatchPlan { seed: 5, ..plan }, 2).unwrap();
        assert_ne!(
            other.labeled,
            make_batch(&sets, &pre(), &plan, 2).unwrap().labeled
        );
    }

    #[test]
    fn a_batch_splits_into_equal_ordered_shards() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let sets = TrainSets::new(store(12, true), store(12, false), &classes).unwrap();
        let plan = BatchPlan {
            seed: 3,
            labeled_batch: 4,
            unlabeled_batch: 8,
            sampling: Sampling::Balanced,
            augmentation: LabeledAugmentation::Fer,
        };
        let whole = make_batch(&sets, &pre(), &plan, 5).unwrap();
        let shards = whole.clone().split(2);
        assert_eq!(shards.len(), 2);
        for shard in &shards {
            assert_eq!(
                (shard.step, shard.labels.len(), shard.hidden.len()),
                (5, 2, 4)
            );
        }
        let glue = |f: fn(&Batch) -> &Vec<f32>| -> Vec<f32> {
            shards.iter().flat_map(|s| f(s).clone()).collect()
        };
        assert_eq!(glue(|b| &b.labeled), whole.labeled);
        assert_eq!(glue(|b| &b.weak), whole.weak);
        assert_eq!(glue(|b| &b.strong), whole.strong);
        assert_eq!(
            shards
                .iter()
                .flat_map(|s| s.labels.clone())
                .collect::<Vec<_>>(),
            whole.labels
        );
    }

    #[test]
    fn natural_sampling_follows_the_class_frequencies() {
        // Nine images of class 0 for one of class 1.
        let mut labeled = store(10, true);
        labeled.labels = (0..10).map(|i| Some(usize::from(i == 9))).collect();
        let classes = vec!["a".to_string(), "b".to_string()];
        let sets = TrainSets::new(labeled, ImageStore::default(), &classes).unwrap();
        let count_ones = |sampling| {
            let plan = BatchPlan {
                seed: 3,
                labeled_batch: 400,
                unlabeled_batch: 0,
                sampling,
                augmentation: LabeledAugmentation::Weak,
            };
            let batch = make_batch(&sets, &pre(), &plan, 0).unwrap();
            batch.labels.iter().filter(|l| **l == 1).count()
        };
        assert!((15..70).contains(&count_ones(Sampling::Natural)));
        assert!((160..240).contains(&count_ones(Sampling::Balanced)));
    }

    #[test]
    fn weak_views_are_deterministic_per_step_and_index() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let sets = TrainSets::new(store(6, true), store(5, false), &classes).unwrap();
        let a = weak_views(&sets, &pre(), 1, 10, 0, 7).unwrap();
        assert_eq!(a.len(), 7 * 64);
        assert_eq!(a, weak_views(&sets, &pre(), 1, 10, 0, 7).unwrap());
        assert_ne!(a, weak_views(&sets, &pre(), 1, 10, 1, 7).unwrap());
    }

    #[test]
    fn a_class_without_images_is_named() {
        let classes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let err = TrainSets::new(store(4, true), ImageStore::default(), &classes).unwrap_err();
        assert!(err.to_string().contains("\"c\""), "{err}");
    }

    #[test]
    fn dropping_a_loader_early_stops_its_threads() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let sets =
            Arc::new(TrainSets::new(store(4, true), ImageStore::default(), &classes).unwrap());
        let plan = BatchPlan {
            seed: 1,
            labeled_batch: 2,
            unlabeled_batch: 4,
            sampling: Sampling::Natural,
            augmentation: LabeledAugmentation::Weak,
        };
        let mut loader = BatchLoader::spawn(sets, pre(), plan, 0, 1_000_000, 2);
        let first = loader.next_batch().unwrap().unwrap();
        assert!(
            first.weak.is_empty(),
            "no unlabeled pool, no unlabeled views"
        );
        drop(loader);
    }
}
