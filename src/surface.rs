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
use crate::precision::{self, Precision};
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
    /// None: 4096 on CUDA, 64 on CPU; halved on out-of-memory.
    pub batch_size: Option<usize>,
    /// None: tf32 on CUDA, fp32 on CPU.
    pub precision: Option<Precision>,
    /// Stop a point's pass once its partial mean proves the loss exceeds this.
    pub loss_cap: Option<f64>,
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
            precision: None,
            loss_cap: None,
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
    if let Some(c) = cfg.loss_cap {
        if !(c.is_finite() && c > 0.0) {
            bail!("--loss-cap {c}: must be a positive number");
        }
    }
    let precision = cfg.precision.unwrap_or(Precision::default_for(dev));
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
    let mut evaluator = Evaluator::new(&model, &data, cfg.loss, batch_size)?;
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

    // float32 masters of θ*, δ, η: taken before any cast to a reduced precision.
    let perturber = Perturber::new(&model, &dx, dy.as_ref());
    // TorchScript's profiling executor optimizes a graph on its second or third call per shape.
    let warm_passes = 3;
    let precision_check = set_precision(&model, &mut evaluator, precision, dev, warm_passes)?;
    evaluator.loss_cap = cfg.loss_cap;
    let t_eval = Instant::now();
    let mut progress = Progress::new(grid.len(), data.n, cfg.quiet);
    let mut loss = Vec::with_capacity(grid.len());
    let mut acc = Vec::with_capacity(grid.len());
    let mut capped = Vec::with_capacity(grid.len());
    let mut perturb_secs = 0.0;
    for k in 0..grid.len() {
        let (a, b) = grid.point(k);
        let t = Instant::now();
        perturber.set(a, b);
        device::synchronize(dev);
        perturb_secs += t.elapsed().as_secs_f64();
        let v = evaluator.evaluate_fitting()?;
        loss.push(v.loss as f32);
        acc.push(v.acc as f32);
        capped.push(v.capped as u8);
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
    if cfg.loss_cap.is_some() {
        write_npy(&run_dir.file("capped.npy"), &shape, &capped)?;
    }
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
        "outputs": {"loss": "loss.npy", "acc": "acc.npy", "x": "x.npy", "y": if two { json!("y.npy") } else { json!(null) },
                    "capped": if cfg.loss_cap.is_some() { json!("capped.npy") } else { json!(null) }},
        "loss_cap": cfg.loss_cap.map(|c| json!({
            "cap": c,
            "capped_points": capped.iter().filter(|&&c| c == 1).count(),
            "meaning": "capped[j, i] = 1: the pass stopped early once its partial mean exceeded the cap; loss holds that lower bound and acc is NaN",
        })),
        "device": device::name(dev),
        "precision": precision,
        "dtype": precision.dtype_name(),
        "tf32_convolutions": dev.is_cuda() && precision::tf32_conv(),
        "precision_check": precision_check,
        "libtorch_version": env!("LOSSCAPE_LIBTORCH_VERSION"),
        "batch_size": evaluator.batch_size,
        "channels_last": channels_last,
        "loss_min": loss.iter().copied().filter(|v| v.is_finite()).reduce(f32::min),
        "loss_max": loss.iter().copied().filter(|v| v.is_finite()).reduce(f32::max),
        "nonfinite_points": loss.iter().filter(|v| !v.is_finite()).count(),
        "timing": {
            "wall_seconds": t_start.elapsed().as_secs_f64(),
            "eval_seconds": eval_secs,
            "seconds_per_point": eval_secs / grid.len() as f64,
            "images_per_second": images / eval_secs,
            "perturb_seconds": perturb_secs,
            "perturb_fraction": perturb_secs / eval_secs,
        },
        "peak_host_rss_mb": peak_rss_mb(),
    });
    run_dir.commit(&meta)?;
    Ok(Surface { grid, loss, acc, meta })
}

/// Put the model and evaluator in `precision`, warmed up. For anything but strict fp32 on CUDA (or
/// fp32 on CPU) the centre point is first evaluated in strict fp32, and its deviation returned.
fn set_precision(
    model: &Model,
    ev: &mut Evaluator,
    precision: Precision,
    dev: Device,
    warm_passes: usize,
) -> Result<Option<serde_json::Value>> {
    if dev.is_cuda() {
        precision::set_tf32(false)?;
    }
    let check = precision != Precision::Fp32 && (dev.is_cuda() || precision.is_reduced());
    let reference = if check {
        ev.warm_up_fitting(1)?;
        Some(ev.evaluate_fitting()?)
    } else {
        None
    };
    if dev.is_cuda() && precision != Precision::Fp32 {
        precision::set_tf32(true)?;
    }
    if precision.is_reduced() {
        model.cast(precision.kind())?;
        ev.input_kind = precision.kind();
    }
    ev.warm_up_fitting(warm_passes)?;
    let Some(r) = reference else { return Ok(None) };
    let v = ev.evaluate_fitting()?;
    Ok(Some(json!({
        "reference": "fp32 with TF32 off, at the centre point (theta*)",
        "center_loss_fp32": r.loss,
        "center_loss": v.loss,
        "abs_diff": (v.loss - r.loss).abs(),
        "rel_diff": (v.loss - r.loss).abs() / r.loss.abs(),
        "center_acc_fp32": r.acc,
        "center_acc": v.acc,
    })))
}

/// Peak resident memory of this process (VmHWM), in MiB; None where /proc is not there.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}
