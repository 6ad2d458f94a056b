//! models/convert_official.py: direction files of the official loss-landscape code (HDF5 lists in
//! `net.parameters()` order, written by tests/official_fixture.py as the official write_list does)
//! turned into directions.safetensors by name, and a surface recomputed with them against PyTorch.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tch::Tensor;

use crate::common::{assert_rel, losscape, npy, ok, out_dir, python, root, same_bits};

/// The fixture directory of tests/official_fixture.py, made once per test process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("official");
        let _ = std::fs::remove_dir_all(&dir);
        let o = Command::new(python()).arg(root().join("tests/official_fixture.py")).arg(&dir).output().unwrap();
        assert!(o.status.success(), "official_fixture.py failed:\n{}", String::from_utf8_lossy(&o.stderr));
        dir
    })
}

fn convert(args: &[&str]) -> Output {
    Command::new(python()).arg(root().join("models/convert_official.py")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tensors of a safetensors file, sorted by name.
fn tensors(p: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    let names = |t: &[(String, Tensor)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ta), names(&tb), "{} and {} name different tensors", a.display(), b.display());
    for ((n, x), (_, y)) in ta.iter().zip(&tb) {
        assert!(same_bits(x, y), "{n} differs between {} and {}", a.display(), b.display());
    }
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap()
}

#[test]
fn converted_official_directions_recompute_the_pytorch_surface() {
    let fx = fixture();
    let out = out_dir("official-convert");
    std::fs::create_dir_all(&out).unwrap();
    let conv = out.join("directions.safetensors");
    let (h5, model) = (fx.join("dirs.h5"), fx.join("model.pt"));
    let o = convert(&[s(&h5), "--model", s(&model), "--out", s(&conv)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // One x and one y tensor per parameter, float32, equal to the h5 entries paired by position
    // with the eager module's named_parameters() (the fixture's own pairing).
    let r = reference();
    let n = r["parameters"].as_u64().unwrap() as usize;
    let t = tensors(&conv);
    assert_eq!(t.iter().filter(|(k, _)| k.starts_with("x.")).count(), n);
    assert_eq!(t.iter().filter(|(k, _)| k.starts_with("y.")).count(), n);
    assert_eq!(t.len(), 2 * n);
    assert!(t.iter().all(|(_, v)| v.kind() == tch::Kind::Float));
    assert_same_tensors(&conv, &fx.join("expected.safetensors"));
    // --arch gives the same file as the TorchScript model (same names, same order).
    let by_arch = out.join("by_arch.safetensors");
    ok(&convert(&[s(&h5), "--arch", "resnet8", "--out", s(&by_arch)]));
    assert_same_tensors(&conv, &by_arch);
    // A 1-D file (xdirection only) gives x.* only.
    let one = out.join("one_d.safetensors");
    ok(&convert(&[s(&fx.join("dirs_1d.h5")), "--model", s(&model), "--out", s(&one)]));
    let t1 = tensors(&one);
    assert!(t1.len() == n && t1.iter().all(|(k, _)| k.starts_with("x.")));

    // The surface through θ + αx + βy with those directions, as given.
    let run = out_dir("official-surface");
    let data = fx.join("data");
    let o = losscape(&[
        "surface",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--directions",
        s(&conv),
        "--x=-0.5:0.5:3",
        "--y=-0.25:0.25:3",
        "--device",
        "cpu",
        "--out",
        s(&run),
        "-q",
    ]);
    ok(&o);
    // Used as given: the run's own directions file holds the same numbers (no renormalization).
    assert_same_tensors(&run.join("directions.safetensors"), &conv);
    let (shape, loss) = npy(&run.join("loss.npy"));
    assert_eq!(shape, vec![3, 3]);
    // Rows are y (-0.25, 0, 0.25), columns x (-0.5, 0, 0.5).
    let p = &r["points"][0];
    assert_eq!((p["x"].as_f64(), p["y"].as_f64()), (Some(0.5), Some(-0.25)));
    assert_rel(loss[2], p["loss"].as_f64().unwrap(), 1e-4, "loss at x = 0.5, y = -0.25");
    assert_rel(loss[4], r["center"].as_f64().unwrap(), 1e-4, "loss at the centre");
    assert!((loss[2] - loss[4]).abs() > 1e-4 * loss[4], "the directions move the loss: {loss:?}");
}

/// The converter failed with one line on stderr naming all of `words`, and left no file.
fn assert_refused(o: &Output, out: &Path, words: &[&str]) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "exit 0; stderr: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    for w in words {
        assert!(e.contains(w), "{w:?} not in: {e}");
    }
    assert!(!out.exists(), "{} was written", out.display());
    let dir = out.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left in {}: {left:?}", dir.display());
}

#[test]
fn states_files_and_mismatched_shapes_are_refused_in_one_line() {
    let fx = fixture();
    let r = reference();
    let (np, ns) = (r["parameters"].to_string(), r["state_dict"].to_string());
    assert_ne!(np, ns);
    let out = out_dir("official-refused");
    std::fs::create_dir_all(&out).unwrap();
    let f = out.join("directions.safetensors");
    let states = fx.join("dirs_states.h5");
    let o = convert(&[s(&states), "--model", s(&fx.join("model.pt")), "--out", s(&f)]);
    assert_refused(&o, &f, &["dirs_states.h5", &format!("{ns} entries"), &format!("{np} parameters"), "states"]);
    // Same number of entries, one shape off: the classifier of a 100-class resnet8.
    let o = convert(&[s(&fx.join("dirs.h5")), "--arch", "resnet8", "--num-classes", "100", "--out", s(&f)]);
    assert_refused(&o, &f, &["dirs.h5", "entry 27", "linear.weight", "[10, 64]", "[100, 64]"]);
    // Not an HDF5 file.
    let o = convert(&[s(&fx.join("model.pt")), "--arch", "resnet8", "--out", s(&f)]);
    assert_refused(&o, &f, &["model.pt", "HDF5"]);
}
