//! What every evaluating command shares: options, opening the model and data on the device,
//! precision set-up and warm-up, the loop over grid points, the output arrays and the common part
//! of meta.json. The commands (`surface`, `line`, `plane`, `trajectory`) differ only in where the
//! origin and the directions come from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use tch::Device;

use crate::checkpoint::State;
use crate::data::{DataSpec, Dataset};
use crate::device::{self, DeviceSpec};
use crate::eval::{Evaluator, LossKind, Perturber, PointValue};
use crate::grid::{Axis, Grid, Spacing};
use crate::model::Model;
use crate::output::{write_npy, RunDir};
use crate::precision::{self, Precision};
use crate::progress::Progress;

/// Options of every command that evaluates losses.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub data: DataSpec,
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
    /// Evaluate a frozen copy of the model with BatchNorm folded into the layers before it, where
    /// that is exact (see `fold.rs`).
    pub fold_batchnorm: bool,
    /// Let cuDNN time its convolution algorithms and keep the fastest (per process).
    pub cudnn_benchmark: bool,
    /// CPU: the folded copy's convolutions on oneDNN tensors (see `ffi::freeze`).
    pub onednn: bool,
    pub device: DeviceSpec,
    pub out: PathBuf,
    pub overwrite: bool,
    pub quiet: bool,
    /// The command line, recorded in meta.json.
    pub argv: Vec<String>,
}

impl EvalOptions {
    /// Defaults for everything but the data and the output directory.
    pub fn new(data: DataSpec, out: impl Into<PathBuf>) -> EvalOptions {
        EvalOptions {
            data,
            loss: None,
            batch_size: None,
            precision: None,
            loss_cap: None,
            channels_last: None,
            fold_batchnorm: true,
            cudnn_benchmark: true,
            onednn: true,
            device: DeviceSpec::Auto,
            out: out.into(),
            overwrite: false,
            quiet: true,
            argv: Vec::new(),
        }
    }
}

/// The axes of a grid as asked for.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridSpec {
    pub x: Axis,
    /// None: a 1-D curve.
    pub y: Option<Axis>,
    pub spacing: Spacing,
}

impl GridSpec {
    pub fn grid(&self) -> Grid {
        Grid::new(&self.x, self.y.as_ref(), self.spacing)
    }
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

/// A model and a dataset loaded on the run's device.
pub struct Session {
    pub dev: Device,
    pub model: Model,
    pub data: Dataset,
    pub channels_last: bool,
    pub precision: Precision,
    pub opts: EvalOptions,
    pub started: Instant,
}

impl Session {
    /// Resolve the device, check the options and the output directory, load model and data.
    pub fn open(model: &Path, opts: &EvalOptions) -> Result<Session> {
        let dev = opts.device.resolve()?;
        RunDir::check(&opts.out, opts.overwrite)?;
        Session::open_on(model, opts, dev)
    }

    /// Load model and data on `dev` (a worker's device), checking the options.
    pub fn open_on(model: &Path, opts: &EvalOptions, dev: Device) -> Result<Session> {
        let started = Instant::now();
        if let Some(c) = opts.loss_cap {
            if !(c.is_finite() && c > 0.0) {
                bail!("--loss-cap {c}: must be a positive number");
            }
        }
        if dev.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(opts.cudnn_benchmark);
        }
        let mut model = Model::load(model, dev)?;
        let mut data = Dataset::load(&opts.data, dev)?;
        let channels_last = opts.channels_last.unwrap_or(true);
        if channels_last {
            model.to_channels_last()?;
            data.to_channels_last();
        }
        if let Some(l) = opts.data.limit {
            if l > data.available && !opts.quiet {
                eprintln!(
                    "losscape: --limit {l} exceeds the {} samples of {}; using all",
                    data.available,
                    data.path.display()
                );
            }
        }
        let precision = opts.precision.unwrap_or(Precision::default_for(dev));
        Ok(Session { dev, model, data, channels_last, precision, opts: opts.clone(), started })
    }

    /// An evaluator of this model on this data (checks the model's output against the targets).
    pub fn evaluator(&self) -> Result<Evaluator<'_>> {
        let bs = self.opts.batch_size.unwrap_or_else(|| default_batch_size(self.dev));
        Evaluator::new(&self.model, &self.data, self.opts.loss, bs)
    }

    /// Put the model in the run's precision, fold BatchNorm (unless told not to) and warm every
    /// batch shape up. Call it after the Perturber is made (its float32 masters come from the
    /// model as loaded) and with the model at the origin. For anything but strict fp32 the origin
    /// is first evaluated in strict fp32, unfolded, and the deviation returned (meta.json
    /// `precision_check`).
    pub fn prepare(&self, ev: &mut Evaluator, p: &Perturber) -> Result<Option<Value>> {
        let (dev, prec) = (self.dev, self.precision);
        if dev.is_cuda() {
            precision::set_tf32(false)?;
        }
        let check = prec != Precision::Fp32 && (dev.is_cuda() || prec.is_reduced());
        let reference = if check {
            ev.warm_up_fitting(1)?;
            Some(ev.evaluate_fitting()?)
        } else {
            None
        };
        if self.opts.fold_batchnorm {
            // Checked in strict fp32, before the cast.
            let sample = self.data.inputs(0, self.data.n.min(4)).to_kind(ev.input_kind);
            p.fold(&sample, self.channels_last, !dev.is_cuda() && self.opts.onednn, self.opts.quiet);
        }
        if dev.is_cuda() && prec != Precision::Fp32 {
            precision::set_tf32(true)?;
        }
        if prec.is_reduced() {
            p.cast_model(prec.kind(), self.opts.quiet)?;
            ev.input_kind = prec.kind();
        }
        // TorchScript's profiling executor optimizes a graph on its second or third call per shape.
        ev.warm_up_fitting(3)?;
        ev.loss_cap = self.opts.loss_cap;
        let Some(r) = reference else { return Ok(None) };
        let v = ev.evaluate_fitting()?;
        Ok(Some(json!({
            "reference": "fp32 with TF32 off, at the origin of the grid",
            "center_loss_fp32": r.loss,
            "center_loss": v.loss,
            "abs_diff": (v.loss - r.loss).abs(),
            "rel_diff": (v.loss - r.loss).abs() / r.loss.abs(),
            "center_acc_fp32": r.acc,
            "center_acc": v.acc,
        })))
    }
}

/// Loss, accuracy and timing of every point of a grid (row-major [ny, nx]).
#[derive(Debug, Clone)]
pub struct GridValues {
    pub loss: Vec<f32>,
    pub acc: Vec<f32>,
    /// 1 where the pass stopped at the loss cap.
    pub capped: Vec<u8>,
    pub eval_secs: f64,
    pub perturb_secs: f64,
    pub moving: usize,
    /// meta.json's `batchnorm_folding`.
    pub fold: Value,
}

/// Move the model to (α, β) and evaluate it there; the synchronized time of the move is added to
/// `perturb_secs` (the per-point overhead that BENCHMARKS.md reports).
pub fn eval_point(
    p: &Perturber,
    ev: &mut Evaluator,
    dev: Device,
    (a, b): (f64, f64),
    perturb_secs: &mut f64,
) -> Result<PointValue> {
    let t = Instant::now();
    p.set(a, b);
    device::synchronize(dev);
    *perturb_secs += t.elapsed().as_secs_f64();
    ev.evaluate_fitting()
}

/// Evaluate every point of `grid` (the model prepared, see `Session::prepare`).
pub fn evaluate_grid(s: &Session, ev: &mut Evaluator, p: &Perturber, grid: &Grid) -> Result<GridValues> {
    let t_eval = Instant::now();
    let mut progress = Progress::new(grid.len(), s.data.n, s.opts.quiet);
    let mut v = GridValues {
        loss: Vec::with_capacity(grid.len()),
        acc: Vec::with_capacity(grid.len()),
        capped: Vec::with_capacity(grid.len()),
        eval_secs: 0.0,
        perturb_secs: 0.0,
        moving: p.moving(),
        fold: p.fold_report(),
    };
    for k in 0..grid.len() {
        let pv = eval_point(p, ev, s.dev, grid.point(k), &mut v.perturb_secs)?;
        v.loss.push(pv.loss as f32);
        v.acc.push(pv.acc as f32);
        v.capped.push(pv.capped as u8);
        progress.point_done(pv.loss);
    }
    device::synchronize(s.dev);
    v.eval_secs = t_eval.elapsed().as_secs_f64();
    progress.finish();
    Ok(v)
}

/// The loss of each checkpoint state itself (uncapped), through the grid's perturber.
pub fn evaluate_states(ev: &mut Evaluator, p: &Perturber, states: &[State]) -> Result<Vec<PointValue>> {
    let cap = ev.loss_cap.take();
    let mut out = Vec::with_capacity(states.len());
    for st in states {
        p.set_state(st);
        out.push(ev.evaluate_fitting()?);
    }
    ev.loss_cap = cap;
    Ok(out)
}

/// x.npy, y.npy, loss.npy, acc.npy (and capped.npy with a loss cap) of a grid.
pub fn write_grid(dir: &mut RunDir, s: &Session, grid: &Grid, v: &GridValues) -> Result<()> {
    write_npy(&dir.file("x.npy"), &[grid.x.len() as u64], &grid.x)?;
    if let Some(y) = &grid.y {
        write_npy(&dir.file("y.npy"), &[y.len() as u64], y)?;
    }
    let shape = grid.shape();
    write_npy(&dir.file("loss.npy"), &shape, &v.loss)?;
    write_npy(&dir.file("acc.npy"), &shape, &v.acc)?;
    if s.opts.loss_cap.is_some() {
        write_npy(&dir.file("capped.npy"), &shape, &v.capped)?;
    }
    Ok(())
}

/// The part of meta.json known before any point is evaluated.
pub fn base_meta(
    kind: &str,
    s: &Session,
    ev: &Evaluator,
    spec: &GridSpec,
    grid: &Grid,
    layout: &str,
) -> Map<String, Value> {
    let two = grid.y.is_some();
    let meta = json!({
        "schema_version": 1,
        "kind": kind,
        "tool": {"name": "losscape", "version": env!("CARGO_PKG_VERSION")},
        "argv": s.opts.argv,
        "model": {"path": s.model.path, "sha256": s.model.sha256, "parameters": s.model.num_params(),
                  "parameter_tensors": s.model.params.len()},
        "data": {
            "path": s.data.path, "format": s.data.format, "split": s.data.split, "n": s.data.n,
            "available": s.data.available, "subset": "first n samples in file order", "sha256": s.data.sha256(),
            "targets": s.data.targets, "sample_shape": s.data.sample_shape(), "normalization": s.data.normalization,
        },
        "loss": ev.loss,
        "grid": {
            "dims": if two { 2 } else { 1 },
            "x": spec.x, "y": spec.y, "spacing": spec.spacing,
            "shape": grid.shape(),
            "layout": layout,
        },
        "outputs": {"loss": "loss.npy", "acc": "acc.npy", "x": "x.npy", "y": if two { json!("y.npy") } else { json!(null) },
                    "capped": if s.opts.loss_cap.is_some() { json!("capped.npy") } else { json!(null) }},
        "device": device::name(s.dev),
        "precision": s.precision,
        "dtype": s.precision.dtype_name(),
        "tf32_convolutions": s.dev.is_cuda() && s.precision != Precision::Fp32,
        "libtorch_version": env!("LOSSCAPE_LIBTORCH_VERSION"),
        "channels_last": s.channels_last,
        "cudnn_benchmark": s.dev.is_cuda() && s.opts.cudnn_benchmark,
    });
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("json! of an object"),
    }
}

/// The part of meta.json that summarizes the values: range, non-finite count, the loss cap.
pub fn value_meta(meta: &mut Map<String, Value>, loss: &[f32], capped: &[u8], loss_cap: Option<f64>) {
    let finite = || loss.iter().copied().filter(|x| x.is_finite());
    meta.insert("loss_min".into(), json!(finite().reduce(f32::min)));
    meta.insert("loss_max".into(), json!(finite().reduce(f32::max)));
    meta.insert("nonfinite_points".into(), json!(loss.iter().filter(|x| !x.is_finite()).count()));
    meta.insert(
        "loss_cap".into(),
        json!(loss_cap.map(|c| json!({
            "cap": c,
            "capped_points": capped.iter().filter(|&&c| c == 1).count(),
            "meaning": "capped[j, i] = 1: the pass stopped early once its partial mean exceeded the cap; loss holds that lower bound and acc is NaN",
        }))),
    );
}

/// Timing fields of meta.json for `points` evaluated over `eval_secs`.
pub fn timing_meta(wall: f64, eval_secs: f64, perturb_secs: f64, points: usize, n: usize) -> Value {
    json!({
        "wall_seconds": wall,
        "eval_seconds": eval_secs,
        "seconds_per_point": eval_secs / points.max(1) as f64,
        "images_per_second": (points * n) as f64 / eval_secs,
        "perturb_seconds": perturb_secs,
        "perturb_fraction": perturb_secs / eval_secs,
    })
}

/// The part of meta.json every evaluating command writes. `layout` says what loss[j, i] is.
#[allow(clippy::too_many_arguments)]
pub fn common_meta(
    kind: &str,
    s: &Session,
    ev: &Evaluator,
    spec: &GridSpec,
    grid: &Grid,
    v: &GridValues,
    precision_check: Option<Value>,
    layout: &str,
) -> Map<String, Value> {
    let mut meta = base_meta(kind, s, ev, spec, grid, layout);
    meta["model"]["moving_tensors"] = json!(v.moving);
    meta.insert("batchnorm_folding".into(), v.fold.clone());
    meta.insert("precision_check".into(), json!(precision_check));
    meta.insert("batch_size".into(), json!(ev.batch_size));
    value_meta(&mut meta, &v.loss, &v.capped, s.opts.loss_cap);
    meta.insert(
        "timing".into(),
        timing_meta(s.started.elapsed().as_secs_f64(), v.eval_secs, v.perturb_secs, grid.len(), s.data.n),
    );
    meta.insert("peak_host_rss_mb".into(), json!(peak_rss_mb()));
    meta
}

/// Peak resident memory of this process (VmHWM), in MiB; None where /proc is not there.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}
