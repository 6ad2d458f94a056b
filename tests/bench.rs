//! A tiny smoke run of the benchmark (`make bench` runs it at full size): the three ways of
//! evaluating run on the same data and the table of ratios comes out. Nothing is timed here.

use std::path::Path;
use std::process::Command;

use crate::common::{out_dir, python, root};

/// Run `bench/SCRIPT --bin losscape ARGS --work WORK --json WORK.json`; it must succeed. Its stdout
/// and its JSON.
fn bench_script(script: &str, work: &Path, args: &[&str]) -> (String, serde_json::Value) {
    let json = work.with_extension("json");
    let o = Command::new(python())
        .arg(root().join("bench").join(script))
        .args(["--bin", env!("CARGO_BIN_EXE_losscape")])
        .args(args)
        .arg("--work")
        .arg(work)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    (out, serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap())
}

#[test]
fn the_benchmark_runs_end_to_end() {
    let work = out_dir("bench-smoke");
    let (out, r) = bench_script(
        "bench.py",
        &work,
        &[
            "--device",
            "cpu",
            "--models",
            "resnet8",
            "--n",
            "96",
            "--points",
            "4",
            "--ref-n",
            "64",
            "--ref-points",
            "1",
            "--loss-cap",
            "1.5",
            "--compile-modes",
            "--recompute",
            "--bn-samples",
            "48",
        ],
    );
    assert!(out.contains("vs ref") && out.contains("vs eager") && out.contains("resnet8"), "{out}");
    let row = &r["rows"][0];
    // (On CPU it also times losscape with --onednn false.)
    for k in ["reference_ips", "eager_ips", "losscape_ips", "losscape_nomkldnn_ips", "perturb_fraction"] {
        assert!(row[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {row}");
    }
    assert_eq!(row["losscape_device"], "cpu");
    // What was timed computed the same values: the folded, unfolded and plain-tensor runs give
    // the same losses, and the ratios are those of the rates.
    let prec = row["precision"].as_str().unwrap();
    let loss = |run: &str| crate::common::npy(&work.join(format!("{run}-resnet8-{prec}")).join("loss.npy")).1;
    let folded = loss("run");
    assert_eq!(folded.len(), 4);
    for other in ["unfolded", "nomkldnn"] {
        for (a, b) in folded.iter().zip(loss(other)) {
            assert!((a - b).abs() <= 1e-4 * b.abs(), "{other}: {a} vs {b}");
        }
    }
    let rounds = row["vs_eager_per_round"].as_array().unwrap();
    let ratio = row["runs"]["losscape"][0].as_f64().unwrap() / row["runs"]["eager"][0].as_f64().unwrap();
    assert!((rounds[0].as_f64().unwrap() - ratio).abs() <= 1e-9 * ratio, "{row}");
    let rc = &row["recompute"];
    assert!(rc["batchnorm_s"].as_f64().is_some_and(|v| v > 0.0) && rc["bn_samples"] == 48, "{rc}");
}

/// The curvature benchmark against its peers, tiny: every tool runs on both operators and agrees
/// with losscape on λmax; the speed-ups are the ratios of the times.
#[test]
fn the_hessian_benchmark_runs_end_to_end() {
    let (out, r) = bench_script(
        "hessian.py",
        &out_dir("hessian-bench-smoke"),
        &["--device", "cpu", "--models", "resnet8", "--n", "32", "--batch-size", "32", "--tol", "1e-2", "--no-power"],
    );
    assert!(out.contains("losscape speedup") && out.contains("resnet8"), "{out}");
    let rows = r["rows"].as_array().unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["operator"].as_str().unwrap()).collect();
    assert_eq!(ops, ["hessian", "ggn"]);
    for row in rows {
        let peers = row["peers"].as_object().unwrap();
        let want: &[&str] = if row["operator"] == "hessian" {
            &["pyhessian", "curvlinops", "eigenthings"]
        } else {
            &["curvlinops", "eigenthings"]
        };
        assert_eq!(peers.keys().map(String::as_str).collect::<Vec<_>>().len(), want.len(), "{row}");
        for k in want {
            let p = &peers[*k];
            assert!(p["products"].as_u64().unwrap() > 0, "{k}: {row}");
            // PyHessian stops when two power-iteration estimates differ by the tolerance (not on a
            // residual): it may stop further off.
            let bound = if *k == "pyhessian" { 5e-2 } else { 1e-2 };
            assert!(row["relative_difference"][*k].as_f64().unwrap() < bound, "{k}: {row}");
            let ratio = p["seconds"].as_f64().unwrap() / row["losscape"]["seconds"].as_f64().unwrap();
            assert!((row["speedup"][*k].as_f64().unwrap() - ratio).abs() <= 1e-9 * ratio, "{k}: {row}");
        }
        for k in ["seconds", "products", "product_ips", "forward_ips"] {
            assert!(row["losscape"][k].as_f64().is_some_and(|v| v > 0.0), "{k}: {row}");
        }
    }
}

/// The sharpness benchmark, tiny: the three ascents run and start from the same loss.
#[test]
fn the_sharpness_benchmark_runs_end_to_end() {
    let (_, r) = bench_script(
        "sharpness.py",
        &out_dir("sharpness-bench-smoke"),
        &["--models", "resnet8", "--n", "96", "--steps", "2", "--samples", "3", "--no-compile"],
    );
    let row = &r["rows"][0];
    let (a, b) = (row["eager_base_loss"].as_f64().unwrap(), row["losscape_base_loss"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5 * a, "the loss at θ: eager {a}, losscape {b}");
    let ratio = row["losscape_ips"].as_f64().unwrap() / row["eager_ips"].as_f64().unwrap();
    assert!((row["vs_eager"].as_f64().unwrap() - ratio).abs() <= 1e-9 * ratio, "{row}");
}

/// The curve-training benchmark, tiny: eager PyTorch and losscape train the same first epoch.
#[test]
fn the_connect_benchmark_runs_end_to_end() {
    let (out, r) = bench_script(
        "connect.py",
        &out_dir("connect-bench-smoke"),
        &["--models", "resnet8", "--n", "96", "--epochs", "2", "--batch", "32", "--no-compile"],
    );
    let row = &r["rows"][0];
    let (a, b) = (row["eager_first_loss"].as_f64().unwrap(), row["losscape_first_loss"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5 * a, "the first epoch's loss: eager {a}, losscape {b}");
    assert!(row["losscape_ips"].as_f64().unwrap() > 0.0 && out.contains("vs best"), "{out}");
}

/// The --rel-error benchmark, tiny (a model trained one epoch on the first 100 of its 400 images):
/// the estimated surfaces use fewer samples and stay near the exact one.
#[test]
fn the_rel_error_benchmark_runs_end_to_end() {
    let (out, r) = bench_script(
        "rel_error.py",
        &out_dir("rel-error-bench-smoke"),
        &[
            "--model",
            "resnet8",
            "--n",
            "400",
            "--grid",
            "3",
            "--min-samples",
            "64",
            "--errors",
            "0.02",
            "--train-epochs",
            "1",
            "--train-n",
            "100",
        ],
    );
    assert_eq!((r["train_n"].as_u64(), r["n"].as_u64()), (Some(100), Some(400)), "{r}");
    let row = &r["rows"][0];
    assert!(row["fewer_samples"].as_f64().unwrap() > 1.0, "{row}");
    assert!(row["max_error_in_E"].as_f64().unwrap() <= 3.0, "{row}");
    assert!(out.contains("fewer samples"), "{out}");
}
