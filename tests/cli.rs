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
