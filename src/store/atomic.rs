//! Files that survive being killed at any instant: every file is written to a temporary sibling,
//! synced and renamed into place (then the directory is synced), and locks say which process
//! may write what.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result, Role};

/// Write `path` atomically: `fill` writes into a temporary sibling, which is synced and renamed.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, "cannot create", e))?;
        let mut w = BufWriter::new(f);
        fill(&mut w).map_err(|e| Error::io(path, "cannot write", e))?;
        w.flush().map_err(|e| Error::io(path, "cannot write", e))?;
        w.get_ref().sync_all().map_err(|e| Error::io(path, "cannot sync", e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, "cannot rename into place", e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
}

/// Read and parse a JSON file of type `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read", e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(Role::RunFile, path, format!("not what losscape wrote: {e}")))
}

/// fsync a directory, so that a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, "cannot sync", e))
}

/// An exclusive lock on a file, held until dropped (advisory, `flock`).
pub struct Lock {
    _file: File,
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, "cannot open", e))
}

/// Take the lock on `path`, waiting for another holder to let go.
pub fn lock(path: &Path) -> Result<Lock> {
    let f = open_lock(path)?;
    f.lock().map_err(|e| Error::io(path, "cannot lock", e))?;
    Ok(Lock { _file: f })
}

/// Take the lock on `path` if nobody holds it (None if somebody does), writing `note` into it.
pub fn try_lock(path: &Path, note: &str) -> Result<Option<Lock>> {
    let mut f = open_lock(path)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(None),
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(path, "cannot lock", e)),
    }
    let _ = f.set_len(0);
    let _ = writeln!(f, "{note}");
    Ok(Some(Lock { _file: f }))
}

/// This host's name (for the records of who evaluated what).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("losscape-atomic-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let d = tmp("fail");
        let p = d.join("a.json");
        write_json(&p, &serde_json::json!({"v": 1})).unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(r.unwrap_err().to_string().contains("disk full"));
        let v: serde_json::Value = read_json(&p).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "a temporary file was left behind");
    }

    #[test]
    fn a_held_lock_is_refused_and_released_on_drop() {
        let d = tmp("lock");
        let p = d.join("x.lock");
        let held = try_lock(&p, "me").unwrap().expect("free");
        assert!(try_lock(&p, "other").unwrap().is_none());
        drop(held);
        assert!(try_lock(&p, "other").unwrap().is_some());
        let e = read_json::<serde_json::Value>(&d.join("none.json")).unwrap_err().to_string();
        assert!(e.contains("none.json") && e.contains("cannot read"), "{e}");
    }
}
