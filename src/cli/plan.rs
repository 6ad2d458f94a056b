//! From the command line as typed to the library's configurations ("high" arguments): defaults,
//! the environment (SLURM array variables) and the devices resolved once, here.

use std::time::Duration;

use tch::Device;

use crate::cli::args::*;
use crate::commands::hessian::HessianConfig;
use crate::commands::line::LineConfig;
use crate::commands::plane::PlaneConfig;
use crate::commands::run::Task;
use crate::commands::surface::SurfaceConfig;
use crate::commands::trajectory::TrajectoryConfig;
use crate::engine::device::DeviceSpec;
use crate::engine::session::Setup;
use crate::error::{Error, Result, Setting};
use crate::inputs::data::DataSpec;
use crate::options::{Precision, Split};
use crate::plot::{Aspect, Format, PlotOptions, ScaleChoice, Style};
use crate::space::grid::{GridSpec, Spacing};
use crate::space::shard::Shard;
use crate::space::spectrum::LanczosOptions;
use crate::store::record::CurvatureSpec;

/// What the process reads from its environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's own environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// `losscape plot`'s options, parsed and checked before anything is read or drawn.
pub fn plot(a: &PlotArgs) -> Result<PlotOptions> {
    let scale = match (a.log, a.linear) {
        (true, _) => ScaleChoice::Log,
        (_, true) => ScaleChoice::Linear,
        _ => ScaleChoice::Auto,
    };
    let aspect = match a.aspect {
        Some(AspectArg::Equal) => Aspect::Equal,
        Some(AspectArg::Free) => Aspect::Free,
        None => Aspect::Auto,
    };
    let mut formats: Vec<Format> = Vec::new();
    for f in a.format.split(',').filter(|f| !f.trim().is_empty()) {
        let f: Format = f.parse().map_err(|e: String| Error::setting(Setting::Format, &a.format, e))?;
        if !formats.contains(&f) {
            formats.push(f);
        }
    }
    let size = match &a.size {
        None => None,
        Some(s) => {
            let bad = || Error::setting(Setting::Size, s, "give the width and height in inches, WxH (e.g. 3.5x2.8)");
            let (w, h) = s
                .to_ascii_lowercase()
                .split_once('x')
                .map(|(w, h)| (w.trim().to_string(), h.trim().to_string()))
                .ok_or_else(bad)?;
            let (w, h): (f64, f64) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
            Some((w, h))
        }
    };
    let o = PlotOptions {
        scale,
        vmin: a.vmin,
        vmax: a.vmax,
        levels: a.levels,
        zmax: a.zmax,
        dpi: a.dpi,
        formats,
        size,
        font_size: a.font_size,
        style: match a.style {
            StyleArg::Bands => Style::Bands,
            StyleArg::Cells => Style::Cells,
        },
        script: a.script,
        persistence: a.persistence,
        shade_stderr: a.shade_stderr,
        aspect,
    };
    o.check()?;
    Ok(o)
}

/// The data options as a Setup with the rest at its defaults.
fn data_setup(d: &DataArgs, splits: &[Split]) -> Result<Setup> {
    let data = DataSpec {
        path: d.data.clone(),
        split: splits.first().copied().unwrap_or_default(),
        limit: d.limit,
        mean: d.mean.clone(),
        std: d.std.clone(),
        layout: d.layout,
    };
    data.check()?;
    let mut s = Setup::new(data);
    s.more_splits = splits.iter().skip(1).copied().collect();
    s.output = d.output.clone();
    s.loss = d.loss;
    Ok(s)
}

/// `--rel-error` and its options (None at 0: exact passes).
fn sampling(a: &SamplingArgs) -> Option<crate::options::Sampling> {
    (a.rel_error != 0.0).then_some(crate::options::Sampling {
        rel_error: a.rel_error,
        min_samples: a.min_samples,
        seed: a.sample_seed,
    })
}

pub fn setup(d: &DataArgs, splits: &SplitArgs, v: &ValueArgs, speed: Option<&SpeedArgs>) -> Result<Setup> {
    let mut s = data_setup(d, &splits.split)?;
    s.precision = v.precision;
    s.loss_cap = v.loss_cap;
    s.fold_batchnorm = v.fold_batchnorm;
    s.batchnorm = v.batchnorm;
    s.bn_samples = v.bn_samples;
    s.sampling = sampling(&v.sampling);
    if let Some(sp) = speed {
        s.batch_size = sp.batch_size;
        s.channels_last = sp.channels_last;
        s.cudnn_benchmark = sp.cudnn_benchmark;
        s.onednn = sp.onednn;
    }
    Ok(s)
}

/// The devices of the task's workers: every GPU `--device` names (one worker each), or `workers`
/// CPU workers.
pub fn devices(device: &DeviceSpec, workers: usize) -> Result<Vec<Device>> {
    if workers == 0 {
        return Err(Error::setting(Setting::Workers, 0, "must be at least 1"));
    }
    let devs = device.resolve_all()?;
    Ok(if devs[0].is_cuda() { devs } else { vec![Device::Cpu; workers] })
}

/// How this process takes part: its shard (explicit, else from a SLURM job array), devices and
/// progress saving.
pub fn task(
    out: &OutArgs,
    device: &DeviceSpec,
    t: Option<&TaskArgs>,
    env: &dyn Env,
    argv: Vec<String>,
) -> Result<Task> {
    let shard = match t.and_then(|t| t.shard) {
        Some(s) => s,
        None => Shard::from_slurm(|k| env.var(k))?.unwrap_or(Shard::WHOLE),
    };
    let (workers, every) = t.map_or((1, 5.0), |t| (t.workers, t.save_every));
    if !(every.is_finite() && every >= 0.0) {
        return Err(Error::setting(Setting::SaveEvery, every, "must be a number of seconds >= 0"));
    }
    Ok(Task {
        out: out.out.clone(),
        overwrite: out.overwrite,
        shard,
        devices: devices(device, workers)?,
        save_every: Duration::from_secs_f64(every),
        prepare_only: false,
        argv,
    })
}

/// `--curvature`'s spec (H over the parameters the directions move), or None.
fn curvature(c: &CurvatureArgs, m: &ModelDirectionArgs) -> Result<Option<CurvatureSpec>> {
    if c.curvature && !(c.curvature_tol > 0.0 && c.curvature_tol < 1.0) {
        return Err(Error::setting(Setting::CurvatureTol, c.curvature_tol, "must be in (0, 1)"));
    }
    Ok(c.curvature.then_some(CurvatureSpec {
        operator: c.operator,
        parameters: m.ignore,
        tol: c.curvature_tol,
        max_steps: c.curvature_max_steps,
        seed: m.seed as u64,
    }))
}

/// Curvature maps default to strict fp32 (Hessian products are sensitive to TF32 rounding).
fn curvature_precision(setup: &mut Setup, c: &Option<CurvatureSpec>) {
    if c.is_some() && setup.precision.is_none() {
        setup.precision = Some(crate::options::Precision::Fp32);
    }
}

pub fn surface(a: &SurfaceArgs, env: &dyn Env, argv: Vec<String>) -> Result<SurfaceConfig> {
    let m = &a.model;
    let curvature = curvature(&a.curvature, m)?;
    let mut setup = setup(&a.data, &a.splits, &a.value, Some(&a.speed))?;
    curvature_precision(&mut setup, &curvature);
    let task = task(&a.out, &a.value.device, Some(&a.task), env, argv)?;
    if curvature.is_some() {
        crate::engine::hessian::gradient_layout(&mut setup, task.devices[0]);
    }
    Ok(SurfaceConfig {
        curvature,
        model: m.model.clone(),
        arch: m.arch.clone(),
        grid: GridSpec::new(m.x, m.y, m.spacing)?,
        norm: m.norm,
        ignore: m.ignore,
        seed: m.seed,
        directions: m.directions.clone(),
        setup,
        task,
    })
}

pub fn directions(a: &DirectionsArgs, env: &dyn Env, argv: Vec<String>) -> Result<SurfaceConfig> {
    let m = &a.model;
    let mut task = task(&a.out, &a.value.device, None, env, argv)?;
    task.prepare_only = true;
    let curvature = curvature(&a.curvature, m)?;
    let mut setup = setup(&a.data, &a.splits, &a.value, None)?;
    curvature_precision(&mut setup, &curvature);
    Ok(SurfaceConfig {
        curvature,
        model: m.model.clone(),
        arch: m.arch.clone(),
        grid: GridSpec::new(m.x, m.y, m.spacing)?,
        norm: m.norm,
        ignore: m.ignore,
        seed: m.seed,
        directions: m.directions.clone(),
        setup,
        task,
    })
}

pub fn line(a: &LineArgs, env: &dyn Env, argv: Vec<String>) -> Result<LineConfig> {
    Ok(LineConfig {
        from: a.from.clone(),
        to: a.to.clone(),
        arch: a.arch.clone(),
        x: a.x,
        setup: setup(&a.data, &a.splits, &a.value, Some(&a.speed))?,
        task: task(&a.out, &a.value.device, Some(&a.task), env, argv)?,
    })
}

pub fn plane(a: &PlaneArgs, env: &dyn Env, argv: Vec<String>) -> Result<PlaneConfig> {
    let models: [std::path::PathBuf; 3] = a.models.clone().try_into().map_err(|m: Vec<_>| {
        Error::setting(Setting::Models, format!("{} files", m.len()), "needs exactly three checkpoints A B C")
    })?;
    Ok(PlaneConfig {
        models,
        arch: a.arch.clone(),
        grid: GridSpec::new(a.x, Some(a.y), Spacing::Linear)?,
        orthogonalize: a.orthogonalize,
        curve: a.curve.clone(),
        setup: setup(&a.data, &a.splits, &a.value, Some(&a.speed))?,
        task: task(&a.out, &a.value.device, Some(&a.task), env, argv)?,
    })
}

pub fn hessian(a: &HessianArgs, argv: Vec<String>) -> Result<HessianConfig> {
    let mut s = data_setup(&a.data, &[a.split])?;
    s.precision = a.precision.map(Precision::from);
    s.batch_size = a.batch_size;
    let devices = a.device.resolve_all()?;
    let lanczos = (a.top > 0).then_some(LanczosOptions {
        k: a.top,
        which: a.which,
        tol: a.tol,
        max_steps: a.max_steps,
        seed: a.seed,
    });
    if !(a.tol > 0.0 && a.tol < 1.0) {
        return Err(Error::setting(Setting::Tol, a.tol, "must be in (0, 1)"));
    }
    if a.max_steps == 0 {
        return Err(Error::setting(Setting::MaxSteps, 0, "must be at least 1"));
    }
    if a.vectors_per_pass == 0 {
        return Err(Error::setting(Setting::VectorsPerPass, 0, "must be at least 1"));
    }
    let hutchpp = crate::space::spectrum::HUTCHPP_MIN_PRODUCTS;
    if a.trace && a.trace_method == crate::options::TraceMethod::HutchPlusPlus && a.trace_samples < hutchpp {
        return Err(Error::setting(
            Setting::TraceSamples,
            a.trace_samples,
            format!("Hutch++ needs at least {hutchpp} products (or --trace-method hutchinson)"),
        ));
    }
    if a.per_layer.is_some() && a.top == 0 && !a.trace {
        return Err(Error::setting(
            Setting::PerLayer,
            a.per_layer.unwrap_or_default(),
            "nothing to compute per block: ask for eigenvalues (--top 1 or more) or --trace",
        ));
    }
    if a.method == crate::options::EigenMethod::Power && (a.top > 1 || a.which != crate::options::Which::Largest) {
        return Err(Error::setting(
            Setting::Top,
            a.top,
            "power iteration finds the largest |λ| only: use --top 1 --which largest",
        ));
    }
    Ok(HessianConfig {
        model: a.model.clone(),
        arch: a.arch.clone(),
        setup: s,
        device: devices[0],
        ignore: a.ignore.into(),
        params: crate::space::params::NameFilter::parse(&a.params)?,
        operator: a.operator,
        request: crate::engine::hessian::Request {
            lanczos,
            method: a.method,
            trace: a.trace.then_some((a.trace_method, a.trace_samples.max(2), a.tol)),
            density: a.density.then_some((a.density_runs.max(1), a.density_steps.max(2))),
            seed: a.seed,
            vectors_per_pass: a.vectors_per_pass,
            per_layer: a.per_layer,
        },
        out: a.out.out.clone(),
        overwrite: a.out.overwrite,
        argv,
    })
}

pub fn trajectory(a: &TrajectoryArgs, env: &dyn Env, argv: Vec<String>) -> Result<TrajectoryConfig> {
    if !(a.margin.is_finite() && a.margin >= 0.0) {
        return Err(Error::setting(Setting::Margin, a.margin, "must be a fraction >= 0"));
    }
    if a.n < 2 && (a.x.is_none() || a.y.is_none()) {
        return Err(Error::setting(Setting::PointsPerAxis, a.n, "must be at least 2"));
    }
    if !(a.pca_memory.is_finite() && a.pca_memory > 0.0) {
        return Err(Error::setting(Setting::PcaMemory, a.pca_memory, "must be a positive number of MiB"));
    }
    // The grid's extent comes from the PCA, its size from here: checked before anything is written.
    let (nx, ny) = (a.x.map_or(a.n, |x| x.n), a.y.map_or(a.n, |y| y.n));
    crate::space::grid::check_points(nx, ny, format!("{nx} by {ny} points"))?;
    Ok(TrajectoryConfig {
        checkpoints: a.checkpoints.clone(),
        arch: a.arch.clone(),
        origin: a.origin.parse()?,
        ignore: a.ignore,
        x: a.x,
        y: a.y,
        margin: a.margin,
        points_per_axis: a.n,
        pca_memory_mb: a.pca_memory,
        setup: setup(&a.data, &a.splits, &a.value, Some(&a.speed))?,
        task: task(&a.out, &a.value.device, Some(&a.task), env, argv)?,
    })
}

pub fn sharpness(
    a: &SharpnessArgs,
    env: &dyn Env,
    argv: Vec<String>,
) -> Result<crate::commands::sharpness::SharpnessConfig> {
    let models = match (&a.model, a.models.is_empty(), &a.checkpoints) {
        (Some(m), _, _) => vec![m.clone()],
        (None, false, _) => a.models.clone(),
        (None, true, Some(spec)) => crate::inputs::checkpoint::list(spec)?,
        (None, true, None) => {
            return Err(Error::Needed {
                setting: Setting::Models,
                why: "give --model, --models or --checkpoints".into(),
            })
        }
    };
    if models.is_empty() {
        return Err(Error::setting(
            Setting::Checkpoints,
            a.checkpoints.clone().unwrap_or_default(),
            "names no checkpoint",
        ));
    }
    let spec = crate::store::record::SharpnessSpec {
        measures: a.measure.clone(),
        radii: a.radius.clone(),
        scale: a.scale,
        floor: a.floor,
        norm: a.norm,
        samples: a.samples,
        steps: a.steps,
        restarts: a.restarts,
        m_sharpness: a.m_sharpness,
        threshold: a.threshold,
        quantity: a.quantity,
        seed: a.seed,
        parameters: a.ignore.into(),
    };
    crate::commands::sharpness::check(&spec)?;
    let mut setup = data_setup(&a.data, &[a.split])?;
    setup.precision = Some(a.precision.map_or(Precision::Fp32, Precision::from));
    setup.batchnorm = a.batchnorm;
    setup.bn_samples = a.bn_samples;
    setup.fold_batchnorm = false;
    setup.sampling = sampling(&a.sampling);
    let devices = a.device.resolve_all()?;
    setup.batch_size = a.batch_size.or(Some(crate::commands::hessian::default_batch_size(devices[0])));
    crate::engine::hessian::gradient_layout(&mut setup, devices[0]);
    Ok(crate::commands::sharpness::SharpnessConfig {
        models,
        arch: a.arch.clone(),
        spec,
        setup,
        task: task(&a.out, &a.device, Some(&a.task), env, argv)?,
    })
}

pub fn connect(a: &ConnectArgs, env: &dyn Env, argv: Vec<String>) -> Result<crate::commands::connect::ConnectConfig> {
    let training = crate::store::record::CurveTraining {
        curve: a.curve,
        epochs: a.epochs,
        lr: a.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        batch_size: a.batch_size,
        seed: a.seed,
        augment: a.augment,
    };
    crate::commands::connect::check(&training, a.points)?;
    if a.eval_batch_size == Some(0) {
        return Err(Error::setting(Setting::EvalBatchSize, 0, "must be at least 1"));
    }
    let mut setup = data_setup(&a.data, &a.splits.split)?;
    setup.precision = Some(Precision::Fp32);
    setup.batchnorm = a.batchnorm;
    setup.bn_samples = a.bn_samples;
    setup.fold_batchnorm = false;
    let devices = a.device.resolve_all()?;
    setup.batch_size = a.eval_batch_size;
    crate::engine::hessian::gradient_layout(&mut setup, devices[0]);
    Ok(crate::commands::connect::ConnectConfig {
        from: a.from.clone(),
        to: a.to.clone(),
        arch: a.arch.clone(),
        training,
        points: a.points,
        setup,
        task: task(&a.out, &a.device, Some(&a.task), env, argv)?,
        train_observer: Box::new(crate::cli::progress::TrainProgress::new(a.out.quiet)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    struct Vars(Vec<(&'static str, &'static str)>);

    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        }
    }

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("losscape").chain(args.iter().copied()))
    }

    fn surface_args(extra: &[&str]) -> SurfaceArgs {
        let mut a = vec!["surface", "--model", "m.pt", "--data", "d", "--x=-1:1:3", "--out", "o"];
        a.extend_from_slice(extra);
        match parse(&a).unwrap().command {
            Command::Surface(s) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn surface_defaults() {
        let c = surface(&surface_args(&[]), &Vars(vec![]), vec![]).unwrap();
        assert_eq!(c.task.shard, Shard::WHOLE);
        assert_eq!(c.task.save_every, Duration::from_secs(5));
        assert_eq!(c.grid.y, None);
        assert!(c.setup.fold_batchnorm && c.setup.channels_last && c.setup.onednn && c.setup.cudnn_benchmark);
        assert_eq!(c.setup.batchnorm, crate::options::BatchNormMode::Eval);
        assert_eq!((c.seed, c.norm, c.ignore), (0, crate::options::Norm::Filter, crate::options::Ignore::Biasbn));
    }

    #[test]
    fn the_shard_comes_from_the_flag_else_from_a_slurm_array() {
        let env =
            Vars(vec![("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "0")]);
        let c = surface(&surface_args(&["--device", "cpu"]), &env, vec![]).unwrap();
        assert_eq!(c.task.shard, Shard { index: 3, count: 4 });
        let c = surface(&surface_args(&["--shard", "1/2"]), &env, vec![]).unwrap();
        assert_eq!(c.task.shard, Shard { index: 1, count: 2 });
    }

    #[test]
    fn save_every_has_its_old_name_too_and_is_checked() {
        let c = surface(&surface_args(&["--checkpoint-every", "0"]), &Vars(vec![]), vec![]).unwrap();
        assert_eq!(c.task.save_every, Duration::ZERO);
        let e = surface(&surface_args(&["--save-every=-1"]), &Vars(vec![]), vec![]).unwrap_err();
        assert!(matches!(e, Error::Setting { setting: Setting::SaveEvery, .. }), "{e}");
    }

    #[test]
    fn workers_make_cpu_workers_and_zero_is_refused() {
        let c = surface(&surface_args(&["--workers", "3", "--device", "cpu"]), &Vars(vec![]), vec![]).unwrap();
        assert_eq!(c.task.devices, vec![Device::Cpu; 3]);
        let e = surface(&surface_args(&["--workers", "0"]), &Vars(vec![]), vec![]).unwrap_err();
        assert!(matches!(e, Error::Setting { setting: Setting::Workers, .. }));
    }

    #[test]
    fn flags_reach_the_setup() {
        let a = surface_args(&[
            "--batch-size",
            "8",
            "--precision",
            "bf16",
            "--loss-cap",
            "3",
            "--channels-last",
            "false",
            "--fold-batchnorm",
            "false",
            "--onednn",
            "false",
            "--cudnn-benchmark",
            "false",
            "--batchnorm",
            "recompute",
            "--bn-samples",
            "500",
            "--limit",
            "7",
            "--split",
            "test",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.2,0.2,0.2",
            "--layout",
            "nhwc",
            "--loss",
            "mse",
            "--y",
            "0:1:2",
            "--spacing",
            "cubic",
            "--seed",
            "4",
            "--norm",
            "layer",
            "--ignore",
            "keep",
        ]);
        let c = surface(&a, &Vars(vec![]), vec![]).unwrap();
        let s = &c.setup;
        assert_eq!(s.batch_size, Some(8));
        assert_eq!(s.precision, Some(crate::options::Precision::Bf16));
        assert_eq!(s.loss_cap, Some(3.0));
        assert!(!s.channels_last && !s.fold_batchnorm && !s.onednn && !s.cudnn_benchmark);
        assert_eq!((s.batchnorm, s.bn_samples), (crate::options::BatchNormMode::Recompute, 500));
        assert_eq!((s.data.limit, s.data.split), (Some(7), crate::options::Split::Test));
        assert_eq!(s.data.mean.as_deref(), Some(&[0.5f32, 0.5, 0.5][..]));
        assert_eq!(s.data.layout, crate::options::Layout::Nhwc);
        assert_eq!(s.loss, Some(crate::options::LossKind::Mse));
        assert_eq!(c.grid.spacing, Spacing::Cubic);
        assert_eq!((c.seed, c.norm, c.ignore), (4, crate::options::Norm::Layer, crate::options::Ignore::Keep));
    }

    #[test]
    fn plot_options_are_parsed_and_checked_in_the_plan() {
        let plot_args = |extra: &[&str]| -> PlotArgs {
            let mut a = vec!["plot", "run"];
            a.extend_from_slice(extra);
            match parse(&a).unwrap().command {
                Command::Plot(p) => p,
                _ => unreachable!(),
            }
        };
        let o = plot(&plot_args(&[])).unwrap();
        assert_eq!(o.formats, vec![Format::Png, Format::Pdf]);
        assert_eq!((o.size, o.font_size, o.style, o.script), (None, 10.0, Style::Bands, false));
        let o =
            plot(&plot_args(&["--format", "svg,PNG,svg", "--size", "3.5x2.8", "--font-size", "8", "--style", "cells"]))
                .unwrap();
        assert_eq!(o.formats, vec![Format::Svg, Format::Png]);
        assert_eq!(o.size, Some((3.5, 2.8)));
        assert_eq!((o.font_size, o.style), (8.0, Style::Cells));
        for (extra, setting) in [
            (vec!["--format", "gif"], Setting::Format),
            (vec!["--format", ","], Setting::Format),
            (vec!["--size", "0x3"], Setting::Size),
            (vec!["--size", "3by2"], Setting::Size),
            (vec!["--size", "nanx2"], Setting::Size),
            (vec!["--font-size", "1"], Setting::FontSize),
            (vec!["--dpi", "5"], Setting::Dpi),
        ] {
            match plot(&plot_args(&extra)).unwrap_err() {
                Error::Setting { setting: s, .. } => assert_eq!(s, setting, "{extra:?}"),
                e => panic!("{extra:?}: {e}"),
            }
        }
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        use clap::error::ErrorKind;
        let e = parse(&["plane", "--data", "d", "--out", "o"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = parse(&["surface", "--model", "m", "--data", "d", "--x", "-1:1", "--out", "o"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("MIN:MAX:N"));
        let e = parse(&["surface", "--model", "m", "--data", "d", "--x=0:1:2", "--out", "o", "--device", "tpu"])
            .unwrap_err();
        assert!(e.to_string().contains("tpu"));
        let e = parse(&["surface", "--model", "m", "--data", "d", "--x=0:1:2", "--out", "o", "--shard", "4/4"])
            .unwrap_err();
        assert!(e.to_string().contains("4/4"));
    }

    #[test]
    fn directions_takes_only_the_options_it_uses() {
        let ok = parse(&["directions", "--model", "m", "--data", "d", "--x=0:1:2", "--out", "o", "--seed", "3"]);
        assert!(ok.is_ok());
        for extra in [["--workers", "2"], ["--shard", "0/2"], ["--batch-size", "8"], ["--save-every", "1"]] {
            let mut a = vec!["directions", "--model", "m", "--data", "d", "--x=0:1:2", "--out", "o"];
            a.extend_from_slice(&extra);
            assert!(parse(&a).is_err(), "directions accepted {extra:?}");
        }
        let c = match parse(&["directions", "--model", "m", "--data", "d", "--x=0:1:2", "--out", "o"]).unwrap().command
        {
            Command::Directions(d) => directions(&d, &Vars(vec![]), vec![]).unwrap(),
            _ => unreachable!(),
        };
        assert!(c.task.prepare_only);
    }

    #[test]
    fn trajectory_and_line_defaults() {
        let t = match parse(&["trajectory", "--checkpoints", "c", "--data", "d", "--out", "o"]).unwrap().command {
            Command::Trajectory(t) => trajectory(&t, &Vars(vec![]), vec![]).unwrap(),
            _ => unreachable!(),
        };
        assert_eq!((t.margin, t.points_per_axis, t.pca_memory_mb), (0.25, 21, 2048.0));
        assert_eq!(t.origin, crate::commands::trajectory::Origin::Last);
        let l = match parse(&["line", "--from", "a", "--to", "b", "--data", "d", "--out", "o"]).unwrap().command {
            Command::Line(l) => line(&l, &Vars(vec![]), vec![]).unwrap(),
            _ => unreachable!(),
        };
        assert_eq!((l.x.min, l.x.max, l.x.n), (-0.5, 1.5, 41));
    }
}
