//! The surface engine: values against PyTorch, the center point, restoration of the model,
//! data formats, output files and their layout.

use std::path::Path;

use losscape::data::{DataSpec, Dataset, Layout, Split};
use losscape::device::DeviceSpec;
use losscape::directions::{self, Ignore, Norm};
use losscape::eval::{Evaluator, Perturber};
use losscape::model::Model;
use losscape::surface::{self, SurfaceConfig};
use tch::Device;

use crate::common::{assert_rel, fxp, npy, ok, out_dir, python, reference, same_bits};

fn config(model: &str, data: &str, x: &str, out: &Path) -> SurfaceConfig {
    let mut c = SurfaceConfig::new(fxp(model), DataSpec::new(fxp(data), Split::Train), x.parse().unwrap(), out);
    c.eval.device = DeviceSpec::Cpu;
    c
}

#[test]
fn one_d_grid_matches_pytorch_with_the_saved_directions() {
    let out = out_dir("oned");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:7", &out);
    c.seed = 7;
    let s = surface::run(&c).unwrap();
    let pts: Vec<(f64, f64)> = s.grid.x.iter().map(|&a| (a, 0.0)).collect();
    let r = reference(&c.model, &c.eval.data.path, &out.join("directions.safetensors"), &pts, "ce", &[]);
    for (k, ((l, a), (rl, ra))) in s.loss.iter().zip(&s.acc).zip(&r).enumerate() {
        assert_rel(*l as f64, *rl, 1e-5, &format!("loss at x = {}", s.grid.x[k]));
        assert!((*a as f64 - ra).abs() < 1e-6, "acc at x = {}: {a} vs {ra}", s.grid.x[k]);
    }
    // The curve is not flat: the directions do something.
    assert!(s.loss[0] > 1.05 * s.loss[3] || s.loss[6] > 1.05 * s.loss[3], "{:?}", s.loss);
}

#[test]
fn two_d_non_square_grid_is_stored_rows_y_columns_x() {
    let out = out_dir("twod");
    let mut c = config("resnet_traced.pt", "cifar-bin", "-0.5:1:3", &out);
    c.grid.y = Some("-1:0.25:2".parse().unwrap());
    c.eval.data.split = Split::Test;
    let s = surface::run(&c).unwrap();
    let (shape, loss) = npy(&out.join("loss.npy"));
    assert_eq!(shape, vec![2, 3]);
    let (_, xs) = npy(&out.join("x.npy"));
    let (_, ys) = npy(&out.join("y.npy"));
    assert_eq!(xs, vec![-0.5, 0.25, 1.0]);
    assert_eq!(ys, vec![-1.0, 0.25]);
    let mut pts = Vec::new();
    for &y in &ys {
        for &x in &xs {
            pts.push((x, y));
        }
    }
    let r =
        reference(&c.model, &c.eval.data.path, &out.join("directions.safetensors"), &pts, "ce", &["--split", "test"]);
    for (k, (l, (rl, _))) in loss.iter().zip(&r).enumerate() {
        assert_rel(*l, *rl, 1e-5, &format!("loss[{}, {}] at {:?}", k / 3, k % 3, pts[k]));
    }
    assert_eq!(s.meta["grid"]["shape"], serde_json::json!([2, 3]));
}

#[test]
fn center_point_is_the_models_plain_loss() {
    // Evaluated as a run does by default (channels_last, default batch), without any perturbation.
    let mut model = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let mut data = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Train), Device::Cpu).unwrap();
    model.to_channels_last().unwrap();
    data.to_channels_last();
    let ev = Evaluator::new(&model, &data, None, surface::default_batch_size(Device::Cpu)).unwrap();
    let plain = ev.evaluate().unwrap();
    let out = out_dir("center");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:3", &out);
    c.grid.y = Some("-2:2:3".parse().unwrap());
    // Unfolded, the centre is the same computation as the plain pass: bit for bit.
    c.eval.fold_batchnorm = false;
    let s = surface::run(&c).unwrap();
    assert_eq!(s.loss[4], plain.loss as f32, "center of the grid vs plain evaluation");
    assert_eq!(s.acc[4], plain.acc as f32);
    assert_eq!(s.meta["batchnorm_folding"]["active"], false);
    // Folded (the default), it differs by rounding only.
    let mut f = c.clone();
    f.eval.out = out_dir("center-folded");
    f.eval.fold_batchnorm = true;
    let sf = surface::run(&f).unwrap();
    assert_eq!(sf.meta["batchnorm_folding"]["active"], true, "{}", sf.meta["batchnorm_folding"]);
    assert_rel(sf.loss[4] as f64, plain.loss, 1e-5, "folded centre vs plain evaluation");
    assert_eq!(sf.acc[4], plain.acc as f32);
    let r = reference(&c.model, &c.eval.data.path, &out.join("directions.safetensors"), &[(0.0, 0.0)], "ce", &[]);
    assert_rel(plain.loss, r[0].0, 1e-5, "plain loss vs PyTorch");
}

#[test]
fn batchnorm_folding_matches_the_unfolded_run_and_steps_aside_where_it_would_not_be_exact() {
    let run_with = |name: &str, fold: bool, ignore: Ignore, onednn: bool| {
        let mut c = config("resnet.pt", "cifar-bin", "-1:1:3", &out_dir(name));
        c.grid.y = Some("-1:1:3".parse().unwrap());
        c.eval.fold_batchnorm = fold;
        c.eval.onednn = onednn;
        c.ignore = ignore;
        surface::run(&c).unwrap()
    };
    let run = |name: &str, fold: bool, ignore: Ignore| run_with(name, fold, ignore, true);
    // biasbn (the default): BatchNorm stays put, the folded graph's constants are affine in the
    // directions, and every point agrees with the unfolded evaluation to rounding.
    let (f, u) = (run("fold-on", true, Ignore::Biasbn), run("fold-off", false, Ignore::Biasbn));
    let r = &f.meta["batchnorm_folding"];
    assert_eq!(r["active"], true, "{r}");
    // On CPU the folded copy's convolutions run on oneDNN tensors (written into at each point);
    // with --onednn false on plain ones, to rounding the same values.
    assert_eq!(r["onednn"], true, "{r}");
    let plain = run_with("fold-on-plain", true, Ignore::Biasbn, false);
    assert_eq!(plain.meta["batchnorm_folding"]["onednn"], false, "{}", plain.meta["batchnorm_folding"]);
    for (k, (a, b)) in f.loss.iter().zip(&plain.loss).enumerate() {
        assert_rel(*a as f64, *b as f64, 1e-6, &format!("point {k}, oneDNN vs plain tensors"));
    }
    let (consts, moving) = (r["constants"].as_u64().unwrap(), r["moving_constants"].as_u64().unwrap());
    assert!(moving > 0 && moving < consts, "{r}");
    assert_eq!(u.meta["batchnorm_folding"]["requested"], false);
    for (k, (a, b)) in f.loss.iter().zip(&u.loss).enumerate() {
        assert_rel(*a as f64, *b as f64, 1e-5, &format!("point {k}, folded vs unfolded"));
    }
    assert!(f.loss.iter().any(|&l| l > 1.5 * f.loss[4]), "the points differ: {:?}", f.loss);
    // keep: BatchNorm weights move too, the fold would not be affine: the run goes on unfolded
    // and says why.
    let (k, ku) = (run("fold-keep", true, Ignore::Keep), run("fold-keep-off", false, Ignore::Keep));
    let r = &k.meta["batchnorm_folding"];
    assert_eq!(r["active"], false, "{r}");
    assert!(r["note"].as_str().unwrap().contains("not affine"), "{r}");
    assert_eq!(k.loss, ku.loss, "the fallback is the unfolded evaluation");
}

#[test]
fn parameters_are_restored_bit_for_bit() {
    let model = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let before = model.snapshot();
    let data = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Test), Device::Cpu).unwrap();
    let ev = Evaluator::new(&model, &data, None, 7).unwrap();
    let (dx, dy) = directions::random(&model.params, 0, Norm::Filter, Ignore::Keep, true);
    let base = ev.evaluate().unwrap();
    {
        let p = Perturber::new(&model, &dx, dy.as_ref());
        assert_eq!(p.moving(), model.params.len(), "keep: every tensor moves");
        for (a, b) in [(0.3, -0.7), (1.0, 1.0), (-0.1, 0.0)] {
            p.set(a, b);
            let v = ev.evaluate().unwrap();
            assert_ne!(v.loss, base.loss, "perturbation at ({a}, {b}) changed nothing");
        }
        p.set(0.0, 0.0);
        assert_eq!(ev.evaluate().unwrap(), base, "(0, 0) is not the original point");
    } // dropped: restored
    for ((name, p), b) in model.params.iter().zip(&before) {
        assert!(same_bits(p, b), "{name} not restored bit for bit");
    }
    assert_eq!(ev.evaluate().unwrap(), base);
}

#[test]
fn cifar_binary_python_and_npy_load_the_same_images() {
    for split in [Split::Train, Split::Test] {
        let bin = Dataset::load(&DataSpec::new(fxp("cifar-bin"), split), Device::Cpu).unwrap();
        let py = Dataset::load(&DataSpec::new(fxp("cifar-py"), split), Device::Cpu).unwrap();
        assert_eq!(bin.n, if split == Split::Train { 60 } else { 20 });
        assert!(same_bits(&bin.x, &py.x), "{split:?}: images differ between binary and python versions");
        assert!(same_bits(&bin.y, &py.y), "{split:?}: labels differ");
        assert!(same_bits(&bin.inputs(0, bin.n), &py.inputs(0, py.n)));
    }
    let bin = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Train), Device::Cpu).unwrap();
    for dir in ["npy_nchw", "npy_nhwc"] {
        let d = Dataset::load(&DataSpec::new(fxp(dir), Split::Train), Device::Cpu).unwrap();
        assert!(same_bits(&d.x, &bin.x), "{dir}: images differ from the CIFAR files");
        assert!(same_bits(&d.y, &bin.y), "{dir}: labels differ");
    }
    // Forcing the wrong layout gives other images (so auto did the work above).
    let mut spec = DataSpec::new(fxp("npy_nhwc"), Split::Train);
    spec.layout = Layout::Nchw;
    let d = Dataset::load(&spec, Device::Cpu).unwrap();
    assert_eq!(d.x.size(), vec![60, 32, 32, 3]);
}

#[test]
fn float_npy_is_used_as_given_and_limit_takes_the_first_n() {
    let m = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let bytes = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Train), Device::Cpu).unwrap();
    let floats = Dataset::load(&DataSpec::new(fxp("npy_float"), Split::Train), Device::Cpu).unwrap();
    assert!(floats.normalization.is_none());
    let a = Evaluator::new(&m, &bytes, None, 64).unwrap().evaluate().unwrap();
    let b = Evaluator::new(&m, &floats, None, 64).unwrap().evaluate().unwrap();
    assert_rel(a.loss, b.loss, 1e-5, "byte CIFAR vs the same images normalized by numpy");
    let mut spec = DataSpec::new(fxp("cifar-bin"), Split::Train);
    spec.limit = Some(10);
    let ten = Dataset::load(&spec, Device::Cpu).unwrap();
    assert_eq!((ten.n, ten.available), (10, 60));
    assert!(same_bits(&ten.x, &bytes.x.narrow(0, 0, 10)));
}

#[test]
fn channels_last_does_not_change_the_values() {
    let a = out_dir("cl-on");
    let b = out_dir("cl-off");
    let mut ca = config("resnet.pt", "cifar-bin", "-1:1:5", &a);
    ca.eval.channels_last = Some(true);
    let mut cb = config("resnet.pt", "cifar-bin", "-1:1:5", &b);
    cb.eval.channels_last = Some(false);
    let (sa, sb) = (surface::run(&ca).unwrap(), surface::run(&cb).unwrap());
    assert_eq!(sa.meta["channels_last"], true);
    for (x, y) in sa.loss.iter().zip(&sb.loss) {
        assert_rel(*x as f64, *y as f64, 1e-5, "channels_last on vs off");
    }
}

#[test]
fn batch_size_does_not_change_the_loss() {
    let m = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let d = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Train), Device::Cpu).unwrap();
    let whole = Evaluator::new(&m, &d, None, 60).unwrap().evaluate().unwrap();
    let ragged = Evaluator::new(&m, &d, None, 7).unwrap().evaluate().unwrap();
    assert_rel(ragged.loss, whole.loss, 1e-6, "batch 7 (ragged tail) vs one batch");
    assert_eq!(ragged.acc, whole.acc);
}

#[test]
fn mse_regression_matches_pytorch() {
    let out = out_dir("mse");
    let mut c = config("mlp.pt", "square", "-1:1:5", &out);
    c.grid.y = Some("-1:1:3".parse().unwrap());
    c.ignore = Ignore::Keep;
    let s = surface::run(&c).unwrap();
    assert_eq!(s.meta["loss"], "mse");
    // An MLP is folded (nothing to fold, but frozen) and left on plain tensors by the oneDNN
    // rewrite, which finds no convolution to start from (README).
    let fold = &s.meta["batchnorm_folding"];
    assert!(fold["onednn"] == false && fold["note"].is_null(), "{fold}");
    let pts: Vec<(f64, f64)> = (0..s.grid.len()).map(|k| s.grid.point(k)).collect();
    let r = reference(&c.model, &c.eval.data.path, &out.join("directions.safetensors"), &pts, "mse", &[]);
    for (k, (l, (rl, _))) in s.loss.iter().zip(&r).enumerate() {
        assert_rel(*l as f64, *rl, 1e-5, &format!("mse at {:?}", pts[k]));
    }
    assert!(s.acc.iter().all(|a| a.is_nan()), "MSE runs have no accuracy");
    // The trained fit is the minimum of the surface.
    let center = s.loss[7];
    assert!(s.loss.iter().all(|&l| l >= center), "{:?}", s.loss);
}

#[test]
fn same_seed_reruns_are_bit_identical_and_reused_directions_reproduce_a_run() {
    let a = out_dir("rerun-a");
    let b = out_dir("rerun-b");
    let c2 = out_dir("rerun-c");
    let mut ca = config("resnet.pt", "cifar-py", "-0.5:0.5:3", &a);
    ca.grid.y = Some("0:1:2".parse().unwrap());
    ca.seed = 99;
    let sa = surface::run(&ca).unwrap();
    let mut cb = ca.clone();
    cb.eval.out = b.clone();
    let sb = surface::run(&cb).unwrap();
    assert_eq!(sa.loss, sb.loss);
    let mut cc = ca.clone();
    cc.eval.out = c2.clone();
    cc.seed = 1;
    cc.directions = Some(a.join("directions.safetensors"));
    let sc = surface::run(&cc).unwrap();
    assert_eq!(sa.loss, sc.loss, "--directions from run a should reproduce run a");
    assert_eq!(sc.meta["directions"]["source"], serde_json::json!(a.join("directions.safetensors")));
}

#[test]
fn non_finite_losses_are_recorded_and_the_run_goes_on() {
    let out = out_dir("nonfinite");
    let c = config("resnet.pt", "cifar-bin", "0:1e30:3", &out);
    let s = surface::run(&c).unwrap();
    assert!(s.loss[0].is_finite());
    assert!(!s.loss[2].is_finite(), "loss at 1e30 should overflow: {:?}", s.loss);
    assert!(s.meta["nonfinite_points"].as_u64().unwrap() >= 1);
    assert!(out.join("meta.json").exists());
}

#[test]
fn outputs_are_readable_by_numpy_and_json() {
    let out = out_dir("numpy");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:4", &out);
    c.grid.y = Some("-1:1:3".parse().unwrap());
    surface::run(&c).unwrap();
    let script = r#"
import json, sys, numpy as np
d = sys.argv[1]
m = json.load(open(d + "/meta.json"))
loss, acc, x, y = (np.load(f"{d}/{n}.npy") for n in ("loss", "acc", "x", "y"))
assert loss.shape == (3, 4) and loss.dtype == np.float32, (loss.shape, loss.dtype)
assert acc.shape == (3, 4) and x.shape == (4,) and y.shape == (3,)
assert m["grid"]["shape"] == [3, 4] and m["schema_version"] == 1
assert m["data"]["format"] == "cifar_binary" and m["data"]["n"] == 60
import hashlib
assert m["model"]["sha256"] == hashlib.sha256(open(m["model"]["path"], "rb").read()).hexdigest()
assert abs(m["directions"]["cos_xy"]) < 0.2
for k in ("seed", "norm", "ignore"): assert k in m["directions"], k
for k in ("device", "dtype", "libtorch_version", "argv", "timing"): assert k in m, k
assert m["timing"]["images_per_second"] > 0
print("ok")
"#;
    let o = std::process::Command::new(python()).args(["-c", script, out.to_str().unwrap()]).output().unwrap();
    ok(&o);
}

#[test]
fn out_of_memory_halves_the_batch_and_the_run_goes_on() {
    let a = out_dir("oom");
    let mut c = config("oom_above_8.pt", "cifar-bin", "-1:1:3", &a);
    c.eval.batch_size = Some(60);
    let s = surface::run(&c).unwrap();
    assert_eq!(s.meta["batch_size"], 7, "60 -> 30 -> 15 -> 7 fits under the fixture's limit of 8");
    let b = out_dir("oom-ref");
    let mut r = config("resnet.pt", "cifar-bin", "-1:1:3", &b);
    r.eval.batch_size = Some(7);
    let sr = surface::run(&r).unwrap();
    assert_eq!(s.loss, sr.loss, "same model, same batch in the end: same values");
}

#[test]
fn loss_cap_flags_points_and_leaves_the_others_alone() {
    let a = out_dir("cap");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:7", &a);
    c.eval.batch_size = Some(8);
    let full = surface::run(&c).unwrap();
    let b = out_dir("cap-on");
    let mut cc = c.clone();
    cc.eval.out = b.clone();
    cc.eval.loss_cap = Some(10.0);
    let s = surface::run(&cc).unwrap();
    let (shape, capped) = npy(&b.join("capped.npy"));
    assert_eq!(shape, vec![7]);
    for (i, &flag) in capped.iter().enumerate() {
        if full.loss[i] > 10.0 {
            // Either proved above the cap early (flagged, a lower bound above 10) or, when only
            // the last batch proves it, evaluated in full.
            assert!(
                s.loss[i] > 10.0 && s.loss[i] <= full.loss[i] * (1.0 + 1e-6),
                "x[{i}]: {} vs {}",
                s.loss[i],
                full.loss[i]
            );
        } else {
            assert_eq!(flag, 0.0, "x[{i}] below the cap was flagged");
            assert_eq!(s.loss[i], full.loss[i], "x[{i}] below the cap changed");
        }
    }
    assert!(capped.iter().filter(|&&v| v == 1.0).count() >= 2, "{capped:?} / {:?}", full.loss);
    assert_eq!(
        s.meta["loss_cap"]["capped_points"].as_u64().unwrap() as usize,
        capped.iter().filter(|&&v| v == 1.0).count()
    );
}

#[test]
fn reduced_precision_reports_its_deviation_and_restores_the_model() {
    let a = out_dir("bf16");
    let mut c = config("resnet.pt", "cifar-bin", "-0.5:0.5:3", &a);
    c.eval.precision = Some(losscape::precision::Precision::Bf16);
    let s = surface::run(&c).unwrap();
    let b = out_dir("fp32");
    let mut r = c.clone();
    r.eval.out = b;
    r.eval.precision = None;
    let sr = surface::run(&r).unwrap();
    assert_eq!(sr.meta["precision"], "fp32");
    assert!(sr.meta["precision_check"].is_null());
    assert_eq!(s.meta["dtype"], "bfloat16");
    // Folded in both; oneDNN layouts for the float32 run only (the bf16 copy is refrozen plain).
    let (fb, ff) = (&s.meta["batchnorm_folding"], &sr.meta["batchnorm_folding"]);
    assert!(fb["active"] == true && fb["onednn"] == false, "{fb}");
    assert!(ff["active"] == true && ff["onednn"] == true, "{ff}");
    let pc = &s.meta["precision_check"];
    // (The reference is evaluated unfolded, the run's points folded: rounding apart.)
    assert_rel(pc["center_loss_fp32"].as_f64().unwrap(), sr.loss[1] as f64, 1e-5, "fp32 reference");
    assert_rel(pc["center_loss"].as_f64().unwrap(), s.loss[1] as f64, 1e-6, "bf16 centre");
    for (x, y) in s.loss.iter().zip(&sr.loss) {
        assert!((x - y).abs() <= 0.1 * y.abs() + 0.05, "bf16 {x} vs fp32 {y}");
    }
    // A bf16 pass then a restore gives the float32 parameters back bit for bit.
    let model = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let before = model.snapshot();
    let (dx, dy) = directions::random(&model.params, 0, Norm::Filter, Ignore::Biasbn, true);
    {
        let p = Perturber::new(&model, &dx, dy.as_ref());
        model.cast(tch::Kind::BFloat16).unwrap();
        p.set(0.3, 0.2);
    }
    assert_eq!(model.kind(), tch::Kind::Float);
    for ((n, p), b) in model.params.iter().zip(&before) {
        assert!(same_bits(p, b), "{n}");
    }
}
