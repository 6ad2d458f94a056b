//! losscape's integration tests: one test binary (every test binary links libtorch). Fixtures
//! are made at test time by the committed tests/fixtures.py, which also computes the PyTorch
//! reference values that losscape is checked against. CPU only; nothing here is timed.

mod common;

mod batchnorm;
mod bench;
mod checkpoints;
mod cli;
mod connect;
mod curvature;
mod directions;
mod models;
mod official;
mod plots;
mod sampling;
mod shards;
mod sharpness;
mod surface;
mod tokens;
