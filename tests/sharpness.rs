//! `losscape sharpness` against closed forms on a least-squares model at its exact minimum (where
//! L(θ + δ) − L(θ) = ½ δᵀHδ), against PyTorch on small networks, across shards, and on bad input.

use std::path::Path;

use crate::common::{assert_valid_meta, fixtures_py, fxp, losscape, ok, out_dir};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// `losscape sharpness --model MODEL --data DATA --out OUT -q --no-plots EXTRA`; its sharpness.json.
fn sharpness(model: &str, data: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let (m, d, o) = (s(&fxp(model)), s(&fxp(data)), s(out));
    let mut args = vec!["sharpness", "--model", &m, "--data", &d, "--out", &o, "-q", "--no-plots"];
    args.extend_from_slice(extra);
    ok(&losscape(&args));
    assert_valid_meta(out);
    json(&out.join("sharpness.json"))
}

/// The results of the first model, by measure name (and radius).
fn results(r: &serde_json::Value) -> Vec<serde_json::Value> {
    r["models"][0]["results"].as_array().unwrap().clone()
}

fn find<'a>(rs: &'a [serde_json::Value], measure: &str) -> &'a serde_json::Value {
    rs.iter().find(|r| r["measure"] == measure).unwrap_or_else(|| panic!("no {measure} in {rs:?}"))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn every_measure_equals_its_closed_form_on_a_quadratic() {
    for (scale, floor) in [("adaptive", "0"), ("filter", "0"), ("none", "0"), ("adaptive", "1")] {
        let rho = 0.3;
        let closed = out_dir(&format!("sharp-closed-{scale}-{floor}")).with_extension("json");
        let (m, d) = (s(&fxp("linear.pt")), s(&fxp("linear")));
        fixtures_py(&[
            "sharpness-closed",
            "--model",
            &m,
            "--data",
            &d,
            "--rho",
            "0.3",
            "--scale",
            scale,
            "--floor",
            floor,
            "--threshold",
            "0.05",
            "--out",
            &s(&closed),
        ]);
        let c = json(&closed);
        let samples = 300.0f64;
        for norm in ["l2", "linf"] {
            let out = out_dir(&format!("sharp-quad-{scale}-{floor}-{norm}"));
            let mut extra = vec!["--radius", "0.3", "--scale", scale, "--floor", floor, "--norm", norm];
            extra.extend(["--samples", "300", "--steps", "60", "--threshold", "0.05", "--quantity", "loss"]);
            // The l∞ ascent ends at a local maximum among the vertices; its second start is the
            // vertex at the signs of an l2 ascent.
            extra.extend(["--restarts", "2"]);
            if norm == "l2" {
                extra.extend(["--measure", "average,worst,pacbayes"]);
            } else {
                extra.extend(["--measure", "worst"]);
            }
            let r = sharpness("linear.pt", "linear", &out, &extra);
            let rs = results(&r);
            let worst = f(&find(&rs, "worst")["value"]);
            let exact = f(&c[if norm == "l2" { "worst_l2" } else { "worst_linf" }]);
            assert!(worst <= exact * (1.0 + 1e-4) + 1e-9, "{scale}/{norm}: worst {worst} above the maximum {exact}");
            assert!(worst >= 0.99 * exact, "{scale}/{norm}: worst {worst} vs {exact}");
            let cons = f(&find(&rs, "worst")["details"]["constraint"]);
            assert!(cons <= rho * (1.0 + 1e-5), "{scale}/{norm}: ‖δ ⊘ c‖ = {cons} > ρ");
            if norm == "linf" {
                continue;
            }
            let avg = find(&rs, "average");
            let (v, se) = (f(&avg["value"]), f(&avg["stderr"]));
            let exact = f(&c["average"]);
            assert!((v - exact).abs() <= 4.0 * se, "{scale}: average {v} ± {se} vs {exact}");
            let exact_se = f(&c["average_draw_std"]) / samples.sqrt();
            assert!(se / exact_se < 1.5 && exact_se / se < 1.5, "{scale}: stderr {se} vs {exact_se}");
            let relative = f(&avg["relative"]);
            let loss = f(&r["models"][0]["loss"]);
            assert!((relative - 100.0 * v / (1.0 + loss)).abs() <= 1e-9 * relative.abs().max(1e-12));
            let pb = find(&rs, "pacbayes");
            let (sigma, se) = (f(&pb["value"]), f(&pb["stderr"]));
            let exact = f(&c["pacbayes_loss"]);
            assert!((sigma - exact).abs() <= 4.0 * se, "{scale}: σ* {sigma} ± {se} vs {exact}");
            assert_eq!(pb["details"]["bracketed"], true);
        }
    }
}

#[test]
fn on_networks_losscape_agrees_with_pytorch_and_its_delta_is_the_reported_increase() {
    // The width-16 ResNet-20 runs channels_last on the CPU; the width-4 ResNet-8 (a 1x1 shortcut
    // convolution from 4 channels) stays NCHW, where oneDNN's channels_last weight gradient is wrong.
    for (model, data, rho, channels_last) in [
        ("resnet.pt", "cifar-bin", "0.05", false),
        ("resnet20.pt", "cifar-bin", "0.05", true),
        ("mlp.pt", "square", "0.2", true),
    ] {
        let out = out_dir(&format!("sharp-net-{model}"));
        let r = sharpness(model, data, &out, &["--radius", rho, "--samples", "60", "--steps", "10"]);
        let meta = crate::common::meta_json(&out);
        assert_eq!(meta["channels_last"], channels_last, "{model}: the layout recorded");
        let rs = results(&r);
        // The run's timing counts the ascent's gradient passes (and times them).
        let taken = find(&rs, "worst")["details"]["gradients"].as_u64().unwrap();
        assert_eq!(meta["timing"]["gradients"].as_u64(), Some(taken), "{model}: gradients in timing");
        let secs = f(&meta["timing"]["gradient_seconds"]);
        assert!(secs > 0.0 && secs <= f(&meta["timing"]["worker_seconds"]), "{model}: gradient seconds {secs}");
        let reference = out_dir(&format!("sharp-ref-{model}")).with_extension("json");
        let delta = out.join("worst.safetensors");
        let (m, d) = (s(&fxp(model)), s(&fxp(data)));
        fixtures_py(&[
            "sharpness-reference",
            "--model",
            &m,
            "--data",
            &d,
            "--rho",
            rho,
            "--samples",
            "60",
            "--steps",
            "10",
            "--delta",
            &s(&delta),
            "--out",
            &s(&reference),
        ]);
        let p = json(&reference);
        assert!((f(&r["models"][0]["loss"]) - f(&p["base"])).abs() <= 1e-5 * f(&p["base"]), "{model}: L(θ)");
        let avg = find(&rs, "average");
        let combined = (f(&avg["stderr"]).powi(2) + f(&p["average_stderr"]).powi(2)).sqrt();
        assert!(
            (f(&avg["value"]) - f(&p["average"])).abs() <= 4.0 * combined,
            "{model}: average {} vs PyTorch {} (± {combined})",
            avg["value"],
            p["average"]
        );
        let worst = f(&find(&rs, "worst")["value"]);
        assert!(worst >= 0.99 * f(&p["pgd"]), "{model}: worst {worst} below PyTorch's plain ascent {}", p["pgd"]);
        if model == "resnet.pt" {
            // The picture is drawn from the run's files alone.
            let o = losscape(&["plot", &s(&out)]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let png = std::fs::read(out.join("sharpness.png")).unwrap();
            assert_eq!(&png[1..4], b"PNG");
        }
        let again = f(&p["delta_increase"]);
        assert!(
            (again - worst).abs() <= 1e-5 * worst.abs().max(1e-7) + 1e-7,
            "{model}: δ gives {again} in PyTorch, reported {worst}"
        );
    }
}

#[test]
fn many_models_in_shards_equal_one_process_and_m_sharpness_is_the_mean_over_batches() {
    let ckpts = fxp("traj_plane");
    let arch = s(&fxp("resnet.pt"));
    let cifar = s(&fxp("cifar-bin"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec!["sharpness", "--checkpoints", ckpts.to_str().unwrap(), "--arch", &arch];
        args.extend(["--data", &cifar, "--radius", "0.02,0.05", "--samples", "4"]);
        args.extend(["--steps", "3", "--measure", "average,worst", "--out", out.to_str().unwrap(), "-q", "--no-plots"]);
        args.extend_from_slice(extra);
        ok(&losscape(&args))
    };
    let whole = out_dir("sharp-many");
    run(&whole, &[]);
    let r = json(&whole.join("sharpness.json"));
    let models = r["models"].as_array().unwrap();
    assert!(models.len() >= 3, "{}", models.len());
    assert!(models.iter().all(|m| m["results"].as_array().unwrap().len() == 4));
    let rows = std::fs::read_to_string(whole.join("sharpness.csv")).unwrap().lines().count();
    assert_eq!(rows, 1 + 4 * models.len());
    let sharded = out_dir("sharp-many-sharded");
    for k in 0..3 {
        run(&sharded, &["--shard", &format!("{k}/3")]);
    }
    assert_eq!(json(&sharded.join("sharpness.json"))["models"], r["models"], "sharded differs from one process");
    assert!(whole.join("worst").is_dir(), "several models: a directory of deltas");
    // m-sharpness over batches of 20 of the 60 samples = the mean of each batch's own worst case.
    let m = out_dir("sharp-m");
    let one = sharpness(
        "resnet.pt",
        "npy_float",
        &m,
        &["--measure", "worst", "--radius", "0.05", "--steps", "4", "--m-sharpness", "20"],
    );
    let res = &results(&one)[0];
    let parts: Vec<f64> = res["details"]["parts"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(parts.len(), 3);
    for (b, part) in parts.iter().enumerate() {
        let out = out_dir(&format!("sharp-m-part{b}"));
        let data = fxp(&format!("sharp_parts/{b}"));
        let d = s(&data);
        let r = sharpness("resnet.pt", &d, &out, &["--measure", "worst", "--radius", "0.05", "--steps", "4"]);
        let alone = f(&results(&r)[0]["value"]);
        assert!((alone - part).abs() <= 1e-5 * alone.abs().max(1e-9), "batch {b}: {part} vs {alone} alone");
    }
    assert!((f(&res["value"]) - parts.iter().sum::<f64>() / 3.0).abs() < 1e-12);
}

/// The items a run has saved (`items/<k>.json`).
fn items_saved(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("items")).map_or(0, |d| d.filter(|e| e.is_ok()).count())
}

#[test]
fn a_sharpness_run_killed_with_sigkill_resumes_to_the_same_result() {
    let ckpts = fxp("traj_plane");
    let (arch, cifar) = (s(&fxp("resnet.pt")), s(&fxp("cifar-bin")));
    let args = |out: &Path| -> Vec<String> {
        let mut a = vec!["sharpness", "--checkpoints", ckpts.to_str().unwrap(), "--arch", &arch, "--data", &cifar];
        a.extend(["--radius", "0.05", "--samples", "4", "--steps", "3", "--measure", "average,worst"]);
        a.extend(["--batch-size", "8", "--device", "cpu", "-q", "--no-plots", "--out", out.to_str().unwrap()]);
        a.iter().map(|s| s.to_string()).collect()
    };
    let spawn = |a: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_losscape"))
            .args(a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let whole = out_dir("sharp-kill-whole");
    let strs = |a: &[String]| losscape(&a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&strs(&args(&whole)));
    let total = items_saved(&whole);
    assert!(total >= 20, "{total} items");
    let d = out_dir("sharp-kill");
    let mut child = spawn(&args(&d));
    let t = std::time::Instant::now();
    while items_saved(&d) < 2 && t.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = items_saved(&d);
    assert!((2..total).contains(&saved), "{saved} of {total} items saved before the kill");
    assert!(!d.join("sharpness.json").exists() && !d.join("meta.json").exists());
    ok(&strs(&args(&d)));
    assert_eq!(
        json(&d.join("sharpness.json"))["models"],
        json(&whole.join("sharpness.json"))["models"],
        "the resumed run differs from the uninterrupted one"
    );
    for k in 0..total {
        let f = format!("items/{k:06}.json");
        assert_eq!(json(&d.join(&f)), json(&whole.join(&f)), "{f}");
    }
    for e in std::fs::read_dir(whole.join("worst")).unwrap() {
        let p = e.unwrap().path();
        let again = d.join("worst").join(p.file_name().unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&again).unwrap(), "{}", again.display());
    }
}

#[test]
fn with_batchnorm_recompute_the_worst_case_is_what_update_bn_gives_at_its_delta() {
    // The worst case with the statistics re-estimated at every point (40 training samples in
    // batches of 16), evaluated on the test split; then PyTorch's update_bn at θ and at θ + δ.
    let plain = sharpness(
        "resnet.pt",
        "cifar-bin",
        &out_dir("sharp-bn-eval"),
        &["--measure", "worst", "--radius", "0.05", "--steps", "3", "--split", "test"],
    );
    let out = out_dir("sharp-bn");
    let r = sharpness(
        "resnet.pt",
        "cifar-bin",
        &out,
        &[
            "--measure",
            "worst",
            "--radius",
            "0.05",
            "--steps",
            "3",
            "--split",
            "test",
            "--batchnorm",
            "recompute",
            "--bn-samples",
            "40",
            "--batch-size",
            "16",
        ],
    );
    let model = &r["models"][0];
    let worst = f(&results(&r)[0]["value"]);
    let reference = out_dir("sharp-bn-ref").with_extension("json");
    let (m, d, delta, o) =
        (s(&fxp("resnet.pt")), s(&fxp("cifar-bin")), s(&out.join("worst.safetensors")), s(&reference));
    fixtures_py(&[
        "bn-reference",
        "--model",
        &m,
        "--data",
        &d,
        "--split",
        "test",
        "--bn-samples",
        "40",
        "--batch-size",
        "16",
        "--points",
        "[[0, 0], [1, 0]]",
        "--directions",
        &delta,
        "--out",
        &o,
    ]);
    let v = json(&reference);
    let (at_theta, at_delta) = (f(&v[0]["loss"]), f(&v[1]["loss"]));
    let base = f(&model["loss"]);
    assert!((base - at_theta).abs() <= 1e-5 * at_theta, "the loss at θ: losscape {base}, update_bn {at_theta}");
    let stored = f(&plain["models"][0]["loss"]);
    assert!((stored - base).abs() > 1e-3 * base, "the stored statistics give the same loss ({stored}): no test");
    let again = at_delta - at_theta;
    assert!(again > 0.0, "update_bn at θ + δ: {at_delta} against {at_theta}");
    assert!((again - worst).abs() <= 1e-4 * worst.abs() + 1e-6, "update_bn gives {again} at δ, losscape {worst}");
}

#[test]
fn bad_sharpness_input_is_one_line_and_leaves_nothing() {
    let (m, d) = (s(&fxp("resnet.pt")), s(&fxp("cifar-bin")));
    for (extra, word) in [
        (vec!["--radius", "0"], "--radius"),
        (vec!["--radius", "-1"], "--radius"),
        (vec!["--radius", "abc"], "abc"),
        (vec!["--measure", "sharpest", "--radius", "0.1"], "sharpest"),
        (vec!["--measure", "pacbayes", "--radius", "0.1"], "pacbayes takes no radius"),
        (vec!["--measure", "average"], "--radius is needed"),
        (vec!["--measure", "worst", "--radius", "0.1", "--m-sharpness", "0"], "--m-sharpness"),
        (vec!["--measure", "worst", "--radius", "0.1", "--m-sharpness", "1000"], "60 samples"),
        (vec!["--radius", "0.1", "--samples", "1"], "--samples"),
    ] {
        let out = out_dir("sharp-bad");
        let mut args = vec!["sharpness", "--model", &m, "--data", &d, "--out", out.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let o = losscape(&args);
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(matches!(o.status.code(), Some(1) | Some(2)), "{extra:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{extra:?}: {e}");
        assert!(e.contains(word), "{extra:?}: {e}");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    }
    // A model with nothing to perturb, and one whose loss is not finite.
    let out = out_dir("sharp-bad-model");
    let o = losscape(&[
        "sharpness",
        "--model",
        &s(&fxp("nograd.pt")),
        "--data",
        &d,
        "--radius",
        "0.1",
        "--measure",
        "worst",
        "--out",
        out.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.code() == Some(1) && e.lines().count() == 1 && e.contains("nograd.pt"), "{e}");
    assert!(!out.exists(), "{e}");
}

/// `--rel-error` on the random draws: the average case and PAC-Bayes σ* from the same draws as
/// the exact run, each draw's pass stopped once its loss is known to E: within the estimate's own
/// standard error of the exact run's, on fewer samples; the loss at θ and the worst case exact.
#[test]
fn rel_error_estimates_the_draws_within_their_standard_errors() {
    let common = ["--measure", "average,worst,pacbayes", "--radius", "0.05", "--samples", "30", "--steps", "3"];
    let exact_dir = out_dir("sharp-rel-exact");
    let exact = sharpness("pair_a.pt", "spirals_big", &exact_dir, &common);
    let sampled_dir = out_dir("sharp-rel-sampled");
    let mut extra = common.to_vec();
    extra.extend(["--rel-error", "0.1", "--min-samples", "256", "--batch-size", "64"]);
    let sampled = sharpness("pair_a.pt", "spirals_big", &sampled_dir, &extra);
    assert_eq!(exact["models"][0]["loss"], sampled["models"][0]["loss"], "the loss at θ is exact");
    let (e, s) = (results(&exact), results(&sampled));
    let (ea, sa) = (find(&e, "average"), find(&s, "average"));
    let gap = (f(&ea["value"]) - f(&sa["value"])).abs();
    assert!(
        gap <= 4.0 * f(&sa["stderr"]),
        "average: exact {} vs sampled {} ± {}",
        ea["value"],
        sa["value"],
        sa["stderr"]
    );
    // Near the minimum most passes run long (the loss is small next to its spread); the
    // bisection's large σ are quickly known.
    for (r, fraction) in [(sa, 0.95), (find(&s, "pacbayes"), 0.7)] {
        let u = &r["sampled"];
        let (used, all) = (f(&u["samples_used"]), f(&u["samples_exact"]));
        assert!(used < fraction * all && used >= 256.0, "{r}");
    }
    // σ*: the sampled levels move the bisection within a few of its standard errors.
    let (ep, sp) = (find(&e, "pacbayes"), find(&s, "pacbayes"));
    let (a, b) = (f(&ep["value"]).ln(), f(&sp["value"]).ln());
    assert!((a - b).abs() <= 0.5, "PAC-Bayes σ*: exact {} vs sampled {}", ep["value"], sp["value"]);
    // The worst case does not sample: the same as the exact run.
    let (ew, sw) = (find(&e, "worst"), find(&s, "worst"));
    assert_eq!(ew["value"], sw["value"]);
    assert!(ew.get("sampled").is_none() && sw.get("sampled").is_none());
    let csv = std::fs::read_to_string(sampled_dir.join("sharpness.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("samples_used,samples_exact"), "{csv}");
}
