//! The `surface` command from start to end: model → data → directions → evaluation over the
//! grid → outputs. Everything that can be wrong with the input is checked before the run
//! directory is touched.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;
use tch::Device;

use crate::data::{DataSpec, Dataset};
use crate::device::{self, DeviceSpec};
use crate::directions::{self, Ignore, Norm};
use crate::eval::{Evaluator, LossKind, Perturber};
use crate::grid::{Axis, Grid, Spacing};
use crate::model::Model;
use crate::output::{write_npy, RunDir};
use crate::progress::Progress;

/// Everything a `surface` run needs, validated and typed.
#[derive(Debug, Clone)]
pub struct SurfaceConfig {
    pub model: PathBuf,
    pub data: DataSpec,
    pub x: Axis,
    /// None: a 1-D curve.
    pub y: Option<Axis>,
    pub spacing: Spacing,
    pub norm: Norm,
    pub ignore: Ignore,
    pub seed: i64,
    /// Reuse these directions instead of drawing new ones.
    pub directions: Option<PathBuf>,
    /// None: cross-entropy for integer labels, MSE for float targets.
    pub loss: Option<LossKind>,
    /// None: 4096 on CUDA, 64 on CPU.
    pub batch_size: Option<usize>,
    /// channels_last weights and resident images. None: on (faster on CUDA and on CPU, measured).
    pub channels_last: Option<bool>,
    pub device: DeviceSpec,
    pub out: PathBuf,
    pub overwrite: bool,
    pub quiet: bool,
    /// The command line, recorded in meta.json.
    pub argv: Vec<String>,
}

impl SurfaceConfig {
    /// Defaults for everything but the model, data, x axis and output.
    pub fn new(model: impl Into<PathBuf>, data: DataSpec, x: Axis, out: impl Into<PathBuf>) -> SurfaceConfig {
        SurfaceConfig {
            model: model.into(),
            data,
            x,
            y: None,
            spacing: Spacing::Linear,
            norm: Norm::Filter,
            ignore: Ignore::Biasbn,
            seed: 0,
            directions: None,
            loss: None,
            batch_size: None,
            channels_last: None,
            device: DeviceSpec::Auto,
            out: out.into(),
            overwrite: false,
            quiet: true,
            argv: Vec::new(),
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
    pub meta: serde_json::Value,
}

/// Measured: 4096 is within 2% of the best on an H100 for ResNet-56 and VGG-9; on a 2-core CPU,
/// batches of 32..64 run ~2x faster than 512 (cache-sized activations). See BENCHMARKS.md.
pub fn default_batch_size(dev: Device) -> usize {
    if dev.is_cuda() {
        4096
    } else {
        64
    }
}

pub fn run(cfg: &SurfaceConfig) -> Result<Surface> {
    let t_start = Instant::now();
    let dev = cfg.device.resolve()?;
    RunDir::check(&cfg.out, cfg.overwrite)?;
    if dev.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let grid = Grid::new(&cfg.x, cfg.y.as_ref(), cfg.spacing);
    let mut model = Model::load(&cfg.model, dev)?;
    let mut data = Dataset::load(&cfg.data, dev)?;
    let channels_last = cfg.channels_last.unwrap_or(true);
    if channels_last {
        model.to_channels_last()?;
        data.to_channels_last();
    }
    if let Some(l) = cfg.data.limit {
        if l > data.available && !cfg.quiet {
            eprintln!("losscape: --limit {l} exceeds the {} samples of {}; using all", data.available, data.path.display());
        }
    }
    let batch_size = cfg.batch_size.unwrap_or_else(|| default_batch_size(dev));
    let evaluator = Evaluator::new(&model, &data, cfg.loss, batch_size)?;
    let two = cfg.y.is_some();
    let (dx, dy) = match &cfg.directions {
        Some(p) => {
            let (dx, dy) = directions::load(p, &model.params)?;
            if two && dy.is_none() {
                bail!("directions {}: holds x.* only, but --y asks for a 2-D grid", p.display());
            }
            (dx, if two { dy } else { None })
        }
        None => directions::random(&model.params, cfg.seed, cfg.norm, cfg.ignore, two),
    };
    let cos = dy.as_ref().map(|dy| dx.cosine(dy));

    let mut run_dir = RunDir::create(&cfg.out, cfg.overwrite)?;
    directions::save(&run_dir.file("directions.safetensors"), &dx, dy.as_ref())?;
    write_npy(&run_dir.file("x.npy"), &[grid.x.len() as u64], &grid.x)?;
    if let Some(y) = &grid.y {
        write_npy(&run_dir.file("y.npy"), &[y.len() as u64], y)?;
    }

    let perturber = Perturber::new(&model, &dx, dy.as_ref());
    evaluator.warm_up(if dev.is_cuda() { 3 } else { 1 })?;
    let t_eval = Instant::now();
    let mut progress = Progress::new(grid.len(), data.n, cfg.quiet);
    let mut loss = Vec::with_capacity(grid.len());
    let mut acc = Vec::with_capacity(grid.len());
    for k in 0..grid.len() {
        let (a, b) = grid.point(k);
        perturber.set(a, b);
        let v = evaluator.evaluate()?;
        loss.push(v.loss as f32);
        acc.push(v.acc as f32);
        progress.point_done(v.loss);
    }
    let moving = perturber.moving();
    perturber.restore();
    drop(perturber);
    device::synchronize(dev);
    let eval_secs = t_eval.elapsed().as_secs_f64();
    progress.finish();

    let shape = grid.shape();
    write_npy(&run_dir.file("loss.npy"), &shape, &loss)?;
    write_npy(&run_dir.file("acc.npy"), &shape, &acc)?;
    let images = (grid.len() * data.n) as f64;
    let meta = json!({
        "schema_version": 1,
        "kind": "surface",
        "tool": {"name": "losscape", "version": env!("CARGO_PKG_VERSION")},
        "argv": cfg.argv,
        "model": {"path": cfg.model, "sha256": model.sha256, "parameters": model.num_params(),
                  "parameter_tensors": model.params.len(), "perturbed_tensors": moving},
        "data": {
            "path": data.path, "format": data.format, "split": data.split, "n": data.n,
            "available": data.available, "subset": "first n samples in file order",
            "targets": data.targets, "sample_shape": data.sample_shape(), "normalization": data.normalization,
        },
        "loss": evaluator.loss,
        "directions": {
            "file": "directions.safetensors",
            "source": match &cfg.directions { Some(p) => json!(p), None => json!("random") },
            "seed": if cfg.directions.is_none() { json!(cfg.seed) } else { json!(null) },
            "norm": if cfg.directions.is_none() { json!(cfg.norm) } else { json!(null) },
            "ignore": if cfg.directions.is_none() { json!(cfg.ignore) } else { json!(null) },
            "x_norm": dx.norm(),
            "y_norm": dy.as_ref().map(|d| d.norm()),
            "cos_xy": cos,
        },
        "grid": {
            "dims": if two { 2 } else { 1 },
            "x": cfg.x, "y": cfg.y, "spacing": cfg.spacing,
            "shape": shape,
            "layout": if two { "loss[j, i] = L(theta + x[i]*dx + y[j]*dy): rows are y, columns are x (meshgrid 'xy')" }
                      else { "loss[i] = L(theta + x[i]*dx)" },
            "point": "each point formed from the pristine parameters: theta + x*dx + y*dy",
        },
        "outputs": {"loss": "loss.npy", "acc": "acc.npy", "x": "x.npy", "y": if two { json!("y.npy") } else { json!(null) }},
        "device": device::name(dev),
        "dtype": "float32",
        "tf32_convolutions": dev.is_cuda(),
        "libtorch_version": env!("LOSSCAPE_LIBTORCH_VERSION"),
        "batch_size": batch_size,
        "channels_last": channels_last,
        "loss_min": loss.iter().copied().filter(|v| v.is_finite()).reduce(f32::min),
        "loss_max": loss.iter().copied().filter(|v| v.is_finite()).reduce(f32::max),
        "nonfinite_points": loss.iter().filter(|v| !v.is_finite()).count(),
        "timing": {
            "wall_seconds": t_start.elapsed().as_secs_f64(),
            "eval_seconds": eval_secs,
            "seconds_per_point": eval_secs / grid.len() as f64,
            "images_per_second": images / eval_secs,
        },
    });
    run_dir.commit(&meta)?;
    Ok(Surface { grid, loss, acc, meta })
}
