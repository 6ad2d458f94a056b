//! Moving the model's state (parameters, then floating-point buffers) to the values of a grid
//! point: θ = origin + αδ + βη, or (1 − α)·origin + α·end. The origin and directions are kept as
//! masters in the model's native dtype (normally float32), made when the mover is; every point is
//! formed afresh from them (never by accumulating steps) and copied into the model, whatever dtype
//! it has been cast to since.

use tch::{Kind, Tensor};

use crate::inputs::checkpoint::State;
use crate::inputs::model::Model;
use crate::space::curve::CurveKind;
use crate::space::directions::Direction;

/// Per moving tensor: its δ and η masters (None where that direction is zero there).
pub type Dirs = Vec<(Option<Tensor>, Option<Tensor>)>;

/// How a grid point (α, β) gives the values of the model's state tensors.
enum Path {
    /// origin + α·δ + β·η.
    Affine(Dirs),
    /// (1 − α)·origin + α·end, by `lerp`, which is exact at α = 0 and α = 1.
    Lerp(Vec<Tensor>),
    /// lerp(curve(t), line(t), β) with curve(t) = w_A·origin + w_bend·bend + w_B·end
    /// (space::curve) and line(t) = lerp(origin, end, t): the curve at β = 0, the line at β = 1.
    Curve { end: Vec<Tensor>, bend: Vec<Tensor>, kind: CurveKind },
}

pub struct Mover {
    /// Handles to the model's state tensors (`Model::state()`), and their names.
    targets: Vec<Tensor>,
    names: Vec<String>,
    /// How many of the targets are parameters (the rest are buffers).
    n_params: usize,
    /// The model's values when the mover was made.
    original: Vec<Tensor>,
    /// The values at (0, 0).
    origin: Vec<Tensor>,
    path: Path,
}

/// Copy each of `values` into the matching target in place (bit-exact).
pub(crate) fn copy_into(targets: &[Tensor], values: &[Tensor]) {
    let _g = tch::no_grad_guard();
    for (t, v) in targets.iter().zip(values) {
        assign(t, v);
    }
}

/// Write `value` into `target` in place (a oneDNN `target` takes a oneDNN copy of it; libtorch
/// copies between oneDNN tensors only).
pub(crate) fn assign(target: &Tensor, value: &Tensor) {
    let mut t = target.shallow_clone();
    if t.is_mkldnn() && !value.is_mkldnn() {
        let v = value.contiguous().f_to_mkldnn(t.kind()).expect("a float32 CPU tensor converts to oneDNN");
        t.copy_(&v);
    } else {
        t.copy_(value);
    }
}

/// A device copy of `src` in dtype `kind` with the memory format of `like`.
pub(crate) fn master_like(like: &Tensor, src: &Tensor, kind: Kind) -> Tensor {
    let mut t = like.empty_like();
    if t.kind() != kind {
        t = t.to_kind(kind);
    }
    t.copy_(src);
    t
}

/// origin + α·dx + β·dy into each target (skipping those with no direction).
pub(crate) fn set_affine(targets: &[Tensor], origin: &[Tensor], dirs: &Dirs, a: f64, b: f64) {
    let _g = tch::no_grad_guard();
    for ((p, t0), (dx, dy)) in targets.iter().zip(origin).zip(dirs) {
        let v = match (dx, dy) {
            (None, None) => continue,
            (Some(dx), None) => t0 + dx * a,
            (None, Some(dy)) => t0 + dy * b,
            (Some(dx), Some(dy)) => t0 + dx * a + dy * b,
        };
        assign(p, &v);
    }
}

impl Mover {
    /// origin + αδ + βη, where origin is a checkpoint's state (None: the model's own values) and
    /// `dx`, `dy` give a direction (or None) for each of the model's state tensors, in order.
    /// Directions that are zero everywhere are dropped. The origin is written into the model.
    pub fn affine(
        model: &Model,
        origin: Option<&State>,
        dx: Vec<Option<Tensor>>,
        dy: Option<Vec<Option<Tensor>>>,
    ) -> Mover {
        let _g = tch::no_grad_guard();
        let mut m = Mover::start(model, origin);
        let master = |d: Option<Tensor>, o: &Tensor| {
            d.filter(|t| t.numel() > 0 && t.abs().max().double_value(&[]) != 0.0).map(|t| master_like(o, &t, o.kind()))
        };
        let dy = dy.unwrap_or_else(|| dx.iter().map(|_| None).collect());
        let dirs = dx.into_iter().zip(dy).zip(&m.origin).map(|((x, y), o)| (master(x, o), master(y, o))).collect();
        m.path = Path::Affine(dirs);
        m
    }

    /// `affine` with directions given by name (tensors of the model's state they do not name
    /// stay at the origin).
    pub fn with_directions(model: &Model, origin: Option<&State>, dx: &Direction, dy: Option<&Direction>) -> Mover {
        let by_name = |d: &Direction| -> Vec<Option<Tensor>> {
            let m: std::collections::HashMap<&str, &Tensor> = d.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            model.state().iter().map(|(n, _)| m.get(n.as_str()).map(|t| t.shallow_clone())).collect()
        };
        Mover::affine(model, origin, by_name(dx), dy.map(by_name))
    }

    /// The segment from `from` (α = 0) to `to` (α = 1), both checkpoint states of the model.
    pub fn lerp(model: &Model, from: &State, to: &State) -> Mover {
        let _g = tch::no_grad_guard();
        let mut m = Mover::start(model, Some(from));
        let end = m.origin.iter().zip(&to.tensors).map(|(o, t)| master_like(o, t, o.kind())).collect();
        m.path = Path::Lerp(end);
        m
    }

    /// The curve from `from` (t = 0) through `bend` to `to` (t = 1), with the straight line
    /// beside it (β = 1); all three checkpoint states of the model.
    pub fn curve(model: &Model, from: &State, bend: &State, to: &State, kind: CurveKind) -> Mover {
        let _g = tch::no_grad_guard();
        let mut m = Mover::start(model, Some(from));
        let masters = |s: &State| m.origin.iter().zip(&s.tensors).map(|(o, t)| master_like(o, t, o.kind())).collect();
        let (end, bend) = (masters(to), masters(bend));
        m.path = Path::Curve { end, bend, kind };
        m
    }

    /// Handles, names, original values and origin masters, with the origin loaded into the model.
    fn start(model: &Model, origin: Option<&State>) -> Mover {
        let (names, targets): (Vec<String>, Vec<Tensor>) = model.state().into_iter().unzip();
        let original: Vec<Tensor> = targets.iter().map(|t| t.detach().copy()).collect();
        let kind = model.native_kind;
        let origin: Vec<Tensor> = match origin {
            None => original.iter().map(|t| master_like(t, t, kind)).collect(),
            Some(s) => targets.iter().zip(&s.tensors).map(|(t, v)| master_like(t, v, kind)).collect(),
        };
        copy_into(&targets, &origin);
        Mover { targets, names, n_params: model.params.len(), original, origin, path: Path::Lerp(Vec::new()) }
    }

    /// Number of tensors that move (the rest have zero directions).
    pub fn moving(&self) -> usize {
        match &self.path {
            Path::Affine(d) => d.iter().filter(|(a, b)| a.is_some() || b.is_some()).count(),
            Path::Lerp(end) => self.origin.iter().zip(end).filter(|(o, e)| !o.equal(e)).count(),
            Path::Curve { end, bend, .. } => {
                self.origin.iter().zip(end.iter().zip(bend)).filter(|(o, (e, b))| !o.equal(e) || !o.equal(b)).count()
            }
        }
    }

    /// Set the model to the point (α, β), formed afresh from the masters.
    pub fn set(&self, alpha: f64, beta: f64) {
        let _g = tch::no_grad_guard();
        match &self.path {
            Path::Affine(dirs) => set_affine(&self.targets, &self.origin, dirs, alpha, beta),
            Path::Lerp(end) => {
                for ((p, a), b) in self.targets.iter().zip(&self.origin).zip(end) {
                    p.shallow_clone().copy_(&a.lerp(b, alpha));
                }
            }
            Path::Curve { end, bend, kind } => {
                let [wa, wm, wb] = kind.weights(alpha);
                for ((p, a), (b, m)) in self.targets.iter().zip(&self.origin).zip(end.iter().zip(bend)) {
                    let curve = a * wa + m * wm + b * wb;
                    let v = if beta == 0.0 { curve } else { curve.lerp(&a.lerp(b, alpha), beta) };
                    p.shallow_clone().copy_(&v);
                }
            }
        }
    }

    /// Set the model to a whole other state (a checkpoint's), e.g. to evaluate it in place;
    /// `reset` brings it back to the origin.
    pub fn set_state(&self, state: &State) {
        copy_into(&self.targets, &state.tensors);
    }

    /// Every state tensor back to the origin, bit for bit.
    pub fn reset(&self) {
        copy_into(&self.targets, &self.origin);
    }

    /// The model's values as they were when the mover was made, bit for bit (the model must
    /// have its native dtype again).
    pub fn restore(&self) {
        copy_into(&self.targets, &self.original);
    }

    /// The affine path's pieces, for folding: (names, parameters among them, origin, directions).
    pub fn affine_parts(&self) -> Option<(&[String], usize, &[Tensor], &Dirs)> {
        match &self.path {
            Path::Affine(d) => Some((&self.names, self.n_params, &self.origin, d)),
            Path::Lerp(_) | Path::Curve { .. } => None,
        }
    }

    /// The model's state tensors (handles) and the origin masters.
    pub fn targets_and_origin(&self) -> (&[Tensor], &[Tensor]) {
        (&self.targets, &self.origin)
    }
}
