//! Assemble a run from its shards: the arrays of the grid, each checkpoint's own loss where the run
//! has them, and meta.json (written last) with every task's record. The last task of a run to
//! finish calls it by itself; `losscape merge` calls it by hand.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::space::barrier;
use crate::store::npy;
use crate::store::record::{
    Description, FoldReport, LossCapMeta, Meta, NonFiniteMeta, Quantity, RunRecord, ShardTiming, ShardsMeta,
    SplitBarrier, Timing,
};
use crate::store::shards::{self, Gathered};
use crate::store::{atomic, files};

/// A complete run: its directory and meta.json.
#[derive(Debug, Clone)]
pub struct Summary {
    pub dir: PathBuf,
    pub meta: Meta,
}

/// Merge the run if every point has been evaluated; None if some are missing or another
/// process is merging it right now.
pub fn merge_if_complete(dir: &Path) -> Result<Option<Summary>> {
    let rec = RunRecord::read(dir)?;
    let total = rec.plan.total_points();
    let g = shards::gather(dir, &rec.config_hash, total, rec.plan.columns.len())?;
    if g.points.len() < total {
        return Ok(None);
    }
    merge_locked(dir, false)
}

/// Assemble the run in `dir`. Missing points are an error naming each incomplete shard, unless
/// `allow_partial` (then NaN, counted in meta.json).
pub fn merge(dir: &Path, allow_partial: bool) -> Result<Summary> {
    if !RunRecord::path(dir).exists() {
        return Err(Error::file(
            crate::error::Role::RunDir,
            dir,
            "no config.json: not a losscape run directory (or nothing was started in it yet)",
        ));
    }
    merge_locked(dir, allow_partial)?.ok_or_else(|| Error::Busy {
        what: "the merge".into(),
        dir: dir.to_path_buf(),
        lock: dir.join(files::SHARDS).join(files::MERGE_LOCK),
    })
}

fn merge_locked(dir: &Path, allow_partial: bool) -> Result<Option<Summary>> {
    let shard_dir = dir.join(files::SHARDS);
    std::fs::create_dir_all(&shard_dir).map_err(|e| Error::io(&shard_dir, "cannot create", e))?;
    let Some(_lock) = atomic::try_lock(&shard_dir.join(files::MERGE_LOCK), "merging")? else { return Ok(None) };
    let rec = RunRecord::read(dir)?;
    let total = rec.plan.total_points();
    let g = shards::gather(dir, &rec.config_hash, total, rec.plan.columns.len())?;
    let missing = total - g.points.len();
    if missing > 0 && !allow_partial {
        return Err(Error::Incomplete {
            dir: dir.to_path_buf(),
            missing,
            total,
            shards: shards::missing_by_shard(&g, total),
        });
    }
    let meta = assemble(dir, &rec, &g, missing)?;
    meta.write(dir)?;
    atomic::sync_dir(dir)?;
    Ok(Some(Summary { dir: dir.to_path_buf(), meta }))
}

/// Values of column `c` at points `range` (NaN, or 0 for flags, where missing).
fn column(g: &Gathered, c: usize, flag: bool, range: std::ops::Range<usize>) -> Vec<f32> {
    range.map(|k| g.points.get(&k).map_or(if flag { 0.0 } else { f32::NAN }, |v| v[c])).collect()
}

fn assemble(dir: &Path, rec: &RunRecord, g: &Gathered, missing: usize) -> Result<Meta> {
    let n = rec.plan.grid_points();
    let cols = &rec.plan.columns;
    let pos = |q: Quantity| cols.iter().position(|&c| c == q);
    // A connect run's (t, β) grid is written as the curve's and the line's arrays instead.
    let connect = rec.identity.kind == crate::store::record::RunKind::Connect;
    if let (Some(spec), false) = (&rec.plan.grid, connect) {
        write_grid(dir, &spec.grid(), cols, g)?;
    }
    if let Some(sp) = &rec.plan.sharpness {
        crate::store::sharpness::write(dir, rec, sp, n + rec.plan.states.len())?;
    }
    let loss = column(g, pos(Quantity::Loss).expect("every run has a loss column"), false, 0..n);
    let mut d = rec.description.clone();
    states_and_paths(dir, rec, g, &mut d)?;
    let finite = || loss.iter().copied().filter(|x| x.is_finite());
    let (nonfinite, nonfinite_meta) = nonfinite(rec, g, &loss, missing);
    let loss_cap = pos(Quantity::Capped).zip(rec.identity.loss_cap).map(|(c, cap)| LossCapMeta {
        cap,
        capped_points: column(g, c, true, 0..n).iter().filter(|&&f| f != 0.0).count(),
        meaning: "capped[j, i] = 1: the pass stopped early once its partial mean exceeded the cap; loss holds that \
                  lower bound and acc is NaN"
            .into(),
    });
    let first = g.shards.first().and_then(|s| s.workers.first());
    d.model.moving_tensors = first.map(|w| w.moving_tensors);
    let timing = g.shards.iter().fold(ShardTiming::default(), |t, s| t + s.timing);
    let rss = g.shards.iter().filter_map(|s| s.peak_host_rss_mb).reduce(f64::max);
    Ok(Meta {
        schema_version: crate::store::record::SCHEMA_VERSION,
        kind: rec.identity.kind,
        config_hash: rec.config_hash.clone(),
        loss_min: finite().reduce(f32::min),
        loss_max: finite().reduce(f32::max),
        nonfinite_points: nonfinite,
        nonfinite: nonfinite_meta,
        loss_cap,
        batch_size: first.map_or(0, |w| w.batch_size),
        precision_check: first.and_then(|w| w.precision_check.clone()),
        batchnorm_folding: first.map_or_else(FoldReport::default, |w| w.batchnorm_folding.clone()),
        // Samples evaluated per point: every split's.
        timing: Timing::of(timing, g.points.len(), d.data.n + d.splits.iter().skip(1).map(|s| s.data.n).sum::<usize>()),
        peak_host_rss_mb: rss,
        sampling: sampling_meta(rec, g, n, &d),
        shards: ShardsMeta {
            count: g.shards.len(),
            config_hash: rec.config_hash.clone(),
            missing_points: missing,
            note: (missing > 0).then(|| "merged with missing points: they are NaN in the arrays".to_string()),
            tasks: g.shards.clone(),
        },
        description: d,
    })
}

/// The checkpoints' own values (after the grid's points) into the description — a line's ends and
/// barriers, a connect run's curve and line, a plane's three models and curve, a trajectory's path
/// — with the arrays they come with, and each split's loss range.
fn states_and_paths(dir: &Path, rec: &RunRecord, g: &Gathered, d: &mut Description) -> Result<()> {
    let n = rec.plan.grid_points();
    let cols = &rec.plan.columns;
    let pos = |q: Quantity| cols.iter().position(|&c| c == q);
    let states = rec.plan.states.len();
    let state_loss = column(g, pos(Quantity::Loss).expect("loss"), false, n..n + states);
    let state_acc = match pos(Quantity::Acc) {
        Some(c) => column(g, c, false, n..n + states),
        None => vec![f32::NAN; states],
    };
    let own = |i: usize| {
        (Some(state_loss[i] as f64).filter(|v| !v.is_nan()), Some(state_acc[i] as f64).filter(|v| !v.is_nan()))
    };
    if let Some(l) = d.line.as_mut() {
        (l.from.loss, l.from.acc) = own(0);
        (l.to.loss, l.to.acc) = own(1);
        if let Some(spec) = &rec.plan.grid {
            l.barriers = path_barriers(&spec.grid().x, 0..n, &d.data, &d.splits, g, cols, n);
        }
    }
    if let (Some(c), Some(spec)) = (d.connect.as_mut(), &rec.plan.grid) {
        (c.from.loss, c.from.acc) = own(0);
        (c.to.loss, c.to.acc) = own(1);
        let value = |q: Quantity, range: std::ops::Range<usize>| pos(q).map(|k| column(g, k, false, range));
        let grid = spec.grid();
        crate::store::connect::write(dir, &grid, &d.data, &d.splits, &value)?;
        let nt = grid.x.len();
        c.curve_barriers = path_barriers(&grid.x, 0..nt, &d.data, &d.splits, g, cols, n);
        c.line_barriers = path_barriers(&grid.x, nt..2 * nt, &d.data, &d.splits, g, cols, n);
    }
    if let Some(p) = d.plane.as_mut() {
        for (i, s) in [&mut p.a, &mut p.b, &mut p.c].into_iter().enumerate() {
            (s.loss, s.acc) = own(i);
        }
        if let Some(c) = &p.curve {
            let path: Vec<f64> = c.path.iter().flatten().copied().collect();
            npy::write(&dir.join(files::PATH), &[c.path.len() as u64, 2], &path)?;
        }
    }
    if let Some(t) = &d.trajectory {
        let path: Vec<f64> = t.path_coords.iter().flatten().copied().collect();
        npy::write(&dir.join(files::PATH), &[states as u64, 2], &path)?;
        npy::write(&dir.join(files::PATH_LOSS), &[states as u64], &state_loss)?;
        npy::write(&dir.join(files::PATH_ACC), &[states as u64], &state_acc)?;
    }
    // Several splits: each one's loss range, and a trajectory's checkpoints on each.
    for sp in d.splits.iter_mut() {
        let values = |q: Quantity, range: std::ops::Range<usize>| pos(q).map(|c| column(g, c, false, range));
        if let Some(l) = values(Quantity::SplitLoss(sp.split), 0..n) {
            let finite = || l.iter().copied().filter(|x| x.is_finite());
            (sp.loss_min, sp.loss_max) = (finite().reduce(f32::min), finite().reduce(f32::max));
        }
        for (q, file) in [(Quantity::SplitLoss(sp.split), &sp.path_loss), (Quantity::SplitAcc(sp.split), &sp.path_acc)]
        {
            if let (Some(f), Some(v)) = (file, values(q, n..n + states)) {
                npy::write(&dir.join(f), &[states as u64], &v)?;
            }
        }
    }
    Ok(())
}

/// Points whose loss is not finite (missing points left out), and what caused them where it is
/// known (an interpolated BatchNorm variance below zero).
fn nonfinite(rec: &RunRecord, g: &Gathered, loss: &[f32], missing: usize) -> (usize, Option<NonFiniteMeta>) {
    let n = rec.plan.grid_points();
    let states = rec.plan.states.len();
    let nonfinite =
        loss.iter().filter(|x| !x.is_finite()).count() - loss.iter().filter(|x| x.is_nan()).count().min(missing);
    let negative = rec
        .plan
        .columns
        .iter()
        .position(|&c| c == Quantity::NegativeVariance)
        .map_or(0, |c| column(g, c, true, 0..n + states).iter().filter(|&&f| f != 0.0).count());
    let meta = (nonfinite > 0).then(|| NonFiniteMeta {
        points: nonfinite,
        cause: (negative > 0).then(|| {
            format!(
                "at {negative} point(s) a BatchNorm running variance, interpolated between the checkpoints, is \
                 negative, so eval mode takes the square root of a negative number"
            )
        }),
        hint: (negative > 0)
            .then(|| "re-estimate BatchNorm statistics at every point (batchnorm recompute)".to_string()),
    });
    (nonfinite, meta)
}

/// A path's barriers (store::record::SplitBarrier) on each split: the path's values at `t` are
/// the grid's points `path` (those with t in [0, 1] count), its ends the two checkpoints' own
/// values (points n and n + 1, after the grid's n). A line's path is the whole grid; a connect
/// run's curve and line are its two rows.
fn path_barriers(
    t: &[f64],
    path: std::ops::Range<usize>,
    data: &crate::store::record::DataMeta,
    splits: &[crate::store::record::SplitMeta],
    g: &Gathered,
    cols: &[Quantity],
    n: usize,
) -> Vec<SplitBarrier> {
    let of = |q: Quantity| -> Option<Vec<f64>> {
        let c = cols.iter().position(|&x| x == q)?;
        Some(column(g, c, false, 0..n + 2).into_iter().map(f64::from).collect())
    };
    let one = |split, loss: Option<Vec<f64>>, acc: Option<Vec<f64>>| {
        let measure = |v: Vec<f64>| barrier::barrier(t, &v[path.clone()], (v[n], v[n + 1]));
        SplitBarrier {
            split,
            loss: loss.and_then(measure),
            error: acc.map(|a| a.iter().map(|x| 1.0 - x).collect()).and_then(measure),
        }
    };
    if splits.is_empty() {
        return vec![one(data.split, of(Quantity::Loss), of(Quantity::Acc))];
    }
    splits
        .iter()
        .map(|sp| one(Some(sp.split), of(Quantity::SplitLoss(sp.split)), of(Quantity::SplitAcc(sp.split))))
        .collect()
}

/// meta.json's `sampling` of a `--rel-error` run: the samples its grid points used (on each split
/// of a run over several).
fn sampling_meta(
    rec: &RunRecord,
    g: &Gathered,
    n: usize,
    d: &Description,
) -> Option<crate::store::record::SamplingMeta> {
    let spec = rec.identity.sampling?;
    let used = |q: Quantity, total: usize| -> Option<(u64, u64, usize, usize)> {
        let c = rec.plan.columns.iter().position(|&x| x == q)?;
        let seen: Vec<u64> = column(g, c, false, 0..n).iter().filter(|x| x.is_finite()).map(|&x| x as u64).collect();
        let complete = seen.iter().filter(|&&k| k as usize == total).count();
        Some((seen.iter().sum(), (seen.len() * total) as u64, seen.len(), complete))
    };
    let (samples_used, samples_exact, points, complete_points) = used(Quantity::Samples, d.data.n)?;
    let splits = d
        .splits
        .iter()
        .filter_map(|sp| {
            let (u, e, _, c) = used(Quantity::SplitSamples(sp.split), sp.data.n)?;
            Some(crate::store::record::SplitSampling {
                split: sp.split,
                stderr: Quantity::SplitStderr(sp.split).file(),
                samples: Quantity::SplitSamples(sp.split).file(),
                samples_used: u,
                samples_exact: e,
                complete_points: c,
            })
        })
        .collect();
    Some(crate::store::record::SamplingMeta {
        spec,
        definition: "each point's pass visits the samples in one seeded order (the same at every point) and stops \
                     after the first batch at which the standard error of the loss (the ratio estimator's, with the \
                     finite-population correction) is <= rel_error x |loss| and at least min_samples were seen"
            .into(),
        stderr: Quantity::Stderr.file(),
        samples: Quantity::Samples.file(),
        samples_used,
        samples_exact,
        points,
        complete_points,
        splits,
    })
}

/// The grid's coordinates and every column's array over its points.
fn write_grid(dir: &Path, grid: &crate::space::grid::Grid, cols: &[Quantity], g: &Gathered) -> Result<()> {
    let (n, shape) = (grid.len(), grid.shape());
    npy::write(&dir.join(files::X), &[grid.x.len() as u64], &grid.x)?;
    if let Some(y) = &grid.y {
        npy::write(&dir.join(files::Y), &[y.len() as u64], y)?;
    }
    for (c, q) in cols.iter().enumerate() {
        let v = column(g, c, q.is_flag(), 0..n);
        match q {
            Quantity::Loss
            | Quantity::Acc
            | Quantity::EigMax
            | Quantity::EigMin
            | Quantity::SplitLoss(_)
            | Quantity::SplitAcc(_) => npy::write(&dir.join(q.file()), &shape, &v)?,
            Quantity::Capped => {
                npy::write(&dir.join(q.file()), &shape, &v.iter().map(|&x| x as u8).collect::<Vec<_>>())?
            }
            Quantity::Stderr | Quantity::SplitStderr(_) => npy::write(&dir.join(q.file()), &shape, &v)?,
            Quantity::Samples | Quantity::SplitSamples(_) => {
                npy::write(&dir.join(q.file()), &shape, &v.iter().map(|&x| x as u32).collect::<Vec<_>>())?
            }
            Quantity::NegativeVariance | Quantity::Sharpness => {}
        }
    }
    Ok(())
}
