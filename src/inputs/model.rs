//! The model: a TorchScript module on the run's device, in eval mode, with its named parameters
//! and buffers, which share storage with the module (writing into them in place moves the model).

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::error::{torch_msg, Error, Result, Role, Setting};
use crate::ffi::{CloneFor, Freeze};

pub struct Model {
    module: CModule,
    /// The shim's handle to the same module object (buffers, freezing, BatchNorm layers).
    handle: crate::ffi::Module,
    /// `named_parameters()` in the module's order; these tensors alias the module's weights.
    pub params: Vec<(String, Tensor)>,
    /// `named_buffers()` (BatchNorm running statistics, ...), aliasing the module's buffers.
    pub buffers: Vec<(String, Tensor)>,
    pub device: Device,
    /// dtype of the parameters as loaded (float32 normally); `cast` may change the current one.
    pub native_kind: Kind,
    pub path: PathBuf,
    pub sha256: String,
    /// The entry of a dict output the loss is taken on (None: `logits`); see [`pick_output`].
    pub output: Option<String>,
    /// The modules the curvature products run (made on first use), with the number of BatchNorm
    /// layers folded and of convolutions rewritten in each: see [`Model::forward_products`] and
    /// [`Model::forward_hessian_products`].
    products: std::sync::OnceLock<(CModule, usize, usize)>,
    hessian_products: std::sync::OnceLock<(CModule, usize, usize)>,
}

pub use crate::formats::hash::sha256_hex;

/// See [`Model::pointwise_conv_with_few_inputs`]: the input-channel block of oneDNN's AVX-512
/// 1×1 convolution kernels (its AVX2 ones use 8).
pub const POINTWISE_MIN_INPUTS: i64 = 16;

/// sha256 of a file (streamed), as hex.
pub fn sha256_file(path: &Path, role: Role) -> Result<String> {
    crate::formats::hash::sha256_file(path).map_err(|e| Error::file(role, path, format!("cannot read: {e}")))
}

/// A state dict where TorchScript was expected (`what` names the kind of file).
fn state_dict(path: &Path, what: &'static str, detail: String) -> Error {
    Error::StateDict { path: path.to_path_buf(), what, detail }
}

/// A safetensors file: an 8-byte little-endian header length, then a JSON header.
fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        n > 0 && n < bytes.len() as u64 && bytes[8] == b'{'
    }
}

impl Model {
    /// Load a TorchScript file (scripted or traced) onto `device` and put it in eval mode.
    pub fn load(path: &Path, device: Device) -> Result<Model> {
        let bad = |problem: String| Error::file(Role::Model, path, problem);
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let sha256 = sha256_hex(&bytes);
        if is_safetensors(&bytes) {
            return Err(state_dict(path, "a safetensors state dict", String::new()));
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            let msg = torch_msg(&e);
            if msg.contains("constants.pkl") {
                return state_dict(path, "a torch.save checkpoint (e.g. a state_dict)", format!(": {msg}"));
            }
            bad(format!(
                "not a loadable TorchScript file (save with torch.jit.script(m).save or torch.jit.trace): {msg}"
            ))
        })?;
        module.f_set_eval().map_err(|e| bad(torch_msg(&e)))?;
        let params =
            module.named_parameters().map_err(|e| bad(format!("cannot list parameters: {}", torch_msg(&e))))?;
        if params.is_empty() {
            return Err(bad("has no parameters, so it has no loss landscape".into()));
        }
        if let Some((name, p)) = params.iter().find(|(_, p)| !p.is_floating_point()) {
            return Err(bad(format!("parameter {name} is {:?}, not floating point", p.kind())));
        }
        let handle = crate::ffi::Module::share(&module, &params[0].1).map_err(|e| bad(e.to_string()))?;
        let buffers = handle.named_buffers().map_err(|e| bad(e.to_string()))?;
        let native_kind = params[0].1.kind();
        Ok(Model {
            module,
            handle,
            params,
            buffers,
            device,
            native_kind,
            path: path.to_path_buf(),
            sha256,
            output: None,
            products: std::sync::OnceLock::new(),
            hessian_products: std::sync::OnceLock::new(),
        })
    }

    /// One forward pass, its output picked by [`pick_output`]; an error (wrong input shape, an
    /// output with no tensor, ...) comes back as a one-line message.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        forward_picked(&self.module, x, self.output.as_deref(), &self.path, "")
    }

    /// `forward` for the curvature products (Hessian, Gauss-Newton and Fisher products, in eval
    /// mode): on a clone of the module that shares its tensors, whose BatchNorms are folded into
    /// the layers before them as differentiable functions of the parameters (no BatchNorm double
    /// backward), and whose graph executor never optimizes (its autodiff subgraphs would drop
    /// forward-mode tangents). The clone is made on first use and is in eval mode.
    pub fn forward_products(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_unoptimized(&self.products_module(CloneFor::Products)?.0, x)
    }

    /// `forward_products` for Hessian products by double backward (reverse mode only): the same
    /// clone's graph with its convolutions as `losscape::conv`, whose backward differentiates
    /// into oneDNN convolution kernels (src/ffi/shim.cpp) instead of PyTorch's generic
    /// convolution double backward; the same function and derivatives, a quarter less time per
    /// product on the CPU for a ResNet.
    pub fn forward_hessian_products(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_unoptimized(&self.products_module(CloneFor::HessianProducts)?.0, x)
    }

    fn forward_unoptimized(&self, module: &CModule, x: &Tensor) -> Result<Tensor> {
        let was = crate::ffi::set_graph_optimize(false)?;
        let out = forward_picked(module, x, self.output.as_deref(), &self.path, "");
        crate::ffi::set_graph_optimize(was)?;
        out
    }

    fn products_module(&self, how: CloneFor) -> Result<&(CModule, usize, usize)> {
        let cell = match how {
            CloneFor::Products => &self.products,
            CloneFor::HessianProducts => &self.hessian_products,
        };
        if let Some(m) = cell.get() {
            return Ok(m);
        }
        let made = self.handle.clone_shared(how).map_err(|e| Error::file(Role::Model, &self.path, e.to_string()))?;
        log::debug!(
            "{how:?}: {} BatchNorm layers folded into the layers before them, {} convolutions for double backward",
            made.1,
            made.2
        );
        Ok(cell.get_or_init(|| made))
    }

    /// How many BatchNorm layers the module of [`Model::forward_products`] has folded.
    pub fn batchnorms_folded(&self) -> Result<usize> {
        Ok(self.products_module(CloneFor::Products)?.1)
    }

    /// How many convolutions the module of [`Model::forward_hessian_products`] runs as
    /// `losscape::conv`.
    pub fn hessian_convolutions(&self) -> Result<usize> {
        Ok(self.products_module(CloneFor::HessianProducts)?.2)
    }

    /// The one-line error of a failed forward pass of this model.
    pub fn forward_error(&self, e: &tch::TchError) -> Error {
        Error::file(Role::Model, &self.path, format!("forward failed: {}", torch_msg(e)))
    }

    /// A frozen copy of the module: see `ffi::Module::freeze`.
    pub fn freeze(&self, set: &[(String, Tensor)], how: Freeze) -> Result<(Vec<Tensor>, Option<CModule>)> {
        self.handle.freeze(set, how)
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

    /// The first parameter that looks like the weight of a 1×1 2-D convolution with fewer than
    /// [`POINTWISE_MIN_INPUTS`] input channels per group (shape [out, in, 1, 1]): the kind of layer
    /// whose weight gradient oneDNN gets wrong in channels_last when it is strided (the stride is not
    /// in the weight, so every such layer counts).
    pub fn pointwise_conv_with_few_inputs(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(_, p)| {
                let s = p.size();
                s.len() == 4 && s[2] == 1 && s[3] == 1 && s[1] < POINTWISE_MIN_INPUTS
            })
            .map(|(n, _)| n.as_str())
    }

    /// Re-lay 4-D weights (convolutions) out as channels_last (NHWC in memory, NCHW in shape),
    /// which cuDNN and oneDNN run faster with channels_last input. Values are unchanged.
    pub fn to_channels_last(&mut self) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (name, p) in &mut self.params {
            if p.dim() == 4 {
                let cl = channels_last(p);
                p.f_set_data(&cl)
                    .map_err(|e| Error::file(Role::Model, &self.path, format!("{name}: {}", torch_msg(&e))))?;
            }
        }
        Ok(())
    }

    /// Cast every floating-point parameter and buffer to `kind` in place (`set_data`, keeping each
    /// tensor's memory format), as PyTorch's `module.to(dtype)` does; integer buffers such as
    /// `num_batches_tracked` keep their dtype (TorchScript's C++ `Module::to` would cast them
    /// too). The handles in `params` and `buffers` follow.
    pub fn cast(&mut self, kind: Kind) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (name, t) in self.params.iter_mut().chain(self.buffers.iter_mut().filter(|(_, b)| b.is_floating_point())) {
            if t.kind() != kind {
                let v = t.to_kind(kind);
                t.f_set_data(&v)
                    .map_err(|e| Error::file(Role::Model, &self.path, format!("{name}: {}", torch_msg(&e))))?;
            }
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

    /// The BatchNorm layers of the module (see `ffi::Module::batchnorm_layers`).
    pub fn batchnorm_layers(&self) -> Result<Vec<crate::ffi::BatchNormLayer>> {
        self.handle.batchnorm_layers().map_err(|e| Error::file(Role::Model, &self.path, e.to_string()))
    }

    /// The BatchNorm layers alone in training mode until the guard goes: it puts them back in eval
    /// mode when dropped, on every path out (an error in a forward pass included).
    pub fn batchnorm_training(&self) -> Result<BatchNormTraining<'_>> {
        self.set_batchnorm_training(true)?;
        Ok(BatchNormTraining { model: self })
    }

    fn set_batchnorm_training(&self, on: bool) -> Result<()> {
        self.handle.set_batchnorm_training(on).map_err(|e| Error::file(Role::Model, &self.path, e.to_string()))
    }
}

/// BatchNorm layers in training mode while it lives (see [`Model::batchnorm_training`]).
pub struct BatchNormTraining<'a> {
    model: &'a Model,
}

impl BatchNormTraining<'_> {
    /// Back to eval mode now, with its error.
    pub fn end(self) -> Result<()> {
        let r = self.model.set_batchnorm_training(false);
        std::mem::forget(self);
        r
    }
}

impl Drop for BatchNormTraining<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.model.set_batchnorm_training(false) {
            log::warn!("{e}");
        }
    }
}

/// Run `module` on `x` and pick the output tensor (see [`pick_output`]); `what` names the module
/// in errors after the model's path ("" for the model itself).
pub fn forward_picked(module: &CModule, x: &Tensor, key: Option<&str>, path: &Path, what: &str) -> Result<Tensor> {
    let out = module
        .forward_is(&[IValue::Tensor(x.shallow_clone())])
        .map_err(|e| Error::file(Role::Model, path, format!("forward{what} failed: {}", torch_msg(&e))))?;
    pick_output(out, key).map_err(|p| match p {
        Picked::NoKey(problem) => Error::setting(Setting::Output, key.unwrap_or(DEFAULT_OUTPUT), problem),
        Picked::NotTensor(problem) => Error::file(Role::Model, path, problem),
    })
}

/// The dict entry used when none is named: the name Hugging Face models give their logits.
pub const DEFAULT_OUTPUT: &str = "logits";

/// Why no tensor could be picked from a forward's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Picked {
    /// The key asked for (or `logits`) is not there, or a key was given for an output with none.
    NoKey(String),
    /// The result holds no tensor where one was expected.
    NotTensor(String),
}

/// The tensor the loss is taken on, from a forward's result: a tensor as it is; a tuple or list,
/// its first element (a tensor); a dict, its entry `key` (default `logits`). Anything else is an
/// error that names what was returned.
pub fn pick_output(v: IValue, key: Option<&str>) -> std::result::Result<Tensor, Picked> {
    let keyed = |shape: &str| {
        key.map_or(Ok(()), |k| {
            Err(Picked::NoKey(format!("the model returns {shape}, not a dict: there is no output named '{k}'")))
        })
    };
    match v {
        IValue::Tensor(t) => keyed("a tensor").map(|_| t),
        IValue::Tuple(items) | IValue::GenericList(items) => {
            keyed("a tuple or list")?;
            match items.into_iter().next() {
                Some(IValue::Tensor(t)) => Ok(t),
                Some(first) => Err(Picked::NotTensor(format!(
                    "forward returns a tuple or list whose first element is {}, not a tensor",
                    describe(&first)
                ))),
                None => Err(Picked::NotTensor("forward returns an empty tuple or list".into())),
            }
        }
        IValue::TensorList(mut ts) => {
            keyed("a list of tensors")?;
            if ts.is_empty() {
                Err(Picked::NotTensor("forward returns an empty list".into()))
            } else {
                Ok(ts.swap_remove(0))
            }
        }
        IValue::GenericDict(entries) => {
            let want = key.unwrap_or(DEFAULT_OUTPUT);
            let names: Vec<String> = entries.iter().map(|(k, _)| key_name(k)).collect();
            match entries.into_iter().find(|(k, _)| key_name(k) == want) {
                Some((_, IValue::Tensor(t))) => Ok(t),
                Some((_, other)) => Err(Picked::NotTensor(format!(
                    "forward returns a dict whose entry '{want}' is {}, not a tensor",
                    describe(&other)
                ))),
                None => Err(Picked::NoKey(format!("the model returns a dict with keys [{}], none named '{want}'", names.join(", ")))),
            }
        }
        other => Err(Picked::NotTensor(format!(
            "forward returns {}; the loss needs a tensor, a tuple or list (its first element is used) or a dict (its '{}' entry)",
            describe(&other),
            key.unwrap_or(DEFAULT_OUTPUT)
        ))),
    }
}

fn key_name(k: &IValue) -> String {
    match k {
        IValue::String(s) => s.clone(),
        IValue::Int(i) => i.to_string(),
        other => describe(other),
    }
}

/// What a value is, in words.
fn describe(v: &IValue) -> String {
    match v {
        IValue::None => "None".into(),
        IValue::Tensor(t) => format!("a tensor of shape {:?}", t.size()),
        IValue::Double(x) => format!("a float ({x})"),
        IValue::Int(i) => format!("an int ({i})"),
        IValue::Bool(b) => format!("a bool ({b})"),
        IValue::Tuple(_) => "a tuple".into(),
        IValue::IntList(_) | IValue::DoubleList(_) | IValue::BoolList(_) => "a list of numbers".into(),
        IValue::String(s) => format!("a string ('{s}')"),
        IValue::TensorList(_) => "a list of tensors".into(),
        IValue::GenericList(_) => "a list".into(),
        IValue::GenericDict(_) => "a dict".into(),
        IValue::Object(_) => "an object".into(),
        _ => "a value of another type".into(),
    }
}

/// A copy of 4-D `t` in channels_last memory order (tch 0.24 has no MemoryFormat: permute trick).
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
