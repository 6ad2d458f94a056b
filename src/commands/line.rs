//! `line`: θ(α) = (1 − α)·θ_A + α·θ_B between two checkpoints (parameters and BatchNorm
//! statistics), computed with lerp, so that α = 0 and α = 1 are the two checkpoints exactly.

use std::path::{Path, PathBuf};

use crate::commands::describe;
use crate::commands::run::{self, Establish, Outcome, Task};
use crate::engine::session::{Session, Setup};
use crate::engine::sweep::Observer;
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::{self, State};
use crate::inputs::model::sha256_file;
use crate::space::directions::{self, Direction};
use crate::space::grid::{Axis, GridSpec, Spacing};
use crate::store::record::{Description, LineMeta, Motion, Plan, RunKind, Source, StateMeta};

#[derive(Debug, Clone)]
pub struct LineConfig {
    pub from: PathBuf,
    pub to: PathBuf,
    pub arch: Option<PathBuf>,
    pub x: Axis,
    pub setup: Setup,
    pub task: Task,
}

/// The TorchScript architecture: `arch`, else `fallback` when it is TorchScript itself.
pub fn arch_of(arch: Option<&Path>, fallback: &Path) -> Result<PathBuf> {
    checkpoint::arch_file(arch, fallback)?.ok_or_else(|| Error::Needed {
        setting: Setting::Arch,
        why: format!(
            "{} is a state dict, which needs the TorchScript model it belongs to (e.g. from models/export.py)",
            fallback.display()
        ),
    })
}

/// b − a over every tensor of the state, named as the state is.
pub fn difference(a: &State, b: &State) -> Direction {
    Direction {
        tensors: a.names.iter().zip(a.tensors.iter().zip(&b.tensors)).map(|(n, (x, y))| (n.clone(), y - x)).collect(),
    }
}

/// ‖B − A‖ of the difference `d` of the checkpoints `from` and `to`; identical ones are an error
/// that says why they cannot be used (`why`).
pub fn distinct(d: &Direction, from: &Path, to: &Path, why: &str) -> Result<f64> {
    let distance = d.norm();
    if distance == 0.0 {
        return Err(Error::file(
            Role::Checkpoint,
            to,
            format!("is identical to {} (‖B − A‖ = 0): {why}", from.display()),
        ));
    }
    Ok(distance)
}

pub fn line(cfg: &LineConfig, observer: &mut dyn Observer) -> Result<Outcome> {
    let arch = arch_of(cfg.arch.as_deref(), &cfg.from)?;
    let s = Session::open(&arch, &cfg.setup, cfg.task.devices[0])?;
    let ev = s.evaluator()?;
    let a = State::load(&cfg.from, &s.model)?;
    let b = State::load(&cfg.to, &s.model)?;
    let d = difference(&a, &b);
    let distance = distinct(&d, &cfg.from, &cfg.to, "nothing to interpolate")?;
    let grid = GridSpec::new(cfg.x, None, Spacing::Linear)?;
    let identity = describe::identity(
        RunKind::Line,
        &s,
        &ev,
        Some(sha256_file(&cfg.from, Role::Checkpoint)?),
        Some(grid),
        Source::Line { to_sha256: sha256_file(&cfg.to, Role::Checkpoint)? },
        None,
    );
    let mut description = describe::description(
        &s,
        &ev,
        &grid,
        &describe::layout(false, "(1 - x) * theta_A + x * theta_B"),
        "each point formed from the two checkpoints by lerp (exact at 0 and 1)",
        &cfg.task.argv,
    );
    description.model.origin = Some(cfg.from.clone());
    let state = |p: &Path| StateMeta { path: p.to_path_buf(), coords: None, loss: None, acc: None };
    description.line = Some(LineMeta {
        from: state(&cfg.from),
        to: state(&cfg.to),
        arch: arch.clone(),
        distance,
        interpolated: "parameters and floating-point buffers (BatchNorm running statistics)".into(),
        direction_file: "directions.safetensors (x.<name> = theta_B - theta_A)".into(),
        barriers: Vec::new(),
    });
    let plan = Plan {
        arch,
        origin: Some(cfg.from.clone()),
        motion: Motion::Lerp { to: cfg.to.clone() },
        grid: Some(grid),
        states: vec![cfg.from.clone(), cfg.to.clone()],
        columns: identity.columns.clone(),
        curvature: None,
        sharpness: None,
    };
    let prepare = move |dir: &Path, _: &Session| -> Result<(Plan, Description)> {
        directions::save(&dir.join("directions.safetensors"), &d, None)?;
        Ok((plan, description))
    };
    run::run(&cfg.task, &cfg.setup, s, Establish { identity, keep: None, prepare: Box::new(prepare) }, observer)
}
