//! Safe wrappers over src/ffi/shim.cpp: the libtorch calls tch 0.24 does not expose (TF32
//! switches, a TorchScript module's buffers, reading `torch.save` files).

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;

use anyhow::{bail, Result};
use tch::{CModule, Tensor};

type NamedTensorCb = extern "C" fn(*mut c_void, *const c_char, *mut c_void);

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
    crate::clean(&String::from_utf8_lossy(&buf[..end]))
}

/// Allow or forbid TF32 for CUDA float32 convolutions and matmuls (process-wide).
pub fn set_tf32(on: bool) -> Result<()> {
    // SAFETY: a plain C function that catches all C++ exceptions.
    if unsafe { losscape_set_tf32(on as i32) } != 0 {
        bail!("libtorch refused to {} TF32", if on { "enable" } else { "disable" });
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
        bail!("internal: cannot reach the TorchScript module behind tch's CModule");
    }
    Ok(ptr)
}

/// The module's buffers (BatchNorm running statistics, ...), sharing its storage.
pub fn named_buffers(m: &CModule, first_param: &Tensor) -> Result<Vec<(String, Tensor)>> {
    let ptr = module_ptr(m, first_param)?;
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut err = [0u8; 512];
    // SAFETY: ptr was verified; collect matches the callback signature; err is writable.
    let rc = unsafe {
        losscape_module_named_buffers(
            ptr,
            &mut out as *mut _ as *mut c_void,
            collect,
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if rc != 0 {
        bail!("cannot list the module's buffers: {}", err_text(&err));
    }
    Ok(out)
}

/// Every tensor of a Python `torch.save` zip file, named by its dotted key path.
pub fn torch_load(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let c = CString::new(path.to_string_lossy().as_bytes())?;
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut err = [0u8; 512];
    // SAFETY: c is NUL-terminated; collect matches the callback signature; err is writable.
    let rc = unsafe {
        losscape_torch_load(
            c.as_ptr(),
            &mut out as *mut _ as *mut c_void,
            collect,
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if rc != 0 {
        bail!("{}", err_text(&err));
    }
    Ok(out)
}
