//! Shared helpers: the fixture directory, the Python that makes fixtures and reference values,
//! the binary, .npy reading.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tch::Tensor;

/// The project's Python (the venv the Makefile makes), or $LOSSCAPE_PYTHON.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("LOSSCAPE_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(venv.exists(), "{} missing: run `make test` (it creates the venv)", venv.display());
    venv
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run `python tests/fixtures.py ARGS`, panicking with its stderr on failure.
pub fn fixtures_py(args: &[&str]) {
    let out = Command::new(python()).arg(root().join("tests/fixtures.py")).args(args).output().expect("run python");
    assert!(out.status.success(), "fixtures.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The fixture directory, made fresh once per test process.
pub fn fx() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        let _ = std::fs::remove_dir_all(&dir);
        fixtures_py(&["make", dir.to_str().unwrap()]);
        dir
    })
}

pub fn fxp(rel: &str) -> PathBuf {
    fx().join(rel)
}

/// A fresh, not yet existing path for a run directory.
pub fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runs").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    d
}

pub fn losscape(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_losscape")).args(args).output().expect("run losscape")
}

/// `losscape trajectory` over the fixture checkpoints `ckpts` (architecture resnet.pt, data
/// cifar-bin), a grid of `n` × `n`, quiet, then the `extra` arguments.
pub fn trajectory(ckpts: &str, n: usize, out: &Path, extra: &[&str]) -> Output {
    let (c, a, d, n) = (fxp(ckpts), fxp("resnet.pt"), fxp("cifar-bin"), n.to_string());
    let mut args = vec!["trajectory", "--checkpoints", c.to_str().unwrap(), "--arch", a.to_str().unwrap()];
    args.extend(["--data", d.to_str().unwrap(), "--n", &n, "--out", out.to_str().unwrap(), "-q"]);
    args.extend_from_slice(extra);
    losscape(&args)
}

/// Assert that a command succeeded (showing its stderr if not); its stderr.
pub fn ok(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{e}");
    e
}

/// (shape, values as f64) of an .npy file.
pub fn npy(path: &Path) -> (Vec<i64>, Vec<f64>) {
    let a = losscape::store::npy::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (a.shape.iter().map(|&d| d as i64).collect(), a.values)
}

/// meta.json of a run directory, as JSON.
pub fn meta_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("meta.json")).unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
    .unwrap()
}

/// Check a run's meta.json against docs/meta.schema.json (and that it reads back as the type).
pub fn assert_valid_meta(dir: &Path) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = SCHEMA.get_or_init(|| {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join("docs/meta.schema.json")).unwrap()).unwrap();
        jsonschema::validator_for(&s).expect("a valid schema")
    });
    let m = meta_json(dir);
    let errors: Vec<String> = v.iter_errors(&m).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{}/meta.json does not validate: {errors:?}", dir.display());
    losscape::store::record::AnyMeta::read(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
}

/// PyTorch's loss/accuracy at each (a, b) of `points`, from tests/fixtures.py reference.
pub fn reference(
    model: &Path,
    data: &Path,
    dirs: &Path,
    points: &[(f64, f64)],
    loss: &str,
    extra: &[&str],
) -> Vec<(f64, f64)> {
    let out = std::env::temp_dir().join(format!(
        "losscape-ref-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    let pts = serde_json::to_string(&points.iter().map(|(a, b)| [*a, *b]).collect::<Vec<_>>()).unwrap();
    let mut args = vec![
        "reference",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--directions",
        dirs.to_str().unwrap(),
        "--points",
        &pts,
        "--loss",
        loss,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    fixtures_py(&args);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["loss"].as_f64().unwrap_or(f64::NAN), r["acc"].as_f64().unwrap_or(f64::NAN)))
        .collect()
}

pub fn assert_rel(a: f64, b: f64, tol: f64, what: &str) {
    let rel = (a - b).abs() / b.abs().max(1e-12);
    assert!(rel <= tol, "{what}: {a} vs {b} (relative difference {rel:e} > {tol:e})");
}

/// Bitwise equality of two tensors.
pub fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.kind() == b.kind() && a.eq_tensor(b).all().int64_value(&[]) == 1
}
