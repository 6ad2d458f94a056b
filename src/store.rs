//! A run directory that several processes fill and that survives being killed:
//! `config.json` (what the run is; its hash identifies it), `directions.safetensors`, and per shard
//! `shards/<shard>.npy` (the points done so far: index, loss and accuracy bits, capped flag) with
//! `shards/<shard>.json` (its config hash and timing) and `shards/<shard>.lock` (held while a
//! process evaluates it). Every file is replaced atomically (temporary file, fsync, rename, fsync
//! of the directory); files that must be made once are published with a hard link, which fails
//! if another process got there first.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::output::write_npy;
use crate::shard::Shard;

/// One evaluated point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub loss: f32,
    pub acc: f32,
    pub capped: bool,
}

/// What a run is: the fields that determine its values (`identity`, hashed) and the descriptive
/// part of meta.json that `merge` writes out (`meta`).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub identity: Value,
    pub meta: Value,
}

impl RunConfig {
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(serde_json::to_vec(&self.identity).expect("json"));
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    fn to_json(&self) -> Value {
        json!({"config_hash": self.hash(), "identity": self.identity, "meta": self.meta})
    }

    pub fn read(dir: &Path) -> Result<RunConfig> {
        let p = dir.join("config.json");
        let v: Value =
            serde_json::from_str(&fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?)
                .with_context(|| format!("{}: not valid JSON", p.display()))?;
        Ok(RunConfig { identity: v["identity"].clone(), meta: v["meta"].clone() })
    }
}

/// fsync a directory, so that a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot sync", dir.display()))
}

/// Write `path` only if it does not exist yet, race-free: fill a temporary file, then hard-link it
/// into place. Returns false when another process published it first.
pub fn publish(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<bool> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.publish-{}{ext}", std::process::id()));
    let result = (|| {
        fill(&tmp)?;
        File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot sync", tmp.display()))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("{}: cannot publish", path.display())),
        }
    })();
    let _ = fs::remove_file(&tmp);
    if let Ok(true) = result {
        if let Some(d) = path.parent() {
            sync_dir(d)?;
        }
    }
    result
}

/// The first key (dotted path) where two JSON values differ.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, Value, Value)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                first_difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &p)
            })
        }
        _ if a == b => None,
        _ => Some((at.to_string(), a.clone(), b.clone())),
    }
}

/// Make `dir/config.json` for `cfg`, or check that the one there describes the same run.
pub fn publish_config(dir: &Path, cfg: &RunConfig) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create directory", dir.display()))?;
    let path = dir.join("config.json");
    let fresh = if path.exists() {
        false
    } else {
        publish(&path, |tmp| {
            let mut f = File::create(tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
            serde_json::to_writer_pretty(&mut f, &cfg.to_json())?;
            f.write_all(b"\n")?;
            Ok(())
        })?
    };
    if !fresh {
        let old = RunConfig::read(dir)?;
        if let Some((key, was, now)) = first_difference(&old.identity, &cfg.identity, "") {
            bail!(
                "--out {} holds a run of another configuration ({key}: {was} there, {now} here); \
                 use another --out, or --overwrite to start it again",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Progress of one shard, held under its lock.
pub struct ShardStore {
    dir: PathBuf,
    pub shard: Shard,
    hash: String,
    _lock: File,
    pub done: BTreeMap<usize, Point>,
    total: usize,
    every: Duration,
    last_save: Instant,
    unsaved: usize,
    /// Evaluation seconds of earlier sessions of the shard (this one's run from `session`).
    pub eval_seconds: f64,
    session: Option<Instant>,
    /// Seconds spent forming perturbed parameters in earlier sessions.
    pub perturb_base: f64,
    pub info: Value,
    /// Fields added to every save of the shard's JSON.
    pub extra: Value,
}

impl ShardStore {
    /// Lock the shard (refusing if another process holds it) and read what was done before.
    pub fn open(run_dir: &Path, shard: Shard, hash: &str, total: usize, every: Duration) -> Result<ShardStore> {
        let dir = run_dir.join("shards");
        fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        let stem = shard.stem();
        let lock_path = dir.join(format!("{stem}.lock"));
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("{}: cannot open", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => bail!(
                "shard {shard} of {} is being evaluated by another process right now (it holds {}); not starting a second one",
                run_dir.display(),
                lock_path.display()
            ),
            Err(fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("{}: cannot lock", lock_path.display())),
        }
        // Temporary files of this shard left by a killed process (we hold the lock: nobody else writes them).
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!(".{stem}.")) && n.contains(".tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "pid {} on {}", std::process::id(), hostname());
        let mut store = ShardStore {
            dir,
            shard,
            hash: hash.to_string(),
            _lock: lock,
            done: BTreeMap::new(),
            total,
            every,
            last_save: Instant::now(),
            unsaved: 0,
            eval_seconds: 0.0,
            session: None,
            perturb_base: 0.0,
            info: json!({}),
            extra: json!({}),
        };
        let json_path = store.dir.join(format!("{stem}.json"));
        if json_path.exists() {
            let info = read_shard_info(&json_path, hash)?;
            store.eval_seconds = info["eval_seconds"].as_f64().unwrap_or(0.0);
            store.perturb_base = info["perturb_seconds"].as_f64().unwrap_or(0.0);
            let npy = store.dir.join(format!("{stem}.npy"));
            if npy.exists() {
                store.done = read_points(&npy, total)?;
                for &k in store.done.keys() {
                    if k % shard.count != shard.index {
                        bail!("{}: point {k} does not belong to shard {shard}", npy.display());
                    }
                }
            }
        }
        Ok(store)
    }

    /// Start timing this session's evaluation (added to the earlier sessions' in every save).
    pub fn start_session(&mut self) {
        self.session = Some(Instant::now());
    }

    fn total_eval_seconds(&self) -> f64 {
        self.eval_seconds + self.session.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    pub fn record(&mut self, k: usize, p: Point) {
        self.done.insert(k, p);
        self.unsaved += 1;
    }

    /// Save if `every` has passed since the last save (or `force`); errors keep the last file intact.
    pub fn maybe_save(&mut self, force: bool, extra: &Value) -> Result<()> {
        if self.unsaved == 0 && !force {
            return Ok(());
        }
        if !force && self.last_save.elapsed() < self.every {
            return Ok(());
        }
        let stem = self.shard.stem();
        let rows: Vec<f64> = self
            .done
            .iter()
            .flat_map(|(&k, p)| [k as f64, p.loss.to_bits() as f64, p.acc.to_bits() as f64, p.capped as u8 as f64])
            .collect();
        let npy = self.dir.join(format!("{stem}.npy"));
        write_npy(&npy, &[self.done.len() as u64, 4], &rows)
            .with_context(|| format!("cannot save progress to {}", npy.display()))?;
        let own = self.shard.points(self.total).len();
        let mut info = json!({
            "config_hash": self.hash,
            "shard": self.shard,
            "points_done": self.done.len(),
            "points": own,
            "complete": self.done.len() == own,
            "eval_seconds": self.total_eval_seconds(),
            "host": hostname(),
            "columns": "shards/<shard>.npy [m, 4] float64: point index (row-major), loss bits, accuracy bits (float32 bit patterns), capped",
        });
        for e in [&self.extra, extra] {
            if let (Value::Object(m), Value::Object(e)) = (&mut info, e) {
                m.extend(e.clone());
            }
        }
        let jp = self.dir.join(format!("{stem}.json"));
        crate::output::write_json(&jp, &info).with_context(|| format!("cannot save progress to {}", jp.display()))?;
        sync_dir(&self.dir)?;
        self.info = info;
        self.unsaved = 0;
        self.last_save = Instant::now();
        Ok(())
    }
}

/// A shard's JSON, which must carry the run's config hash.
fn read_shard_info(path: &Path, hash: &str) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let info: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    if info["config_hash"].as_str() != Some(hash) {
        bail!(
            "{} belongs to another configuration (hash {}, this run is {hash}); remove it or merge it elsewhere",
            path.display(),
            info["config_hash"]
        );
    }
    Ok(info)
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn read_points(npy: &Path, total: usize) -> Result<BTreeMap<usize, Point>> {
    // Read as float64 exactly (the loss and accuracy columns are float32 bit patterns).
    let f = File::open(npy).with_context(|| format!("{}: cannot open", npy.display()))?;
    let arr = npyz::NpyFile::new(std::io::BufReader::new(f))
        .with_context(|| format!("{}: not an .npy file", npy.display()))?;
    let shape = arr.shape().to_vec();
    if shape.len() != 2 || shape[1] != 4 {
        bail!("{}: expected a [m, 4] array, found {:?}", npy.display(), shape);
    }
    let v: Vec<f64> = arr.into_vec().with_context(|| format!("{}: not a float64 array", npy.display()))?;
    let mut out = BTreeMap::new();
    for r in v.chunks_exact(4) {
        let k = r[0] as usize;
        if k >= total {
            bail!("{}: point {k} is outside the grid of {total} points", npy.display());
        }
        out.insert(
            k,
            Point { loss: f32::from_bits(r[1] as u32), acc: f32::from_bits(r[2] as u32), capped: r[3] != 0.0 },
        );
    }
    Ok(out)
}

/// Every shard's progress in a run directory, checked against its config hash.
pub struct Gathered {
    pub points: BTreeMap<usize, Point>,
    pub shards: Vec<Value>,
}

pub fn gather(run_dir: &Path, hash: &str, total: usize) -> Result<Gathered> {
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
        let info = read_shard_info(&jp, hash)?;
        let npy = jp.with_extension("npy");
        if npy.exists() {
            for (k, p) in read_points(&npy, total)? {
                points.insert(k, p);
            }
        }
        shards.push(info);
    }
    Ok(Gathered { points, shards })
}

/// Remove the files of an earlier run (for --overwrite), leaving anything else in the directory.
pub fn clear_run(dir: &Path, keep: Option<&Path>) -> Result<()> {
    // meta.json first: from here on the directory no longer looks complete.
    for name in
        ["meta.json", "config.json", "directions.safetensors", "loss.npy", "acc.npy", "x.npy", "y.npy", "capped.npy"]
    {
        let p = dir.join(name);
        if keep.is_some_and(|k| fs::canonicalize(k).ok() == fs::canonicalize(&p).ok()) {
            continue;
        }
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
        }
    }
    let shards = dir.join("shards");
    if shards.exists() {
        fs::remove_dir_all(&shards).with_context(|| format!("{}: cannot remove", shards.display()))?;
    }
    Ok(())
}

/// Write the merged arrays of a run directory (x, y, loss, acc, capped).
pub fn write_arrays(
    dir: &Path,
    grid: &crate::grid::Grid,
    loss: &[f32],
    acc: &[f32],
    capped: Option<&[u8]>,
) -> Result<()> {
    write_npy(&dir.join("x.npy"), &[grid.x.len() as u64], &grid.x)?;
    if let Some(y) = &grid.y {
        write_npy(&dir.join("y.npy"), &[y.len() as u64], y)?;
    }
    let shape = grid.shape();
    write_npy(&dir.join("loss.npy"), &shape, loss)?;
    write_npy(&dir.join("acc.npy"), &shape, acc)?;
    if let Some(c) = capped {
        write_npy(&dir.join("capped.npy"), &shape, c)?;
    }
    Ok(())
}
