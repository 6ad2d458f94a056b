//! Safe wrappers over src/ffi/shim.cpp: the libtorch calls tch 0.24 does not expose (TF32
//! switches, a TorchScript module's buffers, reading `torch.save` files, freezing a module, its
//! BatchNorm layers). Every shim call catches C++ exceptions and reports them as an error text.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;

use tch::{CModule, Tensor};

use crate::error::{Error, Result};

type NamedTensorCb = extern "C" fn(*mut c_void, *const c_char, *mut c_void);
type BatchNormCb = extern "C" fn(*mut c_void, *const c_char, f64, i32, *mut c_void, *mut c_void, *mut c_void);

extern "C" {
    fn losscape_set_tf32(on: i32) -> i32;
    fn losscape_tf32_conv() -> i32;
    fn losscape_module_first_param(module: *mut c_void, out: *mut *mut c_void) -> i32;
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
}

/// Receives each (name, new at::Tensor*) from the shim into a Vec<(String, Tensor)>.
extern "C" fn collect(ctx: *mut c_void, name: *const c_char, t: *mut c_void) {
    // SAFETY: ctx is the &mut Vec passed below, name a NUL-terminated string, t a new at::Tensor*
    // whose ownership passes to the tch Tensor.
    let out = unsafe { &mut *(ctx as *mut Vec<(String, Tensor)>) };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    out.push((name, unsafe { Tensor::from_ptr(t as *mut torch_sys::C_tensor) }));
}

fn err_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    crate::error::clean(&String::from_utf8_lossy(&buf[..end]))
}

/// Allow or forbid TF32 for CUDA float32 convolutions and matmuls (process-wide).
pub fn set_tf32(on: bool) -> Result<()> {
    // SAFETY: a plain C function that catches all C++ exceptions.
    if unsafe { losscape_set_tf32(on as i32) } != 0 {
        return Err(Error::other(format!("libtorch refused to {} TF32", if on { "enable" } else { "disable" })));
    }
    Ok(())
}

/// Whether CUDA float32 convolutions may use TF32 right now.
pub fn tf32_conv() -> bool {
    // SAFETY: as above.
    unsafe { losscape_tf32_conv() == 1 }
}

/// The `torch::jit::Module*` inside a tch `CModule` (a struct holding just that pointer), checked
/// against the module's first parameter before use.
fn module_ptr(m: &CModule, first_param: &Tensor) -> Result<*mut c_void> {
    const _: () = assert!(std::mem::size_of::<CModule>() == std::mem::size_of::<*mut c_void>());
    // SAFETY: CModule's only field is the module pointer (same size, asserted above); the value is
    // verified below before anything is done with it.
    let ptr = unsafe { *(m as *const CModule as *const *mut c_void) };
    let mut first: *mut c_void = std::ptr::null_mut();
    // SAFETY: reads the module's parameters; catches exceptions.
    if ptr.is_null() || unsafe { losscape_module_first_param(ptr, &mut first) } != 0 || first != first_param.data_ptr()
    {
        return Err(Error::other("internal: cannot reach the TorchScript module behind tch's CModule"));
    }
    Ok(ptr)
}

/// The module's buffers (BatchNorm running statistics, ...), sharing its storage.
pub fn named_buffers(m: &CModule, first_param: &Tensor) -> Result<Vec<(String, Tensor)>> {
    let ptr = module_ptr(m, first_param)?;
    // SAFETY: ptr was verified above.
    named_tensors(|ctx, err, len| unsafe { losscape_module_named_buffers(ptr, ctx, collect, err, len) })
        .map_err(|e| Error::other(format!("cannot list the module's buffers: {e}")))
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

/// A frozen copy of the module (`torch.jit.freeze`: attributes inlined as constants, BatchNorm
/// folded into the layer before it): the floating-point tensor constants its forward graph uses,
/// in graph order, sharing storage with the graph, and the frozen module itself when `how.keep`.
/// The named parameters or buffers in `set` take the given values in the copy; the module itself
/// is not touched.
pub fn freeze(
    m: &CModule,
    first_param: &Tensor,
    set: &[(String, Tensor)],
    how: Freeze,
) -> Result<(Vec<Tensor>, Option<CModule>)> {
    let ptr = module_ptr(m, first_param)?;
    let names: Vec<CString> = set
        .iter()
        .map(|(n, _)| CString::new(n.as_str()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::other("a tensor name holds a NUL byte"))?;
    let name_ptrs: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
    let value_ptrs: Vec<*mut c_void> = set.iter().map(|(_, t)| t.as_ptr() as *mut c_void).collect();
    let mut out: *mut c_void = std::ptr::null_mut();
    let out_ptr: *mut *mut c_void = if how.keep { &mut out } else { std::ptr::null_mut() };
    // SAFETY: ptr was verified; names/values hold set.len() valid pointers that outlive the call;
    // the shim writes a new Module* into out only when out_ptr is non-null and the call succeeds.
    let consts = named_tensors(|ctx, err, len| unsafe {
        losscape_freeze(
            ptr,
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
    })
    .map_err(|e| Error::other(format!("cannot freeze the module: {e}")))?;
    let module = (!out.is_null()).then(|| {
        // SAFETY: out is a heap torch::jit::Module* from `new`, which CModule owns and frees with
        // `delete` (atm_free); CModule is exactly that pointer (size asserted in module_ptr).
        unsafe { std::mem::transmute::<*mut c_void, CModule>(out) }
    });
    Ok((consts.into_iter().map(|(_, t)| t).collect(), module))
}

/// Every tensor of a Python `torch.save` zip file, named by its dotted key path.
pub fn torch_load(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| Error::other("a path holds a NUL byte"))?;
    // SAFETY: c is NUL-terminated and outlives the call.
    named_tensors(|ctx, err, len| unsafe { losscape_torch_load(c.as_ptr(), ctx, collect, err, len) })
}

/// Run a shim call that reports tensors through `collect` into a fresh list; its error text, if
/// it fails. `call` gets the list (as the callback context) and an error buffer with its length.
fn named_tensors(call: impl FnOnce(*mut c_void, *mut c_char, usize) -> i32) -> Result<Vec<(String, Tensor)>> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut err = [0u8; 512];
    let rc = call(&mut out as *mut _ as *mut c_void, err.as_mut_ptr() as *mut c_char, err.len());
    if rc != 0 {
        return Err(Error::other(err_text(&err)));
    }
    Ok(out)
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
    // SAFETY: ctx is the &mut Vec passed below; name is NUL-terminated; mean, var (and tracked
    // when non-null) are new at::Tensor* whose ownership passes to tch Tensors.
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

/// The module's BatchNorm layers that track running statistics, in module order.
pub fn batchnorm_layers(m: &CModule, first_param: &Tensor) -> Result<Vec<BatchNormLayer>> {
    let ptr = module_ptr(m, first_param)?;
    let mut out: Vec<BatchNormLayer> = Vec::new();
    let mut err = [0u8; 512];
    // SAFETY: ptr was verified; the callback receives &mut out as its context.
    let rc = unsafe {
        losscape_batchnorm_layers(
            ptr,
            &mut out as *mut _ as *mut c_void,
            collect_batchnorm,
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if rc != 0 {
        return Err(Error::other(err_text(&err)));
    }
    Ok(out)
}

/// Put the BatchNorm layers of the module alone in training mode (`on`) or eval mode.
pub fn set_batchnorm_training(m: &CModule, first_param: &Tensor, on: bool) -> Result<()> {
    let ptr = module_ptr(m, first_param)?;
    let mut err = [0u8; 512];
    // SAFETY: ptr was verified.
    let rc = unsafe { losscape_set_batchnorm_training(ptr, on as i32, err.as_mut_ptr() as *mut c_char, err.len()) };
    if rc != 0 {
        return Err(Error::other(err_text(&err)));
    }
    Ok(())
}
