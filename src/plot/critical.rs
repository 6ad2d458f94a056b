//! Critical points of a 2-D loss grid by topological persistence, so that noise of a fraction of a
//! percent does not turn one basin into a field of minima and saddles.
//!
//! The grid is triangulated (each cell cut along its rising diagonal: every vertex has the six
//! neighbours left, right, up, down, up-right and down-left), which makes sublevel and superlevel
//! sets behave like those of a continuous function. Sweeping the values upwards with a union-find,
//! a component is born at a local minimum and dies at the vertex where it first touches an older
//! component (the elder rule): that vertex is a saddle, and the pair's persistence is the height
//! the young basin has to fill before it spills over. Sweeping downwards pairs maxima with saddles
//! the same way. The global minimum (and maximum) never die; their persistence is the whole range.
//!
//! Reported: minima and maxima born away from the grid's border (an extremum on the border is one
//! of the window, not of the landscape) and the saddles where a pair dies, when the pair's
//! persistence is at least `threshold` × the finite range of the values; saddles away from the
//! border too. A vertex next to a non-finite value counts as border. Values are in the scale of
//! the picture (log10 of the loss for a log scale), so persistence is measured as the eye sees it.
//!
//! The threshold, unless one is given, sits in the largest gap of the persistence diagram (the
//! usual choice): the persistences, from the whole range (the essential pairs) down to 0.1% of it,
//! are sorted, and the cut falls at the geometric middle of the largest ratio between
//! neighbours. Noise gives many pairs of similar small persistence, features few large ones, so
//! the gap separates them whatever the noise's size in the picture's units (noise of 0.2% of a
//! double well's range is 10% of its log10 range near the minima). The diagram's bottom is
//! [`GAP_FLOOR`] of the range: a noise-free surface with one feature still has a gap to find.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Minimum,
    Maximum,
    Saddle,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriticalPoint {
    /// Column i (x) and row j (y) in loss[j, i].
    pub index: [usize; 2],
    pub coords: [f64; 2],
    /// The classified value (the caller of `classify` may map it back to loss units).
    pub loss: f64,
    pub kind: Kind,
    /// In the units of the values classified (the picture's scale).
    pub persistence: f64,
    /// persistence / the finite range of the values.
    pub relative_persistence: f64,
}

/// One birth–death pair of a sweep (indices into the grid; death None: it never died).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pair {
    pub birth: usize,
    pub death: Option<usize>,
    /// Value at birth and at death (at death: the other end of the range for an essential pair).
    pub birth_value: f64,
    pub death_value: f64,
    pub persistence: f64,
    /// Whether its extremum is one of the reported critical points (persistent enough, away from
    /// the border): what the persistence diagram draws filled.
    pub reported: bool,
}

/// Everything the classification found, before and after the threshold.
#[derive(Debug, Clone)]
pub struct Persistence {
    /// Sublevel pairs (minimum → saddle) and superlevel pairs (maximum → saddle).
    pub minima: Vec<Pair>,
    pub maxima: Vec<Pair>,
    /// The finite range of the values.
    pub range: f64,
    /// The threshold used, relative to the range, and the rule that chose it.
    pub threshold: f64,
    pub rule: Rule,
    pub points: Vec<CriticalPoint>,
}

/// How the persistence threshold was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// At the largest gap of the persistence diagram.
    LargestGap,
    /// Given by the caller.
    Given,
}

/// Pairs below this fraction of the range are never reported by default: the bottom of the
/// diagram in which the largest gap is looked for.
pub const GAP_FLOOR: f64 = 1e-3;

/// The relative threshold at the largest gap (in ratio) of the persistences of `pairs` between
/// the whole range (the essential pairs) and [`GAP_FLOOR`] of it.
pub fn largest_gap(pairs: &[&Pair], range: f64) -> f64 {
    if range <= 0.0 {
        return 1.0;
    }
    let mut p: Vec<f64> = pairs.iter().map(|q| (q.persistence / range).min(1.0)).filter(|&r| r > GAP_FLOOR).collect();
    p.push(1.0);
    p.push(GAP_FLOOR);
    p.sort_by(|a, b| b.total_cmp(a));
    let (mut best, mut cut) = (-1.0, 1.0);
    for w in p.windows(2) {
        let gap = (w[0] / w[1]).ln();
        if gap > best {
            best = gap;
            cut = (w[0] * w[1]).sqrt();
        }
    }
    cut
}

/// The six neighbours of the triangulation.
const NEIGHBOURS: [(i64, i64); 6] = [(-1, 0), (1, 0), (0, -1), (0, 1), (1, 1), (-1, -1)];

fn neighbours(v: usize, nx: usize, ny: usize) -> impl Iterator<Item = usize> {
    let (i, j) = ((v % nx) as i64, (v / nx) as i64);
    NEIGHBOURS.iter().filter_map(move |(di, dj)| {
        let (a, b) = (i + di, j + dj);
        (a >= 0 && b >= 0 && a < nx as i64 && b < ny as i64).then_some(b as usize * nx + a as usize)
    })
}

fn find(parent: &mut [usize], mut v: usize) -> usize {
    while parent[v] != v {
        parent[v] = parent[parent[v]];
        v = parent[v];
    }
    v
}

/// The pairs of one sweep over `order` (vertices sorted so that earlier means lower in the sweep's
/// direction); `value` gives the value of a vertex.
fn sweep(order: &[usize], nx: usize, ny: usize, value: &[f64], rank: &[usize]) -> Vec<Pair> {
    let n = nx * ny;
    // A component's root is the vertex it was born at (its earliest): merges keep the oldest
    // root, so a root is its own birth vertex.
    let mut parent: Vec<usize> = (0..n).collect();
    let mut seen = vec![false; n];
    let mut pairs = Vec::new();
    for &v in order {
        seen[v] = true;
        let mut roots: Vec<usize> = neighbours(v, nx, ny).filter(|&u| seen[u]).map(|u| find(&mut parent, u)).collect();
        roots.sort_unstable();
        roots.dedup();
        if roots.is_empty() {
            continue; // a new component, born at v
        }
        // The oldest component survives (elder rule); the others die here.
        let oldest = *roots.iter().min_by_key(|&&r| rank[r]).expect("non-empty");
        for &r in &roots {
            if r != oldest {
                pairs.push(Pair {
                    birth: r,
                    death: Some(v),
                    birth_value: value[r],
                    death_value: value[v],
                    persistence: (value[v] - value[r]).abs(),
                    reported: false,
                });
                parent[r] = oldest;
            }
        }
        parent[v] = oldest;
    }
    // Components that never died: one per connected piece of the finite grid.
    let mut essential: Vec<usize> = order.iter().filter(|&&v| find(&mut parent, v) == v).copied().collect();
    essential.sort_unstable_by_key(|&b| rank[b]);
    let last = order.last().map(|&v| value[v]);
    for b in essential {
        let end = last.unwrap_or(value[b]);
        pairs.push(Pair {
            birth: b,
            death: None,
            birth_value: value[b],
            death_value: end,
            persistence: (end - value[b]).abs(),
            reported: false,
        });
    }
    pairs
}

/// Classify the grid `values[j * nx + i]` (already in the picture's scale; non-finite values are
/// holes), reporting pairs whose persistence is at least `threshold` × the finite range (None: the
/// threshold at the largest gap, module docs).
pub fn classify(x: &[f64], y: &[f64], values: &[f64], threshold: Option<f64>) -> Persistence {
    let (nx, ny) = (x.len(), y.len());
    assert_eq!(values.len(), nx * ny, "values match the grid");
    let finite: Vec<usize> = (0..nx * ny).filter(|&v| values[v].is_finite()).collect();
    let (lo, hi) =
        finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(values[v]), b.max(values[v])));
    let range = if hi > lo { hi - lo } else { 0.0 };
    let mut up = finite.clone();
    // Ties broken by index (a consistent total order, as simulation of simplicity would).
    up.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    let mut rank_up = vec![usize::MAX; nx * ny];
    for (k, &v) in up.iter().enumerate() {
        rank_up[v] = k;
    }
    let down: Vec<usize> = up.iter().rev().copied().collect();
    let mut rank_down = vec![usize::MAX; nx * ny];
    for (k, &v) in down.iter().enumerate() {
        rank_down[v] = k;
    }
    let mut minima = sweep(&up, nx, ny, values, &rank_up);
    let mut maxima = sweep(&down, nx, ny, values, &rank_down);

    let inner = |v: usize| {
        let (i, j) = (v % nx, v / nx);
        i > 0 && j > 0 && i + 1 < nx && j + 1 < ny && neighbours(v, nx, ny).all(|u| values[u].is_finite())
    };
    // The gap is looked for among the pairs that could be reported (not born on the border).
    let (threshold, rule) = match threshold {
        Some(t) => (t, Rule::Given),
        None => {
            let candidates: Vec<&Pair> = minima.iter().chain(&maxima).filter(|p| inner(p.birth)).collect();
            (largest_gap(&candidates, range), Rule::LargestGap)
        }
    };
    let cut = threshold * range;
    let keep = |p: &Pair| range > 0.0 && p.persistence >= cut;
    let point = |v: usize, kind: Kind, persistence: f64| CriticalPoint {
        index: [v % nx, v / nx],
        coords: [x[v % nx], y[v / nx]],
        loss: values[v],
        kind,
        persistence,
        relative_persistence: if range > 0.0 { persistence / range } else { 0.0 },
    };
    let mut points = Vec::new();
    for (pairs, kind) in [(&mut minima, Kind::Minimum), (&mut maxima, Kind::Maximum)] {
        for p in pairs.iter_mut().filter(|p| keep(p) && inner(p.birth)) {
            p.reported = true;
            points.push(point(p.birth, kind, p.persistence));
        }
    }
    // Saddles: where a kept pair died (a vertex where several die, as in a monkey saddle, is one
    // saddle carrying the largest of their persistences).
    let mut saddles: Vec<(usize, f64)> = Vec::new();
    for p in minima.iter().chain(&maxima).filter(|p| keep(p)) {
        let Some(d) = p.death.filter(|&d| inner(d)) else { continue };
        match saddles.iter_mut().find(|(v, _)| *v == d) {
            Some(s) => s.1 = s.1.max(p.persistence),
            None => saddles.push((d, p.persistence)),
        }
    }
    points.extend(saddles.into_iter().map(|(v, p)| point(v, Kind::Saddle, p)));
    points.sort_by(|a, b| b.persistence.total_cmp(&a.persistence));
    Persistence { minima, maxima, range, threshold, rule, points }
}

impl Persistence {
    /// critical_points.json: the method, the threshold, counts and the points (whose `loss` the
    /// caller has put back in loss units).
    pub fn to_json(&self, scale: super::Scale) -> serde_json::Value {
        let count = |k: Kind| self.points.iter().filter(|p| p.kind == k).count();
        let points: Vec<_> = self
            .points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "kind": p.kind, "index": p.index, "coords": p.coords, "loss": p.loss,
                    "persistence": p.persistence, "relative_persistence": p.relative_persistence,
                })
            })
            .collect();
        serde_json::json!({
            "method": "persistence of sublevel (minima) and superlevel (maxima) sets on the triangulated grid; saddles are where a kept pair dies; extrema on the grid's border are not reported",
            "scale": scale,
            "persistence_units": match scale { super::Scale::Log => "log10 loss", super::Scale::Linear => "loss" },
            "threshold": self.threshold,
            "threshold_rule": self.rule,
            "range": self.range,
            "index": "[i, j] = column (x), row (y) of loss[j, i]",
            "counts": {"minimum": count(Kind::Minimum), "maximum": count(Kind::Maximum), "saddle": count(Kind::Saddle)},
            "points": points,
            "pairs": {"minima": self.minima.len(), "maxima": self.maxima.len()},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64).collect()
    }

    /// Deterministic noise in [-a, a].
    fn noisy(z: &mut [f64], a: f64, seed: u64) {
        let mut s = seed;
        for v in z.iter_mut() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *v += a * (((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0);
        }
    }

    fn field(n: usize, f: impl Fn(f64, f64) -> f64, noise: f64, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (x, y) = (grid(n, -2.0, 2.0), grid(n, -2.0, 2.0));
        let f = &f;
        let mut z: Vec<f64> = y.iter().flat_map(|&b| x.iter().map(move |&a| f(a, b))).collect();
        let (lo, hi) = z.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        noisy(&mut z, noise * (hi - lo), seed);
        (x, y, z)
    }

    fn counts(p: &Persistence) -> [usize; 3] {
        let c = |k| p.points.iter().filter(|q| q.kind == k).count();
        [c(Kind::Minimum), c(Kind::Saddle), c(Kind::Maximum)]
    }

    /// The default: the threshold at the largest gap.
    const DEFAULT: Option<f64> = None;

    #[test]
    fn a_noisy_double_well_has_two_minima_and_one_saddle() {
        for seed in 0..20 {
            let (x, y, z) = field(61, |a, b| (a * a - 1.0).powi(2) + 0.5 * b * b, 0.002, seed);
            let p = classify(&x, &y, &z, DEFAULT);
            assert_eq!(counts(&p), [2, 1, 0], "seed {seed}: {:?}", p.points);
            let s = p.points.iter().find(|q| q.kind == Kind::Saddle).unwrap();
            assert!(s.coords[0].abs() < 0.25 && s.coords[1].abs() < 0.25, "{s:?}");
            for m in p.points.iter().filter(|q| q.kind == Kind::Minimum) {
                assert!((m.coords[0].abs() - 1.0).abs() < 0.15 && m.coords[1].abs() < 0.3, "{m:?}");
            }
        }
    }

    #[test]
    fn without_a_threshold_noise_gives_many_minima() {
        // The same noisy double well has many local minima: the threshold is what removes them.
        let (x, y, z) = field(61, |a, b| (a * a - 1.0).powi(2) + 0.5 * b * b, 0.002, 3);
        let all = classify(&x, &y, &z, Some(0.0));
        assert!(counts(&all)[0] >= 10, "{:?}", counts(&all));
        assert_eq!(counts(&classify(&x, &y, &z, DEFAULT))[0], 2);
    }

    #[test]
    fn a_noisy_double_well_seen_in_log10_still_has_two_minima() {
        // Noise of 0.2% of the range is ~10% of the log10 range near the minima, where the loss
        // is small: a fixed 2% threshold found 4 minima and 3 saddles there.
        for seed in 0..20 {
            let (x, y, z) = field(61, |a, b| (a * a - 1.0).powi(2) + 0.5 * b * b + 0.05, 0.002, seed);
            let logs: Vec<f64> = z.iter().map(|v| v.max(1e-3).log10()).collect();
            let p = classify(&x, &y, &logs, DEFAULT);
            assert_eq!(counts(&p), [2, 1, 0], "seed {seed}: {:?}", p.points);
            assert_eq!(p.rule, Rule::LargestGap);
        }
        let (x, y, z) = field(61, |a, b| (a * a - 1.0).powi(2) + 0.5 * b * b + 0.05, 0.002, 1);
        let logs: Vec<f64> = z.iter().map(|v| v.max(1e-3).log10()).collect();
        assert!(counts(&classify(&x, &y, &logs, Some(0.02)))[0] > 2, "the fixed 2% rule is what failed");
    }

    #[test]
    fn the_largest_gap_separates_few_large_persistences_from_many_small_ones() {
        let pair = |persistence| Pair {
            birth: 0,
            death: Some(1),
            birth_value: 0.0,
            death_value: 0.0,
            persistence,
            reported: false,
        };
        let pairs: Vec<Pair> = [0.3, 0.004, 0.003, 0.0035, 0.002].into_iter().map(pair).collect();
        let refs: Vec<&Pair> = pairs.iter().collect();
        let t = largest_gap(&refs, 1.0);
        assert!(t < 0.3 && t > 0.004, "{t}");
        // Noise only: only the essential pairs (the whole range) are above the cut.
        let noise: Vec<Pair> = [0.004, 0.003, 0.002].into_iter().map(pair).collect();
        let t = largest_gap(&noise.iter().collect::<Vec<_>>(), 1.0);
        assert!(t > 0.004 && t < 1.0, "{t}");
        assert!(largest_gap(&[], 0.0) >= 1.0);
        // A noise-free double well: one finite pair, still found (the diagram ends at its floor).
        let (x, y, z) = field(61, |a, b| (a * a - 1.0).powi(2) + 0.5 * b * b, 0.0, 0);
        assert_eq!(counts(&classify(&x, &y, &z, DEFAULT)), [2, 1, 0]);
    }

    #[test]
    fn the_pairs_marked_reported_are_the_reported_extrema() {
        for seed in 0..5 {
            let (x, y, z) = field(41, |a, b| (3.0 * a).sin() * (2.0 * b).cos() + 0.3 * a, 0.01, seed);
            for t in [None, Some(0.0), Some(0.05)] {
                let p = classify(&x, &y, &z, t);
                let c = counts(&p);
                assert_eq!(p.minima.iter().filter(|q| q.reported).count(), c[0], "seed {seed} {t:?}");
                assert_eq!(p.maxima.iter().filter(|q| q.reported).count(), c[2], "seed {seed} {t:?}");
                for q in p.minima.iter().filter(|q| q.reported) {
                    assert!(p
                        .points
                        .iter()
                        .any(|c| c.kind == Kind::Minimum && c.index == [q.birth % 41, q.birth / 41]));
                }
            }
        }
    }

    #[test]
    fn a_noisy_bowl_has_one_minimum() {
        for seed in 0..20 {
            let (x, y, z) = field(51, |a, b| a * a + 2.0 * b * b + 0.3 * a * b, 0.002, seed);
            let p = classify(&x, &y, &z, DEFAULT);
            assert_eq!(counts(&p), [1, 0, 0], "seed {seed}: {:?}", p.points);
            assert!((p.points[0].relative_persistence - 1.0).abs() < 0.01, "the global minimum spans the range");
        }
    }

    #[test]
    fn a_monkey_saddle_is_one_saddle() {
        let (x, y, z) = field(41, |a, b| a * a * a - 3.0 * a * b * b, 0.0, 0);
        let p = classify(&x, &y, &z, DEFAULT);
        assert_eq!(counts(&p), [0, 1, 0], "{:?}", p.points);
        assert_eq!(p.points[0].coords, [0.0, 0.0]);
        let (x, y, z) = field(41, |a, b| a * a * a - 3.0 * a * b * b, 0.002, 7);
        let p = classify(&x, &y, &z, DEFAULT);
        let saddles: Vec<_> = p.points.iter().filter(|q| q.kind == Kind::Saddle).collect();
        assert_eq!(counts(&p)[0] + counts(&p)[2], 0, "{:?}", p.points);
        assert!(!saddles.is_empty() && saddles.iter().all(|s| s.coords[0].hypot(s.coords[1]) < 0.3), "{saddles:?}");
    }

    #[test]
    fn a_peak_is_a_maximum_and_a_plane_has_nothing() {
        let (x, y, z) = field(31, |a, b| -(a * a + b * b), 0.0, 0);
        assert_eq!(counts(&classify(&x, &y, &z, DEFAULT)), [0, 0, 1]);
        let (x, y, z) = field(31, |a, b| a + 0.5 * b, 0.0, 0);
        assert_eq!(counts(&classify(&x, &y, &z, DEFAULT)), [0, 0, 0]);
    }

    #[test]
    fn holes_are_skipped_and_their_border_is_border() {
        let (x, y, mut z) = field(31, |a, b| a * a + b * b, 0.0, 0);
        // A hole at the minimum itself: no minimum can be claimed there.
        z[15 * 31 + 15] = f64::NAN;
        let p = classify(&x, &y, &z, DEFAULT);
        assert!(p.points.iter().all(|q| q.loss.is_finite()));
        assert_eq!(counts(&p)[0], 0, "{:?}", p.points);
        // Everything non-finite: nothing, and no panic.
        let z = vec![f64::NAN; 31 * 31];
        assert!(classify(&x, &y, &z, DEFAULT).points.is_empty());
        // A constant grid: no range, nothing.
        assert!(classify(&x, &y, &vec![1.0; 31 * 31], DEFAULT).points.is_empty());
    }

    #[test]
    fn every_minimum_pair_ends_at_a_later_vertex() {
        let (x, y, z) = field(25, |a, b| (3.0 * a).sin() * (2.0 * b).cos(), 0.01, 5);
        let p = classify(&x, &y, &z, Some(0.0));
        for q in &p.minima {
            if let Some(d) = q.death {
                assert!(z[d] >= z[q.birth]);
            }
        }
        for q in &p.maxima {
            if let Some(d) = q.death {
                assert!(z[d] <= z[q.birth]);
            }
        }
        // One essential pair each way on a connected grid.
        assert_eq!(p.minima.iter().filter(|q| q.death.is_none()).count(), 1);
        assert_eq!(p.maxima.iter().filter(|q| q.death.is_none()).count(), 1);
    }
}
