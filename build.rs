//! Link-time fixes for libtorch (docs/building.md):
//! 1. force `libtorch_cuda.so` into the link even though no symbol of it is referenced directly,
//!    otherwise `--as-needed` drops it and CUDA is silently unavailable at run time;
//! 2. an rpath to the libtorch lib dir, so `target/release/losscape` runs without LD_LIBRARY_PATH;
//! 3. the libtorch version, recorded in every run's meta.json;
//! 4. a small C++ shim (src/ffi/shim.cpp) for the libtorch calls tch does not expose.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/ffi/shim.cpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB");
    let lib = Path::new(&lib);
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());

    // A pip wheel has torch/version.py beside torch/lib; a plain libtorch zip has build-version.
    let version = std::fs::read_to_string(lib.join("../version.py"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim().trim_matches('\'').to_string()))
        })
        .or_else(|| std::fs::read_to_string(lib.join("../build-version")).ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LOSSCAPE_LIBTORCH_VERSION={version}");

    let include = lib.join("../include");
    cc::Build::new()
        .cpp(true)
        .file("src/ffi/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("losscape_ffi");
}
