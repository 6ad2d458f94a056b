//! Link-time fixes for libtorch (see ../shared/docs/toolchain.md):
//! 1. force `libtorch_cuda.so` into the link even though no symbol of it is referenced directly,
//!    otherwise `--as-needed` drops it and CUDA is silently unavailable at run time;
//! 2. an rpath to the libtorch lib dir, so `target/release/losscape` runs without LD_LIBRARY_PATH;
//! 3. the libtorch version, recorded in every run's meta.json.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set: no rpath, set LD_LIBRARY_PATH at run time");
        println!("cargo:rustc-env=LOSSCAPE_LIBTORCH_VERSION=unknown");
        return;
    };
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
            s.lines()
                .find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim().trim_matches('\'').to_string()))
        })
        .or_else(|| std::fs::read_to_string(lib.join("../build-version")).ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LOSSCAPE_LIBTORCH_VERSION={version}");
}
