//! losscape: loss landscapes of neural networks (Li et al., NeurIPS 2018) on libtorch.
//!
//! Layers, each depending only on those below it (ARCHITECTURE.md):
//!
//! - [`cli`]: the command line — clap arguments, typed plans, wording of errors, progress.
//! - [`commands`]: surface, directions, line, plane, trajectory, merge, plot.
//! - [`engine`]: a model and its data on a device, moved to grid points and evaluated; the sweep.
//! - [`inputs`] (model, checkpoints, data), [`space`] (grids, directions, PCA, shards),
//!   [`store`] (the run directory and its typed record), [`plot`] (pictures from saved files).
//! - [`options`], [`error`], [`ffi`]: the vocabulary, the errors, the libtorch shim.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod inputs;
pub mod options;
pub mod plot;
pub mod space;
pub mod store;

pub use error::{Error, Result};
