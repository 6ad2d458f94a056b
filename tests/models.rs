//! models/: the reference architectures export to TorchScript that losscape runs, and
//! models/export.py loads state_dict checkpoints in the forms people save.

use std::process::Command;

use losscape::inputs::model::Model;
use tch::Device;

use crate::common::{fixtures_py, fxp, losscape, ok, out_dir, python, root, same_bits};

#[test]
fn every_reference_architecture_runs_in_losscape() {
    let dir = out_dir("archs");
    fixtures_py(&["archs", dir.to_str().unwrap()]);
    for name in ["resnet8", "resnet20", "resnet56", "resnet110", "vgg9", "resnet50", "vgg11"] {
        let out = out_dir(&format!("arch-run-{name}"));
        let m = dir.join(format!("{name}.pt"));
        let o = losscape(&[
            "surface",
            "--model",
            m.to_str().unwrap(),
            "--data",
            fxp("cifar-bin").to_str().unwrap(),
            "--limit",
            "4",
            "--x=-0.1:0.1:2",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert!(meta["loss_max"].as_f64().unwrap().is_finite(), "{name}: {meta}");
        if name == "resnet56" {
            // The ResNet-56 of Li et al.: 0.86M parameters.
            assert_eq!(meta["model"]["parameters"], 855_770, "{name}");
        }
    }
    let mlp = Model::load(&dir.join("mlp.pt"), Device::Cpu).unwrap();
    assert_eq!(mlp.params.len(), 6);
}

#[test]
fn export_loads_nested_prefixed_and_safetensors_checkpoints() {
    let reference = Model::load(&fxp("ckpt/resnet8.pt"), Device::Cpu).unwrap();
    for ckpt in ["nested.pt", "plain.safetensors"] {
        let out = out_dir(&format!("export-{ckpt}")).with_extension("pt");
        let o = Command::new(python())
            .arg(root().join("models/export.py"))
            .args(["--arch", "resnet8", "--weights"])
            .arg(fxp(&format!("ckpt/{ckpt}")))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{ckpt}: {}", String::from_utf8_lossy(&o.stderr));
        let m = Model::load(&out, Device::Cpu).unwrap();
        assert_eq!(m.params.len(), reference.params.len());
        for ((n, a), (_, b)) in m.params.iter().zip(&reference.params) {
            assert!(same_bits(a, b), "{ckpt}: {n} differs from the checkpoint's model");
        }
    }
}

#[test]
fn train_saves_a_checkpoint_per_epoch_and_a_torchscript_model() {
    let out = out_dir("train");
    let o = Command::new(python())
        .arg(root().join("models/train.py"))
        .args(["--arch", "resnet8", "--epochs", "2", "--batch-size", "16", "--data"])
        .arg(fxp("cifar-bin"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(&o);
    for e in 0..=2 {
        for ext in ["pt", "safetensors"] {
            let f = out.join(format!("checkpoints/epoch_{e}.{ext}"));
            assert!(f.exists(), "{} missing", f.display());
        }
    }
    let m = Model::load(&out.join("model.pt"), Device::Cpu).unwrap();
    let last = tch::Tensor::read_safetensors(out.join("checkpoints/epoch_2.safetensors")).unwrap();
    let last: std::collections::HashMap<_, _> = last.into_iter().collect();
    for (n, p) in &m.params {
        assert!(same_bits(p, &last[n]), "{n}: model.pt differs from the last checkpoint");
    }
}

#[test]
fn casting_the_model_moves_its_parameter_handles_along() {
    let mut m = Model::load(&fxp("resnet.pt"), Device::Cpu).unwrap();
    let before = m.snapshot();
    m.cast(tch::Kind::BFloat16).unwrap();
    assert!(m.params.iter().all(|(_, p)| p.kind() == tch::Kind::BFloat16));
    m.cast(tch::Kind::Float).unwrap();
    // fp32 -> bf16 -> fp32 loses bits; loading the fp32 snapshot back restores them exactly.
    m.load_values(&before);
    for ((n, p), b) in m.params.iter().zip(&before) {
        assert!(same_bits(p, b), "{n}");
    }
}
