//! Evaluation: the exact dataset-mean loss (and top-1 accuracy) of the model as its parameters
//! stand, and the in-place perturbation θ = θ* + αδ + βη that moves it to a grid point.
//!
//! Hot loop rules: sums are accumulated on the device (float64), one host sync per point; each
//! point is formed from the pristine θ* (never by accumulating steps); the data never moves.

use std::cell::RefCell;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tch::{Kind, Reduction, Tensor};

use crate::checkpoint::State;
use crate::data::{Dataset, Targets};
use crate::directions::Direction;
use crate::fold::{self, Fold, Masters, Skip};
use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Cross-entropy over class logits [N, C], with integer labels; top-1 accuracy beside it.
    Ce,
    /// Mean squared error over all output entries (torch.nn.MSELoss), with float targets.
    Mse,
}

/// Loss and accuracy of one full pass. `acc` is NaN for MSE and for capped points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointValue {
    pub loss: f64,
    pub acc: f64,
    /// The pass stopped early: `loss` is a lower bound (the partial sum / N) above the cap.
    pub capped: bool,
}

pub struct Evaluator<'a> {
    model: &'a Model,
    data: &'a Dataset,
    pub loss: LossKind,
    /// Samples per forward pass; halved by the `*_fitting` calls on out-of-memory.
    pub batch_size: usize,
    /// Output entries per sample (classes for CE).
    pub outputs_per_sample: i64,
    /// dtype the inputs are cast to (the model's forward dtype).
    pub input_kind: Kind,
    /// Stop a pass once its partial mean proves the loss exceeds this.
    pub loss_cap: Option<f64>,
}

/// Whether an error is an allocator's out-of-memory (CUDA or CPU).
pub fn is_oom(e: &anyhow::Error) -> bool {
    let s = format!("{e:#}").to_lowercase();
    s.contains("out of memory") || s.contains("not enough memory") || s.contains("can't allocate memory")
}

impl<'a> Evaluator<'a> {
    /// Check that the model takes the data and its output fits the loss (one small forward pass).
    pub fn new(model: &'a Model, data: &'a Dataset, loss: Option<LossKind>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let loss = loss.unwrap_or(match data.targets {
            Targets::Classes => LossKind::Ce,
            Targets::Values => LossKind::Mse,
        });
        let b = data.n.min(2);
        let xb = data.inputs(0, b);
        let out = {
            let _g = tch::no_grad_guard();
            model.forward(&xb).map_err(|e| {
                anyhow::anyhow!("{e} (input batch of shape {:?} from {})", xb.size(), data.path.display())
            })?
        };
        let osz = out.size();
        let outputs_per_sample = match loss {
            LossKind::Ce => {
                if data.targets != Targets::Classes {
                    bail!(
                        "--loss ce needs integer class labels, but {} holds float targets (use --loss mse)",
                        data.path.display()
                    );
                }
                if osz.len() != 2 || osz[0] != b as i64 {
                    bail!(
                        "model {}: output has shape {osz:?} for input {:?}; cross-entropy needs [N, classes] = [{b}, C]",
                        model.path.display(),
                        xb.size()
                    );
                }
                let classes = osz[1];
                let max = data.y.max().int64_value(&[]);
                if max >= classes {
                    bail!(
                        "labels of {}: label {max} is out of range for a model with {classes} outputs (labels must be 0..{})",
                        data.path.display(),
                        classes - 1
                    );
                }
                classes
            }
            LossKind::Mse => {
                let per_out: i64 = osz.iter().skip(1).product();
                let ysz = data.y.size();
                let per_y: i64 = ysz.iter().skip(1).product();
                if osz.is_empty() || osz[0] != b as i64 || per_out != per_y {
                    bail!(
                        "model {}: output has shape {osz:?} for {b} samples but the targets of {} have shape {:?} \
                         ({per_y} values per sample)",
                        model.path.display(),
                        data.path.display(),
                        ysz
                    );
                }
                per_out
            }
        };
        Ok(Evaluator { model, data, loss, batch_size, outputs_per_sample, input_kind: Kind::Float, loss_cap: None })
    }

    /// Run `f`, halving the batch size and retrying each time it runs out of memory.
    fn fitting<T>(&mut self, f: impl Fn(&Self) -> Result<T>) -> Result<T> {
        loop {
            match f(self) {
                Err(e) if is_oom(&e) && self.batch_size > 1 => {
                    let smaller = self.batch_size / 2;
                    eprintln!("losscape: out of memory at batch size {}; retrying with {smaller}", self.batch_size);
                    self.batch_size = smaller;
                }
                r => return r,
            }
        }
    }

    /// `warm_up`, shrinking the batch until it fits.
    pub fn warm_up_fitting(&mut self, passes: usize) -> Result<()> {
        self.fitting(|ev| ev.warm_up(passes))
    }

    /// `evaluate`, shrinking the batch until it fits (then warming the new shapes up).
    pub fn evaluate_fitting(&mut self) -> Result<PointValue> {
        let before = self.batch_size;
        let v = self.fitting(|ev| ev.evaluate())?;
        if self.batch_size != before {
            self.warm_up_fitting(1)?;
        }
        Ok(v)
    }

    /// Run the batch shapes of a pass (full and ragged tail) a few times, so that TorchScript's
    /// profiling executor and cuDNN's algorithm search are done before anything is timed.
    pub fn warm_up(&self, passes: usize) -> Result<()> {
        let _g = tch::no_grad_guard();
        let n = self.data.n;
        let full = self.batch_size.min(n);
        let mut shapes = vec![full];
        if n > full && !n.is_multiple_of(full) {
            shapes.push(n % full);
        }
        for _ in 0..passes {
            for &len in &shapes {
                let _ = self.model.forward(&self.data.inputs(0, len).to_kind(self.input_kind))?;
            }
        }
        crate::device::synchronize(self.model.device);
        Ok(())
    }

    /// Loss over the whole dataset with the parameters as they stand: sum over samples / N.
    pub fn evaluate(&self) -> Result<PointValue> {
        let _g = tch::no_grad_guard();
        let dev = self.model.device;
        let n = self.data.n;
        let denom = match self.loss {
            LossKind::Ce => n as f64,
            LossKind::Mse => n as f64 * self.outputs_per_sample as f64,
        };
        let mut loss_sum = Tensor::zeros([], (Kind::Double, dev));
        let mut correct = Tensor::zeros([], (Kind::Int64, dev));
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            let xb = self.data.inputs(start, len).to_kind(self.input_kind);
            let out = self.model.forward(&xb)?.to_kind(Kind::Float);
            let yb = self.data.targets(start, len);
            match self.loss {
                LossKind::Ce => {
                    let l = out.cross_entropy_loss::<Tensor>(&yb, None, Reduction::Sum, -100, 0.0);
                    loss_sum += l.to_kind(Kind::Double);
                    correct += out.argmax(1, false).eq_tensor(&yb).sum(Kind::Int64);
                }
                LossKind::Mse => {
                    let d = out.reshape([len as i64, -1]) - yb.reshape([len as i64, -1]).to_kind(Kind::Float);
                    loss_sum += d.square().sum(Kind::Double);
                }
            }
            start += len;
            if let (Some(cap), true) = (self.loss_cap, start < n) {
                // Every sample's loss is >= 0, so the partial sum bounds the total from below.
                // (A host sync per batch: only paid when a cap is asked for.)
                let partial = loss_sum.double_value(&[]) / denom;
                if partial > cap {
                    return Ok(PointValue { loss: partial, acc: f64::NAN, capped: true });
                }
            }
        }
        // The one host sync of the point.
        let both = Tensor::stack(&[loss_sum, correct.to_kind(Kind::Double)], 0);
        let v = Vec::<f64>::try_from(&both)?;
        let acc = match self.loss {
            LossKind::Ce => v[1] / n as f64,
            LossKind::Mse => f64::NAN,
        };
        Ok(PointValue { loss: v[0] / denom, acc, capped: false })
    }
}

/// How a grid point (α, β) gives the values of the moving tensors.
enum Path {
    /// origin + α·δ + β·η (per tensor: None where that direction is zero there).
    Affine(Vec<(Option<Tensor>, Option<Tensor>)>),
    /// (1 − α)·origin + α·end, by `lerp`, which is exact at α = 0 and α = 1.
    Lerp(Vec<Tensor>),
}

/// Moves the model's state (parameters, then floating-point buffers) to the values of a grid
/// point and back. The origin and directions are copied at creation as masters in the model's
/// native dtype (normally float32); points are formed afresh from them in that dtype and copied
/// into the model, whatever dtype it has been cast to since. Make it before casting the model:
/// after `restore` (also done on drop) the model has its native dtype and the values it had at
/// creation, bit for bit.
pub struct Perturber<'a> {
    model: &'a Model,
    /// Handles to the model's tensors: `Model::state()`, and their names.
    targets: Vec<Tensor>,
    names: Vec<String>,
    /// The model's values at creation.
    original: Vec<Tensor>,
    /// The values at (0, 0).
    origin: Vec<Tensor>,
    path: Path,
    master_kind: Kind,
    /// While BatchNorm folding is in use: the frozen graph's moving constants (`fold.rs`).
    fold: RefCell<Option<Fold>>,
    /// meta.json's `batchnorm_folding`.
    fold_report: RefCell<Value>,
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

impl<'a> Perturber<'a> {
    /// θ* + αδ + βη around the model's own values (the `surface` command).
    pub fn new(model: &'a Model, x: &Direction, y: Option<&Direction>) -> Perturber<'a> {
        Perturber::affine(model, None, x, y)
    }

    /// origin + αδ + βη, where origin is a checkpoint's state (None: the model's own values).
    /// δ and η are matched to the model's state by name; tensors they do not name stay put.
    pub fn affine(model: &'a Model, origin: Option<&State>, x: &Direction, y: Option<&Direction>) -> Perturber<'a> {
        let _g = tch::no_grad_guard();
        let (targets, names, original, origin) = Perturber::start(model, origin);
        let lookup = |d: &Direction| -> Vec<Option<Tensor>> {
            let by_name: std::collections::HashMap<&str, &Tensor> =
                d.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            names
                .iter()
                .zip(&origin)
                .map(|(n, o)| {
                    by_name
                        .get(n.as_str())
                        .filter(|t| t.abs().max().double_value(&[]) != 0.0)
                        .map(|t| master_like(o, t, o.kind()))
                })
                .collect()
        };
        let dx = lookup(x);
        let dy = y.map(lookup).unwrap_or_else(|| names.iter().map(|_| None).collect());
        let path = Path::Affine(dx.into_iter().zip(dy).collect());
        Perturber::make(model, targets, names, original, origin, path)
    }

    fn make(
        model: &'a Model,
        targets: Vec<Tensor>,
        names: Vec<String>,
        original: Vec<Tensor>,
        origin: Vec<Tensor>,
        path: Path,
    ) -> Perturber<'a> {
        Perturber {
            model,
            targets,
            names,
            original,
            origin,
            path,
            master_kind: model.native_kind,
            fold: RefCell::new(None),
            fold_report: RefCell::new(fold::report(None, false, None)),
        }
    }

    /// The segment from `from` (α = 0) to `to` (α = 1), both checkpoint states of the model.
    pub fn line(model: &'a Model, from: &State, to: &State) -> Perturber<'a> {
        let _g = tch::no_grad_guard();
        let (targets, names, original, origin) = Perturber::start(model, Some(from));
        let end = origin.iter().zip(&to.tensors).map(|(o, t)| master_like(o, t, o.kind())).collect();
        Perturber::make(model, targets, names, original, origin, Path::Lerp(end))
    }

    /// (targets, their names, original values, origin masters), with the origin loaded into the
    /// model.
    #[allow(clippy::type_complexity)]
    fn start(model: &Model, origin: Option<&State>) -> (Vec<Tensor>, Vec<String>, Vec<Tensor>, Vec<Tensor>) {
        let (names, targets): (Vec<String>, Vec<Tensor>) = model.state().into_iter().unzip();
        let original: Vec<Tensor> = targets.iter().map(|t| t.detach().copy()).collect();
        let kind = model.native_kind;
        let origin: Vec<Tensor> = match origin {
            None => original.iter().map(|t| master_like(t, t, kind)).collect(),
            Some(s) => targets.iter().zip(&s.tensors).map(|(t, v)| master_like(t, v, kind)).collect(),
        };
        copy_into(&targets, &origin);
        (targets, names, original, origin)
    }

    /// Number of tensors that move (the rest have zero directions).
    pub fn moving(&self) -> usize {
        match &self.path {
            Path::Affine(d) => d.iter().filter(|(a, b)| a.is_some() || b.is_some()).count(),
            Path::Lerp(end) => self.origin.iter().zip(end).filter(|(o, e)| !o.equal(e)).count(),
        }
    }

    /// Set the model to the point (α, β), formed afresh from the masters.
    /// (With BatchNorm folding in use, the frozen graph's constants move instead.)
    pub fn set(&self, alpha: f64, beta: f64) {
        let _g = tch::no_grad_guard();
        if let Some(f) = self.fold.borrow().as_ref() {
            f.set(alpha, beta);
            return;
        }
        match &self.path {
            Path::Affine(dirs) => fold::set_affine(&self.targets, &self.origin, dirs, alpha, beta),
            Path::Lerp(end) => {
                for ((p, a), b) in self.targets.iter().zip(&self.origin).zip(end) {
                    p.shallow_clone().copy_(&a.lerp(b, alpha));
                }
            }
        }
    }

    /// Set the model to a whole other state (a checkpoint's), e.g. to evaluate it in place.
    pub fn set_state(&self, state: &State) {
        self.unfold();
        copy_into(&self.targets, &state.tensors);
    }

    /// Put the model back as it was at creation: its dtype, then its values, bit for bit.
    pub fn restore(&self) {
        let _g = tch::no_grad_guard();
        self.unfold();
        if self.model.kind() != self.master_kind {
            // Back to the masters' dtype first: loading float32 values into bf16 would round them.
            let _ = self.model.cast(self.master_kind);
        }
        copy_into(&self.targets, &self.original);
    }
}

impl Perturber<'_> {
    /// Try to evaluate through a frozen copy of the model with BatchNorm folded in (`fold.rs`),
    /// the model at the origin, in its native dtype; with `mkldnn` (CPU), first with the copy's
    /// convolutions on oneDNN tensors, and if that fails without. The fold is checked on `sample`
    /// (inputs of a few samples): the folded and unfolded outputs at one perturbed point must
    /// agree to 1e-3 of the output's scale. Whatever fails leaves the model unfolded, with a note
    /// on stderr unless `quiet` when the run could have been folded. The outcome goes to
    /// meta.json (`fold_report`).
    pub fn fold(&self, sample: &Tensor, channels_last: bool, mkldnn: bool, quiet: bool) {
        let mut onednn_note = None;
        let outcome = self.try_fold(sample, channels_last, mkldnn, &mut onednn_note);
        if let (Err(Skip::Failed(why)), false) = (&outcome, quiet) {
            eprintln!("losscape: evaluating without BatchNorm folding: {why}");
        }
        let note = outcome.err().map(Skip::why).or(onednn_note);
        *self.fold_report.borrow_mut() = fold::report(self.fold.borrow().as_ref(), true, note.as_deref());
    }

    /// Build the fold once; install and check it with oneDNN layouts when `mkldnn` (a failure
    /// there goes to `onednn_note`), else or then without.
    fn try_fold(
        &self,
        sample: &Tensor,
        channels_last: bool,
        mkldnn: bool,
        onednn_note: &mut Option<String>,
    ) -> Result<(), Skip> {
        let Path::Affine(dirs) = &self.path else {
            return Err(Skip::NotApplicable("points are interpolated between states"));
        };
        let n_params = self.model.params.len();
        let (f, masters) = Fold::build(self.model, &self.names, n_params, &self.origin, dirs, channels_last)?;
        if mkldnn {
            match self.install_checked(f.fresh(true), &masters, sample, dirs) {
                Ok(()) => return Ok(()),
                Err(e) => *onednn_note = Some(format!("oneDNN layouts not used: {}", e.why())),
            }
        }
        self.install_checked(f, &masters, sample, dirs)
    }

    /// Install `f` and compare the folded and unfolded outputs at (0.5, 0.5); keep it if they
    /// agree, else go back to the unfolded model.
    fn install_checked(
        &self,
        mut f: Fold,
        masters: &Masters,
        sample: &Tensor,
        dirs: &[(Option<Tensor>, Option<Tensor>)],
    ) -> Result<(), Skip> {
        f.install(self.model, Some(masters))?;
        let check = (|| -> Result<Option<f64>, Skip> {
            let _g = tch::no_grad_guard();
            let (a, b) = (0.5, 0.5);
            fold::set_affine(&self.targets, &self.origin, dirs, a, b);
            let unfolded = self.model.forward_unfrozen(sample);
            copy_into(&self.targets, &self.origin);
            let unfolded = unfolded?;
            f.set(a, b);
            // Three passes: TorchScript's profiling executor runs an optimized graph from the second.
            let mut worst: Option<f64> = Some(0.0);
            for _ in 0..3 {
                let folded = self.model.forward(sample)?;
                worst = match (worst, fold::rel_diff(&folded, &unfolded)) {
                    (Some(w), Some(d)) => Some(w.max(d)),
                    _ => None,
                };
            }
            f.reset();
            Ok(worst)
        })();
        match check {
            Ok(Some(d)) if d <= 1e-3 => {
                *self.fold.borrow_mut() = Some(f);
                Ok(())
            }
            other => {
                self.model.install_frozen(None);
                Err(match other {
                    Err(e) => e,
                    Ok(Some(d)) => {
                        Skip::Failed(format!("folded and unfolded outputs differ by {d:.1e} of their scale"))
                    }
                    _ => Skip::Failed("the check's outputs are not finite".into()),
                })
            }
        }
    }

    /// Cast the model to `kind` (the run's precision), and its folded copy with it; a fold that
    /// cannot follow is dropped, with a note on stderr unless `quiet`.
    pub fn cast_model(&self, kind: Kind, quiet: bool) -> Result<()> {
        if self.fold.borrow().is_none() {
            return self.model.cast(kind);
        }
        self.model.install_frozen(None);
        self.model.cast(kind)?;
        let mut guard = self.fold.borrow_mut();
        let f = guard.as_mut().expect("checked above");
        match f.install(self.model, None) {
            // oneDNN layouts are for float32 only: a cast copy runs on plain tensors.
            Ok(()) => self.fold_report.borrow_mut()["onednn"] = json!(f.on_mkldnn()),
            Err(e) => {
                let why = e.why();
                *guard = None;
                *self.fold_report.borrow_mut() = fold::report(None, true, Some(&why));
                if !quiet {
                    eprintln!("losscape: evaluating without BatchNorm folding: {why}");
                }
            }
        }
        Ok(())
    }

    /// meta.json's `batchnorm_folding`.
    pub fn fold_report(&self) -> Value {
        self.fold_report.borrow().clone()
    }

    /// Stop using the folded copy (the parameters are at the origin all along).
    fn unfold(&self) {
        if self.fold.borrow_mut().take().is_some() {
            self.model.install_frozen(None);
        }
    }
}

impl Drop for Perturber<'_> {
    fn drop(&mut self) {
        self.restore();
    }
}
