//! The run directory on disk: its file names, its life (created, set up under a lock, cleared,
//! complete), atomic files and locks, .npy arrays, the typed run record (config.json, the shard
//! files, meta.json), each task's progress and the merge that assembles a run from its shards; a sharpness run's
//! results, a per-layer curvature table and a connect run's training progress and arrays.
//! Nothing here evaluates anything: the engine and the commands write through it, `plot` and
//! `merge` read through it.

pub mod atomic;
pub mod connect;
pub mod files;
pub mod layers;
pub mod merge;
pub mod npy;
pub mod record;
pub mod rundir;
pub mod shards;
pub mod sharpness;
