//! Commands on several checkpoints of one architecture: `line` (linear interpolation between
//! two), `plane` (the plane through three) and `trajectory` (the PCA plane of a training run, with
//! the optimizer's path on it). They share the evaluation engine of `surface` (run.rs); here is
//! only where the origin and the directions come from. Definitions: ../shared/docs/landscape.md.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Tensor};

use crate::checkpoint::{self, State};
use crate::directions::{self, Direction, Ignore};
use crate::eval::Perturber;
use crate::grid::{Axis, Spacing};
use crate::output::{write_npy, RunDir};
use crate::pca;
use crate::run::{self, EvalOptions, GridSpec, Session};
use crate::surface::Surface;

/// The TorchScript file that gives the architecture: `--arch`, else `fallback` when it is
/// TorchScript itself.
fn arch_file(arch: &Option<PathBuf>, fallback: &Path, what: &str) -> Result<PathBuf> {
    if let Some(a) = arch {
        return Ok(a.clone());
    }
    match checkpoint::read(fallback) {
        Ok((checkpoint::Format::Torchscript, _)) => Ok(fallback.to_path_buf()),
        Ok(_) => bail!(
            "{} is a state dict, which needs an architecture: pass --arch M.pt (a TorchScript file of the \
             model, e.g. from models/export.py); {what}",
            fallback.display()
        ),
        Err(e) => Err(e),
    }
}

/// b − a over every tensor of the state, named as the state is.
fn difference(a: &State, b: &State) -> Direction {
    Direction {
        tensors: a.names.iter().zip(a.tensors.iter().zip(&b.tensors)).map(|(n, (x, y))| (n.clone(), y - x)).collect(),
    }
}

/// Least-squares coordinates (u, v) of `w` on the span of `dx`, `dy`.
fn coordinates(w: &Direction, dx: &Direction, dy: &Direction) -> [f64; 2] {
    let (a, b, c) = (dx.dot(dx), dx.dot(dy), dy.dot(dy));
    let (p, q) = (dx.dot(w), dy.dot(w));
    let det = a * c - b * b;
    [(c * p - b * q) / det, (a * q - b * p) / det]
}

fn finish(
    dir: RunDir,
    meta: serde_json::Map<String, Value>,
    grid: crate::grid::Grid,
    v: run::GridValues,
) -> Result<Surface> {
    let meta = Value::Object(meta);
    dir.commit(&meta)?;
    Ok(Surface { grid, loss: v.loss, acc: v.acc, meta })
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct LineConfig {
    pub from: PathBuf,
    pub to: PathBuf,
    pub arch: Option<PathBuf>,
    pub x: Axis,
    pub eval: EvalOptions,
}

/// θ(α) = (1−α)·θ_A + α·θ_B (parameters and BatchNorm statistics) over the x axis. Computed with
/// lerp, so α = 0 and α = 1 are the two checkpoints exactly.
pub fn line(cfg: &LineConfig) -> Result<Surface> {
    let arch = arch_file(&cfg.arch, &cfg.from, "or give a TorchScript --from")?;
    let s = Session::open(&arch, &cfg.eval)?;
    let mut ev = s.evaluator()?;
    let a = State::load(&cfg.from, &s.model)?;
    let b = State::load(&cfg.to, &s.model)?;
    let d = difference(&a, &b);
    if d.norm() == 0.0 {
        bail!(
            "line: {} and {} are identical (‖B − A‖ = 0): nothing to interpolate",
            cfg.from.display(),
            cfg.to.display()
        );
    }
    let spec = GridSpec { x: cfg.x, y: None, spacing: Spacing::Linear };
    let grid = spec.grid();
    let mut dir = RunDir::create(&cfg.eval.out, cfg.eval.overwrite)?;
    directions::save(&dir.file("directions.safetensors"), &d, None)?;
    let p = Perturber::line(&s.model, &a, &b);
    let check = s.prepare(&mut ev, &p)?;
    let v = run::evaluate_grid(&s, &mut ev, &p, &grid)?;
    let ends = run::evaluate_states(&mut ev, &p, &[a, b])?;
    drop(p);
    run::write_grid(&mut dir, &s, &grid, &v)?;
    let mut meta = run::common_meta(
        "line",
        &s,
        &ev,
        &spec,
        &grid,
        &v,
        check,
        "loss[i] = L((1 - x[i]) * theta_A + x[i] * theta_B)",
    );
    meta.insert(
        "line".into(),
        json!({
            "from": {"path": cfg.from, "loss": ends[0].loss, "acc": ends[0].acc},
            "to": {"path": cfg.to, "loss": ends[1].loss, "acc": ends[1].acc},
            "arch": arch,
            "distance": d.norm(),
            "interpolated": "parameters and floating-point buffers (BatchNorm running statistics)",
            "direction_file": "directions.safetensors (x.<name> = theta_B - theta_A)",
        }),
    );
    finish(dir, meta, grid, v)
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct PlaneConfig {
    pub models: [PathBuf; 3],
    pub arch: Option<PathBuf>,
    pub grid: GridSpec,
    pub orthogonalize: bool,
    pub eval: EvalOptions,
}

/// The plane θ_A + α(θ_B − θ_A) + β(θ_C − θ_A) (optionally with the second axis made orthogonal to
/// the first); meta.json records where A, B and C sit in plane coordinates.
pub fn plane(cfg: &PlaneConfig) -> Result<Surface> {
    let [pa, pb, pc] = &cfg.models;
    let arch = arch_file(&cfg.arch, pa, "or give a TorchScript first model")?;
    let s = Session::open(&arch, &cfg.eval)?;
    let mut ev = s.evaluator()?;
    let states = [State::load(pa, &s.model)?, State::load(pb, &s.model)?, State::load(pc, &s.model)?];
    let dx = difference(&states[0], &states[1]);
    let mut dy = difference(&states[0], &states[2]);
    for (d, p) in [(&dx, pb), (&dy, pc)] {
        if d.norm() == 0.0 {
            bail!("plane: {} is identical to {} (a zero axis)", p.display(), pa.display());
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
        bail!("plane: {} lies on the line through {} and {}: no plane", pc.display(), pa.display(), pb.display());
    }
    let grid = cfg.grid.grid();
    let mut dir = RunDir::create(&cfg.eval.out, cfg.eval.overwrite)?;
    directions::save(&dir.file("directions.safetensors"), &dx, Some(&dy))?;
    let points: Vec<[f64; 2]> = states.iter().map(|st| coordinates(&difference(&states[0], st), &dx, &dy)).collect();
    let p = Perturber::affine(&s.model, Some(&states[0]), &dx, Some(&dy));
    let check = s.prepare(&mut ev, &p)?;
    let v = run::evaluate_grid(&s, &mut ev, &p, &grid)?;
    let own = run::evaluate_states(&mut ev, &p, &states)?;
    drop(p);
    run::write_grid(&mut dir, &s, &grid, &v)?;
    let layout = "loss[j, i] = L(theta_A + x[i] * dx + y[j] * dy): rows are y, columns are x (meshgrid 'xy')";
    let mut meta = run::common_meta("plane", &s, &ev, &cfg.grid, &grid, &v, check, layout);
    let named =
        |i: usize, path: &Path| json!({"path": path, "coords": points[i], "loss": own[i].loss, "acc": own[i].acc});
    meta.insert(
        "plane".into(),
        json!({
            "A": named(0, pa), "B": named(1, pb), "C": named(2, pc),
            "arch": arch,
            "orthogonalized": cfg.orthogonalize,
            "dx": "theta_B - theta_A",
            "dy": if cfg.orthogonalize { "(theta_C - theta_A) minus its projection on dx (Gram-Schmidt)" } else { "theta_C - theta_A" },
            "x_norm": dx.norm(), "y_norm": dy.norm(), "cos_xy": cos,
            "moved": "parameters and floating-point buffers (BatchNorm running statistics)",
        }),
    );
    finish(dir, meta, grid, v)
}

// ---------------------------------------------------------------------------------------------

/// The origin of a trajectory's PCA plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The last checkpoint in natural order (the trained model).
    Last,
    File(PathBuf),
}

impl FromStr for Origin {
    type Err = anyhow::Error;
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
    /// None: the path's extent on the first principal axis plus `margin`, `n` points.
    pub x: Option<Axis>,
    pub y: Option<Axis>,
    /// Fraction of the path's extent added on each side.
    pub margin: f64,
    pub n: usize,
    pub eval: EvalOptions,
}

const CHECKPOINT_EXTS: [&str; 5] = ["pt", "pth", "t7", "ckpt", "safetensors"];

/// The checkpoint files of a directory (every file with a checkpoint extension; where one stem has
/// several, the .safetensors one) or of a glob, in natural order (epoch_2 before epoch_10).
pub fn list_checkpoints(spec: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(spec);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        let mut by_stem: std::collections::BTreeMap<String, PathBuf> = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(p).with_context(|| format!("--checkpoints {spec}: cannot list"))? {
            let f = e?.path();
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !f.is_file() || !CHECKPOINT_EXTS.contains(&ext) {
                continue;
            }
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let keep_old =
                by_stem.get(&stem).is_some_and(|old| old.extension().and_then(|e| e.to_str()) == Some("safetensors"));
            if !keep_old {
                by_stem.insert(stem, f);
            }
        }
        by_stem.into_values().collect()
    } else {
        let paths = glob::glob(spec).with_context(|| format!("--checkpoints {spec:?}: not a valid glob pattern"))?;
        paths.filter_map(|r| r.ok()).filter(|f| f.is_file()).collect()
    };
    files.sort_by(|a, b| alphanumeric_sort::compare_path(a, b));
    Ok(files)
}

/// PCA of the trajectory, the path on its top-two plane, and the loss surface there.
pub fn trajectory(cfg: &TrajectoryConfig) -> Result<Surface> {
    let files = list_checkpoints(&cfg.checkpoints)?;
    if files.len() < 3 {
        bail!(
            "trajectory: PCA needs at least 3 checkpoints, found {} in {} ({})",
            files.len(),
            cfg.checkpoints,
            if files.is_empty() {
                "no .pt/.pth/.t7/.ckpt/.safetensors files".to_string()
            } else {
                format!("{:?}", files)
            }
        );
    }
    let last = files.last().expect("3 or more");
    let arch = arch_file(&cfg.arch, last, "or make the last checkpoint TorchScript")?;
    let s = Session::open(&arch, &cfg.eval)?;
    let mut ev = s.evaluator()?;
    let states: Vec<State> = files.iter().map(|f| State::load(f, &s.model)).collect::<Result<_>>()?;
    let origin = match &cfg.origin {
        Origin::Last => states.last().expect("3 or more").tensors.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>(),
        Origin::File(f) => State::load(f, &s.model)?.tensors,
    };
    let origin_state = State {
        path: match &cfg.origin {
            Origin::Last => last.clone(),
            Origin::File(f) => f.clone(),
        },
        format: checkpoint::Format::Safetensors,
        names: states[0].names.clone(),
        tensors: origin,
    };
    // The PCA runs over parameters only (never BatchNorm statistics); biasbn leaves out dim <= 1.
    let nparams = s.model.params.len();
    let include: Vec<bool> = s
        .model
        .state()
        .iter()
        .enumerate()
        .map(|(j, (_, t))| j < nparams && (cfg.ignore == Ignore::Keep || t.dim() > 1))
        .collect();
    let vectors: Vec<Vec<Tensor>> =
        states.iter().map(|st| st.tensors.iter().map(|t| t.shallow_clone()).collect()).collect();
    let pca_device = if s.dev.is_cuda() { s.dev } else { Device::Cpu };
    let pc = pca::pca(&vectors, &origin_state.tensors, &include, pca_device)?;
    let top2 = pc.explained_variance_ratio[0] + pc.explained_variance_ratio.get(1).copied().unwrap_or(0.0);
    if top2 < 0.5 {
        eprintln!(
            "losscape: warning: the top two principal components explain only {:.1}% of the trajectory's variance \
             ({:.1}% + {:.1}%); the plane shows little of the path",
            100.0 * top2,
            100.0 * pc.explained_variance_ratio[0],
            100.0 * pc.explained_variance_ratio.get(1).copied().unwrap_or(0.0)
        );
    }
    let names = &states[0].names;
    let dir_of = |k: usize| Direction {
        tensors: names
            .iter()
            .zip(&pc.components[k])
            .take(nparams)
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
    };
    let (dx, dy) = (dir_of(0), dir_of(1));
    let axis = |k: usize, given: Option<Axis>| -> Result<Axis> {
        if let Some(a) = given {
            return Ok(a);
        }
        let (lo, hi) = pc.coords.iter().fold((0.0f64, 0.0f64), |(lo, hi), c| (lo.min(c[k]), hi.max(c[k])));
        let m = cfg.margin * (hi - lo);
        let (min, max) = (lo - m, hi + m);
        format!("{min}:{max}:{}", cfg.n).parse::<Axis>().context("--n / --margin")
    };
    let spec = GridSpec { x: axis(0, cfg.x)?, y: Some(axis(1, cfg.y)?), spacing: Spacing::Linear };
    let grid = spec.grid();

    let mut dir = RunDir::create(&cfg.eval.out, cfg.eval.overwrite)?;
    directions::save(&dir.file("directions.safetensors"), &dx, Some(&dy))?;
    let p = Perturber::affine(&s.model, Some(&origin_state), &dx, Some(&dy));
    let check = s.prepare(&mut ev, &p)?;
    let v = run::evaluate_grid(&s, &mut ev, &p, &grid)?;
    let path_values = run::evaluate_states(&mut ev, &p, &states)?;
    drop(p);
    run::write_grid(&mut dir, &s, &grid, &v)?;
    let path: Vec<f64> = pc.coords.iter().flat_map(|c| [c[0], c[1]]).collect();
    write_npy(&dir.file("path.npy"), &[files.len() as u64, 2], &path)?;
    let pl: Vec<f32> = path_values.iter().map(|v| v.loss as f32).collect();
    let pa: Vec<f32> = path_values.iter().map(|v| v.acc as f32).collect();
    write_npy(&dir.file("path_loss.npy"), &[files.len() as u64], &pl)?;
    write_npy(&dir.file("path_acc.npy"), &[files.len() as u64], &pa)?;
    let layout = "loss[j, i] = L(theta_origin + x[i] * pc1 + y[j] * pc2): rows are y, columns are x (meshgrid 'xy')";
    let mut meta = run::common_meta("trajectory", &s, &ev, &spec, &grid, &v, check, layout);
    meta["outputs"]["path"] = json!("path.npy");
    meta["outputs"]["path_loss"] = json!("path_loss.npy");
    meta["outputs"]["path_acc"] = json!("path_acc.npy");
    meta.insert(
        "trajectory".into(),
        json!({
            "checkpoints": files,
            "order": "natural sort of the file names",
            "origin": origin_state.path,
            "arch": arch,
            "ignore": cfg.ignore,
            "vectors": "m_i = theta_i - theta_origin over the parameters (biasbn: dim <= 1 left out); PCA mean-centred, via the T x T Gram matrix",
            "explained_variance_ratio": pc.explained_variance_ratio.iter().take(10).collect::<Vec<_>>(),
            "explained_variance_ratio_top2": top2,
            "path": "path.npy [T, 2]: least-squares coordinates of every m_i on (pc1, pc2)",
            "path_loss": "path_loss.npy [T]: each checkpoint's own loss (parameters and BatchNorm statistics as saved)",
            "margin": cfg.margin,
            "directions": "directions.safetensors: x.<param> = pc1, y.<param> = pc2 (unit vectors, not filter-normalized)",
        }),
    );
    finish(dir, meta, grid, v)
}
