//! Checkpoints: reading the forms people save, `line`, `plane`, `trajectory` and the PCA.

use std::path::Path;

use losscape::inputs::model::Model;
use losscape::space::pca;
use tch::{Device, Kind, Tensor};

use crate::common::{assert_rel, assert_valid_meta, fxp, losscape, npy, ok, out_dir, trajectory};

fn run_ok(args: &[&str]) -> (serde_json::Value, String) {
    let err = ok(&losscape(args));
    let out = args.iter().position(|a| *a == "--out").map(|i| args[i + 1]).expect("--out");
    (meta_of(Path::new(out)), err)
}

fn meta_of(out: &Path) -> serde_json::Value {
    assert_valid_meta(out);
    crate::common::meta_json(out)
}

/// A trajectory run on fixture checkpoints that must succeed: (meta.json, stderr).
fn trajectory_ok(ckpts: &str, n: usize, out: &Path) -> (serde_json::Value, String) {
    let err = ok(&trajectory(ckpts, n, out, &[]));
    (meta_of(out), err)
}

fn fails(args: &[&str]) -> String {
    let o = losscape(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn p(rel: &str) -> String {
    fxp(rel).to_str().unwrap().to_string()
}

/// The model's own loss, unfolded (as line and checkpoint evaluations are: their BatchNorm moves).
fn center_loss(model: &str) -> f64 {
    let out = out_dir(&format!("center-{}", model.replace('/', "_")));
    let (m, _) = run_ok(&[
        "surface",
        "--model",
        &p(model),
        "--data",
        &p("cifar-bin"),
        "--x=0:0:1",
        "--fold-batchnorm",
        "false",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    // (meta.json holds the float32 loss in its shortest decimal form.)
    m["loss_min"].as_f64().unwrap() as f32 as f64
}

#[test]
fn every_checkpoint_form_gives_the_same_line_and_the_endpoints_are_the_models() {
    let mut first: Option<Vec<f64>> = None;
    for b in [
        "ckpt/b.pt",
        "ckpt/b_zip.pt",
        "ckpt/b_nested.pth",
        "ckpt/b.safetensors",
        "ckpt/b_od.pt",
        "ckpt/b_od_nested.pt",
        "ckpt/b_od_dp.pt",
    ] {
        let out = out_dir(&format!("line-{}", b.replace('/', "_")));
        let (meta, _) = run_ok(&[
            "line",
            "--from",
            &p("resnet.pt"),
            "--to",
            &p(b),
            "--data",
            &p("cifar-bin"),
            "--x=0:1:3",
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]);
        let (_, loss) = npy(&out.join("loss.npy"));
        assert_eq!(loss[0], meta["line"]["from"]["loss"].as_f64().unwrap() as f32 as f64);
        assert_eq!(loss[2], meta["line"]["to"]["loss"].as_f64().unwrap() as f32 as f64);
        assert_eq!(meta["batchnorm_folding"]["active"], false, "a line interpolates BatchNorm statistics");
        match &first {
            None => first = Some(loss),
            Some(f) => assert_eq!(f, &loss, "{b} gives another line than ckpt/b.pt"),
        }
    }
    let loss = first.unwrap();
    assert_eq!(loss[0], center_loss("resnet.pt"), "α = 0 is model A exactly");
    assert_eq!(loss[2], center_loss("ckpt/b.pt"), "α = 1 is model B exactly");
    assert!(loss[1] != loss[0] && loss[1] != loss[2]);
}

#[test]
fn checkpoint_errors_name_the_problem() {
    let line = |to: &str, name: &str| {
        let out = out_dir(name);
        fails(&[
            "line",
            "--from",
            &p("resnet.pt"),
            "--to",
            to,
            "--data",
            &p("cifar-bin"),
            "--x=0:1:2",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let e = line(&p("resnet.pt"), "line-same");
    assert!(e.contains("identical") && e.contains("resnet.pt"), "{e}");
    let e = line(&p("ckpt/b_legacy.pt"), "line-legacy");
    assert!(e.contains("b_legacy.pt") && e.contains("models/convert_checkpoint.py"), "{e}");
    let e = line(&p("ckpt/other_arch.safetensors"), "line-other");
    assert!(e.contains("other_arch.safetensors") && e.contains("conv1.weight"), "{e}");
    // A state dict with a missing, an unexpected and a mis-shaped tensor: all three are listed.
    let m = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let mut named: Vec<(String, Tensor)> = m.state().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    named.retain(|(n, _)| n != "linear.bias");
    named.push(("extra.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    named[0].1 = Tensor::zeros([1, 1], (Kind::Float, Device::Cpu));
    let f = out_dir("broken-sd").with_extension("safetensors");
    Tensor::write_safetensors(&named, &f).unwrap();
    let e = line(f.to_str().unwrap(), "line-broken");
    for part in [
        "1 missing [linear.bias]",
        "1 unexpected [extra.weight]",
        "conv1.weight: checkpoint [1, 1] vs model [4, 3, 3, 3]",
    ] {
        assert!(e.contains(part), "{part:?} not in {e}");
    }
    let e = fails(&[
        "line",
        "--from",
        &p("ckpt/b.safetensors"),
        "--to",
        &p("ckpt/c.safetensors"),
        "--data",
        &p("cifar-bin"),
        "--out",
        out_dir("noarch").to_str().unwrap(),
    ]);
    assert!(e.contains("--arch"), "{e}");
}

#[test]
fn plane_puts_b_and_c_at_the_unit_points() {
    let plane = |name: &str, extra: &[&str]| {
        let out = out_dir(name);
        let (a, b, c, d) = (p("resnet.pt"), p("ckpt/b.safetensors"), p("ckpt/c.safetensors"), p("cifar-bin"));
        let mut args = vec!["plane", "--models", &a, &b, &c, "--data", &d];
        args.extend(["--x=0:1:2", "--y=0:1:2", "--out", out.to_str().unwrap(), "-q"]);
        args.extend_from_slice(extra);
        (run_ok(&args).0, out)
    };
    let (meta, out) = plane("plane", &[]);
    let pl = &meta["plane"];
    let c = |k: &str, i: usize| pl[k]["coords"][i].as_f64().unwrap();
    assert!((c("B", 0) - 1.0).abs() < 1e-9 && c("B", 1).abs() < 1e-9, "{pl}");
    assert!(c("C", 0).abs() < 1e-9 && (c("C", 1) - 1.0).abs() < 1e-9, "{pl}");
    // Grid points (0,0), (1,0), (0,1) are the three models.
    let (_, loss) = npy(&out.join("loss.npy"));
    assert_eq!(loss[0], pl["A"]["loss"].as_f64().unwrap() as f32 as f64);
    assert_rel(loss[1], pl["B"]["loss"].as_f64().unwrap(), 1e-5, "B");
    assert_rel(loss[2], pl["C"]["loss"].as_f64().unwrap(), 1e-5, "C");
    let (meta, _) = plane("plane-gs", &["--orthogonalize"]);
    let pl = &meta["plane"];
    assert!(pl["cos_xy"].as_f64().unwrap().abs() < 1e-6, "{pl}");
    assert!((pl["C"]["coords"][1].as_f64().unwrap() - 1.0).abs() < 1e-9, "{pl}");
    assert!(pl["C"]["coords"][0].as_f64().unwrap().abs() > 1e-3, "C should move off x = 0: {pl}");
    let e = fails(&[
        "plane",
        "--models",
        &p("resnet.pt"),
        &p("resnet.pt"),
        &p("ckpt/c.safetensors"),
        "--data",
        &p("cifar-bin"),
        "--out",
        out_dir("plane-zero").to_str().unwrap(),
    ]);
    assert!(e.contains("identical"), "{e}");
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

#[test]
fn a_trajectory_inside_a_known_plane_is_recovered() {
    let out = out_dir("traj-plane");
    let (meta, _) = trajectory_ok("traj_plane", 5, &out);
    let tr = &meta["trajectory"];
    let files: Vec<String> =
        tr["checkpoints"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(files.len(), 12);
    for (i, f) in files.iter().enumerate() {
        assert!(f.ends_with(&format!("epoch_{i}.safetensors")), "natural order broken at {i}: {f}");
    }
    assert!(tr["explained_variance_ratio_top2"].as_f64().unwrap() > 1.0 - 1e-6, "{tr}");
    let (shape, path) = npy(&out.join("path.npy"));
    assert_eq!(shape, vec![12, 2]);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fxp("traj_plane.json")).unwrap()).unwrap();
    let truth: Vec<Vec<f64>> = truth["coords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    // The plane is found up to a rotation/reflection within it: all distances are kept, and the
    // origin (the last checkpoint) is at (0, 0).
    assert!(dist(&path[22..24], &[0.0, 0.0]) < 1e-5);
    for i in 0..12 {
        for j in 0..i {
            let (d, t) = (dist(&path[2 * i..2 * i + 2], &path[2 * j..2 * j + 2]), dist(&truth[i], &truth[j]));
            assert!((d - t).abs() < 1e-4 * t.max(1.0), "|p{i} - p{j}| = {d}, constructed {t}");
        }
    }
    // And the coordinates are the constructed ones after one orthogonal 2x2 map (fit on two points).
    let (_, pl) = npy(&out.join("path_loss.npy"));
    assert_eq!(pl.len(), 12);
    assert_rel(pl[11], center_loss("resnet.pt"), 1e-6, "the last checkpoint is the model");
    let g = &meta["grid"];
    let (xmin, xmax) = (g["x"]["min"].as_f64().unwrap(), g["x"]["max"].as_f64().unwrap());
    for i in 0..12 {
        assert!(path[2 * i] > xmin && path[2 * i] < xmax, "path outside the grid's x range");
    }
}

#[test]
fn pca_matches_numpy_on_the_same_vectors() {
    let out = out_dir("traj-rand");
    let (meta, _) = trajectory_ok("traj_rand", 3, &out);
    let tr = &meta["trajectory"];
    let files = tr["checkpoints"].as_array().unwrap();
    assert_eq!(files.len(), 6, "one file per stem: {files:?}");
    assert!(files.iter().all(|f| f.as_str().unwrap().ends_with(".safetensors")));
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fxp("traj_rand_pca.json")).unwrap()).unwrap();
    for k in 0..2 {
        assert_rel(
            tr["explained_variance_ratio"][k].as_f64().unwrap(),
            reference["ratio"][k].as_f64().unwrap(),
            1e-6,
            "ratio",
        );
    }
    let ours: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(out.join("directions.safetensors")).unwrap().into_iter().collect();
    let theirs = Tensor::read_safetensors(fxp("traj_rand_pca.safetensors")).unwrap();
    let mut signs = [0.0f64; 2];
    for (key, t) in &theirs {
        let (pc, name) = key.split_once('.').unwrap();
        let k = if pc == "pc1" { 0 } else { 1 };
        let o = &ours[&format!("{}.{name}", if k == 0 { "x" } else { "y" })];
        let s = (o * t).sum(Kind::Double).double_value(&[]);
        signs[k] += s;
        let diff = (o - t * s.signum()).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{key}: max difference {diff:e}");
    }
    let (_, path) = npy(&out.join("path.npy"));
    let proj = reference["proj"].as_array().unwrap();
    for (i, row) in proj.iter().enumerate() {
        for k in 0..2 {
            let want = row[k].as_f64().unwrap() * signs[k].signum();
            assert!((path[2 * i + k] - want).abs() < 1e-4, "path[{i}][{k}] = {} vs {want}", path[2 * i + k]);
        }
    }
}

#[test]
fn trajectory_inputs_that_say_little_or_too_little() {
    let out = out_dir("traj-iso");
    let (_, err) = trajectory_ok("traj_iso", 3, &out);
    assert!(err.contains("warning") && err.contains("explain only"), "{err}");
    let few = p("traj_few");
    let e = fails(&[
        "trajectory",
        "--checkpoints",
        &few,
        "--arch",
        &p("resnet.pt"),
        "--data",
        &p("cifar-bin"),
        "--out",
        out_dir("traj-few").to_str().unwrap(),
    ]);
    assert!(e.contains("at least 3") && e.contains("found 2") && e.contains(&few), "{e}");
    let glob = format!("{}/nothing_*.pt", few);
    let e = fails(&[
        "trajectory",
        "--checkpoints",
        &glob,
        "--arch",
        &p("resnet.pt"),
        "--data",
        &p("cifar-bin"),
        "--out",
        out_dir("traj-none").to_str().unwrap(),
    ]);
    assert!(e.contains("found 0"), "{e}");
}

/// 100 checkpoints of a ResNet-56-sized parameter vector (0.85M floats), through the library's PCA,
/// all at once and in blocks under a small memory budget: the same components.
#[test]
fn pca_of_100_resnet56_sized_checkpoints() {
    let mut shapes: Vec<Vec<i64>> = vec![vec![64, 64, 3, 3]; 23];
    shapes.push(vec![10, 64]);
    let p: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    let t = 100;
    // (The global generator is shared with the other tests' direction draws: held while drawing.)
    let draw =
        || -> Vec<Tensor> { shapes.iter().map(|s| Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu))).collect() };
    let (origin, e1, e2) = losscape::space::directions::seeded(3, || (draw(), draw(), draw()));
    // Each checkpoint is made when it is read, as a file would be loaded.
    let state = |i: usize| -> Vec<Tensor> {
        let (a, b) = ((i as f64 / 10.0).cos() * 5.0, (i as f64 / 7.0).sin());
        origin.iter().zip(&e1).zip(&e2).map(|((o, x), y)| o + x * a + y * b).collect()
    };
    let include = vec![true; shapes.len()];
    let started = std::time::Instant::now();
    let whole = pca::pca(&mut |i| Ok(state(i)), t, &origin, &include, 1 << 31, Device::Cpu).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let rss = losscape::engine::session::peak_rss_mb().unwrap_or(f64::NAN);
    eprintln!("PCA of {t} x {p} floats: {secs:.1} s, process peak RSS {rss:.0} MiB");
    assert!(p > 840_000);
    assert_eq!(whole.blocks.blocks, 1);
    let r = &whole;
    assert!(
        r.explained_variance_ratio[0] + r.explained_variance_ratio[1] > 1.0 - 1e-6,
        "{:?}",
        r.explained_variance_ratio
    );
    let norm: f64 =
        r.components[0].iter().map(|c| c.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum();
    assert!((norm - 1.0).abs() < 1e-6, "pc1 is a unit vector, norm² = {norm}");
    // 40 MB of vectors at a time: blocks of 5 checkpoints.
    let blocked = pca::pca(&mut |i| Ok(state(i)), t, &origin, &include, 40 << 20, Device::Cpu).unwrap();
    assert!(blocked.blocks.blocks > 1, "{:?}", blocked.blocks);
    for k in 0..2 {
        let d: f64 = whole.components[k]
            .iter()
            .zip(&blocked.components[k])
            .map(|(a, b)| (a - b).abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        assert!(d < 1e-5, "component {k} differs by {d} between all-at-once and blocks");
    }
}

/// max over the grid's α in [0, 1] of v(α) − ((1 − α) v(0) + α v(1)), computed here from the arrays
/// (the grid holds α = 0 and 1 exactly): (height, α).
fn barrier_of(x: &[f64], v: &[f64]) -> (f64, f64) {
    let (a, b) = (v[x.iter().position(|&t| t == 0.0).unwrap()], v[x.iter().position(|&t| t == 1.0).unwrap()]);
    x.iter()
        .zip(v)
        .filter(|(t, _)| (0.0..=1.0).contains(*t))
        .map(|(&t, &y)| (y - ((1.0 - t) * a + t * b), t))
        .fold((f64::NEG_INFINITY, f64::NAN), |m, p| if p.0 > m.0 { p } else { m })
}

#[test]
fn a_line_records_its_barrier_on_each_split_as_the_largest_rise_above_the_chord() {
    let out = out_dir("line-barrier");
    let (meta, err) = run_ok(&[
        "line",
        "--from",
        &p("pair_a.pt"),
        "--to",
        &p("pair_b.safetensors"),
        "--data",
        &p("spirals"),
        "--split",
        "train,test",
        "--x=-0.25:1.25:25",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, x) = npy(&out.join("x.npy"));
    let barriers = meta["line"]["barriers"].as_array().unwrap();
    assert_eq!(barriers.len(), 2, "{barriers:?}");
    for (b, split) in barriers.iter().zip(["train", "test"]) {
        assert_eq!(b["split"], split);
        let (_, loss) = npy(&out.join(format!("loss.{split}.npy")));
        let (_, acc) = npy(&out.join(format!("acc.{split}.npy")));
        let (h, at) = barrier_of(&x, &loss);
        assert_rel(b["loss"]["height"].as_f64().unwrap(), h, 1e-12, &format!("{split} loss barrier"));
        assert_eq!(b["loss"]["at"].as_f64().unwrap(), at, "{split}: where");
        assert!(h > 0.3, "{split}: two minima from different seeds have a barrier between them ({h})");
        let error: Vec<f64> = acc.iter().map(|a| 1.0 - a).collect();
        let (h, at) = barrier_of(&x, &error);
        assert_rel(b["error"]["height"].as_f64().unwrap() + 1.0, h + 1.0, 1e-12, &format!("{split} error barrier + 1"));
        assert_eq!(b["error"]["at"].as_f64().unwrap(), at, "{split}: where the error barrier is");
    }
    // The ends of the chord are the two models' own losses (the first split's in line.from/to).
    assert_eq!(barriers[0]["loss"]["ends"][0].as_f64().unwrap(), meta["line"]["from"]["loss"].as_f64().unwrap());
    assert_eq!(barriers[0]["loss"]["ends"][1].as_f64().unwrap(), meta["line"]["to"]["loss"].as_f64().unwrap());
    let summary = err.lines().last().unwrap();
    let h = barriers[1]["loss"]["height"].as_f64().unwrap();
    assert!(summary.contains("barrier on train: loss ") && summary.contains("; on test: loss "), "{summary}");
    assert!(summary.contains(&losscape::cli::progress::sig6(h)), "{summary} lacks {h}");
    assert!(out.join("curve.png").exists());
}

#[test]
fn a_line_between_two_reflections_through_a_convex_minimum_has_no_barrier() {
    let out = out_dir("line-convex");
    let (meta, err) = run_ok(&[
        "line",
        "--from",
        &p("linear_a.safetensors"),
        "--to",
        &p("linear_b.safetensors"),
        "--arch",
        &p("linear.pt"),
        "--data",
        &p("linear"),
        "--x=-0.25:1.25:13",
        "--out",
        out.to_str().unwrap(),
        "--no-plots",
    ]);
    let b = &meta["line"]["barriers"][0];
    let (from, to) = (meta["line"]["from"]["loss"].as_f64().unwrap(), meta["line"]["to"]["loss"].as_f64().unwrap());
    assert_rel(from, to, 1e-5, "θ* + δ and θ* − δ have the same loss");
    assert!(b["loss"]["height"].as_f64().unwrap() <= 0.0, "a convex loss stays under its chord: {b}");
    assert!(b["error"].is_null(), "float targets have no error: {b}");
    let (_, loss) = npy(&out.join("loss.npy"));
    assert!(loss[6] < 0.1 * from, "α = 0.5 is the minimum: {loss:?}");
    assert!(err.contains("barrier loss 0 at α = 0"), "{err}");
}
