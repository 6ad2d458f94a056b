//! `surface` (and `directions`): θ* + αδ + βη over a 1-D or 2-D grid around a model, δ and η
//! seeded random directions (filter-normalized by default) or ones given in a file.

use std::path::PathBuf;

use tch::Tensor;

use crate::commands::describe;
use crate::commands::run::{self, Establish, Outcome, Task};
use crate::engine::session::{Session, Setup};
use crate::engine::sweep::Observer;
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::State;
use crate::inputs::model::sha256_file;
use crate::options::{Ignore, Norm};
use crate::space::directions::{self, Direction};
use crate::space::grid::GridSpec;
use crate::store::files;
use crate::store::record::{CurvatureSpec, DirectionsMeta, Motion, Plan, RunKind, Source};

/// Everything a `surface` run needs, validated and typed.
#[derive(Debug, Clone)]
pub struct SurfaceConfig {
    /// The model: a TorchScript file, or with `arch` a checkpoint of that architecture.
    pub model: PathBuf,
    /// The TorchScript architecture a checkpoint `model` is applied to.
    pub arch: Option<PathBuf>,
    pub grid: GridSpec,
    pub norm: Norm,
    pub ignore: Ignore,
    pub seed: i64,
    /// Reuse these directions instead of drawing new ones.
    pub directions: Option<PathBuf>,
    /// Also λmax and λmin of the Hessian at every point.
    pub curvature: Option<CurvatureSpec>,
    pub setup: Setup,
    pub task: Task,
}

/// Direction files given with --directions: x (and y for a 2-D grid), and the file's sha256.
type Given = (Direction, Option<Direction>, String);

/// A checkpoint's state (None: the model's own values) and the named parameters it gives.
type Origin = (Option<State>, Vec<(String, Tensor)>);

/// The origin's parameters: the model's own values, or a checkpoint's applied to the
/// architecture (then also that checkpoint's state).
fn origin_parameters(cfg: &SurfaceConfig, s: &Session) -> Result<Origin> {
    let origin = match &cfg.arch {
        Some(_) => Some(State::load(&cfg.model, &s.model)?),
        None => None,
    };
    let theta = match &origin {
        Some(st) => st
            .names
            .iter()
            .zip(&st.tensors)
            .take(s.model.params.len())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        None => s.model.params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
    };
    Ok((origin, theta))
}

/// The directions of a --directions file, checked against the parameters and the grid.
fn given_directions(cfg: &SurfaceConfig, theta: &[(String, Tensor)], two: bool) -> Result<Option<Given>> {
    let Some(p) = &cfg.directions else { return Ok(None) };
    let (dx, dy) = directions::load(p, theta)?;
    if two && dy.is_none() {
        return Err(Error::file(Role::Directions, p, "holds x.* only, but the grid is 2-D"));
    }
    Ok(Some((dx, if two { dy } else { None }, sha256_file(p, Role::Directions)?)))
}

/// Run (or, with `task.prepare_only`, set up) a surface.
pub fn surface(cfg: &SurfaceConfig, observer: &mut dyn Observer) -> Result<Outcome> {
    let arch = cfg.arch.clone().unwrap_or_else(|| cfg.model.clone());
    let s = Session::open(&arch, &cfg.setup, cfg.task.devices[0])?;
    let ev = s.evaluator()?;
    let (origin, theta) = origin_parameters(cfg, &s)?;
    let two = cfg.grid.y.is_some();
    let given = given_directions(cfg, &theta, two)?;
    let source = match &given {
        Some((_, _, sha)) => Source::File { sha256: sha.clone() },
        None => Source::Random { seed: cfg.seed, norm: cfg.norm, ignore: cfg.ignore },
    };
    let origin_sha = match &cfg.arch {
        Some(_) => Some(sha256_file(&cfg.model, Role::Checkpoint)?),
        None => None,
    };
    if cfg.curvature.is_some() && s.precision.is_reduced() {
        return Err(Error::setting(
            Setting::Curvature,
            "",
            format!("Hessian eigenvalues need fp32 or tf32 precision, not {}", s.precision),
        ));
    }
    let identity = describe::identity(RunKind::Surface, &s, &ev, origin_sha, Some(cfg.grid), source, cfg.curvature);
    let point = if origin.is_some() { "theta_checkpoint + x*dx + y*dy" } else { "theta + x*dx + y*dy" };
    let mut description = describe::description(
        &s,
        &ev,
        &cfg.grid,
        &describe::layout(two, point),
        "each point formed from the pristine parameters: origin + x*dx + y*dy",
        &cfg.task.argv,
    );
    description.model.origin = cfg.arch.as_ref().map(|_| cfg.model.clone());
    description.curvature = cfg.curvature;
    let plan = Plan {
        arch: arch.clone(),
        origin: cfg.arch.as_ref().map(|_| cfg.model.clone()),
        motion: Motion::Affine,
        grid: Some(cfg.grid),
        states: Vec::new(),
        columns: identity.columns.clone(),
        curvature: cfg.curvature,
        sharpness: None,
    };
    let prepare = move |dir: &std::path::Path, _: &Session| -> Result<(Plan, crate::store::record::Description)> {
        let (dx, dy): (Direction, Option<Direction>) = match given {
            Some((dx, dy, _)) => (dx, dy),
            None => directions::random(&theta, cfg.seed, cfg.norm, cfg.ignore, two),
        };
        directions::save(&dir.join(files::DIRECTIONS), &dx, dy.as_ref())?;
        description.directions = Some(DirectionsMeta {
            file: files::DIRECTIONS.into(),
            source: cfg.directions.as_ref().map_or("random".into(), |p| p.display().to_string()),
            seed: cfg.directions.is_none().then_some(cfg.seed),
            norm: cfg.directions.is_none().then_some(cfg.norm),
            ignore: cfg.directions.is_none().then_some(cfg.ignore),
            x_norm: dx.norm(),
            y_norm: dy.as_ref().map(Direction::norm),
            cos_xy: dy.as_ref().map(|d| dx.cosine(d)),
        });
        Ok((plan, description))
    };
    if cfg.task.shard.count > 1 && cfg.task.overwrite {
        log::warn!("starting shard {} afresh removes every other shard's progress too", cfg.task.shard);
    }
    run::run(
        &cfg.task,
        &cfg.setup,
        s,
        Establish { identity, keep: cfg.directions.as_deref(), prepare: Box::new(prepare) },
        observer,
    )
}
