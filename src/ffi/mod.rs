//! Safe wrappers over src/ffi/shim.cpp: the libtorch calls tch 0.24 does not expose (TF32
//! switches, a TorchScript module's buffers, reading `torch.save` files, freezing a module, its
//! BatchNorm layers, forward-mode differentiation).
//!
//! One funnel: every shim call goes through [`call`], which turns the shim's return code and
//! message into a typed error (`Error::OutOfMemory` when libtorch threw its `OutOfMemoryError`,
//! `Error::Torch` otherwise, each naming the operation). The module the shim works on is a
//! [`Module`]: a handle the shim made and this side owns (freed on drop), which keeps the module
//! object alive on its own.
//!
//! tch's `CModule` does not give out its `torch::jit::Module*`. Two places depend on its layout
//! (a struct holding just that pointer, under the `=0.24.0` pin): [`Module::share`] reads it once
//! per module, and checks what it read against the module's first parameter before use; and
//! [`freeze`] hands a frozen module over to tch as a `CModule` (tch runs its forward). Both are in
//! [`layout`], with the size assertion.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use tch::{CModule, Tensor};

use crate::error::{Error, Result};

type NamedTensorCb = extern "C" fn(*mut c_void, *const c_char, *mut c_void);
type BatchNormCb = extern "C" fn(*mut c_void, *const c_char, f64, i32, *mut c_void, *mut c_void, *mut c_void);

extern "C" {
    fn losscape_set_tf32(on: i32, err: *mut c_char, len: usize) -> i32;
    fn losscape_tf32_conv(out: *mut i32, err: *mut c_char, len: usize) -> i32;
    fn losscape_module_share(
        module: *mut c_void,
        out: *mut *mut c_void,
        first: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn losscape_module_free(module: *mut c_void);
    fn losscape_module_named_buffers(
        module: *mut c_void,
        ctx: *mut c_void,
        f: NamedTensorCb,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn losscape_freeze(
        module: *mut c_void,
        to_double: i32,
        names: *const *const c_char,
        values: *const *mut c_void,
        n: usize,
        channels_last: i32,
        mkldnn: i32,
        ctx: *mut c_void,
        f: NamedTensorCb,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn losscape_batchnorm_layers(
        module: *mut c_void,
        ctx: *mut c_void,
        f: BatchNormCb,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn losscape_set_batchnorm_training(module: *mut c_void, on: i32, err: *mut c_char, len: usize) -> i32;
    fn losscape_torch_load(
        path: *const c_char,
        ctx: *mut c_void,
        f: NamedTensorCb,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn losscape_module_clone_shared(
        module: *mut c_void,
        how: i32,
        out: *mut *mut c_void,
        folded: *mut i32,
        convs: *mut i32,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn losscape_set_graph_optimize(on: i32, was: *mut i32, err: *mut c_char, len: usize) -> i32;
    fn losscape_enter_dual_level(level: *mut u64, err: *mut c_char, len: usize) -> i32;
    fn losscape_exit_dual_level(level: u64, err: *mut c_char, len: usize) -> i32;
    fn losscape_set_tangent(tensor: *mut c_void, tangent: *mut c_void, level: u64, err: *mut c_char, len: usize)
        -> i32;
    fn losscape_tangent(tensor: *mut c_void, level: u64, out: *mut *mut c_void, err: *mut c_char, len: usize) -> i32;
    #[cfg(test)]
    fn losscape_test_oom(err: *mut c_char, len: usize) -> i32;
}

/// The shim's return code for libtorch's typed out-of-memory error.
const OOM: i32 = -2;

/// Run one shim call: `body` gets an error buffer and its length and returns the shim's code. The
/// only place a shim code becomes an error; `op` names the operation in it.
fn call(op: &'static str, body: impl FnOnce(*mut c_char, usize) -> i32) -> Result<()> {
    let mut err = [0u8; 512];
    let rc = body(err.as_mut_ptr() as *mut c_char, err.len());
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    let message = crate::error::clean(&String::from_utf8_lossy(&err[..end]));
    let context = op.to_string();
    Err(if rc == OOM { Error::OutOfMemory { context, message } } else { Error::Torch { context, message } })
}

/// Receives each (name, new at::Tensor*) from the shim into a Vec<(String, Tensor)>.
extern "C" fn collect(ctx: *mut c_void, name: *const c_char, t: *mut c_void) {
    // SAFETY: ctx is the &mut Vec passed by `named_tensors`, name a NUL-terminated string, t a new
    // at::Tensor* whose ownership passes to the tch Tensor.
    let out = unsafe { &mut *(ctx as *mut Vec<(String, Tensor)>) };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    out.push((name, unsafe { Tensor::from_ptr(t as *mut torch_sys::C_tensor) }));
}

/// Run a shim call that reports tensors through `collect` into a fresh list. `body` gets the list
/// (as the callback context) and the error buffer.
fn named_tensors(
    op: &'static str,
    body: impl FnOnce(*mut c_void, *mut c_char, usize) -> i32,
) -> Result<Vec<(String, Tensor)>> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let ctx = &mut out as *mut _ as *mut c_void;
    call(op, |err, len| body(ctx, err, len))?;
    Ok(out)
}

/// Allow or forbid TF32 for CUDA float32 convolutions and matmuls (process-wide).
pub fn set_tf32(on: bool) -> Result<()> {
    // SAFETY: a plain C function; the buffer outlives the call.
    call(if on { "enabling TF32" } else { "disabling TF32" }, |err, len| unsafe {
        losscape_set_tf32(on as i32, err, len)
    })
}

/// Whether CUDA float32 convolutions may use TF32 right now (false if libtorch cannot say).
pub fn tf32_conv() -> bool {
    let mut on = 0i32;
    // SAFETY: as above; `on` outlives the call.
    call("reading the TF32 setting", |err, len| unsafe { losscape_tf32_conv(&mut on, err, len) }).is_ok() && on == 1
}

/// Where tch's layout is assumed (see the module's documentation).
mod layout {
    use super::*;

    const _: () = assert!(std::mem::size_of::<CModule>() == std::mem::size_of::<*mut c_void>());

    /// The `torch::jit::Module*` inside a tch `CModule`, unchecked (the caller checks it).
    pub(super) fn module_ptr(m: &CModule) -> *mut c_void {
        // SAFETY: CModule's only field is the module pointer (same size, asserted above).
        unsafe { *(m as *const CModule as *const *mut c_void) }
    }

    /// A frozen module the shim made (a `new torch::jit::Module`) handed to tch, which frees it
    /// with `delete` (atm_free) as it does its own.
    pub(super) fn into_cmodule(m: Module) -> CModule {
        let ptr = m.ptr.as_ptr();
        std::mem::forget(m);
        // SAFETY: ptr is a heap torch::jit::Module* from `new`, owned by nobody else now (its
        // Module was forgotten); CModule is exactly that pointer (size asserted above).
        unsafe { std::mem::transmute::<*mut c_void, CModule>(ptr) }
    }
}

/// A handle to a TorchScript module object that this side owns (a `torch::jit::Module*` made by
/// the shim, deleted on drop). It keeps the object alive: the module it came from may go first.
pub struct Module {
    ptr: NonNull<c_void>,
}

// SAFETY: a torch::jit::Module handle, as tch's CModule (Send and Sync there): libtorch's module
// objects are reference counted atomically; this side never calls them from two threads at once.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: ptr came from `new` in the shim and is deleted once, here.
        unsafe { losscape_module_free(self.ptr.as_ptr()) }
    }
}

impl Module {
    fn from_raw(ptr: *mut c_void) -> Result<Module> {
        NonNull::new(ptr).map(|ptr| Module { ptr }).ok_or_else(|| Error::other("internal: the shim gave no module"))
    }

    /// A handle to the module object behind tch's `m`, checked: the object's first parameter must
    /// be `first_param` (the tensor tch's `named_parameters` gave), else the layout is not the one
    /// assumed and nothing is done with it.
    pub fn share(m: &CModule, first_param: &Tensor) -> Result<Module> {
        let raw = layout::module_ptr(m);
        if raw.is_null() {
            return Err(Error::other("internal: cannot reach the TorchScript module behind tch's CModule"));
        }
        let (mut out, mut first): (*mut c_void, *mut c_void) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: raw is non-null; if it is not a Module* the check below rejects the result, but
        // the shim has read through it first — the size assertion and the `=0.24.0` pin are what
        // make it one.
        call("reaching the TorchScript module", |err, len| unsafe {
            losscape_module_share(raw, &mut out, &mut first, err, len)
        })?;
        let module = Module::from_raw(out)?;
        if first != first_param.data_ptr() {
            return Err(Error::other("internal: the TorchScript module behind tch's CModule is not the one loaded"));
        }
        Ok(module)
    }

    fn raw(&self) -> *mut c_void {
        self.ptr.as_ptr()
    }

    /// The module's buffers (BatchNorm running statistics, ...), sharing its storage.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let m = self.raw();
        // SAFETY: m is a live Module*; the callback context is the list `named_tensors` made.
        named_tensors("listing the module's buffers", |ctx, err, len| unsafe {
            losscape_module_named_buffers(m, ctx, collect, err, len)
        })
    }

    /// A frozen copy of the module (`torch.jit.freeze`: attributes inlined as constants, BatchNorm
    /// folded into the layer before it): the floating-point tensor constants its forward graph
    /// uses, in graph order, sharing storage with the graph, and the frozen module itself when
    /// `how.keep`. The named parameters or buffers in `set` take the given values in the copy;
    /// the module itself is not touched.
    pub fn freeze(&self, set: &[(String, Tensor)], how: Freeze) -> Result<(Vec<Tensor>, Option<CModule>)> {
        let names: Vec<CString> = set
            .iter()
            .map(|(n, _)| CString::new(n.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::other("a tensor name holds a NUL byte"))?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
        let value_ptrs: Vec<*mut c_void> = set.iter().map(|(_, t)| t.as_ptr() as *mut c_void).collect();
        let mut out: *mut c_void = std::ptr::null_mut();
        let out_ptr: *mut *mut c_void = if how.keep { &mut out } else { std::ptr::null_mut() };
        let m = self.raw();
        // SAFETY: m is a live Module*; names/values hold set.len() valid pointers that outlive the
        // call; the shim writes a new Module* into out only when out_ptr is non-null and it succeeds.
        let consts = named_tensors("freezing the module", |ctx, err, len| unsafe {
            losscape_freeze(
                m,
                how.to_double as i32,
                name_ptrs.as_ptr(),
                value_ptrs.as_ptr(),
                set.len(),
                how.channels_last as i32,
                how.mkldnn as i32,
                ctx,
                collect,
                out_ptr,
                err,
                len,
            )
        })?;
        let module = if out.is_null() { None } else { Some(layout::into_cmodule(Module::from_raw(out)?)) };
        Ok((consts.into_iter().map(|(_, t)| t).collect(), module))
    }

    /// A clone of the module sharing its parameters and buffers (the same tensors: moving one
    /// moves the other) with methods of its own, hence graph executors of its own, as a tch
    /// module in eval mode. Folded, each BatchNorm that follows a convolution or linear layer
    /// runs, in eval mode, as that layer with folded weights computed in the graph from the
    /// parameters (W·γ/σ, β − μγ/σ), so derivatives of every order reach the original
    /// parameters; the count of BatchNorms folded comes back beside the clone (0, and the clone
    /// as it was, where the graph cannot be rewritten). For Hessian products, its convolutions
    /// also run as `losscape::conv`, whose double backward is oneDNN's convolution kernels
    /// (shim.cpp; reverse mode only), counted third.
    pub fn clone_shared(&self, how: CloneFor) -> Result<(CModule, usize, usize)> {
        let (m, mut out, mut folded, mut convs) = (self.raw(), std::ptr::null_mut(), 0i32, 0i32);
        let how = match how {
            CloneFor::Products => 1,
            CloneFor::HessianProducts => 3,
        };
        // SAFETY: m is a live Module*; the shim writes a new Module* into out on success.
        call("cloning the module", |err, len| unsafe {
            losscape_module_clone_shared(m, how, &mut out, &mut folded, &mut convs, err, len)
        })?;
        let mut module = layout::into_cmodule(Module::from_raw(out)?);
        module
            .f_set_eval()
            .map_err(|e| Error::Torch { context: "cloning the module".into(), message: e.to_string() })?;
        if folded < 0 {
            log::debug!("the module's graph could not be rewritten; its BatchNorms are not folded");
        }
        Ok((module, folded.max(0) as usize, convs.max(0) as usize))
    }

    /// The module's BatchNorm layers that track running statistics, in module order.
    pub fn batchnorm_layers(&self) -> Result<Vec<BatchNormLayer>> {
        let mut out: Vec<BatchNormLayer> = Vec::new();
        let (m, ctx) = (self.raw(), &mut out as *mut _ as *mut c_void);
        // SAFETY: m is a live Module*; the callback receives &mut out as its context.
        call("listing the BatchNorm layers", |err, len| unsafe {
            losscape_batchnorm_layers(m, ctx, collect_batchnorm, err, len)
        })?;
        Ok(out)
    }

    /// Put the BatchNorm layers of the module alone in training mode (`on`) or eval mode.
    pub fn set_batchnorm_training(&self, on: bool) -> Result<()> {
        let m = self.raw();
        // SAFETY: m is a live Module*.
        call("switching BatchNorm's mode", |err, len| unsafe {
            losscape_set_batchnorm_training(m, on as i32, err, len)
        })
    }
}

/// What `clone_shared`'s clone is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneFor {
    /// Gradients, GGN and Fisher products (forward-mode tangents included): BatchNorms folded.
    Products,
    /// Hessian products by double backward: BatchNorms folded and `losscape::conv` convolutions.
    HessianProducts,
}

/// How `freeze` makes its copy (all off by default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Freeze {
    /// Cast the copy to float64 first.
    pub to_double: bool,
    /// Lay 4-D constants out channels_last.
    pub channels_last: bool,
    /// (A float32 CPU module.) Rewrite the frozen graph's convolutions to run on oneDNN tensors;
    /// the constants they use are returned as oneDNN (`is_mkldnn`) tensors. Fails where that
    /// rewrite does not map cleanly onto the constants.
    pub mkldnn: bool,
    /// Return the frozen module too.
    pub keep: bool,
}

/// Every tensor of a Python `torch.save` zip file, named by its dotted key path.
pub fn torch_load(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| Error::other("a path holds a NUL byte"))?;
    // SAFETY: c is NUL-terminated and outlives the call.
    named_tensors("reading a torch.save file", |ctx, err, len| unsafe {
        losscape_torch_load(c.as_ptr(), ctx, collect, err, len)
    })
}

/// Switch the TorchScript graph executor's optimizations on or off (this thread); returns whether
/// they were on. A function whose executor has already optimized keeps its optimized plan; one
/// that only ever runs with them off runs its graph as written — no autodiff subgraphs, which
/// detach their inputs and so drop forward-mode tangents without an error.
pub fn set_graph_optimize(on: bool) -> Result<bool> {
    let mut was = 1i32;
    // SAFETY: a plain C function; `was` and the buffer outlive the call.
    call("switching the graph executor's optimizations", |err, len| unsafe {
        losscape_set_graph_optimize(on as i32, &mut was, err, len)
    })?;
    Ok(was != 0)
}

/// A forward-mode dual level (PyTorch's `torch.autograd.forward_ad.dual_level`), exited on drop,
/// which drops every tangent given or computed in it.
pub struct DualLevel {
    level: u64,
}

impl DualLevel {
    pub fn enter() -> Result<DualLevel> {
        let mut level = 0u64;
        // SAFETY: a plain C function; the output and the buffer outlive the call.
        call("entering a forward-mode level", |err, len| unsafe { losscape_enter_dual_level(&mut level, err, len) })?;
        Ok(DualLevel { level })
    }

    /// Give `t` (a parameter, or any tensor the forward pass reads) the tangent `dt` at this level.
    pub fn set_tangent(&self, t: &Tensor, dt: &Tensor) -> Result<()> {
        // SAFETY: both are live at::Tensor*; the shim only reads them (setting t's tangent slot).
        call("giving a tensor its tangent", |err, len| unsafe {
            losscape_set_tangent(t.as_ptr() as *mut c_void, dt.as_ptr() as *mut c_void, self.level, err, len)
        })
    }

    /// The tangent of `t` at this level (a new tensor), None when it has none.
    pub fn tangent(&self, t: &Tensor) -> Result<Option<Tensor>> {
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: t is a live at::Tensor*; the shim writes a new at::Tensor* (or null) into out.
        call("reading a tangent", |err, len| unsafe {
            losscape_tangent(t.as_ptr() as *mut c_void, self.level, &mut out, err, len)
        })?;
        // SAFETY: a non-null out is a new at::Tensor* whose ownership passes to the tch Tensor.
        Ok((!out.is_null()).then(|| unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }))
    }
}

impl Drop for DualLevel {
    fn drop(&mut self) {
        // SAFETY: as `enter`. Exiting the innermost level cannot fail unless levels were nested out
        // of order, which this type's scoping rules out; a failure is logged, not raised in drop.
        if let Err(e) =
            call("leaving a forward-mode level", |err, len| unsafe { losscape_exit_dual_level(self.level, err, len) })
        {
            log::warn!("{e}");
        }
    }
}

/// A BatchNorm layer of a TorchScript module, its running statistics shared with the module.
pub struct BatchNormLayer {
    pub name: String,
    /// None: a cumulative average (PyTorch's `momentum=None`).
    pub momentum: Option<f64>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Option<Tensor>,
}

extern "C" fn collect_batchnorm(
    ctx: *mut c_void,
    name: *const c_char,
    momentum: f64,
    has_momentum: i32,
    mean: *mut c_void,
    var: *mut c_void,
    tracked: *mut c_void,
) {
    // SAFETY: ctx is the &mut Vec passed by `batchnorm_layers`; name is NUL-terminated; mean, var
    // (and tracked when non-null) are new at::Tensor* whose ownership passes to tch Tensors.
    let out = unsafe { &mut *(ctx as *mut Vec<BatchNormLayer>) };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    let t = |p: *mut c_void| unsafe { Tensor::from_ptr(p as *mut torch_sys::C_tensor) };
    out.push(BatchNormLayer {
        name,
        momentum: (has_momentum != 0).then_some(momentum),
        running_mean: t(mean),
        running_var: t(var),
        num_batches_tracked: (!tracked.is_null()).then(|| t(tracked)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtorch's typed out-of-memory error comes back as `Error::OutOfMemory`, whatever its text.
    #[test]
    fn the_typed_out_of_memory_cause_is_kept() {
        // SAFETY: a plain C function; the buffer outlives the call.
        let e = call("a test", |err, len| unsafe { losscape_test_oom(err, len) }).unwrap_err();
        assert!(matches!(&e, Error::OutOfMemory { context, .. } if context == "a test"), "{e}");
        assert!(e.is_oom() && !e.to_string().contains('\n'), "{e}");
        let e = call("another", |_, _| -1).unwrap_err();
        assert!(matches!(e, Error::Torch { .. }) && !e.is_oom());
    }

    /// A tangent given to a tensor is carried through operations on it (d(x²) = 2x·dx, d(x·c) =
    /// c·dx), a tensor that depends on no tangent has none, and leaving the level drops them all.
    #[test]
    fn tangents_are_carried_and_dropped_with_their_level() {
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0]);
        let c = Tensor::from_slice(&[0.5f32, 4.0, -1.0]);
        let dx = Tensor::from_slice(&[1.0f32, 1.0, 2.0]);
        let y;
        {
            let level = DualLevel::enter().unwrap();
            level.set_tangent(&x, &dx).unwrap();
            y = (&x * &x) + (&x * &c);
            let dy = level.tangent(&y).unwrap().expect("y depends on x");
            let want = &x * &dx * 2.0 + &c * &dx;
            assert!(dy.allclose(&want, 1e-6, 1e-6, false), "{dy} vs {want}");
            assert!(level.tangent(&(&c * 2.0)).unwrap().is_none());
        }
        let level = DualLevel::enter().unwrap();
        assert!(level.tangent(&x).unwrap().is_none() && level.tangent(&y).unwrap().is_none());
    }
}
