//! Sharded and resumable runs, for every grid command: shards and merge, directions made once,
//! configuration checks, kill -9 and resume, disk full, duplicate shards, worker threads, a real
//! SLURM job array. (How a task finds its shard is unit-tested in `space::shard`.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_valid_meta, fxp, losscape, meta_json, npy, ok, out_dir};

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
        &args
            .iter()
            .map(String::as_str)
            .filter(|a| *a != "--no-plots")
            .map(|a| if a == "surface" { "directions" } else { a })
            .collect::<Vec<_>>(),
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
    losscape::store::npy::read(&p).map_or(0, |a| a.shape[0] as usize)
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
    let tmp_files = |d: &Path| {
        std::fs::read_dir(d.join("shards"))
            .map_or(0, |r| r.flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp-")).count())
    };
    // Each later kill lands once the resumed task has saved 3 more points, a few milliseconds
    // after (mid-point or mid-write), so that every kill interrupts a run that is still going.
    let (mut mid_write, mut last) = (0, saved);
    for delay_ms in [0, 3, 7, 11] {
        let mut c = spawn(&args, &[]);
        let t = Instant::now();
        while progress_rows(&d, "shard-0000-of-0001") < last + 3 && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = c.kill();
        c.wait().unwrap();
        // The kill landed while the run was incomplete, and progress never goes backwards.
        assert!(!d.join("meta.json").exists(), "the run finished before the kill {delay_ms} ms after its progress");
        let rows = progress_rows(&d, "shard-0000-of-0001");
        assert!((last + 3..60).contains(&rows), "after a kill: {rows} points saved (before: {last})");
        last = rows;
        mid_write += (tmp_files(&d) > 0) as usize;
    }
    eprintln!("kills that interrupted a write of the progress file: {mid_write} of 4");
    ok(&run(&args, &[]));
    assert_eq!(tmp_files(&d), 0, "a resumed task removes the temporary files of a killed write");
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
    assert!(e.contains("cannot save progress") && e.contains("shard-0000-of-0001"), "{e}");
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

/// The command lines of a line, a plane and a trajectory on the fixtures (without --out).
fn between_runs() -> Vec<(&'static str, Vec<String>)> {
    let f = |p: &str| fxp(p).to_str().unwrap().to_string();
    let data =
        ["--data".to_string(), f("cifar-bin"), "--device".into(), "cpu".into(), "-q".into(), "--no-plots".into()];
    let mut line = vec![
        "line".into(),
        "--from".into(),
        f("resnet.pt"),
        "--to".into(),
        f("ckpt/b.safetensors"),
        "--x=-0.5:1.5:7".into(),
    ];
    line.extend(data.clone());
    let mut plane =
        vec!["plane".into(), "--models".into(), f("resnet.pt"), f("ckpt/b.safetensors"), f("ckpt/c.safetensors")];
    plane.extend(["--x=-0.25:1.25:4".to_string(), "--y=0:1:3".into()]);
    plane.extend(data.clone());
    let mut traj = vec![
        "trajectory".into(),
        "--checkpoints".into(),
        f("traj_rand"),
        "--arch".into(),
        f("resnet.pt"),
        "--n".into(),
        "4".into(),
    ];
    traj.extend(data);
    vec![("line", line), ("plane", plane), ("trajectory", traj)]
}

/// Every value a run computed, as bits: the grid's loss and accuracy, and each checkpoint's own.
fn values_of(dir: &Path) -> Vec<u32> {
    let mut v = loss_of(dir);
    let bits = |p: &Path| npy(p).1.into_iter().map(|x| (x as f32).to_bits()).collect::<Vec<_>>();
    v.extend(bits(&dir.join("acc.npy")));
    if dir.join("path_loss.npy").exists() {
        v.extend(bits(&dir.join("path_loss.npy")));
        v.extend(bits(&dir.join("path_acc.npy")));
    }
    let m = meta_json(dir);
    for k in ["line.from", "line.to", "plane.A", "plane.B", "plane.C"] {
        let (a, b) = k.split_once('.').unwrap();
        if let Some(l) = m[a][b]["loss"].as_f64() {
            v.push((l as f32).to_bits());
        }
    }
    v
}

/// Each of `between_runs` in one process, made once.
fn single_between() -> &'static Vec<(String, Vec<u32>)> {
    static R: std::sync::OnceLock<Vec<(String, Vec<u32>)>> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        between_runs()
            .into_iter()
            .map(|(kind, args)| {
                let d = out_dir(&format!("single-{kind}"));
                ok(&run(&args, &["--out", d.to_str().unwrap()]));
                assert_valid_meta(&d);
                (kind.to_string(), values_of(&d))
            })
            .collect()
    })
}

#[test]
fn line_plane_and_trajectory_run_as_shards_and_merge_to_the_single_process_result() {
    for ((kind, args), (_, single)) in between_runs().into_iter().zip(single_between()) {
        let d = out_dir(&format!("sharded-{kind}"));
        let o = d.to_str().unwrap();
        ok(&run(&args, &["--out", o, "--shard", "1/2"]));
        assert!(!d.join("meta.json").exists(), "{kind}: half a run looks complete");
        ok(&run(&args, &["--out", o, "--shard", "0/2"]));
        assert_valid_meta(&d);
        assert_eq!(&values_of(&d), single, "{kind}: two shards differ from one process");
        let m = meta_json(&d);
        assert_eq!((m["kind"].as_str(), m["shards"]["count"].as_u64()), (Some(kind), Some(2)));
        // And with two CPU workers in one process.
        let w = out_dir(&format!("workers-{kind}"));
        ok(&run(&args, &["--out", w.to_str().unwrap(), "--workers", "2"]));
        assert_eq!(&values_of(&w), single, "{kind}: two workers differ from one");
    }
}

#[test]
fn a_trajectory_killed_with_sigkill_resumes_to_the_same_result() {
    let args = |out: &Path| -> Vec<String> {
        let f = |p: &str| fxp(p).to_str().unwrap().to_string();
        [
            "trajectory",
            "--checkpoints",
            &f("traj_rand"),
            "--arch",
            &f("resnet.pt"),
            "--data",
            &f("cifar-bin"),
            "--n",
            "9",
            "--batch-size",
            "8",
            "--save-every",
            "0",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--no-plots",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = out_dir("traj-whole");
    ok(&run(&args(&whole), &[]));
    let d = out_dir("traj-killed");
    let mut child = spawn(&args(&d), &[]);
    let t = Instant::now();
    while progress_rows(&d, "shard-0000-of-0001") < 10 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = progress_rows(&d, "shard-0000-of-0001");
    assert!((10..87).contains(&saved), "{saved} of 87 points saved before the kill");
    assert!(!d.join("meta.json").exists());
    for delay_ms in [600, 1000] {
        let mut c = spawn(&args(&d), &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = c.kill();
        c.wait().unwrap();
    }
    ok(&run(&args(&d), &[]));
    assert_eq!(values_of(&d), values_of(&whole), "resumed trajectory differs from the uninterrupted one");
    assert_eq!(
        std::fs::read(d.join("directions.safetensors")).unwrap(),
        std::fs::read(whole.join("directions.safetensors")).unwrap(),
        "the PCA was made again differently"
    );
    assert!(meta_json(&d)["shards"]["tasks"][0]["sessions"].as_u64().unwrap() >= 2);
}

#[test]
fn a_real_slurm_job_array_matches_the_single_process_run() {
    let work = out_dir("slurm");
    std::fs::create_dir_all(&work).unwrap();
    let bin = env!("CARGO_BIN_EXE_losscape");
    let surface_dir = work.join("surface");
    let mut jobs: Vec<String> = vec![
        crate::common::root().join("examples/slurm/surface.sbatch").to_str().unwrap().into(),
        "0-3".into(),
        format!(
            "LOSSCAPE={bin},MODEL={},DATA={},RUN_DIR={},GRID_X=-1:1:5,GRID_Y=-1:1:4,EXTRA=--device cpu --no-plots",
            fxp("resnet.pt").display(),
            fxp("cifar-bin").display(),
            surface_dir.display()
        ),
    ];
    for (kind, args) in between_runs() {
        let a: Vec<String> = args.into_iter().filter(|a| a != "-q").collect();
        jobs.push(crate::common::root().join("examples/slurm/losscape.sbatch").to_str().unwrap().into());
        jobs.push("0-2".into());
        jobs.push(format!("LOSSCAPE={bin},ARGS={} --out {}", a.join(" "), work.join(kind).display()));
    }
    let o = Command::new(crate::common::root().join("tests/slurm/run.sh")).arg(&work).args(&jobs).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "SLURM run failed:\n{out}");
    let m = meta_json(&surface_dir);
    assert_eq!(m["shards"]["count"], 4, "{out}");
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
    assert_eq!(loss_of(&surface_dir), loss_of(&single), "job array result differs from the single-process run");
    for ((kind, _), (_, single)) in between_runs().into_iter().zip(single_between()) {
        let d = work.join(kind);
        assert_valid_meta(&d);
        let m = meta_json(&d);
        assert_eq!(m["shards"]["count"], 3, "{kind}: {out}");
        assert_eq!(&values_of(&d), single, "{kind}: the 3-task job array differs from one process");
    }
    for i in 0..3 {
        assert!(
            out.contains(&format!("shard {i}/3 done")) || out.contains(" points on cpu"),
            "task {i} said nothing:\n{out}"
        );
    }
}
