//! The run directory on disk: atomic files and locks, .npy arrays, the typed run record
//! (config.json, the shard files, meta.json) and each task's progress. Nothing here evaluates
//! anything: the engine and the commands write through it, `plot` and `merge` read through it.

pub mod atomic;
pub mod npy;
pub mod record;
pub mod shards;
