//! Batch-norm folding: `BN(conv(x))` becomes one convolution with rescaled weights and a
//! shifted bias, so the exported graph (and its quantized weights) carry no BN op.
//!
//! With `k_c = gamma_c / sqrt(var_c + eps)`: `w'_c = w_c * k_c` and
//! `b'_c = (b_c - mean_c) * k_c + beta_c`. Computed in f64 to keep the fold itself from
//! adding rounding error on top of f32 inference.

use super::Error;

/// Inference-time batch-norm parameters of one layer (one value per channel).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormParams {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Running mean.
    pub mean: Vec<f32>,
    /// Running variance.
    pub var: Vec<f32>,
    /// Added to the variance.
    pub epsilon: f64,
}

/// Folds `bn` into a convolution (or linear layer) whose weight is laid out with the output
/// channel first (`[out, ...]`). Returns the new weight and bias.
pub fn fold_batch_norm(
    weight: &[f32],
    bias: Option<&[f32]>,
    bn: &BatchNormParams,
) -> Result<(Vec<f32>, Vec<f32>), Error> {
    let out = bn.gamma.len();
    if out == 0
        || [bn.beta.len(), bn.mean.len(), bn.var.len()]
            .iter()
            .any(|&n| n != out)
    {
        return Err(Error::Invalid(format!(
            "batch norm parameters disagree on the channel count: gamma {}, beta {}, mean {}, var {}",
            bn.gamma.len(),
            bn.beta.len(),
            bn.mean.len(),
            bn.var.len()
        )));
    }
    if !weight.len().is_multiple_of(out) {
        return Err(Error::Invalid(format!(
            "weight of {} elements does not split into {out} output channels",
            weight.len()
        )));
    }
    if let Some(b) = bias
        && b.len() != out
    {
        return Err(Error::Invalid(format!(
            "bias has {} channels, batch norm {out}",
            b.len()
        )));
    }
    let per = weight.len() / out;
    let mut new_weight = Vec::with_capacity(weight.len());
    let mut new_bias = Vec::with_capacity(out);
    for c in 0..out {
        let k = f64::from(bn.gamma[c]) / (f64::from(bn.var[c]) + bn.epsilon).sqrt();
        new_weight.extend(
            weight[c * per..(c + 1) * per]
                .iter()
                .map(|&w| (f64::from(w) * k) as f32),
        );
        let b = bias.map_or(0.0, |b| f64::from(b[c]));
        new_bias.push(((b - f64::from(bn.mean[c])) * k + f64::from(bn.beta[c])) as f32);
    }
    Ok((new_weight, new_bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Param, RunningState};
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::tensor::{Distribution, Tensor, TensorData};
    use burn_flex::Flex;

    fn values(t: Tensor<Flex, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 tensor")
    }

    /// BN(conv(x)) computed by burn equals the folded conv computed by burn, for a plain
    /// and a depthwise conv, with and without a conv bias.
    #[test]
    fn folded_conv_matches_conv_then_batch_norm() {
        let device = Default::default();
        for (groups, bias) in [(1, true), (1, false), (4, false)] {
            let (cin, cout) = (4, if groups == 1 { 6 } else { 4 });
            let conv = Conv2dConfig::new([cin, cout], [3, 3])
                .with_groups(groups)
                .with_bias(bias)
                .with_stride([2, 1])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init::<Flex>(&device);
            let mut bn = BatchNormConfig::new(cout).init::<Flex>(&device);
            let rand = |lo: f64, hi: f64| {
                Tensor::<Flex, 1>::random([cout], Distribution::Uniform(lo, hi), &device)
            };
            bn.gamma = Param::from_tensor(rand(0.5, 2.0));
            bn.beta = Param::from_tensor(rand(-1.0, 1.0));
            bn.running_mean = RunningState::new(rand(-0.5, 0.5));
            bn.running_var = RunningState::new(rand(0.1, 3.0));
            let x =
                Tensor::<Flex, 4>::random([2, cin, 9, 7], Distribution::Normal(0.0, 1.0), &device);
            let reference = bn.forward(conv.forward(x.clone()));

            let params = BatchNormParams {
                gamma: values(bn.gamma.val()),
                beta: values(bn.beta.val()),
                mean: values(bn.running_mean.value()),
                var: values(bn.running_var.value()),
                epsilon: bn.epsilon,
            };
            let weight = conv
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .expect("f32 weight");
            let conv_bias = conv.bias.as_ref().map(|b| values(b.val()));
            let (w, b) = fold_batch_norm(&weight, conv_bias.as_deref(), &params).expect("fold");
            let mut folded = conv.clone();
            let shape = conv.weight.val().dims();
            folded.weight =
                Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), &device));
            folded.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [cout]),
                &device,
            )));
            let got = folded.forward(x);

            let diff = (got - reference.clone()).abs().max().into_scalar();
            let scale = reference.abs().max().into_scalar();
            assert!(scale > 0.1, "the reference output is not trivially zero");
            assert!(
                diff < 1e-5,
                "groups {groups} bias {bias}: folded differs by {diff}"
            );
        }
    }

    #[test]
    fn mismatched_channel_counts_are_rejected() {
        let bn = BatchNormParams {
            gamma: vec![1.0; 3],
            beta: vec![0.0; 2],
            mean: vec![0.0; 3],
            var: vec![1.0; 3],
            epsilon: 1e-5,
        };
        let err = fold_batch_norm(&[0.0; 9], None, &bn).unwrap_err();
        assert!(err.to_string().contains("beta 2"), "{err}");
        let bn = BatchNormParams {
            beta: vec![0.0; 3],
            ..bn
        };
        let err = fold_batch_norm(&[0.0; 10], None, &bn).unwrap_err();
        assert!(err.to_string().contains("10 elements"), "{err}");
        let err = fold_batch_norm(&[0.0; 9], Some(&[0.0; 2]), &bn).unwrap_err();
        assert!(err.to_string().contains("bias has 2"), "{err}");
    }
}
