//! `trajectory`: the PCA of a training trajectory (m_i = θ_i − θ_origin over the parameters,
//! mean-centred, within a memory budget), the loss on the plane of its top two components, and
//! the optimizer's path on that plane with each checkpoint's own loss.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use tch::Device;

use crate::commands::describe;
use crate::commands::line::arch_of;
use crate::commands::run::{self, Establish, Outcome, Task};
use crate::engine::session::{Session, Setup};
use crate::engine::sweep::Observer;
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::{self, State};
use crate::inputs::model::sha256_file;
use crate::options::Ignore;
use crate::space::directions::{self, Direction};
use crate::space::grid::{Axis, GridSpec, Spacing};
use crate::space::pca;
use crate::store::files;
use crate::store::record::{Description, Motion, Plan, RunKind, Source, PATH_OFF_PLANE_NOTE};

/// The origin of a trajectory's PCA plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The last checkpoint in natural order (the trained model).
    Last,
    File(PathBuf),
}

impl FromStr for Origin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Origin> {
        Ok(if s == "last" { Origin::Last } else { Origin::File(s.into()) })
    }
}

#[derive(Debug, Clone)]
pub struct TrajectoryConfig {
    /// A directory, or a glob pattern.
    pub checkpoints: String,
    pub arch: Option<PathBuf>,
    pub origin: Origin,
    pub ignore: Ignore,
    /// None: the path's extent on that axis plus `margin`, `points_per_axis` points.
    pub x: Option<Axis>,
    pub y: Option<Axis>,
    /// Fraction of the path's extent added on each side.
    pub margin: f64,
    pub points_per_axis: usize,
    /// Checkpoint vectors held at once by the PCA, in MiB.
    pub pca_memory_mb: f64,
    pub setup: Setup,
    pub task: Task,
}

/// An axis over [lo, hi] widened by `margin` of its extent on each side, `n` points.
fn auto_axis(lo: f64, hi: f64, margin: f64, n: usize) -> Result<Axis> {
    let m = margin * (hi - lo);
    Axis::new(lo - m, hi + m, n as i64)
}

/// The checkpoints of the trajectory, in natural order (at least 3).
fn checkpoint_files(cfg: &TrajectoryConfig) -> Result<Vec<PathBuf>> {
    let files = checkpoint::list(&cfg.checkpoints)?;
    if files.len() < 3 {
        let found = if files.is_empty() {
            "no .pt/.pth/.t7/.ckpt/.safetensors files".to_string()
        } else {
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        };
        return Err(Error::setting(
            Setting::Checkpoints,
            &cfg.checkpoints,
            format!("PCA needs at least 3 checkpoints, found {} ({found})", files.len()),
        ));
    }
    Ok(files)
}

pub fn trajectory(cfg: &TrajectoryConfig, observer: &mut dyn Observer) -> Result<Outcome> {
    let files = checkpoint_files(cfg)?;
    let last = files.last().expect("3 or more").clone();
    let arch = arch_of(cfg.arch.as_deref(), &last)?;
    let s = Session::open(&arch, &cfg.setup, cfg.task.devices[0])?;
    let ev = s.evaluator()?;
    let origin_file = match &cfg.origin {
        Origin::Last => last.clone(),
        Origin::File(f) => f.clone(),
    };
    // Every checkpoint must fit the architecture: checked now, before the directory is made.
    for f in &files {
        State::load(f, &s.model)?;
    }
    let shas = files.iter().map(|f| sha256_file(f, Role::Checkpoint)).collect::<Result<Vec<_>>>()?;
    let source = Source::Trajectory {
        checkpoints: shas,
        ignore: cfg.ignore,
        x: cfg.x,
        y: cfg.y,
        margin: cfg.margin,
        points_per_axis: cfg.points_per_axis,
    };
    let origin_sha = sha256_file(&origin_file, Role::Checkpoint)?;
    let identity = describe::identity(RunKind::Trajectory, &s, &ev, Some(origin_sha), None, source, None);
    let columns = identity.columns.clone();
    let prepare = move |dir: &Path, s: &Session| -> Result<(Plan, Description)> {
        let plane = Plane::compute(cfg, &files, &origin_file, s, dir)?;
        let grid = plane.grid(cfg)?;
        let mut d = describe::description(
            s,
            &ev,
            &grid,
            &describe::layout(true, "theta_origin + x * pc1 + y * pc2"),
            "each point formed from the pristine origin: theta_origin + x*pc1 + y*pc2",
            &cfg.task.argv,
        );
        d.model.origin = Some(origin_file.clone());
        describe::trajectory_outputs(&mut d);
        d.trajectory = Some(describe::trajectory_meta(describe::TrajectoryRun {
            checkpoints: &files,
            origin: &origin_file,
            arch: &s.model.path,
            ignore: cfg.ignore,
            margin: cfg.margin,
            pca_memory_mb: cfg.pca_memory_mb,
            pca: &plane.pca,
            seconds: plane.seconds,
            device: plane.device,
        }));
        let plan = Plan {
            arch: s.model.path.clone(),
            origin: Some(origin_file.clone()),
            motion: Motion::Affine,
            grid: Some(grid),
            states: files.clone(),
            columns,
            curvature: None,
            sharpness: None,
        };
        Ok((plan, d))
    };
    run::run(&cfg.task, &cfg.setup, s, Establish { identity, keep: None, prepare: Box::new(prepare) }, observer)
}

/// The PCA plane of the trajectory, its directions and path residuals written into the run.
struct Plane {
    pca: pca::Pca,
    seconds: f64,
    device: Device,
}

impl Plane {
    /// The PCA of m_i = θ_i − θ_origin over the parameters (never BatchNorm statistics; biasbn
    /// leaves out dim ≤ 1), within the memory budget; writes directions.safetensors (pc1, pc2) and
    /// path_residual.npy, and warns when the plane shows little of the path.
    fn compute(
        cfg: &TrajectoryConfig,
        files: &[PathBuf],
        origin_file: &Path,
        s: &Session,
        dir: &Path,
    ) -> Result<Plane> {
        let origin = State::load(origin_file, &s.model)?;
        let nparams = s.model.params.len();
        let include: Vec<bool> = origin
            .tensors
            .iter()
            .enumerate()
            .map(|(j, t)| j < nparams && (cfg.ignore == Ignore::Keep || t.dim() > 1))
            .collect();
        let device = if s.dev.is_cuda() { s.dev } else { Device::Cpu };
        let t0 = Instant::now();
        let mut load = |i: usize| State::load(&files[i], &s.model).map(|st| st.tensors);
        let budget = (cfg.pca_memory_mb * 1024.0 * 1024.0) as u64;
        let pc = pca::pca(&mut load, files.len(), &origin.tensors, &include, budget, device)?;
        let seconds = t0.elapsed().as_secs_f64();
        let ratio = |k: usize| pc.explained_variance_ratio.get(k).copied().unwrap_or(0.0);
        let top2 = ratio(0) + ratio(1);
        if top2 < 0.5 {
            log::warn!(
                "the top two principal components explain only {:.1}% of the trajectory's variance \
                 ({:.1}% + {:.1}%); the plane shows little of the path",
                100.0 * top2,
                100.0 * ratio(0),
                100.0 * ratio(1)
            );
        }
        let dir_of = |k: usize| Direction {
            tensors: origin
                .names
                .iter()
                .zip(&pc.components[k])
                .take(nparams)
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        };
        directions::save(&dir.join(files::DIRECTIONS), &dir_of(0), Some(&dir_of(1)))?;
        crate::store::npy::write(&dir.join(files::PATH_RESIDUAL), &[pc.residuals.len() as u64], &pc.residuals)?;
        if pc.off_plane > PATH_OFF_PLANE_NOTE {
            log::warn!(
                "the path leaves the PCA plane by up to {:.0}% of its extent (largest distance from the origin): \
                 the drawn path is a projection (path_residual.npy)",
                100.0 * pc.off_plane
            );
        }
        Ok(Plane { pca: pc, seconds, device })
    }

    /// The grid: the axes given, else the path's extent on each component plus the margin.
    fn grid(&self, cfg: &TrajectoryConfig) -> Result<GridSpec> {
        let extent =
            |k: usize| self.pca.coords.iter().fold((0.0f64, 0.0f64), |(lo, hi), c| (lo.min(c[k]), hi.max(c[k])));
        let axis = |k: usize, given: Option<Axis>| -> Result<Axis> {
            match given {
                Some(a) => Ok(a),
                None => {
                    let (lo, hi) = extent(k);
                    auto_axis(lo, hi, cfg.margin, cfg.points_per_axis)
                }
            }
        };
        GridSpec::new(axis(0, cfg.x)?, Some(axis(1, cfg.y)?), Spacing::Linear)
    }
}
