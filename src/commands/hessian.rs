//! `hessian`: the curvature of the loss at a model — the extreme eigenvalues and eigenvectors of
//! its Hessian (Lanczos), its trace (Hutchinson) and spectral density (stochastic Lanczos
//! quadrature). Writes `hessian.json`, `eigenvectors.safetensors`, `directions.safetensors` (the
//! two leading eigenvectors as the plot directions of `surface --directions`), `density.npy` and
//! `meta.json` (last).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Tensor};

use crate::commands::describe;
use crate::engine::hessian::{self, Analysis, Hessian, Request};
use crate::engine::mover::Mover;
use crate::engine::session::{Session, Setup};
use crate::engine::settings::{self, ProcessSettings};
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::State;
use crate::options::{BatchNormMode, Ignore, Operator, Precision, Which};
use crate::space::directions;
use crate::space::params::NameFilter;
use crate::space::spectrum::{self, Eigenpair};
use crate::store::atomic::write_json;
use crate::store::files;
use crate::store::layers;
use crate::store::npy;
use crate::store::record::{
    BlockTrace, DensityMeta, EigenvalueRecord, HessianMeta, HessianReport, LayerRecord, TraceRecord,
};
use crate::store::rundir::RunDir;

/// What to compute and where.
#[derive(Debug, Clone)]
pub struct HessianConfig {
    pub model: PathBuf,
    pub arch: Option<PathBuf>,
    pub setup: Setup,
    pub device: Device,
    pub ignore: Ignore,
    /// Names kept within the `ignore` set (--params; empty: all).
    pub params: NameFilter,
    /// The Hessian, the Gauss-Newton matrix or the empirical Fisher.
    pub operator: Operator,
    pub request: Request,
    pub out: PathBuf,
    pub overwrite: bool,
    pub argv: Vec<String>,
}

/// Bins of the density grid; Gaussian variance factor (PyHessian's).
pub const DENSITY_BINS: usize = 2000;
pub const DENSITY_SIGMA2: f64 = 1e-5;

/// Default samples per pass: the double backward holds about three times a forward's activations.
pub fn default_batch_size(dev: Device) -> usize {
    if dev.is_cuda() {
        1024
    } else {
        64
    }
}

pub struct HessianOutcome {
    pub dir: PathBuf,
    pub report: HessianReport,
    pub meta: HessianMeta,
}

/// The evaluation options of a Hessian: fp32 or tf32, no fold, eval-mode BatchNorm, the layout of
/// gradients (`engine::hessian::gradient_layout`).
fn hessian_setup(cfg: &HessianConfig) -> Result<Setup> {
    let mut setup = cfg.setup.clone();
    let precision = setup.precision.unwrap_or(Precision::Fp32);
    if precision.is_reduced() {
        return Err(Error::setting(Setting::Precision, precision, "Hessian products need fp32 or tf32"));
    }
    if setup.batchnorm == BatchNormMode::Recompute {
        return Err(Error::setting(Setting::BatchNorm, "recompute", "the Hessian is taken in eval mode"));
    }
    let r = &cfg.request;
    if r.lanczos.is_none() && r.trace.is_none() && r.density.is_none() {
        return Err(Error::setting(Setting::Top, 0, "nothing to compute: ask for eigenvalues, a trace or a density"));
    }
    setup.precision = Some(precision);
    setup.fold_batchnorm = false;
    setup.batch_size = setup.batch_size.or(Some(default_batch_size(cfg.device)));
    hessian::gradient_layout(&mut setup, cfg.device);
    Ok(setup)
}

/// Resolve the inputs, take the products, write the results.
pub fn hessian(cfg: &HessianConfig) -> Result<HessianOutcome> {
    let started = Instant::now();
    let setup = hessian_setup(cfg)?;
    let precision = setup.precision.expect("set by hessian_setup");
    let arch = cfg.arch.clone().unwrap_or_else(|| cfg.model.clone());
    let s = Session::open(&arch, &setup, cfg.device)?;
    let ev = s.evaluator()?;
    settings::apply(ProcessSettings {
        tf32: cfg.device.is_cuda() && precision == Precision::Tf32,
        cudnn_benchmark: setup.cudnn_benchmark,
        threads: None,
    })?;
    // A checkpoint given with its architecture: the model at its values (put back on drop).
    let _origin = match &cfg.arch {
        Some(_) => {
            let st = State::load(&cfg.model, &s.model)?;
            Some(Mover::affine(&s.model, Some(&st), st.tensors.iter().map(|_| None).collect(), None))
        }
        None => None,
    };
    RunDir::check(&cfg.out)?;
    if RunDir::is_complete(&cfg.out) && !cfg.overwrite {
        return Err(Error::Complete { dir: cfg.out.clone() });
    }
    let set = hessian::select(&s.model, hessian::parameter_set(&s.model, cfg.ignore), &cfg.params)?;
    let mut h = Hessian::new(&s.model, &s.data, set, ev.loss, cfg.operator, ev.outputs_per_sample, ev.batch_size)?;
    let loss = h.loss()?;
    if !loss.is_finite() {
        return Err(Error::file(
            Role::Model,
            &s.model.path,
            format!("the loss at the model is {loss}: no curvature to take"),
        ));
    }
    let mut dir = RunDir::create(&cfg.out)?;
    let _lock = dir.setup_lock()?;
    dir.clear(None)?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let a = hessian::analyse(&mut h, cfg.request)?;
    let report = report(&a, &h, loss, cfg.request.lanczos.map(|o| o.which));
    let files = write(dir.path(), &a, &h, &s, &report, cfg.request.density)?;
    let meta = describe::hessian_meta(&describe::HessianRun {
        session: &s,
        hessian: &h,
        analysis: &a,
        request: &cfg.request,
        ignore: cfg.ignore,
        params: cfg.params.patterns(),
        origin: cfg.arch.as_ref().map(|_| cfg.model.clone()),
        argv: &cfg.argv,
        precision,
        channels_last: s.setup.channels_last,
        files,
        setup_seconds,
        density: cfg.request.density.map(|(runs, steps)| DensityMeta {
            runs,
            steps,
            bins: DENSITY_BINS,
            sigma2: DENSITY_SIGMA2,
            file: files::DENSITY.into(),
        }),
    });
    meta.write(dir.path())?;
    dir.keep();
    Ok(HessianOutcome { dir: cfg.out.clone(), report, meta })
}

fn record(p: &Eigenpair) -> EigenvalueRecord {
    EigenvalueRecord { eigenvalue: p.value, residual: p.residual, residual_norm: p.residual_norm, test: p.convergence }
}

fn records(pairs: &[Eigenpair]) -> Vec<EigenvalueRecord> {
    pairs.iter().map(record).collect()
}

/// hessian.json's `per_layer`: each block's ends (those asked for) and trace.
fn layer_records(a: &Analysis, wants: impl Fn(Which) -> bool) -> Option<Vec<LayerRecord>> {
    let layers = a.layers.as_ref()?;
    Some(
        layers
            .iter()
            .map(|l| LayerRecord {
                name: l.name.clone(),
                tensors: l.tensors.clone(),
                n_params: l.n_params,
                largest: l
                    .extremes
                    .as_ref()
                    .filter(|_| wants(Which::Largest))
                    .and_then(|e| e.largest.first())
                    .map(record),
                smallest: l
                    .extremes
                    .as_ref()
                    .filter(|_| wants(Which::Smallest))
                    .and_then(|e| e.smallest.first())
                    .map(record),
                trace: l.trace.map(|(estimate, stderr)| BlockTrace { estimate, stderr }),
                products: l.products,
            })
            .collect(),
    )
}

/// hessian.json's content.
fn report(a: &Analysis, h: &Hessian, loss: f64, which: Option<Which>) -> HessianReport {
    let wants = |w: Which| which.is_some_and(|x| x == w || x == Which::Both);
    let e = a.extremes.as_ref();
    HessianReport {
        operator: h.operator(),
        largest: e.filter(|_| wants(Which::Largest)).map(|e| records(&e.largest)),
        smallest: e.filter(|_| wants(Which::Smallest)).map(|e| records(&e.smallest)),
        trace: a.trace.as_ref().map(TraceRecord::from),
        n_params: h.dim(),
        hvp_count: a.products,
        passes: a.passes,
        jvp: (h.operator() != crate::options::Operator::Hessian).then_some(h.jvp),
        batchnorm_folded: h.batchnorms_folded(),
        seconds: a.seconds,
        loss,
        lanczos_steps: e.map_or(0, |e| e.steps),
        converged: e.is_none_or(|e| e.converged)
            && a.layers.iter().flatten().all(|l| l.extremes.as_ref().is_none_or(|e| e.converged)),
        per_layer: layer_records(a, wants),
    }
}

/// Write hessian.json, the eigenvectors (by parameter name) and the first two as plot directions
/// over every parameter (zero outside the set), and the density; the files written.
fn write(
    out: &Path,
    a: &Analysis,
    h: &Hessian,
    s: &Session,
    report: &HessianReport,
    density: Option<(usize, usize)>,
) -> Result<Vec<String>> {
    let mut written = vec![files::HESSIAN.to_string()];
    write_json(&out.join(files::HESSIAN), report)?;
    if let Some(l) = &report.per_layer {
        layers::write_csv(out, l)?;
        written.push(files::PER_LAYER_CSV.into());
    }
    let names = h.names();
    if let Some(e) = &a.extremes {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (kind, pairs) in [("largest", &e.largest), ("smallest", &e.smallest)] {
            for (i, p) in pairs.iter().enumerate() {
                for ((n, _), t) in names.iter().zip(directions::split_flat(&p.vector, &names)) {
                    named.push((format!("{kind}{i}.{n}"), t));
                }
            }
        }
        if !named.is_empty() {
            let path = out.join(files::EIGENVECTORS);
            Tensor::write_safetensors(&named, &path)
                .map_err(|e| Error::file(Role::RunFile, &path, format!("cannot write: {e}")))?;
            written.push(files::EIGENVECTORS.into());
        }
        let leading: Vec<&Eigenpair> = e.largest.iter().chain(&e.smallest).take(2).collect();
        if let [first, second] = leading[..] {
            let dir_of = |p: &Eigenpair| directions::from_flat(&p.vector, &names, &s.model.params);
            directions::save(&out.join(files::DIRECTIONS), &dir_of(first), Some(&dir_of(second)))?;
            written.push(files::DIRECTIONS.into());
        }
    }
    if let (Some(runs), Some(_)) = (&a.quadrature, density) {
        let (grid, d) = spectrum::density(runs, DENSITY_BINS, DENSITY_SIGMA2);
        let flat: Vec<f64> = grid.iter().chain(&d).copied().collect();
        npy::write(&out.join(files::DENSITY), &[2, grid.len() as u64], &flat)?;
        written.push(files::DENSITY.into());
    }
    Ok(written)
}
