//! One worker of a sweep (a device, or a CPU thread), as a sequence of states whose order the
//! types enforce:
//!
//! 1. [`Strict`]: model and data loaded, the model moved to the run's origin, and — while the
//!    process runs in strict fp32 (no TF32) — the precision reference evaluated and BatchNorm
//!    folded and checked. Made by [`Strict::open`].
//! 2. [`Ready`]: the model cast to the run's precision (the fold refrozen with it) and every
//!    batch shape warmed up, in the process settings of the run's precision. Made by
//!    [`Strict::ready`]; evaluates points ([`Ready::eval`]).
//! 3. [`Ready::finish`] puts the model back as it was loaded, bit for bit, and hands the
//!    session back.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Device;

use crate::engine::batchnorm::{self, Recompute};
use crate::engine::device;
use crate::engine::evaluate::{Evaluator, Forward, PointValue};
use crate::engine::fold::{self, Fold};
use crate::engine::hessian::{self, Hessian};
use crate::engine::mover::Mover;
use crate::engine::session::{Session, Setup};
use crate::error::{Error, Result};
use crate::inputs::checkpoint::State;
use crate::options::{BatchNormMode, Precision, Split};
use crate::space::directions;
use crate::space::grid::Grid;
use crate::space::spectrum::{self, LanczosOptions, Which};
use crate::store::record::{
    CurvatureSpec, FoldReport, Motion, Plan, PrecisionCheck, Quantity, SharpnessPlan, WorkerReport,
};

/// What every worker of a run builds from: the run directory, its plan, the task's options.
#[derive(Clone, Copy)]
pub struct RunSpec<'a> {
    pub run_dir: &'a Path,
    pub plan: &'a Plan,
    pub setup: &'a Setup,
}

/// The network a point is evaluated on.
enum Net {
    /// The model's own module, its state moved by the mover.
    Module,
    /// A frozen copy with BatchNorm folded in, its constants moved by the fold.
    Folded(Fold),
}

/// Everything a worker holds, in either state.
struct Parts {
    s: Session,
    mover: Mover,
    ev: Evaluator,
    net: Net,
    fold_report: FoldReport,
    bn: Option<Recompute>,
    grid: Grid,
    states: Vec<PathBuf>,
    columns: Vec<Quantity>,
    curvature: Option<CurvatureSpec>,
    /// A sharpness run's measurements, and the directory their records go to.
    sharpness: Option<SharpnessPlan>,
    run_dir: PathBuf,
    /// The run's splits, the first being `s.data`'s (one for most runs).
    splits: Vec<Split>,
}

impl Parts {
    fn net(&self) -> &dyn Forward {
        match &self.net {
            Net::Module => &self.s.model,
            Net::Folded(f) => f,
        }
    }

    /// Re-estimate BatchNorm statistics for the model as it stands (recompute mode).
    fn recompute(&self) -> Result<f64> {
        let Some(bn) = &self.bn else { return Ok(0.0) };
        let t = Instant::now();
        let data = self.s.bn_data.as_ref().expect("recompute loads its training data");
        bn.run(&self.s.model, &self.ev, data)?;
        device::synchronize(self.s.dev);
        Ok(t.elapsed().as_secs_f64())
    }

    /// Evaluate the model at its origin with the module (no fold), uncapped.
    fn origin_value(&mut self) -> Result<PointValue> {
        self.mover.reset();
        self.recompute()?;
        let cap = self.ev.loss_cap.take();
        let mut ev = self.ev.clone();
        let v = ev.evaluate_fitting(&self.s.model, &self.s.data);
        self.ev.batch_size = ev.batch_size;
        self.ev.loss_cap = cap;
        v
    }

    /// The values on the splits after the first, the network as it stands (the module itself
    /// with `module`, else the point's network), uncapped.
    fn eval_more(&mut self, module: bool) -> Result<Vec<PointValue>> {
        let mut ev = self.ev.clone();
        ev.loss_cap = None;
        let net: &dyn Forward = if module { &self.s.model } else { self.net() };
        let out = self.s.more.iter().map(|d| ev.evaluate_fitting(net, d)).collect();
        self.ev.batch_size = ev.batch_size;
        out
    }
}

/// A worker after the strict-fp32 phase.
pub struct Strict {
    p: Parts,
    /// The loss at the origin in strict fp32, for runs in another precision.
    reference: Option<PointValue>,
}

/// A worker ready to evaluate points.
pub struct Ready {
    p: Parts,
    precision_check: Option<PrecisionCheck>,
}

/// One evaluated point: its values (one per column) and what it cost.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub values: Vec<f32>,
    pub loss: f64,
    pub perturb_seconds: f64,
    pub batchnorm_seconds: f64,
    pub curvature_seconds: f64,
    /// Hessian-vector products at this point (`--curvature`).
    pub products: usize,
    /// Gradient passes over the data (sharpness ascent steps) and their seconds.
    pub gradients: usize,
    pub gradient_seconds: f64,
}

fn mover_of(spec: &RunSpec, s: &Session) -> Result<Mover> {
    let model = &s.model;
    let origin = spec.plan.origin.as_deref().map(|p| State::load(p, model)).transpose()?;
    match &spec.plan.motion {
        Motion::Fixed => Ok(Mover::affine(model, origin.as_ref(), model.state().iter().map(|_| None).collect(), None)),
        Motion::Affine => {
            let file = spec.run_dir.join("directions.safetensors");
            let (dx, dy) = directions::load_partial(&file, &model.state())?;
            Ok(Mover::affine(model, origin.as_ref(), dx, dy))
        }
        Motion::Lerp { to } => {
            let from = origin.ok_or_else(|| Error::other("internal: a line without its first checkpoint"))?;
            let to = State::load(to, model)?;
            Ok(Mover::lerp(model, &from, &to))
        }
        Motion::Curve { to, bend, curve } => {
            let from = origin.ok_or_else(|| Error::other("internal: a curve without its first checkpoint"))?;
            let (to, bend) = (State::load(to, model)?, State::load(&spec.run_dir.join(bend), model)?);
            Ok(Mover::curve(model, &from, &bend, &to, *curve))
        }
    }
}

impl Strict {
    /// Load (or take `session`), move the model to the run's origin, evaluate the strict-fp32
    /// reference when the run's precision is another, and fold BatchNorm when asked for and
    /// exact. The process must be in strict fp32 (see `settings`).
    pub fn open(spec: &RunSpec, dev: Device, session: Option<Session>) -> Result<Strict> {
        let s = match session {
            Some(s) => s,
            None => Session::open(&spec.plan.arch, spec.setup, dev)?,
        };
        let mut ev = s.evaluator()?;
        let mover = mover_of(spec, &s)?;
        let bn = match spec.setup.batchnorm {
            BatchNormMode::Eval => None,
            BatchNormMode::Recompute => {
                Some(Recompute::new(&s.model, &ev, s.bn_data.as_ref().expect("recompute loads its training data"))?)
            }
        };
        let check = s.precision != Precision::Fp32 && (s.dev.is_cuda() || s.precision.is_reduced());
        let mut p = Parts {
            grid: spec.plan.grid.map_or(Grid { x: vec![], y: None }, |g| g.grid()),
            sharpness: spec.plan.sharpness.clone(),
            run_dir: spec.run_dir.to_path_buf(),
            states: spec.plan.states.clone(),
            columns: spec.plan.columns.clone(),
            curvature: spec.plan.curvature,
            splits: spec.setup.splits(),
            net: Net::Module,
            fold_report: fold::report(None, spec.setup.fold_batchnorm, None),
            bn,
            mover,
            ev: ev.clone(),
            s,
        };
        let reference = if check {
            ev.warm_up_fitting(&p.s.model, &p.s.data, 1)?;
            p.ev.batch_size = ev.batch_size;
            Some(p.origin_value()?)
        } else {
            None
        };
        if spec.setup.fold_batchnorm {
            if p.bn.is_some() {
                p.fold_report = fold::report(
                    None,
                    true,
                    Some("not used: BatchNorm statistics are re-estimated at every point (batchnorm recompute)"),
                );
            } else {
                // Checked in strict fp32, before the cast.
                let sample = p.s.data.inputs(0, p.s.data.n.min(4));
                let mkldnn = !p.s.dev.is_cuda() && spec.setup.onednn;
                let (f, report) = fold::try_fold(&p.s.model, &p.mover, &sample, spec.setup.channels_last, mkldnn);
                p.fold_report = report;
                if let Some(f) = f {
                    p.net = Net::Folded(f);
                }
            }
        }
        Ok(Strict { p, reference })
    }

    /// Cast to the run's precision (refreezing the fold), warm every batch shape up, and compare
    /// the origin's loss with the strict-fp32 reference. The process must be in the run's
    /// precision settings (see `settings`).
    pub fn ready(self) -> Result<Ready> {
        let Strict { mut p, reference } = self;
        let prec = p.s.precision;
        if prec.is_reduced() {
            p.s.model.cast(prec.kind())?;
            p.ev.input_kind = prec.kind();
            if let Net::Folded(f) = std::mem::replace(&mut p.net, Net::Module) {
                if let Some(f) = fold::recast(f, &p.s.model, &mut p.fold_report) {
                    p.net = Net::Folded(f);
                }
            }
        }
        // TorchScript's profiling executor optimizes a graph on its second or third call per shape.
        let mut ev = p.ev.clone();
        ev.warm_up_fitting(p.net(), &p.s.data, 3)?;
        for d in &p.s.more {
            ev.warm_up_fitting(p.net(), d, 3)?;
        }
        p.ev = ev;
        let precision_check = match reference {
            None => None,
            Some(r) => {
                let mut ev = p.ev.clone();
                p.mover.reset();
                if let Net::Folded(f) = &p.net {
                    f.reset();
                }
                p.recompute()?;
                let v = ev.evaluate_fitting(p.net(), &p.s.data)?;
                p.ev.batch_size = ev.batch_size;
                Some(PrecisionCheck {
                    reference: "fp32 with TF32 off, at the origin of the grid".into(),
                    center_loss_fp32: r.loss,
                    center_loss: v.loss,
                    abs_diff: (v.loss - r.loss).abs(),
                    rel_diff: (v.loss - r.loss).abs() / r.loss.abs(),
                    center_acc_fp32: r.acc,
                    center_acc: v.acc,
                })
            }
        };
        p.ev.loss_cap = p.s.setup.loss_cap;
        Ok(Ready { p, precision_check })
    }
}

impl Ready {
    /// Evaluate point k of the run: a grid point (k < grid size) or a checkpoint's own state.
    pub fn eval(&mut self, k: usize) -> Result<Evaluated> {
        let g = self.p.grid.len();
        let s = self.p.states.len();
        if k < g {
            self.p.eval_grid(k)
        } else if k < g + s {
            self.p.eval_state(k - g)
        } else {
            self.p.eval_item(k - g - s)
        }
    }

    /// Samples evaluated per point (on every split).
    pub fn samples(&self) -> usize {
        self.p.s.datasets().map(|d| d.n).sum()
    }

    /// This worker's record for the shard file.
    pub fn report(&self, points: usize, seconds: f64, perturb: f64, batchnorm: f64, curvature: f64) -> WorkerReport {
        WorkerReport {
            device: device::name(self.p.s.dev),
            batch_size: self.p.ev.batch_size,
            points,
            seconds,
            perturb_seconds: perturb,
            batchnorm_seconds: batchnorm,
            curvature_seconds: curvature,
            precision_check: self.precision_check.clone(),
            batchnorm_folding: self.p.fold_report.clone(),
            moving_tensors: self.p.mover.moving(),
        }
    }

    /// Put the model back as it was loaded (dtype, then values and BatchNorm counters, bit for
    /// bit) and hand the session back.
    pub fn finish(self) -> Result<Session> {
        let Parts { mut s, mover, bn, net, .. } = self.p;
        drop(net);
        if s.model.kind() != s.model.native_kind {
            // Back to the masters' dtype first: loading float32 values into bf16 would round them.
            let kind = s.model.native_kind;
            s.model.cast(kind)?;
        }
        mover.restore();
        if let Some(bn) = bn {
            bn.restore();
        }
        Ok(s)
    }
}

impl Parts {
    /// Grid point k: moved (the fold's constants, or the model's state), BatchNorm re-estimated
    /// in recompute mode, evaluated (capped when asked for).
    fn eval_grid(&mut self, k: usize) -> Result<Evaluated> {
        let t = Instant::now();
        let (a, b) = self.grid.point(k);
        match &self.net {
            Net::Folded(f) => f.set(a, b),
            Net::Module => self.mover.set(a, b),
        }
        device::synchronize(self.s.dev);
        let perturb = t.elapsed().as_secs_f64();
        let bn = self.recompute()?;
        let mut ev = self.ev.clone();
        let v = ev.evaluate_fitting(self.net(), &self.s.data);
        self.ev.batch_size = ev.batch_size;
        let v = v?;
        let neg = !v.loss.is_finite() && matches!(self.net, Net::Module) && self.watch_variance();
        let more = self.eval_more(false)?;
        let mut out = self.values(v, &more, neg, perturb, bn);
        if let Some(spec) = self.curvature {
            let t = Instant::now();
            let (max, min, products) = self.curvature_at(a, b, spec)?;
            out.curvature_seconds = t.elapsed().as_secs_f64();
            out.products = products;
            for (q, x) in self.columns.iter().zip(out.values.iter_mut()) {
                match q {
                    Quantity::EigMax => *x = max as f32,
                    Quantity::EigMin => *x = min as f32,
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// λmax and λmin of the Hessian at (α, β), from the module itself (its parameters moved
    /// there, whichever network gave the loss), in the model's float32.
    /// Also the products it took.
    fn curvature_at(&mut self, a: f64, b: f64, spec: CurvatureSpec) -> Result<(f64, f64, usize)> {
        if matches!(self.net, Net::Folded(_)) {
            self.mover.set(a, b);
        }
        let set = hessian::parameter_set(&self.s.model, spec.parameters);
        let mut h = Hessian::new(
            &self.s.model,
            &self.s.data,
            set,
            self.ev.loss,
            spec.operator,
            self.ev.outputs_per_sample,
            self.ev.batch_size,
        )?;
        let dim = h.dim();
        let mut op = |v: &tch::Tensor| h.apply(v);
        let o = LanczosOptions { k: 1, which: Which::Both, tol: spec.tol, max_steps: spec.max_steps, seed: spec.seed };
        let r = spectrum::extremes(&mut op, dim, self.s.dev, o)?;
        if !r.converged {
            log::warn!(
                "Hessian eigenvalues at ({a}, {b}) reached only relative residuals {:.1e} (λmax), {:.1e} (λmin) in {} steps",
                r.largest[0].residual,
                r.smallest[0].residual,
                r.steps
            );
        }
        Ok((r.largest[0].value, r.smallest[0].value, r.products))
    }

    /// Checkpoint i of the plan's states: its own loss (uncapped), evaluated with the module;
    /// the model goes back to the origin afterwards.
    fn eval_state(&mut self, i: usize) -> Result<Evaluated> {
        let t = Instant::now();
        let path =
            self.states.get(i).ok_or_else(|| Error::other(format!("checkpoint state {i} is outside the run")))?;
        let state = State::load(path, &self.s.model)?;
        self.mover.set_state(&state);
        device::synchronize(self.s.dev);
        let perturb = t.elapsed().as_secs_f64();
        let result = (|| {
            let bn = self.recompute()?;
            let cap = self.ev.loss_cap.take();
            let mut ev = self.ev.clone();
            let v = ev.evaluate_fitting(&self.s.model, &self.s.data);
            self.ev.batch_size = ev.batch_size;
            self.ev.loss_cap = cap;
            let v = v?;
            let neg = !v.loss.is_finite() && self.watch_variance();
            let more = self.eval_more(true)?;
            Ok::<_, Error>(self.values(v, &more, neg, perturb, bn))
        })();
        self.mover.reset();
        result
    }

    /// Measurement i of a sharpness run: the model moved to its checkpoint, measured (records
    /// written into the run directory), and moved back.
    fn eval_item(&mut self, i: usize) -> Result<Evaluated> {
        let plan = self.sharpness.clone().ok_or_else(|| Error::other(format!("point {i} is outside the run")))?;
        let item = *plan.items.get(i).ok_or_else(|| Error::other(format!("measurement {i} is outside the run")))?;
        let t = Instant::now();
        let path = &plan.models[item.model];
        let state = State::load(path, &self.s.model)?;
        self.mover.set_state(&state);
        device::synchronize(self.s.dev);
        let perturb = t.elapsed().as_secs_f64();
        let result = (|| {
            let bn = self.recompute()?;
            let bn_data = self.s.bn_data.as_ref();
            let recompute = self.bn.as_ref().zip(bn_data);
            let measured = crate::engine::sharpness::measure(
                &self.s.model,
                &self.s.data,
                &self.ev,
                recompute,
                &plan,
                i,
                &self.run_dir,
            )?;
            let point = &measured.point;
            crate::store::sharpness::write_item(&self.run_dir, i, point)?;
            let value = PointValue {
                loss: point.loss,
                acc: point.acc.unwrap_or(f64::NAN),
                capped: false,
                stderr: 0.0,
                samples: self.s.data.n,
            };
            let mut out = self.values(value, &[], false, perturb, bn);
            out.gradients = measured.gradients;
            out.gradient_seconds = measured.gradient_seconds;
            for (q, x) in self.columns.iter().zip(out.values.iter_mut()) {
                if *q == Quantity::Sharpness {
                    *x = point.result.value as f32;
                }
            }
            Ok::<_, Error>(out)
        })();
        self.mover.reset();
        result
    }

    /// Whether the model's BatchNorm variances are watched (the run records where they went
    /// negative) and one of them is negative now.
    fn watch_variance(&self) -> bool {
        self.columns.contains(&Quantity::NegativeVariance) && batchnorm::negative_variance(&self.s.model)
    }

    /// A point's record from its value on the first split, `v`, and on the others, `more`.
    fn values(&self, v: PointValue, more: &[PointValue], negative_var: bool, perturb: f64, bn: f64) -> Evaluated {
        let on = |s: &Split| {
            let i = self.splits.iter().position(|x| x == s).unwrap_or(0);
            if i == 0 {
                v
            } else {
                more[i - 1]
            }
        };
        let values = self
            .columns
            .iter()
            .map(|q| match q {
                Quantity::Loss => v.loss as f32,
                Quantity::Acc => v.acc as f32,
                Quantity::SplitLoss(s) => on(s).loss as f32,
                Quantity::SplitAcc(s) => on(s).acc as f32,
                Quantity::Capped => v.capped as u8 as f32,
                Quantity::NegativeVariance => negative_var as u8 as f32,
                Quantity::Stderr => v.stderr as f32,
                Quantity::Samples => v.samples as f32,
                Quantity::SplitStderr(s) => on(s).stderr as f32,
                Quantity::SplitSamples(s) => on(s).samples as f32,
                Quantity::EigMax | Quantity::EigMin | Quantity::Sharpness => f32::NAN,
            })
            .collect();
        Evaluated {
            values,
            loss: v.loss,
            perturb_seconds: perturb,
            batchnorm_seconds: bn,
            curvature_seconds: 0.0,
            products: 0,
            gradients: 0,
            gradient_seconds: 0.0,
        }
    }
}
