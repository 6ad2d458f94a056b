//! losscape: loss landscapes of neural networks (Li et al., NeurIPS 2018) on libtorch.
//!
//! One module per stage of a run, in data-flow order:
//! [`model`] (TorchScript + named parameters) → [`data`] (resident on the device) →
//! [`directions`] (seeded, normalized, keyed by name) → [`grid`] + [`eval`] (θ* + αδ + βη, exact
//! dataset mean) → [`output`] (.npy + meta.json). [`surface`] runs them in order for the
//! `surface` command.

pub mod data;
pub mod device;
pub mod directions;
pub mod eval;
pub mod grid;
pub mod model;
pub mod output;
pub mod progress;
pub mod surface;

/// The first line of a libtorch error (its C++ backtrace follows on later lines), so that every
/// error the user sees is one line.
pub fn torch_msg(e: &tch::TchError) -> String {
    let s = match e {
        tch::TchError::Torch(s) => s.clone(),
        other => other.to_string(),
    };
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("unknown libtorch error").to_string()
}
