//! Data-parallel training over the devices of one machine (`--devices N`), on burn's own
//! collective operations (burn-collective, one peer per device).
//!
//! Each step the leader (replica 0, the training loop's thread) takes the global batch of
//! `devices` times the configured batch, keeps the first shard and hands shard `i` to replica
//! `i`, which runs on its own thread and device. Every replica builds the loss of its shard;
//! then, through its [`Link`]:
//!
//! * the gradients are averaged (all-reduce, mean): every loss term is a mean over its shard,
//!   so this is the gradient of the whole batch;
//! * the teacher's probabilities on the unlabeled shards are gathered, so every DTA state sees
//!   the whole batch, as one device would;
//! * the student's BatchNorm running statistics are averaged by burn's `RunningState`, which
//!   the students share (burn keeps one value per thread and averages them when read).
//!
//! Every replica therefore applies the same AdamW update and holds the same weights; only the
//! leader evaluates, logs and checkpoints. BatchNorm normalises each shard by its own batch
//! statistics, as PyTorch's DDP does without SyncBatchNorm.
//!
//! Several machines: burn-collective's global level (a `CollectiveConfig` with
//! `num_nodes`, `global_address`, `node_address` and `data_service_port`, and its orchestrator
//! process) would add an all-reduce between machines after the one inside each; see
//! docs/design.md. It is not built here.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::collective::{CollectiveConfig, PeerId, finish_collective, register, reset_collective};
use burn::module::Module;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;

use super::config::TrainConfig;
use super::metrics::StepMetrics;
use super::replica::{Link, Replica};
use crate::data::loader::Batch;
use crate::error::{Error, Result};
use crate::model::Model;

type Reply = (usize, Result<StepMetrics>);

/// The replicas beyond the leader, each on its own thread.
pub struct Peers {
    shards: Vec<SyncSender<Batch>>,
    replies: Option<Receiver<Reply>>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peers({} replicas)", self.shards.len())
    }
}

fn stopped(peer: usize) -> Error {
    Error::Collective {
        peer,
        reason: "the replica stopped; its error was reported above or it panicked".into(),
    }
}

/// Registers replica `id` of `peers` with burn's collective server.
fn join<B: AutodiffBackend>(id: usize, peers: usize, device: &B::Device) -> Result<()> {
    register::<B::InnerBackend>(
        PeerId::from(id),
        device.clone(),
        CollectiveConfig::default().with_num_devices(peers),
    )
    .map_err(|e| Error::Collective {
        peer: id,
        reason: format!("registering with the collective: {e:?}"),
    })
}

impl Peers {
    /// Starts a replica of `leader` on each of `devices[1..]` (same weights, teacher, AdamW
    /// moments and DTA state) and makes `leader` replica 0 of them all. With one device
    /// nothing starts and the leader stays [`Link::Solo`].
    pub fn start<B: AutodiffBackend>(
        leader: &mut Replica<B>,
        config: &TrainConfig,
        devices: &[B::Device],
    ) -> Result<Peers> {
        let peers = devices.len();
        let (reply_tx, replies) = sync_channel::<Reply>(peers);
        let mut this = Peers {
            shards: Vec::new(),
            replies: Some(replies),
            handles: Vec::new(),
        };
        if peers <= 1 {
            return Ok(this);
        }
        reset_collective::<B::InnerBackend>();
        leader.student.materialize();
        for (id, device) in devices.iter().enumerate().skip(1) {
            let (tx, rx) = sync_channel::<Batch>(1);
            let student = leader.student.clone().fork(device);
            // A copy of its own (the EMA update writes the teacher's statistics in place).
            let teacher = config
                .model
                .init::<B::InnerBackend>(device)?
                .load_record(leader.teacher.clone().into_record());
            let optim = AdamWConfig::new()
                .with_weight_decay(config.optimizer.weight_decay)
                .init::<B, Model<B>>()
                .load_record(leader.optim.to_record());
            let mut replica = Replica {
                student,
                teacher,
                optim,
                dta: leader.dta.clone(),
                link: Link::Peer { id, peers },
                device: device.clone(),
            };
            let (config, reply_tx) = (config.clone(), reply_tx.clone());
            this.handles.push(std::thread::spawn(move || {
                if let Err(e) = join::<B>(id, peers, &replica.device) {
                    let _ = reply_tx.send((id, Err(e)));
                    return;
                }
                while let Ok(shard) = rx.recv() {
                    let reply = replica.step(&config, shard);
                    let failed = reply.is_err();
                    if reply_tx.send((id, reply)).is_err() || failed {
                        return;
                    }
                }
                let _ = finish_collective::<B::InnerBackend>(PeerId::from(id));
            }));
            this.shards.push(tx);
        }
        leader.link = Link::Peer { id: 0, peers };
        join::<B>(0, peers, &leader.device)?;
        Ok(this)
    }

    /// Runs one step on every replica: `batch` is the whole step, cut into one shard per
    /// replica. Returns the metrics over the whole batch.
    pub fn step<B: AutodiffBackend>(
        &mut self,
        leader: &mut Replica<B>,
        config: &TrainConfig,
        batch: Batch,
    ) -> Result<StepMetrics> {
        let mut shards = batch.split(self.shards.len() + 1).into_iter();
        let own = shards.next().expect("at least one shard");
        for (id, (tx, shard)) in self.shards.iter().zip(shards).enumerate() {
            tx.send(shard).map_err(|_| stopped(id + 1))?;
        }
        let mine = leader.step(config, own)?;
        let mut parts = vec![None; self.shards.len()];
        let replies = self.replies.as_ref().expect("open until finish");
        for _ in 0..self.shards.len() {
            let (id, reply) = replies.recv().map_err(|_| stopped(0))?;
            parts[id - 1] = Some(reply?);
        }
        let mut all = vec![mine];
        all.extend(parts.into_iter().map(|p| p.expect("one reply per replica")));
        Ok(StepMetrics::merge(&all))
    }

    /// Stops the replicas after the last step.
    pub fn finish<B: AutodiffBackend>(mut self, leader: &Replica<B>) -> Result<()> {
        self.shards.clear();
        self.replies = None;
        for handle in self.handles.drain(..) {
            handle.join().map_err(|_| stopped(1))?;
        }
        if let Link::Peer { id, .. } = leader.link {
            finish_collective::<B::InnerBackend>(PeerId::from(id)).map_err(|e| {
                Error::Collective {
                    peer: id,
                    reason: format!("leaving the collective: {e:?}"),
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::backend::Autodiff;
    use burn::module::{AutodiffModule, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::{Tensor, backend::Backend};
    use burn_flex::{Flex, FlexDevice};
    use firmware_config::preprocess::{ImageBuf, PixelFormat};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::algorithm::teacher::{ema_momentum, ema_update};
    use crate::algorithm::{Algorithm, DtaState};
    use crate::data::ImageStore;
    use crate::data::loader::{BatchPlan, LabeledAugmentation, Sampling, TrainSets, make_batch};
    use crate::model::ModelConfig;
    use crate::train::step::train_step;

    type B = Autodiff<Flex>;

    fn config(algorithm: Algorithm) -> TrainConfig {
        let mut config = TrainConfig::for_model(ModelConfig {
            width: 4,
            blocks: vec![1, 1],
            input_height: 16,
            input_width: 16,
            num_classes: 2,
            ..ModelConfig::default()
        });
        config.algorithm.algorithm = algorithm;
        config.labeled_batch = 4;
        config.unlabeled_ratio = 2;
        config.steps = 20;
        config.optimizer.warmup_steps = 0;
        config.optimizer.learning_rate = 1e-2;
        config
    }

    /// Two classes of noisy faces: bright or dark halves.
    fn sets() -> TrainSets {
        let mut rng = StdRng::seed_from_u64(1);
        let mut store = |n: usize, labeled: bool| {
            let mut s = ImageStore::default();
            for i in 0..n {
                let class = i % 2;
                let pixels = (0..256)
                    .map(|p| {
                        let bright = (p / 128 == class) as u8;
                        bright * 140 + rng.random_range(0..100u8)
                    })
                    .collect();
                let img = ImageBuf::new(16, 16, PixelFormat::Gray8, pixels).unwrap();
                s.images.push(Arc::new(img));
                s.labels.push(labeled.then_some(class));
                s.ids.push(i.to_string());
            }
            s
        };
        let (labeled, unlabeled) = (store(16, true), store(32, false));
        TrainSets::new(labeled, unlabeled, &["a".into(), "b".into()]).unwrap()
    }

    /// The whole batch of `step` for `devices` replicas of `config`'s batch.
    fn global_batch(config: &TrainConfig, sets: &TrainSets, devices: usize, step: u64) -> Batch {
        let plan = BatchPlan {
            seed: config.seed,
            labeled_batch: config.labeled_batch * devices,
            unlabeled_batch: config.unlabeled_batch() * devices,
            sampling: Sampling::Balanced,
            augmentation: LabeledAugmentation::Fer,
        };
        make_batch(sets, &config.preprocessing, &plan, step).unwrap()
    }

    fn replica(config: &TrainConfig, student: Model<B>) -> Replica<B> {
        let optim = AdamWConfig::new()
            .with_weight_decay(config.optimizer.weight_decay)
            .init::<B, Model<B>>();
        Replica {
            teacher: student.valid(),
            student,
            optim,
            dta: DtaState::new(2),
            link: Link::Solo,
            device: FlexDevice,
        }
    }

    /// The trainable weights (BatchNorm running statistics left out).
    fn weights<Bk: Backend>(model: &Model<Bk>) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl<Bk: Backend> ModuleVisitor<Bk> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
                if param.is_require_grad() {
                    let data = param.val().into_data().convert::<f32>();
                    self.0.extend(data.into_vec::<f32>().unwrap());
                }
            }
        }
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        collect.0
    }

    /// One device with the doubled batch, its BatchNorm normalising each half on its own (as
    /// each device does): the loss is the mean of the halves' losses, and DTA folds in the
    /// teacher's probabilities on the whole unlabeled batch.
    fn reference_step(config: &TrainConfig, one: &mut Replica<B>, batch: Batch) {
        let step = batch.step;
        let halves = batch.split(2);
        let outs: Vec<_> = halves
            .into_iter()
            .map(|half| {
                train_step(
                    config,
                    &one.student,
                    &one.teacher,
                    &one.dta,
                    half,
                    &FlexDevice,
                )
            })
            .collect();
        let lr = outs[0].metrics.lr;
        let probs: Vec<f32> = outs.iter().flat_map(|o| o.teacher_probs.clone()).collect();
        let loss = (outs[0].loss.clone() + outs[1].loss.clone()).div_scalar(2.0);
        let grads = GradientsParams::from_grads(loss.backward(), &one.student);
        if config.algorithm.algorithm.dynamic() && !probs.is_empty() {
            one.dta.update(&probs, config.algorithm.dta_momentum);
        }
        one.student = one.optim.step(lr, one.student.clone(), grads);
        one.teacher = ema_update(
            one.teacher.clone(),
            &one.student.valid(),
            ema_momentum(step, config.algorithm.ema_momentum, false),
        );
    }

    fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Two replicas (threads, burn-collective all-reduce) against one replica with the doubled
    /// batch: the same weights after every step, the same DTA state, the same metrics.
    #[test]
    fn two_replicas_make_the_update_of_one_with_the_doubled_batch() {
        let sets = sets();
        // Supervised over several steps (the update alone); the full method for one step,
        // where the teachers still agree exactly (afterwards the teacher's BatchNorm statistics
        // differ: one device updates them twice, two devices average one update each).
        for (algorithm, steps) in [(Algorithm::Supervised, 4), (Algorithm::DtaSnl, 1)] {
            let config = config(algorithm);
            B::seed(&FlexDevice, 7);
            let student: Model<B> = config.model.init(&FlexDevice).unwrap();
            let mut leader = replica(&config, student);
            let mut one = replica(&config, leader.student.clone());
            let mut peers = Peers::start(&mut leader, &config, &[FlexDevice, FlexDevice]).unwrap();
            assert_eq!(leader.link, Link::Peer { id: 0, peers: 2 });
            let before = weights(&leader.student);
            for step in 0..steps {
                let batch = global_batch(&config, &sets, 2, step);
                let merged = peers.step(&mut leader, &config, batch.clone()).unwrap();
                reference_step(&config, &mut one, batch);
                let diff = largest_difference(&weights(&leader.student), &weights(&one.student));
                assert!(
                    diff < 1e-5,
                    "{algorithm:?} step {step}: weights differ by {diff}"
                );
                assert!(merged.loss.is_finite());
                let unlabeled: u32 = merged.top_per_class.iter().sum();
                assert_eq!(unlabeled as usize, config.unlabeled_batch() * 2);
            }
            let moved = largest_difference(&weights(&leader.student), &before);
            assert!(moved > 1e-3, "training changed the weights");
            if algorithm.dynamic() {
                assert_eq!(leader.dta.updates, 1);
                assert_eq!(leader.dta, one.dta, "DTA saw the whole unlabeled batch");
            }
            peers.finish(&leader).unwrap();
        }
    }
}
