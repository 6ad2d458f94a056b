//! The surface engine: values against PyTorch, the center point, restoration of the model,
//! data formats, output files and their layout.

use std::path::Path;

use losscape::commands::run::Task;
use losscape::commands::surface::{self, SurfaceConfig};
use losscape::engine::evaluate::Evaluator;
use losscape::engine::mover::Mover;
use losscape::engine::session::{default_batch_size, Session, Setup};
use losscape::engine::worker::{RunSpec, Strict};
use losscape::inputs::data::{DataSpec, Dataset, Layout, Split};
use losscape::inputs::model::Model;
use losscape::options::{BatchNormMode, Ignore, Norm, Precision};
use losscape::space::directions;
use losscape::space::grid::{GridSpec, Spacing};
use losscape::store::record::{Motion, Plan, Quantity};
use tch::Device;

use crate::common::{assert_rel, assert_valid_meta, fxp, npy, ok, out_dir, python, reference, same_bits};

pub fn config(model: &str, data: &str, x: &str, out: &Path) -> SurfaceConfig {
    SurfaceConfig {
        model: fxp(model),
        arch: None,
        grid: GridSpec { x: x.parse().unwrap(), y: None, spacing: Spacing::Linear },
        norm: Norm::Filter,
        ignore: Ignore::Biasbn,
        seed: 0,
        directions: None,
        curvature: None,
        setup: Setup::new(DataSpec::new(fxp(data), Split::Train)),
        task: Task::new(out),
    }
}

/// A finished run read back: meta.json, loss and accuracy (row-major).
pub struct Run {
    pub meta: serde_json::Value,
    pub loss: Vec<f32>,
    pub acc: Vec<f32>,
    pub points: Vec<(f64, f64)>,
}

pub fn read_run(dir: &Path) -> Run {
    assert_valid_meta(dir);
    let meta = crate::common::meta_json(dir);
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
    let (_, x) = npy(&dir.join("x.npy"));
    let ys = if dir.join("y.npy").exists() { npy(&dir.join("y.npy")).1 } else { vec![0.0] };
    let points = ys.iter().flat_map(|&y| x.iter().map(move |&x| (x, y))).collect();
    Run { loss: f32s(npy(&dir.join("loss.npy")).1), acc: f32s(npy(&dir.join("acc.npy")).1), meta, points }
}

pub fn run(c: &SurfaceConfig) -> Run {
    let o = surface::surface(c, &mut losscape::engine::sweep::Silent).unwrap();
    assert!(o.summary().is_some(), "{o:?}");
    read_run(&c.task.out)
}

#[test]
fn one_d_grid_matches_pytorch_with_the_saved_directions() {
    let out = out_dir("oned");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:7", &out);
    c.seed = 7;
    let s = run(&c);
    let r = reference(&c.model, &c.setup.data.path, &out.join("directions.safetensors"), &s.points, "ce", &[]);
    for (k, ((l, a), (rl, ra))) in s.loss.iter().zip(&s.acc).zip(&r).enumerate() {
        assert_rel(*l as f64, *rl, 1e-5, &format!("loss at x = {}", s.points[k].0));
        assert!((*a as f64 - ra).abs() < 1e-6, "acc at x = {}: {a} vs {ra}", s.points[k].0);
    }
    // The curve is not flat: the directions do something.
    assert!(s.loss[0] > 1.05 * s.loss[3] || s.loss[6] > 1.05 * s.loss[3], "{:?}", s.loss);
    assert_eq!(s.meta["kind"], "surface");
    assert_eq!(s.meta["timing"]["points"], 7);
}

#[test]
fn two_d_non_square_grid_is_stored_rows_y_columns_x() {
    let out = out_dir("twod");
    let mut c = config("resnet_traced.pt", "cifar-bin", "-0.5:1:3", &out);
    c.grid.y = Some("-1:0.25:2".parse().unwrap());
    c.setup.data.split = Split::Test;
    let s = run(&c);
    let (shape, loss) = npy(&out.join("loss.npy"));
    assert_eq!(shape, vec![2, 3]);
    let (_, xs) = npy(&out.join("x.npy"));
    let (_, ys) = npy(&out.join("y.npy"));
    assert_eq!(xs, vec![-0.5, 0.25, 1.0]);
    assert_eq!(ys, vec![-1.0, 0.25]);
    let r = reference(
        &c.model,
        &c.setup.data.path,
        &out.join("directions.safetensors"),
        &s.points,
        "ce",
        &["--split", "test"],
    );
    for (k, (l, (rl, _))) in loss.iter().zip(&r).enumerate() {
        assert_rel(*l, *rl, 1e-5, &format!("loss[{}, {}] at {:?}", k / 3, k % 3, s.points[k]));
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
    let ev = Evaluator::new(&model, &data, None, default_batch_size(Device::Cpu)).unwrap();
    let plain = ev.evaluate(&model, &data).unwrap();
    let out = out_dir("center");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:3", &out);
    c.grid.y = Some("-2:2:3".parse().unwrap());
    // Unfolded, the centre is the same computation as the plain pass: bit for bit.
    c.setup.fold_batchnorm = false;
    let s = run(&c);
    assert_eq!(s.loss[4], plain.loss as f32, "center of the grid vs plain evaluation");
    assert_eq!(s.acc[4], plain.acc as f32);
    assert_eq!(s.meta["batchnorm_folding"]["active"], false);
    // Folded (the default), it differs by rounding only.
    let mut f = c.clone();
    f.task.out = out_dir("center-folded");
    f.setup.fold_batchnorm = true;
    let sf = run(&f);
    assert_eq!(sf.meta["batchnorm_folding"]["active"], true, "{}", sf.meta["batchnorm_folding"]);
    assert_rel(sf.loss[4] as f64, plain.loss, 1e-5, "folded centre vs plain evaluation");
    assert_eq!(sf.acc[4], plain.acc as f32);
    let r = reference(&c.model, &c.setup.data.path, &out.join("directions.safetensors"), &[(0.0, 0.0)], "ce", &[]);
    assert_rel(plain.loss, r[0].0, 1e-5, "plain loss vs PyTorch");
}

#[test]
fn batchnorm_folding_matches_the_unfolded_run_and_steps_aside_where_it_would_not_be_exact() {
    let run_with = |name: &str, fold: bool, ignore: Ignore, onednn: bool| {
        let mut c = config("resnet.pt", "cifar-bin", "-1:1:3", &out_dir(name));
        c.grid.y = Some("-1:1:3".parse().unwrap());
        c.setup.fold_batchnorm = fold;
        c.setup.onednn = onednn;
        c.ignore = ignore;
        run(&c)
    };
    let go = |name: &str, fold: bool, ignore: Ignore| run_with(name, fold, ignore, true);
    // biasbn (the default): BatchNorm stays put, the folded graph's constants are affine in the
    // directions, and every point agrees with the unfolded evaluation to rounding.
    let (f, u) = (go("fold-on", true, Ignore::Biasbn), go("fold-off", false, Ignore::Biasbn));
    let r = &f.meta["batchnorm_folding"];
    assert_eq!(r["active"], true, "{r}");
    // On CPU the folded copy's convolutions run on oneDNN tensors (written into at each point);
    // with --onednn false on plain ones, to rounding the same values.
    assert_eq!(r["onednn"], true, "{r}");
    let plain = run_with("fold-on-plain", true, Ignore::Biasbn, false);
    assert_eq!(plain.meta["batchnorm_folding"]["onednn"], false, "{}", plain.meta["batchnorm_folding"]);
    for (k, (a, b)) in f.loss.iter().zip(&plain.loss).enumerate() {
        assert_rel(*a as f64, *b as f64, 1e-5, &format!("point {k}, oneDNN vs plain tensors"));
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
    let (k, ku) = (go("fold-keep", true, Ignore::Keep), go("fold-keep-off", false, Ignore::Keep));
    let r = &k.meta["batchnorm_folding"];
    assert_eq!(r["active"], false, "{r}");
    assert!(r["note"].as_str().unwrap().contains("not affine"), "{r}");
    assert_eq!(k.loss, ku.loss, "the fallback is the unfolded evaluation");
}

#[test]
fn a_mover_restores_the_parameters_bit_for_bit() {
    let model = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let before = model.snapshot();
    let data = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Test), Device::Cpu).unwrap();
    let ev = Evaluator::new(&model, &data, None, 7).unwrap();
    let (dx, dy) = directions::random(&model.params, 0, Norm::Filter, Ignore::Keep, true);
    let base = ev.evaluate(&model, &data).unwrap();
    let m = Mover::with_directions(&model, None, &dx, dy.as_ref());
    assert_eq!(m.moving(), model.params.len(), "keep: every parameter moves");
    for (a, b) in [(0.3, -0.7), (1.0, 1.0), (-0.1, 0.0)] {
        m.set(a, b);
        let v = ev.evaluate(&model, &data).unwrap();
        assert_ne!(v.loss, base.loss, "perturbation at ({a}, {b}) changed nothing");
    }
    m.set(0.0, 0.0);
    assert_eq!(ev.evaluate(&model, &data).unwrap(), base, "(0, 0) is not the original point");
    m.set(0.5, 0.5);
    m.restore();
    for ((name, p), b) in model.params.iter().zip(&before) {
        assert!(same_bits(p, b), "{name} not restored bit for bit");
    }
    assert_eq!(ev.evaluate(&model, &data).unwrap(), base);
}

/// A worker through its states (strict → ready → points → finish), in bf16 with a fold, and in
/// fp32 with BatchNorm statistics re-estimated at every point: the session it hands back holds the
/// model exactly as loaded, parameters and every buffer (num_batches_tracked too).
#[test]
fn a_worker_hands_the_model_back_as_loaded() {
    for (name, precision, bn) in
        [("bf16", Precision::Bf16, BatchNormMode::Eval), ("recompute", Precision::Fp32, BatchNormMode::Recompute)]
    {
        let dir = out_dir(&format!("worker-states-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut setup = Setup::new(DataSpec::new(fxp("cifar-bin"), Split::Test));
        setup.precision = Some(precision);
        setup.batch_size = Some(8);
        setup.batchnorm = bn;
        setup.bn_samples = 30;
        let s = Session::open(&fxp("resnet.pt"), &setup, Device::Cpu).unwrap();
        let params: Vec<_> = s.model.params.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let buffers: Vec<_> = s.model.buffers.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        assert!(buffers.iter().any(|(n, t)| n.ends_with("num_batches_tracked") && t.kind() == tch::Kind::Int64));
        let (dx, dy) = directions::random(&s.model.params, 3, Norm::Filter, Ignore::Biasbn, true);
        directions::save(&dir.join("directions.safetensors"), &dx, dy.as_ref()).unwrap();
        let plan = Plan {
            arch: fxp("resnet.pt"),
            origin: None,
            motion: Motion::Affine,
            grid: Some(GridSpec {
                x: "-1:1:3".parse().unwrap(),
                y: Some("-1:1:2".parse().unwrap()),
                spacing: Spacing::Linear,
            }),
            states: vec![fxp("ckpt/b.safetensors")],
            columns: vec![Quantity::Loss, Quantity::Acc],
            curvature: None,
            sharpness: None,
        };
        let spec = RunSpec { run_dir: &dir, plan: &plan, setup: &setup };
        let strict = Strict::open(&spec, Device::Cpu, Some(s)).unwrap();
        let mut ready = strict.ready().unwrap();
        let report = ready.report(0, 0.0, 0.0, 0.0, 0.0);
        assert_eq!(report.precision_check.is_some(), precision == Precision::Bf16, "{name}");
        assert_eq!(
            report.batchnorm_folding.active,
            bn == BatchNormMode::Eval,
            "{name}: {:?}",
            report.batchnorm_folding
        );
        let values: Vec<_> = (0..7).map(|k| ready.eval(k).unwrap()).collect();
        let losses: Vec<f32> = values.iter().map(|v| v.values[0]).collect();
        assert!(losses.iter().all(|l| l.is_finite()) && losses[0] != losses[2], "{name}: {losses:?}");
        assert_eq!(values.iter().all(|v| v.batchnorm_seconds > 0.0), bn == BatchNormMode::Recompute, "{name}");
        let s = ready.finish().unwrap();
        assert_eq!(s.model.kind(), tch::Kind::Float);
        for ((n, p), (_, b)) in s.model.params.iter().zip(&params) {
            assert!(same_bits(p, b), "{name}: parameter {n} not restored");
        }
        for ((n, p), (_, b)) in s.model.buffers.iter().zip(&buffers) {
            assert!(same_bits(p, b), "{name}: buffer {n} not restored");
        }
    }
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
    let a = Evaluator::new(&m, &bytes, None, 64).unwrap().evaluate(&m, &bytes).unwrap();
    let b = Evaluator::new(&m, &floats, None, 64).unwrap().evaluate(&m, &floats).unwrap();
    assert_rel(a.loss, b.loss, 1e-5, "byte CIFAR vs the same images normalized by numpy");
    let mut spec = DataSpec::new(fxp("cifar-bin"), Split::Train);
    spec.limit = Some(10);
    let ten = Dataset::load(&spec, Device::Cpu).unwrap();
    assert_eq!((ten.n, ten.available), (10, 60));
    assert!(same_bits(&ten.x, &bytes.x.narrow(0, 0, 10)));
}

#[test]
fn channels_last_does_not_change_the_values() {
    let mut ca = config("resnet.pt", "cifar-bin", "-1:1:5", &out_dir("cl-on"));
    ca.setup.channels_last = true;
    let mut cb = config("resnet.pt", "cifar-bin", "-1:1:5", &out_dir("cl-off"));
    cb.setup.channels_last = false;
    let (sa, sb) = (run(&ca), run(&cb));
    assert_eq!(sa.meta["channels_last"], true);
    for (x, y) in sa.loss.iter().zip(&sb.loss) {
        assert_rel(*x as f64, *y as f64, 1e-5, "channels_last on vs off");
    }
}

#[test]
fn batch_size_does_not_change_the_loss() {
    let m = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let d = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Train), Device::Cpu).unwrap();
    let whole = Evaluator::new(&m, &d, None, 60).unwrap().evaluate(&m, &d).unwrap();
    let ragged = Evaluator::new(&m, &d, None, 7).unwrap().evaluate(&m, &d).unwrap();
    assert_rel(ragged.loss, whole.loss, 1e-6, "batch 7 (ragged tail) vs one batch");
    assert_eq!(ragged.acc, whole.acc);
}

#[test]
fn mse_regression_matches_pytorch() {
    let out = out_dir("mse");
    let mut c = config("mlp.pt", "square", "-1:1:5", &out);
    c.grid.y = Some("-1:1:3".parse().unwrap());
    c.ignore = Ignore::Keep;
    let s = run(&c);
    assert_eq!(s.meta["loss"], "mse");
    // An MLP is folded (nothing to fold, but frozen) and left on plain tensors by the oneDNN
    // rewrite, which finds no convolution to start from (README).
    let fold = &s.meta["batchnorm_folding"];
    assert!(fold["onednn"] == false && fold["note"].is_null(), "{fold}");
    let r = reference(&c.model, &c.setup.data.path, &out.join("directions.safetensors"), &s.points, "mse", &[]);
    for (k, (l, (rl, _))) in s.loss.iter().zip(&r).enumerate() {
        assert_rel(*l as f64, *rl, 1e-5, &format!("mse at {:?}", s.points[k]));
    }
    assert!(s.acc.iter().all(|a| a.is_nan()), "MSE runs have no accuracy");
    // The trained fit is the minimum of the surface.
    let center = s.loss[7];
    assert!(s.loss.iter().all(|&l| l >= center), "{:?}", s.loss);
}

#[test]
fn same_seed_reruns_are_bit_identical_and_reused_directions_reproduce_a_run() {
    let a = out_dir("rerun-a");
    let mut ca = config("resnet.pt", "cifar-py", "-0.5:0.5:3", &a);
    ca.grid.y = Some("0:1:2".parse().unwrap());
    ca.seed = 99;
    let sa = run(&ca);
    let mut cb = ca.clone();
    cb.task.out = out_dir("rerun-b");
    let sb = run(&cb);
    assert_eq!(sa.loss, sb.loss);
    let mut cc = ca.clone();
    cc.task.out = out_dir("rerun-c");
    cc.seed = 1;
    cc.directions = Some(a.join("directions.safetensors"));
    let sc = run(&cc);
    assert_eq!(sa.loss, sc.loss, "--directions from run a should reproduce run a");
    assert_eq!(sc.meta["directions"]["source"], a.join("directions.safetensors").to_str().unwrap());
}

#[test]
fn a_state_dict_model_with_its_architecture_is_the_same_surface() {
    // Model B as TorchScript, and B's state dict (torch.save zip) applied to resnet.pt's
    // architecture: the same directions (drawn against the same values), the same surface.
    let mut a = config("ckpt/b.pt", "cifar-bin", "-1:1:3", &out_dir("sd-ts"));
    a.grid.y = Some("0:1:2".parse().unwrap());
    let sa = run(&a);
    let mut b = a.clone();
    b.model = fxp("ckpt/b_zip.pt");
    b.arch = Some(fxp("resnet.pt"));
    b.task.out = out_dir("sd-arch");
    let sb = run(&b);
    assert_eq!(sa.loss, sb.loss);
    assert_eq!(sb.meta["model"]["origin"], fxp("ckpt/b_zip.pt").to_str().unwrap());
    assert_eq!(
        std::fs::read(a.task.out.join("directions.safetensors")).unwrap(),
        std::fs::read(b.task.out.join("directions.safetensors")).unwrap()
    );
    // resnet.pt's own `torch.save(model.state_dict())` (an OrderedDict) on its architecture.
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:3", &out_dir("sd-od-ts"));
    c.grid.y = Some("0:1:2".parse().unwrap());
    let sc = run(&c);
    let mut d = c.clone();
    d.model = fxp("state_dict.pt");
    d.arch = Some(fxp("resnet.pt"));
    d.task.out = out_dir("sd-od-arch");
    assert_eq!(sc.loss, run(&d).loss);
}

#[test]
fn non_finite_losses_are_recorded_and_the_run_goes_on() {
    let out = out_dir("nonfinite");
    let c = config("resnet.pt", "cifar-bin", "0:1e30:3", &out);
    let s = run(&c);
    assert!(s.loss[0].is_finite());
    assert!(!s.loss[2].is_finite(), "loss at 1e30 should overflow: {:?}", s.loss);
    assert!(s.acc[2].is_nan(), "accuracy where the loss is not finite: {:?}", s.acc);
    assert!(s.meta["nonfinite_points"].as_u64().unwrap() >= 1);
}

#[test]
fn outputs_are_readable_by_numpy_and_json() {
    let out = out_dir("numpy");
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:4", &out);
    c.grid.y = Some("-1:1:3".parse().unwrap());
    run(&c);
    let script = r#"
import json, sys, numpy as np
d = sys.argv[1]
m = json.load(open(d + "/meta.json"))
loss, acc, x, y = (np.load(f"{d}/{n}.npy") for n in ("loss", "acc", "x", "y"))
assert loss.shape == (3, 4) and loss.dtype == np.float32, (loss.shape, loss.dtype)
assert acc.shape == (3, 4) and x.shape == (4,) and y.shape == (3,)
assert m["grid"]["shape"] == [3, 4] and m["schema_version"] == 2 and m["kind"] == "surface"
assert m["data"]["format"] == "cifar_binary" and m["data"]["n"] == 60
import hashlib
assert m["model"]["sha256"] == hashlib.sha256(open(m["model"]["path"], "rb").read()).hexdigest()
assert abs(m["directions"]["cos_xy"]) < 0.2
for k in ("seed", "norm", "ignore"): assert k in m["directions"], k
for k in ("device", "dtype", "libtorch_version", "argv", "timing"): assert k in m, k
assert m["timing"]["images_per_second"] > 0 and m["timing"]["points"] == 12
print("ok")
"#;
    let o = std::process::Command::new(python()).args(["-c", script, out.to_str().unwrap()]).output().unwrap();
    ok(&o);
}

#[test]
fn out_of_memory_halves_the_batch_and_the_run_goes_on() {
    let mut c = config("oom_above_8.pt", "cifar-bin", "-1:1:3", &out_dir("oom"));
    c.setup.batch_size = Some(60);
    let s = run(&c);
    assert_eq!(s.meta["batch_size"], 7, "60 -> 30 -> 15 -> 7 fits under the fixture's limit of 8");
    let mut r = config("resnet.pt", "cifar-bin", "-1:1:3", &out_dir("oom-ref"));
    r.setup.batch_size = Some(7);
    let sr = run(&r);
    assert_eq!(s.loss, sr.loss, "same model, same batch in the end: same values");
}

#[test]
fn loss_cap_flags_points_and_leaves_the_others_alone() {
    let mut c = config("resnet.pt", "cifar-bin", "-1:1:7", &out_dir("cap"));
    c.setup.batch_size = Some(8);
    let full = run(&c);
    let b = out_dir("cap-on");
    let mut cc = c.clone();
    cc.task.out = b.clone();
    cc.setup.loss_cap = Some(10.0);
    let s = run(&cc);
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
fn reduced_precision_reports_its_deviation() {
    let mut c = config("resnet.pt", "cifar-bin", "-0.5:0.5:3", &out_dir("bf16"));
    c.setup.precision = Some(Precision::Bf16);
    let s = run(&c);
    let mut r = c.clone();
    r.task.out = out_dir("fp32");
    r.setup.precision = None;
    let sr = run(&r);
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
}
