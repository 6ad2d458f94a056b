//! Evaluation: the exact dataset-mean loss (and top-1 accuracy) of the model as its parameters
//! stand, and the in-place perturbation θ = θ* + αδ + βη that moves it to a grid point.
//!
//! Hot loop rules: sums are accumulated on the device (float64), one host sync per point; each
//! point is formed from the pristine θ* (never by accumulating steps); the data never moves.

use anyhow::{bail, Result};
use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::data::{Dataset, Targets};
use crate::directions::Direction;
use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Cross-entropy over class logits [N, C], with integer labels; top-1 accuracy beside it.
    Ce,
    /// Mean squared error over all output entries (torch.nn.MSELoss), with float targets.
    Mse,
}

/// Loss and accuracy of one full pass. `acc` is NaN for MSE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointValue {
    pub loss: f64,
    pub acc: f64,
}

pub struct Evaluator<'a> {
    model: &'a Model,
    data: &'a Dataset,
    pub loss: LossKind,
    pub batch_size: usize,
    /// Output entries per sample (classes for CE).
    pub outputs_per_sample: i64,
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
                    bail!("--loss ce needs integer class labels, but {} holds float targets (use --loss mse)", data.path.display());
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
        Ok(Evaluator { model, data, loss, batch_size, outputs_per_sample })
    }

    /// Run the batch shapes of a pass (full and ragged tail) a few times, so that TorchScript's
    /// profiling executor and cuDNN's algorithm search are done before anything is timed.
    pub fn warm_up(&self, passes: usize) -> Result<()> {
        let _g = tch::no_grad_guard();
        let n = self.data.n;
        let full = self.batch_size.min(n);
        let mut shapes = vec![full];
        if n > full && n % full != 0 {
            shapes.push(n % full);
        }
        for _ in 0..passes {
            for &len in &shapes {
                let _ = self.model.forward(&self.data.inputs(0, len))?;
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
        let mut loss_sum = Tensor::zeros([], (Kind::Double, dev));
        let mut correct = Tensor::zeros([], (Kind::Int64, dev));
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            let out = self.model.forward(&self.data.inputs(start, len))?.to_kind(Kind::Float);
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
        }
        // The one host sync of the point.
        let both = Tensor::stack(&[loss_sum, correct.to_kind(Kind::Double)], 0);
        let v = Vec::<f64>::try_from(&both)?;
        Ok(match self.loss {
            LossKind::Ce => PointValue { loss: v[0] / n as f64, acc: v[1] / n as f64 },
            LossKind::Mse => {
                PointValue { loss: v[0] / (n as f64 * self.outputs_per_sample as f64), acc: f64::NAN }
            }
        })
    }
}

/// Moves the model's parameters to θ* + αδ + βη and back. θ* is copied once at creation; the
/// model's parameters equal θ* bit for bit again after `restore` (also done on drop).
pub struct Perturber<'a> {
    model: &'a Model,
    theta0: Vec<Tensor>,
    /// Per parameter: its (δ, η) on the device in the parameter's dtype, None where zero.
    dirs: Vec<(Option<Tensor>, Option<Tensor>)>,
}

impl<'a> Perturber<'a> {
    pub fn new(model: &'a Model, x: &Direction, y: Option<&Direction>) -> Perturber<'a> {
        let theta0 = model.snapshot();
        let on_device = |d: &Direction, i: usize| -> Option<Tensor> {
            if d.is_zero(i) {
                None
            } else {
                // Same dtype and memory format as the parameter it moves.
                let mut t = model.params[i].1.empty_like();
                t.copy_(&d.tensors[i].1);
                Some(t)
            }
        };
        let dirs = (0..model.params.len()).map(|i| (on_device(x, i), y.and_then(|y| on_device(y, i)))).collect();
        Perturber { model, theta0, dirs }
    }

    /// Number of parameter tensors that move (the rest have zero directions).
    pub fn moving(&self) -> usize {
        self.dirs.iter().filter(|(a, b)| a.is_some() || b.is_some()).count()
    }

    /// Set the parameters to θ* + αδ + βη, each formed afresh from θ*.
    pub fn set(&self, alpha: f64, beta: f64) {
        let _g = tch::no_grad_guard();
        for (((_, p), t0), (dx, dy)) in self.model.params.iter().zip(&self.theta0).zip(&self.dirs) {
            let v = match (dx, dy) {
                (None, None) => continue,
                (Some(dx), None) => t0 + dx * alpha,
                (None, Some(dy)) => t0 + dy * beta,
                (Some(dx), Some(dy)) => t0 + dx * alpha + dy * beta,
            };
            p.shallow_clone().copy_(&v);
        }
    }

    pub fn restore(&self) {
        self.model.load_values(&self.theta0);
    }
}

impl Drop for Perturber<'_> {
    fn drop(&mut self) {
        self.restore();
    }
}
