//! Curvature: `losscape hessian` against dense Hessians formed in PyTorch (float64) and against
//! PyHessian; `surface --curvature` against dense Hessians at the perturbed points.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::common::{assert_valid_meta, fixtures_py, fxp, losscape, npy, ok, out_dir};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The dense Hessian's spectra (ascending) and traces at `points` (and its top eigenvectors at the
/// first point, in `vectors`).
fn dense(
    model: &str,
    arch: &str,
    data: &str,
    loss: &str,
    ignore: &str,
    extra: &[&str],
) -> (Vec<serde_json::Value>, PathBuf) {
    let tag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        extra.hash(&mut h);
        format!("dense-{arch}-{ignore}-{:016x}", h.finish())
    };
    let out = out_dir(&tag).with_extension("json");
    let vectors = out_dir(&tag).with_extension("safetensors");
    let (m, d, o, v) = (s(&fxp(model)), s(&fxp(data)), s(&out), s(&vectors));
    let mut args =
        vec!["dense-hessian", "--model", &m, "--arch", arch, "--data", &d, "--loss", loss, "--ignore", ignore];
    args.extend(["--vectors", &v, "--out", &o]);
    args.extend_from_slice(extra);
    fixtures_py(&args);
    (json(&out).as_array().unwrap().clone(), vectors)
}

fn eigenvalues(v: &serde_json::Value) -> Vec<f64> {
    v["eigenvalues"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn hessian(model: &str, data: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let (m, d, o) = (s(&fxp(model)), s(&fxp(data)), s(out));
    let mut args = vec!["hessian", "--model", &m, "--data", &d, "--out", &o, "-q"];
    args.extend_from_slice(extra);
    ok(&losscape(&args));
    assert_valid_meta(out);
    json(&out.join("hessian.json"))
}

fn values(v: &serde_json::Value, key: &str) -> Vec<(f64, f64)> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["eigenvalue"].as_f64().unwrap(), e["residual"].as_f64().unwrap()))
        .collect()
}

#[test]
fn eigenvalues_match_the_dense_hessian() {
    for (model, arch, data, loss, ignore) in [
        ("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce", "biasbn"),
        ("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce", "keep"),
        ("mlp.pt", "mlp16", "square", "mse", "keep"),
    ] {
        let (d, vectors) = dense(model, arch, data, loss, ignore, &[]);
        let truth = eigenvalues(&d[0]);
        let scale = truth.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let out = out_dir(&format!("hessian-{arch}-{ignore}"));
        let h = hessian(model, data, &out, &["--top", "3", "--which", "both", "--ignore", ignore]);
        assert!(h.get("jvp").is_none(), "the Hessian takes no J v: {h}");
        assert_eq!(h["n_params"].as_u64().unwrap() as usize, truth.len(), "{arch}/{ignore}");
        assert_eq!(h["converged"], true, "{h}");
        let (largest, smallest) = (values(&h, "largest"), values(&h, "smallest"));
        let n = truth.len();
        for i in 0..3 {
            let (l, lr) = largest[i];
            let (sm, sr) = smallest[i];
            assert!(
                (l - truth[n - 1 - i]).abs() <= 1e-3 * scale,
                "{arch}/{ignore}: λ{} = {l} vs {}",
                i + 1,
                truth[n - 1 - i]
            );
            assert!((sm - truth[i]).abs() <= 1e-3 * scale, "{arch}/{ignore}: smallest {i} = {sm} vs {}", truth[i]);
            assert!(lr <= 1e-3 && sr <= 1e-3, "residuals {lr}, {sr}");
        }
        // The top eigenvector is the dense one (up to sign) where the gap allows.
        if (truth[n - 1] - truth[n - 2]) > 0.05 * scale {
            let ours: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(out.join("eigenvectors.safetensors")).unwrap().into_iter().collect();
            let theirs = Tensor::read_safetensors(&vectors).unwrap();
            let dot: f64 = theirs
                .iter()
                .filter(|(k, _)| k.starts_with("largest0."))
                .map(|(k, t)| (&ours[k] * t).sum(Kind::Double).double_value(&[]))
                .sum();
            assert!(dot.abs() >= 0.999, "{arch}/{ignore}: |cos| = {}", dot.abs());
        }
        // Directions for `surface --directions`: every parameter, the first two eigenvectors.
        let dirs = Tensor::read_safetensors(out.join("directions.safetensors")).unwrap();
        assert!(dirs.iter().any(|(k, _)| k.starts_with("x.")) && dirs.iter().any(|(k, _)| k.starts_with("y.")));
        if arch == "smooth_cnn" {
            assert!(truth[0] < -1e-3 * scale, "the untrained CNN is a saddle: {:?}", &truth[..3]);
            assert!(smallest[0].0 < 0.0, "smallest finds the negative eigenvalue");
        }
    }
}

#[test]
fn trace_and_density() {
    let (d, _) = dense("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce", "keep", &[]);
    let truth = eigenvalues(&d[0]);
    let trace = d[0]["trace"].as_f64().unwrap();
    let out = out_dir("hessian-trace");
    let h = hessian(
        "smooth_cnn.pt",
        "cifar-bin",
        &out,
        &["--top", "0", "--trace", "--trace-samples", "200", "--density", "--ignore", "keep"],
    );
    let t = &h["trace"];
    let (est, se) = (t["estimate"].as_f64().unwrap(), t["stderr"].as_f64().unwrap());
    // The products are float32: the part of the trace Hutch++ takes exactly carries rounding that
    // its statistical error does not count.
    let rounding = 1e-5 * trace.abs();
    assert!((est - trace).abs() <= 4.0 * se + rounding, "trace {est} ± {se} vs dense {trace}");
    assert_eq!(t["method"], "hutch++", "{h}");
    assert!(t["sketch"].as_u64().unwrap() >= 2, "{h}");
    assert!(h.get("largest").is_none(), "{h}");
    // Probes and density runs share passes over the data (8 vectors per pass by default).
    let (products, passes) = (h["hvp_count"].as_u64().unwrap(), h["passes"].as_u64().unwrap());
    assert!(passes * 4 <= products, "{passes} passes for {products} products");
    // Hutchinson on the same budget, one vector per pass: also within its errors.
    let plain = out_dir("hessian-trace-hutchinson");
    let g = hessian(
        "smooth_cnn.pt",
        "cifar-bin",
        &plain,
        &[
            "--top",
            "0",
            "--trace",
            "--trace-samples",
            "200",
            "--trace-method",
            "hutchinson",
            "--vectors-per-pass",
            "1",
            "--ignore",
            "keep",
        ],
    );
    let t = &g["trace"];
    let (est, se) = (t["estimate"].as_f64().unwrap(), t["stderr"].as_f64().unwrap());
    assert!((est - trace).abs() <= 4.0 * se + rounding, "Hutchinson: trace {est} ± {se} vs dense {trace}");
    assert_eq!((t["method"].as_str(), t.get("sketch")), (Some("hutchinson"), None), "{g}");
    assert_eq!(g["passes"], g["hvp_count"], "{g}");
    let (shape, dens) = npy(&out.join("density.npy"));
    assert_eq!(shape[0], 2);
    let b = shape[1] as usize;
    let (grid, p) = (&dens[..b], &dens[b..]);
    let integral: f64 = (1..b).map(|i| 0.5 * (p[i] + p[i - 1]) * (grid[i] - grid[i - 1])).sum();
    assert!((integral - 1.0).abs() < 1e-6, "density integrates to {integral}");
    assert!(
        grid[0] <= truth[0] && grid[b - 1] >= truth[truth.len() - 1],
        "{} .. {} vs {:?}",
        grid[0],
        grid[b - 1],
        (truth[0], truth.last())
    );
    assert!(out.join("density.png").exists());
}

/// The Gauss-Newton matrix and the empirical Fisher against the dense float64 matrices of the
/// fixture script (jacrev of the outputs with the loss's output Hessian; stacked per-target
/// gradients): a CNN with BatchNorm (cross-entropy), an MLP (squared error) and an MLP whose
/// labels include -100 (not counted).
#[test]
fn gauss_newton_and_empirical_fisher_match_the_dense_matrices() {
    for (model, arch, data, loss) in [
        ("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce"),
        ("mlp.pt", "mlp16", "square", "mse"),
        ("mlp8.pt", "mlp8", "cls-ignore", "ce"),
    ] {
        for op in ["ggn", "empirical-fisher"] {
            let (d, _) = dense(model, arch, data, loss, "keep", &["--operator", op]);
            let truth = eigenvalues(&d[0]);
            let (n, scale) = (truth.len(), truth.iter().map(|v| v.abs()).fold(0.0, f64::max));
            let out = out_dir(&format!("{op}-{arch}"));
            let mut extra = vec!["--operator", op, "--ignore", "keep", "--top", "3", "--which", "both"];
            extra.extend(["--trace", "--trace-samples", "200"]);
            if arch == "mlp8" {
                extra.extend(["--density", "--density-runs", "2", "--density-steps", "30"]);
            }
            let h = hessian(model, data, &out, &extra);
            let case = format!("{op} of {arch}");
            assert_eq!(h["operator"], op, "{case}");
            assert_eq!(h["converged"], true, "{case}: {h}");
            assert_eq!(h["jvp"], "forward", "{case}: J v taken in forward mode");
            assert_eq!(h["batchnorm_folded"], u64::from(arch == "smooth_cnn"), "{case}: BatchNorms folded");
            let largest = values(&h, "largest");
            for (i, (l, _)) in largest.iter().enumerate() {
                assert!(
                    (l - truth[n - 1 - i]).abs() <= 1e-3 * scale,
                    "{case}: λ{} = {l} vs {}",
                    i + 1,
                    truth[n - 1 - i]
                );
            }
            // Positive semi-definite: the smallest eigenvalue found is 0 to rounding, as the dense one.
            let smallest = values(&h, "smallest")[0].0;
            assert!(
                smallest >= -1e-6 * scale && truth[0] >= -1e-9 * scale,
                "{case}: λmin {smallest}, dense {}",
                truth[0]
            );
            let (est, se) = (h["trace"]["estimate"].as_f64().unwrap(), h["trace"]["stderr"].as_f64().unwrap());
            let trace = d[0]["trace"].as_f64().unwrap();
            // Float32 products: the exactly taken (sketched) part of Hutch++ carries rounding.
            assert!(
                (est - trace).abs() <= 4.0 * se + 1e-5 * trace.abs(),
                "{case}: trace {est} ± {se} vs dense {trace}"
            );
            let meta = crate::common::meta_json(&out);
            assert_eq!(meta["operator"]["kind"], op, "{case}");
            if arch == "mlp8" {
                let (shape, dens) = npy(&out.join("density.npy"));
                let b = shape[1] as usize;
                let (grid, p) = (&dens[..b], &dens[b..]);
                let integral: f64 = (1..b).map(|i| 0.5 * (p[i] + p[i - 1]) * (grid[i] - grid[i - 1])).sum();
                assert!((integral - 1.0).abs() < 1e-6, "{case}: density integrates to {integral}");
            }
        }
    }
}

#[test]
fn surface_curvature_matches_dense_hessians_at_the_points() {
    let out = out_dir("curvature-map");
    let (m, d, o) = (s(&fxp("smooth_cnn.pt")), s(&fxp("cifar-bin")), s(&out));
    ok(&losscape(&[
        "surface",
        "--model",
        &m,
        "--data",
        &d,
        "--x=-0.5:0.5:3",
        "--y=-0.3:0.3:2",
        "--curvature",
        "--out",
        &o,
        "-q",
    ]));
    assert_valid_meta(&out);
    let (shape, max) = npy(&out.join("eig_max.npy"));
    let (_, min) = npy(&out.join("eig_min.npy"));
    assert_eq!(shape, vec![2, 3]);
    assert!(out.join("curvature.png").exists());
    let (_, xs) = npy(&out.join("x.npy"));
    let (_, ys) = npy(&out.join("y.npy"));
    let pts: Vec<[f64; 2]> = ys.iter().flat_map(|&y| xs.iter().map(move |&x| [x, y])).collect();
    let p = serde_json::to_string(&pts).unwrap();
    let dirs = s(&out.join("directions.safetensors"));
    let (dd, _) =
        dense("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce", "biasbn", &["--directions", &dirs, "--points", &p]);
    for (k, r) in dd.iter().enumerate() {
        let e = eigenvalues(r);
        let scale = e.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(
            (max[k] - e[e.len() - 1]).abs() <= 1e-2 * scale,
            "λmax at {:?}: {} vs {}",
            pts[k],
            max[k],
            e[e.len() - 1]
        );
        assert!((min[k] - e[0]).abs() <= 1e-2 * scale, "λmin at {:?}: {} vs {}", pts[k], min[k], e[0]);
    }
    let meta = crate::common::meta_json(&out);
    assert!(meta["timing"]["curvature_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(meta["curvature"]["parameters"], "biasbn");
}

/// `surface --curvature --operator ggn`: the Gauss-Newton matrix's λmax at every point of a line
/// is the dense one's, its λmin is 0 to rounding (it is positive semi-definite), and the run
/// records the operator.
#[test]
fn surface_curvature_maps_the_gauss_newton_matrix() {
    let out = out_dir("curvature-map-ggn");
    let (m, d, o) = (s(&fxp("mlp8.pt")), s(&fxp("cls-ignore")), s(&out));
    ok(&losscape(&[
        "surface",
        "--model",
        &m,
        "--data",
        &d,
        "--x=-0.5:0.5:3",
        "--curvature",
        "--operator",
        "ggn",
        "--out",
        &o,
        "-q",
    ]));
    assert_valid_meta(&out);
    let (_, max) = npy(&out.join("eig_max.npy"));
    let (_, min) = npy(&out.join("eig_min.npy"));
    let (_, xs) = npy(&out.join("x.npy"));
    let pts: Vec<[f64; 2]> = xs.iter().map(|&x| [x, 0.0]).collect();
    let p = serde_json::to_string(&pts).unwrap();
    let dirs = s(&out.join("directions.safetensors"));
    let extra = ["--directions", dirs.as_str(), "--points", p.as_str(), "--operator", "ggn"];
    let (dd, _) = dense("mlp8.pt", "mlp8", "cls-ignore", "ce", "biasbn", &extra);
    for (k, r) in dd.iter().enumerate() {
        let e = eigenvalues(r);
        let top = e[e.len() - 1];
        assert!((max[k] - top).abs() <= 1e-2 * top, "GGN λmax at {:?}: {} vs {top}", pts[k], max[k]);
        assert!(min[k].abs() <= 1e-2 * top, "GGN λmin at {:?}: {}", pts[k], min[k]);
    }
    let meta = crate::common::meta_json(&out);
    assert_eq!(meta["curvature"]["operator"], "ggn");
    // Not a usage without --curvature.
    let r = losscape(&["surface", "--model", &m, "--data", &d, "--x=-0.5:0.5:3", "--operator", "ggn", "--out", &o]);
    assert_eq!(r.status.code(), Some(2), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn the_top_eigenvalue_agrees_with_pyhessian() {
    let out = out_dir("hessian-r20");
    let h = hessian("resnet20.pt", "cifar-bin", &out, &["--ignore", "keep", "--tol", "1e-4"]);
    let ours = values(&h, "largest")[0].0;
    let r = out_dir("pyhessian").with_extension("json");
    let (m, d) = (s(&fxp("resnet20.pt")), s(&fxp("cifar-bin")));
    fixtures_py(&["pyhessian", "--model", &m, "--arch", "resnet20", "--data", &d, "--out", &s(&r)]);
    let theirs = json(&r)["top"].as_f64().unwrap();
    assert!((ours - theirs).abs() <= 5e-3 * theirs.abs(), "losscape {ours} vs PyHessian {theirs}");
}

/// curvlinops 3.0.1 (HessianLinearOperator / GGNLinearOperator with scipy's eigsh) on the same
/// ResNet-20, samples and parameter set: the same top eigenvalue of the Hessian and of the GGN.
#[test]
fn the_top_eigenvalues_agree_with_curvlinops() {
    let (m, d) = (s(&fxp("resnet20.pt")), s(&fxp("cifar-bin")));
    for op in ["hessian", "ggn"] {
        let out = out_dir(&format!("hessian-r20-curvlinops-{op}"));
        let h = hessian("resnet20.pt", "cifar-bin", &out, &["--ignore", "keep", "--tol", "1e-4", "--operator", op]);
        let ours = values(&h, "largest")[0].0;
        let r = out_dir(&format!("curvlinops-{op}")).with_extension("json");
        fixtures_py(&[
            "curvlinops-top",
            "--model",
            &m,
            "--arch",
            "resnet20",
            "--data",
            &d,
            "--operator",
            op,
            "--out",
            &s(&r),
        ]);
        let theirs = json(&r)["top"].as_f64().unwrap();
        assert!((ours - theirs).abs() <= 2e-3 * theirs.abs(), "{op}: losscape {ours} vs curvlinops {theirs}");
    }
}

#[test]
fn unusable_models_and_options_are_one_line() {
    let fails = |model: &str, extra: &[&str]| {
        let out = out_dir(&format!("hessian-bad-{model}-{}", extra.len()));
        let (m, d, o) = (s(&fxp(model)), s(&fxp("cifar-bin")), s(&out));
        let mut args = vec!["hessian", "--model", &m, "--data", &d, "--out", &o];
        args.extend_from_slice(extra);
        let r = losscape(&args);
        let e = String::from_utf8_lossy(&r.stderr).to_string();
        assert_eq!(r.status.code(), Some(1), "{model}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(!out.exists(), "{model}: a failed run left {}", out.display());
        e
    };
    let e = fails("nograd.pt", &[]);
    assert!(e.contains("nograd.pt") && e.contains("differentiabl"), "{e}");
    let e = fails("nangrad.pt", &["--ignore", "keep"]);
    assert!(e.contains("nangrad.pt") && e.contains("not finite"), "{e}");
    // Reduced precisions are not among --precision's values for a Hessian (a usage error).
    let out = out_dir("hessian-bad-bf16");
    let r = losscape(&[
        "hessian",
        "--model",
        &s(&fxp("resnet.pt")),
        "--data",
        &s(&fxp("cifar-bin")),
        "--out",
        &s(&out),
        "--precision",
        "bf16",
    ]);
    let e = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(r.status.code() == Some(2) && e.contains("bf16") && e.lines().count() == 1 && !out.exists(), "{e}");
    let e = fails("resnet.pt", &["--tol", "2"]);
    assert!(e.contains("--tol"), "{e}");
    // --params: a pattern that is no regular expression, one that matches no name of the set (a
    // BatchNorm weight is outside the default biasbn set), and a per-layer run with nothing to do.
    let e = fails("smooth_cnn.pt", &["--params", "conv("]);
    assert!(e.contains("--params") && e.contains("conv("), "{e}");
    let e = fails("smooth_cnn.pt", &["--params", "bn\\.weight"]);
    assert!(e.contains("--params") && e.contains("matches no parameter") && e.contains("conv.weight"), "{e}");
    let e = fails("smooth_cnn.pt", &["--per-layer", "--top", "0", "--density"]);
    assert!(e.contains("--per-layer"), "{e}");
}

/// `--per-layer`: each diagonal block's extreme eigenvalues and trace equal the dense Hessian's
/// blocks (per tensor and per module); the blocks' traces add up to the whole trace; `--params`
/// takes the Hessian over the named tensors only.
#[test]
fn per_layer_blocks_and_params_match_the_dense_blocks() {
    let (d, _) = dense("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce", "keep", &[]);
    let within = |got: f64, want: &serde_json::Value, scale: f64, what: &str| {
        let want = want.as_f64().unwrap();
        assert!((got - want).abs() <= 2e-3 * scale, "{what}: {got} vs dense {want}");
    };
    for (by, kind) in [("tensor", "tensors"), ("module", "modules")] {
        let out = out_dir(&format!("hessian-per-layer-{by}"));
        let h = hessian(
            "smooth_cnn.pt",
            "cifar-bin",
            &out,
            &["--ignore", "keep", "--which", "both", "--per-layer", by, "--trace", "--trace-samples", "90"],
        );
        let dense_blocks = d[0]["blocks"][kind].as_array().unwrap();
        let layers = h["per_layer"].as_array().unwrap();
        assert_eq!(layers.len(), dense_blocks.len(), "{by}: {h}");
        let full_max = h["largest"][0]["eigenvalue"].as_f64().unwrap();
        let full_min = h["smallest"][0]["eigenvalue"].as_f64().unwrap();
        let full_trace = h["trace"]["estimate"].as_f64().unwrap();
        let mut sum = 0.0;
        for (l, b) in layers.iter().zip(dense_blocks) {
            let name = l["name"].as_str().unwrap();
            assert_eq!(l["name"], b["name"], "{by}: blocks in model order");
            assert_eq!(l["tensors"], b["tensors"], "{by} {name}");
            assert_eq!(l["n_params"], b["n"], "{by} {name}");
            let scale = b["max"].as_f64().unwrap().abs().max(b["min"].as_f64().unwrap().abs());
            let (lmax, lmin) =
                (l["largest"]["eigenvalue"].as_f64().unwrap(), l["smallest"]["eigenvalue"].as_f64().unwrap());
            within(lmax, &b["max"], scale, &format!("{by} {name} λmax"));
            within(lmin, &b["min"], scale, &format!("{by} {name} λmin"));
            // Cauchy interlacing: a diagonal block's spectrum lies within the whole one's.
            assert!(lmax <= full_max * (1.0 + 1e-3) && lmin >= full_min - 1e-3 * full_max.abs(), "{by} {name}");
            let (est, se) = (l["trace"]["estimate"].as_f64().unwrap(), l["trace"]["stderr"].as_f64().unwrap());
            let want = b["trace"].as_f64().unwrap();
            assert!(
                (est - want).abs() <= 4.0 * se + 1e-5 * full_trace.abs(),
                "{by} {name}: trace {est} ± {se} vs dense {want}"
            );
            sum += est;
        }
        assert!((sum - full_trace).abs() <= 1e-6 * full_trace.abs(), "{by}: blocks add up to {sum}, not {full_trace}");
        let csv = std::fs::read_to_string(out.join("per_layer.csv")).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        assert!(rows[0].starts_with("depth,name,tensors,n_params,lambda_max"), "{csv}");
        assert_eq!(rows.len(), layers.len() + 1, "{csv}");
        assert!(rows[1].starts_with(&format!("0,{},", layers[0]["name"].as_str().unwrap())), "{csv}");
        let meta = crate::common::meta_json(&out);
        assert_eq!(meta["operator"]["per_layer"], by, "{meta}");
        // The bar chart by depth, in the default formats, nothing drawn beyond its canvas.
        for f in ["per_layer.png", "per_layer.pdf"] {
            assert!(out.join(f).exists(), "{by}: no {f}");
        }
        ok(&losscape(&["plot", &s(&out), "--format", "svg"]));
        let svg = std::fs::read_to_string(out.join("per_layer.svg")).unwrap();
        let outside = losscape::plot::output::outside(&svg, 0.5).unwrap();
        assert!(outside.is_empty(), "{by}: per_layer drawn outside the canvas: {outside:?}");
        for l in layers {
            assert!(svg.contains(l["name"].as_str().unwrap()), "{by}: {} not named", l["name"]);
        }
    }
    // --params: the Hessian over conv.weight and fc.weight only, as the dense one over them.
    let (d, _) =
        dense("smooth_cnn.pt", "smooth_cnn", "cifar-bin", "ce", "keep", &["--params", "conv\\..*,fc\\.weight"]);
    let truth = eigenvalues(&d[0]);
    let out = out_dir("hessian-params");
    let h = hessian("smooth_cnn.pt", "cifar-bin", &out, &["--ignore", "keep", "--params", "conv\\..*,fc\\.weight"]);
    assert_eq!(h["n_params"].as_u64().unwrap() as usize, truth.len(), "{h}");
    assert_eq!(d[0]["names"], serde_json::json!(["conv.weight", "fc.weight"]));
    let top = h["largest"][0]["eigenvalue"].as_f64().unwrap();
    let want = truth[truth.len() - 1];
    assert!((top - want).abs() <= 1e-3 * want.abs(), "λmax {top} vs dense {want}");
    let meta = crate::common::meta_json(&out);
    assert_eq!(meta["operator"]["params"], serde_json::json!(["conv\\..*", "fc\\.weight"]), "{meta}");
}

/// The reference spectrum of the trained ResNet-8 fixture (scipy eigsh over float64 PyTorch
/// products), computed once.
fn trained_reference() -> &'static serde_json::Value {
    static REF: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let out = out_dir("eigsh-trained").with_extension("json");
        let (m, d) = (s(&fxp("trained_r8.pt")), s(&fxp("trained")));
        fixtures_py(&["eigsh-hessian", "--model", &m, "--data", &d, "--out", &s(&out)]);
        json(&out)
    })
}

#[test]
fn the_extremes_reported_are_the_extremes_of_a_trained_resnet() {
    // λmin ≈ −0.01 λmax with a bulk near 0: a residual measured against max|λ| accepted a bulk
    // value near 0 as λmin after a few products (+0.00207 for the demo's −3.9).
    let r = trained_reference();
    let (lmax, lmin) = (r["largest"][0].as_f64().unwrap(), r["smallest"][0].as_f64().unwrap());
    assert!(lmin < 0.0 && lmin.abs() < 0.05 * lmax, "the fixture's spectrum: {lmin} .. {lmax}");
    for which in ["smallest", "both"] {
        let out = out_dir(&format!("hessian-trained-{which}"));
        let h = hessian("trained_r8.pt", "trained", &out, &["--which", which]);
        assert_eq!(h["converged"], true, "{h}");
        let sm = &h["smallest"][0];
        let value = sm["eigenvalue"].as_f64().unwrap();
        assert!((value - lmin).abs() <= 0.02 * lmin.abs(), "--which {which}: λmin {value} vs {lmin}");
        // The reported residual bounds the distance to an eigenvalue: here, to λmin itself.
        let norm = sm["residual_norm"].as_f64().unwrap();
        assert!((value - lmin).abs() <= norm.max(1e-6 * lmax), "{value} vs {lmin}: residual {norm}");
        assert_eq!(sm["test"], "relative", "{sm}");
        if which == "both" {
            let top = h["largest"][0]["eigenvalue"].as_f64().unwrap();
            assert!((top - lmax).abs() <= 0.01 * lmax, "λmax {top} vs {lmax}");
        }
        assert!(h["hvp_count"].as_u64().unwrap() >= 20, "a Krylov space of 20 vectors first: {h}");
    }
    // The curvature map at its default tolerance (1e-2), at one point: the centre.
    let out = out_dir("curvature-trained");
    let (m, d, o) = (s(&fxp("trained_r8.pt")), s(&fxp("trained")), s(&out));
    ok(&losscape(&[
        "surface",
        "--model",
        &m,
        "--data",
        &d,
        "--x=0:0:1",
        "--y=0:0:1",
        "--curvature",
        "--out",
        &o,
        "-q",
        "--no-plots",
    ]));
    let (max, min) = (npy(&out.join("eig_max.npy")).1[0], npy(&out.join("eig_min.npy")).1[0]);
    assert!((min - lmin).abs() <= 0.05 * lmin.abs(), "map λmin {min} vs {lmin}");
    assert!((max - lmax).abs() <= 0.01 * lmax, "map λmax {max} vs {lmax}");
    let meta = crate::common::meta_json(&out);
    assert!(meta["timing"]["curvature_products"].as_u64().unwrap() >= 20, "{}", meta["timing"]);
    assert_eq!(meta["channels_last"], false, "gradients on the CPU are taken in NCHW (oneDNN #6035)");
}

/// The GGN's and the empirical Fisher's products taken in forward mode (the default) equal those
/// by the double-backward trick to float rounding — on a BatchNorm CNN, an MLP with -100 labels, a
/// causal language model and a ViT, two vectors per pass (the second takes a forward pass of its
/// own), after the TorchScript executor has profiled and optimized the forward with gradients (its
/// autodiff subgraphs would drop tangents). Forward mode must have been used throughout, except
/// on a model with weight normalization (`_weight_norm` has no forward-mode formula in libtorch),
/// where the operator falls back to double backward and gives the same products.
#[test]
fn forward_mode_products_equal_the_double_backward_ones() {
    use losscape::engine::hessian::{Hessian, Jvp};
    use losscape::inputs::data::{DataSpec, Dataset};
    use losscape::inputs::model::Model;
    use losscape::options::{LossKind, Operator, Split};
    for (model, data, expected) in [
        ("smooth_cnn.pt", "cifar-bin", Jvp::Forward),
        ("mlp8.pt", "cls-ignore", Jvp::Forward),
        ("lm.pt", "tokens", Jvp::Forward),
        ("vit.pt", "cifar-bin", Jvp::Forward),
        ("weightnorm_cnn.pt", "cifar-bin", Jvp::DoubleBackward),
    ] {
        let m = Model::load(&fxp(model), tch::Device::Cpu).unwrap();
        let d = Dataset::load(&DataSpec::new(fxp(data), Split::Train), tch::Device::Cpu).unwrap();
        let set: Vec<usize> = (0..m.params.len()).collect();
        // Warm the executor up: a few forward passes with gradients, as the products take them.
        for _ in 0..4 {
            let out = m.forward(&d.inputs(0, d.n.min(16))).unwrap();
            let _ = Tensor::run_backward(
                &[&out.to_kind(Kind::Float).square().sum(Kind::Float)],
                &[&m.params[0].1],
                false,
                false,
            );
        }
        for op in [Operator::Ggn, Operator::EmpiricalFisher] {
            let case = format!("{op:?} of {model}");
            let new = || Hessian::new(&m, &d, set.clone(), LossKind::Ce, op, 1, 16).unwrap();
            let mut h = new();
            let dim = h.dim();
            tch::manual_seed(5);
            let vs = vec![
                Tensor::randn([dim], (Kind::Float, tch::Device::Cpu)),
                Tensor::randn([dim], (Kind::Float, tch::Device::Cpu)),
            ];
            let fwd = h.apply_block(&vs).unwrap();
            let fwd2 = h.apply_block(&vs[1..]).unwrap();
            assert_eq!(h.jvp, expected, "{case}: J v taken the wrong way");
            let mut reference = new();
            reference.jvp = Jvp::DoubleBackward;
            let back = reference.apply_block(&vs).unwrap();
            for (k, (a, b)) in fwd.iter().chain(&fwd2).zip(back.iter().chain(&back[1..])).enumerate() {
                let scale = b.abs().max().double_value(&[]);
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(scale > 0.0 && diff <= 1e-4 * scale, "{case}, vector {k}: off by {diff} (scale {scale})");
            }
        }
    }
}

/// The module the curvature products run has every BatchNorm that follows a convolution or linear
/// layer folded into it, as a function of the parameters: its loss, gradient and Hessian-vector
/// product equal the module's own (a freshly loaded copy's first pass) to float rounding —
/// scripted and traced ResNets (shortcut convolutions, `conv2d` and `_convolution`), a CNN, an MLP
/// with BatchNorm1d after Linear layers, a weight-normalized CNN with a BatchNorm1d after a mean
/// (left as it is) — and it reads the running
/// statistics as they are at each pass (moving them in place moves it too, as BatchNorm
/// re-estimation does). On the smooth CNN the product also equals central differences of
/// gradients, after the loaded module has run forward passes with gradients: libtorch's
/// optimizing executor then differentiates its own autodiff subgraphs, whose second derivative
/// is wrong here (off by 16%), which the products' module never does.
#[test]
fn batchnorm_folded_products_equal_the_modules_own() {
    use losscape::inputs::data::{DataSpec, Dataset};
    use losscape::inputs::model::Model;
    use losscape::options::Split;
    let flat = |t: &[Tensor]| Tensor::cat(&t.iter().map(|t| t.flatten(0, -1)).collect::<Vec<_>>(), 0);
    let close = |a: &Tensor, b: &Tensor, tol: f64| {
        let scale = b.abs().max().double_value(&[]);
        scale > 0.0 && (a - b).abs().max().double_value(&[]) <= tol * scale
    };
    let move_statistics = |m: &Model| {
        let _g = tch::no_grad_guard();
        for l in m.batchnorm_layers().unwrap() {
            let _ = l.running_var.shallow_clone().g_mul_scalar_(1.7);
            let _ = l.running_mean.shallow_clone().g_add_scalar_(0.3);
        }
    };
    for (model, data) in [
        ("resnet.pt", "cifar-bin"),
        ("resnet_traced.pt", "cifar-bin"),
        ("smooth_cnn.pt", "cifar-bin"),
        ("pair_a.pt", "spirals"),
        ("weightnorm_cnn.pt", "cifar-bin"),
        ("convs_cnn.pt", "cifar-bin"),
    ] {
        let m = Model::load(&fxp(model), tch::Device::Cpu).unwrap();
        let d = Dataset::load(&DataSpec::new(fxp(data), Split::Train), tch::Device::Cpu).unwrap();
        // The weight-normed CNN's BatchNorm1d follows a mean: nothing can absorb it.
        let unfoldable = usize::from(model == "weightnorm_cnn.pt");
        let layers = m.batchnorm_layers().unwrap().len();
        assert_eq!(m.batchnorms_folded().unwrap(), layers - unfoldable, "{model}: BatchNorms folded of {layers}");
        // Every convolution (the weights of rank 3 to 5) runs as losscape::conv in the Hessian's.
        let convs = m.params.iter().filter(|(_, p)| p.dim() >= 3).count();
        assert_eq!(m.hessian_convolutions().unwrap(), convs, "{model}: convolutions rewritten");
        let (x, y) = (d.inputs(0, d.n.min(32)), d.targets(0, d.n.min(32)));
        tch::manual_seed(3);
        let v: Vec<Tensor> = m.params.iter().map(|(_, p)| p.randn_like()).collect();
        // (loss, gradient, Hessian-vector product) of `of`, through the module's own forward (0),
        // the products' (1), or the Hessian products' with its convolutions rewritten (2).
        let products = |of: &Model, which: u8| -> (f64, Tensor, Tensor) {
            let params: Vec<&Tensor> = of.params.iter().map(|(_, p)| p).collect();
            tch::with_grad(|| {
                let out = match which {
                    0 => of.forward(&x),
                    1 => of.forward_products(&x),
                    _ => of.forward_hessian_products(&x),
                }
                .unwrap();
                let loss = out.cross_entropy_for_logits(&y);
                let g = Tensor::run_backward(&[&loss], &params, true, true);
                let gv = g.iter().zip(&v).map(|(g, v)| (g * v).sum(Kind::Float)).reduce(|a, b| a + b).unwrap();
                let hv = Tensor::run_backward(&[&gv], &params, false, false);
                (loss.double_value(&[]), flat(&g).detach(), flat(&hv))
            })
        };
        // The loaded module runs a few passes with gradients first (its executor optimizes).
        for _ in 0..4 {
            let _ = products(&m, 0);
        }
        for moved in [false, true] {
            let case = format!("{model} (statistics moved: {moved})");
            let reference = Model::load(&fxp(model), tch::Device::Cpu).unwrap();
            if moved {
                move_statistics(&reference);
                move_statistics(&m);
            }
            let (l0, g0, h0) = products(&reference, 0);
            let (l1, g1, h1) = products(&m, 1);
            assert!((l0 - l1).abs() <= 1e-5 * l0.abs(), "{case}: loss {l1} vs {l0}");
            assert!(close(&g1, &g0, 1e-4), "{case}: gradients differ");
            assert!(close(&h1, &h0, 1e-4), "{case}: Hessian-vector products differ");
            let (l2, g2, h2) = products(&m, 2);
            assert!((l0 - l2).abs() <= 1e-5 * l0.abs(), "{case}, losscape::conv: loss {l2} vs {l0}");
            assert!(close(&g2, &g0, 1e-4), "{case}, losscape::conv: gradients differ");
            assert!(close(&h2, &h0, 1e-4), "{case}, losscape::conv: Hessian-vector products differ");
            if model == "smooth_cnn.pt" || model == "convs_cnn.pt" {
                let params: Vec<&Tensor> = m.params.iter().map(|(_, p)| p).collect();
                let grad_at = |eps: f64| -> Tensor {
                    let shift = |sign: f64| {
                        let _g = tch::no_grad_guard();
                        for (p, v) in params.iter().zip(&v) {
                            let _ = p.shallow_clone().g_add_(&(v * (sign * eps)));
                        }
                    };
                    shift(1.0);
                    let g = tch::with_grad(|| {
                        let loss = m.forward(&x).unwrap().cross_entropy_for_logits(&y);
                        Tensor::run_backward(&[&loss], &params, false, false)
                    });
                    shift(-1.0);
                    flat(&g)
                };
                let fd = (grad_at(1e-3) - grad_at(-1e-3)) / 2e-3;
                assert!(close(&h1, &fd, 1e-3), "{case}: the product is not the gradient's derivative");
                assert!(close(&h2, &fd, 1e-3), "{case}, losscape::conv: the product is not the gradient's derivative");
            }
        }
    }
}
