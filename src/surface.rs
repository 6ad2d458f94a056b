//! The `surface` command: random (or given) directions around the model's own parameters,
//! θ* + αδ + βη over a 1-D or 2-D grid; and `merge`, which assembles a run evaluated in shards.
//!
//! A run directory is filled through `store.rs`: config.json first (the run's identity), the
//! directions, then each shard's progress, saved atomically every few seconds, so that a task
//! killed at any instant and started again evaluates only the missing points. Everything that can
//! be wrong with the input is checked before the run directory is touched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind};

use crate::data::DataSpec;
use crate::device;
use crate::directions::{self, Direction, Ignore, Norm};
use crate::eval::Perturber;
use crate::grid::{Axis, Grid, Spacing};
use crate::output::RunDir;
use crate::progress::Progress;
use crate::run::{self, EvalOptions, GridSpec, Session};
use crate::shard::Shard;
use crate::store::{self, Point, RunConfig, ShardStore};

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
    /// Evaluate only this share of the grid. None: the SLURM array task's share inside a job
    /// array, else the whole grid.
    pub shard: Option<Shard>,
    /// Worker threads on the CPU (each with its own copy of model and data); on CUDA one worker
    /// per device of `--device`.
    pub workers: usize,
    /// Save progress at most this often (and at the end).
    pub checkpoint_every: Duration,
    /// Only make the run directory (config.json and directions) for shards to fill.
    pub prepare_only: bool,
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
            shard: None,
            workers: 1,
            checkpoint_every: Duration::from_secs(5),
            prepare_only: false,
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

/// How a `surface` invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The whole grid is done and merged (by this process, or earlier).
    Complete(Surface),
    /// This shard is done; others are not yet (`losscape merge` once they are).
    ShardDone { shard: Shard, points: usize, missing: usize },
    /// `prepare_only`: the run directory holds config.json and the directions.
    Prepared { points: usize },
}

/// The whole grid in this process (no sharding): the library's one-call entry point.
pub fn run(cfg: &SurfaceConfig) -> Result<Surface> {
    let mut c = cfg.clone();
    c.shard = Some(c.shard.unwrap_or(Shard::WHOLE));
    match run_sharded(&c)? {
        Outcome::Complete(s) => Ok(s),
        Outcome::ShardDone { missing, .. } => bail!("{missing} points of the grid are still missing"),
        Outcome::Prepared { .. } => bail!("prepare_only: nothing evaluated"),
    }
}

const LAYOUT_2D: &str = "loss[j, i] = L(theta + x[i]*dx + y[j]*dy): rows are y, columns are x (meshgrid 'xy')";
const LAYOUT_1D: &str = "loss[i] = L(theta + x[i]*dx)";

/// Removes a run directory this process created if it fails before saving anything.
struct FreshDir {
    path: Option<PathBuf>,
}

impl Drop for FreshDir {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

pub fn run_sharded(cfg: &SurfaceConfig) -> Result<Outcome> {
    let out = &cfg.eval.out;
    if out.exists() && !out.is_dir() {
        bail!("--out {}: exists and is not a directory", out.display());
    }
    if cfg.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let shard = match cfg.shard {
        Some(s) => s,
        None => Shard::from_env(|k| std::env::var(k).ok())?.unwrap_or(Shard::WHOLE),
    };
    let devices = cfg.eval.device.resolve_all()?;
    let s = Session::open_on(&cfg.model, &cfg.eval, devices[0])?;
    let ev = s.evaluator()?;
    let grid = cfg.grid.grid();
    let two = cfg.grid.y.is_some();
    let given = match &cfg.directions {
        Some(p) => {
            let (dx, dy) = directions::load(p, &s.model.params)?;
            if two && dy.is_none() {
                bail!("directions {}: holds x.* only, but --y asks for a 2-D grid", p.display());
            }
            Some((dx, if two { dy } else { None }, sha256_file(p)?))
        }
        None => None,
    };
    let identity = json!({
        "kind": "surface",
        "model_sha256": s.model.sha256,
        "data": {"sha256": s.data.sha256(), "n": s.data.n, "normalization": s.data.normalization},
        "grid": cfg.grid,
        "directions": match &given {
            Some((_, _, sha)) => json!({"file_sha256": sha}),
            None => json!({"seed": cfg.seed, "norm": cfg.norm, "ignore": cfg.ignore}),
        },
        "loss": ev.loss,
        "precision": s.precision,
        "loss_cap": cfg.eval.loss_cap,
        "fold_batchnorm": cfg.eval.fold_batchnorm,
    });
    let mut meta = run::base_meta("surface", &s, &ev, &cfg.grid, &grid, if two { LAYOUT_2D } else { LAYOUT_1D });
    meta["grid"]["point"] = json!("each point formed from the pristine parameters: theta + x*dx + y*dy");
    meta.insert(
        "directions".into(),
        json!({
            "file": "directions.safetensors",
            "source": match &cfg.directions { Some(p) => json!(p), None => json!("random") },
            "seed": if given.is_none() { json!(cfg.seed) } else { json!(null) },
            "norm": if given.is_none() { json!(cfg.norm) } else { json!(null) },
            "ignore": if given.is_none() { json!(cfg.ignore) } else { json!(null) },
        }),
    );
    let config = RunConfig { identity, meta: serde_json::Value::Object(meta) };

    // The directory: an identical complete run is left alone; another configuration is refused.
    // (A merge --allow-partial leaves a meta.json that counts its missing points: not complete.)
    let partial = std::fs::read_to_string(out.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|m| m["shards"]["missing_points"].as_u64().unwrap_or(0) > 0);
    if out.join("meta.json").exists() && !cfg.eval.overwrite && !partial {
        match RunConfig::read(out) {
            Ok(old) if old.identity == config.identity => {
                if !cfg.eval.quiet {
                    eprintln!("losscape: {} already holds this run, complete; nothing to do", out.display());
                }
                return Ok(Outcome::Complete(read_back(out)?));
            }
            // Another configuration: publish_config below names the difference.
            Ok(_) => {}
            Err(_) => RunDir::check(out, false)?,
        }
    }
    if cfg.eval.overwrite {
        store::clear_run(out, cfg.directions.as_deref())?;
    }
    let mut fresh = FreshDir { path: (!out.exists()).then(|| out.clone()) };
    store::publish_config(out, &config)?;
    let (dx, dy) = directions_of_run(cfg, &s, given)?;
    if cfg.prepare_only {
        fresh.path = None;
        return Ok(Outcome::Prepared { points: grid.len() });
    }
    let mut st = ShardStore::open(out, shard, &config.hash(), grid.len(), cfg.checkpoint_every)?;
    st.extra = json!({"directions": {"x_norm": dx.norm(), "y_norm": dy.as_ref().map(|d| d.norm()), "cos_xy": dy.as_ref().map(|d| dx.cosine(d))}});
    let todo: Vec<usize> = shard.points(grid.len()).into_iter().filter(|k| !st.done.contains_key(k)).collect();
    if !cfg.eval.quiet && !st.done.is_empty() {
        eprintln!("losscape: shard {shard}: {} points already done, {} to go", st.done.len(), todo.len());
    }
    let outcome = if devices.len() > 1 || cfg.workers > 1 {
        let workers: Vec<Device> =
            if devices.iter().all(|d| d.is_cuda()) { devices.clone() } else { vec![Device::Cpu; cfg.workers] };
        drop(s);
        evaluate_parallel(cfg, &workers, &dx, dy.as_ref(), &grid, &todo, &mut st, &mut fresh)?
    } else {
        evaluate_serial(cfg, &s, ev, &dx, dy.as_ref(), &grid, &todo, &mut st, &mut fresh)?
    };
    fresh.path = None;
    if outcome.missing_in_shard > 0 {
        bail!("shard {shard}: {} points were not evaluated", outcome.missing_in_shard);
    }
    // The last shard to finish assembles the run.
    match merge_if_complete(out, cfg.eval.quiet)? {
        Some(s) => Ok(Outcome::Complete(s)),
        None => {
            let g = store::gather(out, &config.hash(), grid.len())?;
            Ok(Outcome::ShardDone {
                shard,
                points: shard.points(grid.len()).len(),
                missing: grid.len() - g.points.len(),
            })
        }
    }
}

struct ShardResult {
    missing_in_shard: usize,
}

fn sha256_file(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// The run's directions: those already in the run directory, else the given or seeded ones,
/// published once (whichever task of an array gets there first).
fn directions_of_run(
    cfg: &SurfaceConfig,
    s: &Session,
    given: Option<(Direction, Option<Direction>, String)>,
) -> Result<(Direction, Option<Direction>)> {
    let two = cfg.grid.y.is_some();
    let path = cfg.eval.out.join("directions.safetensors");
    if !path.exists() {
        let (dx, dy) = match given {
            Some((dx, dy, _)) => (dx, dy),
            None => directions::random(&s.model.params, cfg.seed, cfg.norm, cfg.ignore, two),
        };
        let mine = store::publish(&path, |tmp| directions::save(tmp, &dx, dy.as_ref()))?;
        if mine {
            return Ok((dx, dy));
        }
    }
    let (dx, dy) = directions::load(&path, &s.model.params)?;
    if two && dy.is_none() {
        bail!("directions {}: holds x.* only, but the run is 2-D", path.display());
    }
    Ok((dx, if two { dy } else { None }))
}

fn point_of(v: crate::eval::PointValue) -> Point {
    Point { loss: v.loss as f32, acc: v.acc as f32, capped: v.capped }
}

#[allow(clippy::too_many_arguments)]
fn evaluate_serial(
    cfg: &SurfaceConfig,
    s: &Session,
    mut ev: crate::eval::Evaluator,
    dx: &Direction,
    dy: Option<&Direction>,
    grid: &Grid,
    todo: &[usize],
    st: &mut ShardStore,
    fresh: &mut FreshDir,
) -> Result<ShardResult> {
    let p = Perturber::new(&s.model, dx, dy);
    let check = if todo.is_empty() { None } else { s.prepare(&mut ev, &p)? };
    let t0 = Instant::now();
    st.start_session();
    let mut progress = Progress::new(todo.len(), s.data.n, cfg.eval.quiet);
    let mut perturb = 0.0;
    let extra = |st: &ShardStore, eval: f64, perturb: f64, ev: &crate::eval::Evaluator| {
        json!({"workers": [{"device": device::name(s.dev), "batch_size": ev.batch_size}], "precision_check": check,
               "perturb_seconds": st.perturb_base + perturb, "session_eval_seconds": eval, "moving_tensors": p.moving(),
               "batchnorm_folding": p.fold_report(),
               "peak_host_rss_mb": run::peak_rss_mb(), "points_this_session": todo.len().min(st.done.len())})
    };
    for &k in todo {
        let v = run::eval_point(&p, &mut ev, s.dev, grid.point(k), &mut perturb)?;
        st.record(k, point_of(v));
        progress.point_done(v.loss);
        let e = extra(st, t0.elapsed().as_secs_f64(), perturb, &ev);
        st.maybe_save(false, &e)?;
        fresh.path = None;
    }
    device::synchronize(s.dev);
    progress.finish();
    let e = extra(st, t0.elapsed().as_secs_f64(), perturb, &ev);
    st.maybe_save(true, &e)?;
    drop(p);
    Ok(ShardResult { missing_in_shard: todo.iter().filter(|k| !st.done.contains_key(k)).count() })
}

/// A copy of a direction that a worker thread can own.
fn copy_dir(d: &Direction) -> Direction {
    Direction { tensors: d.tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect() }
}

/// Deal the points to one worker per device (or `workers` CPU workers): each has its own model and
/// data, and once all are set up takes the next point from a shared counter and sends its value back; this thread records
/// and saves progress.
#[allow(clippy::too_many_arguments)]
fn evaluate_parallel(
    cfg: &SurfaceConfig,
    devices: &[Device],
    dx: &Direction,
    dy: Option<&Direction>,
    grid: &Grid,
    todo: &[usize],
    st: &mut ShardStore,
    fresh: &mut FreshDir,
) -> Result<ShardResult> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Workers ready to take points: dealing starts once all are (or one has failed), so that a
    // worker whose set-up (load, fold, warm-up) is slower still gets its share.
    let ready = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Result<(usize, usize, crate::eval::PointValue)>>();
    st.start_session();
    let mut counts = vec![0usize; devices.len()];
    let mut infos: Vec<Value> = vec![json!(null); devices.len()];
    let (itx, irx) = mpsc::channel::<(usize, Value)>();
    let result = std::thread::scope(|scope| -> Result<()> {
        for (w, &dev) in devices.iter().enumerate() {
            let (tx, itx) = (tx.clone(), itx.clone());
            let (wdx, wdy) = (copy_dir(dx), dy.map(copy_dir));
            let (next, stop, ready) = (&next, &stop, &ready);
            scope.spawn(move || {
                let work = || -> Result<()> {
                    if dev == Device::Cpu {
                        // Share the cores between the CPU workers.
                        tch::set_num_threads((num_cpus() / devices.len()).max(1) as i32);
                    }
                    let s = Session::open_on(&cfg.model, &cfg.eval, dev)?;
                    let mut ev = s.evaluator()?;
                    let p = Perturber::new(&s.model, &wdx, wdy.as_ref());
                    let check = s.prepare(&mut ev, &p)?;
                    ready.fetch_add(1, Ordering::SeqCst);
                    while ready.load(Ordering::SeqCst) < devices.len() && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let mut perturb = 0.0;
                    let started = Instant::now();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= todo.len() || stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let v = run::eval_point(&p, &mut ev, dev, grid.point(todo[i]), &mut perturb)?;
                        if tx.send(Ok((w, todo[i], v))).is_err() {
                            break;
                        }
                    }
                    let _ = itx.send((w, json!({"device": device::name(dev), "batch_size": ev.batch_size,
                        "precision_check": check, "perturb_seconds": perturb, "seconds": started.elapsed().as_secs_f64(),
                        "batchnorm_folding": p.fold_report()})));
                    Ok(())
                };
                if let Err(e) = work() {
                    stop.store(true, Ordering::SeqCst);
                    let _ = tx.send(Err(e.context(format!("worker {w} on {}", device::name(dev)))));
                }
            });
        }
        drop(tx);
        drop(itx);
        let mut progress = Progress::new(todo.len(), 0, cfg.eval.quiet);
        for msg in rx {
            let (w, k, v) = msg?;
            counts[w] += 1;
            st.record(k, point_of(v));
            progress.point_done(v.loss);
            st.maybe_save(false, &json!({"workers_points": counts}))?;
            fresh.path = None;
        }
        progress.finish();
        for (w, info) in irx {
            infos[w] = info;
        }
        Ok(())
    });
    if let Err(e) = result {
        stop.store(true, Ordering::SeqCst);
        // Keep what was computed before the failure.
        let _ = st.maybe_save(true, &json!({}));
        return Err(e);
    }
    for (w, c) in counts.iter().enumerate() {
        infos[w]["points"] = json!(c);
    }
    let perturb: f64 = infos.iter().filter_map(|i| i["perturb_seconds"].as_f64()).sum();
    st.maybe_save(
        true,
        &json!({"workers": infos, "perturb_seconds": st.perturb_base + perturb,
                                "precision_check": infos[0]["precision_check"], "peak_host_rss_mb": run::peak_rss_mb(),
                                "batchnorm_folding": infos[0]["batchnorm_folding"]}),
    )?;
    Ok(ShardResult { missing_in_shard: todo.iter().filter(|k| !st.done.contains_key(k)).count() })
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Merge the run if every point of the grid has been evaluated; None if some are missing or
/// another process is merging it right now.
fn merge_if_complete(dir: &Path, quiet: bool) -> Result<Option<Surface>> {
    let cfg = RunConfig::read(dir)?;
    let grid = grid_of(&cfg)?;
    let g = store::gather(dir, &cfg.hash(), grid.len())?;
    if g.points.len() < grid.len() {
        return Ok(None);
    }
    merge_locked(dir, false, quiet)
}

fn grid_of(cfg: &RunConfig) -> Result<Grid> {
    let spec: GridSpec = serde_json::from_value(cfg.identity["grid"].clone()).context("config.json: grid")?;
    Ok(spec.grid())
}

/// `losscape merge`: assemble loss.npy, acc.npy and meta.json from the shards of a run directory.
/// Missing points are an error naming each incomplete shard, unless `allow_partial` (then NaN).
pub fn merge(dir: &Path, allow_partial: bool, quiet: bool) -> Result<Surface> {
    if !dir.join("config.json").exists() {
        bail!("{}: no config.json: not a losscape run directory (or nothing was started in it yet)", dir.display());
    }
    merge_locked(dir, allow_partial, quiet)?
        .ok_or_else(|| anyhow!("{}: another process is merging this run right now", dir.display()))
}

fn merge_locked(dir: &Path, allow_partial: bool, quiet: bool) -> Result<Option<Surface>> {
    let lock_path = dir.join("shards").join("merge.lock");
    std::fs::create_dir_all(dir.join("shards"))?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    if lock.try_lock().is_err() {
        return Ok(None);
    }
    let cfg = RunConfig::read(dir)?;
    let hash = cfg.hash();
    let grid = grid_of(&cfg)?;
    let g = store::gather(dir, &hash, grid.len())?;
    let missing = grid.len() - g.points.len();
    if missing > 0 && !allow_partial {
        // Which shards, and how many of their points.
        let mut parts = Vec::new();
        let counts: Vec<usize> =
            g.shards.iter().filter_map(|s| s["shard"]["count"].as_u64()).map(|c| c as usize).collect();
        let n_shards = counts.first().copied().unwrap_or(1);
        for i in 0..n_shards {
            let sh = Shard { index: i, count: n_shards };
            let own = sh.points(grid.len());
            let miss = own.iter().filter(|k| !g.points.contains_key(k)).count();
            if miss > 0 {
                let started = g.shards.iter().any(|s| s["shard"]["index"].as_u64() == Some(i as u64));
                parts.push(format!(
                    "shard {sh}: {miss} of {} points missing{}",
                    own.len(),
                    if started { "" } else { " (never started)" }
                ));
            }
        }
        bail!(
            "{}: {missing} of {} points missing — {}; run those shards again (they resume), or merge --allow-partial",
            dir.display(),
            grid.len(),
            parts.join("; ")
        );
    }
    let mut loss = vec![f32::NAN; grid.len()];
    let mut acc = vec![f32::NAN; grid.len()];
    let mut capped = vec![0u8; grid.len()];
    for (&k, p) in &g.points {
        loss[k] = p.loss;
        acc[k] = p.acc;
        capped[k] = p.capped as u8;
    }
    let loss_cap = cfg.identity["loss_cap"].as_f64();
    store::write_arrays(dir, &grid, &loss, &acc, loss_cap.map(|_| capped.as_slice()))?;
    let mut meta = match cfg.meta.clone() {
        Value::Object(m) => m,
        _ => bail!("config.json: meta is not an object"),
    };
    run::value_meta(&mut meta, &loss, &capped, loss_cap);
    let n = meta["data"]["n"].as_u64().unwrap_or(0) as usize;
    let eval: f64 = g.shards.iter().filter_map(|s| s["eval_seconds"].as_f64()).sum();
    let perturb: f64 = g.shards.iter().filter_map(|s| s["perturb_seconds"].as_f64()).sum();
    meta.insert("timing".into(), run::timing_meta(eval, eval, perturb, g.points.len(), n));
    let first = g.shards.first().cloned().unwrap_or(json!({}));
    let w0 = if first["workers"].is_array() { first["workers"][0].clone() } else { json!({}) };
    meta.insert("batch_size".into(), w0["batch_size"].clone());
    meta.insert("precision_check".into(), first["precision_check"].clone());
    meta["model"]["moving_tensors"] = first["moving_tensors"].clone();
    meta.insert("batchnorm_folding".into(), first["batchnorm_folding"].clone());
    meta.insert("peak_host_rss_mb".into(), first["peak_host_rss_mb"].clone());
    if let (Some(Value::Object(d)), Value::Object(stats)) = (meta.get_mut("directions"), &first["directions"]) {
        d.extend(stats.clone());
    }
    meta.insert(
        "shards".into(),
        json!({
            "count": g.shards.len(),
            "config_hash": hash,
            "missing_points": missing,
            "tasks": g.shards,
            "note": if missing > 0 { "merged with --allow-partial: missing points are NaN in loss.npy and acc.npy" } else { "" },
        }),
    );
    let meta = Value::Object(meta);
    crate::output::write_json(&dir.join("meta.json"), &meta)?;
    store::sync_dir(dir)?;
    if !quiet && g.shards.len() > 1 {
        eprintln!(
            "losscape: merged {} shards of {} ({} points) -> {}",
            g.shards.len(),
            hash,
            g.points.len(),
            dir.display()
        );
    }
    Ok(Some(Surface { grid, loss, acc, meta }))
}

/// A complete run directory read back.
fn read_back(dir: &Path) -> Result<Surface> {
    let cfg = RunConfig::read(dir)?;
    let grid = grid_of(&cfg)?;
    let read = |name: &str| -> Result<Vec<f32>> {
        let t = crate::data::read_npy(&dir.join(name))?;
        Ok(Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))?)
    };
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
    Ok(Surface { grid, loss: read("loss.npy")?, acc: read("acc.npy")?, meta })
}
