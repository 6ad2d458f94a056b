//! losscape: loss landscapes of neural networks (Li et al., NeurIPS 2018) on libtorch.
//!
//! One module per stage of a run, in data-flow order:
//! [`model`] (TorchScript + named parameters) → [`data`] (resident on the device) →
//! [`directions`] (seeded, normalized, keyed by name) → [`grid`] + [`eval`] (θ* + αδ + βη, exact
//! dataset mean) → [`output`] (.npy + meta.json). [`surface`] runs them in order for the
//! `surface` command.

pub mod checkpoint;
pub mod checkpoints;
pub mod data;
pub mod device;
pub mod directions;
pub mod eval;
pub mod ffi;
pub mod fold;
pub mod grid;
pub mod model;
pub mod output;
pub mod pca;
pub mod plot;
pub mod precision;
pub mod progress;
pub mod run;
pub mod shard;
pub mod store;
pub mod surface;

/// One line of a libtorch error, so that every error the user sees is one line: the first line
/// (a C++ backtrace follows it), or, when the TorchScript interpreter wrapped the error in its
/// traceback, the line naming the original exception (`RuntimeError: ...`).
pub fn torch_msg(e: &tch::TchError) -> String {
    let s = match e {
        tch::TchError::Torch(s) => s.clone(),
        other => other.to_string(),
    };
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if s.contains("failed in the TorchScript interpreter") {
        let is_exception =
            |l: &&&str| l.split_once(": ").is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '));
        if let Some(l) = lines.iter().rev().find(is_exception) {
            return l.to_string();
        }
    }
    clean(lines.first().copied().unwrap_or("unknown libtorch error"))
}

/// A libtorch message without the boilerplate libtorch appends to zip-reader errors.
pub fn clean(msg: &str) -> String {
    msg.split(". This is an internal miniz error").next().unwrap_or(msg).trim().to_string()
}
