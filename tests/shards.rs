//! Sharded and resumable runs: SLURM array positions, shards and merge, directions made once,
//! configuration checks, kill -9 and resume, disk full, duplicate shards, worker threads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use losscape::shard::Shard;

use crate::common::{fxp, losscape, npy, ok, out_dir};

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
}

#[test]
fn shard_positions_in_dense_sparse_and_irregular_arrays() {
    assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
    let dense = [
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_MAX", "3"),
    ];
    assert_eq!(Shard::from_env(env(&dense)).unwrap(), Some(Shard { index: 2, count: 4 }));
    // --array=1-7:2 runs IDs 1, 3, 5, 7: ID 5 is the third task, not ID - MIN = 4.
    let sparse = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "7"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
    ];
    assert_eq!(Shard::from_env(env(&sparse)).unwrap(), Some(Shard { index: 2, count: 4 }));
    // --array=1,4,9: no even spacing, so no guess.
    let irregular = [
        ("SLURM_ARRAY_TASK_ID", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "9"),
    ];
    assert!(Shard::from_env(env(&irregular)).unwrap_err().to_string().contains("--shard"));
    assert_eq!("3/4".parse::<Shard>().unwrap(), Shard { index: 3, count: 4 });
    for bad in ["4/4", "1", "a/b", "0/0"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    // Shares: every point exactly once, sizes within one of each other.
    let mut all: Vec<usize> = (0..4).flat_map(|i| Shard { index: i, count: 4 }.points(23)).collect();
    all.sort();
    assert_eq!(all, (0..23).collect::<Vec<_>>());
}

fn base(out: &Path) -> Vec<String> {
    [
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--x=-1:1:5",
        "--y=-1:1:4",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--no-plots",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String], extra: &[&str]) -> std::process::Output {
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend_from_slice(extra);
    losscape(&a)
}

fn loss_of(dir: &Path) -> Vec<u32> {
    npy(&dir.join("loss.npy")).1.iter().map(|v| (*v as f32).to_bits()).collect()
}

/// The uninterrupted single-process run of `base`, computed once.
fn reference() -> Vec<u32> {
    static R: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let d = out_dir("shard-reference");
        ok(&run(&base(&d), &[]));
        loss_of(&d)
    })
    .clone()
}

#[test]
fn shards_merge_to_the_single_process_result_and_report_what_is_missing() {
    let d = out_dir("sharded");
    let args = base(&d);
    ok(&losscape(
        &args.iter().map(String::as_str).map(|a| if a == "surface" { "directions" } else { a }).collect::<Vec<_>>(),
    ));
    let dirs = std::fs::metadata(d.join("directions.safetensors")).unwrap().modified().unwrap();
    for i in 0..3 {
        ok(&run(&args, &["--shard", &format!("{i}/4")]));
    }
    assert_eq!(
        std::fs::metadata(d.join("directions.safetensors")).unwrap().modified().unwrap(),
        dirs,
        "directions were made again"
    );
    assert!(!d.join("meta.json").exists(), "incomplete run looks complete");
    let o = losscape(&["merge", d.to_str().unwrap(), "-q"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("5 of 20 points missing") && e.contains("shard 3/4: 5 of 5 points missing (never started)"),
        "{e}"
    );
    let o = losscape(&["merge", d.to_str().unwrap(), "--allow-partial", "-q", "--no-plots"]);
    ok(&o);
    let (_, partial) = npy(&d.join("loss.npy"));
    assert_eq!(partial.iter().filter(|v| v.is_nan()).count(), 5);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    assert_eq!(m["shards"]["missing_points"], 5);
    // The last shard completes the run and merges it by itself.
    ok(&run(&args, &["--shard", "3/4"]));
    assert_eq!(loss_of(&d), reference(), "sharded run differs from the single-process one");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    assert_eq!(m["shards"]["count"], 4);
    assert_eq!(m["shards"]["missing_points"], 0);
    // A shard of another configuration: refused by name.
    let e = String::from_utf8_lossy(&run(&args, &["--shard", "1/4", "--precision", "bf16"]).stderr).to_string();
    assert!(e.contains("another configuration") && e.contains("precision"), "{e}");
    // A shard file from another run offered to merge.
    let other = out_dir("sharded-other");
    let mut oargs = base(&other);
    let i = oargs.iter().position(|a| a == "5").unwrap();
    oargs[i] = "6".into();
    ok(&run(&oargs, &["--shard", "0/2"]));
    std::fs::copy(other.join("shards/shard-0000-of-0002.json"), d.join("shards/shard-0000-of-0002.json")).unwrap();
    let o = losscape(&["merge", d.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && e.contains("shard-0000-of-0002.json") && e.contains("another configuration"),
        "{e}"
    );
}

fn progress_rows(dir: &Path, stem: &str) -> usize {
    let p = dir.join("shards").join(format!("{stem}.npy"));
    if !p.exists() {
        return 0;
    }
    std::fs::read(&p).map(|b| if b.len() > 128 { (b.len() - 128) / 32 } else { 0 }).unwrap_or(0)
}

fn spawn(args: &[String], extra: &[&str]) -> Child {
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_losscape")).args(&a).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// A slower 1-D grid (60 points) so that kills land mid-run.
fn long(out: &Path) -> Vec<String> {
    [
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--x=-1:1:60",
        "--seed",
        "2",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "0",
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--no-plots",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn kill_9_at_any_moment_then_resume_loses_nothing_and_changes_nothing() {
    let whole = out_dir("resume-whole");
    ok(&run(&long(&whole), &[]));
    let d = out_dir("resume-killed");
    let args = long(&d);
    // First kill once some points are saved, then several kills at arbitrary moments (mid-point,
    // mid-write), then a final run to the end.
    let mut child = spawn(&args, &[]);
    let t = Instant::now();
    while progress_rows(&d, "shard-0000-of-0001") < 5 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = progress_rows(&d, "shard-0000-of-0001");
    assert!((5..60).contains(&saved), "{saved} points saved before the kill");
    for delay_ms in [700, 1100, 1500, 1900] {
        let mut c = spawn(&args, &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = c.kill();
        c.wait().unwrap();
    }
    let before = progress_rows(&d, "shard-0000-of-0001");
    assert!(before >= saved, "progress went backwards: {before} < {saved}");
    ok(&run(&args, &[]));
    assert_eq!(loss_of(&d), loss_of(&whole), "resumed run differs from the uninterrupted one");
}

#[test]
fn a_resumed_shard_only_computes_the_missing_points() {
    let d = out_dir("resume-count");
    let args = long(&d);
    let mut child = spawn(&args, &[]);
    let t = Instant::now();
    while progress_rows(&d, "shard-0000-of-0001") < 10 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = progress_rows(&d, "shard-0000-of-0001");
    let loud: Vec<String> = args.iter().filter(|a| *a != "-q").cloned().collect();
    let e = ok(&run(&loud, &[]));
    assert!(e.contains(&format!("{done} points already done, {} to go", 60 - done)), "{e}");
    assert!(
        e.contains(&format!("{}/{} points", 60 - done, 60 - done)),
        "progress should count only the missing points: {e}"
    );
}

#[test]
fn a_second_process_on_the_same_shard_is_refused() {
    let d = out_dir("dup-shard");
    let args = base(&d);
    ok(&run(&args, &["--shard", "0/2"]));
    // Hold shard 1/2's lock as a running task would.
    std::fs::create_dir_all(d.join("shards")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(d.join("shards/shard-0001-of-0002.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let o = run(&args, &["--shard", "1/2"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("shard 1/2") && e.contains("another process"), "{e}");
    drop(lock);
    // A finished shard run again: nothing to compute, nothing changes.
    let before = std::fs::read(d.join("shards/shard-0000-of-0002.npy")).unwrap();
    ok(&run(&args, &["--shard", "0/2"]));
    assert_eq!(std::fs::read(d.join("shards/shard-0000-of-0002.npy")).unwrap(), before);
    ok(&run(&args, &["--shard", "1/2"]));
    assert_eq!(loss_of(&d), reference());
}

/// A directory whose writes fail: a small tmpfs filled up (as root), else a read-only directory.
struct Full {
    dir: PathBuf,
    mounted: bool,
}

impl Full {
    fn new(name: &str) -> Full {
        let dir = out_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        Full { dir, mounted }
    }
    fn fill(&self) {
        if self.mounted {
            let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
            let chunk = vec![0u8; 4096];
            while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        } else {
            Command::new("chmod").args(["-R", "a-w"]).arg(self.dir.join("run/shards")).status().unwrap();
        }
    }
    fn free(&self) {
        if self.mounted {
            std::fs::remove_file(self.dir.join("filler")).unwrap();
        } else {
            Command::new("chmod").args(["-R", "u+w"]).arg(self.dir.join("run/shards")).status().unwrap();
        }
    }
}

impl Drop for Full {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}

#[test]
fn disk_full_is_a_clear_error_and_the_progress_survives() {
    let whole = out_dir("full-whole");
    ok(&run(&long(&whole), &[]));
    let full = Full::new("full");
    let d = full.dir.join("run");
    let args = long(&d);
    let mut child = spawn(&args, &[]);
    let t = Instant::now();
    while progress_rows(&d, "shard-0000-of-0001") < 5 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = std::fs::read(d.join("shards/shard-0000-of-0001.npy")).unwrap();
    full.fill();
    let o = run(&args, &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("cannot save progress to") && e.contains("shard-0000-of-0001"), "{e}");
    assert!(e.contains("No space left on device") || e.contains("ermission denied"), "{e}");
    assert_eq!(std::fs::read(d.join("shards/shard-0000-of-0001.npy")).unwrap(), saved, "earlier progress was damaged");
    full.free();
    ok(&run(&args, &[]));
    assert_eq!(loss_of(&d), loss_of(&whole));
}

#[test]
fn cpu_workers_deal_the_points_and_give_the_same_values() {
    let d = out_dir("workers");
    let o = run(&base(&d), &["--workers", "3"]);
    ok(&o);
    assert_eq!(loss_of(&d), reference());
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap();
    let workers = m["shards"]["tasks"][0]["workers"].as_array().unwrap().clone();
    assert_eq!(workers.len(), 3);
    let counts: Vec<u64> = workers.iter().map(|w| w["points"].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 20, "{counts:?}");
    assert!(counts.iter().all(|&c| c >= 1), "a worker got nothing: {counts:?}");
}

#[test]
fn a_real_slurm_job_array_matches_the_single_process_run() {
    let work = out_dir("slurm");
    std::fs::create_dir_all(&work).unwrap();
    let run_dir = work.join("run");
    let o = Command::new(crate::common::root().join("tests/slurm/run.sh"))
        .arg(&work)
        .arg(env!("CARGO_BIN_EXE_losscape"))
        .arg(fxp("resnet.pt"))
        .arg(fxp("cifar-bin"))
        .arg(&run_dir)
        .args(["-1:1:5", "-1:1:4"])
        .env("LOSSCAPE_TEST_SEED", "5")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "SLURM run failed:\n{out}");
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("meta.json")).unwrap_or_else(|_| panic!("no merged meta.json:\n{out}")),
    )
    .unwrap();
    assert_eq!(m["shards"]["count"], 4, "{out}");
    for i in 0..4 {
        assert!(
            out.contains(&format!("shard {i}/4 done")) || out.contains("merged 4 shards"),
            "task {i} said nothing:\n{out}"
        );
    }
    // Same grid and seed 0 (the sbatch default) in one process.
    let single = out_dir("slurm-single");
    ok(&losscape(&[
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--x=-1:1:5",
        "--y=-1:1:4",
        "--device",
        "cpu",
        "--out",
        single.to_str().unwrap(),
        "-q",
        "--no-plots",
    ]));
    assert_eq!(loss_of(&run_dir), loss_of(&single), "job array result differs from the single-process run");
}
