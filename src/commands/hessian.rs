//! `hessian`: the curvature of the loss at a model — the extreme eigenvalues and eigenvectors of
//! its Hessian (Lanczos), its trace (Hutchinson) and spectral density (stochastic Lanczos
//! quadrature). Writes `hessian.json`, `eigenvectors.safetensors`, `directions.safetensors` (the
//! two leading eigenvectors as the plot directions of `surface --directions`), `density.npy` and
//! `meta.json` (last).

use std::path::PathBuf;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::commands::describe;
use crate::engine::device;
use crate::engine::hessian::{self, Hessian};
use crate::engine::mover::Mover;
use crate::engine::session::{peak_rss_mb, Session, Setup};
use crate::engine::settings::{self, ProcessSettings};
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::State;
use crate::options::{BatchNormMode, EigenMethod, Ignore, Precision};
use crate::space::directions::{self, Direction};
use crate::space::spectrum::{self, Eigenpair, Extremes, LanczosOptions};
use crate::store::atomic::write_json;
use crate::store::npy;
use crate::store::record::{
    DensityMeta, EigenvalueRecord, HessianKind, HessianMeta, HessianOperator, HessianReport, HessianTiming,
    LanczosMeta, Meta, TraceRecord, SCHEMA_VERSION,
};

/// What to compute and where.
#[derive(Debug, Clone)]
pub struct HessianConfig {
    pub model: PathBuf,
    pub arch: Option<PathBuf>,
    pub setup: Setup,
    pub device: Device,
    pub ignore: Ignore,
    /// Extreme eigenpairs (None: not asked for).
    pub lanczos: Option<LanczosOptions>,
    /// Lanczos, or power iteration (K = 1, largest |λ|).
    pub method: EigenMethod,
    /// Trace: at most this many products, stopping once the standard error is within `tol`.
    pub trace: Option<(usize, f64)>,
    /// Density: (runs, steps per run).
    pub density: Option<(usize, usize)>,
    pub seed: u64,
    pub out: PathBuf,
    pub overwrite: bool,
    pub argv: Vec<String>,
}

/// Bins of the density grid; Gaussian variance factor (PyHessian's).
const DENSITY_BINS: usize = 2000;
const DENSITY_SIGMA2: f64 = 1e-5;

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

/// Removes a directory this process created if it fails before finishing.
struct FreshDir(Option<PathBuf>);

impl Drop for FreshDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn records(pairs: &[Eigenpair]) -> Vec<EigenvalueRecord> {
    pairs
        .iter()
        .map(|p| EigenvalueRecord {
            eigenvalue: p.value,
            residual: p.residual,
            residual_norm: p.residual_norm,
            test: p.convergence,
        })
        .collect()
}

pub fn hessian(cfg: &HessianConfig) -> Result<HessianOutcome> {
    let started = Instant::now();
    let mut setup = cfg.setup.clone();
    let precision = setup.precision.unwrap_or(Precision::Fp32);
    if precision.is_reduced() {
        return Err(Error::setting(Setting::Precision, precision, "Hessian products need fp32 or tf32"));
    }
    setup.precision = Some(precision);
    setup.fold_batchnorm = false;
    hessian::gradient_layout(&mut setup, cfg.device);
    if setup.batchnorm == BatchNormMode::Recompute {
        return Err(Error::setting(Setting::BatchNorm, "recompute", "the Hessian is taken in eval mode"));
    }
    if cfg.lanczos.is_none() && cfg.trace.is_none() && cfg.density.is_none() {
        return Err(Error::setting(Setting::Top, 0, "nothing to compute: ask for eigenvalues, --trace or --density"));
    }
    if setup.batch_size.is_none() {
        setup.batch_size = Some(default_batch_size(cfg.device));
    }
    let arch = cfg.arch.clone().unwrap_or_else(|| cfg.model.clone());
    let s = Session::open(&arch, &setup, cfg.device)?;
    let ev = s.evaluator()?;
    settings::apply(ProcessSettings {
        tf32: cfg.device.is_cuda() && precision == Precision::Tf32,
        cudnn_benchmark: setup.cudnn_benchmark,
        threads: None,
    })?;
    // A checkpoint given with its architecture: the model at its values.
    let _origin = match &cfg.arch {
        Some(_) => {
            let st = State::load(&cfg.model, &s.model)?;
            Some(Mover::affine(&s.model, Some(&st), st.tensors.iter().map(|_| None).collect(), None))
        }
        None => None,
    };
    let out = &cfg.out;
    if out.exists() && !out.is_dir() {
        return Err(Error::file(Role::RunDir, out, "exists and is not a directory"));
    }
    if Meta::path(out).exists() && !cfg.overwrite {
        return Err(Error::Complete { dir: out.clone() });
    }
    let set = hessian::parameter_set(&s.model, cfg.ignore);
    let mut h = Hessian::new(&s.model, &s.data, set.clone(), ev.loss, ev.outputs_per_sample, ev.batch_size)?;
    let dim = h.dim();
    let names = h.names();
    let loss = h.loss()?;
    if !loss.is_finite() {
        return Err(Error::file(
            Role::Model,
            &s.model.path,
            format!("the loss at the model is {loss}: no curvature to take"),
        ));
    }
    let mut fresh = FreshDir((!out.exists()).then(|| out.clone()));
    std::fs::create_dir_all(out).map_err(|e| Error::file(Role::RunDir, out, format!("cannot create: {e}")))?;
    if Meta::path(out).exists() {
        std::fs::remove_file(Meta::path(out)).map_err(|e| Error::io(&Meta::path(out), "cannot remove", e))?;
    }
    let setup_seconds = started.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let dev = s.dev;
    let mut op = |v: &Tensor| h.apply(v);
    let extremes = match (cfg.lanczos, cfg.method) {
        (Some(o), EigenMethod::Lanczos) => Some(spectrum::extremes(&mut op, dim, dev, o)?),
        (Some(o), EigenMethod::Power) => {
            let (pair, steps) = spectrum::power(&mut op, dim, dev, o.tol, o.max_steps, o.seed)?;
            let converged = pair.residual <= o.tol;
            Some(Extremes { largest: vec![pair], smallest: Vec::new(), steps, products: steps, converged })
        }
        (None, _) => None,
    };
    if let Some(e) = &extremes {
        if !e.converged {
            log::warn!(
                "not every eigenpair reached the tolerance in {} Lanczos steps (residuals in hessian.json); raise --max-steps",
                e.steps
            );
        }
    }
    let trace = match cfg.trace {
        Some((max, tol)) => Some(spectrum::trace(&mut op, dim, dev, cfg.seed, tol, 10.min(max), max)?),
        None => None,
    };
    let quadrature = match cfg.density {
        Some((runs, steps)) => Some(spectrum::quadrature(&mut op, dim, dev, cfg.seed, runs, steps)?),
        None => None,
    };
    let seconds = t0.elapsed().as_secs_f64();
    let products = h.products;
    let trace = trace.map(|t| TraceRecord { estimate: t.estimate, stderr: t.stderr, matvecs: t.matvecs });
    let which = cfg.lanczos.map(|o| o.which);
    let wants = |w: crate::options::Which| which.is_some_and(|x| x == w || x == crate::options::Which::Both);
    let report = HessianReport {
        largest: extremes.as_ref().filter(|_| wants(crate::options::Which::Largest)).map(|e| records(&e.largest)),
        smallest: extremes.as_ref().filter(|_| wants(crate::options::Which::Smallest)).map(|e| records(&e.smallest)),
        trace,
        n_params: dim,
        hvp_count: products,
        seconds,
        loss,
        lanczos_steps: extremes.as_ref().map_or(0, |e| e.steps),
        converged: extremes.as_ref().is_none_or(|e| e.converged),
    };
    let mut files = vec!["hessian.json".to_string()];
    write_json(&out.join("hessian.json"), &report)?;
    if let Some(e) = &extremes {
        // Eigenvectors by parameter name, then the first two as plot directions over every
        // parameter (zero outside the set).
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (kind, pairs) in [("largest", &e.largest), ("smallest", &e.smallest)] {
            for (i, p) in pairs.iter().enumerate() {
                for ((n, _), t) in names.iter().zip(h_split(&names, &p.vector)) {
                    named.push((format!("{kind}{i}.{n}"), t));
                }
            }
        }
        if !named.is_empty() {
            Tensor::write_safetensors(&named, out.join("eigenvectors.safetensors")).map_err(|e| {
                Error::file(Role::RunFile, &out.join("eigenvectors.safetensors"), format!("cannot write: {e}"))
            })?;
            files.push("eigenvectors.safetensors".into());
        }
        let leading: Vec<&Eigenpair> = e.largest.iter().chain(&e.smallest).take(2).collect();
        if leading.len() == 2 {
            let dir_of = |p: &Eigenpair| -> Direction {
                let parts: std::collections::HashMap<&str, Tensor> =
                    names.iter().map(|(n, _)| n.as_str()).zip(h_split(&names, &p.vector)).collect();
                Direction {
                    tensors: s
                        .model
                        .params
                        .iter()
                        .map(|(n, t)| {
                            let v = parts
                                .get(n.as_str())
                                .map_or_else(|| Tensor::zeros(t.size(), (Kind::Float, Device::Cpu)), |v| v.copy());
                            (n.clone(), v)
                        })
                        .collect(),
                }
            };
            directions::save(&out.join("directions.safetensors"), &dir_of(leading[0]), Some(&dir_of(leading[1])))?;
            files.push("directions.safetensors".into());
        }
    }
    let density_meta = match &quadrature {
        Some(runs) => {
            let (grid, d) = spectrum::density(runs, DENSITY_BINS, DENSITY_SIGMA2);
            let flat: Vec<f64> = grid.iter().chain(&d).copied().collect();
            npy::write(&out.join("density.npy"), &[2, grid.len() as u64], &flat)?;
            files.push("density.npy".into());
            let (r, st) = cfg.density.expect("asked for");
            Some(DensityMeta {
                runs: r,
                steps: st,
                bins: DENSITY_BINS,
                sigma2: DENSITY_SIGMA2,
                file: "density.npy".into(),
            })
        }
        None => None,
    };
    let mut model_meta = describe::model_meta(&s);
    model_meta.origin = cfg.arch.as_ref().map(|_| cfg.model.clone());
    model_meta.moving_tensors = Some(set.len());
    let meta = HessianMeta {
        schema_version: SCHEMA_VERSION,
        kind: HessianKind::Hessian,
        tool: describe::tool(),
        argv: cfg.argv.clone(),
        model: model_meta,
        data: describe::data_meta(&s),
        loss: ev.loss,
        device: device::name(dev),
        precision,
        dtype: precision.dtype_name().into(),
        libtorch_version: env!("LOSSCAPE_LIBTORCH_VERSION").into(),
        channels_last: setup.channels_last,
        operator: HessianOperator {
            parameters: cfg.ignore,
            n_params: dim,
            parameter_tensors: set.len(),
            batch_size: h.batch_size,
            definition: "H = Hessian of the dataset-mean loss (sum over samples / N) with respect to the parameters \
                         in the set, BatchNorm in eval mode; Hv by double backward, summed over batches"
                .into(),
        },
        lanczos: cfg.lanczos.zip(extremes.as_ref()).map(|(o, e)| LanczosMeta {
            k: o.k,
            which: o.which,
            tol: o.tol,
            max_steps: o.max_steps,
            seed: o.seed,
            steps: e.steps,
            converged: e.converged,
            method: match cfg.method {
                EigenMethod::Lanczos => "Lanczos with full reorthogonalization (twice per step) from a seeded \
                                         Rademacher start; residuals computed with one product per reported pair"
                    .into(),
                EigenMethod::Power => "power iteration from a seeded Rademacher start, stopping on the residual \
                                       of the current vector (largest |λ| only)"
                    .into(),
            },
        }),
        trace,
        density: density_meta,
        files,
        timing: HessianTiming {
            setup_seconds,
            seconds,
            products,
            seconds_per_product: seconds / products.max(1) as f64,
            images_per_second: (products * s.data.n) as f64 / seconds.max(1e-12),
        },
        peak_host_rss_mb: peak_rss_mb(),
    };
    meta.write(out)?;
    fresh.0 = None;
    Ok(HessianOutcome { dir: out.clone(), report, meta })
}

/// A flat vector as CPU float32 tensors shaped like the named parameters.
fn h_split(names: &[(String, Vec<i64>)], v: &Tensor) -> Vec<Tensor> {
    let v = v.to_device(Device::Cpu).to_kind(Kind::Float);
    let mut offset = 0;
    names
        .iter()
        .map(|(_, shape)| {
            let n: i64 = shape.iter().product();
            let t = v.narrow(0, offset, n).reshape(shape.as_slice()).contiguous();
            offset += n;
            t
        })
        .collect()
}
