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

use tch::{CModule, Kind, Tensor};

use crate::engine::evaluate::Forward;
use crate::engine::mover::{copy_into, master_like, set_affine, Dirs, Mover};
use crate::error::{Error, Result};
use crate::ffi::Freeze;
use crate::inputs::model::Model;
use crate::store::record::FoldReport;

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

impl From<Error> for Skip {
    fn from(e: Error) -> Skip {
        Skip::Failed(e.to_string())
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
    /// Try oneDNN layouts for a float32 frozen copy (CPU): see `ffi::Module::freeze`.
    mkldnn: bool,
    /// The installed copy runs on oneDNN tensors (some of its constants are `is_mkldnn`).
    on_mkldnn: bool,
    /// The frozen copy that `forward` runs, once installed.
    module: Option<CModule>,
    /// Where the model's outputs come from, for error messages.
    model_path: std::path::PathBuf,
    /// The model's dict entry the loss is taken on (`Model::output`).
    output: Option<String>,
}

fn max_abs(t: &Tensor) -> f64 {
    if t.numel() == 0 {
        0.0
    } else {
        t.abs().max().double_value(&[])
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
        dirs: &Dirs,
        channels_last: bool,
    ) -> std::result::Result<(Fold, Masters), Skip> {
        let _g = tch::no_grad_guard();
        let moving: Vec<usize> = (0..names.len()).filter(|&i| dirs[i].0.is_some() || dirs[i].1.is_some()).collect();
        if moving.is_empty() {
            return Err(Skip::NotApplicable("nothing moves"));
        }
        if moving.iter().any(|&i| i >= n_params) {
            return Err(Skip::NotApplicable("BatchNorm statistics move"));
        }
        let two = moving.iter().any(|&i| dirs[i].1.is_some());
        let freeze_at = |a: f64, b: f64| -> std::result::Result<Vec<Tensor>, Skip> {
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
        Ok((Fold::uninstalled(index, shapes, channels_last, false, (&model.path, model.output.clone())), masters))
    }

    fn uninstalled(
        index: Vec<usize>,
        shapes: Vec<Vec<i64>>,
        channels_last: bool,
        mkldnn: bool,
        (model_path, output): (&std::path::Path, Option<String>),
    ) -> Fold {
        let (targets, origin, dirs) = (Vec::new(), Vec::new(), Vec::new());
        Fold {
            index,
            shapes,
            targets,
            origin,
            dirs,
            channels_last,
            mkldnn,
            on_mkldnn: false,
            module: None,
            model_path: model_path.to_path_buf(),
            output,
        }
    }

    /// A new, uninstalled fold of the same graph, to be installed with oneDNN layouts (for a
    /// float32 model on CPU) or without.
    pub fn fresh(&self, mkldnn: bool) -> Fold {
        let source = (self.model_path.as_path(), self.output.clone());
        Fold::uninstalled(self.index.clone(), self.shapes.clone(), self.channels_last, mkldnn, source)
    }

    /// Freeze the model as it now is (its current dtype), take that copy's moving constants as
    /// targets, set them to the origin and make `forward` run the copy. The first call makes the
    /// float32 masters from `masters` (float64 C(θ*), Lδ, Lη per moving constant). oneDNN layouts
    /// are used when asked for (`fresh`) and the model is float32.
    pub fn install(&mut self, model: &Model, masters: Option<&Masters>) -> std::result::Result<(), Skip> {
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
        self.module = module;
        if self.module.is_none() {
            return Err(Skip::Failed("the frozen copy was not returned".into()));
        }
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
pub fn report(active: Option<&Fold>, requested: bool, note: Option<&str>) -> FoldReport {
    FoldReport {
        requested,
        active: active.is_some(),
        constants: active.map(|f| f.constants()),
        moving_constants: active.map(|f| f.moving()),
        onednn: active.map(|f| f.on_mkldnn()),
        note: note.map(str::to_string),
    }
}

impl Forward for Fold {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.module.as_ref().ok_or_else(|| Error::other("internal: a fold used before it was installed"))?;
        crate::inputs::model::forward_picked(m, x, self.output.as_deref(), &self.model_path, " of the folded copy")
    }
}

/// Try to evaluate through a frozen copy of the model with BatchNorm folded in, the model at the
/// mover's origin, in its native dtype; with `mkldnn` (CPU), first with the copy's convolutions
/// on oneDNN tensors, and if that fails without. The fold is checked on `sample` (inputs of a few
/// samples): the folded and unfolded outputs at one perturbed point must agree to 1e-3 of the
/// output's scale. Whatever fails leaves the run unfolded, with a warning when the run could
/// have been folded; the outcome is the returned report (meta.json's `batchnorm_folding`).
pub fn try_fold(
    model: &Model,
    mover: &Mover,
    sample: &Tensor,
    channels_last: bool,
    mkldnn: bool,
) -> (Option<Fold>, FoldReport) {
    let mut onednn_note = None;
    let outcome = build_checked(model, mover, sample, channels_last, mkldnn, &mut onednn_note);
    match outcome {
        Ok(f) => {
            let r = report(Some(&f), true, onednn_note.as_deref());
            (Some(f), r)
        }
        Err(skip) => {
            if let Skip::Failed(why) = &skip {
                log::info!("evaluating without BatchNorm folding: {why}");
            }
            (None, report(None, true, Some(&skip.why())))
        }
    }
}

/// Build the fold once; install and check it with oneDNN layouts when `mkldnn` (a failure there
/// goes to `onednn_note`), else or then without.
fn build_checked(
    model: &Model,
    mover: &Mover,
    sample: &Tensor,
    channels_last: bool,
    mkldnn: bool,
    onednn_note: &mut Option<String>,
) -> std::result::Result<Fold, Skip> {
    let Some((names, n_params, origin, dirs)) = mover.affine_parts() else {
        return Err(Skip::NotApplicable("points are interpolated between states"));
    };
    let (f, masters) = Fold::build(model, names, n_params, origin, dirs, channels_last)?;
    if mkldnn {
        match install_checked(model, mover, f.fresh(true), &masters, sample) {
            Ok(f) => return Ok(f),
            Err(e) => *onednn_note = Some(format!("oneDNN layouts not used: {}", e.why())),
        }
    }
    install_checked(model, mover, f, &masters, sample)
}

/// Install `f` and compare the folded and unfolded outputs at (0.5, 0.5); keep it if they agree.
fn install_checked(
    model: &Model,
    mover: &Mover,
    mut f: Fold,
    masters: &Masters,
    sample: &Tensor,
) -> std::result::Result<Fold, Skip> {
    f.install(model, Some(masters))?;
    let (_, _, _, dirs) = mover.affine_parts().expect("affine");
    let (targets, origin) = mover.targets_and_origin();
    let _g = tch::no_grad_guard();
    let (a, b) = (0.5, 0.5);
    set_affine(targets, origin, dirs, a, b);
    let unfolded = model.forward(sample);
    copy_into(targets, origin);
    let unfolded = unfolded?;
    f.set(a, b);
    // Three passes: TorchScript's profiling executor runs an optimized graph from the second.
    let mut worst: Option<f64> = Some(0.0);
    for _ in 0..3 {
        let folded = f.forward(sample)?;
        worst = match (worst, rel_diff(&folded, &unfolded)) {
            (Some(w), Some(d)) => Some(w.max(d)),
            _ => None,
        };
    }
    f.reset();
    match worst {
        Some(d) if d <= 1e-3 => Ok(f),
        Some(d) => Err(Skip::Failed(format!("folded and unfolded outputs differ by {d:.1e} of their scale"))),
        None => Err(Skip::Failed("the check's outputs are not finite".into())),
    }
}

/// After the model was cast to another dtype: freeze it again in that dtype and move the fold's
/// targets there (oneDNN layouts are for float32 only: a cast copy runs on plain tensors). A fold
/// that cannot follow is dropped with a warning; the report says so.
pub fn recast(mut f: Fold, model: &Model, report: &mut FoldReport) -> Option<Fold> {
    match f.install(model, None) {
        Ok(()) => {
            report.onednn = Some(f.on_mkldnn());
            Some(f)
        }
        Err(e) => {
            let why = e.why();
            log::info!("evaluating without BatchNorm folding: {why}");
            *report = self::report(None, true, Some(&why));
            None
        }
    }
}
