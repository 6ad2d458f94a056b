//! Datasets, loaded once and kept resident on the run's device.
//!
//! Formats: CIFAR-10 binary version (`data_batch_{1..5}.bin`, `test_batch.bin`), CIFAR-10 python
//! version (the pickles torchvision downloads into `cifar-10-batches-py`), and a generic pair
//! `X.npy` + `y.npy`. Images that arrive as bytes stay uint8 on the device and are normalized
//! per batch (`x/255` then per-channel `(x - mean)/std`), so a 50k-image set costs 150 MB there.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// Channel mean and std (over 255) of the Li et al. CIFAR-10 experiments: losscape's default.
pub const CIFAR_MEAN: [f32; 3] = [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0];
pub const CIFAR_STD: [f32; 3] = [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0];

const CIFAR_RECORD: usize = 1 + 3072;
const CIFAR_PER_FILE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    CifarBinary,
    CifarPython,
    Npy,
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataFormat::CifarBinary => "cifar_binary",
            DataFormat::CifarPython => "cifar_python",
            DataFormat::Npy => "npy",
        })
    }
}

/// Memory layout of 4-D image arrays in X.npy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// NHWC when the last axis has 1, 3 or 4 entries and axis 1 does not; NCHW otherwise.
    Auto,
    Nchw,
    Nhwc,
}

/// What to load, as the command line gives it.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// A CIFAR-10 directory (either version, or a parent holding `cifar-10-batches-{bin,py}`),
    /// a directory with `X.npy` and `y.npy`, or an `X.npy` file with `y.npy` beside it.
    pub path: PathBuf,
    pub split: Split,
    /// Keep the first N samples (file order) only.
    pub limit: Option<usize>,
    /// Per-channel normalization for byte images, on the [0, 1] scale.
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub layout: Layout,
}

impl DataSpec {
    pub fn new(path: impl Into<PathBuf>, split: Split) -> DataSpec {
        DataSpec { path: path.into(), split, limit: None, mean: None, std: None, layout: Layout::Auto }
    }
}

/// Labels for classification or values for regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Targets {
    /// Integer class labels, int64 [N].
    Classes,
    /// Float targets, float32 [N, ...].
    Values,
}

/// A dataset resident on a device.
pub struct Dataset {
    /// uint8 or float32, [N, ...] (images NCHW).
    pub x: Tensor,
    /// int64 [N] (classes) or float32 [N, ...] (values).
    pub y: Tensor,
    pub n: usize,
    /// Samples the source held before `--limit`.
    pub available: usize,
    pub targets: Targets,
    pub format: DataFormat,
    pub path: PathBuf,
    pub split: Option<Split>,
    /// Mean/std applied per channel to byte input (after /255); None for float input.
    pub normalization: Option<Normalization>,
    /// Per-batch affine map for byte input: x * scale + shift.
    affine: Option<(Tensor, Tensor)>,
    /// sha256 of the samples used, computed on first use (see `sha256`).
    sha256: std::sync::OnceLock<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Normalization {
    /// Byte input is divided by this first.
    pub divide_by: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Dataset {
    /// Load `spec` onto `device`.
    pub fn load(spec: &DataSpec, device: Device) -> Result<Dataset> {
        let host = read_host(spec)?;
        Dataset::from_host(host, spec, device)
    }

    /// Keep 4-D images channels_last on the device (NHWC memory, NCHW shape); batches then come
    /// out channels_last, as cuDNN prefers. Values are unchanged.
    pub fn to_channels_last(&mut self) {
        if self.x.dim() == 4 {
            self.x = crate::model::channels_last(&self.x);
        }
    }

    /// Samples [start, start+len) ready for the model: float32, normalized, on the device.
    pub fn inputs(&self, start: usize, len: usize) -> Tensor {
        let xb = self.x.narrow(0, start as i64, len as i64);
        match &self.affine {
            Some((scale, shift)) => xb.to_kind(Kind::Float) * scale + shift,
            None => xb,
        }
    }

    pub fn targets(&self, start: usize, len: usize) -> Tensor {
        self.y.narrow(0, start as i64, len as i64)
    }

    /// sha256 of the samples used (inputs as NCHW values, then targets): identifies the data of a
    /// run whatever its file format or memory layout. Computed once, when first asked for.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for t in [&self.x, &self.y] {
                let t = t.to_device(Device::Cpu).contiguous();
                let bytes = t.numel() * t.kind().elt_size_in_bytes();
                // SAFETY: a contiguous CPU tensor's data is `bytes` long and lives as long as `t`.
                h.update(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, bytes) });
            }
            h.finalize().iter().map(|b| format!("{b:02x}")).collect()
        })
    }

    /// Shape of one sample, e.g. [3, 32, 32].
    pub fn sample_shape(&self) -> Vec<i64> {
        self.x.size()[1..].to_vec()
    }

    fn from_host(h: HostData, spec: &DataSpec, device: Device) -> Result<Dataset> {
        let available = h.n;
        let n = match spec.limit {
            Some(0) => bail!("--limit must be at least 1"),
            Some(l) if l < available => l,
            _ => available,
        };
        if n == 0 {
            bail!("data {}: holds no samples", spec.path.display());
        }
        let mut x = h.x.narrow(0, 0, n as i64);
        let y = h.y.narrow(0, 0, n as i64);
        let is_image = x.dim() == 4;
        if is_image && h.layout_nhwc {
            x = x.permute([0, 3, 1, 2]);
        }
        let bytes = x.kind() == Kind::Uint8;
        let channels = if is_image { x.size()[1] as usize } else { 0 };
        let (mean, std) = match (&spec.mean, &spec.std, h.format) {
            (Some(m), Some(s), _) => (m.clone(), s.clone()),
            (Some(m), None, _) => (m.clone(), vec![1.0; m.len()]),
            (None, Some(s), _) => (vec![0.0; s.len()], s.clone()),
            (None, None, DataFormat::CifarBinary | DataFormat::CifarPython) => {
                (CIFAR_MEAN.to_vec(), CIFAR_STD.to_vec())
            }
            (None, None, DataFormat::Npy) => (vec![], vec![]),
        };
        if mean.len() != std.len() {
            bail!("--mean has {} values but --std has {}", mean.len(), std.len());
        }
        if let Some(&s) = std.iter().find(|s| **s <= 0.0 || !s.is_finite()) {
            bail!("--std: {s} is not a positive number");
        }
        if !mean.is_empty() {
            if !bytes {
                bail!(
                    "--mean/--std apply to byte (uint8) images only; {} holds float data, used as given",
                    spec.path.display()
                );
            }
            if !is_image || (mean.len() != channels && mean.len() != 1) {
                bail!(
                    "--mean/--std have {} values but X has shape {:?} ({} channels in NCHW)",
                    mean.len(),
                    x.size(),
                    channels
                );
            }
        }
        let (normalization, affine) = if bytes {
            // x/255 then (x - mean)/std  ==  x * (1/(255 std)) + (-mean/std)
            let c = if mean.is_empty() { 1 } else { mean.len() };
            let m = if mean.is_empty() { vec![0.0; 1] } else { mean.clone() };
            let s = if std.is_empty() { vec![1.0; 1] } else { std.clone() };
            let scale: Vec<f32> = s.iter().map(|s| 1.0 / (255.0 * s)).collect();
            let shift: Vec<f32> = m.iter().zip(&s).map(|(m, s)| -m / s).collect();
            let mut shape = vec![1i64; x.dim()];
            if is_image {
                shape[1] = c as i64;
            }
            let t = |v: &[f32]| Tensor::from_slice(v).view(shape.as_slice()).to_device(device);
            (Some(Normalization { divide_by: 255.0, mean: m, std: s }), Some((t(&scale), t(&shift))))
        } else {
            (None, None)
        };
        let x = x.contiguous().to_device(device);
        let y = y.contiguous().to_device(device);
        Ok(Dataset {
            x,
            y,
            n,
            available,
            targets: h.targets,
            format: h.format,
            path: spec.path.clone(),
            split: if h.format == DataFormat::Npy { None } else { Some(spec.split) },
            normalization,
            affine,
            sha256: std::sync::OnceLock::new(),
        })
    }
}

/// A dataset read into host tensors, before limiting and moving to the device.
struct HostData {
    x: Tensor,
    y: Tensor,
    n: usize,
    targets: Targets,
    format: DataFormat,
    layout_nhwc: bool,
}

fn read_host(spec: &DataSpec) -> Result<HostData> {
    let p = &spec.path;
    if !p.exists() {
        bail!("data {}: no such file or directory", p.display());
    }
    if p.is_file() {
        if p.extension().and_then(|e| e.to_str()) == Some("npy") {
            let y = p.with_file_name("y.npy");
            return read_npy_pair(p, &y, spec.layout);
        }
        bail!("data {}: expected a directory (CIFAR-10 or X.npy + y.npy) or an X .npy file", p.display());
    }
    for dir in [p.clone(), p.join("cifar-10-batches-bin")] {
        if cifar_names(spec.split).iter().any(|f| dir.join(format!("{f}.bin")).exists()) {
            return read_cifar_binary(&dir, spec.split);
        }
    }
    for dir in [p.clone(), p.join("cifar-10-batches-py")] {
        if cifar_names(spec.split).iter().any(|f| dir.join(f).exists()) {
            return read_cifar_python(&dir, spec.split);
        }
    }
    if p.join("X.npy").exists() {
        return read_npy_pair(&p.join("X.npy"), &p.join("y.npy"), spec.layout);
    }
    bail!(
        "data {}: found neither CIFAR-10 ({}.bin or python pickles for the {} split) nor X.npy + y.npy",
        p.display(),
        cifar_names(spec.split)[0],
        match spec.split {
            Split::Train => "train",
            Split::Test => "test",
        }
    )
}

fn cifar_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}")).collect(),
        Split::Test => vec!["test_batch".into()],
    }
}

fn cifar_tensors(images: Vec<u8>, labels: Vec<i64>, format: DataFormat) -> HostData {
    let n = labels.len();
    HostData {
        x: Tensor::from_slice(&images).view([n as i64, 3, 32, 32]),
        y: Tensor::from_slice(&labels),
        n,
        targets: Targets::Classes,
        format,
        layout_nhwc: false,
    }
}

fn check_cifar_label(file: &Path, index: usize, label: i64) -> Result<()> {
    if !(0..10).contains(&label) {
        bail!("{}: record {index} has label {label}; CIFAR-10 labels are 0..9", file.display());
    }
    Ok(())
}

fn read_cifar_binary(dir: &Path, split: Split) -> Result<HostData> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in cifar_names(split) {
        let file = dir.join(format!("{name}.bin"));
        let raw = std::fs::read(&file).with_context(|| format!("CIFAR-10 file {}: cannot read", file.display()))?;
        if raw.is_empty() || raw.len() % CIFAR_RECORD != 0 {
            bail!(
                "CIFAR-10 file {}: {} bytes is not a whole number of {CIFAR_RECORD}-byte records \
                 (1 label + 3072 pixels); a complete batch file has {} bytes",
                file.display(),
                raw.len(),
                CIFAR_PER_FILE * CIFAR_RECORD
            );
        }
        for (i, rec) in raw.chunks_exact(CIFAR_RECORD).enumerate() {
            check_cifar_label(&file, i, rec[0] as i64)?;
            labels.push(rec[0] as i64);
            images.extend_from_slice(&rec[1..]);
        }
    }
    Ok(cifar_tensors(images, labels, DataFormat::CifarBinary))
}

fn read_cifar_python(dir: &Path, split: Split) -> Result<HostData> {
    use serde_pickle::{DeOptions, HashableValue as H, Value as V};
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in cifar_names(split) {
        let file = dir.join(&name);
        let f = File::open(&file).with_context(|| format!("CIFAR-10 file {}: cannot open", file.display()))?;
        let opts = DeOptions::new().replace_unresolved_globals().keep_restore_state();
        let value = serde_pickle::value_from_reader(BufReader::new(f), opts)
            .map_err(|e| anyhow!("CIFAR-10 file {}: not a readable pickle: {e}", file.display()))?;
        let V::Dict(d) = value else {
            bail!("CIFAR-10 file {}: pickle holds no dict", file.display());
        };
        let get = |key: &str| d.get(&H::Bytes(key.as_bytes().to_vec())).or_else(|| d.get(&H::String(key.to_string())));
        let Some(V::List(ls)) = get("labels") else {
            bail!("CIFAR-10 file {}: no 'labels' list", file.display());
        };
        let data = get("data").and_then(longest_bytes);
        let Some(data) = data else {
            bail!("CIFAR-10 file {}: no 'data' array", file.display());
        };
        if data.len() != ls.len() * 3072 {
            bail!(
                "CIFAR-10 file {}: 'data' has {} bytes, expected {} (= {} labels × 3072)",
                file.display(),
                data.len(),
                ls.len() * 3072,
                ls.len()
            );
        }
        for (i, l) in ls.iter().enumerate() {
            let V::I64(l) = l else {
                bail!("CIFAR-10 file {}: label {i} is not an integer", file.display());
            };
            check_cifar_label(&file, i, *l)?;
            labels.push(*l);
        }
        images.extend_from_slice(data);
    }
    Ok(cifar_tensors(images, labels, DataFormat::CifarPython))
}

/// The pixel buffer of a pickled numpy array: the longest byte string inside its reduce state.
fn longest_bytes(v: &serde_pickle::Value) -> Option<&Vec<u8>> {
    use serde_pickle::Value as V;
    match v {
        V::Bytes(b) => Some(b),
        V::Tuple(items) | V::List(items) => items.iter().filter_map(longest_bytes).max_by_key(|b| b.len()),
        _ => None,
    }
}

/// An .npy array read into a host tensor.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    use npyz::{DType, TypeChar};
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(f)).with_context(|| format!("{}: not an .npy file", path.display()))?;
    if npy.order() == npyz::Order::Fortran {
        bail!("{}: Fortran-ordered array; save it with np.ascontiguousarray", path.display());
    }
    let shape: Vec<i64> = npy.shape().iter().map(|&d| d as i64).collect();
    let DType::Plain(ts) = npy.dtype() else {
        bail!("{}: structured dtype {:?} is not supported", path.display(), npy.dtype().descr());
    };
    let ctx = || format!("{}: cannot read data", path.display());
    let t = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Uint, 1) => Tensor::from_slice(&npy.into_vec::<u8>().with_context(ctx)?),
        (TypeChar::Float, 4) => Tensor::from_slice(&npy.into_vec::<f32>().with_context(ctx)?),
        (TypeChar::Float, 8) => Tensor::from_slice(&npy.into_vec::<f64>().with_context(ctx)?).to_kind(Kind::Float),
        (TypeChar::Int, 1) => Tensor::from_slice(&npy.into_vec::<i8>().with_context(ctx)?).to_kind(Kind::Int64),
        (TypeChar::Int, 2) => Tensor::from_slice(&npy.into_vec::<i16>().with_context(ctx)?).to_kind(Kind::Int64),
        (TypeChar::Int, 4) => Tensor::from_slice(&npy.into_vec::<i32>().with_context(ctx)?).to_kind(Kind::Int64),
        (TypeChar::Int, 8) => Tensor::from_slice(&npy.into_vec::<i64>().with_context(ctx)?),
        (TypeChar::Uint, 2) => {
            Tensor::from_slice(&npy.into_vec::<u16>().with_context(ctx)?.iter().map(|&v| v as i64).collect::<Vec<_>>())
        }
        (TypeChar::Uint, 4) => {
            Tensor::from_slice(&npy.into_vec::<u32>().with_context(ctx)?.iter().map(|&v| v as i64).collect::<Vec<_>>())
        }
        (TypeChar::Uint, 8) => {
            Tensor::from_slice(&npy.into_vec::<u64>().with_context(ctx)?.iter().map(|&v| v as i64).collect::<Vec<_>>())
        }
        _ => bail!(
            "{}: dtype {} is not supported (use uint8 or float32 for X, integers or floats for y)",
            path.display(),
            ts
        ),
    };
    Ok(t.view(shape.as_slice()))
}

fn read_npy_pair(xp: &Path, yp: &Path, layout: Layout) -> Result<HostData> {
    if !yp.exists() {
        bail!("data {}: no {} beside it (labels or targets, one per sample)", xp.display(), yp.display());
    }
    let x = read_npy(xp)?;
    let mut y = read_npy(yp)?;
    if y.kind() == Kind::Uint8 {
        y = y.to_kind(Kind::Int64);
    }
    if x.dim() < 2 {
        bail!("{}: X must be [N, ...] with at least 2 axes, got shape {:?}", xp.display(), x.size());
    }
    match x.kind() {
        Kind::Uint8 | Kind::Float => {}
        k => bail!("{}: X must be uint8 or float32, got {:?}", xp.display(), k),
    }
    let n = x.size()[0];
    if y.dim() == 0 || y.size()[0] != n {
        bail!(
            "{} has {} samples (shape {:?}) but {} has shape {:?}: X and y must have the same length",
            xp.display(),
            n,
            x.size(),
            yp.display(),
            y.size()
        );
    }
    let targets = if y.kind() == Kind::Int64 {
        if y.dim() != 1 {
            bail!("{}: integer labels must be 1-D [N], got shape {:?}", yp.display(), y.size());
        }
        if n > 0 {
            let min = y.min().int64_value(&[]);
            if min < 0 {
                bail!("{}: label {min} is negative; class labels must be 0..C-1", yp.display());
            }
        }
        Targets::Classes
    } else {
        Targets::Values
    };
    let s = x.size();
    let layout_nhwc = x.dim() == 4
        && match layout {
            Layout::Nhwc => true,
            Layout::Nchw => false,
            Layout::Auto => [1, 3, 4].contains(&s[3]) && ![1, 3, 4].contains(&s[1]),
        };
    Ok(HostData { x, y, n: n as usize, targets, format: DataFormat::Npy, layout_nhwc })
}
