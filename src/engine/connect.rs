//! Training a curve between two models (Garipov et al., 2018): θ_A and θ_B fixed, the bend θ_bend
//! (every parameter) trained from the midpoint. For each minibatch of an epoch's seeded shuffle a
//! t ~ U(0, 1) is drawn, the model set to θ(t) (space::curve), the minibatch's mean loss
//! differentiated with respect to the model's parameters with BatchNorm in training mode, and the
//! gradient passed to θ_bend by the chain rule (times w_bend(t)); SGD with momentum and weight
//! decay, as torch.optim.SGD computes it, on θ_bend, at the learning rate of
//! space::curve::learning_rate. The model's own state is put back afterwards, bit for bit.
//!
//! Randomness: epoch e seeds libtorch's CPU generator with `seed · 2²⁰ + e`, then draws the
//! shuffle (`randperm(N)`, int64) and the t of each minibatch (`rand([batches])`, float64), so
//! that `torch.manual_seed(seed * 2**20 + e); torch.randperm(N); torch.rand(batches, dtype=torch.float64)`
//! gives the same numbers in PyTorch. With `--augment`, each minibatch then draws, in this order,
//! its flips (`rand([B]) < 0.5`) and its crop offsets (`randint(0, 9, [B, 2])`, (dy, dx) per
//! sample), each only when asked for (inputs::data::Dataset::inputs_augmented applies them).

use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::engine::evaluate::{batch_loss, Evaluator};
use crate::error::{Error, Result, Role};
use crate::inputs::checkpoint::State;
use crate::inputs::data::{Dataset, IGNORE_INDEX};
use crate::inputs::model::Model;
use crate::options::LossKind;
use crate::space::curve::{learning_rate, Augment};
use crate::store::connect::{self, TrainProgress};
use crate::store::record::{CurveTraining, Identity};

/// One epoch's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch {
    /// The mean of the minibatch losses.
    pub loss: f64,
    /// The t drawn for each minibatch.
    pub t: Vec<f64>,
    pub lr: f64,
    pub seconds: f64,
}

/// The curve being trained on a model: the fixed ends' and the bend's parameter values (in the
/// order of `model.params`), and SGD's momentum buffers.
pub struct Trainer<'a> {
    model: &'a Model,
    data: &'a Dataset,
    loss: LossKind,
    outputs_per_sample: i64,
    input_kind: Kind,
    a: Vec<Tensor>,
    b: Vec<Tensor>,
    pub bend: Vec<Tensor>,
    /// None before the first step (torch.optim.SGD starts its buffer at the first gradient).
    pub momentum: Option<Vec<Tensor>>,
    options: CurveTraining,
    /// The floating-point buffers of the bend's state: the midpoint of the ends' (by name).
    buffers: Vec<(String, Tensor)>,
    /// The model's parameters and buffers (BatchNorm statistics move in training mode) when
    /// training started, put back by `finish`.
    original: Vec<Tensor>,
}

/// What a caller is told while the curve trains.
pub trait TrainObserver {
    /// Epoch `e` (0-based) of `epochs` starts, with `batches` minibatches.
    fn epoch(&mut self, e: usize, epochs: usize, batches: usize);
    /// A minibatch is done: the mean of the epoch's minibatch losses so far.
    fn batch(&mut self, running: f64);
    /// Epoch `e` is done (and saved).
    fn epoch_done(&mut self, e: usize, epochs: usize, epoch: &Epoch);
}

/// An observer that says nothing.
pub struct Quiet;

impl TrainObserver for Quiet {
    fn epoch(&mut self, _: usize, _: usize, _: usize) {}
    fn batch(&mut self, _: f64) {}
    fn epoch_done(&mut self, _: usize, _: usize, _: &Epoch) {}
}

/// The seed of epoch `e` (module docs).
pub fn epoch_seed(seed: u64, e: usize) -> i64 {
    (seed.wrapping_mul(1 << 20).wrapping_add(e as u64) & (i64::MAX as u64)) as i64
}

/// Minibatches per epoch of `n` samples.
pub fn batches(n: usize, batch_size: usize) -> usize {
    n.div_ceil(batch_size.max(1))
}

impl<'a> Trainer<'a> {
    /// A curve from `a` to `b` (checkpoint states of `model`) with its bend at their midpoint.
    pub fn new(
        model: &'a Model,
        data: &'a Dataset,
        ev: &Evaluator,
        a_state: &State,
        b_state: &State,
        options: CurveTraining,
    ) -> Result<Trainer<'a>> {
        let n = model.params.len();
        let dev = model.device;
        let on = |t: &Tensor| t.to_device(dev).to_kind(Kind::Float);
        let a: Vec<Tensor> = a_state.tensors[..n].iter().map(on).collect();
        let b: Vec<Tensor> = b_state.tensors[..n].iter().map(on).collect();
        let bend = a.iter().zip(&b).map(|(x, y)| x.lerp(y, 0.5)).collect();
        let names = model.state().into_iter().map(|(k, _)| k);
        let buffers = names
            .zip(a_state.tensors.iter().zip(&b_state.tensors))
            .skip(n)
            .map(|(k, (x, y))| (k, x.lerp(y, 0.5)))
            .collect();
        let original = everything(model).iter().map(|p| p.detach().copy()).collect();
        if data.n == 0 {
            return Err(Error::file(Role::Data, &data.path, "holds no samples to train on"));
        }
        Ok(Trainer {
            model,
            data,
            loss: ev.loss,
            outputs_per_sample: ev.outputs_per_sample,
            input_kind: ev.input_kind,
            a,
            b,
            bend,
            momentum: None,
            options,
            buffers,
            original,
        })
    }

    /// Continue from a saved bend and momentum (in the order of `model.params`).
    pub fn resume(&mut self, bend: Vec<Tensor>, momentum: Option<Vec<Tensor>>) {
        let dev = self.model.device;
        self.bend = bend.iter().map(|t| t.to_device(dev).to_kind(Kind::Float)).collect();
        self.momentum = momentum.map(|m| m.iter().map(|t| t.to_device(dev).to_kind(Kind::Float)).collect());
    }

    /// θ(t) into the model's parameters.
    fn place(&self, t: f64) {
        let _g = tch::no_grad_guard();
        let [wa, wm, wb] = self.options.curve.weights(t);
        for (((_, p), a), (m, b)) in self.model.params.iter().zip(&self.a).zip(self.bend.iter().zip(&self.b)) {
            p.shallow_clone().copy_(&(a * wa + m * wm + b * wb));
        }
    }

    /// The mean loss of the samples `idx` at the model as it stands, with BatchNorm in training
    /// mode, and its gradient with respect to every parameter.
    fn gradient(&self, idx: &Tensor) -> Result<(f64, Vec<Tensor>)> {
        let x = self.inputs(idx)?;
        let y = self.data.targets_at(idx);
        let count = match self.loss {
            LossKind::Ce => y.ne(IGNORE_INDEX).sum(Kind::Int64).int64_value(&[]) as f64,
            LossKind::Mse => (idx.size()[0] * self.outputs_per_sample) as f64,
        };
        let params: Vec<Tensor> = self.model.params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let training = self.model.batchnorm_training()?;
        let result = tch::with_grad(|| -> Result<(f64, Vec<Tensor>)> {
            let out = self.model.forward(&x)?.to_kind(Kind::Float);
            let l = batch_loss(self.loss, &out, &y, Kind::Float) / count.max(1.0);
            if !l.requires_grad() {
                return Err(Error::file(
                    Role::Model,
                    &self.model.path,
                    "its loss does not depend differentiably on the parameters (no autograd graph through its forward)",
                ));
            }
            let grads =
                Tensor::f_run_backward(&[&l], &params, false, false).map_err(|e| self.model.forward_error(&e))?;
            Ok((l.double_value(&[]), grads))
        })?;
        training.end()?;
        Ok(result)
    }

    /// The minibatch `idx`, augmented as asked with draws from the epoch's generator (module docs).
    fn inputs(&self, idx: &Tensor) -> Result<Tensor> {
        let aug = self.options.augment;
        if !aug.any() {
            return Ok(self.data.inputs_at(idx, self.input_kind));
        }
        let b = idx.size()[0];
        let dev = self.model.device;
        let flips = aug.flip.then(|| Tensor::rand([b], (Kind::Float, Device::Cpu)).lt(0.5).to_device(dev));
        let offsets: Option<Vec<i64>> = match aug.crop {
            true => {
                let side = 2 * Augment::PAD + 1;
                let draws = Tensor::randint(side, [b, 2], (Kind::Int64, Device::Cpu)).flatten(0, -1);
                Some(Vec::<i64>::try_from(&draws).map_err(|e| Error::other(format!("crop draws: {e}")))?)
            }
            false => None,
        };
        let pairs: Option<Vec<(i64, i64)>> = offsets.map(|o| o.chunks(2).map(|p| (p[0], p[1])).collect());
        Ok(self.data.inputs_augmented(
            idx,
            self.input_kind,
            flips.as_ref(),
            pairs.as_deref().map(|p| (p, Augment::PAD)),
        ))
    }

    /// Train epoch `e` (0-based); the minibatch losses' mean, the t draws, the learning rate.
    pub fn epoch(&mut self, e: usize, observer: &mut dyn TrainObserver) -> Result<Epoch> {
        let start = Instant::now();
        let o = self.options;
        let n = self.data.n;
        tch::manual_seed(epoch_seed(o.seed, e));
        let order = Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu));
        let nb = batches(n, o.batch_size);
        let draws = Tensor::rand([nb as i64], (Kind::Double, Device::Cpu));
        let t: Vec<f64> = Vec::<f64>::try_from(&draws).map_err(|e| Error::other(format!("t draws: {e}")))?;
        let order = order.to_device(self.model.device);
        let lr = learning_rate(o.lr, e, o.epochs);
        observer.epoch(e, o.epochs, nb);
        let mut total = 0.0;
        for (j, &tj) in t.iter().enumerate() {
            let len = o.batch_size.min(n - j * o.batch_size);
            let idx = order.narrow(0, (j * o.batch_size) as i64, len as i64);
            self.place(tj);
            let (loss, grads) = self.gradient(&idx)?;
            if !loss.is_finite() {
                return Err(Error::file(
                    Role::Model,
                    &self.model.path,
                    format!("the curve's training loss became {loss} at epoch {}, minibatch {} (t = {tj:.4}): lower the learning rate", e + 1, j + 1),
                ));
            }
            total += loss;
            self.step(&grads, self.options.curve.weights(tj)[1], lr);
            observer.batch(total / (j + 1) as f64);
        }
        Ok(Epoch { loss: total / nb as f64, t, lr, seconds: start.elapsed().as_secs_f64() })
    }

    /// One SGD step on the bend with the parameters' gradient `grads` at θ(t), whose share in the
    /// bend is `w` (torch.optim.SGD: d = g + wd·bend; buf = d, then momentum·buf + d; bend −= lr·buf).
    fn step(&mut self, grads: &[Tensor], w: f64, lr: f64) {
        let _g = tch::no_grad_guard();
        let o = self.options;
        let d: Vec<Tensor> = grads
            .iter()
            .zip(&self.bend)
            .map(|(g, m)| {
                let g = g.to_kind(Kind::Float) * w;
                if o.weight_decay != 0.0 {
                    g + m * o.weight_decay
                } else {
                    g
                }
            })
            .collect();
        let buf: Vec<Tensor> = match self.momentum.take() {
            Some(prev) if o.momentum != 0.0 => prev.iter().zip(&d).map(|(b, d)| b * o.momentum + d).collect(),
            _ => d,
        };
        for (m, b) in self.bend.iter_mut().zip(&buf) {
            *m = &*m - b * lr;
        }
        if o.momentum != 0.0 {
            self.momentum = Some(buf);
        }
    }

    /// The model's parameters and buffers back as they were when training started, bit for bit.
    pub fn finish(self) {
        let _g = tch::no_grad_guard();
        for (p, v) in everything(self.model).iter().zip(&self.original) {
            p.shallow_clone().copy_(v);
        }
    }
}

/// Every parameter and buffer of the model (integer ones too).
fn everything(model: &Model) -> Vec<Tensor> {
    model.params.iter().chain(&model.buffers).map(|(_, t)| t.shallow_clone()).collect()
}

/// A finished training: the bend as a state of the model (parameters trained, floating-point
/// buffers at the ends' midpoint), and the progress record.
pub struct Trained {
    pub bend: Vec<(String, Tensor)>,
    pub progress: TrainProgress,
}

/// Write named tensors to `path` atomically (a temporary file renamed over it).
pub fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let cpu: Vec<(String, Tensor)> =
        named.iter().map(|(n, t)| (n.clone(), t.to_device(Device::Cpu).contiguous())).collect();
    Tensor::write_safetensors(&cpu, &tmp)
        .map_err(|e| Error::file(Role::RunFile, path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "cannot write", e))?;
    if let Some(d) = path.parent() {
        crate::store::atomic::sync_dir(d)?;
    }
    Ok(())
}

/// Train the curve of `options` between `a` and `b` in the run directory `dir`, resuming from
/// its saved progress: after each epoch the bend and momentum go to `train/epoch-<e>.safetensors`,
/// then `train/progress.json` names it (the previous file is removed after). A directory holding
/// the training of another run (`identity`) is refused. The model is put back as it was.
pub fn train(
    dir: &Path,
    mut trainer: Trainer,
    identity: &Identity,
    observer: &mut dyn TrainObserver,
) -> Result<Trained> {
    let (model, options) = (trainer.model, trainer.options);
    let tdir = connect::train_dir(dir);
    std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, "cannot create", e))?;
    let names: Vec<String> = model.params.iter().map(|(n, _)| n.clone()).collect();
    let mut progress = match connect::read_progress(dir)? {
        Some(p) => {
            if let Some((field, there, here)) = p.identity.first_difference(identity) {
                return Err(Error::OtherRun { dir: dir.to_path_buf(), field, there, here });
            }
            if let Some(file) = &p.state {
                let (bend, momentum) = read_state(&tdir.join(file), &names)?;
                trainer.resume(bend, momentum);
            }
            p
        }
        None => TrainProgress {
            identity: identity.clone(),
            epochs_done: 0,
            epoch_loss: vec![],
            lr: vec![],
            t: vec![],
            seconds: vec![],
            state: None,
        },
    };
    if progress.epochs_done > 0 {
        log::info!("curve training: {} of {} epochs already done", progress.epochs_done, options.epochs);
    }
    let result = (|| -> Result<()> {
        for e in progress.epochs_done..options.epochs {
            let ep = trainer.epoch(e, observer)?;
            let file = format!("epoch-{:04}.safetensors", e + 1);
            let mut named: Vec<(String, Tensor)> =
                names.iter().zip(&trainer.bend).map(|(n, t)| (format!("bend.{n}"), t.shallow_clone())).collect();
            if let Some(m) = &trainer.momentum {
                named.extend(names.iter().zip(m).map(|(n, t)| (format!("momentum.{n}"), t.shallow_clone())));
            }
            write_tensors(&tdir.join(&file), &named)?;
            let old = progress.state.replace(file);
            progress.epochs_done = e + 1;
            progress.epoch_loss.push(ep.loss);
            progress.lr.push(ep.lr);
            progress.t.push(ep.t.clone());
            progress.seconds.push(ep.seconds);
            connect::write_progress(dir, &progress)?;
            if let Some(old) = old {
                let _ = std::fs::remove_file(tdir.join(old));
            }
            observer.epoch_done(e, options.epochs, &ep);
        }
        Ok(())
    })();
    let bend = result.map(|()| {
        // The bend as a state: trained parameters, then the buffers at the midpoint of the ends'.
        let mut named: Vec<(String, Tensor)> =
            names.iter().zip(&trainer.bend).map(|(k, t)| (k.clone(), t.to_device(Device::Cpu))).collect();
        named.extend(trainer.buffers.iter().map(|(k, t)| (k.clone(), t.shallow_clone())));
        named
    });
    trainer.finish();
    Ok(Trained { bend: bend?, progress })
}

/// The bend and momentum saved in `path`, in the order of `names`.
fn read_state(path: &Path, names: &[String]) -> Result<(Vec<Tensor>, Option<Vec<Tensor>>)> {
    let bad = |what: String| Error::file(Role::RunFile, path, what);
    let all: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(|e| bad(format!("not readable: {e}")))?.into_iter().collect();
    let get = |prefix: &str| -> Option<Vec<Tensor>> {
        names.iter().map(|n| all.get(&format!("{prefix}.{n}")).map(|t| t.shallow_clone())).collect()
    };
    let bend = get("bend").ok_or_else(|| bad("lacks some bend.<parameter> tensor".into()))?;
    Ok((bend, get("momentum")))
}
