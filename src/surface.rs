//! The `surface` command: random (or given) directions around the model's own parameters,
//! θ* + αδ + βη over a 1-D or 2-D grid. Everything that can be wrong with the input is checked
//! before the run directory is touched.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::data::DataSpec;
use crate::directions::{self, Ignore, Norm};
use crate::eval::Perturber;
use crate::grid::{Axis, Grid, Spacing};
use crate::output::RunDir;
use crate::run::{self, EvalOptions, GridSpec, Session};

pub use crate::run::default_batch_size;

/// Everything a `surface` run needs, validated and typed.
#[derive(Debug, Clone)]
pub struct SurfaceConfig {
    pub model: PathBuf,
    pub grid: GridSpec,
    pub norm: Norm,
    pub ignore: Ignore,
    pub seed: i64,
    /// Reuse these directions instead of drawing new ones.
    pub directions: Option<PathBuf>,
    pub eval: EvalOptions,
}

impl SurfaceConfig {
    /// Defaults for everything but the model, data, x axis and output.
    pub fn new(model: impl Into<PathBuf>, data: DataSpec, x: Axis, out: impl Into<PathBuf>) -> SurfaceConfig {
        SurfaceConfig {
            model: model.into(),
            grid: GridSpec { x, y: None, spacing: Spacing::Linear },
            norm: Norm::Filter,
            ignore: Ignore::Biasbn,
            seed: 0,
            directions: None,
            eval: EvalOptions::new(data, out),
        }
    }
}

/// What a finished run computed (also on disk in the run directory).
#[derive(Debug)]
pub struct Surface {
    pub grid: Grid,
    /// Row-major [ny, nx] (or [nx]).
    pub loss: Vec<f32>,
    pub acc: Vec<f32>,
    pub meta: Value,
}

pub fn run(cfg: &SurfaceConfig) -> Result<Surface> {
    let s = Session::open(&cfg.model, &cfg.eval)?;
    let mut ev = s.evaluator()?;
    let grid = cfg.grid.grid();
    let two = cfg.grid.y.is_some();
    let (dx, dy) = match &cfg.directions {
        Some(p) => {
            let (dx, dy) = directions::load(p, &s.model.params)?;
            if two && dy.is_none() {
                bail!("directions {}: holds x.* only, but --y asks for a 2-D grid", p.display());
            }
            (dx, if two { dy } else { None })
        }
        None => directions::random(&s.model.params, cfg.seed, cfg.norm, cfg.ignore, two),
    };

    let mut dir = RunDir::create(&cfg.eval.out, cfg.eval.overwrite)?;
    directions::save(&dir.file("directions.safetensors"), &dx, dy.as_ref())?;
    let perturber = Perturber::new(&s.model, &dx, dy.as_ref());
    let check = s.prepare(&mut ev)?;
    let v = run::evaluate_grid(&s, &mut ev, &perturber, &grid)?;
    drop(perturber);
    run::write_grid(&mut dir, &s, &grid, &v)?;

    let layout = if two {
        "loss[j, i] = L(theta + x[i]*dx + y[j]*dy): rows are y, columns are x (meshgrid 'xy')"
    } else {
        "loss[i] = L(theta + x[i]*dx)"
    };
    let mut meta = run::common_meta("surface", &s, &ev, &cfg.grid, &grid, &v, check, layout);
    meta["grid"]["point"] = json!("each point formed from the pristine parameters: theta + x*dx + y*dy");
    meta.insert(
        "directions".into(),
        json!({
            "file": "directions.safetensors",
            "source": match &cfg.directions { Some(p) => json!(p), None => json!("random") },
            "seed": if cfg.directions.is_none() { json!(cfg.seed) } else { json!(null) },
            "norm": if cfg.directions.is_none() { json!(cfg.norm) } else { json!(null) },
            "ignore": if cfg.directions.is_none() { json!(cfg.ignore) } else { json!(null) },
            "x_norm": dx.norm(),
            "y_norm": dy.as_ref().map(|d| d.norm()),
            "cos_xy": dy.as_ref().map(|dy| dx.cosine(dy)),
        }),
    );
    let meta = Value::Object(meta);
    dir.commit(&meta)?;
    Ok(Surface { grid, loss: v.loss, acc: v.acc, meta })
}
