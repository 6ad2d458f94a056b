//! BatchNorm at every point: statistics re-estimated (`--batchnorm recompute`) against
//! `torch.optim.swa_utils.update_bn` in PyTorch, and the non-finite points that interpolated
//! running variances cause in eval mode.

use std::path::Path;

use crate::common::{assert_rel, assert_valid_meta, fixtures_py, fxp, losscape, meta_json, npy, ok, out_dir};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// PyTorch's loss at each point with update_bn (40 training samples in batches of 16).
fn bn_reference(model: &str, points: &[(f64, f64)], how: &[&str]) -> Vec<(f64, f64)> {
    let out = out_dir(&format!("bn-ref-{}", points.len() + how.len())).with_extension("json");
    let pts = serde_json::to_string(&points.iter().map(|(a, b)| [*a, *b]).collect::<Vec<_>>()).unwrap();
    let mut args = vec!["bn-reference", "--model", model, "--data"];
    let data = s(&fxp("cifar-bin"));
    args.extend([data.as_str(), "--split", "test", "--bn-samples", "40", "--batch-size", "16", "--points", &pts]);
    let o = s(&out);
    args.extend(["--out", o.as_str()]);
    args.extend_from_slice(how);
    fixtures_py(&args);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    v.as_array().unwrap().iter().map(|r| (r["loss"].as_f64().unwrap(), r["acc"].as_f64().unwrap())).collect()
}

const RECOMPUTE: [&str; 8] =
    ["--batchnorm", "recompute", "--bn-samples", "40", "--batch-size", "16", "--split", "test"];

fn points_of(dir: &Path) -> Vec<(f64, f64)> {
    let (_, x) = npy(&dir.join("x.npy"));
    let ys = if dir.join("y.npy").exists() { npy(&dir.join("y.npy")).1 } else { vec![0.0] };
    ys.iter().flat_map(|&y| x.iter().map(move |&x| (x, y))).collect()
}

#[test]
fn recompute_matches_update_bn_on_a_surface() {
    let d = out_dir("bn-surface");
    let mut args = vec!["surface", "--model"];
    let (m, data, o) = (s(&fxp("resnet.pt")), s(&fxp("cifar-bin")), s(&d));
    args.extend([
        m.as_str(),
        "--data",
        data.as_str(),
        "--x=-1:1:3",
        "--y=-0.5:0.5:2",
        "--out",
        o.as_str(),
        "-q",
        "--no-plots",
    ]);
    args.extend_from_slice(&RECOMPUTE);
    ok(&losscape(&args));
    assert_valid_meta(&d);
    let meta = meta_json(&d);
    assert_eq!(meta["batchnorm"]["mode"], "recompute");
    assert_eq!(meta["batchnorm"]["samples"], 40);
    assert_eq!(meta["batchnorm_folding"]["active"], false, "{}", meta["batchnorm_folding"]);
    assert!(meta["batchnorm_folding"]["note"].as_str().unwrap().contains("re-estimated"));
    assert!(meta["timing"]["batchnorm_seconds"].as_f64().unwrap() > 0.0);
    let (_, loss) = npy(&d.join("loss.npy"));
    let (_, acc) = npy(&d.join("acc.npy"));
    let pts = points_of(&d);
    let r = bn_reference(&m, &pts, &["--directions", &s(&d.join("directions.safetensors"))]);
    for (k, ((l, a), (rl, ra))) in loss.iter().zip(&acc).zip(&r).enumerate() {
        assert_rel(*l, *rl, 1e-5, &format!("recompute loss at {:?}", pts[k]));
        assert!((a - ra).abs() < 1e-6, "accuracy at {:?}: {a} vs {ra}", pts[k]);
    }
    // The statistics matter: eval mode gives other values away from the centre.
    let e = out_dir("bn-surface-eval");
    let mut eargs = args.clone();
    let eo = s(&e);
    let i = eargs.iter().position(|a| *a == o.as_str()).unwrap();
    eargs[i] = eo.as_str();
    let j = eargs.iter().position(|a| *a == "recompute").unwrap();
    eargs[j] = "eval";
    ok(&losscape(&eargs));
    let (_, eval_loss) = npy(&e.join("loss.npy"));
    assert!(eval_loss.iter().zip(&loss).any(|(a, b)| (a - b).abs() > 1e-3 * b.abs()), "{eval_loss:?} vs {loss:?}");
}

#[test]
fn wrong_stored_statistics_change_eval_but_not_recompute() {
    let run = |name: &str, model: &str, mode: &str| {
        let d = out_dir(name);
        let (m, data, o) = (s(&fxp(model)), s(&fxp("cifar-bin")), s(&d));
        let mut args =
            vec!["surface", "--model", m.as_str(), "--data", data.as_str(), "--x=0:0:1", "--out", o.as_str(), "-q"];
        args.extend_from_slice(&RECOMPUTE);
        let i = args.iter().position(|a| *a == "recompute").unwrap();
        args[i] = mode;
        ok(&losscape(&args));
        (npy(&d.join("loss.npy")).1[0], d)
    };
    let (eval, _) = run("bn-wrong-eval", "bn_wrong.pt", "eval");
    let (recompute, d) = run("bn-wrong-recompute", "bn_wrong.pt", "recompute");
    assert!((eval - recompute).abs() > 0.1 * recompute, "eval {eval} vs recompute {recompute}");
    let dirs = s(&d.join("directions.safetensors"));
    let r = bn_reference(&s(&fxp("bn_wrong.pt")), &[(0.0, 0.0)], &["--directions", &dirs]);
    assert_rel(recompute, r[0].0, 1e-5, "recompute at the centre vs update_bn");
    // bn_wrong.pt is resnet.pt with other statistics and the same weights: re-estimated, the two
    // are one model, bit for bit.
    let (good, _) = run("bn-good-recompute", "resnet.pt", "recompute");
    assert_eq!(good, recompute);
}

#[test]
fn a_line_extrapolated_past_both_ends() {
    let line = |name: &str, extra: &[&str]| {
        let d = out_dir(name);
        let (a, b, data, o) = (s(&fxp("resnet.pt")), s(&fxp("bn_far.safetensors")), s(&fxp("cifar-bin")), s(&d));
        let mut args = vec!["line", "--from", a.as_str(), "--to", b.as_str(), "--data", data.as_str()];
        args.extend(["--x=-1:2:7", "--out", o.as_str(), "--no-plots", "--split", "test"]);
        args.extend_from_slice(extra);
        let err = ok(&losscape(&args));
        assert_valid_meta(&d);
        (d, err)
    };
    // Eval mode: past B the running variances are extrapolated below zero: NaN, counted, explained.
    let (d, err) = line("bn-line-eval", &[]);
    let (_, loss) = npy(&d.join("loss.npy"));
    let (_, acc) = npy(&d.join("acc.npy"));
    let bad: Vec<usize> = (0..loss.len()).filter(|&i| !loss[i].is_finite()).collect();
    assert!(!bad.is_empty() && bad.iter().all(|&i| i >= 5), "non-finite at {bad:?}: {loss:?}");
    for i in 0..loss.len() {
        assert_eq!(loss[i].is_finite(), acc[i].is_finite(), "loss {} and accuracy {} at {i}", loss[i], acc[i]);
    }
    let m = meta_json(&d);
    assert_eq!(m["nonfinite_points"].as_u64().unwrap() as usize, bad.len());
    let cause = m["nonfinite"]["cause"].as_str().unwrap();
    assert!(cause.contains("running variance") && cause.contains("negative"), "{cause}");
    let summary = err.lines().find(|l| l.contains(" -> ")).unwrap();
    assert!(
        summary.contains(&format!("{} of 7 grid points are not finite", bad.len()))
            && summary.contains("--batchnorm recompute"),
        "{summary}"
    );
    // Recompute: finite everywhere, and PyTorch's update_bn agrees at every point and at the ends.
    let (d, _) =
        line("bn-line-recompute", &["--batchnorm", "recompute", "--bn-samples", "40", "--batch-size", "16", "-q"]);
    let (_, loss) = npy(&d.join("loss.npy"));
    assert!(loss.iter().all(|l| l.is_finite()), "{loss:?}");
    let pts = points_of(&d);
    let r = bn_reference(&s(&fxp("resnet.pt")), &pts, &["--line-to", &s(&fxp("bn_far.safetensors"))]);
    for (k, (l, (rl, _))) in loss.iter().zip(&r).enumerate() {
        assert_rel(*l, *rl, 1e-5, &format!("line point {:?}", pts[k]));
    }
    let m = meta_json(&d);
    assert!(m["nonfinite"].is_null() && m["nonfinite_points"] == 0, "{}", m["nonfinite"]);
    assert_rel(m["line"]["to"]["loss"].as_f64().unwrap(), r[4].0, 1e-5, "B's own loss, re-estimated");
}

#[test]
fn recompute_needs_a_scripted_model_with_batchnorm() {
    let out = out_dir("bn-traced");
    let (m, data, o) = (s(&fxp("resnet_traced.pt")), s(&fxp("cifar-bin")), s(&out));
    let mut args = vec!["surface", "--model", m.as_str(), "--data", data.as_str(), "--x=0:1:2", "--out", o.as_str()];
    args.extend_from_slice(&RECOMPUTE);
    let r = losscape(&args);
    let e = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{e}");
    assert!(e.contains("--batchnorm recompute") && e.contains("traced") && e.lines().count() == 1, "{e}");
    assert!(!out.exists(), "a failed set-up left {}", out.display());
    let (m, data) = (s(&fxp("mlp.pt")), s(&fxp("square")));
    let r =
        losscape(&["surface", "--model", &m, "--data", &data, "--x=0:1:2", "--out", &o, "--batchnorm", "recompute"]);
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && e.contains("no BatchNorm"), "{e}");
}
