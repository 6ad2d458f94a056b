//! BatchNorm folding: evaluate a frozen copy of the model, in which `torch.jit.freeze` has folded
//! every BatchNorm into the convolution or linear layer before it (one memory-bound pass less per
//! layer), and move the frozen graph's constants instead of the model's parameters.
//!
//! Freezing is a fixed function C(θ) from the model's tensors to the graph's constants. When the
//! BatchNorm weights and statistics stay put (directions with `--ignore biasbn`, the default), C
//! is affine in what moves: C(θ* + αδ + βη) = C(θ*) + α·Lδ + β·Lη with Lδ = C(θ* + δ) − C(θ*).
//! `Fold::build` gets C(θ*), Lδ and Lη from freezes of float64 copies of the model, and checks
//! affinity at a further point; a grid point is then formed in the constants from float32
//! masters exactly as it would be in the parameters. Before the fold is used, the folded and
//! unfolded models' outputs at one perturbed point are compared. Whenever a step does not hold,
//! the run goes on unfolded.

use anyhow::Result;
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::eval::{assign, copy_into, master_like};
use crate::ffi::Freeze;
use crate::model::Model;

/// Per moving constant, float64 C(θ*), Lδ and Lη (None where that direction leaves it put).
pub type Masters = Vec<(Tensor, Option<Tensor>, Option<Tensor>)>;

/// Why the fold is not used.
#[derive(Debug)]
pub enum Skip {
    /// Folding cannot apply to this kind of run (interpolated states, moving BatchNorm statistics).
    NotApplicable(&'static str),
    /// It was tried and some check failed (reported to the user).
    Failed(String),
}

impl From<anyhow::Error> for Skip {
    fn from(e: anyhow::Error) -> Skip {
        Skip::Failed(format!("{e:#}"))
    }
}

impl Skip {
    /// Why, in words (meta.json's note).
    pub fn why(self) -> String {
        match self {
            Skip::NotApplicable(w) => w.to_string(),
            Skip::Failed(w) => w,
        }
    }
}

/// The frozen graph's moving constants and their float32 masters.
pub struct Fold {
    /// Positions of the moving constants in the frozen graph's list of floating-point constants.
    index: Vec<usize>,
    /// Shapes of all of the graph's floating-point constants (a new freeze must give the same).
    shapes: Vec<Vec<i64>>,
    /// The moving constants of the frozen module that `Model::forward` runs.
    targets: Vec<Tensor>,
    /// C(θ*) of the moving constants, then (Lδ, Lη), as masters in the model's native dtype.
    origin: Vec<Tensor>,
    dirs: Vec<(Option<Tensor>, Option<Tensor>)>,
    /// 4-D constants of the frozen copies that run are laid out channels_last.
    channels_last: bool,
    /// Try oneDNN layouts for a float32 frozen copy (CPU): see `ffi::freeze`.
    mkldnn: bool,
    /// The installed copy runs on oneDNN tensors (some of its constants are `is_mkldnn`).
    on_mkldnn: bool,
}

fn max_abs(t: &Tensor) -> f64 {
    if t.numel() == 0 {
        0.0
    } else {
        t.abs().max().double_value(&[])
    }
}

/// origin + α·dx + β·dy into each target (skipping those with no direction).
pub(crate) fn set_affine(
    targets: &[Tensor],
    origin: &[Tensor],
    dirs: &[(Option<Tensor>, Option<Tensor>)],
    a: f64,
    b: f64,
) {
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

impl Fold {
    /// The fold of the affine path `origin + α·dx + β·dy` over the model's state tensors `names`
    /// (the first `n_params` of them are parameters, the rest buffers), with the model at origin.
    /// Nothing is installed yet: see `install`.
    pub fn build(
        model: &Model,
        names: &[String],
        n_params: usize,
        origin: &[Tensor],
        dirs: &[(Option<Tensor>, Option<Tensor>)],
        channels_last: bool,
    ) -> Result<(Fold, Masters), Skip> {
        let _g = tch::no_grad_guard();
        let moving: Vec<usize> = (0..names.len()).filter(|&i| dirs[i].0.is_some() || dirs[i].1.is_some()).collect();
        if moving.is_empty() {
            return Err(Skip::NotApplicable("nothing moves"));
        }
        if moving.iter().any(|&i| i >= n_params) {
            return Err(Skip::NotApplicable("BatchNorm statistics move"));
        }
        let two = moving.iter().any(|&i| dirs[i].1.is_some());
        let freeze_at = |a: f64, b: f64| -> Result<Vec<Tensor>, Skip> {
            let set: Vec<(String, Tensor)> = moving
                .iter()
                .map(|&i| {
                    // (Not `+=`: `to_kind` of a float64 master returns the master itself.)
                    let v = [(&dirs[i].0, a), (&dirs[i].1, b)].into_iter().fold(
                        origin[i].to_kind(Kind::Double),
                        |v, (d, w)| match d {
                            Some(d) if w != 0.0 => v + d.to_kind(Kind::Double) * w,
                            _ => v,
                        },
                    );
                    (names[i].clone(), v)
                })
                .collect();
            Ok(model.freeze(&set, Freeze { to_double: true, ..Freeze::default() })?.0)
        };
        let c0 = freeze_at(0.0, 0.0)?;
        let cx = freeze_at(1.0, 0.0)?;
        let cy = if two { Some(freeze_at(0.0, 1.0)?) } else { None };
        let (ca, cb) = (2.0, if two { -1.0 } else { 0.0 });
        let check = freeze_at(ca, cb)?;
        let shapes: Vec<Vec<i64>> = c0.iter().map(|t| t.size()).collect();
        let same = |c: &[Tensor]| c.len() == shapes.len() && c.iter().zip(&shapes).all(|(t, s)| &t.size() == s);
        if !same(&cx) || !same(&check) || cy.as_deref().is_some_and(|c| !same(c)) {
            return Err(Skip::Failed("freezing at different points gave different graphs".into()));
        }
        let mut index = Vec::new();
        let mut masters = Vec::new();
        for j in 0..c0.len() {
            let lx = &cx[j] - &c0[j];
            let ly = cy.as_ref().map(|c| &c[j] - &c0[j]);
            let (mx, my) = (max_abs(&lx), ly.as_ref().map(max_abs).unwrap_or(0.0));
            let mut expected = &c0[j] + &lx * ca;
            if let Some(l) = &ly {
                expected += l * cb;
            }
            let scale = max_abs(&c0[j]) + ca.abs() * mx + cb.abs() * my;
            if max_abs(&(&check[j] - expected)) > 1e-9 * scale {
                return Err(Skip::Failed(
                    "the frozen graph's constants are not affine in the directions (BatchNorm weights move?)".into(),
                ));
            }
            if mx > 0.0 || my > 0.0 {
                index.push(j);
                masters.push((c0[j].shallow_clone(), (mx > 0.0).then_some(lx), ly.filter(|_| my > 0.0)));
            }
        }
        Ok((Fold::uninstalled(index, shapes, channels_last, false), masters))
    }

    fn uninstalled(index: Vec<usize>, shapes: Vec<Vec<i64>>, channels_last: bool, mkldnn: bool) -> Fold {
        let (targets, origin, dirs) = (Vec::new(), Vec::new(), Vec::new());
        Fold { index, shapes, targets, origin, dirs, channels_last, mkldnn, on_mkldnn: false }
    }

    /// A new, uninstalled fold of the same graph, to be installed with oneDNN layouts (for a
    /// float32 model on CPU) or without.
    pub fn fresh(&self, mkldnn: bool) -> Fold {
        Fold::uninstalled(self.index.clone(), self.shapes.clone(), self.channels_last, mkldnn)
    }

    /// Freeze the model as it now is (its current dtype), take that copy's moving constants as
    /// targets, set them to the origin and make `Model::forward` run the copy. The first call
    /// makes the float32 masters from `masters` (float64 C(θ*), Lδ, Lη per moving constant).
    /// oneDNN layouts are used when asked for (`fresh`) and the model is float32.
    pub fn install(&mut self, model: &Model, masters: Option<&Masters>) -> Result<(), Skip> {
        let mkldnn = self.mkldnn && model.kind() == Kind::Float;
        let how = Freeze { channels_last: self.channels_last, mkldnn, keep: true, ..Freeze::default() };
        let (consts, module) = model.freeze(&[], how)?;
        if consts.len() != self.shapes.len() || consts.iter().zip(&self.shapes).any(|(t, s)| &t.size() != s) {
            return Err(Skip::Failed("the frozen copy in the run's dtype has another graph".into()));
        }
        let targets: Vec<Tensor> = self.index.iter().map(|&j| consts[j].shallow_clone()).collect();
        if let Some(m) = masters {
            let kind = model.native_kind;
            let _g = tch::no_grad_guard();
            for (t, (c0, lx, ly)) in targets.iter().zip(m) {
                // Masters of a oneDNN constant are dense (written in through `eval::assign`).
                let t = if t.is_mkldnn() { c0 } else { t };
                self.origin.push(master_like(t, c0, kind));
                let master = |l: &Option<Tensor>| l.as_ref().map(|l| master_like(t, l, kind));
                self.dirs.push((master(lx), master(ly)));
            }
        }
        self.on_mkldnn = consts.iter().any(Tensor::is_mkldnn);
        self.targets = targets;
        self.reset();
        model.install_frozen(module);
        Ok(())
    }

    /// Set the frozen graph to the point (α, β).
    pub fn set(&self, a: f64, b: f64) {
        set_affine(&self.targets, &self.origin, &self.dirs, a, b);
    }

    /// The graph's constants back to the origin, bit for bit.
    pub fn reset(&self) {
        copy_into(&self.targets, &self.origin);
    }

    /// Number of moving constants.
    pub fn moving(&self) -> usize {
        self.index.len()
    }

    /// Whether the installed frozen copy runs on oneDNN tensors.
    pub fn on_mkldnn(&self) -> bool {
        self.on_mkldnn
    }

    /// Number of floating-point constants in the frozen graph.
    pub fn constants(&self) -> usize {
        self.shapes.len()
    }
}

/// Largest |a − b| relative to the largest |b|, over every entry; None if b has a non-finite
/// entry or is all zero (nothing to compare against).
pub fn rel_diff(a: &Tensor, b: &Tensor) -> Option<f64> {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let scale = max_abs(&b);
    if !(scale.is_finite() && scale > 0.0) || b.isfinite().all().int64_value(&[]) == 0 {
        return None;
    }
    Some(max_abs(&(a - b)) / scale)
}

/// meta.json's record of the fold.
pub fn report(active: Option<&Fold>, requested: bool, note: Option<&str>) -> Value {
    json!({
        "requested": requested,
        "active": active.is_some(),
        "constants": active.map(|f| f.constants()),
        "moving_constants": active.map(|f| f.moving()),
        "onednn": active.map(|f| f.on_mkldnn()),
        "note": note,
    })
}
