//! Files a run writes: .npy arrays, meta.json, and the run directory's life cycle. Every file is
//! written to a temporary name, synced and renamed, and meta.json comes last: a run directory
//! with a meta.json is complete; one without is not.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// Write `path` atomically: `fill` writes into a temporary sibling, which is synced and renamed.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = BufWriter::new(f);
        fill(&mut w)?;
        w.flush().with_context(|| format!("{}: write failed", tmp.display()))?;
        w.get_ref().sync_all().with_context(|| format!("{}: sync failed", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An .npy file of `data` with `shape` (C order).
pub fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<u64>() as usize, data.len());
    write_atomic(path, |w| {
        let mut npy = npyz::WriteOptions::new().default_dtype().shape(shape).writer(w).begin_nd()?;
        npy.extend(data.iter().copied())?;
        npy.finish()?;
        Ok(())
    })
    .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        w.write_all(b"\n")?;
        Ok(())
    })
}

/// The output directory of a run in progress. Until `commit`, dropping it removes what this run
/// wrote (and the directory itself if this run created it), so a failed run leaves nothing that
/// looks complete.
pub struct RunDir {
    pub path: PathBuf,
    created: bool,
    written: Vec<PathBuf>,
    committed: bool,
}

impl RunDir {
    /// Check that `path` can receive a run: it must not hold a complete run (meta.json) unless
    /// `overwrite`, in which case the old meta.json is removed first.
    pub fn check(path: &Path, overwrite: bool) -> Result<()> {
        if path.exists() && !path.is_dir() {
            bail!("--out {}: exists and is not a directory", path.display());
        }
        if path.join("meta.json").exists() && !overwrite {
            bail!("--out {}: already holds a complete run (meta.json); pass --overwrite to replace it", path.display());
        }
        Ok(())
    }

    pub fn create(path: &Path, overwrite: bool) -> Result<RunDir> {
        RunDir::check(path, overwrite)?;
        let created = !path.exists();
        fs::create_dir_all(path).with_context(|| format!("--out {}: cannot create directory", path.display()))?;
        let meta = path.join("meta.json");
        if meta.exists() {
            fs::remove_file(&meta)
                .with_context(|| format!("{}: cannot remove the old run's meta.json", meta.display()))?;
        }
        Ok(RunDir { path: path.to_path_buf(), created, written: Vec::new(), committed: false })
    }

    /// Path of an output file, remembered for clean-up on failure.
    pub fn file(&mut self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        self.written.push(p.clone());
        p
    }

    /// Write meta.json (last) and keep everything.
    pub fn commit(mut self, meta: &serde_json::Value) -> Result<()> {
        let p = self.file("meta.json");
        write_json(&p, meta)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for p in &self.written {
            let _ = fs::remove_file(p);
        }
        if self.created {
            let _ = fs::remove_dir(&self.path);
        }
    }
}
