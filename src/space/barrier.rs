//! The barrier of a path between two models: how far a value along it (the loss, or the error)
//! rises above the straight interpolation of the two ends' values,
//!
//! ```text
//! B = max over t in [0, 1] of  v(t) − ((1 − t)·v(0) + t·v(1))
//! ```
//!
//! taken over the points of the path that were evaluated. With both ends among the points, B ≥ 0
//! (the ends contribute 0); B = 0 means no point rises above the chord (linear mode connectivity in
//! the sense of Frankle et al., 2020). A convex function along the path has B ≤ 0.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a path rises highest above its chord.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Barrier {
    /// max_t v(t) − ((1 − t)·v(0) + t·v(1)) over the evaluated points in [0, 1].
    pub height: f64,
    /// The t (for a line, α) where it is.
    pub at: f64,
    /// v(t) there.
    pub value: f64,
    /// v(0) and v(1), the ends the chord joins.
    pub ends: [f64; 2],
}

/// How far outside [0, 1] a coordinate may lie and still count as inside (a linspace's rounding).
const EDGE: f64 = 1e-9;

/// The barrier of the values `v[i]` at `t[i]` (the points with t in [0, 1] and finite v), over the
/// chord from `ends.0` to `ends.1`; None when no such point exists or an end is not finite. Ties
/// go to the first point.
pub fn barrier(t: &[f64], v: &[f64], ends: (f64, f64)) -> Option<Barrier> {
    let (a, b) = ends;
    if !(a.is_finite() && b.is_finite()) {
        return None;
    }
    let mut best: Option<Barrier> = None;
    for (&x, &y) in t.iter().zip(v) {
        if !(-EDGE..=1.0 + EDGE).contains(&x) || !y.is_finite() {
            continue;
        }
        let s = x.clamp(0.0, 1.0);
        let height = y - ((1.0 - s) * a + s * b);
        if best.is_none_or(|p| height > p.height) {
            best = Some(Barrier { height, at: x, value: y, ends: [a, b] });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linspace(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect()
    }

    #[test]
    fn a_bump_between_equal_ends_is_its_peak_above_them() {
        let t = linspace(11, 0.0, 1.0);
        let v: Vec<f64> = t.iter().map(|&x| 1.0 + 4.0 * x * (1.0 - x)).collect();
        let b = barrier(&t, &v, (1.0, 1.0)).unwrap();
        assert!((b.height - 1.0).abs() < 1e-12 && (b.at - 0.5).abs() < 1e-12 && (b.value - 2.0).abs() < 1e-12);
    }

    #[test]
    fn the_chord_tilts_with_unequal_ends_and_points_outside_0_1_do_not_count() {
        // v rises linearly from 1 to 3 (on the chord: no barrier) except a spike at t = 1.5.
        let t = linspace(7, -0.5, 1.5);
        let mut v: Vec<f64> = t.iter().map(|&x| 1.0 + 2.0 * x).collect();
        *v.last_mut().unwrap() = 100.0;
        v[0] = 100.0;
        let b = barrier(&t, &v, (1.0, 3.0)).unwrap();
        assert!(b.height.abs() < 1e-12, "{b:?}");
        // A convex function under its chord: the largest excess is at an end, 0.
        let t = linspace(21, 0.0, 1.0);
        let v: Vec<f64> = t.iter().map(|&x| (x - 0.3) * (x - 0.3)).collect();
        let b = barrier(&t, &v, (v[0], v[20])).unwrap();
        assert!(b.height <= 0.0 && b.height > -1e-15, "{b:?}");
        // Only interior points (the ends not evaluated): strictly below the chord.
        let b = barrier(&t[1..20], &v[1..20], (v[0], v[20])).unwrap();
        assert!(b.height < 0.0, "{b:?}");
    }

    #[test]
    fn nothing_to_measure_is_none() {
        assert_eq!(barrier(&[2.0, 3.0], &[1.0, 1.0], (0.0, 0.0)), None, "no point in [0, 1]");
        assert_eq!(barrier(&[0.5], &[f64::NAN], (0.0, 0.0)), None, "no finite value");
        assert_eq!(barrier(&[0.5], &[1.0], (f64::NAN, 0.0)), None, "an end not finite");
        let b = barrier(&[0.25, 0.5, 0.75], &[f64::INFINITY, 2.0, f64::NAN], (0.0, 0.0)).unwrap();
        assert_eq!((b.at, b.height), (0.5, 2.0), "non-finite points skipped");
    }

    proptest! {
        /// The barrier is the largest excess over the chord among the points in [0, 1], and is
        /// attained at one of them.
        #[test]
        fn the_barrier_is_the_largest_excess(
            pts in prop::collection::vec((-0.5f64..1.5, -10.0f64..10.0), 1..40),
            a in -10.0f64..10.0, b in -10.0f64..10.0,
        ) {
            let (t, v): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
            let inside: Vec<(f64, f64)> = pts.iter().copied().filter(|(x, _)| (0.0..=1.0).contains(x)).collect();
            match barrier(&t, &v, (a, b)) {
                None => prop_assert!(inside.is_empty()),
                Some(r) => {
                    let excess = |(x, y): (f64, f64)| y - ((1.0 - x) * a + x * b);
                    let max = inside.iter().copied().map(excess).fold(f64::NEG_INFINITY, f64::max);
                    prop_assert_eq!(r.height, max);
                    prop_assert!(inside.iter().any(|&(x, y)| x == r.at && y == r.value));
                }
            }
        }
    }
}
