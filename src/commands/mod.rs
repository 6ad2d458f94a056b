//! The commands: each turns its typed configuration into a run — `surface` (and `directions`,
//! which only sets one up), `line`, `plane`, `trajectory`, `sharpness`, `connect` — through the one driver in [`run`]
//! (establish the run directory, sweep this task's points, merge), or reads runs back: `merge`,
//! `plot`.

pub mod connect;
pub mod describe;
pub mod hessian;
pub mod line;
pub mod merge;
pub mod plane;
pub mod plot;
pub mod run;
pub mod sharpness;
pub mod surface;
pub mod trajectory;
