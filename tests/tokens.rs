//! Beyond images and class labels: token models (int ids, [N, T, V] logits, -100 ignored), class
//! labels with -100, tuple/list/dict outputs, several splits in one run, and how far a
//! trajectory's checkpoints are from its PCA plane. References come from PyTorch
//! (`cross_entropy(ignore_index=-100)` in tests/fixtures.py reference).

use std::path::Path;

use crate::common::{assert_rel, assert_valid_meta, fxp, losscape, meta_json, npy, ok, out_dir, reference, trajectory};

/// `losscape surface` on a 1-D grid -1..1 (5 points), quiet, then `extra`.
fn surface(model: &str, data: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let (m, d) = (fxp(model), fxp(data));
    let mut args = vec!["surface", "--model", m.to_str().unwrap(), "--data", d.to_str().unwrap()];
    args.extend(["--x=-1:1:5", "--seed", "3", "--out", out.to_str().unwrap(), "-q"]);
    args.extend_from_slice(extra);
    losscape(&args)
}

fn points(dir: &Path) -> Vec<(f64, f64)> {
    npy(&dir.join("x.npy")).1.into_iter().map(|x| (x, 0.0)).collect()
}

/// The run's loss and accuracy arrays (`loss.npy` or `loss.<split>.npy`) against PyTorch's.
fn check_against_pytorch(dir: &Path, model: &str, data: &str, split: Option<&str>, extra: &[&str]) {
    let (lf, af) = match split {
        Some(s) => (format!("loss.{s}.npy"), format!("acc.{s}.npy")),
        None => ("loss.npy".into(), "acc.npy".into()),
    };
    let (loss, acc) = (npy(&dir.join(lf)).1, npy(&dir.join(af)).1);
    let mut args: Vec<&str> = extra.to_vec();
    if let Some(s) = split {
        args.extend(["--split", s]);
    }
    let r = reference(&fxp(model), &fxp(data), &dir.join("directions.safetensors"), &points(dir), "ce", &args);
    for (k, ((l, a), (rl, ra))) in loss.iter().zip(&acc).zip(&r).enumerate() {
        assert_rel(*l, *rl, 1e-5, &format!("{model} on {data} {split:?}: loss at point {k}"));
        assert!((a - ra).abs() < 1e-6, "{model} {split:?}: accuracy at point {k}: {a} vs {ra}");
    }
}

#[test]
fn a_causal_language_model_gets_token_level_cross_entropy_with_ignored_tokens() {
    let out = out_dir("tokens-lm");
    ok(&surface("lm.pt", "tokens", &out, &[]));
    check_against_pytorch(&out, "lm.pt", "tokens", None, &[]);
    assert_valid_meta(&out);
    let m = meta_json(&out);
    assert_eq!(m["data"]["tokens"], true);
    assert_eq!(m["data"]["sample_shape"], serde_json::json!([16]));
    // Counted: the labels that are not -100, fewer than the 48 x 16 positions.
    let y = npy(&fxp("tokens/y.npy")).1;
    let counted = y.iter().filter(|&&v| v != -100.0).count();
    assert_eq!(m["data"]["counted_targets"], counted);
    assert!(counted < 48 * 16);
    let (loss, _) = (npy(&out.join("loss.npy")).1, ());
    assert!(loss[0] > 1.5 * loss[2] && loss[4] > 1.5 * loss[2], "a trained LM sits in a valley: {loss:?}");
}

#[test]
fn labels_of_minus_100_are_left_out_of_class_losses_and_a_vit_runs_on_images() {
    let out = out_dir("tokens-cls");
    ok(&surface("mlp8.pt", "cls-ignore", &out, &[]));
    check_against_pytorch(&out, "mlp8.pt", "cls-ignore", None, &[]);
    let out = out_dir("tokens-vit");
    ok(&surface("vit.pt", "cifar-bin", &out, &["--limit", "40"]));
    check_against_pytorch(&out, "vit.pt", "cifar-bin", None, &["--limit", "40"]);
}

#[test]
fn tuple_list_and_dict_outputs_give_the_plain_models_values() {
    let plain = out_dir("tokens-plain");
    ok(&surface("lm.pt", "tokens", &plain, &[]));
    let want = npy(&plain.join("loss.npy")).1;
    for (model, extra) in [
        ("lm_tuple.pt", vec![]),
        ("lm_list.pt", vec![]),
        ("lm_dict.pt", vec![]),
        ("lm_dict_out.pt", vec!["--output", "scores"]),
    ] {
        let out = out_dir(&format!("tokens-{model}"));
        ok(&surface(model, "tokens", &out, &extra));
        assert_eq!(npy(&out.join("loss.npy")).1, want, "{model}");
        if model == "lm_dict_out.pt" {
            assert_eq!(meta_json(&out)["model"]["output"], "scores");
        }
    }
}

#[test]
fn outputs_without_a_tensor_to_use_are_one_line_errors() {
    for (model, data, extra, words) in [
        ("lm_dict_out.pt", "tokens", vec![], vec!["--output logits", "[scores, hidden]"]),
        ("lm_dict.pt", "tokens", vec!["--output", "nope"], vec!["--output nope", "none named 'nope'"]),
        ("lm.pt", "tokens", vec!["--output", "logits"], vec!["returns a tensor, not a dict"]),
        ("returns_int.pt", "cls-ignore", vec![], vec!["returns_int.pt", "forward returns an int"]),
        ("returns_str.pt", "cls-ignore", vec![], vec!["returns_str.pt", "a string"]),
    ] {
        let out = out_dir("tokens-bad");
        let o = surface(model, data, &out, &extra);
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{model}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{model}: one line: {e}");
        for w in words {
            assert!(e.contains(w), "{model}: {w:?} in {e}");
        }
        assert!(!out.join("meta.json").exists() && !out.join("loss.npy").exists(), "{model}: nothing written");
    }
}

#[test]
fn several_splits_come_from_one_perturbation_and_equal_single_split_runs_bit_for_bit() {
    let both = out_dir("tokens-splits");
    ok(&surface("lm.pt", "tokens", &both, &["--split", "train,test"]));
    assert_valid_meta(&both);
    for split in ["train", "test"] {
        let one = out_dir(&format!("tokens-split-{split}"));
        ok(&surface("lm.pt", "tokens", &one, &["--split", split]));
        for q in ["loss", "acc"] {
            let a = npy(&both.join(format!("{q}.{split}.npy"))).1;
            let b = npy(&one.join(format!("{q}.npy"))).1;
            let bits = |v: &[f64]| v.iter().map(|x| (*x as f32).to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{q} on {split}");
        }
    }
    assert_eq!(npy(&both.join("loss.npy")).1, npy(&both.join("loss.train.npy")).1, "loss.npy is the first split's");
    check_against_pytorch(&both, "lm.pt", "tokens", Some("test"), &[]);
    let m = meta_json(&both);
    let splits = m["splits"].as_array().unwrap();
    assert_eq!(splits.len(), 2);
    assert_eq!((splits[1]["split"].as_str(), splits[1]["data"]["n"].as_u64()), (Some("test"), Some(24)));
    assert!(splits[1]["loss_min"].as_f64().is_some());
    // The 1-D picture overlays both splits.
    assert!(both.join("curve.png").exists());
    // A directory without a test split, and a split named twice.
    let out = out_dir("tokens-nosplit");
    let e = String::from_utf8_lossy(&surface("resnet.pt", "npy_nhwc", &out, &["--split", "test"]).stderr).to_string();
    assert!(e.contains("X_test.npy"), "{e}");
    let e = String::from_utf8_lossy(&surface("lm.pt", "tokens", &out, &["--split", "test,test"]).stderr).to_string();
    assert!(e.contains("--split test,test") && e.contains("twice"), "{e}");
}

#[test]
fn a_trajectory_says_how_far_its_checkpoints_are_from_the_pca_plane() {
    // Checkpoints on a plane through the origin: nothing off it.
    let flat = out_dir("tokens-residual-flat");
    ok(&trajectory("traj_plane", 5, &flat, &["--no-plots"]));
    let r = npy(&flat.join("path_residual.npy")).1;
    assert!(r.iter().all(|&v| v < 1e-3), "{r:?}");
    // Random checkpoints: well off any plane.
    let out = out_dir("tokens-residual");
    ok(&trajectory("traj_rand", 5, &out, &["--split", "train,test"]));
    let (shape, r) = npy(&out.join("path_residual.npy"));
    let (_, path) = npy(&out.join("path.npy"));
    assert_eq!(shape, vec![(path.len() / 2) as i64]);
    assert!(r.iter().all(|v| (0.0..=1.0).contains(v)), "{r:?}");
    let m = meta_json(&out);
    let max = m["trajectory"]["path_residual_max"].as_f64().unwrap();
    assert_eq!(max, r.iter().cloned().fold(0.0, f64::max));
    assert!(max > 0.1, "random checkpoints are off the plane: {r:?}");
    // Each checkpoint on each split too.
    for s in ["train", "test"] {
        assert_eq!(npy(&out.join(format!("path_loss.{s}.npy"))).0, shape);
    }
    // The picture says that the path is a projection, under the plot; the flat one does not.
    let label = |d: &Path| losscape::plot::RunData::load(d).unwrap().x_label;
    assert!(label(&out).contains("leaves the plane"), "{}", label(&out));
    assert!(!label(&flat).contains("leaves the plane"), "{}", label(&flat));
    let off = m["trajectory"]["path_off_plane"].as_f64().unwrap();
    assert!(off > 0.25 && off <= max + 1e-12, "{off} (largest residual {max})");
    let bits = |f: &str| npy(&out.join(f)).1.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits("path_loss.train.npy"), bits("path_loss.npy"));
}
