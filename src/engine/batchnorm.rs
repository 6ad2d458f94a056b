//! BatchNorm statistics re-estimated at a point, as `torch.optim.swa_utils.update_bn` does
//! (Garipov et al. 2018): the BatchNorm layers alone in training mode, the first training samples
//! forwarded in the run's batches, each running statistic ending as the plain average over
//! batches of the per-batch statistics (unbiased variance, as BatchNorm stores it), then eval mode.
//!
//! TorchScript bakes a BatchNorm's `momentum` into its graph, so it cannot be set to None (the
//! cumulative average) as `update_bn` does. Instead each batch starts from zeroed statistics,
//! after which a layer holds momentum × its batch's statistic; that is divided by the momentum
//! and averaged over the batches in float64 on the device, then written back.

use tch::{Kind, Tensor};

use crate::engine::evaluate::Evaluator;
use crate::error::{Error, Result, Setting};
use crate::ffi::BatchNormLayer;
use crate::inputs::data::Dataset;
use crate::inputs::model::Model;

/// The model's BatchNorm layers, ready to have their statistics re-estimated.
pub struct Recompute {
    layers: Vec<BatchNormLayer>,
    /// `num_batches_tracked` of each layer as loaded (restored by `restore`).
    tracked: Vec<Option<Tensor>>,
}

impl Recompute {
    /// Find the BatchNorm layers, and check on one batch of `data` that training mode updates
    /// their statistics (a traced model has eval mode baked into its graph).
    pub fn new(model: &Model, ev: &Evaluator, data: &Dataset) -> Result<Recompute> {
        let layers = model.batchnorm_layers()?;
        if layers.is_empty() {
            return Err(Error::setting(
                Setting::BatchNorm,
                "recompute",
                format!(
                    "model {} has no BatchNorm layer with running statistics: nothing to re-estimate",
                    model.path.display()
                ),
            ));
        }
        let tracked = layers.iter().map(|l| l.num_batches_tracked.as_ref().map(Tensor::copy)).collect();
        let r = Recompute { layers, tracked };
        let _g = tch::no_grad_guard();
        let saved: Vec<(Tensor, Tensor)> =
            r.layers.iter().map(|l| (l.running_mean.copy(), l.running_var.copy())).collect();
        let len = ev.batch_size.min(data.n);
        r.batch(model, &data.inputs_as(0, len, ev.input_kind))?;
        let frozen = r.layers.iter().find(|l| l.running_var.abs().max().double_value(&[]) == 0.0);
        for (l, (m, v)) in r.layers.iter().zip(&saved) {
            l.running_mean.shallow_clone().copy_(m);
            l.running_var.shallow_clone().copy_(v);
        }
        r.restore();
        if let Some(l) = frozen {
            return Err(Error::setting(
                Setting::BatchNorm,
                "recompute",
                format!(
                    "BatchNorm layer {} of model {} does not update its statistics in training mode (a traced \
                     model has eval mode baked in): re-estimating statistics needs a scripted model (torch.jit.script)",
                    l.name,
                    model.path.display()
                ),
            ));
        }
        Ok(r)
    }

    /// Number of BatchNorm layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// One batch in training mode from zeroed statistics: afterwards each layer holds
    /// momentum × the batch's mean and (unbiased) variance.
    fn batch(&self, model: &Model, x: &Tensor) -> Result<()> {
        for l in &self.layers {
            let _ = l.running_mean.shallow_clone().zero_();
            let _ = l.running_var.shallow_clone().zero_();
            if let Some(t) = &l.num_batches_tracked {
                let _ = t.shallow_clone().zero_();
            }
        }
        let training = model.batchnorm_training()?;
        let _ = model.forward(x)?;
        training.end()
    }

    /// Re-estimate every layer's statistics on `data` in batches of the evaluator's size, the
    /// model's weights as they stand; the model ends in eval mode.
    pub fn run(&self, model: &Model, ev: &Evaluator, data: &Dataset) -> Result<()> {
        let _g = tch::no_grad_guard();
        let mut sums: Vec<(Tensor, Tensor)> = self
            .layers
            .iter()
            .map(|l| {
                (
                    Tensor::zeros_like(&l.running_mean).to_kind(Kind::Double),
                    Tensor::zeros_like(&l.running_var).to_kind(Kind::Double),
                )
            })
            .collect();
        let (mut start, mut batches) = (0, 0i64);
        while start < data.n {
            let len = ev.batch_size.min(data.n - start);
            self.batch(model, &data.inputs_as(start, len, ev.input_kind))?;
            batches += 1;
            for (l, (m, v)) in self.layers.iter().zip(sums.iter_mut()) {
                // momentum None: the first batch's factor 1/1 sets the statistic itself.
                let k = l.momentum.unwrap_or(1.0);
                *m += l.running_mean.to_kind(Kind::Double) / k;
                *v += l.running_var.to_kind(Kind::Double) / k;
            }
            start += len;
        }
        for (l, (m, v)) in self.layers.iter().zip(&sums) {
            l.running_mean.shallow_clone().copy_(&(m / batches as f64));
            l.running_var.shallow_clone().copy_(&(v / batches as f64));
            if let Some(t) = &l.num_batches_tracked {
                let _ = t.shallow_clone().fill_(batches);
            }
        }
        Ok(())
    }

    /// `num_batches_tracked` back to its values as loaded (the floating-point statistics are
    /// restored with the rest of the model's state by the mover).
    pub fn restore(&self) {
        let _g = tch::no_grad_guard();
        for (l, t) in self.layers.iter().zip(&self.tracked) {
            if let (Some(now), Some(was)) = (&l.num_batches_tracked, t) {
                now.shallow_clone().copy_(was);
            }
        }
    }
}

/// Whether a BatchNorm running variance of the model, as it stands, has a negative entry (an
/// interpolated or extrapolated statistic; eval mode then takes the square root of it: NaN).
pub fn negative_variance(model: &Model) -> bool {
    let Ok(layers) = model.batchnorm_layers() else { return false };
    layers.iter().any(|l| l.running_var.lt(0.0).any().int64_value(&[]) != 0)
}
