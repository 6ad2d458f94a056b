//! The engine: a model and its data on a device ([`session`]), moved in place to the points of a
//! grid ([`mover`], or a BatchNorm-folded copy, [`fold`]), evaluated exactly over the dataset
//! ([`evaluate`]), with BatchNorm statistics re-estimated where asked ([`batchnorm`]); a
//! the Hessian as an operator ([`hessian`]) and the network as the objective of sharpness measures
//! ([`sharpness`]); curve training between two models ([`connect`]); a [`worker`] holds all of it in typed states, and the [`sweep`] deals a run's
//! points (grid points, checkpoints, measurements) to workers.
//! Process-wide libtorch settings are changed by [`settings`] only.

pub mod batchnorm;
pub mod connect;
pub mod device;
pub mod evaluate;
pub mod fold;
pub mod hessian;
pub mod mover;
pub mod session;
pub mod settings;
pub mod sharpness;
pub mod sweep;
pub mod worker;
