//! What every grid command does once it knows its run: establish the run directory (config.json
//! made once, under a lock, by whichever task gets there first; any other task checks that it is
//! the same run), evaluate this task's shard through the sweep, and merge when every point is in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tch::Device;

use crate::engine::session::Session;
use crate::engine::sweep::{self, Observer, SweepReport};
use crate::engine::worker::RunSpec;
use crate::error::{Error, Result};
use crate::space::shard::Shard;
use crate::store::atomic;
pub use crate::store::merge::Summary;
use crate::store::merge::{self};
use crate::store::record::{Description, Identity, Meta, Plan, RunRecord};
use crate::store::rundir::RunDir;
use crate::store::shards::{self, ShardStore};

/// How this process takes part in a run.
#[derive(Debug, Clone)]
pub struct Task {
    /// The run directory.
    pub out: PathBuf,
    /// Start the run afresh, removing an earlier run's files.
    pub overwrite: bool,
    /// This task's share of the points.
    pub shard: Shard,
    /// One worker per device (several CPU entries: CPU worker threads).
    pub devices: Vec<Device>,
    /// Save progress at most this often (and at the end).
    pub save_every: Duration,
    /// Only set the run directory up (config.json and directions) for other tasks to fill.
    pub prepare_only: bool,
    /// The command line, recorded in meta.json.
    pub argv: Vec<String>,
}

impl Task {
    /// One CPU worker evaluating the whole run into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Task {
        Task {
            out: out.into(),
            overwrite: false,
            shard: Shard::WHOLE,
            devices: vec![Device::Cpu],
            save_every: Duration::from_secs(5),
            prepare_only: false,
            argv: Vec::new(),
        }
    }
}

/// How a task ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every point is in; this task merged the run.
    Complete(Summary),
    /// The directory already held this run, complete: nothing was done.
    AlreadyComplete(Summary),
    /// This task's shard is done; others are not yet.
    ShardDone { shard: Shard, points: usize, missing: usize },
    /// `prepare_only`: the directory is set up for the shards.
    Prepared { points: usize },
}

impl Outcome {
    /// The summary of a complete run, if it is one.
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Outcome::Complete(s) | Outcome::AlreadyComplete(s) => Some(s),
            _ => None,
        }
    }
}

/// Makes a run's plan and description, writing its direction file into the directory given.
pub type Prepare<'a> = Box<dyn FnOnce(&Path, &Session) -> Result<(Plan, Description)> + 'a>;

/// A run whose identity is known (cheap to compute, from the inputs) and whose plan and
/// description are made once, by the first task (`prepare` may be costly, e.g. a PCA, and
/// writes the run's direction file into the directory it is given).
pub struct Establish<'a> {
    pub identity: Identity,
    /// A directions file given by the user, spared by `overwrite`.
    pub keep: Option<&'a Path>,
    pub prepare: Prepare<'a>,
}

/// Establish the run in `task.out`, evaluate this task's shard, merge if complete.
pub fn run(
    task: &Task,
    setup: &crate::engine::session::Setup,
    probe: Session,
    est: Establish,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let started = probe.started;
    let out = &task.out;
    RunDir::check(out)?;
    // A complete run of the same identity: nothing to do. (A merge that allowed missing points
    // leaves a meta.json that counts them: not complete.)
    if !task.overwrite {
        if let (Ok(meta), Ok(rec)) = (Meta::read(out), RunRecord::read(out)) {
            if meta.shards.missing_points == 0 && rec.identity == est.identity {
                return Ok(Outcome::AlreadyComplete(Summary { dir: out.clone(), meta }));
            }
        }
        if Meta::path(out).exists() && !RunRecord::path(out).exists() {
            return Err(Error::Complete { dir: out.clone() });
        }
    }
    let mut dir = RunDir::create(out)?;
    let record = {
        let _lock = dir.setup_lock()?;
        if task.overwrite {
            dir.clear(est.keep)?;
        }
        if RunRecord::path(out).exists() {
            let old = RunRecord::read(out)?;
            if let Some((field, there, here)) = old.identity.first_difference(&est.identity) {
                return Err(Error::OtherRun { dir: out.clone(), field, there, here });
            }
            old
        } else {
            let (plan, description) = (est.prepare)(out, &probe)?;
            let rec = RunRecord::new(est.identity, plan, description);
            rec.write(out)?;
            atomic::sync_dir(out)?;
            rec
        }
    };
    let total = record.plan.total_points();
    if task.prepare_only {
        dir.keep();
        return Ok(Outcome::Prepared { points: total });
    }
    let mut store =
        ShardStore::open(out, task.shard, &record.config_hash, &record.plan.columns, total, task.save_every)?;
    if !store.done.is_empty() {
        log::info!("shard {}: {} points already done, {} to go", task.shard, store.done.len(), store.todo().len());
    }
    let spec = RunSpec { run_dir: out, plan: &record.plan, setup };
    let swept: Result<SweepReport> = sweep::sweep(&spec, &mut store, &task.devices, Some(probe), started, observer);
    if !store.done.is_empty() {
        dir.keep();
    }
    swept?;
    dir.keep();
    let missing_here = store.todo().len();
    drop(store);
    if missing_here > 0 {
        return Err(Error::other(format!("shard {}: {missing_here} points were not evaluated", task.shard)));
    }
    // The last task to finish assembles the run.
    match merge::merge_if_complete(out)? {
        Some(s) => Ok(Outcome::Complete(s)),
        None => {
            let g = shards::gather(out, &record.config_hash, total, record.plan.columns.len())?;
            Ok(Outcome::ShardDone {
                shard: task.shard,
                points: task.shard.points(total).len(),
                missing: total - g.points.len(),
            })
        }
    }
}
