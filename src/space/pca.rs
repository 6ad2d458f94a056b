//! PCA of a training trajectory within a memory budget: the T×T Gram matrix of the vectors
//! m_i = θ_i − θ_origin is accumulated block by block (two blocks of checkpoints in memory at a
//! time, each read again as often as the blocks require), then its mean-centred eigendecomposition
//! gives the unit principal directions, the explained variance ratios and the least-squares
//! coordinates of every m_i on the plane of the top two (docs/landscape.md).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, Setting};

/// The top two principal directions of a set of difference vectors.
#[derive(Debug)]
pub struct Pca {
    /// δ and η, per tensor (the order of the inputs), float32 on the CPU; zero where excluded.
    pub components: [Vec<Tensor>; 2],
    /// Explained variance ratio of every component with a positive eigenvalue, largest first.
    pub explained_variance_ratio: Vec<f64>,
    /// Least-squares coordinates (on δ, η) of every input vector m_i.
    pub coords: Vec<[f64; 2]>,
    /// ‖m_i − its projection on the plane‖ / ‖m_i‖ for every m_i (0 where m_i = 0): how far
    /// each checkpoint is from the plane, relative to its distance from the origin.
    pub residuals: Vec<f64>,
    /// max_i ‖m_i − its projection‖ / max_j ‖m_j‖: how far the path leaves the plane, relative to
    /// the path's own extent (a checkpoint near the origin, whose tiny distance from the plane is a
    /// large part of its tiny distance from the origin, does not count as leaving it).
    pub off_plane: f64,
    /// How the work was split: checkpoints per block, blocks, checkpoint reads in all.
    pub blocks: BlockPlan,
}

/// How many checkpoints are held at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    pub per_block: usize,
    pub blocks: usize,
    /// Checkpoint files read, for the Gram matrix and the components together.
    pub reads: usize,
}

impl BlockPlan {
    /// Blocks for `t` vectors of `bytes_each` under `budget` bytes: all at once when they fit,
    /// else blocks of which two fit.
    pub fn new(t: usize, bytes_each: u64, budget: u64) -> BlockPlan {
        let per_block = if bytes_each.saturating_mul(t as u64) <= budget {
            t
        } else {
            ((budget / 2 / bytes_each.max(1)) as usize).clamp(1, t)
        };
        let blocks = t.div_ceil(per_block);
        let len = |b: usize| per_block.min(t - b * per_block);
        // Gram: block I once, then every J > I once per I; components: one more pass over every
        // block but the last, which is still held.
        let gram: usize = (0..blocks).map(|b| len(b) * (b + 1)).sum();
        let reads = gram + (0..blocks.saturating_sub(1)).map(len).sum::<usize>();
        BlockPlan { per_block, blocks, reads }
    }
}

/// Columns per chunk when converting a block to float64 for a product.
const CHUNK_ELEMS: i64 = 1 << 24;

/// Reads blocks of the rows m_i = load(i) − origin over the included tensors.
struct Rows<'a> {
    load: &'a mut dyn FnMut(usize) -> Result<Vec<Tensor>>,
    /// The included tensors' positions, and their origin values (flat, on the device).
    kept: Vec<usize>,
    origin: Vec<Tensor>,
    /// Entries per row.
    p: i64,
    device: Device,
    plan: BlockPlan,
    t: usize,
}

impl Rows<'_> {
    /// The checkpoints of block `b`.
    fn range(&self, b: usize) -> std::ops::Range<usize> {
        b * self.plan.per_block..((b + 1) * self.plan.per_block).min(self.t)
    }

    /// Rows m_i (float32, each entry rounded once from the float64 difference) for the checkpoints
    /// of block `b`, written tensor by tensor so that no whole float64 row is ever held.
    fn block(&mut self, b: usize) -> Result<Tensor> {
        let range = self.range(b);
        let m = Tensor::zeros([range.len() as i64, self.p], (Kind::Float, self.device));
        for (r, i) in range.enumerate() {
            let s = (self.load)(i)?;
            let mut offset = 0;
            for (&j, o) in self.kept.iter().zip(&self.origin) {
                let n = o.numel() as i64;
                let d = s[j].flatten(0, -1).to_device(self.device).to_kind(Kind::Double) - o.to_kind(Kind::Double);
                m.get(r as i64).narrow(0, offset, n).copy_(&d);
                offset += n;
            }
        }
        Ok(m)
    }

    /// Columns per chunk of a product (bounding the float64 copies).
    fn chunk(&self) -> i64 {
        (CHUNK_ELEMS / self.plan.per_block as i64).max(1)
    }

    /// a bᵀ in float64, in chunks of columns.
    fn product(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let mut g = Tensor::zeros([a.size()[0], b.size()[0]], (Kind::Double, self.device));
        let (mut start, chunk) = (0, self.chunk());
        while start < self.p {
            let len = chunk.min(self.p - start);
            let (ca, cb) =
                (a.narrow(1, start, len).to_kind(Kind::Double), b.narrow(1, start, len).to_kind(Kind::Double));
            g += ca.matmul(&cb.tr());
            start += len;
        }
        g
    }

    /// The T×T Gram matrix M Mᵀ (float64), block pair by block pair; also the last block read,
    /// which the components reuse.
    fn gram(&mut self) -> Result<(Tensor, Option<(usize, Tensor)>)> {
        let t = self.t as i64;
        let g = Tensor::zeros([t, t], (Kind::Double, self.device));
        let mut last: Option<(usize, Tensor)> = None;
        for bi in 0..self.plan.blocks {
            let a = self.block(bi)?;
            for bj in bi..self.plan.blocks {
                let gij = if bj == bi {
                    self.product(&a, &a)
                } else {
                    let b = self.block(bj)?;
                    self.product(&a, &b)
                };
                let (ri, rj) = (self.range(bi), self.range(bj));
                let mut dst = g.narrow(0, ri.start as i64, ri.len() as i64).narrow(1, rj.start as i64, rj.len() as i64);
                dst.copy_(&gij);
                if bj != bi {
                    let mut dst =
                        g.narrow(0, rj.start as i64, rj.len() as i64).narrow(1, ri.start as i64, ri.len() as i64);
                    dst.copy_(&gij.tr());
                }
            }
            last = Some((bi, a));
        }
        Ok((g, last))
    }

    /// u = W M for the [2, T] weights W, accumulated in float32 (each block's contribution
    /// computed in float64), reusing the block `last` already read.
    fn combine(&mut self, wmat: &Tensor, mut last: Option<(usize, Tensor)>) -> Result<Tensor> {
        let u = Tensor::zeros([2, self.p], (Kind::Float, self.device));
        let chunk = self.chunk();
        for bi in 0..self.plan.blocks {
            let r = self.range(bi);
            let m = match last.take() {
                Some((b, m)) if b == bi => m,
                other => {
                    last = other;
                    self.block(bi)?
                }
            };
            let wb = wmat.narrow(1, r.start as i64, r.len() as i64);
            let mut start = 0;
            while start < self.p {
                let len = chunk.min(self.p - start);
                let mut dst = u.narrow(1, start, len);
                dst += wb.matmul(&m.narrow(1, start, len).to_kind(Kind::Double)).to_kind(Kind::Float);
                start += len;
            }
        }
        Ok(u.to_device(Device::Cpu))
    }
}

/// The mean-centred Gram matrix's eigenvalues (largest first), refused when the trajectory has
/// fewer than two directions; and the weights [2, T] of the two unit components u_k = Σ_i w_ik m_i
/// / √λ_k (Σ_i w_ik = 0, so centring changes nothing), each with a deterministic sign: the entry of
/// largest magnitude of w_k is positive.
fn principal_pair(g: &Tensor, t: usize, device: Device) -> Result<(Vec<f64>, f64, Tensor)> {
    let opts = (Kind::Double, device);
    // Mean-centred Gram: H G H with H = I − 11ᵀ/T.
    let h = Tensor::eye(t as i64, opts) - 1.0 / t as f64;
    let gc = h.matmul(g).matmul(&h);
    let gc = (&gc + gc.tr()) * 0.5;
    let (evals, evecs) = gc.linalg_eigh("L");
    let evals: Vec<f64> = Vec::<f64>::try_from(evals.to_device(Device::Cpu))
        .map_err(|e| Error::other(format!("PCA: {e}")))?
        .into_iter()
        .rev()
        .collect();
    let evecs = evecs.to_device(Device::Cpu).flip([1]); // columns: largest eigenvalue first
    let total: f64 = evals.iter().filter(|v| **v > 0.0).sum();
    let tol = evals[0].abs() * 1e-12;
    if evals[0].is_nan() || evals[0] <= tol || total <= 0.0 {
        return Err(Error::setting(
            Setting::Checkpoints,
            t,
            "the checkpoints are identical on the compared parameters: the trajectory has no direction",
        ));
    }
    if evals[1].is_nan() || evals[1] <= tol {
        return Err(Error::setting(
            Setting::Checkpoints,
            t,
            "the trajectory is a straight line (one principal direction only): no plane to draw",
        ));
    }
    let w: Vec<Tensor> = (0..2)
        .map(|k| {
            let w = evecs.select(1, k as i64).contiguous();
            let imax = w.abs().argmax(0, false).int64_value(&[]);
            if w.double_value(&[imax]) < 0.0 {
                -w
            } else {
                w
            }
        })
        .collect();
    let scale = [1.0 / evals[0].sqrt(), 1.0 / evals[1].sqrt()];
    let wmat = Tensor::stack(&[&w[0] * scale[0], &w[1] * scale[1]], 0).to_device(device); // [2, T]
    Ok((evals, tol, wmat))
}

/// PCA of m_i = load(i) − origin for i in 0..t, over the tensors with `include[j]`, computed on
/// `device` with at most about `budget` bytes of checkpoint vectors held at once. `load(i)` gives
/// checkpoint i's tensors in the order of `origin`.
pub fn pca(
    load: &mut dyn FnMut(usize) -> Result<Vec<Tensor>>,
    t: usize,
    origin: &[Tensor],
    include: &[bool],
    budget: u64,
    device: Device,
) -> Result<Pca> {
    let _g = tch::no_grad_guard();
    if t < 3 {
        return Err(Error::setting(Setting::Checkpoints, t, "PCA needs at least 3 checkpoints"));
    }
    let kept: Vec<usize> = (0..origin.len()).filter(|&j| include[j]).collect();
    let p: i64 = kept.iter().map(|&j| origin[j].numel() as i64).sum();
    if p == 0 {
        return Err(Error::setting(Setting::Checkpoints, t, "no tensor is compared (all have dim <= 1?)"));
    }
    let plan = BlockPlan::new(t, 4 * p as u64, budget);
    let origin_dev: Vec<Tensor> = kept.iter().map(|&j| origin[j].flatten(0, -1).to_device(device)).collect();
    let mut rows = Rows { load, kept, origin: origin_dev, p, device, plan, t };
    let (g, last) = rows.gram()?;
    let (evals, tol, wmat) = principal_pair(&g, t, device)?;
    let total: f64 = evals.iter().filter(|v| **v > 0.0).sum();
    let ratio: Vec<f64> = evals.iter().filter(|v| **v > tol).map(|v| v / total).collect();
    let u = rows.combine(&wmat, last)?;
    let mut components: [Vec<Tensor>; 2] = [Vec::new(), Vec::new()];
    for (k, comp) in components.iter_mut().enumerate() {
        let mut offset = 0;
        for (j, o) in origin.iter().enumerate() {
            if include[j] {
                let n = o.numel() as i64;
                comp.push(u.get(k as i64).narrow(0, offset, n).contiguous().view(o.size().as_slice()));
                offset += n;
            } else {
                comp.push(Tensor::zeros(o.size(), (Kind::Float, Device::Cpu)));
            }
        }
    }
    // u_k · m_i = (G w_k)_i / √λ_k: least squares on an orthonormal pair is the projection.
    let proj = g.to_device(Device::Cpu).matmul(&wmat.to_device(Device::Cpu).tr()); // [T, 2]
    let proj = Vec::<f64>::try_from(proj.flatten(0, -1)).map_err(|e| Error::other(format!("PCA: {e}")))?;
    let coords: Vec<[f64; 2]> = proj.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    let norms2 = Vec::<f64>::try_from(g.to_device(Device::Cpu).diagonal(0, 0, 1))
        .map_err(|e| Error::other(format!("PCA: {e}")))?;
    let residuals = norms2.iter().zip(&coords).map(|(&n2, c)| residual(n2, *c)).collect();
    let off_plane = off_plane(&norms2, &coords);
    Ok(Pca { components, explained_variance_ratio: ratio, coords, residuals, off_plane, blocks: plan })
}

/// Distance from the plane over distance from the origin, for a vector of squared norm `n2`
/// whose projection on an orthonormal pair has coordinates `c` (0 for the origin itself).
fn residual(n2: f64, c: [f64; 2]) -> f64 {
    if n2 <= 0.0 {
        return 0.0;
    }
    ((n2 - c[0] * c[0] - c[1] * c[1]).max(0.0) / n2).sqrt()
}

/// The largest distance from the plane over the largest distance from the origin (0 for a path
/// that stays at the origin).
fn off_plane(norms2: &[f64], coords: &[[f64; 2]]) -> f64 {
    let extent2 = norms2.iter().copied().fold(0.0, f64::max);
    if extent2 <= 0.0 {
        return 0.0;
    }
    let worst2 =
        norms2.iter().zip(coords).map(|(&n2, c)| (n2 - c[0] * c[0] - c[1] * c[1]).max(0.0)).fold(0.0, f64::max);
    (worst2 / extent2).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints θ_i = origin + a_i e1 + b_i e2 + small noise, two tensors, the second excluded.
    fn trajectory(t: usize) -> (Vec<Vec<Tensor>>, Vec<Tensor>, [Tensor; 2]) {
        crate::space::directions::seeded(11, || {
            let origin =
                vec![Tensor::randn([5, 7], (Kind::Float, Device::Cpu)), Tensor::randn([3], (Kind::Float, Device::Cpu))];
            let e1 = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
            let e2 = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
            let states = (0..t)
                .map(|i| {
                    let (a, b) = ((i as f64 / 3.0).cos() * 4.0, (i as f64 / 2.0).sin());
                    vec![&origin[0] + &e1 * a + &e2 * b, Tensor::randn([3], (Kind::Float, Device::Cpu))]
                })
                .collect();
            (states, origin, [e1, e2])
        })
    }

    fn run(states: &[Vec<Tensor>], origin: &[Tensor], budget: u64) -> (Pca, usize) {
        let mut reads = 0;
        let mut load = |i: usize| {
            reads += 1;
            Ok(states[i].iter().map(|t| t.copy()).collect())
        };
        let r = pca(&mut load, states.len(), origin, &[true, false], budget, Device::Cpu).unwrap();
        (r, reads)
    }

    #[test]
    fn blockwise_and_all_at_once_agree_and_read_what_the_plan_says() {
        let (states, origin, _) = trajectory(9);
        let (whole, reads_whole) = run(&states, &origin, 1 << 30);
        assert_eq!(whole.blocks.blocks, 1);
        assert_eq!(reads_whole, 9, "all at once: each checkpoint read once");
        // 35 floats = 140 bytes a vector: a budget of 600 bytes holds two blocks of 2.
        let (blocked, reads) = run(&states, &origin, 600);
        assert_eq!(blocked.blocks.per_block, 2);
        assert_eq!(blocked.blocks.blocks, 5);
        assert_eq!(reads, blocked.blocks.reads, "{:?}", blocked.blocks);
        for k in 0..2 {
            assert!((whole.explained_variance_ratio[k] - blocked.explained_variance_ratio[k]).abs() < 1e-9);
            let diff = (&whole.components[k][0] - &blocked.components[k][0]).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "component {k} differs by {diff}");
        }
        for (a, b) in whole.coords.iter().zip(&blocked.coords) {
            assert!((a[0] - b[0]).abs() < 1e-5 && (a[1] - b[1]).abs() < 1e-5);
        }
    }

    #[test]
    fn a_planar_path_is_explained_by_two_unit_components_and_excluded_tensors_are_zero() {
        let (states, origin, _) = trajectory(12);
        let (r, _) = run(&states, &origin, 1 << 30);
        assert!(r.explained_variance_ratio[0] + r.explained_variance_ratio[1] > 1.0 - 1e-6);
        for k in 0..2 {
            let n = r.components[k][0].square().sum(Kind::Double).double_value(&[]);
            assert!((n - 1.0).abs() < 1e-5, "|pc{k}|² = {n}");
            assert_eq!(r.components[k][1].abs().max().double_value(&[]), 0.0);
        }
        // The last checkpoint is not the origin here, but distances are kept by the projection.
        let d = |i: usize, j: usize| {
            let (a, b) = (r.coords[i], r.coords[j]);
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
        };
        let true_d = (&states[3][0] - &states[7][0]).square().sum(Kind::Double).double_value(&[]).sqrt();
        assert!((d(3, 7) - true_d).abs() < 1e-4 * true_d);
    }

    #[test]
    fn residuals_are_distances_from_the_plane_over_distances_from_the_origin() {
        let (states, origin, _) = trajectory(12);
        let (flat, _) = run(&states, &origin, 1 << 30);
        assert!(flat.residuals.iter().all(|&r| r < 1e-3), "a planar path: {:?}", flat.residuals);
        // Lift the path off any plane with a third direction, growing along the path.
        let e3 = crate::space::directions::seeded(5, || Tensor::randn([5, 7], (Kind::Float, Device::Cpu)));
        let lifted: Vec<Vec<Tensor>> =
            states.iter().enumerate().map(|(i, s)| vec![&s[0] + &e3 * (0.3 * i as f64), s[1].copy()]).collect();
        let (r, _) = run(&lifted, &origin, 1 << 30);
        for (i, s) in lifted.iter().enumerate() {
            let m = (&s[0] - &origin[0]).to_kind(Kind::Double);
            let (u, v) = (r.components[0][0].to_kind(Kind::Double), r.components[1][0].to_kind(Kind::Double));
            let off = &m - &u * (&m * &u).sum(Kind::Double) - &v * (&m * &v).sum(Kind::Double);
            let norm = |t: &Tensor| t.square().sum(Kind::Double).double_value(&[]).sqrt();
            let want = norm(&off) / norm(&m);
            assert!((r.residuals[i] - want).abs() < 1e-4, "checkpoint {i}: {} vs {want}", r.residuals[i]);
        }
        assert!(r.residuals.iter().cloned().fold(0.0, f64::max) > 0.05, "{:?}", r.residuals);
        assert_eq!(residual(0.0, [0.0, 0.0]), 0.0);
        assert!(flat.off_plane < 1e-3 && r.off_plane > 0.05, "{} {}", flat.off_plane, r.off_plane);
    }

    #[test]
    fn a_checkpoint_near_the_origin_does_not_make_the_path_leave_its_plane() {
        // Squared norms and plane coordinates: far checkpoints on the plane, one near the origin
        // that is mostly off it (residual 0.8 of its own tiny distance).
        let norms2 = [100.0, 64.0, 1e-4];
        let coords = [[10.0, 0.0], [0.0, 8.0], [0.006, 0.0]];
        let worst = norms2.iter().zip(&coords).map(|(&n, c)| residual(n, *c)).fold(0.0, f64::max);
        assert!((worst - 0.8).abs() < 1e-9, "{worst}");
        let off = off_plane(&norms2, &coords);
        assert!((off - 0.0008).abs() < 1e-9, "{off}");
        assert_eq!(off_plane(&[0.0, 0.0], &[[0.0, 0.0], [0.0, 0.0]]), 0.0);
    }

    #[test]
    fn degenerate_trajectories_are_refused() {
        let (_, origin, _) = trajectory(3);
        let same: Vec<Vec<Tensor>> = (0..4).map(|_| origin.iter().map(|t| t.copy()).collect()).collect();
        let mut load = |i: usize| Ok(same[i].iter().map(|t| t.copy()).collect());
        let e = pca(&mut load, 4, &origin, &[true, false], 1 << 20, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("no direction"), "{e}");
        let line: Vec<Vec<Tensor>> = (0..4).map(|i| vec![&origin[0] * (1.0 + i as f64), origin[1].copy()]).collect();
        let mut load = |i: usize| Ok(line[i].iter().map(|t| t.copy()).collect());
        let e = pca(&mut load, 4, &origin, &[true, false], 1 << 20, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("straight line"), "{e}");
        let mut load = |_: usize| -> Result<Vec<Tensor>> { unreachable!() };
        assert!(pca(&mut load, 2, &origin, &[true, false], 1 << 20, Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("at least 3"));
    }

    #[test]
    fn block_plans() {
        assert_eq!(BlockPlan::new(10, 100, 1000), BlockPlan { per_block: 10, blocks: 1, reads: 10 });
        let b = BlockPlan::new(10, 100, 999);
        assert_eq!((b.per_block, b.blocks), (4, 3));
        // Blocks of 4, 4, 2: Gram 4 + 4·2 + 2·3, components 4 + 4.
        assert_eq!(b.reads, 4 + 8 + 6 + 8);
        assert_eq!(BlockPlan::new(5, 1000, 10).per_block, 1, "at least one vector a block");
    }
}
