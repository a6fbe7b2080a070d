//! The EMA teacher: the model that labels the unlabeled data and the one that is deployed.
//!
//! * Update: `theta_t <- a theta_t + (1 - a) theta_s` over every parameter and BatchNorm
//!   running statistic, with `a = min((step + 1) / (step + 10), momentum)` for a fresh run
//!   (early on the teacher averages the last ~10% of the steps instead of keeping the random
//!   initialisation) and `a = momentum` from the first step of a warm start, whose loaded
//!   teacher is already trained and must not be overwritten by the student within a few steps.
//! * BatchNorm statistics: the student's running statistics come from batches that are two
//!   thirds strong views, which the deployed model never sees. [`recalibrate_batch_norm`]
//!   re-estimates the teacher's statistics as the plain average over batches of weak views
//!   (precise BN); evaluation and the checkpoint's deployed model use the recalibrated copy.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::model::Model;

/// The teacher's momentum at `step` (0-based); see the module documentation.
pub fn ema_momentum(step: u64, momentum: f64, warm_started: bool) -> f64 {
    if warm_started {
        momentum
    } else {
        ((step as f64 + 1.0) / (step as f64 + 10.0)).min(momentum)
    }
}

/// `teacher <- a * teacher + (1 - a) * student` over every float tensor (parameters and
/// BatchNorm running statistics). Both modules must have the same architecture.
pub fn ema_update<B: Backend, M: Module<B>>(teacher: M, student: &M, momentum: f64) -> M {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend<B: Backend> {
        student: std::vec::IntoIter<Tensor<B, 1>>,
        momentum: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let source = self
                .student
                .next()
                .expect("teacher and student have the same architecture");
            let shape = tensor.shape();
            let blended = tensor.mul_scalar(self.momentum)
                + source.reshape(shape).mul_scalar(1.0 - self.momentum);
            Param::from_mapped_value(id, blended.detach(), mapper)
        }
    }
    let mut collect = Collect(Vec::new());
    student.visit(&mut collect);
    let mut blend = Blend {
        student: collect.0.into_iter(),
        momentum,
    };
    teacher.map(&mut blend)
}

/// A copy of `teacher` whose BatchNorm running statistics are the mean of the batch
/// statistics over `batches` (`[N, C, H, W]` inputs, e.g. weak views of training images);
/// every other weight is unchanged. Runs the forward pass in training mode on the autodiff
/// backend `B`, with momentum `1 / (k + 1)` at batch `k` (a running mean).
pub fn recalibrate_batch_norm<B: AutodiffBackend>(
    teacher: &Model<B::InnerBackend>,
    batches: impl IntoIterator<Item = Tensor<B, 4>>,
) -> Model<B::InnerBackend> {
    let mut model = Model::<B>::from_inner(teacher.clone());
    let before = model.batch_norm_momentum();
    for (k, x) in batches.into_iter().enumerate() {
        model.set_batch_norm_momentum(1.0 / (k as f64 + 1.0));
        let _ = model.forward(x);
    }
    model.set_batch_norm_momentum(before);
    model.valid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    fn small() -> ModelConfig {
        ModelConfig {
            width: 4,
            blocks: vec![1],
            input_height: 8,
            input_width: 8,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn momentum_warms_up_only_for_a_fresh_run() {
        assert_eq!(ema_momentum(0, 0.999, false), 0.1);
        assert_eq!(ema_momentum(90, 0.999, false), 0.91);
        assert!(ema_momentum(990, 0.999, false) < 0.992);
        assert_eq!(ema_momentum(1_000_000, 0.999, false), 0.999);
        assert_eq!(
            ema_momentum(0, 0.999, true),
            0.999,
            "a warm start keeps its teacher"
        );
    }

    #[test]
    fn ema_update_blends_every_tensor() {
        let device = Default::default();
        let teacher = small().init::<Flex>(&device).unwrap();
        let student = small().init::<Flex>(&device).unwrap();
        let t0 = teacher.head.weight.val();
        let s0 = student.head.weight.val();
        let blended = ema_update(teacher, &student, 0.75);
        let expected = t0.mul_scalar(0.75) + s0.mul_scalar(0.25);
        let got = blended.head.weight.val();
        let diff = (got - expected).abs().max().into_scalar();
        assert!(diff < 1e-6, "{diff}");
        // Momentum 0 copies the student, running statistics included.
        let copied = ema_update(blended, &student, 0.0);
        let a = copied.backbone.stem.bn.running_var.value();
        let b = student.backbone.stem.bn.running_var.value();
        assert_eq!(a.into_data(), b.into_data());
    }

    #[test]
    fn recalibration_sets_the_plain_mean_of_batch_statistics() {
        let device = Default::default();
        let teacher = small().init::<Flex>(&device).unwrap();
        // The stem BatchNorm sees conv(x); with two constant-per-batch inputs its batch means
        // differ, and the recalibrated running mean must be their average (not an EMA).
        let batch = |v: f32| {
            Tensor::<Autodiff<Flex>, 4>::from_data(
                TensorData::new(vec![v; 2 * 64], [2, 1, 8, 8]),
                &device,
            )
        };
        let stem_mean = |m: &Model<Flex>, v: f32| {
            let x =
                Tensor::<Flex, 4>::from_data(TensorData::new(vec![v; 64], [1, 1, 8, 8]), &device);
            let y = m.backbone.stem.conv.forward(x);
            y.mean_dim(0).mean_dim(2).mean_dim(3).reshape([4])
        };
        // burn initialises weights lazily, on first use; a trained teacher has used them all.
        let _ = teacher.forward(Tensor::zeros([1, 1, 8, 8], &device));
        let expected = (stem_mean(&teacher, 0.5) + stem_mean(&teacher, -1.0)).div_scalar(2.0);
        let recalibrated =
            recalibrate_batch_norm::<Autodiff<Flex>>(&teacher, [batch(0.5), batch(-1.0)]);
        let got = recalibrated.backbone.stem.bn.running_mean.value();
        let diff = (got - expected).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
        // Weights are untouched and the momentum is restored.
        assert_eq!(
            recalibrated.head.weight.val().into_data(),
            teacher.head.weight.val().into_data()
        );
        assert_eq!(
            recalibrated.batch_norm_momentum(),
            teacher.batch_norm_momentum()
        );
    }
}
