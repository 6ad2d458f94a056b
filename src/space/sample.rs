//! Estimating a point's loss from part of the data (`--rel-error E`): the samples are visited in
//! one seeded random order — the same at every point, so that neighbouring points share their
//! noise — and a pass stops once the estimate is known to E relative.
//!
//! The loss of a set is a ratio: R = Σ s_i / Σ c_i, with s_i the summed loss of sample i over its
//! c_i counted targets (1 for class labels, the tokens other than −100 for a token model, the
//! output entries for MSE). After n of the N samples, drawn without replacement, the estimate
//! R̂ = S/C has the standard error (the ratio estimator's, with the finite-population correction)
//!
//! ```text
//! se(R̂)² = (1 − n/N) · Σ (s_i − R̂ c_i)² / (n (n − 1) c̄²),   c̄ = C / n,
//! ```
//!
//! which for one target per sample is the familiar √((1 − n/N) s²/n). Σ (s_i − R̂ c_i)² is
//! Q − 2R̂P + R̂²K from the running sums Q = Σ s_i², P = Σ s_i c_i, K = Σ c_i².

use serde::{Deserialize, Serialize};

/// The running sums of a partial pass (float64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    /// Samples seen.
    pub n: f64,
    pub s: f64,
    pub c: f64,
    pub q: f64,
    pub p: f64,
    pub k: f64,
}

impl Sums {
    /// R̂ = S / C.
    pub fn estimate(&self) -> f64 {
        self.s / self.c
    }

    /// The standard error of R̂ after `self.n` of `total` samples (0 once every sample is in;
    /// infinite before two are).
    pub fn stderr(&self, total: usize) -> f64 {
        let (n, big) = (self.n, total as f64);
        if n >= big {
            return 0.0;
        }
        if n < 2.0 || self.c <= 0.0 {
            return f64::INFINITY;
        }
        let r = self.estimate();
        let resid = (self.q - 2.0 * r * self.p + r * r * self.k).max(0.0);
        let cbar = self.c / n;
        ((1.0 - n / big) * resid / (n * (n - 1.0) * cbar * cbar)).sqrt()
    }

    /// Whether a pass may stop here: at least `min` samples seen and the standard error within
    /// `rel` of |R̂|.
    pub fn known_to(&self, rel: f64, min: usize, total: usize) -> bool {
        self.n >= (min.min(total)) as f64 && self.stderr(total) <= rel * self.estimate().abs()
    }
}

/// A permutation of 0..n from `seed`: Fisher–Yates driven by splitmix64, the same on every
/// machine and in every task.
pub fn permutation(n: usize, seed: u64) -> Vec<i64> {
    let mut v: Vec<i64> = (0..n as i64).collect();
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..n).rev() {
        // A uniform j in 0..=i (the modulo bias is below 2^-40 for any realistic n).
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sums(s: &[f64], c: &[f64]) -> Sums {
        let mut t = Sums::default();
        for (&a, &b) in s.iter().zip(c) {
            t.n += 1.0;
            t.s += a;
            t.c += b;
            t.q += a * a;
            t.p += a * b;
            t.k += b * b;
        }
        t
    }

    #[test]
    fn with_one_target_per_sample_it_is_the_textbook_standard_error() {
        let s = [1.0, 2.0, 4.0, 3.0];
        let t = sums(&s, &[1.0; 4]);
        let mean = 2.5;
        let var = s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 3.0;
        let want = ((1.0 - 4.0 / 10.0) * var / 4.0).sqrt();
        assert!((t.estimate() - mean).abs() < 1e-15 && (t.stderr(10) - want).abs() < 1e-15);
        assert_eq!(t.stderr(4), 0.0, "every sample seen: exact");
        assert_eq!(sums(&[1.0], &[1.0]).stderr(10), f64::INFINITY);
        assert!(t.known_to(0.2, 4, 10) && !t.known_to(0.2, 5, 10) && !t.known_to(0.01, 4, 10));
    }

    #[test]
    fn the_permutation_is_seeded_and_complete() {
        let p = permutation(1000, 7);
        assert_eq!(p, permutation(1000, 7));
        assert_ne!(p, permutation(1000, 8));
        let mut q = p.clone();
        q.sort();
        assert_eq!(q, (0..1000).collect::<Vec<i64>>());
        assert!(p[..10] != (0..10).collect::<Vec<i64>>()[..]);
        assert!(permutation(0, 1).is_empty() && permutation(1, 1) == vec![0]);
    }

    proptest! {
        /// The standard error is the ratio estimator's formula computed directly from the
        /// residuals, for any per-sample losses and counts.
        #[test]
        fn the_running_sums_give_the_residual_formula(
            v in prop::collection::vec((0.0f64..10.0, 1u32..5), 2..60), extra in 0usize..100,
        ) {
            let (s, c): (Vec<f64>, Vec<f64>) = v.iter().map(|&(a, b)| (a, b as f64)).unzip();
            let t = sums(&s, &c);
            let total = s.len() + extra;
            let r = s.iter().sum::<f64>() / c.iter().sum::<f64>();
            let n = s.len() as f64;
            let cbar = c.iter().sum::<f64>() / n;
            let resid: f64 = s.iter().zip(&c).map(|(a, b)| (a - r * b).powi(2)).sum();
            let want = if extra == 0 { 0.0 } else { ((1.0 - n / total as f64) * resid / (n * (n - 1.0) * cbar * cbar)).sqrt() };
            prop_assert!((t.stderr(total) - want).abs() <= 1e-9 * (1.0 + want));
        }
    }
}
