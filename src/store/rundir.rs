//! A run directory's life, the same for every command: refused when the path is a file, created
//! when missing (and removed again when the process fails before anything worth keeping is in
//! it), set up under one lock by whichever task gets there first, cleared of an earlier run's
//! outputs for `--overwrite`, complete once meta.json is there.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Role};
use crate::store::atomic::{self, Lock};
use crate::store::files;

/// A run directory this process works in.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// This process created it and nothing worth keeping is in it yet: removed on drop.
    remove_on_drop: bool,
}

impl RunDir {
    /// Refuse a path that exists and is not a directory.
    pub fn check(path: &Path) -> Result<()> {
        if path.exists() && !path.is_dir() {
            return Err(Error::file(Role::RunDir, path, "exists and is not a directory"));
        }
        Ok(())
    }

    /// Open `path` as a run directory, creating it if missing.
    pub fn create(path: &Path) -> Result<RunDir> {
        RunDir::check(path)?;
        let fresh = !path.exists();
        fs::create_dir_all(path).map_err(|e| Error::file(Role::RunDir, path, format!("cannot create: {e}")))?;
        Ok(RunDir { path: path.to_path_buf(), remove_on_drop: fresh })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on the directory stays, whatever happens (it holds saved work).
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }

    /// Whether `path` holds a complete run (its meta.json).
    pub fn is_complete(path: &Path) -> bool {
        path.join(files::META).exists()
    }

    /// The lock under which a run is established (its configuration and direction files written
    /// or checked): one task at a time.
    pub fn setup_lock(&self) -> Result<Lock> {
        atomic::lock(&self.path.join(files::SETUP_LOCK))
    }

    /// Remove an earlier run's outputs (meta.json first: from then on the directory no longer
    /// looks complete), its shards and their progress; files that are not outputs of a run, and
    /// `spare` (a direction file the user gave), stay.
    pub fn clear(&self, spare: Option<&Path>) -> Result<()> {
        let meta = self.path.join(files::META);
        if meta.exists() {
            fs::remove_file(&meta).map_err(|e| Error::io(&meta, "cannot remove", e))?;
        }
        let spare = spare.and_then(|k| fs::canonicalize(k).ok());
        let entries = fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, "cannot read", e))?;
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !files::is_output(&name) || !p.is_file() || spare.is_some() && fs::canonicalize(&p).ok() == spare {
                continue;
            }
            fs::remove_file(&p).map_err(|e| Error::io(&p, "cannot remove", e))?;
        }
        for sub in [files::SHARDS, files::ITEMS, files::WORST_DIR, files::TRAIN] {
            let d = self.path.join(sub);
            if d.exists() {
                fs::remove_dir_all(&d).map_err(|e| Error::io(&d, "cannot remove", e))?;
            }
        }
        Ok(())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("losscape-rundir-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_fresh_directory_goes_away_on_failure_and_stays_once_kept() {
        let d = tmp("fresh");
        drop(RunDir::create(&d).unwrap());
        assert!(!d.exists(), "a failed fresh run left its directory");
        let mut r = RunDir::create(&d).unwrap();
        r.keep();
        drop(r);
        assert!(d.exists());
        // A directory that was there before is never removed.
        drop(RunDir::create(&d).unwrap());
        assert!(d.exists());
        let f = tmp("file");
        fs::write(&f, b"x").unwrap();
        let e = RunDir::create(&f).unwrap_err().to_string();
        assert!(e.contains("not a directory") && !e.contains('\n'), "{e}");
        let _ = fs::remove_dir_all(&d);
        let _ = fs::remove_file(&f);
    }

    #[test]
    fn clearing_removes_a_runs_outputs_only() {
        let d = tmp("clear");
        let r = RunDir::create(&d).unwrap();
        fs::create_dir_all(d.join("shards")).unwrap();
        for f in ["meta.json", "config.json", "loss.npy", "loss.test.npy", "eig_min.npy", "curvature.png"] {
            fs::write(d.join(f), b"x").unwrap();
        }
        for f in ["directions.safetensors", "notes.txt", "mine.png.bak"] {
            fs::write(d.join(f), b"x").unwrap();
        }
        r.clear(Some(&d.join("directions.safetensors"))).unwrap();
        let mut left: Vec<String> =
            fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["directions.safetensors", "mine.png.bak", "notes.txt"]);
        r.clear(None).unwrap();
        assert!(!d.join("directions.safetensors").exists());
        let _ = fs::remove_dir_all(&d);
    }
}
