//! The one sweep over a run's points, for every command: the points of this task's shard still
//! to do are dealt to one worker per device (or per CPU thread); their values are recorded in the
//! shard's store (saved every few seconds) and progress is reported. Shards, resume, locks and
//! workers are therefore the same for every kind of run. A single worker runs on the calling
//! thread; several run on threads of their own and send their values back to it.
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
    /// Every worker is ready: `points` to evaluate, `samples` per point, and at most
    /// `max_products` Hessian-vector products per point besides (`--curvature`; else 0).
    fn start(&mut self, points: usize, samples: usize, max_products: usize);
    /// A point is done: its loss, and the Hessian-vector products it took.
    fn point(&mut self, loss: f64, products: usize);
    fn finish(&mut self);
}

/// An observer that says nothing.
pub struct Silent;

impl Observer for Silent {
    fn start(&mut self, _: usize, _: usize, _: usize) {}
    fn point(&mut self, _: f64, _: usize) {}
    fn finish(&mut self) {}
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub struct SweepReport {
    pub evaluated: usize,
    pub workers: Vec<WorkerReport>,
}

/// What a worker tells the recorder.
enum Msg {
    Ready { worker: usize, report: WorkerReport, samples: usize },
    Point { worker: usize, k: usize, out: Evaluated, elapsed: f64 },
    Done { worker: usize, report: WorkerReport },
    Failed(Error),
}

/// The points of the shard, dealt one at a time to whichever worker asks.
struct Dealer<'a> {
    todo: &'a [usize],
    next: AtomicUsize,
    stop: AtomicBool,
    ready: AtomicUsize,
    workers: usize,
}

impl Dealer<'_> {
    fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        (i < self.todo.len() && !self.stop.load(Ordering::SeqCst)).then(|| self.todo[i])
    }

    /// Wait until every worker is ready (or the sweep stops), so that a worker whose set-up is
    /// slower still gets its share.
    fn all_ready(&self) {
        self.ready.fetch_add(1, Ordering::SeqCst);
        while self.ready.load(Ordering::SeqCst) < self.workers && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// One worker's phase 2: cast and warm up, then points until none are left. `emit` returns false
/// when nobody listens any more.
fn work(strict: Strict, w: usize, dealer: &Dealer, emit: &mut dyn FnMut(Msg) -> bool) {
    let run = || -> Result<WorkerReport> {
        let mut r = strict.ready()?;
        // The static part of the report, for the saves made while points come in.
        emit(Msg::Ready { worker: w, report: r.report(0, 0.0, 0.0, 0.0, 0.0), samples: r.samples() });
        dealer.all_ready();
        let t0 = Instant::now();
        let (mut points, mut perturb, mut bn, mut curv) = (0, 0.0, 0.0, 0.0);
        while let Some(k) = dealer.take() {
            let out = r.eval(k)?;
            points += 1;
            perturb += out.perturb_seconds;
            bn += out.batchnorm_seconds;
            curv += out.curvature_seconds;
            if !emit(Msg::Point { worker: w, k, out, elapsed: t0.elapsed().as_secs_f64() }) {
                break;
            }
        }
        let report = r.report(points, t0.elapsed().as_secs_f64(), perturb, bn, curv);
        r.finish()?;
        Ok(report)
    };
    match run() {
        Ok(report) => {
            emit(Msg::Done { worker: w, report });
        }
        Err(e) => {
            dealer.stop.store(true, Ordering::SeqCst);
            emit(Msg::Failed(e));
        }
    }
}

/// The calling thread's side: records the values, saves the shard, reports progress.
struct Recorder<'a> {
    store: &'a mut ShardStore,
    observer: &'a mut dyn Observer,
    started: Instant,
    points: usize,
    reports: Vec<Option<WorkerReport>>,
    elapsed: Vec<f64>,
    counts: Vec<usize>,
    costs: (f64, f64, f64),
    /// Hessian-vector products so far (`--curvature`), and about the most one point takes.
    products: usize,
    max_products: usize,
    /// Gradient passes (sharpness ascent steps) so far, and their seconds.
    gradients: usize,
    gradient_seconds: f64,
    eval_started: Option<Instant>,
    evaluated: usize,
    failure: Option<Error>,
}

impl Recorder<'_> {
    /// Handle one message; false once the sweep must stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Ready { worker, report, samples } => {
                self.reports[worker] = Some(report);
                if self.reports.iter().all(Option::is_some) {
                    self.eval_started = Some(Instant::now());
                    self.observer.start(self.points, samples, self.max_products);
                }
            }
            Msg::Point { worker, k, out, elapsed } => {
                self.eval_started.get_or_insert_with(Instant::now);
                self.counts[worker] += 1;
                self.elapsed[worker] = elapsed;
                self.costs.0 += out.perturb_seconds;
                self.costs.1 += out.batchnorm_seconds;
                self.costs.2 += out.curvature_seconds;
                self.products += out.products;
                self.gradients += out.gradients;
                self.gradient_seconds += out.gradient_seconds;
                self.evaluated += 1;
                self.observer.point(out.loss, out.products);
                self.store.record(k, out.values);
                if let Err(e) = self.save(false) {
                    self.failure.get_or_insert(e);
                }
            }
            Msg::Done { worker, report } => self.reports[worker] = Some(report),
            Msg::Failed(e) => {
                self.failure.get_or_insert(e);
            }
        }
        self.failure.is_none()
    }

    /// This session's timing so far.
    fn timing(&self) -> ShardTiming {
        let (perturb, bn, curv) = self.costs;
        ShardTiming {
            setup_seconds: match self.eval_started {
                Some(t) => t.duration_since(self.started).as_secs_f64(),
                None => self.started.elapsed().as_secs_f64(),
            },
            eval_seconds: self.eval_started.map_or(0.0, |t| t.elapsed().as_secs_f64()),
            worker_seconds: self.elapsed.iter().sum(),
            perturb_seconds: perturb,
            batchnorm_seconds: bn,
            curvature_seconds: curv,
            curvature_products: self.products,
            gradients: self.gradients,
            gradient_seconds: self.gradient_seconds,
        }
    }

    /// The workers' reports with the points and seconds counted so far.
    fn reports(&self) -> Vec<WorkerReport> {
        self.reports
            .iter()
            .zip(self.counts.iter().zip(&self.elapsed))
            .filter_map(|(r, (&c, &e))| {
                r.clone().map(|mut r| {
                    r.points = r.points.max(c);
                    r.seconds = r.seconds.max(e);
                    r
                })
            })
            .collect()
    }

    fn save(&mut self, force: bool) -> Result<()> {
        let (timing, reports) = (self.timing(), self.reports());
        self.store.save(force, timing, &reports, peak_rss_mb())
    }
}

/// One `Strict` worker per device, opened in parallel when there are several (the first reusing
/// `first`, the probe session).
fn open_workers(spec: &RunSpec, devices: &[Device], first: Option<Session>) -> Result<Vec<Strict>> {
    if devices.len() == 1 {
        return Ok(vec![Strict::open(spec, devices[0], first)?]);
    }
    let mut first = first;
    std::thread::scope(|sc| {
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
    })
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
    let workers = open_workers(spec, devices, first)?;

    // Phase 2, the run's precision: cast, warm up, then the points, once every worker is ready.
    settings::apply(ProcessSettings { tf32: cuda && precision != Precision::Fp32, ..strict })?;
    let n = workers.len();
    let dealer = Dealer {
        todo: &todo,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        workers: n,
    };
    let mut rec = Recorder {
        store,
        observer,
        started,
        points: todo.len(),
        reports: vec![None; n],
        elapsed: vec![0.0; n],
        counts: vec![0; n],
        costs: (0.0, 0.0, 0.0),
        products: 0,
        // Lanczos steps, and the residual checks of λmax and λmin at the end.
        max_products: spec.plan.curvature.map_or(0, |c| c.max_steps + 2),
        gradients: 0,
        gradient_seconds: 0.0,
        eval_started: None,
        evaluated: 0,
        failure: None,
    };
    if n == 1 {
        let strict = workers.into_iter().next().expect("one worker");
        work(strict, 0, &dealer, &mut |msg| rec.handle(msg));
    } else {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::scope(|sc| {
            for (w, strict) in workers.into_iter().enumerate() {
                let tx = tx.clone();
                let dealer = &dealer;
                sc.spawn(move || work(strict, w, dealer, &mut |msg| tx.send(msg).is_ok()));
            }
            drop(tx);
            for msg in rx {
                if !rec.handle(msg) {
                    dealer.stop.store(true, Ordering::SeqCst);
                }
            }
        });
    }
    rec.observer.finish();
    // A failure of the run comes first; the progress saved before it is kept either way.
    let saved = rec.save(true);
    if let Some(e) = rec.failure.take() {
        return Err(e);
    }
    saved?;
    Ok(SweepReport { evaluated: rec.evaluated, workers: rec.reports() })
}
