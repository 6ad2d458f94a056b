//! `losscape connect`: a curve trained between two BatchNorm MLPs from different seeds (the
//! fixture's spirals pair, whose straight line crosses a barrier), against PyTorch's SGD for the
//! training and update_bn for the evaluation; resumed after kill -9; barriers; bad input.

use std::path::Path;

use tch::Tensor;

use crate::common::{assert_rel, assert_valid_meta, fixtures_py, fxp, losscape, meta_json, npy, ok, out_dir};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The arguments of a connect run of the spirals pair into `out`, then `extra`.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["connect", "--from", &s(&fxp("pair_a.pt")), "--to", &s(&fxp("pair_b.safetensors"))]
        .iter()
        .map(|x| x.to_string())
        .collect();
    a.extend(
        ["--data", &s(&fxp("spirals")), "--lr", "0.05", "--batch-size", "32", "--device", "cpu"].map(String::from),
    );
    a.extend(["--out", &s(out), "--no-plots"].map(String::from));
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn run(a: &[String]) -> String {
    ok(&losscape(&a.iter().map(String::as_str).collect::<Vec<_>>()))
}

fn reference(extra: &[&str]) -> serde_json::Value {
    let out = out_dir(&format!("connect-ref-{}", extra.join("_").replace(['/', '[', ']', ',', ' '], "")))
        .with_extension("json");
    let (a, b, d) = (s(&fxp("pair_a.pt")), s(&fxp("pair_b.safetensors")), s(&fxp("spirals")));
    let mut v = vec!["connect-reference", "--from", &a, "--to", &b, "--data", &d, "--out", out.to_str().unwrap()];
    v.extend_from_slice(extra);
    fixtures_py(&v);
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_trained_curve_halves_the_lines_barrier_and_its_points_are_what_pytorch_evaluates() {
    let out = out_dir("connect");
    let err = run(&args(&out, &["--epochs", "20", "--weight-decay", "0", "--points", "21", "--split", "train,test"]));
    assert_valid_meta(&out);
    let m = meta_json(&out);
    assert_eq!(m["kind"], "connect");
    let c = &m["connect"];
    for (curve, line) in c["curve_barriers"].as_array().unwrap().iter().zip(c["line_barriers"].as_array().unwrap()) {
        let (hc, hl) = (f(&curve["loss"]["height"]), f(&line["loss"]["height"]));
        assert!(
            hl > 0.5 && hc < 0.5 * hl,
            "{}: the curve's barrier {hc} is not under half the line's {hl}",
            curve["split"]
        );
    }
    let (_, t) = npy(&out.join("t.npy"));
    assert_eq!(t.len(), 21);
    for split in ["train", "test"] {
        let (_, curve) = npy(&out.join(format!("curve_loss.{split}.npy")));
        let (_, line) = npy(&out.join(format!("line_loss.{split}.npy")));
        // Both paths start at A and end at B: each model's own loss, re-estimated the same way.
        for (k, end) in [(0, "from"), (20, "to")] {
            let own = if split == "train" { f(&c[end]["loss"]) } else { curve[k] };
            assert_rel(curve[k], own, 1e-6, &format!("{split}: curve at t = {}", t[k]));
            assert_rel(line[k], curve[k], 1e-6, &format!("{split}: line at t = {}", t[k]));
        }
        // Three points of the curve against PyTorch: θ(t) from bend.safetensors, then update_bn.
        let r = reference(&[
            "--bend",
            out.join("bend.safetensors").to_str().unwrap(),
            "--points",
            "[0.25, 0.5, 0.8]",
            "--split",
            split,
        ]);
        for (i, k) in [5usize, 10, 16].into_iter().enumerate() {
            assert_rel(curve[k], f(&r["loss"][i]), 1e-5, &format!("{split}: curve loss at t = {}", t[k]));
        }
    }
    assert!(err.contains("bezier curve trained 20 epochs") && err.contains("the line's: on train: loss"), "{err}");
    // The picture, drawn from the files alone.
    ok(&losscape(&["plot", out.to_str().unwrap()]));
    assert!(out.join("connect.png").exists());
    // The plane through A, B and the bend, with the curve on it: Bezier weights as coordinates.
    let plane = out_dir("connect-plane");
    let (a, b, bend) = (s(&fxp("pair_a.pt")), s(&fxp("pair_b.safetensors")), s(&out.join("bend.safetensors")));
    let plane_args = |models: [&str; 3], dir: &Path| {
        let d = s(&fxp("spirals"));
        let mut v = vec!["plane", "--models", models[0], models[1], models[2], "--curve", out.to_str().unwrap()];
        v.extend(["--data", &d, "--x=-0.2:1.2:8", "--y=-0.2:1.2:8", "--batchnorm", "recompute"]);
        let dir = s(dir);
        v.extend(["--out", &dir, "-q"]);
        losscape(&v)
    };
    ok(&plane_args([&a, &b, &bend], &plane));
    let (shape, path) = npy(&plane.join("path.npy"));
    assert_eq!(shape, vec![101, 2]);
    for k in 0..=100 {
        let t = k as f64 / 100.0;
        let (x, y) = (path[2 * k], path[2 * k + 1]);
        assert!((x - t * t).abs() < 1e-9 && (y - 2.0 * t * (1.0 - t)).abs() < 1e-9, "t = {t}: ({x}, {y})");
    }
    assert!(plane.join("contour.png").exists());
    // B as another file (the same values in TorchScript): not the run's B, which is said.
    let o = plane_args([&a, &bend, &s(&fxp("pair_b.pt"))], &out_dir("connect-plane-other"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("none of them is B") && err.lines().count() == 1, "{err}");
}

#[test]
fn one_epoch_of_curve_training_is_pytorchs_sgd_on_the_same_shuffle_and_draws() {
    for curve in ["bezier", "polychain"] {
        let out = out_dir(&format!("connect-epoch-{curve}"));
        run(&args(&out, &["--epochs", "2", "--curve", curve, "--points", "3", "-q"]));
        let progress = out.join("train/progress.json");
        let r = reference(&[
            "--epochs",
            "2",
            "--curve",
            curve,
            "--lr",
            "0.05",
            "--batch-size",
            "32",
            "--progress",
            progress.to_str().unwrap(),
        ]);
        assert_eq!(r["same_draws"], true, "{curve}: the t draws are not torch.rand's after the documented seed");
        let mut bend = Tensor::read_safetensors(out.join("bend.safetensors")).unwrap();
        bend.sort_by(|x, y| x.0.cmp(&y.0));
        let mut checked = 0;
        for (name, t) in &bend {
            let Some(want) = r["bend"].get(name) else { continue };
            let want: Vec<f64> = want.as_array().unwrap().iter().map(f).collect();
            let got: Vec<f64> = Vec::<f64>::try_from(&t.to_kind(tch::Kind::Double).reshape([-1])).unwrap();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = got.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{curve}: {name} differs from PyTorch's by {diff} (scale {scale})");
            checked += 1;
        }
        assert_eq!(
            checked,
            r["bend"].as_object().unwrap().len(),
            "{curve}: every trained parameter is in bend.safetensors"
        );
    }
}

#[test]
fn a_curve_training_killed_with_sigkill_resumes_to_the_same_bend() {
    let extra = ["--epochs", "300", "--points", "3", "-q"];
    let whole = out_dir("connect-kill-whole");
    run(&args(&whole, &extra));
    let d = out_dir("connect-kill");
    let a = args(&d, &extra);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_losscape"))
        .args(&a)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let done = |d: &Path| -> usize {
        std::fs::read_to_string(d.join("train/progress.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["epochs_done"].as_u64())
            .unwrap_or(0) as usize
    };
    let t = std::time::Instant::now();
    while done(&d) < 5 && t.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = done(&d);
    assert!((5..300).contains(&saved), "{saved} of 300 epochs saved before the kill");
    assert!(!d.join("bend.safetensors").exists() && !d.join("meta.json").exists());
    let err = ok(&losscape(&a.iter().map(String::as_str).filter(|x| *x != "-q").collect::<Vec<_>>()));
    assert!(err.contains(&format!("{saved} of 300 epochs already done")), "{err}");
    assert_eq!(
        std::fs::read(d.join("bend.safetensors")).unwrap(),
        std::fs::read(whole.join("bend.safetensors")).unwrap(),
        "the resumed training ends with another bend"
    );
    let (ma, mb) = (meta_json(&d), meta_json(&whole));
    assert_eq!(ma["connect"]["training"]["epoch_loss"], mb["connect"]["training"]["epoch_loss"]);
    assert_eq!(ma["connect"]["curve_barriers"], mb["connect"]["curve_barriers"]);
}

#[test]
fn bad_connect_input_is_one_line_and_writes_nothing() {
    let fails = |name: &str, extra: &[&str], from: Option<&str>, to: Option<&str>, parts: &[&str]| {
        let out = out_dir(&format!("connect-bad-{name}"));
        // A flag args() already gives takes the value given here.
        let mut a = args(&out, &[]);
        for pair in extra.chunks(2) {
            match a.iter().position(|x| x == pair[0]) {
                Some(i) => a[i + 1] = pair[1].to_string(),
                None => a.extend(pair.iter().map(|x| x.to_string())),
            }
        }
        if let Some(f) = from {
            a[2] = s(&fxp(f));
        }
        if let Some(t) = to {
            a[4] = s(&fxp(t));
        }
        let o = losscape(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        for p in parts {
            assert!(err.contains(p), "{name}: {err:?} does not mention {p:?}");
        }
        assert!(!out.exists(), "{name}: {} was left behind", out.display());
    };
    let e1 = ["--epochs", "1"];
    fails("arch", &e1, None, Some("ckpt/b.pt"), &["ckpt/b.pt", "is it a checkpoint of this architecture"]);
    fails(
        "shapes",
        &e1,
        None,
        Some("pair_narrow.safetensors"),
        &["pair_narrow.safetensors", "net.0.weight: checkpoint [16, 2] vs model [32, 2]"],
    );
    fails("same", &e1, None, Some("pair_a.pt"), &["pair_a.pt", "identical"]);
    fails("epochs0", &["--epochs", "0"], None, None, &["--epochs", "at least 1"]);
    fails("points1", &["--epochs", "1", "--points", "1"], None, None, &["--points", "at least 2"]);
    fails("test-only", &["--epochs", "1", "--split", "test"], None, None, &["--split", "train"]);
    fails("lr", &["--epochs", "1", "--lr", "0"], None, None, &["--lr"]);
    let cifar = s(&fxp("cifar-bin"));
    let on_cifar = ["--epochs", "1", "--data", cifar.as_str()];
    fails("traced", &on_cifar, Some("resnet_traced.pt"), Some("ckpt/b.pt"), &["resnet_traced.pt", "torch.jit.script"]);
    fails("augment-points", &["--epochs", "1", "--augment", "flip"], None, None, &["--augment", "images", "spirals"]);
    // A value the parser refuses is a usage error (exit 2), still one line and nothing written.
    let out = out_dir("connect-bad-augment-word");
    let o = losscape(
        &args(&out, &["--epochs", "1", "--augment", "flip,rotate"]).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        o.status.code() == Some(2) && err.lines().count() == 1 && err.contains("\"rotate\"") && !out.exists(),
        "{err}"
    );
}

/// `--augment flip,crop` on CIFAR images: flips and crops are what the options say (a flipped
/// sample is its mirror image; the crop at offset (4, 4) is the sample itself, at (0, 0) it is
/// shifted by 4 pixels with black — the normalized value of byte 0 — coming in at the top and
/// left), a curve trained with them is the same bend in two runs with one seed, differs from the
/// unaugmented one, and the run records the augmentation.
#[test]
fn augmented_curve_training_is_seeded_and_flips_and_crops_images() {
    use losscape::inputs::data::{DataSpec, Dataset};
    use losscape::options::Split;
    use tch::{Kind, Tensor};
    let d = Dataset::load(&DataSpec::new(fxp("cifar-bin"), Split::Train), tch::Device::Cpu).unwrap();
    let idx = Tensor::from_slice(&[3i64, 0, 7]);
    let plain = d.inputs_at(&idx, Kind::Float);
    let flips = Tensor::from_slice(&[true, false, true]);
    let flipped = d.inputs_augmented(&idx, Kind::Float, Some(&flips), None);
    assert!(flipped.get(0).equal(&plain.get(0).flip([2])) && flipped.get(1).equal(&plain.get(1)));
    let centre = d.inputs_augmented(&idx, Kind::Float, None, Some((&[(4, 4), (4, 4), (4, 4)], 4)));
    assert!(centre.equal(&plain));
    let corner = d.inputs_augmented(&idx, Kind::Float, None, Some((&[(0, 0), (8, 8), (4, 0)], 4)));
    let black = d.inputs_augmented(&idx, Kind::Float, None, Some((&[(0, 0); 3], 40)));
    assert!(corner.get(0).narrow(1, 4, 28).narrow(2, 4, 28).equal(&plain.get(0).narrow(1, 0, 28).narrow(2, 0, 28)));
    assert!(corner.get(0).narrow(1, 0, 4).equal(&black.get(0).narrow(1, 0, 4)), "black padding at the top");
    assert!(corner.get(1).narrow(1, 0, 28).narrow(2, 0, 28).equal(&plain.get(1).narrow(1, 4, 28).narrow(2, 4, 28)));
    assert!(corner.get(2).narrow(2, 4, 28).equal(&plain.get(2).narrow(2, 0, 28)));
    let black_value = black.get(0).select(1, 0).select(1, 0); // one value per channel
    assert!(black_value.double_value(&[0]) < -1.5, "byte 0 normalized: {black_value}");

    let (a, b, data) = (s(&fxp("resnet.pt")), s(&fxp("ckpt/b.pt")), s(&fxp("cifar-bin")));
    let connect = |name: &str, augment: &str| -> (Tensor, std::path::PathBuf) {
        let out = out_dir(&format!("connect-augment-{name}"));
        let o = s(&out);
        let argv = ["connect", "--from", &a, "--to", &b, "--data", &data, "--epochs", "1", "--batch-size", "16"];
        let mut argv = argv.to_vec();
        argv.extend(["--points", "3", "--device", "cpu", "--augment", augment, "--out", &o, "--no-plots"]);
        ok(&losscape(&argv));
        let meta = crate::common::meta_json(&out);
        let recorded = serde_json::to_string(&meta).unwrap();
        let want = if augment == "none" {
            "\"augment\":{\"crop\":false,\"flip\":false}"
        } else {
            "\"augment\":{\"crop\":true,\"flip\":true}"
        };
        assert!(recorded.contains(want), "{name}: meta.json lacks {want}");
        let mut bend = Tensor::read_safetensors(out.join("bend.safetensors")).unwrap();
        bend.sort_by(|x, y| x.0.cmp(&y.0));
        (Tensor::cat(&bend.iter().map(|(_, t)| t.flatten(0, -1)).collect::<Vec<_>>(), 0), out)
    };
    let ((one, run), (two, _), (none, _)) =
        (connect("one", "flip,crop"), connect("two", "crop,flip"), connect("none", "none"));
    assert!(one.equal(&two), "two augmented runs with one seed differ");
    assert!(!one.allclose(&none, 1e-6, 1e-6, false), "the augmentation changed nothing");
    // PyTorch, training the same curve with the documented draws, ends at the same bend.
    let r = one_epoch_in_pytorch(&run, "resnet8w4", [&a, &b, &data], "16", &["--augment", "flip,crop"]);
    assert!(!meta_json(&run)["channels_last"].as_bool().unwrap(), "the width-4 ResNet-8 must stay NCHW on the CPU");
    assert_bend_is_pytorchs(&run, &r, 1e-5);
}

/// PyTorch's one epoch of training the curve of connect run `run` (`arch` between the models
/// `from`, `to` on `data`, minibatches of `batch`, then `extra`) with the run's t draws, checked to
/// be torch.rand's after the documented seed: the reference's JSON (its `bend` and `start`).
fn one_epoch_in_pytorch(
    run: &Path,
    arch: &str,
    [from, to, data]: [&str; 3],
    batch: &str,
    extra: &[&str],
) -> serde_json::Value {
    let json = run.with_extension("reference.json");
    let progress = s(&run.join("train/progress.json"));
    let out = s(&json);
    let mut v = vec!["connect-reference", "--arch", arch, "--from", from, "--to", to, "--data", data];
    v.extend(["--epochs", "1", "--batch-size", batch, "--progress", &progress, "--out", &out]);
    v.extend_from_slice(extra);
    fixtures_py(&v);
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["same_draws"], true, "the t draws are not torch.rand's after the documented seed");
    r
}

/// The bend of `run` equals the one in PyTorch's reference `r` to `tol` of each tensor's scale.
fn assert_bend_is_pytorchs(run: &Path, r: &serde_json::Value, tol: f64) {
    let bend = Tensor::read_safetensors(run.join("bend.safetensors")).unwrap();
    let want = r["bend"].as_object().unwrap();
    for (name, t) in &bend {
        let Some(w) = want.get(name) else { continue };
        let w: Vec<f64> = w.as_array().unwrap().iter().map(f).collect();
        let got: Vec<f64> = Vec::<f64>::try_from(&t.to_kind(tch::Kind::Double).reshape([-1])).unwrap();
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = got.iter().zip(&w).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= tol * scale, "{name} differs from PyTorch's by {diff} (scale {scale})");
    }
    assert_eq!(bend.iter().filter(|(n, _)| want.contains_key(n)).count(), want.len(), "every parameter compared");
}

#[test]
fn a_resnet_trains_channels_last_on_the_cpu_to_pytorchs_bend() {
    // ResNet-20 (width 16: no 1x1 convolution from fewer than 16 channels) takes its gradients in
    // channels_last on the CPU. One SGD step (60 images, batch 64) from the midpoint against
    // PyTorch's NCHW loop: a random ResNet-20 in training mode is ill-conditioned (float32 NCHW
    // gradients are 0.2% off float64 ones on its BatchNorm biases, channels_last ones 1%; in float64
    // the two layouts agree to 1e-13), so each tensor's step is compared to 5% of its norm and the
    // bend to 1e-4 of its scale. A layout bug (oneDNN's #6035 was 615x off) fails both.
    let (a, b, data) = (s(&fxp("resnet20.pt")), s(&fxp("resnet20_b.safetensors")), s(&fxp("cifar-bin")));
    let out = out_dir("connect-resnet20");
    let o = s(&out);
    ok(&losscape(&[
        "connect",
        "--from",
        &a,
        "--to",
        &b,
        "--data",
        &data,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--points",
        "3",
        "--device",
        "cpu",
        "--out",
        &o,
        "--no-plots",
        "-q",
    ]));
    assert_eq!(meta_json(&out)["channels_last"], true, "ResNet-20's gradients are not channels_last");
    let r = one_epoch_in_pytorch(&out, "resnet20", [&a, &b, &data], "64", &[]);
    assert_bend_is_pytorchs(&out, &r, 1e-4);
    let values = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(f).collect() };
    for (name, t) in Tensor::read_safetensors(out.join("bend.safetensors")).unwrap() {
        if r["bend"].get(&name).is_none() {
            continue;
        }
        let (start, want) = (values(&r["start"][&name]), values(&r["bend"][&name]));
        let got: Vec<f64> = Vec::<f64>::try_from(&t.to_kind(tch::Kind::Double).reshape([-1])).unwrap();
        let (mut err, mut norm) = (0.0, 0.0);
        for ((g, w), s0) in got.iter().zip(&want).zip(&start) {
            err += (g - w) * (g - w);
            norm += (w - s0) * (w - s0);
        }
        assert!(
            norm > 0.0 && err.sqrt() <= 0.05 * norm.sqrt(),
            "{name}: its step is {} of PyTorch's off",
            (err / norm).sqrt()
        );
    }
}

#[test]
fn the_evaluation_is_a_sweep_shards_train_once_and_merge_to_the_whole_run() {
    let extra = ["--epochs", "5", "--points", "7", "-q"];
    let whole = out_dir("connect-shards-whole");
    run(&args(&whole, &extra));
    let d = out_dir("connect-shards");
    let first = ok(&losscape(
        &args(&d, &["--epochs", "5", "--points", "7", "--shard", "0/2"]).iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(first.contains("curve epoch 5/5") && !d.join("meta.json").exists(), "{first}");
    let second = ok(&losscape(
        &args(&d, &["--epochs", "5", "--points", "7", "--shard", "1/2"]).iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(!second.contains("curve epoch"), "the second shard trained again: {second}");
    for f in ["t.npy", "curve_loss.npy", "curve_acc.npy", "line_loss.npy", "line_acc.npy", "bend.safetensors"] {
        assert_eq!(std::fs::read(d.join(f)).unwrap(), std::fs::read(whole.join(f)).unwrap(), "{f}");
    }
    assert_eq!(meta_json(&d)["shards"]["count"], 2);
}
