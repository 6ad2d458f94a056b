//! Eigenvalues, trace and spectral density of a symmetric operator known only through its
//! products v ↦ Hv (the Hessian of a loss): Lanczos with full reorthogonalization for the
//! extreme eigenpairs, Hutchinson's estimator for the trace, and stochastic Lanczos quadrature
//! for the density (docs/landscape.md). Vectors are flat float32 tensors on the operator's device.
//!
//! When an extreme eigenpair counts as found: the Krylov space has at least
//! max(2K + 1, [`MIN_KRYLOV`]) vectors (ARPACK's rule, and never a handful: a small space has
//! Ritz values of the bulk at its ends), and the pair's residual ‖Hv − λv‖, computed with one
//! more product, is within `tol` of |λ| itself (ARPACK's `tol`), or, for an eigenvalue that is
//! ≈ 0 (|λ| below [`NEAR_ZERO`] of the largest |λ|), within `tol` of that floor. A residual
//! measured against max|λ| instead lets a Ritz value of the bulk near 0 pass long before the
//! small negative end of a Hessian whose λmax is large has been found. A shift (H − σI) would
//! not help Lanczos: the Krylov space of H − σI is the Krylov space of H.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, Setting};
pub use crate::options::{TraceMethod, Which};

/// The operator: a product v ↦ Hv.
pub type Operator<'a> = dyn FnMut(&Tensor) -> Result<Tensor> + 'a;

/// The operator on several vectors at once, [v_1, …, v_k] ↦ [Hv_1, …, Hv_k]: an operator whose
/// products share work (one pass over the data for all of them) makes independent probes cheaper
/// this way.
pub type BlockOperator<'a> = dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>> + 'a;

/// Vectors the Krylov space holds, at the least, before any eigenpair is accepted.
pub const MIN_KRYLOV: usize = 20;

/// An eigenvalue below this fraction of the largest |λ| found counts as ≈ 0: its residual is
/// measured against NEAR_ZERO × max|λ| instead of against |λ|.
pub const NEAR_ZERO: f64 = 1e-3;

/// Which test a reported eigenpair passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Convergence {
    /// ‖Hv − λv‖ ≤ tol × |λ|.
    Relative,
    /// |λ| < NEAR_ZERO × max|λ| and ‖Hv − λv‖ ≤ tol × NEAR_ZERO × max|λ|: λ is ≈ 0.
    NearZero,
    /// Neither, within the steps allowed (or power iteration stopped by its step limit).
    NotConverged,
}

/// The relative residual of a pair with eigenvalue `value` and residual norm `norm`, where
/// `scale` is the largest |λ| found, and the test it passes at `tol`.
pub fn judge(value: f64, norm: f64, scale: f64, tol: f64) -> (f64, Convergence) {
    let floor = NEAR_ZERO * scale;
    let relative = norm / value.abs().max(floor).max(1e-300);
    let passed = relative <= tol; // false for NaN
    let test = if !passed {
        Convergence::NotConverged
    } else if value.abs() >= floor {
        Convergence::Relative
    } else {
        Convergence::NearZero
    };
    (relative, test)
}

/// An eigenpair: its unit vector, the residual norm ‖Hv − λv‖ (which bounds the distance from λ
/// to an eigenvalue of H), that norm relative to max(|λ|, NEAR_ZERO × max|λ|), and the test it passed.
#[derive(Debug)]
pub struct Eigenpair {
    pub value: f64,
    pub vector: Tensor,
    pub residual: f64,
    pub residual_norm: f64,
    pub convergence: Convergence,
}

/// The extreme eigenpairs found.
#[derive(Debug)]
pub struct Extremes {
    /// Largest first.
    pub largest: Vec<Eigenpair>,
    /// Smallest (most negative) first.
    pub smallest: Vec<Eigenpair>,
    /// Lanczos steps taken (one product each; the residual checks are counted in `products`).
    pub steps: usize,
    /// Products of the operator in all.
    pub products: usize,
    /// Every reported pair passed its test.
    pub converged: bool,
}

/// How far Lanczos goes.
#[derive(Debug, Clone, Copy)]
pub struct LanczosOptions {
    pub k: usize,
    pub which: Which,
    /// The relative residual every reported pair must reach (module docs).
    pub tol: f64,
    /// Give up (and report the residuals reached) after this many steps.
    pub max_steps: usize,
    pub seed: u64,
}

impl LanczosOptions {
    /// The Krylov dimension reached before any pair is accepted (at most `limit`).
    pub fn min_krylov(&self, limit: usize) -> usize {
        (2 * self.k + 1).max(MIN_KRYLOV).min(limit)
    }
}

/// A splitmix64 stream: the random vectors here, reproducible on every device and thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A Rademacher vector (entries ±1, each with probability 1/2) of `dim` entries, from `seed`.
pub fn rademacher(dim: i64, seed: u64, device: Device) -> Tensor {
    let mut rng = Rng(seed ^ 0x6C6F_7373_6361_7065);
    let mut v = Vec::with_capacity(dim as usize);
    while (v.len() as i64) < dim {
        let bits = rng.next();
        for b in 0..64.min(dim as usize - v.len()) {
            v.push(if (bits >> b) & 1 == 1 { 1.0f32 } else { -1.0 });
        }
    }
    Tensor::from_slice(&v).to_device(device)
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.dot(b).double_value(&[])
}

fn norm(a: &Tensor) -> f64 {
    a.norm().double_value(&[])
}

/// A Lanczos run in progress: the orthonormal basis, the tridiagonal matrix, the next vector.
struct Lanczos {
    q: Vec<Tensor>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    /// The unnormalized next residual vector and its norm (β of the last step).
    next: Option<Tensor>,
}

impl Lanczos {
    fn new(start: Tensor) -> Lanczos {
        let n = norm(&start);
        Lanczos { q: vec![start / n], alpha: Vec::new(), beta: Vec::new(), next: None }
    }

    /// One step: H q_j, orthogonalized against every earlier q (twice), appended. Returns false
    /// when the Krylov space is exhausted (the next vector vanishes).
    fn step(&mut self, op: &mut Operator) -> Result<bool> {
        let w = op(self.advance())?;
        Ok(self.absorb(w))
    }

    /// The vector the next step multiplies, q_j.
    fn advance(&mut self) -> &Tensor {
        if let Some(w) = self.next.take() {
            let b = *self.beta.last().expect("a step before");
            self.q.push(w / b);
        }
        self.q.last().expect("a start vector")
    }

    /// The step's second half, given w = H q_j: false when the Krylov space is exhausted.
    fn absorb(&mut self, mut w: Tensor) -> bool {
        let j = self.q.len() - 1;
        let a = dot(&w, &self.q[j]);
        self.alpha.push(a);
        let basis = Tensor::stack(&self.q, 0);
        for _ in 0..2 {
            let c = basis.matmul(&w);
            w -= basis.tr().matmul(&c);
        }
        let b = norm(&w);
        self.beta.push(b);
        let scale = self.alpha.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-300);
        if !b.is_finite() || b <= 1e-10 * scale {
            return false;
        }
        self.next = Some(w);
        true
    }

    /// Eigenvalues (ascending) and eigenvectors (columns) of the tridiagonal matrix so far.
    fn ritz(&self) -> Result<(Vec<f64>, Tensor)> {
        let m = self.alpha.len() as i64;
        let t = Tensor::zeros([m, m], (Kind::Double, Device::Cpu));
        for (i, &a) in self.alpha.iter().enumerate() {
            let _ = t.get(i as i64).get(i as i64).fill_(a);
            if (i as i64) + 1 < m {
                let _ = t.get(i as i64).get(i as i64 + 1).fill_(self.beta[i]);
                let _ = t.get(i as i64 + 1).get(i as i64).fill_(self.beta[i]);
            }
        }
        let (vals, vecs) = t.linalg_eigh("L");
        let vals = Vec::<f64>::try_from(vals).map_err(|e| Error::other(format!("Lanczos: {e}")))?;
        Ok((vals, vecs))
    }
}

fn wanted(which: Which, k: usize, m: usize) -> (Vec<usize>, Vec<usize>) {
    let k = k.min(m);
    let top: Vec<usize> = (0..k).map(|i| m - 1 - i).collect();
    let bottom: Vec<usize> = (0..k).collect();
    match which {
        Which::Largest => (top, vec![]),
        Which::Smallest => (vec![], bottom),
        Which::Both => (top, bottom),
    }
}

/// The K extreme eigenpairs of the operator (of dimension `dim`, vectors on `device`) by Lanczos
/// with full reorthogonalization from a seeded Rademacher start, until every wanted pair passes
/// the test of the module docs: first on the residuals estimated from the tridiagonal matrix, then
/// on residuals computed with one product per pair.
pub fn extremes(op: &mut Operator, dim: i64, device: Device, o: LanczosOptions) -> Result<Extremes> {
    if o.k == 0 {
        return Err(Error::setting(Setting::Top, 0, "must be at least 1"));
    }
    if !(o.tol > 0.0 && o.tol < 1.0) {
        return Err(Error::setting(Setting::Tol, o.tol, "must be in (0, 1)"));
    }
    let mut lz = Lanczos::new(rademacher(dim, o.seed, device));
    let mut products = 0;
    let limit = (o.max_steps as i64).min(dim).max(1) as usize;
    // After a check whose computed residuals disagree with the estimates (rounding: the products
    // are float32), the next check waits 2, 4, ... 16 steps, so that a tolerance near float32's
    // floor does not cost a product per pair at every step.
    let mut next_check = o.min_krylov(limit);
    let mut failed_checks = 0u32;
    loop {
        let more = lz.step(op)?;
        products += 1;
        let m = lz.alpha.len();
        let last = !more || m >= limit;
        if m < next_check && !last {
            continue;
        }
        let (vals, vecs) = lz.ritz()?;
        let scale = vals.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-300);
        let (top, bottom) = wanted(o.which, o.k, m);
        let b = *lz.beta.last().expect("a step");
        let estimate = |i: usize| (b * vecs.double_value(&[m as i64 - 1, i as i64])).abs();
        let settled = top
            .iter()
            .chain(&bottom)
            .all(|&i| judge(vals[i], estimate(i), scale, o.tol).1 != Convergence::NotConverged);
        if !(settled || last) {
            continue;
        }
        // Ritz vectors of the wanted values, and their residuals with one product each.
        let basis = Tensor::stack(&lz.q[..m], 0);
        let pair = |i: usize, op: &mut Operator| -> Result<Eigenpair> {
            let s = vecs.select(1, i as i64).to_kind(Kind::Float).to_device(device);
            let mut y = basis.tr().matmul(&s);
            y = &y / norm(&y);
            let hy = op(&y)?;
            let residual_norm = norm(&(&hy - &y * vals[i]));
            let (residual, convergence) = judge(vals[i], residual_norm, scale, o.tol);
            Ok(Eigenpair { value: vals[i], vector: y, residual, residual_norm, convergence })
        };
        let largest = top.iter().map(|&i| pair(i, op)).collect::<Result<Vec<_>>>()?;
        let smallest = bottom.iter().map(|&i| pair(i, op)).collect::<Result<Vec<_>>>()?;
        products += largest.len() + smallest.len();
        let converged = largest.iter().chain(&smallest).all(|p| p.convergence != Convergence::NotConverged);
        if converged || last {
            return Ok(Extremes { largest, smallest, steps: m, products, converged });
        }
        // The estimates were too hopeful (rounding): go on.
        failed_checks += 1;
        next_check = m + (1usize << failed_checks.min(4));
    }
}

/// Power iteration for the eigenvalue of largest magnitude (the method of PyHessian and of most
/// Hessian tools, kept as a baseline): v ← Hv / ‖Hv‖ from a seeded Rademacher start, stopping once
/// the residual ‖Hv − λv‖ / |λ| of the current unit v (free: Hv is the step's product) is within
/// `tol`. Returns the pair (its vector v, its residual) and the products used.
pub fn power(
    op: &mut Operator,
    dim: i64,
    device: Device,
    tol: f64,
    max_steps: usize,
    seed: u64,
) -> Result<(Eigenpair, usize)> {
    if !(tol > 0.0 && tol < 1.0) {
        return Err(Error::setting(Setting::Tol, tol, "must be in (0, 1)"));
    }
    let mut v = rademacher(dim, seed, device);
    v = &v / norm(&v);
    let mut steps = 0;
    loop {
        let w = op(&v)?;
        steps += 1;
        let lambda = dot(&v, &w);
        let residual_norm = norm(&(&w - &v * lambda));
        let residual = residual_norm / lambda.abs().max(1e-300);
        let convergence = if residual <= tol { Convergence::Relative } else { Convergence::NotConverged };
        let n = norm(&w);
        if residual <= tol || steps >= max_steps.max(1) || !(n > 0.0 && n.is_finite()) {
            return Ok((Eigenpair { value: lambda, vector: v, residual, residual_norm, convergence }, steps));
        }
        v = w / n;
    }
}

/// A trace estimate: the estimate, its standard error, the products it took and, for Hutch++,
/// the size of the sketched subspace whose part of the trace is exact. With a partition of the
/// vector into blocks, the trace of each diagonal block from the same products.
#[derive(Debug, Clone)]
pub struct Trace {
    pub estimate: f64,
    pub stderr: f64,
    pub matvecs: usize,
    pub method: TraceMethod,
    /// Hutch++: the vectors of the sketch (0 for Hutchinson).
    pub sketch: usize,
    /// Per block of the partition asked for: (estimate, standard error) of tr(C_bb). The estimates
    /// add up to `estimate`.
    pub blocks: Vec<(f64, f64)>,
}

/// How far a trace estimate goes: at most `max` products, stopping once the standard error is
/// within `tol` of the estimate after `min` Hutchinson samples; `block` vectors per call of the
/// operator.
#[derive(Debug, Clone, Copy)]
pub struct TraceOptions {
    pub method: TraceMethod,
    pub max: usize,
    pub min: usize,
    pub tol: f64,
    pub block: usize,
    pub seed: u64,
}

/// The smallest budget Hutch++ runs with: a sketch of 2, its 2 products, 2 residual samples.
pub const HUTCHPP_MIN_PRODUCTS: usize = 6;

/// The mean and standard error of samples (NaN error with fewer than 2).
fn mean_stderr(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    if samples.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// A partition of a vector's entries into blocks: consecutive pieces of `sizes`, piece i belonging
/// to block `owner[i]` (a block may own pieces that are not adjacent).
#[derive(Debug, Clone, Default)]
pub struct Partition {
    pub sizes: Vec<i64>,
    pub owner: Vec<usize>,
}

impl Partition {
    /// Each piece its own block.
    pub fn pieces(sizes: Vec<i64>) -> Partition {
        let owner = (0..sizes.len()).collect();
        Partition { sizes, owner }
    }

    pub fn blocks(&self) -> usize {
        self.owner.iter().max().map_or(0, |m| m + 1)
    }

    fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Per-piece values summed into their blocks.
    fn gather(&self, pieces: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.blocks()];
        for (&o, v) in self.owner.iter().zip(pieces) {
            out[o] += v;
        }
        out
    }
}

/// Σ_i a_i b_i over each block of the partition (one host transfer for all of them).
fn block_dots(a: &Tensor, b: &Tensor, part: &Partition) -> Result<Vec<f64>> {
    let prod = (a * b).to_kind(Kind::Double);
    let sums: Vec<Tensor> = prod.split_with_sizes(&part.sizes, 0).iter().map(|t| t.sum(Kind::Double)).collect();
    let pieces =
        Vec::<f64>::try_from(Tensor::stack(&sums, 0)).map_err(|e| Error::other(format!("block traces: {e}")))?;
    Ok(part.gather(&pieces))
}

/// The sketched subspace of Hutch++: Q (orthonormal columns) and W = CQ.
struct Sketch {
    q: Tensor,
    w: Tensor,
}

impl Sketch {
    /// (I − QQᵀ)x.
    fn project(&self, x: &Tensor) -> Tensor {
        x - self.q.matmul(&self.q.tr().matmul(x))
    }

    /// tr(QᵀCQ).
    fn exact(&self) -> f64 {
        (&self.q * &self.w).sum(Kind::Double).double_value(&[])
    }

    /// Each block's share of the deterministic part: with A = QᵀCQ and B_b = Q_bᵀQ_b (Q_b the
    /// block's rows), tr(P_b QQᵀC) = tr(P_b QQᵀCQQᵀ) + tr(P_b QQᵀCP) + tr(P_b PCQQᵀ), P = I − QQᵀ,
    /// = 2 tr(Q_bᵀW_b) − Σ B_b∘A. They add up to tr(A).
    fn blocks(&self, part: &Partition) -> Result<Vec<f64>> {
        let a = self.q.tr().matmul(&self.w).to_kind(Kind::Double);
        let a = (&a + a.tr()) * 0.5;
        let qs = self.q.split_with_sizes(&part.sizes, 0);
        let ws = self.w.split_with_sizes(&part.sizes, 0);
        let parts: Vec<Tensor> = qs
            .iter()
            .zip(&ws)
            .map(|(qb, wb)| {
                let qb = qb.to_kind(Kind::Double);
                let b = qb.tr().matmul(&qb);
                (&qb * wb.to_kind(Kind::Double)).sum(Kind::Double) * 2.0 - (b * &a).sum(Kind::Double)
            })
            .collect();
        let pieces =
            Vec::<f64>::try_from(Tensor::stack(&parts, 0)).map_err(|e| Error::other(format!("block traces: {e}")))?;
        Ok(part.gather(&pieces))
    }
}

/// Hutchinson samples of tr(PCP), P = I − QQᵀ (P = I without a sketch): zᵀPCPz for Rademacher z,
/// and per block z_b·(PCPz)_b (whose expectation is tr(P_b PCP), adding up to the sample). Taken in
/// blocks of vectors until `count` samples, or until the standard error of `offset` + their mean
/// is within `tol` of it after `min` samples. Sample i uses the Rademacher vector of seed
/// `seed + i`.
fn hutchinson_samples(
    op: &mut BlockOperator,
    p: &Probes,
    sketch: Option<&Sketch>,
    offset: f64,
    count: usize,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let (o, part, dim, device) = (p.options, p.part, p.dim, p.device);
    let seed = o.seed.wrapping_add(1);
    let mut samples: Vec<f64> = Vec::with_capacity(count);
    let mut per_block: Vec<Vec<f64>> = Vec::new();
    while samples.len() < count {
        let take = o.block.max(1).min(count - samples.len());
        let zs: Vec<Tensor> =
            (0..take).map(|i| rademacher(dim, seed.wrapping_add((samples.len() + i) as u64), device)).collect();
        let projected: Vec<Tensor> = match sketch {
            Some(k) => zs.iter().map(|z| k.project(z)).collect(),
            None => zs.iter().map(|z| z.shallow_clone()).collect(),
        };
        let cz = op(&projected)?;
        for ((z, pz), c) in zs.iter().zip(&projected).zip(&cz) {
            samples.push(dot(pz, c));
            if !part.is_empty() {
                let pcpz = match sketch {
                    Some(k) => k.project(c),
                    None => c.shallow_clone(),
                };
                per_block.push(block_dots(z, &pcpz, part)?);
            }
        }
        if samples.len() >= o.min.max(2) {
            let (mean, stderr) = mean_stderr(&samples);
            if stderr <= o.tol * (offset + mean).abs() {
                break;
            }
        }
    }
    Ok((samples, per_block))
}

/// Where the probes of a trace live: the vector's length and device, its partition into blocks
/// (empty: none) and the estimate's options.
struct Probes<'a> {
    dim: i64,
    device: Device,
    part: &'a Partition,
    options: &'a TraceOptions,
}

/// The Hutch++ sketch: S of `k` Rademacher columns, Q = orth(CS), W = CQ (2k products).
fn sketch(op: &mut BlockOperator, dim: i64, device: Device, k: usize, o: &TraceOptions) -> Result<Sketch> {
    let s: Vec<Tensor> = (0..k).map(|i| rademacher(dim, o.seed.wrapping_add(1_000_003 + i as u64), device)).collect();
    let mut cs = Vec::with_capacity(k);
    for chunk in s.chunks(o.block.max(1)) {
        cs.extend(op(chunk)?);
    }
    let (q, _) = Tensor::f_linalg_qr(&Tensor::stack(&cs, 1), "reduced")
        .map_err(|e| Error::other(format!("QR of the Hutch++ sketch: {e}")))?;
    let cols: Vec<Tensor> = (0..k as i64).map(|j| q.select(1, j).contiguous()).collect();
    let mut w = Vec::with_capacity(k);
    for chunk in cols.chunks(o.block.max(1)) {
        w.extend(op(chunk)?);
    }
    Ok(Sketch { q, w: Tensor::stack(&w, 1) })
}

/// The trace of the operator. Hutchinson: the mean of zᵀCz over Rademacher z, with its standard
/// error. Hutch++ (Meyer et al. 2021): a third of the budget sketches S (Rademacher), Q = orth(CS);
/// tr(QᵀCQ) takes another third and is exact; the rest estimates tr((I − QQᵀ)C(I − QQᵀ)) by
/// Hutchinson, whose sample standard error (conditional on Q, the only random part left) is the
/// estimate's. Both stop once that error is within `tol` of the estimate (after `min` samples).
///
/// `part` (empty, or pieces adding up to `dim`) partitions the vector: each diagonal block's
/// trace tr(C_bb) then comes from the same products — for Hutch++ its exact share of the sketch's
/// part (`Sketch::blocks`) plus the mean of z_b·(PCPz)_b — with the standard error of its samples.
pub fn trace(op: &mut BlockOperator, dim: i64, device: Device, o: TraceOptions, part: &Partition) -> Result<Trace> {
    let covered = part.sizes.iter().sum::<i64>();
    if !part.is_empty() && (covered != dim || part.owner.len() != part.sizes.len()) {
        return Err(Error::other(format!("internal: trace blocks add up to {covered}, not {dim}")));
    }
    let nb = part.blocks();
    let max = o.max.max(2);
    let (sk, exact, shares) = match o.method {
        TraceMethod::Hutchinson => (None, 0.0, vec![0.0; nb]),
        TraceMethod::HutchPlusPlus => {
            if max < HUTCHPP_MIN_PRODUCTS {
                return Err(Error::setting(
                    Setting::TraceSamples,
                    max,
                    format!("Hutch++ needs at least {HUTCHPP_MIN_PRODUCTS} products"),
                ));
            }
            let k = (max / 3).min(dim as usize).max(1);
            let sk = sketch(op, dim, device, k, &o)?;
            let shares = if part.is_empty() { Vec::new() } else { sk.blocks(part)? };
            let exact = sk.exact();
            (Some(sk), exact, shares)
        }
    };
    let k = sk.as_ref().map_or(0, |s| s.q.size()[1] as usize);
    let probes = Probes { dim, device, part, options: &o };
    let (samples, per_block) = hutchinson_samples(op, &probes, sk.as_ref(), exact, max - 2 * k)?;
    let (mean, stderr) = mean_stderr(&samples);
    let blocks = (0..nb)
        .map(|b| {
            let column: Vec<f64> = per_block.iter().map(|s| s[b]).collect();
            let (m, se) = mean_stderr(&column);
            (shares[b] + m, se)
        })
        .collect();
    Ok(Trace { estimate: exact + mean, stderr, matvecs: 2 * k + samples.len(), method: o.method, sketch: k, blocks })
}

/// Stochastic Lanczos quadrature: `runs` Lanczos runs of `steps` steps from random unit vectors,
/// stepped together (one block product per step for every run still going); the Ritz values of
/// each run, weighted by the squared first components of their eigenvectors, approximate the
/// spectral measure. Returns (nodes, weights) per run (weights sum to 1 per run).
pub fn quadrature(
    op: &mut BlockOperator,
    dim: i64,
    device: Device,
    seed: u64,
    runs: usize,
    steps: usize,
    block: usize,
) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let mut chains: Vec<Lanczos> =
        (0..runs).map(|r| Lanczos::new(rademacher(dim, seed.wrapping_add(1000 + r as u64), device))).collect();
    let mut going: Vec<bool> = vec![true; runs];
    for _ in 0..steps.min(dim as usize) {
        let active: Vec<usize> = (0..runs).filter(|&r| going[r]).collect();
        if active.is_empty() {
            break;
        }
        for group in active.chunks(block.max(1)) {
            let vs: Vec<Tensor> = group.iter().map(|&r| chains[r].advance().shallow_clone()).collect();
            for (&r, w) in group.iter().zip(op(&vs)?) {
                going[r] = chains[r].absorb(w);
            }
        }
    }
    let mut out = Vec::with_capacity(runs);
    for lz in &chains {
        let (vals, vecs) = lz.ritz()?;
        let first = vecs.get(0);
        let w: Vec<f64> = (0..vals.len()).map(|k| first.double_value(&[k as i64]).powi(2)).collect();
        out.push((vals, w));
    }
    Ok(out)
}

/// A smooth density on `bins` points covering every node (with a margin), each node a Gaussian
/// of variance `sigma2` × max(1, range) (PyHessian's choice), averaged over the runs and
/// normalized to integrate to 1 (trapezoid rule). Returns (grid, density).
pub fn density(runs: &[(Vec<f64>, Vec<f64>)], bins: usize, sigma2: f64) -> (Vec<f64>, Vec<f64>) {
    let nodes = runs.iter().flat_map(|(v, _)| v.iter().copied());
    let (lo, hi) = nodes.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let range = (hi - lo).max(1e-12);
    let var = sigma2 * range.max(1.0);
    let pad = 0.01 * range + 5.0 * var.sqrt();
    let (a, b) = (lo - pad, hi + pad);
    let bins = bins.max(2);
    let grid: Vec<f64> = (0..bins).map(|i| a + (b - a) * i as f64 / (bins - 1) as f64).collect();
    let norm = 1.0 / (2.0 * std::f64::consts::PI * var).sqrt();
    let mut d: Vec<f64> = grid
        .iter()
        .map(|&x| {
            runs.iter()
                .map(|(v, w)| {
                    v.iter().zip(w).map(|(l, w)| w * norm * (-(x - l).powi(2) / (2.0 * var)).exp()).sum::<f64>()
                })
                .sum::<f64>()
                / runs.len().max(1) as f64
        })
        .collect();
    let h = (b - a) / (bins - 1) as f64;
    let integral: f64 = d.windows(2).map(|p| 0.5 * (p[0] + p[1]) * h).sum();
    if integral > 0.0 {
        for x in &mut d {
            *x /= integral;
        }
    }
    (grid, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric matrix with a known spectrum: Q diag(λ) Qᵀ for a random orthogonal Q.
    fn matrix(eigs: &[f64], seed: i64) -> (Tensor, Tensor) {
        let n = eigs.len() as i64;
        let r = crate::space::directions::seeded(seed, || Tensor::randn([n, n], (Kind::Double, Device::Cpu)));
        let (q, _) = Tensor::linalg_qr(&r, "reduced");
        let d = Tensor::from_slice(eigs).diag(0);
        (q.matmul(&d).matmul(&q.tr()), q)
    }

    fn op_of(m: &Tensor) -> impl FnMut(&Tensor) -> Result<Tensor> + '_ {
        move |v: &Tensor| Ok(m.matmul(&v.to_kind(Kind::Double)).to_kind(Kind::Float))
    }

    /// The block form of `op_of`, counting its calls.
    fn block_of<'a>(
        m: &'a Tensor,
        calls: &'a std::cell::Cell<usize>,
    ) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + 'a {
        move |vs: &[Tensor]| {
            calls.set(calls.get() + 1);
            Ok(vs.iter().map(|v| m.matmul(&v.to_kind(Kind::Double)).to_kind(Kind::Float)).collect())
        }
    }

    fn options(method: TraceMethod, max: usize, tol: f64, seed: u64) -> TraceOptions {
        TraceOptions { method, max, min: 10, tol, block: 1, seed }
    }

    #[test]
    fn extreme_eigenpairs_of_a_known_spectrum() {
        let mut eigs: Vec<f64> = (0..200).map(|i| 0.01 * (i as f64 - 50.0)).collect();
        eigs[199] = 40.0;
        eigs[198] = 25.0;
        eigs[0] = -12.0;
        let (m, q) = matrix(&eigs, 1);
        let mut op = op_of(&m);
        let o = LanczosOptions { k: 2, which: Which::Both, tol: 1e-4, max_steps: 200, seed: 3 };
        let r = extremes(&mut op, 200, Device::Cpu, o).unwrap();
        assert!(r.converged, "{:?}", r.largest.iter().map(|p| p.residual).collect::<Vec<_>>());
        assert!((r.largest[0].value - 40.0).abs() < 40.0 * 1e-4);
        assert!((r.largest[1].value - 25.0).abs() < 40.0 * 1e-4);
        assert!((r.smallest[0].value + 12.0).abs() < 40.0 * 1e-4);
        assert!(r.largest.iter().chain(&r.smallest).all(|p| p.residual <= 1e-4));
        // The top vector is the matrix's own (up to sign).
        let truth = q.select(1, 199).to_kind(Kind::Float);
        let cos = dot(&r.largest[0].vector, &truth).abs();
        assert!(cos > 0.9999, "cos = {cos}");
        assert_eq!(r.products, r.steps + 4, "one product per step and one per reported pair");
        // Far fewer than the 200 of the whole space (−12 at 1e-4 of its own size takes the most).
        assert!(r.steps <= 80, "{} steps", r.steps);
    }

    #[test]
    fn a_small_negative_end_is_found_under_a_large_top_and_a_bulk_near_zero() {
        // A trained network's Hessian: λmax 500, a few outliers, a dense bulk near 0 and a small
        // negative tail (λmin = −0.008 λmax). Residuals measured against max|λ| accepted a bulk
        // Ritz value near 0 as λmin after a handful of products.
        let n = 1000;
        let mut eigs: Vec<f64> = (0..n).map(|i| -0.2 + 0.7 * (i as f64 / n as f64).powi(3)).collect();
        eigs[n - 1] = 500.0;
        eigs[n - 2] = 270.0;
        eigs[n - 3] = 150.0;
        eigs[0] = -4.0;
        eigs[1] = -3.6;
        eigs[2] = -3.3;
        let (m, _) = matrix(&eigs, 11);
        for (tol, which) in [(1e-3, Which::Smallest), (1e-3, Which::Both), (1e-2, Which::Both)] {
            let mut op = op_of(&m);
            let o = LanczosOptions { k: 1, which, tol, max_steps: 400, seed: 5 };
            let r = extremes(&mut op, n as i64, Device::Cpu, o).unwrap();
            let low = &r.smallest[0];
            assert!(r.converged && low.convergence == Convergence::Relative, "{which:?} {tol}: {low:?}");
            assert!(
                (low.value + 4.0).abs() <= 2.0 * tol * 4.0,
                "{which:?} at tol {tol}: λmin {} after {} steps",
                low.value,
                r.steps
            );
            assert!((low.value + 4.0).abs() <= low.residual_norm + 1e-9, "the residual bounds the error: {low:?}");
            assert!(r.steps >= MIN_KRYLOV);
            if which == Which::Both {
                assert!((r.largest[0].value - 500.0).abs() <= 500.0 * tol);
            }
        }
    }

    #[test]
    fn an_eigenvalue_near_zero_passes_against_the_floor_and_bad_residuals_do_not_pass() {
        assert_eq!(judge(-4.0, 3e-3, 500.0, 1e-3), (3e-3 / 4.0, Convergence::Relative));
        // A bulk value near 0: its residual is measured against 1e-3 × max|λ| = 0.5.
        let (rel, test) = judge(0.002, 0.23, 500.0, 1e-3);
        assert!((rel - 0.46).abs() < 1e-12 && test == Convergence::NotConverged);
        assert_eq!(judge(0.002, 4e-4, 500.0, 1e-3).1, Convergence::NearZero);
        assert_eq!(judge(f64::NAN, 1.0, 500.0, 1e-3).1, Convergence::NotConverged);
        assert_eq!(judge(1.0, f64::NAN, 500.0, 1e-3).1, Convergence::NotConverged);
    }

    #[test]
    fn lanczos_needs_far_fewer_products_than_power_iteration_at_the_same_tolerance() {
        // A Hessian-like spectrum: a few outliers over a bulk near zero, gap ratio 0.9.
        let mut eigs: Vec<f64> = (0..300).map(|i| 0.002 * (i as f64 - 100.0)).collect();
        eigs[299] = 10.0;
        eigs[298] = 9.0;
        eigs[297] = 6.0;
        let (m, _) = matrix(&eigs, 6);
        let mut op = op_of(&m);
        let (p, power_products) = power(&mut op, 300, Device::Cpu, 1e-3, 5000, 2).unwrap();
        assert!(p.residual <= 1e-3 && (p.value - 10.0).abs() < 1e-2, "{} ({})", p.value, p.residual);
        let o = LanczosOptions { k: 1, which: Which::Largest, tol: 1e-3, max_steps: 300, seed: 2 };
        let l = extremes(&mut op, 300, Device::Cpu, o).unwrap();
        assert!(l.converged && (l.largest[0].value - 10.0).abs() < 1e-2);
        assert!(2 * l.products <= power_products, "Lanczos {} products, power iteration {power_products}", l.products);
    }

    #[test]
    fn a_small_space_is_exhausted_cleanly_and_bad_options_are_refused() {
        let (m, _) = matrix(&[3.0, -1.0, 0.5], 2);
        let mut op = op_of(&m);
        let o = LanczosOptions { k: 1, which: Which::Both, tol: 1e-6, max_steps: 50, seed: 1 };
        let r = extremes(&mut op, 3, Device::Cpu, o).unwrap();
        assert!((r.largest[0].value - 3.0).abs() < 1e-5 && (r.smallest[0].value + 1.0).abs() < 1e-5);
        assert!(r.steps <= 3);
        assert!(extremes(&mut op, 3, Device::Cpu, LanczosOptions { k: 0, ..o }).is_err());
        assert!(extremes(&mut op, 3, Device::Cpu, LanczosOptions { tol: 0.0, ..o }).is_err());
        let mut nan = |_: &Tensor| -> Result<Tensor> { Err(Error::other("a Hessian-vector product is not finite")) };
        let e = extremes(&mut nan, 3, Device::Cpu, o).unwrap_err().to_string();
        assert!(e.contains("not finite"), "{e}");
    }

    #[test]
    fn hutchinson_is_unbiased_within_its_standard_error() {
        let eigs: Vec<f64> = (0..100).map(|i| (i as f64 - 30.0) / 10.0).collect();
        let (m, _) = matrix(&eigs, 4);
        let truth: f64 = eigs.iter().sum();
        let calls = std::cell::Cell::new(0);
        let mut op = block_of(&m, &calls);
        let t = trace(&mut op, 100, Device::Cpu, options(TraceMethod::Hutchinson, 400, 1e-9, 9), &Partition::default())
            .unwrap();
        assert_eq!(t.matvecs, 400);
        assert!((t.estimate - truth).abs() < 4.0 * t.stderr, "{} vs {truth} ± {}", t.estimate, t.stderr);
        // In blocks of 7 vectors: the same samples, 58 calls instead of 400.
        calls.set(0);
        let o = TraceOptions { block: 7, ..options(TraceMethod::Hutchinson, 400, 1e-9, 9) };
        let b = trace(&mut op, 100, Device::Cpu, o, &Partition::default()).unwrap();
        assert_eq!((b.estimate, b.stderr, b.matvecs, calls.get()), (t.estimate, t.stderr, 400, 58));
        // A diagonal operator has zero variance: exact from the first samples.
        let d = Tensor::from_slice(&eigs).diag(0);
        let mut op = block_of(&d, &calls);
        let t = trace(&mut op, 100, Device::Cpu, options(TraceMethod::Hutchinson, 400, 1e-6, 9), &Partition::default())
            .unwrap();
        assert!((t.estimate - truth).abs() < 1e-3 && t.matvecs == 10, "{t:?}");
    }

    /// On a spectrum with a few large eigenvalues (10 of 100 − 150, 290 in [0, 1]) Hutch++ at 60
    /// products is far closer than Hutchinson at 60, over 20 seeds; its standard error is honest
    /// (the error within 4 of them at every seed), and an operator of rank below the sketch's
    /// size has its trace exactly.
    #[test]
    fn hutch_plus_plus_beats_hutchinson_on_a_few_large_eigenvalues() {
        let eigs: Vec<f64> =
            (0..300).map(|i| if i < 10 { 100.0 + 5.0 * i as f64 } else { (i as f64 - 10.0) / 290.0 }).collect();
        let truth: f64 = eigs.iter().sum();
        let (m, _) = matrix(&eigs, 6);
        let calls = std::cell::Cell::new(0);
        let mut op = block_of(&m, &calls);
        let (mut e_h, mut e_pp) = (0.0, 0.0);
        for seed in 0..20 {
            let h = trace(
                &mut op,
                300,
                Device::Cpu,
                options(TraceMethod::Hutchinson, 60, 1e-12, seed),
                &Partition::default(),
            )
            .unwrap();
            let o = TraceOptions { block: 8, ..options(TraceMethod::HutchPlusPlus, 60, 1e-12, seed) };
            let pp = trace(&mut op, 300, Device::Cpu, o, &Partition::default()).unwrap();
            assert_eq!((h.matvecs, pp.matvecs, pp.sketch), (60, 60, 20));
            assert!((pp.estimate - truth).abs() <= 4.0 * pp.stderr, "{pp:?} vs {truth}");
            e_h += (h.estimate - truth).powi(2);
            e_pp += (pp.estimate - truth).powi(2);
        }
        let (rms_h, rms_pp) = ((e_h / 20.0).sqrt(), (e_pp / 20.0).sqrt());
        assert!(rms_pp < 0.1 * rms_h, "Hutch++ rms error {rms_pp} vs Hutchinson {rms_h}");
        let mut low: Vec<f64> = vec![0.0; 300];
        low[..5].copy_from_slice(&[7.0, -3.0, 2.0, 1.0, 0.5]);
        let (m, _) = matrix(&low, 7);
        let mut op = block_of(&m, &calls);
        let pp =
            trace(&mut op, 300, Device::Cpu, options(TraceMethod::HutchPlusPlus, 30, 1e-12, 1), &Partition::default())
                .unwrap();
        assert!((pp.estimate - 7.5).abs() < 1e-4 && pp.stderr < 1e-4, "{pp:?}");
        let e =
            trace(&mut op, 300, Device::Cpu, options(TraceMethod::HutchPlusPlus, 5, 1e-3, 1), &Partition::default())
                .unwrap_err();
        assert!(matches!(e, Error::Setting { setting: Setting::TraceSamples, .. }), "{e}");
    }

    /// The traces of the diagonal blocks come from the same products: they add up to the whole
    /// estimate, each lies within 4 of its standard errors of the true block trace (over 10 seeds,
    /// both methods), and Hutch++ on an operator of rank below its sketch has every block exactly.
    #[test]
    fn block_traces_add_up_and_match_the_diagonal_blocks() {
        let eigs: Vec<f64> =
            (0..120).map(|i| if i < 6 { 40.0 - 3.0 * i as f64 } else { 0.02 * (i as f64 - 60.0) }).collect();
        let (m, _) = matrix(&eigs, 11);
        // Four pieces in three blocks: the first and the last piece are one block.
        let sizes = [30i64, 7, 50, 33];
        let part = Partition { sizes: sizes.to_vec(), owner: vec![0, 1, 2, 0] };
        let traces = |m: &Tensor| -> Vec<f64> {
            let d = Vec::<f64>::try_from(m.diagonal(0, 0, 1)).unwrap();
            let mut at = 0usize;
            let pieces: Vec<f64> = sizes
                .iter()
                .map(|&n| {
                    let t = d[at..at + n as usize].iter().sum();
                    at += n as usize;
                    t
                })
                .collect();
            vec![pieces[0] + pieces[3], pieces[1], pieces[2]]
        };
        let truth = traces(&m);
        let calls = std::cell::Cell::new(0);
        let mut op = block_of(&m, &calls);
        for method in [TraceMethod::Hutchinson, TraceMethod::HutchPlusPlus] {
            for seed in 0..10 {
                let o = TraceOptions { block: 4, ..options(method, 90, 1e-12, seed) };
                let t = trace(&mut op, 120, Device::Cpu, o, &part).unwrap();
                assert_eq!(t.blocks.len(), 3);
                let sum: f64 = t.blocks.iter().map(|b| b.0).sum();
                assert!((sum - t.estimate).abs() <= 1e-6 * t.estimate.abs(), "{method:?}: {sum} vs {}", t.estimate);
                for (b, (&(est, se), want)) in t.blocks.iter().zip(&truth).enumerate() {
                    assert!(
                        (est - want).abs() <= 4.0 * se + 1e-4,
                        "{method:?} seed {seed} block {b}: {est} ± {se} vs {want}"
                    );
                }
            }
        }
        let mut low: Vec<f64> = vec![0.0; 120];
        low[..4].copy_from_slice(&[9.0, -2.0, 4.0, 1.5]);
        let (m, _) = matrix(&low, 12);
        let want = traces(&m);
        let mut op = block_of(&m, &calls);
        let t = trace(&mut op, 120, Device::Cpu, options(TraceMethod::HutchPlusPlus, 30, 1e-12, 3), &part).unwrap();
        for (&(est, se), w) in t.blocks.iter().zip(&want) {
            assert!((est - w).abs() < 1e-4 && se < 1e-4, "{est} ± {se} vs {w}");
        }
        let bad = Partition::pieces(vec![10, 10]);
        let e = trace(&mut op, 120, Device::Cpu, options(TraceMethod::Hutchinson, 30, 1e-12, 3), &bad).unwrap_err();
        assert!(e.to_string().contains("add up"), "{e}");
    }

    #[test]
    fn the_density_integrates_to_one_and_covers_the_spectrum() {
        let eigs: Vec<f64> = (0..80).map(|i| if i < 70 { 0.01 * i as f64 } else { 5.0 + i as f64 }).collect();
        let (m, _) = matrix(&eigs, 5);
        let calls = std::cell::Cell::new(0);
        let mut op = block_of(&m, &calls);
        let runs = quadrature(&mut op, 80, Device::Cpu, 2, 4, 30, 1).unwrap();
        assert_eq!(calls.get(), 120);
        // The runs stepped together, 3 vectors per call: the same nodes.
        calls.set(0);
        let together = quadrature(&mut op, 80, Device::Cpu, 2, 4, 30, 3).unwrap();
        assert_eq!(calls.get(), 60);
        for ((a, _), (b, _)) in runs.iter().zip(&together) {
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0)), "{a:?} vs {b:?}");
        }
        for (_, w) in &runs {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        }
        let (grid, d) = density(&runs, 2000, 1e-5);
        let h = grid[1] - grid[0];
        let integral: f64 = d.windows(2).map(|p| 0.5 * (p[0] + p[1]) * h).sum();
        assert!((integral - 1.0).abs() < 1e-9);
        assert!(grid[0] <= 0.0 && *grid.last().unwrap() >= 84.0, "{} .. {}", grid[0], grid.last().unwrap());
        assert!(d.iter().all(|x| *x >= 0.0));
        // Most of the mass sits near 0, where 70 of the 80 eigenvalues are.
        let near: f64 = grid.iter().zip(&d).filter(|(g, _)| **g < 1.0).map(|(_, x)| x * h).sum();
        assert!(near > 0.6, "{near}");
    }

    #[test]
    fn rademacher_vectors_are_reproducible_signs() {
        let a = rademacher(1000, 7, Device::Cpu);
        let b = rademacher(1000, 7, Device::Cpu);
        let c = rademacher(1000, 8, Device::Cpu);
        assert!(a.equal(&b) && !a.equal(&c));
        assert_eq!(a.abs().sum(Kind::Double).double_value(&[]), 1000.0);
        let mean = a.mean(Kind::Double).double_value(&[]);
        assert!(mean.abs() < 0.1, "{mean}");
    }
}
