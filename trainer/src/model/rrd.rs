//! Random region dropout (training only): with probability `p`, one of a sample's `K x K`
//! regions of the enhanced feature map is zeroed and the rest is scaled by `K^2 / (K^2 - 1)`
//! (inverted dropout), so the pooled features keep their scale and the network seen at
//! inference, which drops nothing, matches the one trained. Without the rescaling the first
//! formulation trained on features a quarter smaller (K = 2) than those the teacher and the
//! board see.

use rand::Rng;

/// The mask `[n, 1, h, w]` (row-major) for `n` samples of an `h x w` map cut into `k x k`
/// regions: 0 inside a dropped region, `k^2 / (k^2 - 1)` in the rest of that sample, 1 in a
/// sample that keeps everything. `k = 1` never drops (it would drop the whole map).
pub fn region_dropout_mask(
    n: usize,
    h: usize,
    w: usize,
    k: usize,
    prob: f64,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let mut mask = vec![1.0f32; n * h * w];
    if k < 2 {
        return mask;
    }
    let cells = k * k;
    let keep_scale = cells as f32 / (cells - 1) as f32;
    let (rh, rw) = (h / k, w / k);
    for sample in mask.chunks_mut(h * w) {
        if rng.random::<f64>() < prob {
            let region = rng.random_range(0..cells);
            let (row0, col0) = ((region / k) * rh, (region % k) * rw);
            sample.fill(keep_scale);
            for row in row0..row0 + rh {
                sample[row * w + col0..row * w + col0 + rw].fill(0.0);
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn one_region_is_zeroed_and_the_mean_is_kept() {
        let mut rng = StdRng::seed_from_u64(7);
        let mask = region_dropout_mask(5, 4, 4, 2, 1.0, &mut rng);
        for sample in mask.chunks(16) {
            assert_eq!(sample.iter().filter(|v| **v == 0.0).count(), 4);
            // 12 cells at 4/3: the spatial mean stays 1.
            let mean: f32 = sample.iter().sum::<f32>() / 16.0;
            assert!((mean - 1.0).abs() < 1e-6, "{mean}");
            assert!(
                sample
                    .iter()
                    .all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6)
            );
        }
    }

    #[test]
    fn probability_zero_and_a_single_region_keep_everything() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(
            region_dropout_mask(3, 4, 4, 2, 0.0, &mut rng)
                .iter()
                .all(|v| *v == 1.0)
        );
        assert!(
            region_dropout_mask(3, 4, 4, 1, 1.0, &mut rng)
                .iter()
                .all(|v| *v == 1.0)
        );
    }
}
