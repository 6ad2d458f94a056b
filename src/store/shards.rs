//! A task's progress, saved so that a task killed at any instant and started again evaluates only
//! what is missing: `shards/<shard>.npy` ([m, 1 + C] float64: the point's index, then each
//! column's float32 bit pattern), `shards/<shard>.json` (a [`ShardFile`]) and `shards/<shard>.lock`
//! (held while a process evaluates the shard). `gather` reads every shard of a run back.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, Role};
use crate::space::shard::Shard;
use crate::store::atomic::{self, hostname, sync_dir, Lock};
use crate::store::npy;
use crate::store::record::{Quantity, ShardFile, ShardTiming, WorkerReport};

/// A task's progress in one shard, held under the shard's lock.
pub struct ShardStore {
    dir: PathBuf,
    pub shard: Shard,
    hash: String,
    columns: Vec<Quantity>,
    _lock: Lock,
    /// Values of the points done so far, by point index (one per column).
    pub done: BTreeMap<usize, Vec<f32>>,
    total: usize,
    every: Duration,
    last_save: Instant,
    unsaved: usize,
    /// Timing of the earlier sessions of this shard.
    earlier: ShardTiming,
    sessions: usize,
}

fn stem_file(dir: &Path, shard: Shard, ext: &str) -> PathBuf {
    dir.join(format!("{}.{ext}", shard.stem()))
}

impl ShardStore {
    /// Lock the shard (refusing if another process holds it) and read what was done before.
    pub fn open(
        run_dir: &Path,
        shard: Shard,
        hash: &str,
        columns: &[Quantity],
        total: usize,
        every: Duration,
    ) -> Result<ShardStore> {
        let dir = run_dir.join("shards");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "cannot create", e))?;
        let lock_path = stem_file(&dir, shard, "lock");
        let note = format!("pid {} on {}", std::process::id(), hostname());
        let Some(lock) = atomic::try_lock(&lock_path, &note)? else {
            return Err(Error::Busy { what: format!("shard {shard}"), dir: run_dir.to_path_buf(), lock: lock_path });
        };
        // Temporary files of this shard left by a killed process (we hold the lock: nobody else writes them).
        let stem = shard.stem();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!(".{stem}.")) && n.contains(".tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut store = ShardStore {
            dir,
            shard,
            hash: hash.to_string(),
            columns: columns.to_vec(),
            _lock: lock,
            done: BTreeMap::new(),
            total,
            every,
            last_save: Instant::now(),
            unsaved: 0,
            earlier: ShardTiming::default(),
            sessions: 0,
        };
        let json_path = stem_file(&store.dir, shard, "json");
        if json_path.exists() {
            let info = read_shard_file(&json_path, hash)?;
            store.earlier = info.timing;
            store.sessions = info.sessions;
            let npy = stem_file(&store.dir, shard, "npy");
            if npy.exists() {
                store.done = read_points(&npy, total, columns.len())?;
                if let Some(k) = store.done.keys().find(|&&k| !shard.owns(k)) {
                    return Err(Error::file(
                        Role::RunFile,
                        &npy,
                        format!("point {k} does not belong to shard {shard}"),
                    ));
                }
            }
        }
        Ok(store)
    }

    pub fn record(&mut self, k: usize, values: Vec<f32>) {
        self.done.insert(k, values);
        self.unsaved += 1;
    }

    /// The points of this shard still to evaluate.
    pub fn todo(&self) -> Vec<usize> {
        self.shard.points(self.total).into_iter().filter(|k| !self.done.contains_key(k)).collect()
    }

    /// Save if `every` has passed since the last save (or `force`): the points, then the JSON with
    /// this session's `timing` and `workers` added to the earlier sessions'. A failed write leaves
    /// the last saved files intact.
    pub fn save(&mut self, force: bool, timing: ShardTiming, workers: &[WorkerReport], rss: Option<f64>) -> Result<()> {
        if !force && (self.unsaved == 0 || self.last_save.elapsed() < self.every) {
            return Ok(());
        }
        let width = 1 + self.columns.len();
        let rows: Vec<f64> = self
            .done
            .iter()
            .flat_map(|(&k, v)| std::iter::once(k as f64).chain(v.iter().map(|x| x.to_bits() as f64)))
            .collect();
        let progress = |e: Error| match e {
            Error::Io { path, source, .. } => Error::Io { path, op: "cannot save progress", source },
            e => e,
        };
        npy::write(&stem_file(&self.dir, self.shard, "npy"), &[self.done.len() as u64, width as u64], &rows)
            .map_err(progress)?;
        let own = self.shard.points(self.total).len();
        let info = ShardFile {
            config_hash: self.hash.clone(),
            shard: self.shard,
            columns: self.columns.clone(),
            points_done: self.done.len(),
            points: own,
            complete: self.done.len() == own,
            host: hostname(),
            sessions: self.sessions + 1,
            timing: self.earlier + timing,
            workers: workers.to_vec(),
            peak_host_rss_mb: rss,
        };
        atomic::write_json(&stem_file(&self.dir, self.shard, "json"), &info).map_err(progress)?;
        sync_dir(&self.dir)?;
        self.unsaved = 0;
        self.last_save = Instant::now();
        Ok(())
    }
}

/// A shard's JSON, which must carry the run's config hash.
fn read_shard_file(path: &Path, hash: &str) -> Result<ShardFile> {
    let info: ShardFile = atomic::read_json(path)?;
    if info.config_hash != hash {
        return Err(Error::file(
            Role::RunFile,
            path,
            format!(
                "belongs to another configuration (hash {}, this run is {hash}); remove it or merge it elsewhere",
                info.config_hash
            ),
        ));
    }
    Ok(info)
}

/// The points of a shard's .npy: [m, 1 + columns] float64.
pub fn read_points(path: &Path, total: usize, columns: usize) -> Result<BTreeMap<usize, Vec<f32>>> {
    let a = npy::read(path)?;
    parse_points(&a, total, columns).map_err(|p| Error::file(Role::RunFile, path, p))
}

fn parse_points(
    a: &npy::Array,
    total: usize,
    columns: usize,
) -> std::result::Result<BTreeMap<usize, Vec<f32>>, String> {
    let width = 1 + columns;
    if a.shape.len() != 2 || a.shape[1] != width as u64 {
        return Err(format!("expected a [m, {width}] array, found {:?}", a.shape));
    }
    let mut out = BTreeMap::new();
    for r in a.values.chunks_exact(width) {
        let k = r[0];
        if !(k >= 0.0 && k < total as f64 && k.fract() == 0.0) {
            return Err(format!("point {k} is outside the run's {total} points"));
        }
        let bits = |v: f64| -> std::result::Result<f32, String> {
            if v >= 0.0 && v <= u32::MAX as f64 && v.fract() == 0.0 {
                Ok(f32::from_bits(v as u32))
            } else {
                Err(format!("value {v} is not a float32 bit pattern"))
            }
        };
        out.insert(k as usize, r[1..].iter().map(|&v| bits(v)).collect::<std::result::Result<Vec<_>, _>>()?);
    }
    Ok(out)
}

/// Every shard's progress in a run directory, checked against its config hash.
pub struct Gathered {
    pub points: BTreeMap<usize, Vec<f32>>,
    pub shards: Vec<ShardFile>,
}

pub fn gather(run_dir: &Path, hash: &str, total: usize, columns: usize) -> Result<Gathered> {
    let dir = run_dir.join("shards");
    let mut names: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect()
        }
        Err(_) => Vec::new(),
    };
    names.sort();
    let mut points = BTreeMap::new();
    let mut shards = Vec::new();
    for jp in names {
        let info = read_shard_file(&jp, hash)?;
        let npy = jp.with_extension("npy");
        if npy.exists() {
            points.extend(read_points(&npy, total, columns)?);
        }
        shards.push(info);
    }
    Ok(Gathered { points, shards })
}

/// Which shards miss points, in words (`shard 3/4: 5 of 5 points missing (never started)`).
pub fn missing_by_shard(g: &Gathered, total: usize) -> Vec<String> {
    let n_shards = g.shards.first().map_or(1, |s| s.shard.count);
    (0..n_shards)
        .filter_map(|i| {
            let sh = Shard { index: i, count: n_shards };
            let own = sh.points(total);
            let miss = own.iter().filter(|k| !g.points.contains_key(k)).count();
            (miss > 0).then(|| {
                let started = g.shards.iter().any(|s| s.shard == sh);
                format!(
                    "shard {sh}: {miss} of {} points missing{}",
                    own.len(),
                    if started { "" } else { " (never started)" }
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("losscape-shards-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const COLS: [Quantity; 2] = [Quantity::Loss, Quantity::Acc];

    #[test]
    fn progress_survives_a_restart_and_the_lock_keeps_a_second_process_out() {
        let d = tmp("restart");
        let sh = Shard { index: 1, count: 2 };
        let t = ShardTiming { worker_seconds: 2.0, ..Default::default() };
        {
            let mut s = ShardStore::open(&d, sh, "h1", &COLS, 9, Duration::ZERO).unwrap();
            assert_eq!(s.todo(), vec![1, 3, 5, 7]);
            s.record(3, vec![1.5, f32::NAN]);
            s.save(false, t, &[], None).unwrap();
            let e = ShardStore::open(&d, sh, "h1", &COLS, 9, Duration::ZERO).err().unwrap();
            assert!(matches!(e, Error::Busy { .. }), "{e}");
        }
        let s = ShardStore::open(&d, sh, "h1", &COLS, 9, Duration::ZERO).unwrap();
        assert_eq!(s.todo(), vec![1, 5, 7]);
        assert_eq!(s.done[&3][0], 1.5);
        assert!(s.done[&3][1].is_nan(), "bit patterns survive, NaN included");
        drop(s);
        let g = gather(&d, "h1", 9, 2).unwrap();
        assert_eq!(g.points.len(), 1);
        assert_eq!(g.shards[0].timing.worker_seconds, 2.0);
        assert_eq!(
            missing_by_shard(&g, 9),
            vec![
                "shard 0/2: 5 of 5 points missing (never started)".to_string(),
                "shard 1/2: 3 of 4 points missing".to_string()
            ]
        );
        let e = gather(&d, "other", 9, 2).err().unwrap().to_string();
        assert!(e.contains("another configuration"), "{e}");
    }

    #[test]
    fn sessions_add_their_timing() {
        let d = tmp("sessions");
        let t = ShardTiming { eval_seconds: 1.0, ..Default::default() };
        for _ in 0..3 {
            let mut s = ShardStore::open(&d, Shard::WHOLE, "h", &COLS, 4, Duration::ZERO).unwrap();
            s.save(true, t, &[], None).unwrap();
        }
        let g = gather(&d, "h", 4, 2).unwrap();
        assert_eq!((g.shards[0].sessions, g.shards[0].timing.eval_seconds), (3, 3.0));
    }

    proptest! {
        #[test]
        fn arbitrary_progress_arrays_fail_cleanly(shape in proptest::collection::vec(0u64..5, 0..3), values in proptest::collection::vec(any::<f64>(), 0..20)) {
            let a = npy::Array { shape, values };
            if let Ok(points) = parse_points(&a, 10, 2) {
                prop_assert!(points.keys().all(|&k| k < 10));
                prop_assert!(points.values().all(|v| v.len() == 2));
            }
        }

        #[test]
        fn arbitrary_shard_json_fails_cleanly(text in "\\PC{0,200}") {
            let d = std::env::temp_dir().join(format!("losscape-shardjson-{}-{:?}", std::process::id(), std::thread::current().id()));
            fs::create_dir_all(&d).unwrap();
            let p = d.join("s.json");
            fs::write(&p, &text).unwrap();
            if let Err(e) = read_shard_file(&p, "h") {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}
