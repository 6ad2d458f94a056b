//! Directions in parameter space, keyed by parameter name: seeded Gaussian draws, their
//! normalization (filter / layer / model / none), the biasbn rule, and the safetensors file that
//! stores them (`x.<name>` and `y.<name>`). Definitions: docs/landscape.md.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{torch_msg, Error, Result, Role};
use crate::options::{Ignore, Norm};

/// One direction: a tensor per named model tensor. Kept as float32 on the CPU (what is saved);
/// moved to the device by the engine.
#[derive(Debug)]
pub struct Direction {
    pub tensors: Vec<(String, Tensor)>,
}

impl Direction {
    /// Euclidean norm over all tensors.
    pub fn norm(&self) -> f64 {
        self.dot(self).sqrt()
    }

    /// Euclidean inner product with `other` over all tensors (matched by position).
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

    /// A copy that another thread can own.
    pub fn copy(&self) -> Direction {
        Direction { tensors: self.tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect() }
    }
}

/// Run `f` holding torch's process-global CPU generator, seeded with `seed`, so that no other
/// thread's draws interleave with its own.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    f()
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
    // torch's default CPU generator is process-global: held while seeding and drawing, so that
    // concurrent callers (threads of one process) cannot interleave their draws.
    let _g = tch::no_grad_guard();
    let theta: Vec<(String, Tensor)> =
        params.iter().map(|(n, p)| (n.clone(), p.detach().to_device(Device::Cpu).to_kind(Kind::Float))).collect();
    seeded(seed, || {
        let draw = || {
            let raw =
                theta.iter().map(|(n, p)| (n.clone(), Tensor::randn(p.size(), (Kind::Float, Device::Cpu)))).collect();
            normalize(Direction { tensors: raw }, &theta, norm, ignore)
        };
        let x = draw();
        let y = if two { Some(draw()) } else { None };
        (x, y)
    })
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

/// A flat vector over the parameters `set` (names and shapes, in order, concatenated) as float32
/// CPU tensors shaped like them.
pub fn split_flat(v: &Tensor, set: &[(String, Vec<i64>)]) -> Vec<Tensor> {
    let v = v.to_device(Device::Cpu).to_kind(Kind::Float);
    let mut offset = 0;
    set.iter()
        .map(|(_, shape)| {
            let n: i64 = shape.iter().product();
            let t = v.narrow(0, offset, n).reshape(shape.as_slice()).contiguous();
            offset += n;
            t
        })
        .collect()
}

/// A flat vector over the parameters `set` as a direction over every parameter of `params`: its
/// pieces where it has them, zero elsewhere (e.g. an eigenvector over the weights only).
pub fn from_flat(v: &Tensor, set: &[(String, Vec<i64>)], params: &[(String, Tensor)]) -> Direction {
    let parts: HashMap<&str, Tensor> = set.iter().map(|(n, _)| n.as_str()).zip(split_flat(v, set)).collect();
    Direction {
        tensors: params
            .iter()
            .map(|(n, t)| {
                let v = parts
                    .get(n.as_str())
                    .map_or_else(|| Tensor::zeros(t.size(), (Kind::Float, Device::Cpu)), |v| v.copy());
                (n.clone(), v)
            })
            .collect(),
    }
}

/// Write δ (and η) to a safetensors file with keys `x.<name>` / `y.<name>`.
pub fn save(path: &Path, x: &Direction, y: Option<&Direction>) -> Result<()> {
    let mut named: Vec<(String, &Tensor)> = x.tensors.iter().map(|(n, t)| (format!("x.{n}"), t)).collect();
    if let Some(y) = y {
        named.extend(y.tensors.iter().map(|(n, t)| (format!("y.{n}"), t)));
    }
    Tensor::write_safetensors(&named, path)
        .map_err(|e| Error::file(Role::Directions, path, format!("cannot write: {}", torch_msg(&e))))
}

/// The `x.*` and `y.*` tensors of a directions file, by name (any other key is an error).
fn read(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let bad = |problem: String| Error::file(Role::Directions, path, problem);
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let all = Tensor::read_safetensors(path)
        .map_err(|e| bad(format!("not a readable safetensors file: {}", torch_msg(&e))))?;
    let (mut xs, mut ys) = (HashMap::new(), HashMap::new());
    for (k, t) in all {
        if let Some(n) = k.strip_prefix("x.") {
            xs.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("y.") {
            ys.insert(n.to_string(), t);
        } else {
            return Err(bad(format!("key {k:?} is neither x.<param> nor y.<param>")));
        }
    }
    if xs.is_empty() {
        return Err(bad("holds no x.<param> tensors".into()));
    }
    Ok((xs, ys))
}

/// Read directions saved by `save` and check them against the model's parameters: every name and
/// shape must match (the first mismatch is named). η is None when the file holds no `y.*` keys.
pub fn load(path: &Path, params: &[(String, Tensor)]) -> Result<(Direction, Option<Direction>)> {
    let (xs, ys) = read(path)?;
    let take = |mut m: HashMap<String, Tensor>, axis: &str| -> Result<Direction> {
        let mut tensors = Vec::with_capacity(params.len());
        for (name, p) in params {
            let Some(t) = m.remove(name) else {
                return Err(Error::file(
                    Role::Directions,
                    path,
                    format!("no {axis}.{name}, which the model has (shape {:?})", p.size()),
                ));
            };
            if t.size() != p.size() {
                return Err(Error::file(
                    Role::Directions,
                    path,
                    format!("{axis}.{name} has shape {:?} but the model's {name} has {:?}", t.size(), p.size()),
                ));
            }
            tensors.push((name.clone(), t.to_kind(Kind::Float)));
        }
        if let Some(extra) = m.keys().min() {
            return Err(Error::file(Role::Directions, path, format!("{axis}.{extra} names no parameter of the model")));
        }
        Ok(Direction { tensors })
    };
    let x = take(xs, "x")?;
    let y = if ys.is_empty() { None } else { Some(take(ys, "y")?) };
    Ok((x, y))
}

/// A direction given per target tensor, by position (None: no direction there).
pub type PerTarget = Vec<Option<Tensor>>;

/// Directions over a subset of `targets` (a model's parameters and buffers): every name in the
/// file must be one of them with its shape; targets it does not name get no direction (None in
/// the returned list, by position).
pub fn load_partial(path: &Path, targets: &[(String, Tensor)]) -> Result<(PerTarget, Option<PerTarget>)> {
    let (xs, ys) = read(path)?;
    let take = |mut m: HashMap<String, Tensor>, axis: &str| -> Result<Vec<Option<Tensor>>> {
        let out = targets
            .iter()
            .map(|(name, t)| match m.remove(name) {
                Some(d) if d.size() != t.size() => Err(Error::file(
                    Role::Directions,
                    path,
                    format!("{axis}.{name} has shape {:?} but the model's {name} has {:?}", d.size(), t.size()),
                )),
                d => Ok(d.map(|d| d.to_kind(Kind::Float))),
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(extra) = m.keys().min() {
            return Err(Error::file(Role::Directions, path, format!("{axis}.{extra} names no tensor of the model")));
        }
        Ok(out)
    };
    let x = take(xs, "x")?;
    let y = if ys.is_empty() { None } else { Some(take(ys, "y")?) };
    Ok((x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> Vec<(String, Tensor)> {
        seeded(1, || {
            vec![
                ("conv.weight".into(), Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu))),
                ("conv.bias".into(), Tensor::randn([4], (Kind::Float, Device::Cpu))),
                ("fc.weight".into(), Tensor::randn([2, 36], (Kind::Float, Device::Cpu))),
            ]
        })
    }

    fn row_norms(t: &Tensor) -> Vec<f64> {
        let k = t.size()[0];
        Vec::<f64>::try_from(t.reshape([k, -1]).norm_scalaropt_dim(2.0, [1], false).to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn filter_normalization_gives_each_filter_its_parameters_norm_and_biasbn_zeroes_vectors() {
        let p = params();
        let (dx, dy) = random(&p, 3, Norm::Filter, Ignore::Biasbn, true);
        for ((n, d), (_, t)) in dx.tensors.iter().zip(&p) {
            if t.dim() <= 1 {
                assert_eq!(d.abs().max().double_value(&[]), 0.0, "{n}");
            } else {
                for (a, b) in row_norms(d).iter().zip(row_norms(t)) {
                    assert!((a - b).abs() < 1e-5 * b, "{n}: {a} vs {b}");
                }
            }
        }
        assert!(dx.cosine(dy.as_ref().unwrap()).abs() < 0.5);
        let (again, _) = random(&p, 3, Norm::Filter, Ignore::Biasbn, false);
        assert!(dx.tensors.iter().zip(&again.tensors).all(|((_, a), (_, b))| a.equal(b)), "same seed, same draw");
    }

    #[test]
    fn keep_layer_and_model_norms_scale_as_defined() {
        let p = params();
        let (k, _) = random(&p, 0, Norm::Filter, Ignore::Keep, false);
        let b = &k.tensors[1].1;
        assert!((b.norm().double_value(&[]) - p[1].1.norm().double_value(&[])).abs() < 1e-5);
        let (m, _) = random(&p, 0, Norm::Model, Ignore::Keep, false);
        let pn = Direction { tensors: p.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect() }.norm();
        assert!((m.norm() - pn).abs() < 1e-5 * pn);
    }

    #[test]
    fn saved_directions_load_back_and_mismatches_are_named() {
        let dir = std::env::temp_dir().join(format!("losscape-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = params();
        let (dx, dy) = random(&p, 5, Norm::Layer, Ignore::Keep, true);
        let f = dir.join("d.safetensors");
        save(&f, &dx, dy.as_ref()).unwrap();
        let (lx, ly) = load(&f, &p).unwrap();
        assert!(lx.tensors.iter().zip(&dx.tensors).all(|((_, a), (_, b))| a.equal(b)));
        assert!(ly.is_some());
        let e = load(&f, &p[..2]).unwrap_err().to_string();
        assert!(e.contains("x.fc.weight names no parameter"), "{e}");
        let (px, _) = load_partial(&f, &p).unwrap();
        assert!(px.iter().all(Option::is_some));
        let mut bigger: Vec<(String, Tensor)> = p.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        bigger.push(("bn.running_mean".into(), Tensor::zeros([4], (Kind::Float, Device::Cpu))));
        let (px, _) = load_partial(&f, &bigger).unwrap();
        assert!(px[3].is_none(), "a target the file does not name gets no direction");
        let e = load(&dir.join("missing.safetensors"), &p).unwrap_err().to_string();
        assert!(e.contains("missing.safetensors") && e.contains("no such file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_bytes_as_a_directions_file_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let f = std::env::temp_dir().join(format!("losscape-dirs-fuzz-{}-{:?}.safetensors", std::process::id(), std::thread::current().id()));
            std::fs::write(&f, &bytes).unwrap();
            let r = load(&f, &params());
            prop_assert!(r.is_err());
            prop_assert!(!r.unwrap_err().to_string().contains('\n'));
        }
    }
}
