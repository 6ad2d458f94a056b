//! PCA of a training trajectory without holding T×P numbers twice: the T×T Gram matrix of the
//! vectors m_i = θ_i − θ_origin, accumulated tensor by tensor with libtorch (on the run's device),
//! its mean-centred eigendecomposition, and from it the unit principal directions, the explained
//! variance ratios and the least-squares coordinates of every m_i on the plane of the top two.
//! Definitions: ../shared/docs/landscape.md (mean-centred, as sklearn's PCA).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// The top two principal directions of a set of difference vectors.
#[derive(Debug)]
pub struct Pca {
    /// δ and η, per tensor (the order of the inputs), float32 on the CPU; zero where excluded.
    pub components: [Vec<Tensor>; 2],
    /// Explained variance ratio of every component with a positive eigenvalue, largest first.
    pub explained_variance_ratio: Vec<f64>,
    /// Least-squares coordinates (on δ, η) of every input vector m_i.
    pub coords: Vec<[f64; 2]>,
}

/// Columns per chunk when forming Gram blocks, so that a block of T×chunk float64 stays small.
const CHUNK_ELEMS: i64 = 1 << 24;

/// PCA of m_i = states[i] − origin, over the tensors with `include[j]`, computed on `device`.
/// Each state is a list of tensors in the same order as `origin`.
pub fn pca(states: &[Vec<Tensor>], origin: &[Tensor], include: &[bool], device: Device) -> Result<Pca> {
    let _g = tch::no_grad_guard();
    let t = states.len();
    if t < 3 {
        bail!("PCA needs at least 3 checkpoints, got {t}");
    }
    let opts = (Kind::Double, device);
    // G = Σ_j M_j M_jᵀ, M_j = [T, numel_j] differences for tensor j, in column chunks.
    let mut g = Tensor::zeros([t as i64, t as i64], opts);
    let block = |j: usize, start: i64, len: i64| -> Tensor {
        let rows: Vec<Tensor> = states
            .iter()
            .map(|s| {
                s[j].flatten(0, -1).narrow(0, start, len).to_kind(Kind::Double)
                    - origin[j].flatten(0, -1).narrow(0, start, len).to_kind(Kind::Double)
            })
            .collect();
        Tensor::stack(&rows, 0).to_device(device)
    };
    let chunk = (CHUNK_ELEMS / t as i64).max(1);
    let numel = |j: usize| origin[j].numel() as i64;
    for j in (0..origin.len()).filter(|&j| include[j]) {
        let mut start = 0;
        while start < numel(j) {
            let len = chunk.min(numel(j) - start);
            let m = block(j, start, len);
            g += m.matmul(&m.tr());
            start += len;
        }
    }
    // Mean-centred Gram: H G H with H = I − 11ᵀ/T.
    let h = Tensor::eye(t as i64, opts) - 1.0 / t as f64;
    let gc = h.matmul(&g).matmul(&h);
    let gc = (&gc + gc.tr()) * 0.5;
    let (evals, evecs) = gc.linalg_eigh("L");
    let evals: Vec<f64> = Vec::<f64>::try_from(evals.to_device(Device::Cpu))?.into_iter().rev().collect();
    let evecs = evecs.to_device(Device::Cpu).flip([1]); // columns: largest eigenvalue first
    let total: f64 = evals.iter().filter(|v| **v > 0.0).sum();
    let tol = evals[0].abs() * 1e-12;
    if evals[0].is_nan() || evals[0] <= tol || total <= 0.0 {
        bail!("all {t} checkpoints are identical on the compared parameters: the trajectory has no direction");
    }
    if evals[1].is_nan() || evals[1] <= tol {
        bail!("the trajectory is a straight line (one principal direction only): no plane to draw");
    }
    let ratio: Vec<f64> = evals.iter().filter(|v| **v > tol).map(|v| v / total).collect();
    let gcpu = g.to_device(Device::Cpu);
    let mut components: [Vec<Tensor>; 2] = [Vec::new(), Vec::new()];
    let mut coords = vec![[0.0; 2]; t];
    for k in 0..2 {
        let mut w = evecs.select(1, k as i64).contiguous();
        // Deterministic sign: the entry of largest magnitude is positive.
        let imax = w.abs().argmax(0, false).int64_value(&[]);
        if w.double_value(&[imax]) < 0.0 {
            w = -w;
        }
        let scale = 1.0 / evals[k].sqrt();
        // u_k = Σ_i w_i m_i / √λ_k (unit length; Σ_i w_i = 0 so centring changes nothing).
        let wd = w.to_device(device);
        for j in 0..origin.len() {
            let comp = if include[j] {
                let out = Tensor::zeros([numel(j)], opts);
                let mut start = 0;
                while start < numel(j) {
                    let len = chunk.min(numel(j) - start);
                    let part = wd.matmul(&block(j, start, len)) * scale;
                    let mut dst = out.narrow(0, start, len);
                    dst.copy_(&part);
                    start += len;
                }
                out.to_kind(Kind::Float).to_device(Device::Cpu).view(origin[j].size().as_slice())
            } else {
                Tensor::zeros(origin[j].size(), (Kind::Float, Device::Cpu))
            };
            components[k].push(comp);
        }
        // u_k · m_i = (G w)_i / √λ_k: least squares on an orthonormal pair is the projection.
        let proj = Vec::<f64>::try_from(gcpu.matmul(&w) * scale)?;
        for (i, c) in coords.iter_mut().enumerate() {
            c[k] = proj[i];
        }
    }
    Ok(Pca { components, explained_variance_ratio: ratio, coords })
}
