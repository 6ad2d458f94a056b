//! The one sweep over a run's points, for every command: the points of this task's shard still
//! to do are dealt to one worker per device (or per CPU thread); their values come back to this
//! thread, which records them in the shard's store (saved every few seconds) and reports
//! progress. Shards, resume, locks and workers are therefore the same for every kind of run.
//!
//! Process-wide libtorch settings change only here, between the two phases, while no worker is
//! evaluating: strict fp32 for every worker's [`Strict::open`] (precision reference, fold check),
//! then the run's precision for [`Strict::ready`] and the points.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tch::Device;

use crate::engine::session::{peak_rss_mb, Session};
use crate::engine::settings::{self, ProcessSettings};
use crate::engine::worker::{Evaluated, RunSpec, Strict};
use crate::error::{Error, Result};
use crate::options::Precision;
use crate::store::record::{ShardTiming, WorkerReport};
use crate::store::shards::ShardStore;

/// Told about progress as points come back.
pub trait Observer {
    /// Every worker is ready: `points` to evaluate, `samples` per point.
    fn start(&mut self, points: usize, samples: usize);
    fn point(&mut self, loss: f64);
    fn finish(&mut self);
}

/// An observer that says nothing.
pub struct Silent;

impl Observer for Silent {
    fn start(&mut self, _: usize, _: usize) {}
    fn point(&mut self, _: f64) {}
    fn finish(&mut self) {}
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub struct SweepReport {
    pub evaluated: usize,
    pub workers: Vec<WorkerReport>,
}

enum Msg {
    Ready { worker: usize, report: WorkerReport, samples: usize },
    Point { worker: usize, k: usize, out: Evaluated, elapsed: f64 },
    Done { worker: usize, report: WorkerReport },
    Failed(Error),
}

/// Evaluate every point of `store`'s shard not done yet, with one worker per entry of
/// `devices`. `first` is a session already open on `devices[0]` (it is reused, not reloaded);
/// `started` is when this task began (set-up time is measured from it).
pub fn sweep(
    spec: &RunSpec,
    store: &mut ShardStore,
    devices: &[Device],
    first: Option<Session>,
    started: Instant,
    observer: &mut dyn Observer,
) -> Result<SweepReport> {
    let todo = store.todo();
    if todo.is_empty() || devices.is_empty() {
        return Ok(SweepReport { evaluated: 0, workers: Vec::new() });
    }
    let cuda = devices[0].is_cuda();
    let precision = spec.setup.precision_on(devices[0])?;
    let threads = (!cuda && devices.len() > 1).then(|| (settings::cores() / devices.len()).max(1));
    let strict = ProcessSettings { tf32: false, cudnn_benchmark: spec.setup.cudnn_benchmark, threads };
    settings::apply(strict)?;

    // Phase 1, strict fp32: every worker loads, moves to the origin, checks its precision and fold.
    let mut first = first;
    let workers: Vec<Strict> = std::thread::scope(|sc| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(w, &dev)| {
                let session = if w == 0 { first.take() } else { None };
                sc.spawn(move || Strict::open(spec, dev, session))
            })
            .collect();
        handles
            .into_iter()
            .zip(devices)
            .map(|(h, dev)| {
                h.join()
                    .map_err(|_| Error::other(format!("worker on {} panicked", crate::engine::device::name(*dev))))?
            })
            .collect::<Result<Vec<_>>>()
    })?;

    // Phase 2, the run's precision: cast, warm up, then the points, once every worker is ready.
    settings::apply(ProcessSettings { tf32: cuda && precision != Precision::Fp32, ..strict })?;
    let n_workers = workers.len();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let ready = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut reports: Vec<Option<WorkerReport>> = vec![None; n_workers];
    let mut elapsed = vec![0.0f64; n_workers];
    let (mut perturb, mut bn, mut curv) = (0.0, 0.0, 0.0);
    let mut counts = vec![0usize; n_workers];
    let mut eval_started: Option<Instant> = None;
    let mut evaluated = 0;
    let result = std::thread::scope(|sc| -> Result<()> {
        for (w, strict) in workers.into_iter().enumerate() {
            let tx = tx.clone();
            let (next, stop, ready, todo) = (&next, &stop, &ready, &todo);
            sc.spawn(move || {
                let work = || -> Result<WorkerReport> {
                    let mut r = strict.ready()?;
                    // The static part of the report, for the saves made while points come in.
                    let _ = tx.send(Msg::Ready {
                        worker: w,
                        report: r.report(0, 0.0, 0.0, 0.0, 0.0),
                        samples: r.samples(),
                    });
                    ready.fetch_add(1, Ordering::SeqCst);
                    while ready.load(Ordering::SeqCst) < n_workers && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let t0 = Instant::now();
                    let (mut points, mut perturb, mut bn, mut curv) = (0, 0.0, 0.0, 0.0);
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= todo.len() || stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let out = r.eval(todo[i])?;
                        points += 1;
                        perturb += out.perturb_seconds;
                        bn += out.batchnorm_seconds;
                        curv += out.curvature_seconds;
                        let msg = Msg::Point { worker: w, k: todo[i], out, elapsed: t0.elapsed().as_secs_f64() };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                    let report = r.report(points, t0.elapsed().as_secs_f64(), perturb, bn, curv);
                    r.finish()?;
                    Ok(report)
                };
                match work() {
                    Ok(report) => {
                        let _ = tx.send(Msg::Done { worker: w, report });
                    }
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        let _ = tx.send(Msg::Failed(e));
                    }
                }
            });
        }
        drop(tx);
        let mut failure = None;
        for msg in &rx {
            match msg {
                Msg::Ready { worker, report, samples } => {
                    reports[worker] = Some(report);
                    if reports.iter().all(Option::is_some) {
                        eval_started = Some(Instant::now());
                        observer.start(todo.len(), samples);
                    }
                }
                Msg::Point { worker, k, out, elapsed: e } => {
                    let t0 = *eval_started.get_or_insert_with(Instant::now);
                    counts[worker] += 1;
                    elapsed[worker] = e;
                    perturb += out.perturb_seconds;
                    bn += out.batchnorm_seconds;
                    curv += out.curvature_seconds;
                    evaluated += 1;
                    observer.point(out.loss);
                    store.record(k, out.values);
                    let timing = timing(started, eval_started, t0, &elapsed, (perturb, bn, curv));
                    let live = live_reports(&reports, &counts, &elapsed);
                    if let Err(e) = store.save(false, timing, &live, peak_rss_mb()) {
                        stop.store(true, Ordering::SeqCst);
                        failure.get_or_insert(e);
                    }
                }
                Msg::Done { worker, report } => reports[worker] = Some(report),
                Msg::Failed(e) => {
                    stop.store(true, Ordering::SeqCst);
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    });
    observer.finish();
    let t0 = eval_started.unwrap_or_else(Instant::now);
    let final_reports = live_reports(&reports, &counts, &elapsed);
    let save = store.save(
        true,
        timing(started, eval_started, t0, &elapsed, (perturb, bn, curv)),
        &final_reports,
        peak_rss_mb(),
    );
    // A failure of the run comes first; the progress saved before it is kept either way.
    result?;
    save?;
    Ok(SweepReport { evaluated, workers: final_reports })
}

/// This session's timing so far.
fn timing(
    started: Instant,
    eval_started: Option<Instant>,
    t0: Instant,
    elapsed: &[f64],
    (perturb, bn, curv): (f64, f64, f64),
) -> ShardTiming {
    let setup = match eval_started {
        Some(t) => t.duration_since(started).as_secs_f64(),
        None => started.elapsed().as_secs_f64(),
    };
    ShardTiming {
        setup_seconds: setup,
        eval_seconds: if eval_started.is_some() { t0.elapsed().as_secs_f64() } else { 0.0 },
        worker_seconds: elapsed.iter().sum(),
        perturb_seconds: perturb,
        batchnorm_seconds: bn,
        curvature_seconds: curv,
    }
}

/// The workers' reports with the points and seconds counted so far.
fn live_reports(reports: &[Option<WorkerReport>], counts: &[usize], elapsed: &[f64]) -> Vec<WorkerReport> {
    reports
        .iter()
        .zip(counts.iter().zip(elapsed))
        .filter_map(|(r, (&c, &e))| {
            r.clone().map(|mut r| {
                r.points = r.points.max(c);
                r.seconds = r.seconds.max(e);
                r
            })
        })
        .collect()
}
