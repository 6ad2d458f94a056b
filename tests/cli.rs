//! The command line: every bad input gets one line naming the culprit, a non-zero exit and no
//! run directory; good runs report progress and refuse to clobber a finished run.

use std::path::Path;

use crate::common::{fxp, losscape, ok, out_dir};

/// Run `losscape surface ARGS --out OUT` expecting failure; return its one line of stderr.
fn fails(name: &str, args: &[&str]) -> String {
    let out = out_dir(&format!("bad-{name}"));
    let mut all = vec!["surface"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let o = losscape(&all);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{name}: succeeded, stderr: {err}");
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "{name}: exit {:?} (a panic?): {err}", o.status.code());
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name}: expected one line of error, got:\n{err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert!(!out.exists(), "{name}: left {} behind", out.display());
    lines[0].to_string()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn contains_all(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "{line:?} does not mention {p:?}");
    }
}

#[test]
fn bad_models_are_named() {
    let data = s(&fxp("cifar-bin"));
    let missing = s(&fxp("nope.pt"));
    let e = fails("missing-model", &["--model", &missing, "--data", &data, "--x", "-1:1:3"]);
    contains_all(&e, &[&missing, "cannot read"]);
    let garbage = s(&fxp("garbage.pt"));
    let e = fails("garbage-model", &["--model", &garbage, "--data", &data, "--x", "-1:1:3"]);
    contains_all(&e, &[&garbage, "TorchScript"]);
    let sd = s(&fxp("state_dict.pt"));
    let e = fails("state-dict-model", &["--model", &sd, "--data", &data, "--x", "-1:1:3"]);
    contains_all(&e, &[&sd, "state_dict", "models/export.py"]);
    let bad = s(&fxp("bad_output.pt"));
    let e = fails("bad-output", &["--model", &bad, "--data", &data, "--x", "-1:1:3"]);
    contains_all(&e, &[&bad, "[2, 10, 1]", "[2, 3, 32, 32]", "[N, classes]"]);
}

#[test]
fn bad_data_is_named() {
    let model = s(&fxp("resnet.pt"));
    let m = ["--model", model.as_str()];
    let t = s(&fxp("bad/truncated"));
    let e = fails("truncated", &[&m[..], &["--data", &t, "--x", "0:1:2"]].concat());
    contains_all(&e, &["data_batch_3.bin", "36776 bytes", "3073", "30730000"]);
    let l = s(&fxp("bad/cifar_label"));
    let e = fails("cifar-label", &[&m[..], &["--data", &l, "--x", "0:1:2"]].concat());
    contains_all(&e, &["data_batch_2.bin", "record 5", "label 11"]);
    let r = s(&fxp("bad/labels_range"));
    let e = fails("labels-range", &[&m[..], &["--data", &r, "--x", "0:1:2"]].concat());
    contains_all(&e, &[&r, "label 12", "10 outputs"]);
    let n = s(&fxp("bad/length"));
    let e = fails("length", &[&m[..], &["--data", &n, "--x", "0:1:2"]].concat());
    contains_all(&e, &["X.npy", "y.npy", "60", "[50]"]);
    let f = s(&fxp("bad/float_targets"));
    let e = fails("float-ce", &[&m[..], &["--data", &f, "--x", "0:1:2", "--loss", "ce"]].concat());
    contains_all(&e, &["--loss ce", "float targets"]);
    let e = fails("no-data", &[&m[..], &["--data", "/nonexistent/cifar", "--x", "0:1:2"]].concat());
    contains_all(&e, &["/nonexistent/cifar", "no such file"]);
    let e = fails("limit-zero", &[&m[..], &["--data", &s(&fxp("cifar-bin")), "--limit", "0", "--x", "0:1:2"]].concat());
    contains_all(&e, &["--limit"]);
}

#[test]
fn bad_grids_devices_and_directions_are_named() {
    let model = s(&fxp("resnet.pt"));
    let data = s(&fxp("cifar-bin"));
    let base = ["--model", model.as_str(), "--data", data.as_str()];
    let e = fails("grid-form", &[&base[..], &["--x", "-1:1"]].concat());
    contains_all(&e, &["--x", "MIN:MAX:N", "-1:1"]);
    let e = fails("grid-n", &[&base[..], &["--x", "-1:1:3", "--y", "0:1:0"]].concat());
    contains_all(&e, &["--y", "N must be at least 1"]);
    let e = fails("grid-nan", &[&base[..], &["--x", "a:1:3"]].concat());
    contains_all(&e, &["MIN", "\"a\""]);
    let dirs = s(&fxp("bad/other_dirs.safetensors"));
    let e = fails("dirs-mismatch", &[&base[..], &["--x", "-1:1:3", "--directions", &dirs]].concat());
    contains_all(&e, &[&dirs, "x.conv1.weight"]);
    let e = fails("device-unknown", &[&base[..], &["--x", "-1:1:3", "--device", "tpu"]].concat());
    contains_all(&e, &["--device", "tpu"]);
    if !tch::Cuda::is_available() {
        let e = fails("device-cuda", &[&base[..], &["--x", "-1:1:3", "--device", "cuda"]].concat());
        contains_all(&e, &["--device cuda", "CUDA is not available"]);
    }
    let e = fails("batch-zero", &[&base[..], &["--x", "-1:1:3", "--batch-size", "0"]].concat());
    contains_all(&e, &["--batch-size"]);
}

#[test]
fn a_run_reports_progress_and_does_not_clobber_a_finished_run() {
    let out = out_dir("cli-ok");
    let args = [
        "surface",
        "--model",
        &s(&fxp("resnet.pt")),
        "--data",
        &s(&fxp("cifar-bin")),
        "--split",
        "test",
        "--x",
        "-1:1:3",
        "--y",
        "-1:1:3",
        "--out",
        &s(&out),
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = losscape(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // stderr is a pipe here: plain progress lines, not a bar.
    assert!(err.contains("9/9 points (100%)"), "{err}");
    assert!(err.contains("images/s"), "{err}");
    for f in ["loss.npy", "acc.npy", "x.npy", "y.npy", "directions.safetensors", "meta.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let before = std::fs::read(out.join("loss.npy")).unwrap();
    let mtime = std::fs::metadata(out.join("loss.npy")).unwrap().modified().unwrap();
    // The same run again: already complete, nothing recomputed or rewritten.
    let o = losscape(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("already holds this run"), "{err}");
    assert_eq!(std::fs::metadata(out.join("loss.npy")).unwrap().modified().unwrap(), mtime);
    // Another configuration into the same directory: refused, naming what differs.
    let mut other = args.clone();
    let i = other.iter().position(|a| *a == "-1:1:3").unwrap();
    other[i] = "-2:2:3";
    let o = losscape(&other);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another configuration") && err.contains("grid.x.") && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(out.join("loss.npy")).unwrap(), before, "refused run touched the old one");
    let mut again = args.clone();
    again.extend(["--overwrite", "--quiet"]);
    let o = losscape(&again);
    ok(&o);
    assert!(o.stderr.is_empty(), "--quiet printed: {}", String::from_utf8_lossy(&o.stderr));
}

/// A command that must fail with one line of stderr and `code`; the line.
fn fails_with(code: i32, args: &[&str]) -> String {
    let o = losscape(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn usage_mistakes_found_by_a_new_user_are_one_line() {
    let d = s(&fxp("cifar-bin"));
    let out = out_dir("usage");
    // plane without --models: a usage error, not a panic.
    let e = fails_with(2, &["plane", "--data", &d, "--out", out.to_str().unwrap()]);
    assert!(e.contains("--models"), "{e}");
    // TF32 is a CUDA mode.
    let e = fails_with(
        1,
        &[
            "surface",
            "--model",
            &s(&fxp("resnet.pt")),
            "--data",
            &d,
            "--x=0:1:2",
            "--device",
            "cpu",
            "--precision",
            "tf32",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(e.contains("--precision tf32") && e.contains("CPU"), "{e}");
    assert!(!out.exists());
    // A state dict needs its architecture.
    let e = fails_with(
        1,
        &[
            "line",
            "--from",
            &s(&fxp("ckpt/b.safetensors")),
            "--to",
            &s(&fxp("ckpt/c.safetensors")),
            "--data",
            &d,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(e.contains("--arch is needed"), "{e}");
    // directions --help lists only the options it uses.
    let o = losscape(&["directions", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--seed") && help.contains("--out"), "{help}");
    for unused in ["--workers", "--shard", "--batch-size", "--save-every", "--no-plots", "--onednn"] {
        assert!(!help.lines().any(|l| l.trim_start().starts_with(unused)), "directions --help lists {unused}");
    }
}

#[test]
fn the_summary_line_gives_six_significant_digits() {
    let out = out_dir("summary");
    let o = losscape(&[
        "surface",
        "--model",
        &s(&fxp("resnet.pt")),
        "--data",
        &s(&fxp("cifar-bin")),
        "--x=-1:1:3",
        "--out",
        out.to_str().unwrap(),
        "--no-plots",
    ]);
    let err = ok(&o);
    let line = err.lines().find(|l| l.contains(" -> ")).unwrap_or_else(|| panic!("no summary line: {err}"));
    let range = line.split("loss ").nth(1).unwrap().split(" -> ").next().unwrap();
    let nums: Vec<&str> = range.split(" .. ").collect();
    assert_eq!(nums.len(), 2, "{line}");
    for n in nums {
        let digits = n.trim_start_matches(['-', '0', '.']).chars().filter(char::is_ascii_digit).count();
        assert_eq!(digits, 6, "{n} in {line}");
        let v: f64 = n.parse().unwrap();
        assert!(v.is_finite() && v > 0.0);
    }
    assert!(line.contains("3 points on cpu"), "{line}");
}

#[test]
fn inputs_that_gave_garbage_with_exit_0_are_refused() {
    let model = s(&fxp("resnet.pt"));
    let cifar = s(&fxp("cifar-bin"));
    // NaN in the images, inf in regression targets: named with the first bad sample.
    let nan = s(&fxp("bad/nan_x"));
    let e = fails("nan-x", &["--model", &model, "--data", &nan, "--x=0:1:2"]);
    contains_all(&e, &[&nan, "sample 13", "NaN or inf"]);
    let inf = s(&fxp("bad/inf_y"));
    let e = fails("inf-y", &["--model", &s(&fxp("mlp.pt")), "--data", &inf, "--x=0:1:2"]);
    contains_all(&e, &[&inf, "targets of sample 5"]);
    // A mean without a std (or the reverse) would normalize with std 1 (or mean 0).
    let e = fails("mean-only", &["--model", &model, "--data", &cifar, "--mean", "0.5,0.5,0.5", "--x=0:1:2"]);
    contains_all(&e, &["--mean 0.5,0.5,0.5", "without std", "both or neither"]);
    let e = fails("std-only", &["--model", &model, "--data", &cifar, "--std", "0.2", "--x=0:1:2"]);
    contains_all(&e, &["--std 0.2", "without mean"]);
    // A grid too large to hold: refused before anything is written (it aborted with a backtrace,
    // leaving config.json and locks that then blocked the directory).
    let big = ["--model", &model, "--data", &cifar, "--x=-1:1:100000", "--y=-1:1:100000"];
    let e = fails("huge-grid", &big);
    contains_all(&e, &["10000000000 points", "limit of 10000000"]);
    let e = fails_with(
        1,
        &[
            "trajectory",
            "--checkpoints",
            &s(&fxp("traj_plane")),
            "--arch",
            &model,
            "--data",
            &cifar,
            "--n",
            "100000",
            "--out",
            &s(&out_dir("huge-traj")),
        ],
    );
    contains_all(&e, &["10000000000 points"]);
    assert!(!out_dir("huge-traj").exists());
}

#[test]
fn unnormalized_byte_images_are_warned_about_once_and_not_when_quiet() {
    let run = |quiet: bool| {
        let out = out_dir(&format!("uint8-warning-{quiet}"));
        let mut args = vec!["surface", "--model", "", "--data", "", "--split", "train,test", "--x=0:1:2", "--no-plots"];
        let (m, d, o) = (s(&fxp("resnet.pt")), s(&fxp("npy_nchw")), s(&out));
        args[2] = &m;
        args[4] = &d;
        args.extend(["--out", &o]);
        if quiet {
            args.push("-q");
        }
        ok(&losscape(&args))
    };
    let err = run(false);
    assert_eq!(err.matches("uint8 images").count(), 1, "{err}");
    assert!(err.contains("--mean") && err.contains("--std") && err.contains("warning"), "{err}");
    assert!(run(true).is_empty());
    // CIFAR-10 files are normalized by default: nothing to say.
    let out = out_dir("bytes-cifar");
    let err = ok(&losscape(&[
        "surface",
        "--model",
        &s(&fxp("resnet.pt")),
        "--data",
        &s(&fxp("cifar-bin")),
        "--x=0:1:2",
        "--no-plots",
        "--out",
        &s(&out),
    ]));
    assert!(!err.contains("uint8"), "{err}");
}

#[test]
fn plot_mistakes_leave_the_pictures_alone_and_say_what_is_wrong() {
    let out = out_dir("plot-mistakes");
    ok(&losscape(&[
        "surface",
        "--model",
        &s(&fxp("resnet.pt")),
        "--data",
        &s(&fxp("cifar-bin")),
        "--x=-1:1:3",
        "--y=-1:1:3",
        "--out",
        &s(&out),
        "-q",
    ]));
    let before = std::fs::read(out.join("contour.png")).unwrap();
    let e = fails_with(1, &["plot", &s(&out), "--levels", "0"]);
    contains_all(&e, &["--levels 0", "2..200"]);
    let e = fails_with(1, &["plot", &s(&out), "--levels", "1"]);
    contains_all(&e, &["--levels 1"]);
    assert_eq!(std::fs::read(out.join("contour.png")).unwrap(), before, "a refused plot redrew contour.png");
    // A figure into a directory that does not exist: its path and the reason, in one line.
    let fig = out_dir("plot-missing").join("no/such/dir/f.png");
    let e = fails_with(1, &["plot", &s(&out), &s(&out), "--out", &s(&fig)]);
    contains_all(&e, &[&s(&fig), "cannot write", "No such file"]);
    assert!(!e.contains("Drawing backend"), "{e}");
    // merge's run directory is its positional argument, not --out.
    let not_run = out_dir("not-a-run");
    std::fs::create_dir_all(&not_run).unwrap();
    let e = fails_with(1, &["merge", &s(&not_run)]);
    contains_all(&e, &[&s(&not_run), "config.json"]);
    assert!(!e.contains("--out"), "{e}");
}

#[test]
fn messages_a_new_user_met_say_what_to_do() {
    let d = s(&fxp("cifar-bin"));
    // A safetensors state dict as --model needs its architecture.
    let sd = s(&fxp("ckpt/plain.safetensors"));
    let e = fails("safetensors-model", &["--model", &sd, "--data", &d, "--x=0:1:2"]);
    contains_all(&e, &["--arch is needed", &sd, "safetensors state dict"]);
    assert!(!e.contains("torch.jit.script"), "{e}");
    // hessian --help lists only what the command takes.
    let o = losscape(&["hessian", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for absent in ["bf16", "fp16", "train,test", "SPLIT[,SPLIT]", "Their direction is 0", "every shard"] {
        assert!(!help.contains(absent), "hessian --help mentions {absent:?}:\n{help}");
    }
    assert!(help.contains("--split") && help.contains("tf32"), "{help}");
    // BatchNorm re-estimation says on how many samples the statistics came from.
    let out = out_dir("recompute-summary");
    let err = ok(&losscape(&[
        "surface",
        "--model",
        &s(&fxp("resnet.pt")),
        "--data",
        &d,
        "--x=0:1:2",
        "--batchnorm",
        "recompute",
        "--bn-samples",
        "40",
        "--limit",
        "20",
        "--no-plots",
        "--out",
        &s(&out),
    ]));
    assert!(err.contains("re-estimated at every point on 40 training samples"), "{err}");
}
