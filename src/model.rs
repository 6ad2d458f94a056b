//! The model: a TorchScript module on the run's device, in eval mode, and its named parameters,
//! which share storage with the module (writing into them in place perturbs the model).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tch::{CModule, Device, Kind, Tensor};

use crate::ffi::Freeze;
use crate::torch_msg;

pub struct Model {
    /// In a RefCell so that `cast` can change the module's dtype while evaluators hold `&Model`.
    module: RefCell<CModule>,
    /// A frozen copy (BatchNorm folded) that `forward` runs instead, while one is installed.
    frozen: RefCell<Option<CModule>>,
    /// `named_parameters()` in the module's order; these tensors alias the module's weights.
    pub params: Vec<(String, Tensor)>,
    /// `named_buffers()` (BatchNorm running statistics, ...), aliasing the module's buffers.
    pub buffers: Vec<(String, Tensor)>,
    pub device: Device,
    /// dtype of the parameters as loaded (float32 normally); `cast` may change the current one.
    pub native_kind: Kind,
    pub path: PathBuf,
    pub sha256: String,
}

impl Model {
    /// Load a TorchScript file (scripted or traced) onto `device` and put it in eval mode.
    pub fn load(path: &Path, device: Device) -> Result<Model> {
        let bytes = std::fs::read(path).with_context(|| format!("model {}: cannot read", path.display()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            let msg = torch_msg(&e);
            let hint = if msg.contains("constants.pkl") {
                "looks like a torch.save checkpoint (e.g. a state_dict), not TorchScript: export it with \
                 models/export.py --arch NAME --weights CKPT"
            } else {
                "not a loadable TorchScript file (save with torch.jit.script(m).save or torch.jit.trace; \
                 models/export.py does both)"
            };
            anyhow::anyhow!("model {}: {hint}: {msg}", path.display())
        })?;
        module.f_set_eval().map_err(|e| anyhow::anyhow!("model {}: {}", path.display(), torch_msg(&e)))?;
        let params = module
            .named_parameters()
            .map_err(|e| anyhow::anyhow!("model {}: cannot list parameters: {}", path.display(), torch_msg(&e)))?;
        if params.is_empty() {
            bail!("model {}: has no parameters, so it has no loss landscape", path.display());
        }
        for (name, p) in &params {
            if !p.is_floating_point() {
                bail!("model {}: parameter {name} is {:?}, not floating point", path.display(), p.kind());
            }
        }
        let buffers = crate::ffi::named_buffers(&module, &params[0].1)
            .map_err(|e| anyhow::anyhow!("model {}: {e:#}", path.display()))?;
        let native_kind = params[0].1.kind();
        Ok(Model {
            module: RefCell::new(module),
            frozen: RefCell::new(None),
            params,
            buffers,
            device,
            native_kind,
            path: path.to_path_buf(),
            sha256,
        })
    }

    /// One forward pass (of the frozen copy while one is installed); an error (wrong input
    /// shape, ...) comes back as a one-line message.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.frozen.borrow().as_ref() {
            Some(f) => f.forward_ts(&[x]),
            None => self.module.borrow().forward_ts(&[x]),
        }
        .map_err(|e| anyhow::anyhow!("model {}: forward failed: {}", self.path.display(), torch_msg(&e)))
    }

    /// One forward pass of the module itself, frozen copy or not.
    pub fn forward_unfrozen(&self, x: &Tensor) -> Result<Tensor> {
        self.module
            .borrow()
            .forward_ts(&[x])
            .map_err(|e| anyhow::anyhow!("model {}: forward failed: {}", self.path.display(), torch_msg(&e)))
    }

    /// A frozen copy of the module: see `ffi::freeze`.
    pub fn freeze(&self, set: &[(String, Tensor)], how: Freeze) -> Result<(Vec<Tensor>, Option<CModule>)> {
        crate::ffi::freeze(&self.module.borrow(), &self.params[0].1, set, how)
    }

    /// Make `forward` run `frozen` (None: the module itself again).
    pub fn install_frozen(&self, frozen: Option<CModule>) {
        *self.frozen.borrow_mut() = frozen;
    }

    pub fn has_frozen(&self) -> bool {
        self.frozen.borrow().is_some()
    }

    /// Copies of the current parameter values (on the model's device), in `params` order.
    /// (`copy` keeps each tensor's memory format.)
    pub fn snapshot(&self) -> Vec<Tensor> {
        let _g = tch::no_grad_guard();
        self.params.iter().map(|(_, p)| p.detach().copy()).collect()
    }

    /// Write `values` into the parameters in place (bit-exact copy).
    pub fn load_values(&self, values: &[Tensor]) {
        let _g = tch::no_grad_guard();
        for ((_, p), v) in self.params.iter().zip(values) {
            p.shallow_clone().copy_(v);
        }
    }

    /// Re-lay 4-D weights (convolutions) out as channels_last (NHWC in memory, NCHW in shape),
    /// which cuDNN runs faster with channels_last input. Values are unchanged.
    pub fn to_channels_last(&mut self) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (name, p) in &mut self.params {
            if p.dim() == 4 {
                let cl = channels_last(p);
                p.f_set_data(&cl)
                    .map_err(|e| anyhow::anyhow!("model {}: {name}: {}", self.path.display(), torch_msg(&e)))?;
            }
        }
        Ok(())
    }

    /// Cast every floating-point parameter and buffer to `kind` (TorchScript's `Module.to`,
    /// which keeps each tensor's memory format). The handles in `params` follow, since `to`
    /// swaps the data under the same tensors.
    pub fn cast(&self, kind: Kind) -> Result<()> {
        if self.has_frozen() {
            bail!("internal: model {} cast while a frozen copy is installed", self.path.display());
        }
        self.module.borrow_mut().to(self.device, kind, false);
        if let Some((name, p)) = self.params.iter().find(|(_, p)| p.kind() != kind) {
            bail!("model {}: parameter {name} is still {:?} after casting to {kind:?}", self.path.display(), p.kind());
        }
        Ok(())
    }

    pub fn kind(&self) -> Kind {
        self.params[0].1.kind()
    }

    /// What a checkpoint sets and what interpolation between checkpoints moves: the parameters,
    /// then the floating-point buffers (integer ones such as `num_batches_tracked` are left alone).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .chain(self.buffers.iter().filter(|(_, b)| b.is_floating_point()))
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    }

    pub fn num_params(&self) -> i64 {
        self.params.iter().map(|(_, p)| p.numel() as i64).sum()
    }
}

/// A copy of 4-D `t` in channels_last memory order (tch 0.24 has no MemoryFormat: permute trick).
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
