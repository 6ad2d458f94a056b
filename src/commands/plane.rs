//! `plane`: θ_A + α(θ_B − θ_A) + β(θ_C − θ_A) through three checkpoints (parameters and
//! BatchNorm statistics), optionally with the second axis made orthogonal to the first;
//! meta.json records where A, B and C sit in plane coordinates and each one's own loss.

use std::path::{Path, PathBuf};

use crate::commands::describe;
use crate::commands::line::{arch_of, difference};
use crate::commands::run::{self, Establish, Outcome, Task};
use crate::engine::session::{Session, Setup};
use crate::engine::sweep::Observer;
use crate::error::{Error, Result, Role};
use crate::inputs::checkpoint::State;
use crate::inputs::model::sha256_file;
use crate::space::directions::{self, Direction};
use crate::space::grid::GridSpec;
use crate::store::record::{Description, Meta, Motion, Plan, PlaneCurve, PlaneMeta, RunKind, Source, StateMeta};

#[derive(Debug, Clone)]
pub struct PlaneConfig {
    pub models: [PathBuf; 3],
    pub arch: Option<PathBuf>,
    pub grid: GridSpec,
    pub orthogonalize: bool,
    /// A connect run whose curve runs through the three models: drawn on the plane.
    pub curve: Option<PathBuf>,
    pub setup: Setup,
    pub task: Task,
}

/// Least-squares coordinates (u, v) of `w` on the span of `dx`, `dy`.
fn coordinates(w: &Direction, dx: &Direction, dy: &Direction) -> [f64; 2] {
    let (a, b, c) = (dx.dot(dx), dx.dot(dy), dy.dot(dy));
    let (p, q) = (dx.dot(w), dy.dot(w));
    let det = a * c - b * b;
    [(c * p - b * q) / det, (a * q - b * p) / det]
}

/// The curve of the connect run `run` in the plane of `models` (whose plane coordinates are
/// `coords`): they must be the run's two ends and its bend, in any order.
fn curve_on_plane(run: &Path, models: &[PathBuf; 3], coords: &[[f64; 2]]) -> Result<PlaneCurve> {
    let not = |why: &str| Error::file(Role::RunDir, run, why.to_string());
    let meta = Meta::read(run).map_err(|_| not("is not a complete connect run (no readable meta.json)"))?;
    let c = meta.description.connect.as_ref().ok_or_else(|| not("is not a connect run"))?;
    let sha = |p: &Path| sha256_file(p, Role::Checkpoint);
    let here: Vec<String> = models.iter().map(|m| sha(m)).collect::<Result<_>>()?;
    let mut at = [0usize; 3];
    for (k, (what, p)) in
        [("A", c.from.path.clone()), ("the bend", run.join(&c.bend)), ("B", c.to.path.clone())].into_iter().enumerate()
    {
        let want = sha(&p)?;
        at[k] = here.iter().position(|h| *h == want).ok_or_else(|| {
            not(&format!("its curve does not run through these models: none of them is {what} ({})", p.display()))
        })?;
    }
    let path = (0..=100)
        .map(|i| {
            let w = c.curve.weights(i as f64 / 100.0);
            let xy = |d: usize| (0..3).map(|k| w[k] * coords[at[k]][d]).sum::<f64>();
            [xy(0), xy(1)]
        })
        .collect();
    Ok(PlaneCurve { run: run.to_path_buf(), curve: c.curve, bend: at[1], path })
}

/// The plane's axes dx = θ_B − θ_A and dy = θ_C − θ_A (Gram–Schmidt against dx with
/// `orthogonalize`), and their cosine; refused when B or C is A, or C is on the line AB.
fn plane_axes(cfg: &PlaneConfig, states: &[State; 3]) -> Result<(Direction, Direction, f64)> {
    let [pa, pb, pc] = &cfg.models;
    let dx = difference(&states[0], &states[1]);
    let mut dy = difference(&states[0], &states[2]);
    for (d, p) in [(&dx, pb), (&dy, pc)] {
        if d.norm() == 0.0 {
            return Err(Error::file(Role::Checkpoint, p, format!("is identical to {} (a zero axis)", pa.display())));
        }
    }
    let c_on_x = dx.dot(&dy) / dx.dot(&dx);
    if cfg.orthogonalize {
        for ((_, y), (_, x)) in dy.tensors.iter_mut().zip(&dx.tensors) {
            *y = &*y - x * c_on_x;
        }
    }
    let cos = dx.cosine(&dy);
    if cos.is_nan() || cos.abs() >= 1.0 - 1e-9 || dy.norm() <= 1e-9 * dx.norm() {
        return Err(Error::file(
            Role::Checkpoint,
            pc,
            format!("lies on the line through {} and {}: no plane", pa.display(), pb.display()),
        ));
    }
    Ok((dx, dy, cos))
}

pub fn plane(cfg: &PlaneConfig, observer: &mut dyn Observer) -> Result<Outcome> {
    let [pa, pb, pc] = &cfg.models;
    let arch = arch_of(cfg.arch.as_deref(), pa)?;
    let s = Session::open(&arch, &cfg.setup, cfg.task.devices[0])?;
    let ev = s.evaluator()?;
    let states = [State::load(pa, &s.model)?, State::load(pb, &s.model)?, State::load(pc, &s.model)?];
    let (dx, dy, cos) = plane_axes(cfg, &states)?;
    let coords: Vec<[f64; 2]> = states.iter().map(|st| coordinates(&difference(&states[0], st), &dx, &dy)).collect();
    let curve = cfg.curve.as_deref().map(|run| curve_on_plane(run, &cfg.models, &coords)).transpose()?;
    let sha = |p: &Path| sha256_file(p, Role::Checkpoint);
    let identity = describe::identity(
        RunKind::Plane,
        &s,
        &ev,
        Some(sha(pa)?),
        Some(cfg.grid),
        Source::Plane { b_sha256: sha(pb)?, c_sha256: sha(pc)?, orthogonalize: cfg.orthogonalize },
        None,
    );
    let mut description = describe::description(
        &s,
        &ev,
        &cfg.grid,
        &describe::layout(true, "theta_A + x * dx + y * dy"),
        "each point formed from the pristine origin: theta_A + x*dx + y*dy",
        &cfg.task.argv,
    );
    description.model.origin = Some(pa.clone());
    let state =
        |i: usize, p: &Path| StateMeta { path: p.to_path_buf(), coords: Some(coords[i]), loss: None, acc: None };
    description.plane = Some(PlaneMeta {
        a: state(0, pa),
        b: state(1, pb),
        c: state(2, pc),
        arch: arch.clone(),
        orthogonalized: cfg.orthogonalize,
        dx: "theta_B - theta_A".into(),
        dy: if cfg.orthogonalize {
            "(theta_C - theta_A) minus its projection on dx (Gram-Schmidt)".into()
        } else {
            "theta_C - theta_A".into()
        },
        x_norm: dx.norm(),
        y_norm: dy.norm(),
        cos_xy: cos,
        moved: "parameters and floating-point buffers (BatchNorm running statistics)".into(),
        curve,
    });
    let plan = Plan {
        arch,
        origin: Some(pa.clone()),
        motion: Motion::Affine,
        grid: Some(cfg.grid),
        states: cfg.models.to_vec(),
        columns: identity.columns.clone(),
        curvature: None,
        sharpness: None,
    };
    let prepare = move |dir: &Path, _: &Session| -> Result<(Plan, Description)> {
        directions::save(&dir.join(crate::store::files::DIRECTIONS), &dx, Some(&dy))?;
        Ok((plan, description))
    };
    run::run(&cfg.task, &cfg.setup, s, Establish { identity, keep: None, prepare: Box::new(prepare) }, observer)
}
