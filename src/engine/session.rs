//! A model and its data loaded on one device, with the task's evaluation options checked.

use std::path::Path;
use std::time::Instant;

use tch::Device;

use crate::engine::evaluate::Evaluator;
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::data::{DataSpec, Dataset};
use crate::inputs::model::Model;
use crate::options::{BatchNormMode, LossKind, Precision, Sampling, Split};

/// How a task evaluates: the options of its command line that are not part of the run's
/// identity check (that is done against config.json) but shape the work.
#[derive(Debug, Clone)]
pub struct Setup {
    pub data: DataSpec,
    /// None: cross-entropy for integer labels, MSE for float targets.
    pub loss: Option<LossKind>,
    /// None: 4096 on CUDA, 64 on CPU; halved on out-of-memory.
    pub batch_size: Option<usize>,
    /// None: tf32 on CUDA, fp32 on CPU.
    pub precision: Option<Precision>,
    /// Stop a point's pass once its partial mean proves the loss exceeds this.
    pub loss_cap: Option<f64>,
    /// channels_last weights and resident images.
    pub channels_last: bool,
    /// The run takes gradients or curvature products on the CPU: channels_last only for a model
    /// none of whose convolutions oneDNN's channels_last weight gradient gets wrong (see
    /// [`Model::pointwise_conv_with_few_inputs`]); such a model stays NCHW.
    pub gradients_on_cpu: bool,
    /// Evaluate a frozen, BatchNorm-folded copy where that is exact (see `fold`).
    pub fold_batchnorm: bool,
    /// Let cuDNN time its convolution algorithms and keep the fastest (per process).
    pub cudnn_benchmark: bool,
    /// CPU: the folded copy's convolutions on oneDNN tensors.
    pub onednn: bool,
    pub batchnorm: BatchNormMode,
    /// recompute: the first this many training samples.
    pub bn_samples: usize,
    /// The dict entry of the model's output the loss is taken on (None: `logits`).
    pub output: Option<String>,
    /// Splits evaluated after `data`'s at every point, from the same perturbation.
    pub more_splits: Vec<Split>,
    /// `--rel-error`: stop each pass once the loss is known to E (None: the exact pass).
    pub sampling: Option<Sampling>,
}

impl Setup {
    /// Defaults for everything but the data.
    pub fn new(data: DataSpec) -> Setup {
        Setup {
            data,
            loss: None,
            batch_size: None,
            precision: None,
            loss_cap: None,
            channels_last: true,
            gradients_on_cpu: false,
            fold_batchnorm: true,
            cudnn_benchmark: true,
            onednn: true,
            batchnorm: BatchNormMode::Eval,
            bn_samples: 10_000,
            output: None,
            more_splits: Vec::new(),
            sampling: None,
        }
    }

    /// Every split the run evaluates, the first being `data`'s.
    pub fn splits(&self) -> Vec<Split> {
        std::iter::once(self.data.split).chain(self.more_splits.iter().copied()).collect()
    }

    /// The precision on `dev`: the one asked for, checked, or the device's default.
    pub fn precision_on(&self, dev: Device) -> Result<Precision> {
        let p = self.precision.unwrap_or(Precision::default_for(dev.is_cuda()));
        if p == Precision::Tf32 && !dev.is_cuda() {
            return Err(Error::setting(
                Setting::Precision,
                "tf32",
                "TF32 is a mode of NVIDIA tensor cores and the run is on the CPU: use fp32 (the CPU default) or bf16",
            ));
        }
        Ok(p)
    }

    /// Check the options that do not need the model or the data.
    pub fn check(&self) -> Result<()> {
        if let Some(c) = self.loss_cap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::setting(Setting::LossCap, c, "must be a positive number"));
            }
        }
        if self.batch_size == Some(0) {
            return Err(Error::setting(Setting::BatchSize, 0, "must be at least 1"));
        }
        if self.batchnorm == BatchNormMode::Recompute && self.bn_samples == 0 {
            return Err(Error::setting(Setting::BnSamples, 0, "must be at least 1"));
        }
        let splits = self.splits();
        if let Some(i) = (1..splits.len()).find(|&i| splits[..i].contains(&splits[i])) {
            let list: Vec<String> = splits.iter().map(|s| s.to_string()).collect();
            return Err(Error::setting(Setting::Split, list.join(","), format!("names {} twice", splits[i])));
        }
        if let Some(s) = self.sampling {
            if !(s.rel_error.is_finite() && s.rel_error > 0.0 && s.rel_error < 1.0) {
                return Err(Error::setting(Setting::RelError, s.rel_error, "must be a number in (0, 1)"));
            }
            if s.min_samples == 0 {
                return Err(Error::setting(Setting::MinSamples, 0, "must be at least 1"));
            }
        }
        if self.output.as_deref() == Some("") {
            return Err(Error::setting(Setting::Output, "", "needs a key of the model's output dict"));
        }
        Ok(())
    }
}

/// Measured: 4096 is within 2% of the best on an H100 for ResNet-56 and VGG-9; on a 2-core CPU,
/// batches of 32..64 run ~2x faster than 512 (cache-sized activations). See BENCHMARKS.md.
pub fn default_batch_size(dev: Device) -> usize {
    if dev.is_cuda() {
        4096
    } else {
        64
    }
}

/// A model and its dataset loaded on one device.
pub struct Session {
    pub dev: Device,
    pub model: Model,
    pub data: Dataset,
    /// The splits after the first (`Setup::more_splits`), in order.
    pub more: Vec<Dataset>,
    /// recompute: the training samples BatchNorm statistics are estimated on.
    pub bn_data: Option<Dataset>,
    pub precision: Precision,
    pub setup: Setup,
    /// When loading began (set-up time is measured from here).
    pub started: Instant,
}

impl Session {
    /// Load the TorchScript model at `model` and the data on `dev`, checking the options.
    pub fn open(model: &Path, setup: &Setup, dev: Device) -> Result<Session> {
        let started = Instant::now();
        setup.check()?;
        let precision = setup.precision_on(dev)?;
        let mut model = Model::load(model, dev)?;
        model.output = setup.output.clone();
        let mut data = Dataset::load(&setup.data, dev)?;
        let mut more = setup
            .more_splits
            .iter()
            .map(|&split| Dataset::load(&DataSpec { split, ..setup.data.clone() }, dev))
            .collect::<Result<Vec<_>>>()?;
        let mut bn_data = match setup.batchnorm {
            BatchNormMode::Eval => None,
            BatchNormMode::Recompute => {
                let mut spec = setup.data.clone();
                spec.split = Split::Train;
                spec.limit = Some(setup.bn_samples);
                Some(Dataset::load(&spec, dev)?)
            }
        };
        if let Some(s) = setup.sampling {
            // Each split in its own seeded order (the same at every point).
            data.set_order(&crate::space::sample::permutation(data.n, s.seed));
            for d in more.iter_mut() {
                d.set_order(&crate::space::sample::permutation(d.n, s.seed));
            }
        }
        let mut setup = setup.clone();
        if setup.channels_last && setup.gradients_on_cpu {
            if let Some(name) = model.pointwise_conv_with_few_inputs() {
                log::debug!(
                    "{name} is a 1x1 convolution with fewer than {} input channels: gradients run in the NCHW layout \
                     (oneDNN's channels_last weight gradient of such a convolution can be wrong)",
                    crate::inputs::model::POINTWISE_MIN_INPUTS
                );
                setup.channels_last = false;
            }
        }
        if setup.channels_last {
            model.to_channels_last()?;
            data.to_channels_last();
            more.iter_mut().for_each(Dataset::to_channels_last);
            if let Some(b) = bn_data.as_mut() {
                b.to_channels_last();
            }
        }
        Ok(Session { dev, model, data, more, bn_data, precision, setup, started })
    }

    /// An evaluator of this model on this data (checks the model's output against the targets of
    /// every split).
    pub fn evaluator(&self) -> Result<Evaluator> {
        let bs = self.setup.batch_size.unwrap_or_else(|| default_batch_size(self.dev));
        let mut ev = Evaluator::new(&self.model, &self.data, self.setup.loss, bs)?;
        if let Some(s) = self.setup.sampling {
            (ev.rel_error, ev.min_samples, ev.sample_seed) = (s.rel_error, s.min_samples, s.seed);
        }
        for d in &self.more {
            let other = Evaluator::new(&self.model, d, Some(ev.loss), bs)?;
            if other.outputs_per_sample != ev.outputs_per_sample {
                return Err(Error::file(
                    Role::Data,
                    &d.path,
                    format!(
                        "the {} split gives {} outputs per sample, the {} split {}: the splits must have the same kind of targets",
                        d.split.unwrap_or_default(),
                        other.outputs_per_sample,
                        self.data.split.unwrap_or_default(),
                        ev.outputs_per_sample
                    ),
                ));
            }
        }
        if let Some(d) = self.datasets().find(|d| d.unnormalized) {
            crate::inputs::data::warn_unnormalized(&d.path);
        }
        Ok(ev)
    }

    /// Every dataset of the run, the first split first.
    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        std::iter::once(&self.data).chain(&self.more)
    }
}

/// Peak resident memory of this process (VmHWM), in MiB; None where /proc is not there.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_anything_is_loaded() {
        let mut s = Setup::new(DataSpec::new("/nonexistent", Split::Train));
        assert!(s.check().is_ok());
        s.loss_cap = Some(-1.0);
        assert!(s.check().unwrap_err().to_string().contains("loss_cap -1"));
        s.loss_cap = Some(f64::NAN);
        assert!(s.check().is_err());
        s.loss_cap = None;
        s.batch_size = Some(0);
        assert!(s.check().unwrap_err().to_string().contains("batch_size"));
        s.batch_size = None;
        s.precision = Some(Precision::Tf32);
        let e = s.precision_on(Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("tf32") && e.contains("CPU"), "{e}");
        s.precision = None;
        assert_eq!(s.precision_on(Device::Cpu).unwrap(), Precision::Fp32);
        assert_eq!(s.precision_on(Device::Cuda(0)).unwrap(), Precision::Tf32);
        assert_eq!((default_batch_size(Device::Cpu), default_batch_size(Device::Cuda(0))), (64, 4096));
    }
}
