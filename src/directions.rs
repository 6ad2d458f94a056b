//! Directions in parameter space, keyed by parameter name: seeded Gaussian draws, their
//! normalization (filter / layer / model / none), the biasbn rule, and the safetensors file that
//! stores them (`x.<param>` and `y.<param>`). Definitions: ../shared/docs/landscape.md.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::torch_msg;

/// How a random direction is rescaled to the size of the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Per filter (slice along dim 0 of each tensor with dim > 1): ‖δ_k‖ = ‖θ_k‖.
    Filter,
    /// Per tensor: ‖δ‖ = ‖θ‖.
    Layer,
    /// Whole vector: ‖δ‖ = ‖θ‖ over all perturbed parameters.
    Model,
    /// Raw N(0, 1) draws.
    None,
}

/// What happens to parameters with dim ≤ 1 (biases, BatchNorm weight and bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Ignore {
    /// Their direction is 0: they stay at their trained values.
    Biasbn,
    /// They are perturbed too, normalized per tensor like `layer` (`none` leaves them raw).
    Keep,
}

/// One direction: a tensor per parameter, same names, shapes and order as the model's parameters.
/// Kept as float32 on the CPU (what is saved); moved to the device by the evaluator.
#[derive(Debug)]
pub struct Direction {
    pub tensors: Vec<(String, Tensor)>,
}

impl Direction {
    /// Euclidean norm over all parameters.
    pub fn norm(&self) -> f64 {
        self.tensors
            .iter()
            .map(|(_, t)| t.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    }

    /// Euclidean inner product with `other` over all parameters.
    pub fn dot(&self, other: &Direction) -> f64 {
        self.tensors
            .iter()
            .zip(&other.tensors)
            .map(|((_, a), (_, b))| {
                (a.to_kind(Kind::Double) * b.to_kind(Kind::Double)).sum(Kind::Double).double_value(&[])
            })
            .sum()
    }

    /// cos(δ, η); NaN when either is zero.
    pub fn cosine(&self, other: &Direction) -> f64 {
        self.dot(other) / (self.norm() * other.norm())
    }
}

/// Two random directions (η only when `two`), drawn from torch's CPU generator seeded with `seed`:
/// for each of δ then η, one `randn(shape)` per parameter in order — the same numbers PyTorch gives
/// after `torch.manual_seed(seed)` — then normalized against `params`.
pub fn random(
    params: &[(String, Tensor)],
    seed: i64,
    norm: Norm,
    ignore: Ignore,
    two: bool,
) -> (Direction, Option<Direction>) {
    // torch's default CPU generator is process-global: hold it while seeding and drawing, so
    // that concurrent callers (threads of one process) cannot interleave their draws.
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let _g = tch::no_grad_guard();
    tch::manual_seed(seed);
    let theta: Vec<(String, Tensor)> =
        params.iter().map(|(n, p)| (n.clone(), p.detach().to_device(Device::Cpu).to_kind(Kind::Float))).collect();
    let draw = || {
        let raw = theta.iter().map(|(n, p)| (n.clone(), Tensor::randn(p.size(), (Kind::Float, Device::Cpu)))).collect();
        normalize(Direction { tensors: raw }, &theta, norm, ignore)
    };
    let x = draw();
    let y = if two { Some(draw()) } else { None };
    (x, y)
}

const EPS: f64 = 1e-10;

/// Rescale `d` against the parameters `theta` (same order) as `norm` and `ignore` say.
pub fn normalize(mut d: Direction, theta: &[(String, Tensor)], norm: Norm, ignore: Ignore) -> Direction {
    let _g = tch::no_grad_guard();
    let small = |t: &Tensor| t.dim() <= 1;
    for ((_, dt), (_, th)) in d.tensors.iter_mut().zip(theta) {
        if small(th) {
            match ignore {
                Ignore::Biasbn => {
                    let _ = dt.zero_();
                }
                Ignore::Keep if norm != Norm::None => {
                    let s = th.norm().double_value(&[]) / (dt.norm().double_value(&[]) + EPS);
                    let _ = dt.g_mul_scalar_(s);
                }
                Ignore::Keep => {}
            }
            continue;
        }
        match norm {
            Norm::Filter => {
                let k = th.size()[0];
                let tn = th.reshape([k, -1]).norm_scalaropt_dim(2.0, [1], false);
                let dn = dt.reshape([k, -1]).norm_scalaropt_dim(2.0, [1], false);
                let mut shape = vec![1i64; th.dim()];
                shape[0] = k;
                let s = (tn / (dn + EPS)).view(shape.as_slice());
                let _ = dt.g_mul_(&s);
            }
            Norm::Layer => {
                let s = th.norm().double_value(&[]) / (dt.norm().double_value(&[]) + EPS);
                let _ = dt.g_mul_scalar_(s);
            }
            Norm::Model | Norm::None => {}
        }
    }
    if norm == Norm::Model {
        let perturbed = |i: usize| !(small(&theta[i].1) && ignore == Ignore::Biasbn);
        let sq = |ts: &mut dyn Iterator<Item = &Tensor>| -> f64 {
            ts.map(|t| t.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum()
        };
        let th_norm = sq(&mut theta.iter().enumerate().filter(|(i, _)| perturbed(*i)).map(|(_, (_, t))| t)).sqrt();
        let d_norm = sq(&mut d.tensors.iter().enumerate().filter(|(i, _)| perturbed(*i)).map(|(_, (_, t))| t)).sqrt();
        let s = th_norm / (d_norm + EPS);
        for (i, (_, dt)) in d.tensors.iter_mut().enumerate() {
            if perturbed(i) {
                let _ = dt.g_mul_scalar_(s);
            }
        }
    }
    d
}

/// Write δ (and η) to a safetensors file with keys `x.<name>` / `y.<name>`.
pub fn save(path: &Path, x: &Direction, y: Option<&Direction>) -> Result<()> {
    let mut named: Vec<(String, &Tensor)> = x.tensors.iter().map(|(n, t)| (format!("x.{n}"), t)).collect();
    if let Some(y) = y {
        named.extend(y.tensors.iter().map(|(n, t)| (format!("y.{n}"), t)));
    }
    Tensor::write_safetensors(&named, path)
        .map_err(|e| anyhow!("{}: cannot write directions: {}", path.display(), torch_msg(&e)))
}

/// Read directions saved by `save` and check them against the model's parameters: every name and
/// shape must match (the first mismatch is named). η is None when the file holds no `y.*` keys.
pub fn load(path: &Path, params: &[(String, Tensor)]) -> Result<(Direction, Option<Direction>)> {
    if !path.exists() {
        bail!("directions {}: no such file", path.display());
    }
    let all = Tensor::read_safetensors(path)
        .map_err(|e| anyhow!("directions {}: not a readable safetensors file: {}", path.display(), torch_msg(&e)))?;
    let mut xs = std::collections::HashMap::new();
    let mut ys = std::collections::HashMap::new();
    for (k, t) in all {
        if let Some(n) = k.strip_prefix("x.") {
            xs.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("y.") {
            ys.insert(n.to_string(), t);
        } else {
            bail!("directions {}: key {k:?} is neither x.<param> nor y.<param>", path.display());
        }
    }
    let take = |mut m: std::collections::HashMap<String, Tensor>, axis: &str| -> Result<Direction> {
        let mut tensors = Vec::with_capacity(params.len());
        for (name, p) in params {
            let Some(t) = m.remove(name) else {
                bail!("directions {}: no {axis}.{name}, which the model has (shape {:?})", path.display(), p.size());
            };
            if t.size() != p.size() {
                bail!(
                    "directions {}: {axis}.{name} has shape {:?} but the model's {name} has {:?}",
                    path.display(),
                    t.size(),
                    p.size()
                );
            }
            tensors.push((name.clone(), t.to_kind(Kind::Float)));
        }
        if let Some(extra) = m.keys().min() {
            bail!("directions {}: {axis}.{extra} names no parameter of the model", path.display());
        }
        Ok(Direction { tensors })
    };
    let x = take(xs, "x")?;
    let y = if ys.is_empty() { None } else { Some(take(ys, "y")?) };
    Ok((x, y))
}
