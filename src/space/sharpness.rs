//! Sharpness and flatness of a loss at a point, for any objective that gives the loss (and the
//! error) at θ + δ and its gradient: the average case (Monte-Carlo), the worst case (projected
//! gradient ascent in an l2 or l∞ ball, restarts, m-sharpness over parts of the data) and PAC-Bayes
//! flatness (bisection on log σ with the same draws at every level). Definitions:
//! docs/landscape.md. Perturbations δ are flat float32 tensors over the parameter set, on the
//! objective's device; c is the scale vector (same shape), δ = c ⊙ u.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::options::{PNorm, PacQuantity};

/// What a measure needs of a network at θ.
pub trait Objective {
    /// Entries of a perturbation (parameters in the set).
    fn dim(&self) -> i64;
    fn device(&self) -> Device;
    /// The parts the samples are split into for m-sharpness (consecutive batches of m).
    fn parts(&self) -> usize;
    /// The loss and the error (1 − accuracy; NaN for regression) at θ + δ, over every sample
    /// (`part` None) or part `part`.
    fn value(&mut self, delta: &Tensor, part: Option<usize>) -> Result<(f64, f64)>;
    /// The loss at θ + δ over the samples of `part` (None: all) and its gradient with respect to δ.
    fn gradient(&mut self, delta: &Tensor, part: Option<usize>) -> Result<(f64, Tensor)>;
    /// The value at a random draw (index `draw`) of a Monte-Carlo measure: `value` over every
    /// sample, or an estimate of it whose error is independent from draw to draw and the same for
    /// the same index (the network's `--rel-error`).
    fn draw_value(&mut self, delta: &Tensor, draw: u64) -> Result<(f64, f64)> {
        let _ = draw;
        self.value(delta, None)
    }
}

/// A splitmix64 stream: seeds of the draws, the same on every device and in every shard.
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// z ~ N(0, I) of `dim` entries from its own seeded CPU generator (draw `index` of `seed`).
pub fn gaussian(dim: i64, seed: u64, index: u64, device: Device) -> Tensor {
    let s = (mix(seed, index) >> 1) as i64;
    crate::space::directions::seeded(s, || Tensor::randn([dim], (Kind::Float, Device::Cpu))).to_device(device)
}

/// A Monte-Carlo estimate: the mean increase over `samples` draws and its standard error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Average {
    pub value: f64,
    pub stderr: f64,
    pub samples: usize,
    /// The loss at θ.
    pub base: f64,
}

/// E_z[L(θ + ρ c⊙z)] − L(θ) over `m` draws (`seed`).
pub fn average(obj: &mut dyn Objective, c: &Tensor, rho: f64, m: usize, seed: u64) -> Result<Average> {
    let zero = c.zeros_like();
    let base = obj.value(&zero, None)?.0;
    let mut diffs = Vec::with_capacity(m);
    for i in 0..m {
        let z = gaussian(obj.dim(), seed, i as u64, obj.device());
        diffs.push(obj.draw_value(&(c * z * rho), i as u64)?.0 - base);
    }
    let (value, stderr) = mean_stderr(&diffs);
    Ok(Average { value, stderr, samples: m, base })
}

fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// How the worst case is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AscentOptions {
    pub norm: PNorm,
    /// Ascent steps per restart (one gradient over the samples each).
    pub steps: usize,
    /// Starts: the first from δ = 0, the others from random points of the ball.
    pub restarts: usize,
    pub seed: u64,
}

/// What an ascent found.
#[derive(Debug)]
pub struct Ascent {
    /// The largest increase found, L(θ + δ) − L(θ) ≥ 0.
    pub value: f64,
    /// Where (δ = c ⊙ u, ‖u‖_p ≤ ρ).
    pub delta: Tensor,
    /// The loss at every point the best restart evaluated, its start first.
    pub trace: Vec<f64>,
    pub base: f64,
    /// Gradients taken in all.
    pub gradients: usize,
}

/// u projected onto the ball ‖u‖_p ≤ ρ.
fn project(u: Tensor, rho: f64, norm: PNorm) -> Tensor {
    match norm {
        PNorm::L2 => {
            let n = u.norm().double_value(&[]);
            if n > rho {
                u * (rho / n)
            } else {
                u
            }
        }
        PNorm::Linf => u.clamp(-rho, rho),
    }
}

/// A random point of the ball (l2: uniform in radius and direction; l∞: uniform in the box).
fn random_start(dim: i64, rho: f64, norm: PNorm, seed: u64, device: Device) -> Tensor {
    let z = gaussian(dim, seed, 0, device);
    match norm {
        PNorm::L2 => {
            let r = (mix(seed, 1) >> 11) as f64 / (1u64 << 53) as f64;
            let n = z.norm().double_value(&[]).max(1e-30);
            z * (rho * r / n)
        }
        // Φ(z) is uniform in (0, 1).
        PNorm::Linf => ((z / std::f64::consts::SQRT_2).erf() * rho).clamp(-rho, rho),
    }
}

/// max over ‖δ ⊘ c‖_p ≤ ρ of L_part(θ + δ) − L_part(θ), by projected gradient ascent on u = δ ⊘ c:
/// from the best point so far, a step of length α along the normalized gradient (l2) or its sign
/// (l∞), projected back onto the ball; a step that does not raise the loss halves α (from α = 2ρ,
/// the diameter: a coordinate of an l∞ ascent can cross the whole box).
/// Every step costs one gradient; the best point visited is the result.
pub fn worst(obj: &mut dyn Objective, c: &Tensor, rho: f64, o: AscentOptions, part: Option<usize>) -> Result<Ascent> {
    let dim = obj.dim();
    let dev = obj.device();
    let steps = o.steps.max(1);
    let zero = c.zeros_like();
    let base = obj.value(&zero, part)?.0;
    let mut best: Option<(f64, Tensor, Vec<f64>)> = None;
    let mut gradients = 0;
    for r in 0..o.restarts.max(1) {
        let start = match (r, o.norm) {
            (0, _) => zero.copy(),
            // l∞: the ascent ends at a vertex that is a local maximum; the second start is the
            // vertex at the signs of an l2 ascent in the ball around the box (√d ρ), which for a
            // quadratic points along its top eigenvector.
            (1, PNorm::Linf) => {
                let l2 = AscentOptions { norm: PNorm::L2, restarts: 1, ..o };
                let a = worst(obj, c, rho * (dim as f64).sqrt(), l2, part)?;
                gradients += a.gradients;
                let u = &a.delta / c.where_scalarother(&c.ne(0.0), 1.0);
                u.sign() * rho
            }
            _ => random_start(dim, rho, o.norm, mix(o.seed, 100 + r as u64), dev),
        };
        let (l, g) = obj.gradient(&(c * &start), part)?;
        gradients += 1;
        let mut trace = vec![l];
        let (mut top, mut u, mut gu) = (l, start, c * g);
        let mut alpha = 2.0 * rho;
        for t in 1..steps {
            let n = gu.norm().double_value(&[]);
            if !n.is_finite() {
                break;
            }
            // At a stationary point (an exact minimum) the gradient gives no direction: a seeded
            // random one instead.
            let g = if n > 0.0 { gu.shallow_clone() } else { gaussian(dim, mix(o.seed, 7 + r as u64), t as u64, dev) };
            let dir = match o.norm {
                PNorm::L2 => {
                    let n = g.norm().double_value(&[]);
                    g / n
                }
                PNorm::Linf => g.sign(),
            };
            let cand = project(&u + dir * alpha, rho, o.norm);
            let (l, g) = obj.gradient(&(c * &cand), part)?;
            gradients += 1;
            trace.push(l);
            if l > top {
                (top, u, gu) = (l, cand, c * g);
            } else {
                alpha /= 2.0;
            }
        }
        if best.as_ref().is_none_or(|b| top > b.0) {
            best = Some((top, u, trace));
        }
    }
    let (top, u, trace) = best.expect("at least one restart");
    Ok(Ascent { value: (top - base).max(0.0), delta: c * u, trace, base, gradients })
}

/// m-sharpness: the mean over the parts of each part's own worst case (each its own δ), with the
/// standard error over parts; also every part's value.
pub fn m_sharpness(obj: &mut dyn Objective, c: &Tensor, rho: f64, o: AscentOptions) -> Result<(Average, Vec<f64>)> {
    let mut values = Vec::with_capacity(obj.parts());
    let mut bases = Vec::with_capacity(obj.parts());
    for b in 0..obj.parts() {
        let a = worst(obj, c, rho, AscentOptions { seed: mix(o.seed, 1000 + b as u64), ..o }, Some(b))?;
        values.push(a.value);
        bases.push(a.base);
    }
    let (value, stderr) = mean_stderr(&values);
    let base = bases.iter().sum::<f64>() / bases.len().max(1) as f64;
    Ok((Average { value, stderr, samples: values.len(), base }, values))
}

/// PAC-Bayes flatness: σ* with its standard error, 1/σ*², and the levels tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PacBayes {
    pub sigma: f64,
    /// From the draws' spread at σ* and the local slope of the increase in σ (delta method).
    pub stderr: f64,
    pub measure: f64,
    /// Every σ tried and the mean increase of the quantity there.
    pub levels: Vec<[f64; 2]>,
    /// The quantity at θ.
    pub base: f64,
    pub samples: usize,
    /// σ* is only a bound: the increase stayed below T up to the largest σ tried (or above it down
    /// to the smallest).
    pub bracketed: bool,
}

/// Bisection steps on log σ once bracketed (σ* to 1.7e-4 of itself).
const BISECTIONS: usize = 14;
/// Factor of the bracketing search, and its range.
const BRACKET: f64 = 4.0;
const SIGMA_RANGE: (f64, f64) = (1e-8, 1e4);

/// The per-draw increases of the quantity at σ, recorded as a level.
struct Levels<'a> {
    draws: &'a [Tensor],
    quantity: PacQuantity,
    base: f64,
    tried: Vec<[f64; 2]>,
}

impl Levels<'_> {
    fn pick(&self, v: (f64, f64)) -> f64 {
        match self.quantity {
            PacQuantity::Loss => v.0,
            PacQuantity::Error => v.1,
        }
    }

    fn at(&mut self, obj: &mut dyn Objective, sigma: f64) -> Result<(f64, Vec<f64>)> {
        let mut d = Vec::with_capacity(self.draws.len());
        for (i, z) in self.draws.iter().enumerate() {
            let v = obj.draw_value(&(z * sigma), i as u64)?;
            d.push(self.pick(v) - self.base);
        }
        let mean = mean_stderr(&d).0;
        self.tried.push([sigma, mean]);
        Ok((mean, d))
    }
}

/// The largest σ with E_z[Q(θ + σ c⊙z)] − Q(θ) ≤ `threshold`, with the same `m` draws at every σ:
/// bracketed by factors of 4 from σ = 1, then bisected on log σ.
pub fn pacbayes(
    obj: &mut dyn Objective,
    c: &Tensor,
    quantity: PacQuantity,
    threshold: f64,
    m: usize,
    seed: u64,
) -> Result<PacBayes> {
    let draws: Vec<Tensor> = (0..m).map(|i| c * gaussian(obj.dim(), seed, i as u64, obj.device())).collect();
    let mut lv = Levels { draws: &draws, quantity, base: 0.0, tried: Vec::new() };
    lv.base = lv.pick(obj.value(&c.zeros_like(), None)?);
    // Bracket: f(lo) ≤ T < f(hi).
    let mut s = 1.0;
    let first = lv.at(obj, s)?;
    let below = first.0 <= threshold;
    let mut near = (s, first);
    let mut far = None;
    loop {
        s = if below { s * BRACKET } else { s / BRACKET };
        if !(SIGMA_RANGE.0..=SIGMA_RANGE.1).contains(&s) {
            break;
        }
        let v = lv.at(obj, s)?;
        if (v.0 <= threshold) != below {
            far = Some((s, v));
            break;
        }
        near = (s, v);
    }
    let Some(far) = far else {
        let sigma = near.0;
        let Levels { tried, base, .. } = lv;
        return Ok(PacBayes {
            sigma,
            stderr: f64::NAN,
            measure: 1.0 / (sigma * sigma),
            levels: tried,
            base,
            samples: m,
            bracketed: false,
        });
    };
    let (mut lo, mut hi) = if below { (near, far) } else { (far, near) };
    // The slope d ln f / d ln σ across the first bracket (a factor of 4; 2 for a quadratic).
    let (flo, fhi) = (lo.1 .0, hi.1 .0);
    let slope = if flo > 0.0 && fhi > 0.0 { (fhi / flo).ln() / (hi.0 / lo.0).ln() } else { f64::NAN };
    for _ in 0..BISECTIONS {
        let mid = (lo.0 * hi.0).sqrt();
        let v = lv.at(obj, mid)?;
        if v.0 <= threshold {
            lo = (mid, v);
        } else {
            hi = (mid, v);
        }
    }
    // σ* at the bracket's geometric middle; its error from the draws' spread there and the slope
    // (delta method: se(σ*) = σ* · se(f)/f / slope).
    let sigma = (lo.0 * hi.0).sqrt();
    let (fm, se) = mean_stderr(&hi.1 .1);
    let stderr = sigma * (se / fm.abs()) / slope.abs();
    let Levels { tried, base, .. } = lv;
    Ok(PacBayes { sigma, stderr, measure: 1.0 / (sigma * sigma), levels: tried, base, samples: m, bracketed: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L(θ + δ) = L0 + ½ δᵀHδ with a dense symmetric H, parts splitting H = Σ_b H_b / B.
    struct Quadratic {
        h: Tensor,
        parts: Vec<Tensor>,
        l0: f64,
        calls: usize,
    }

    impl Quadratic {
        fn new(n: i64, seed: i64, parts: usize) -> Quadratic {
            let a = crate::space::directions::seeded(seed, || Tensor::randn([n, n], (Kind::Double, Device::Cpu)));
            let h = a.matmul(&a.tr()) / n as f64 + Tensor::eye(n, (Kind::Double, Device::Cpu)) * 0.1;
            let parts = (0..parts)
                .map(|b| {
                    let w = crate::space::directions::seeded(seed + 1 + b as i64, || {
                        Tensor::rand([n], (Kind::Double, Device::Cpu))
                    });
                    let d = w.diag(0);
                    d.matmul(&h).matmul(&d) * 2.0
                })
                .collect();
            Quadratic { h, parts, l0: 0.3, calls: 0 }
        }
        fn hess(&self, part: Option<usize>) -> &Tensor {
            part.map_or(&self.h, |b| &self.parts[b])
        }
    }

    impl Objective for Quadratic {
        fn dim(&self) -> i64 {
            self.h.size()[0]
        }
        fn device(&self) -> Device {
            Device::Cpu
        }
        fn parts(&self) -> usize {
            self.parts.len()
        }
        fn value(&mut self, d: &Tensor, part: Option<usize>) -> Result<(f64, f64)> {
            self.calls += 1;
            let d = d.to_kind(Kind::Double);
            let l = self.l0 + 0.5 * d.dot(&self.hess(part).mv(&d)).double_value(&[]);
            Ok((l, 0.0))
        }
        fn gradient(&mut self, d: &Tensor, part: Option<usize>) -> Result<(f64, Tensor)> {
            let (l, _) = self.value(d, part)?;
            Ok((l, self.hess(part).mv(&d.to_kind(Kind::Double)).to_kind(Kind::Float)))
        }
    }

    fn scale(n: i64) -> Tensor {
        Tensor::linspace(0.5, 1.5, n, (Kind::Float, Device::Cpu))
    }

    /// C H C and its eigenvalues.
    fn chc(q: &Quadratic, c: &Tensor) -> Tensor {
        let d = c.to_kind(Kind::Double).diag(0);
        d.matmul(&q.h).matmul(&d)
    }

    #[test]
    fn the_average_case_is_half_rho_squared_trace_chc_within_its_standard_error() {
        let n = 30;
        let mut q = Quadratic::new(n, 1, 1);
        let c = scale(n);
        let m = chc(&q, &c);
        let rho = 0.2;
        let exact = 0.5 * rho * rho * m.trace().double_value(&[]);
        // Per-draw standard deviation ρ²‖CHC‖_F / √2, so the standard error over M draws:
        let exact_se =
            rho * rho * m.square().sum(Kind::Double).double_value(&[]).sqrt() / 2f64.sqrt() / (400f64).sqrt();
        let a = average(&mut q, &c, rho, 400, 7).unwrap();
        assert!((a.value - exact).abs() <= 4.0 * a.stderr, "{} vs {exact} ± {}", a.value, a.stderr);
        assert!(a.stderr / exact_se < 1.5 && exact_se / a.stderr < 1.5, "stderr {} vs exact {exact_se}", a.stderr);
        // The same seed gives the same estimate; another seed another.
        let b = average(&mut q, &c, rho, 400, 7).unwrap();
        assert_eq!(a, b);
        assert_ne!(average(&mut q, &c, rho, 400, 8).unwrap().value, a.value);
    }

    #[test]
    fn the_l2_worst_case_is_half_rho_squared_lambda_max_of_chc() {
        let n = 25;
        let mut q = Quadratic::new(n, 2, 1);
        let c = scale(n);
        let lmax = chc(&q, &c).linalg_eigvalsh("L").max().double_value(&[]);
        let rho = 0.5;
        let exact = 0.5 * rho * rho * lmax;
        let o = AscentOptions { norm: PNorm::L2, steps: 200, restarts: 3, seed: 1 };
        let w = worst(&mut q, &c, rho, o, None).unwrap();
        assert!(w.value <= exact * (1.0 + 1e-6), "above the true maximum: {} > {exact}", w.value);
        assert!(w.value >= 0.99 * exact, "{} vs {exact}", w.value);
        // δ lies in the ball: ‖δ ⊘ c‖₂ ≤ ρ.
        let u = (&w.delta / &c).norm().double_value(&[]);
        assert!(u <= rho * (1.0 + 1e-6), "{u}");
        // The value is the loss at δ.
        let (l, _) = q.value(&w.delta, None).unwrap();
        assert!((l - q.l0 - w.value).abs() <= 1e-6 * w.value.max(1e-12));
        assert_eq!(w.trace.len(), 200);
        assert_eq!(w.gradients, 600);
    }

    #[test]
    fn the_linf_worst_case_is_the_best_vertex_of_the_box() {
        let n = 8;
        let mut q = Quadratic::new(n, 3, 1);
        let c = scale(n);
        let m = chc(&q, &c);
        let rho = 0.3;
        // A convex quadratic's maximum on a box is at a vertex: enumerate the 256.
        let mut exact = 0.0f64;
        for bits in 0..(1u32 << n) {
            let v: Vec<f64> = (0..n).map(|i| if bits >> i & 1 == 1 { rho } else { -rho }).collect();
            let u = Tensor::from_slice(&v);
            exact = exact.max(0.5 * u.dot(&m.mv(&u)).double_value(&[]));
        }
        let o = AscentOptions { norm: PNorm::Linf, steps: 100, restarts: 8, seed: 2 };
        let w = worst(&mut q, &c, rho, o, None).unwrap();
        assert!(w.value <= exact * (1.0 + 1e-6) && w.value >= 0.99 * exact, "{} vs {exact}", w.value);
        let u = (&w.delta / &c).abs().max().double_value(&[]);
        assert!(u <= rho * (1.0 + 1e-6), "{u}");
    }

    #[test]
    fn m_sharpness_is_the_mean_of_the_parts_worst_cases() {
        let n = 12;
        let mut q = Quadratic::new(n, 4, 3);
        let c = scale(n);
        let o = AscentOptions { norm: PNorm::L2, steps: 50, restarts: 1, seed: 3 };
        let (m, parts) = m_sharpness(&mut q, &c, 0.2, o).unwrap();
        assert_eq!(parts.len(), 3);
        for (b, v) in parts.iter().enumerate() {
            let one = worst(&mut q, &c, 0.2, AscentOptions { seed: mix(3, 1000 + b as u64), ..o }, Some(b)).unwrap();
            assert_eq!(one.value, *v);
        }
        assert!((m.value - parts.iter().sum::<f64>() / 3.0).abs() < 1e-15);
    }

    #[test]
    fn pacbayes_on_the_loss_is_the_root_of_2t_over_trace_chc() {
        let n = 30;
        let mut q = Quadratic::new(n, 5, 1);
        let c = scale(n);
        let t = 0.05;
        let exact = (2.0 * t / chc(&q, &c).trace().double_value(&[])).sqrt();
        let p = pacbayes(&mut q, &c, PacQuantity::Loss, t, 300, 9).unwrap();
        assert!(p.bracketed);
        assert!((p.sigma - exact).abs() <= 4.0 * p.stderr, "{} vs {exact} ± {}", p.sigma, p.stderr);
        // For a quadratic, E over the fixed draws is ½σ² mean(zᵀCHCz) exactly: the relative error
        // of σ* is half that of the mean.
        let draws: Vec<f64> = (0..300)
            .map(|i| {
                let z = (&c * gaussian(n, 9, i, Device::Cpu)).to_kind(Kind::Double);
                0.5 * z.dot(&q.h.mv(&z)).double_value(&[])
            })
            .collect();
        let (mq, seq) = mean_stderr(&draws);
        let exact_se = exact * 0.5 * seq / mq;
        assert!(p.stderr / exact_se < 1.5 && exact_se / p.stderr < 1.5, "{} vs {exact_se}", p.stderr);
        assert!((p.measure - 1.0 / (p.sigma * p.sigma)).abs() < 1e-9 * p.measure);
        // Common random numbers: the mean increase rises with σ along the levels.
        let mut l = p.levels.clone();
        l.sort_by(|a, b| a[0].total_cmp(&b[0]));
        assert!(l.windows(2).all(|w| w[1][1] >= w[0][1]));
    }
}
