//! The exact dataset-mean loss (and top-1 accuracy) of a network as it stands: sums accumulated on
//! the device in float64, one host sync per pass, the data never moving. The network is any
//! forward function (the model's module, or a BatchNorm-folded copy of it).

use tch::{Kind, Reduction, Tensor};

use crate::error::{Error, Result, Role, Setting};
use crate::inputs::data::{Dataset, Targets, IGNORE_INDEX};
use crate::inputs::model::Model;
use crate::options::LossKind;

/// Loss and accuracy of one full pass. `acc` is NaN for MSE and for capped points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointValue {
    pub loss: f64,
    pub acc: f64,
    /// The pass stopped early: `loss` is a lower bound (the partial sum / N) above the cap.
    pub capped: bool,
    /// `--rel-error`: the standard error of `loss` (0 for a complete pass) and the samples seen.
    pub stderr: f64,
    pub samples: usize,
}

/// A forward pass: inputs [B, ...] to outputs.
pub trait Forward {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

impl Forward for Model {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Model::forward(self, x)
    }
}

/// The model's forward for curvature products and gradients in eval mode: BatchNorms folded into
/// the layers before them, as functions of the parameters ([`Model::forward_products`]).
pub struct Products<'a>(pub &'a Model);

impl Forward for Products<'_> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward_products(x)
    }
}

/// How a pass over the data is made: the loss, batch and input dtype.
#[derive(Debug, Clone)]
pub struct Evaluator {
    pub loss: LossKind,
    /// Samples per forward pass; halved by the `*_fitting` calls on out-of-memory.
    pub batch_size: usize,
    /// Output entries per sample (classes for CE).
    pub outputs_per_sample: i64,
    /// dtype the inputs are cast to (the model's forward dtype).
    pub input_kind: Kind,
    /// Stop a pass once its partial mean proves the loss exceeds this.
    pub loss_cap: Option<f64>,
    /// `--rel-error`: stop a pass over a dataset with a sample order once its loss is known to
    /// this, relative, after at least `min_samples` (0: the exact pass).
    pub rel_error: f64,
    pub min_samples: usize,
    /// `--rel-error`: the seed of the sample orders (`--sample-seed`).
    pub sample_seed: u64,
}

impl Evaluator {
    /// Check that the model takes the data and its output fits the loss (one small forward pass).
    pub fn new(model: &Model, data: &Dataset, loss: Option<LossKind>, batch_size: usize) -> Result<Evaluator> {
        if batch_size == 0 {
            return Err(Error::setting(Setting::BatchSize, 0, "must be at least 1"));
        }
        let loss = loss.unwrap_or(match data.targets {
            Targets::Classes => LossKind::Ce,
            Targets::Values => LossKind::Mse,
        });
        let b = data.n.min(2);
        let xb = data.inputs(0, b);
        let out = {
            let _g = tch::no_grad_guard();
            model.forward(&xb).map_err(|e| match e {
                Error::File { role, path, problem } => Error::File {
                    role,
                    path,
                    problem: format!("{problem} (input batch of shape {:?} from {})", xb.size(), data.path.display()),
                },
                e => e,
            })?
        };
        let outputs_per_sample = check_output(&out, &xb, model, data, loss)?;
        Ok(Evaluator {
            loss,
            batch_size,
            outputs_per_sample,
            input_kind: Kind::Float,
            loss_cap: None,
            rel_error: 0.0,
            min_samples: 0,
            sample_seed: 0,
        })
    }

    /// Run `f`, halving the batch size and retrying each time it runs out of memory.
    fn fitting<T>(&mut self, f: impl Fn(&Self) -> Result<T>) -> Result<T> {
        loop {
            match f(self) {
                Err(e) if e.is_oom() && self.batch_size > 1 => {
                    let smaller = self.batch_size / 2;
                    log::warn!("out of memory at batch size {}; retrying with {smaller}", self.batch_size);
                    self.batch_size = smaller;
                }
                r => return r,
            }
        }
    }

    /// `warm_up`, shrinking the batch until it fits.
    pub fn warm_up_fitting(&mut self, net: &dyn Forward, data: &Dataset, passes: usize) -> Result<()> {
        self.fitting(|ev| ev.warm_up(net, data, passes))
    }

    /// `evaluate`, shrinking the batch until it fits (then warming the new shapes up).
    pub fn evaluate_fitting(&mut self, net: &dyn Forward, data: &Dataset) -> Result<PointValue> {
        let before = self.batch_size;
        let v = self.fitting(|ev| ev.evaluate(net, data))?;
        if self.batch_size != before {
            self.warm_up_fitting(net, data, 1)?;
        }
        Ok(v)
    }

    /// Run the batch shapes of a pass (full and ragged tail) a few times, so that TorchScript's
    /// profiling executor and cuDNN's algorithm search are done before anything is timed.
    pub fn warm_up(&self, net: &dyn Forward, data: &Dataset, passes: usize) -> Result<()> {
        let _g = tch::no_grad_guard();
        let n = data.n;
        let full = self.batch_size.min(n);
        let mut shapes = vec![full];
        if n > full && !n.is_multiple_of(full) {
            shapes.push(n % full);
        }
        for _ in 0..passes {
            for &len in &shapes {
                let _ = net.forward(&data.inputs_as(0, len, self.input_kind))?;
            }
        }
        crate::engine::device::synchronize(data.x.device());
        Ok(())
    }

    /// Loss over the whole dataset with the network as it stands: sum over samples / N.
    pub fn evaluate(&self, net: &dyn Forward, data: &Dataset) -> Result<PointValue> {
        if let (true, Some(order)) = (self.rel_error > 0.0, &data.order) {
            return self.evaluate_sampled(net, data, order);
        }
        let _g = tch::no_grad_guard();
        let dev = data.x.device();
        let n = data.n;
        let denom = denominator(self.loss, data, self.outputs_per_sample);
        let mut loss_sum = Tensor::zeros([], (Kind::Double, dev));
        let mut correct = Tensor::zeros([], (Kind::Int64, dev));
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            let xb = data.inputs_as(start, len, self.input_kind);
            let out = net.forward(&xb)?.to_kind(Kind::Float);
            let yb = data.targets(start, len);
            match self.loss {
                LossKind::Ce => {
                    let (logits, labels) = flat_classes(&out, &yb);
                    let l = logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, IGNORE_INDEX, 0.0);
                    loss_sum += l.to_kind(Kind::Double);
                    // An ignored label (-100) never equals an argmax, so it is never counted correct.
                    correct += logits.argmax(1, false).eq_tensor(&labels).sum(Kind::Int64);
                }
                LossKind::Mse => loss_sum += batch_loss(LossKind::Mse, &out, &yb, Kind::Double),
            }
            start += len;
            if let (Some(cap), true) = (self.loss_cap, start < n) {
                // Every sample's loss is >= 0, so the partial sum bounds the total from below.
                // (A host sync per batch: only paid when a cap is asked for.)
                let partial = loss_sum.double_value(&[]) / denom;
                if partial > cap {
                    return Ok(PointValue { loss: partial, acc: f64::NAN, capped: true, stderr: 0.0, samples: start });
                }
            }
        }
        // The one host sync of the point.
        let both = Tensor::stack(&[loss_sum, correct.to_kind(Kind::Double)], 0);
        let v = Vec::<f64>::try_from(&both).map_err(|e| Error::other(format!("reading the loss back: {e}")))?;
        let acc = match self.loss {
            LossKind::Ce => v[1] / data.counted as f64,
            LossKind::Mse => f64::NAN,
        };
        // A non-finite loss makes the accuracy meaningless too (the outputs overflowed).
        let acc = if v[0].is_finite() { acc } else { f64::NAN };
        Ok(PointValue { loss: v[0] / denom, acc, capped: false, stderr: 0.0, samples: n })
    }

    /// The pass of `--rel-error` over the samples in `order` (int64 indices on the data's device),
    /// whatever order `data` carries: stops once the loss is known to `rel_error` (which must be
    /// above 0).
    pub fn evaluate_in_order(&self, net: &dyn Forward, data: &Dataset, order: &Tensor) -> Result<PointValue> {
        if self.rel_error <= 0.0 {
            return Err(Error::other("internal: a sampled pass without --rel-error"));
        }
        self.evaluate_sampled(net, data, order)
    }

    /// The pass of `--rel-error` (space::sample): the samples in `data.order`, the running sums
    /// of per-sample losses and counts in float64, one host sync per batch; stops after the first
    /// batch at which the loss is known to `rel_error` (or the cap is exceeded, or the data ends).
    fn evaluate_sampled(&self, net: &dyn Forward, data: &Dataset, order: &Tensor) -> Result<PointValue> {
        let _g = tch::no_grad_guard();
        let n = data.n;
        let denom = denominator(self.loss, data, self.outputs_per_sample);
        let dev = data.x.device();
        let dd = (Kind::Double, dev);
        let (mut s, mut c, mut q, mut p, mut k) = (
            Tensor::zeros([], dd),
            Tensor::zeros([], dd),
            Tensor::zeros([], dd),
            Tensor::zeros([], dd),
            Tensor::zeros([], dd),
        );
        let mut correct = Tensor::zeros([], (Kind::Int64, dev));
        let mut start = 0;
        let mut sums = crate::space::sample::Sums::default();
        while start < n {
            let len = self.batch_size.min(n - start);
            let idx = order.narrow(0, start as i64, len as i64);
            let out = net.forward(&data.inputs_at(&idx, self.input_kind))?.to_kind(Kind::Float);
            let yb = data.targets_at(&idx);
            let b = len as i64;
            // Per sample: its summed loss over its counted targets, and their number.
            let (per, count) = match self.loss {
                LossKind::Ce => {
                    let (logits, labels) = flat_classes(&out, &yb);
                    let l = logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::None, IGNORE_INDEX, 0.0);
                    correct += logits.argmax(1, false).eq_tensor(&labels).sum(Kind::Int64);
                    let cnt = labels.ne(IGNORE_INDEX).to_kind(Kind::Double).reshape([b, -1]).sum_dim_intlist(
                        1,
                        false,
                        Kind::Double,
                    );
                    (l.to_kind(Kind::Double).reshape([b, -1]).sum_dim_intlist(1, false, Kind::Double), cnt)
                }
                LossKind::Mse => {
                    let d = out.reshape([b, -1]).to_kind(Kind::Double) - yb.reshape([b, -1]).to_kind(Kind::Double);
                    (
                        d.square().sum_dim_intlist(1, false, Kind::Double),
                        Tensor::full([b], self.outputs_per_sample as f64, dd),
                    )
                }
            };
            s += per.sum(Kind::Double);
            c += count.sum(Kind::Double);
            q += per.square().sum(Kind::Double);
            p += (&per * &count).sum(Kind::Double);
            k += count.square().sum(Kind::Double);
            start += len;
            let v = Vec::<f64>::try_from(&Tensor::stack(&[&s, &c, &q, &p, &k], 0))
                .map_err(|e| Error::other(format!("reading the loss back: {e}")))?;
            sums = crate::space::sample::Sums { n: start as f64, s: v[0], c: v[1], q: v[2], p: v[3], k: v[4] };
            if !sums.s.is_finite() {
                break;
            }
            if let (Some(cap), true) = (self.loss_cap, start < n) {
                let partial = sums.s / denom;
                if partial > cap {
                    return Ok(PointValue { loss: partial, acc: f64::NAN, capped: true, stderr: 0.0, samples: start });
                }
            }
            if start < n && sums.known_to(self.rel_error, self.min_samples, n) {
                break;
            }
        }
        let loss = sums.estimate();
        let acc = match self.loss {
            LossKind::Ce if loss.is_finite() => correct.int64_value(&[]) as f64 / sums.c,
            _ => f64::NAN,
        };
        let stderr = if loss.is_finite() { sums.stderr(n) } else { f64::NAN };
        Ok(PointValue { loss, acc, capped: false, stderr, samples: start })
    }
}

/// What the dataset-mean loss divides the summed loss by: the targets counted (labels other than
/// -100) for cross-entropy, every output entry for MSE.
pub fn denominator(loss: LossKind, data: &Dataset, outputs_per_sample: i64) -> f64 {
    match loss {
        LossKind::Ce => data.counted as f64,
        LossKind::Mse => data.n as f64 * outputs_per_sample as f64,
    }
}

/// Class logits [B, ..., C] and labels [B, ...] as [M, C] and [M] (views when contiguous): one
/// row per target, the class axis last, as language models put it.
fn flat_classes(out: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    let c = *out.size().last().expect("outputs have a class axis");
    (out.reshape([-1, c]), y.reshape([-1]))
}

/// The loss of one batch summed over its targets, with whatever autograd graph `out` carries:
/// cross-entropy over the labels that are not -100 (float32), or squared error over every entry
/// (summed in `mse_sum`: float64 for evaluation, float32 for the Hessian's graph).
pub fn batch_loss(loss: LossKind, out: &Tensor, y: &Tensor, mse_sum: Kind) -> Tensor {
    match loss {
        LossKind::Ce => {
            let (logits, labels) = flat_classes(out, y);
            logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, IGNORE_INDEX, 0.0)
        }
        LossKind::Mse => {
            let b = out.size()[0];
            (out.reshape([b, -1]) - y.reshape([b, -1]).to_kind(Kind::Float)).square().sum(mse_sum)
        }
    }
}

/// The loss of each target of one batch (float32, with `out`'s graph), the terms `batch_loss`
/// sums: cross-entropy per label, one entry per label ([M], 0 where the label is -100), or squared
/// error per sample, summed over its outputs ([B]).
pub fn target_losses(loss: LossKind, out: &Tensor, y: &Tensor) -> Tensor {
    match loss {
        LossKind::Ce => {
            let (logits, labels) = flat_classes(out, y);
            logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::None, IGNORE_INDEX, 0.0)
        }
        LossKind::Mse => {
            let b = out.size()[0];
            (out.reshape([b, -1]) - y.reshape([b, -1]).to_kind(Kind::Float)).square().sum_dim_intlist(
                [1i64].as_slice(),
                false,
                Kind::Float,
            )
        }
    }
}

/// H_out · w for each target of one batch, H_out the Hessian of `batch_loss` in the outputs `out`
/// (no graph) and w shaped like `out`: for cross-entropy per label (diag(p) − p pᵀ) w with
/// p = softmax of its logits (0 where the label is -100); for squared error 2w.
pub fn output_hessian_product(loss: LossKind, out: &Tensor, y: &Tensor, w: &Tensor) -> Tensor {
    match loss {
        LossKind::Ce => {
            let (logits, labels) = flat_classes(out, y);
            let c = *out.size().last().expect("outputs have a class axis");
            let w = w.reshape([-1, c]);
            let p = logits.softmax(-1, Kind::Float);
            let pw = (&p * &w).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
            let counted = labels.ne(IGNORE_INDEX).to_kind(Kind::Float).unsqueeze(-1);
            ((&p * &w - &p * pw) * counted).view(out.size().as_slice())
        }
        LossKind::Mse => w * 2.0,
    }
}

/// Check the output `out` of the model on `xb` (the first samples of `data`) against the targets
/// and the loss; the output entries per sample (classes for cross-entropy).
fn check_output(out: &Tensor, xb: &Tensor, model: &Model, data: &Dataset, loss: LossKind) -> Result<i64> {
    let b = xb.size()[0];
    let osz = out.size();
    let ysz = data.y.size();
    match loss {
        LossKind::Ce => {
            if data.targets != Targets::Classes {
                return Err(Error::setting(
                    Setting::Loss,
                    "ce",
                    format!("needs integer class labels, but {} holds float targets (use mse)", data.path.display()),
                ));
            }
            // Labels [N, ...] need logits [B, ..., C]: the label shape, then the classes.
            let per_label = &ysz[1..];
            let fits = osz.len() == ysz.len() + 1 && osz[0] == b && &osz[1..osz.len() - 1] == per_label;
            if !fits {
                let want = if per_label.is_empty() {
                    format!("[N, classes] = [{b}, C]")
                } else {
                    let dims: Vec<String> = per_label.iter().map(|d| d.to_string()).collect();
                    format!("[N, {}, classes] = [{b}, {}, C] (the class axis last)", dims.join(", "), dims.join(", "))
                };
                return Err(Error::file(
                    Role::Model,
                    &model.path,
                    format!(
                        "output has shape {osz:?} for input {:?}; cross-entropy with labels of shape {ysz:?} from {} needs {want}",
                        xb.size(),
                        data.path.display()
                    ),
                ));
            }
            let classes = osz[osz.len() - 1];
            let max = data.y.max().int64_value(&[]);
            if max >= classes {
                return Err(Error::file(
                    Role::Data,
                    &data.path,
                    format!(
                        "label {max} is out of range for a model with {classes} outputs (labels must be 0..{}, or {IGNORE_INDEX} to leave a target out)",
                        classes - 1
                    ),
                ));
            }
            Ok(classes)
        }
        LossKind::Mse => {
            let per_out: i64 = osz.iter().skip(1).product();
            let per_y: i64 = ysz.iter().skip(1).product();
            if osz.is_empty() || osz[0] != b || per_out != per_y {
                return Err(Error::file(
                    Role::Model,
                    &model.path,
                    format!(
                        "output has shape {osz:?} for {b} samples but the targets of {} have shape {ysz:?} \
                         ({per_y} values per sample)",
                        data.path.display()
                    ),
                ));
            }
            Ok(per_out)
        }
    }
}
