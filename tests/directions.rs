//! Directions: normalization against the parameters, biasbn, seeding, the file format, and
//! agreement with the definition written out in PyTorch (tests/fixtures.py directions).

use losscape::inputs::model::Model;
use losscape::options::{Ignore, Norm};
use losscape::space::directions::{self, Direction};
use tch::{Device, Kind, Tensor};

use crate::common::{fixtures_py, fxp, out_dir, same_bits};

fn model() -> Model {
    Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap()
}

fn rows_norm(t: &Tensor) -> Tensor {
    t.reshape([t.size()[0], -1]).to_kind(Kind::Double).norm_scalaropt_dim(2.0, [1], false)
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    ((a - b).abs() / b.abs().clamp_min(1e-12)).max().double_value(&[])
}

#[test]
fn filter_normalized_directions_have_the_parameters_filter_norms() {
    let m = model();
    let (dx, dy) = directions::random(&m.params, 3, Norm::Filter, Ignore::Biasbn, true);
    let mut checked = 0;
    for d in [&dx, dy.as_ref().unwrap()] {
        for ((name, t), (_, p)) in d.tensors.iter().zip(&m.params) {
            if p.dim() > 1 {
                let rel = max_rel(&rows_norm(t), &rows_norm(p));
                assert!(rel < 1e-5, "{name}: per-filter norms differ by {rel:e}");
                checked += 1;
            } else {
                assert_eq!(t.abs().max().double_value(&[]), 0.0, "{name}: biasbn direction is not exactly 0");
            }
        }
    }
    assert!(checked >= 10, "only {checked} multi-dim tensors checked");
}

#[test]
fn keep_normalizes_biases_and_bn_per_tensor() {
    let m = model();
    let (dx, _) = directions::random(&m.params, 3, Norm::Filter, Ignore::Keep, false);
    for ((name, t), (_, p)) in dx.tensors.iter().zip(&m.params) {
        if p.dim() <= 1 {
            let (a, b) = (t.norm().double_value(&[]), p.norm().double_value(&[]));
            assert!((a - b).abs() / b < 1e-5, "{name}: ‖δ‖ = {a}, ‖θ‖ = {b}");
        }
    }
}

#[test]
fn layer_and_model_norms_scale_as_defined() {
    let m = model();
    let (dl, _) = directions::random(&m.params, 5, Norm::Layer, Ignore::Biasbn, false);
    for ((name, t), (_, p)) in dl.tensors.iter().zip(&m.params) {
        if p.dim() > 1 {
            let (a, b) = (t.norm().double_value(&[]), p.norm().double_value(&[]));
            assert!((a - b).abs() / b < 1e-5, "{name}: layer norm {a} vs {b}");
        }
    }
    let (dm, _) = directions::random(&m.params, 5, Norm::Model, Ignore::Biasbn, false);
    let theta_norm: f64 = m
        .params
        .iter()
        .filter(|(_, p)| p.dim() > 1)
        .map(|(_, p)| p.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    let rel = (dm.norm() - theta_norm).abs() / theta_norm;
    assert!(rel < 1e-6, "model norm: ‖δ‖ = {} vs ‖θ‖ = {theta_norm}", dm.norm());
    let (dn, _) = directions::random(&m.params, 5, Norm::None, Ignore::Keep, false);
    let raw_mean_sq = dn.norm().powi(2) / m.num_params() as f64;
    assert!((raw_mean_sq - 1.0).abs() < 0.1, "none: entries should be N(0,1), mean square {raw_mean_sq}");
}

#[test]
fn same_seed_gives_identical_directions_and_another_seed_does_not() {
    let m = model();
    let (a, ay) = directions::random(&m.params, 11, Norm::Filter, Ignore::Biasbn, true);
    let (b, by) = directions::random(&m.params, 11, Norm::Filter, Ignore::Biasbn, true);
    let (c, _) = directions::random(&m.params, 12, Norm::Filter, Ignore::Biasbn, true);
    for i in 0..a.tensors.len() {
        assert!(same_bits(&a.tensors[i].1, &b.tensors[i].1), "{}: seed 11 differs", a.tensors[i].0);
        assert!(same_bits(&ay.as_ref().unwrap().tensors[i].1, &by.as_ref().unwrap().tensors[i].1));
    }
    assert!(!same_bits(&a.tensors[0].1, &c.tensors[0].1), "seed 12 gave seed 11's directions");
    // δ and η are different draws, nearly orthogonal.
    let cos = a.cosine(ay.as_ref().unwrap());
    assert!(cos.abs() < 0.2, "cos(δ, η) = {cos}");
}

#[test]
fn directions_match_the_pytorch_definition() {
    let m = model();
    for (norm, ignore, ns, is) in [
        (Norm::Filter, Ignore::Biasbn, "filter", "biasbn"),
        (Norm::Layer, Ignore::Keep, "layer", "keep"),
        (Norm::Model, Ignore::Biasbn, "model", "biasbn"),
    ] {
        let f = out_dir(&format!("pydirs-{ns}-{is}")).with_extension("safetensors");
        fixtures_py(&[
            "directions",
            "--model",
            fxp("resnet.pt").to_str().unwrap(),
            "--seed",
            "42",
            "--norm",
            ns,
            "--ignore",
            is,
            "--out",
            f.to_str().unwrap(),
        ]);
        let (px, py) = directions::load(&f, &m.params).unwrap();
        let (dx, dy) = directions::random(&m.params, 42, norm, ignore, true);
        for (ours, theirs) in [(&dx, &px), (dy.as_ref().unwrap(), py.as_ref().unwrap())] {
            for ((name, a), (_, b)) in ours.tensors.iter().zip(&theirs.tensors) {
                let diff = (a - b).abs().max().double_value(&[]);
                let scale = b.abs().max().double_value(&[]).max(1e-30);
                assert!(diff / scale < 1e-5, "{ns}/{is} {name}: max |ours - pytorch| = {diff:e} (scale {scale:e})");
            }
        }
    }
}

#[test]
fn saved_directions_load_back_and_mismatches_are_named() {
    let m = model();
    let (dx, dy) = directions::random(&m.params, 1, Norm::Filter, Ignore::Biasbn, true);
    let f = out_dir("roundtrip").with_extension("safetensors");
    directions::save(&f, &dx, dy.as_ref()).unwrap();
    let (lx, ly) = directions::load(&f, &m.params).unwrap();
    for (a, b) in [(&dx, &lx), (dy.as_ref().unwrap(), ly.as_ref().unwrap())] {
        for ((na, ta), (nb, tb)) in a.tensors.iter().zip(&b.tensors) {
            assert_eq!(na, nb);
            assert!(same_bits(ta, tb), "{na} changed in the round trip");
        }
    }
    // Against another model: the first parameter the file lacks is named.
    let mlp = Model::load(&fxp("mlp.pt"), Device::Cpu).unwrap();
    let e = directions::load(&f, &mlp.params).unwrap_err().to_string();
    assert!(e.contains("net.0.weight") && e.contains(f.to_str().unwrap()), "{e}");
    // A shape conflict under the right name is named with both shapes.
    let mut bad: Vec<(String, Tensor)> = dx.tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    bad[0].1 = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
    let g = out_dir("shape-mismatch").with_extension("safetensors");
    directions::save(&g, &Direction { tensors: bad }, None).unwrap();
    let e = directions::load(&g, &m.params).unwrap_err().to_string();
    assert!(e.contains(&format!("x.{}", m.params[0].0)) && e.contains("[1, 2]"), "{e}");
}
