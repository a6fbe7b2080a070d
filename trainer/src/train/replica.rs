//! One replica of the training state (student, teacher, AdamW, DTA) and its update for one
//! step: the loss of [`super::step::train_step`], the gradient, the DTA update, the AdamW
//! step and the EMA teacher.
//!
//! A replica talks to the other devices' replicas through its [`Link`]; alone
//! ([`Link::Solo`]) every exchange is the identity, so one device and many run the same code.

use burn::collective::{PeerId, ReduceOperation, all_reduce};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::config::TrainConfig;
use super::metrics::StepMetrics;
use super::step::train_step;
use crate::algorithm::DtaState;
use crate::algorithm::teacher::{ema_momentum, ema_update};
use crate::data::loader::Batch;
use crate::error::{Error, Result};
use crate::model::Model;

/// How a replica reaches the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The only replica.
    Solo,
    /// Replica `id` of `peers`, registered with burn's collective server.
    Peer {
        /// This replica's index (0 is the leader).
        id: usize,
        /// How many replicas take part.
        peers: usize,
    },
}

fn collective_error(id: usize, what: &str, e: burn::collective::CollectiveError) -> Error {
    Error::Collective {
        peer: id,
        reason: format!("{what}: {e:?}"),
    }
}

impl Link {
    /// The mean of every replica's gradients.
    pub fn average<B: AutodiffBackend>(self, grads: GradientsParams) -> Result<GradientsParams> {
        match self {
            Link::Solo => Ok(grads),
            Link::Peer { id, .. } => grads
                .all_reduce::<B::InnerBackend>(PeerId::from(id), ReduceOperation::Mean)
                .map_err(|e| collective_error(id, "averaging the gradients", e)),
        }
    }

    /// Every replica's `values` concatenated in replica order (all must have the same length):
    /// an all-reduce sum of zero-padded slots, which adds only zeros to each value, so the
    /// result is exact.
    pub fn gather<B: Backend>(self, values: Vec<f32>, device: &B::Device) -> Result<Vec<f32>> {
        let Link::Peer { id, peers } = self else {
            return Ok(values);
        };
        let n = values.len();
        if n == 0 {
            return Ok(values);
        }
        let mut slots = vec![0.0f32; n * peers];
        slots[id * n..(id + 1) * n].copy_from_slice(&values);
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(slots, [n * peers]), device);
        let summed = all_reduce::<B>(
            PeerId::from(id),
            tensor.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| collective_error(id, "gathering the teacher's probabilities", e))?;
        Ok(
            Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed))
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 data"),
        )
    }
}

/// One device's copy of everything a step changes.
pub struct Replica<B: AutodiffBackend> {
    /// The model being trained.
    pub student: Model<B>,
    /// The EMA of the student that labels the unlabeled images.
    pub teacher: Model<B::InnerBackend>,
    /// AdamW and its moments.
    pub optim: OptimizerAdaptor<AdamW, Model<B>, B>,
    /// Dynamic threshold statistics.
    pub dta: DtaState,
    /// How this replica reaches the others.
    pub link: Link,
    /// Its device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> std::fmt::Debug for Replica<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("link", &self.link)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> Replica<B> {
    /// Trains on `batch` (this replica's shard of the step) and returns the step's metrics
    /// over that shard. Every replica must call this for every step, in order: the exchanges
    /// wait for all of them.
    pub fn step(&mut self, config: &TrainConfig, batch: Batch) -> Result<StepMetrics> {
        let step = batch.step;
        let out = train_step(
            config,
            &self.student,
            &self.teacher,
            &self.dta,
            batch,
            &self.device,
        );
        let grads = GradientsParams::from_grads(out.loss.backward(), &self.student);
        let grads = self.link.average::<B>(grads)?;
        let alg = &config.algorithm;
        if alg.algorithm.dynamic() && !out.teacher_probs.is_empty() {
            let probs = self
                .link
                .gather::<B::InnerBackend>(out.teacher_probs, &self.device)?;
            self.dta.update(&probs, alg.dta_momentum);
        }
        self.student = self.optim.step(out.metrics.lr, self.student.clone(), grads);
        self.teacher = ema_update(
            self.teacher.clone(),
            &self.student.valid(),
            ema_momentum(step, alg.ema_momentum, config.warm_start.is_some()),
        );
        Ok(out.metrics)
    }
}
