//! Datasets, loaded once and kept resident on the run's device.
//!
//! Formats: CIFAR-10 binary version (`data_batch_{1..5}.bin`, `test_batch.bin`), CIFAR-10 python
//! version (the pickles torchvision downloads into `cifar-10-batches-py`), and a generic pair
//! `X.npy` + `y.npy` (the training split; `X_test.npy` + `y_test.npy` the test split). Images that
//! arrive as bytes stay uint8 on the device and are normalized per batch (`x/255` then
//! per-channel `(x - mean)/std`), so a 50k-image set costs 150 MB there. Integer X of any other
//! dtype is token ids, passed to the model as int64. Integer labels may be -100, the ignore
//! index: such targets are left out of the loss and the accuracy.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, Role, Setting};
pub use crate::options::{DataFormat, Layout, Normalization, Split, Targets};

/// Channel mean and std (over 255) of the Li et al. CIFAR-10 experiments: losscape's default.
pub const CIFAR_MEAN: [f32; 3] = [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0];
pub const CIFAR_STD: [f32; 3] = [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0];

const CIFAR_RECORD: usize = 1 + 3072;
/// The label of a target that the loss and accuracy leave out (PyTorch's and Hugging Face's).
pub const IGNORE_INDEX: i64 = -100;
const CIFAR_PER_FILE: usize = 10_000;

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

    /// The settings' own consistency, before any file is read: a limit of at least 1; mean and std
    /// both or neither, as many values each, std positive.
    pub fn check(&self) -> Result<()> {
        if self.limit == Some(0) {
            return Err(Error::setting(Setting::Limit, 0, "must be at least 1"));
        }
        let list = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        match (&self.mean, &self.std) {
            // One without the other would silently normalize with std 1 or mean 0.
            (Some(m), None) => {
                Err(Error::setting(Setting::Mean, list(m), "is given without std: give both or neither"))
            }
            (None, Some(s)) => {
                Err(Error::setting(Setting::Std, list(s), "is given without mean: give both or neither"))
            }
            (Some(m), Some(s)) if m.len() != s.len() => {
                Err(Error::setting(Setting::Mean, list(m), format!("has {} values but std has {}", m.len(), s.len())))
            }
            (Some(_), Some(s)) => match s.iter().find(|s| **s <= 0.0 || !s.is_finite()) {
                Some(&bad) => Err(Error::setting(Setting::Std, list(s), format!("{bad} is not a positive number"))),
                None => Ok(()),
            },
            (None, None) => Ok(()),
        }
    }
}

/// A dataset resident on a device.
pub struct Dataset {
    /// uint8 or float32, [N, ...] (images NCHW).
    pub x: Tensor,
    /// `--rel-error`: the order a pass visits the samples in (int64 indices on the device).
    pub order: Option<Tensor>,
    /// int64 [N] or [N, T, ...] (classes, -100 = ignored) or float32 [N, ...] (values).
    pub y: Tensor,
    pub n: usize,
    /// Targets the loss averages over: labels other than -100 for classes, N for values.
    pub counted: usize,
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
    /// Byte images from .npy that are divided by 255 but not normalized per channel.
    pub unnormalized: bool,
    /// sha256 of the samples used, computed on first use (see `sha256`).
    sha256: std::sync::OnceLock<String>,
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
            self.x = crate::inputs::model::channels_last(&self.x);
        }
    }

    /// Samples [start, start+len) ready for the model: float32, normalized, on the device (token
    /// ids stay int64).
    pub fn inputs(&self, start: usize, len: usize) -> Tensor {
        let xb = self.x.narrow(0, start as i64, len as i64);
        match &self.affine {
            Some((scale, shift)) => xb.to_kind(Kind::Float) * scale + shift,
            None => xb,
        }
    }

    /// `inputs` in the forward pass's dtype `kind`: floating-point inputs are cast, token ids not.
    pub fn inputs_as(&self, start: usize, len: usize, kind: Kind) -> Tensor {
        let xb = self.inputs(start, len);
        if self.tokens() {
            xb
        } else {
            xb.to_kind(kind)
        }
    }

    /// Visit the samples in `order` (a permutation of 0..n; `--rel-error`).
    pub fn set_order(&mut self, order: &[i64]) {
        self.order = Some(Tensor::from_slice(order).to_device(self.x.device()));
    }

    /// The samples `idx` (int64 indices on the data's device) ready for the model, as `inputs_as`.
    pub fn inputs_at(&self, idx: &Tensor, kind: Kind) -> Tensor {
        self.ready(self.x.index_select(0, idx), kind)
    }

    /// `inputs_at` for images [N, C, H, W], each sample flipped left-right where `flip` (bool [B])
    /// holds, and/or cropped back to H×W at its offset (dy, dx) ∈ [0, 2·pad]² from the image
    /// padded by `pad` pixels of zeros in the stored values — black for byte images, before their
    /// normalization (torchvision's RandomCrop with padding), 0 for float data.
    pub fn inputs_augmented(
        &self,
        idx: &Tensor,
        kind: Kind,
        flip: Option<&Tensor>,
        crop: Option<(&[(i64, i64)], i64)>,
    ) -> Tensor {
        let mut xb = self.x.index_select(0, idx);
        if let Some(f) = flip {
            xb = xb.flip([3]).where_self(&f.view([-1, 1, 1, 1]), &xb);
        }
        if let Some((offsets, pad)) = crop {
            let (h, w) = (xb.size()[2], xb.size()[3]);
            let padded = xb.constant_pad_nd([pad, pad, pad, pad]);
            let parts: Vec<Tensor> = offsets
                .iter()
                .enumerate()
                .map(|(i, &(dy, dx))| padded.get(i as i64).narrow(1, dy, h).narrow(2, dx, w))
                .collect();
            xb = Tensor::stack(&parts, 0);
        }
        self.ready(xb, kind)
    }

    /// Stored samples made ready for the model, as `inputs_as` does.
    fn ready(&self, xb: Tensor, kind: Kind) -> Tensor {
        let xb = match &self.affine {
            Some((scale, shift)) => xb.to_kind(Kind::Float) * scale + shift,
            None => xb,
        };
        if self.tokens() {
            xb
        } else {
            xb.to_kind(kind)
        }
    }

    /// The targets of the samples `idx`.
    pub fn targets_at(&self, idx: &Tensor) -> Tensor {
        self.y.index_select(0, idx)
    }

    /// X holds token ids (integers other than bytes).
    pub fn tokens(&self) -> bool {
        self.x.kind() == Kind::Int64
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
        spec.check()?;
        let available = h.n;
        let n = spec.limit.map_or(available, |l| l.min(available));
        if n == 0 {
            return Err(Error::file(Role::Data, &spec.path, "holds no samples"));
        }
        let mut x = h.x.narrow(0, 0, n as i64);
        let y = h.y.narrow(0, 0, n as i64);
        let is_image = x.dim() == 4;
        if is_image && h.layout_nhwc {
            x = x.permute([0, 3, 1, 2]);
        }
        let bytes = x.kind() == Kind::Uint8;
        let (mean, std) = match (&spec.mean, &spec.std, h.format) {
            (Some(m), Some(s), _) => (m.clone(), s.clone()),
            (None, None, DataFormat::CifarBinary | DataFormat::CifarPython) => {
                (CIFAR_MEAN.to_vec(), CIFAR_STD.to_vec())
            }
            _ => (vec![], vec![]),
        };
        normalization_fits(spec, &mean, &x, bytes)?;
        let (normalization, affine) = if bytes { byte_affine(&mean, &std, &x, device) } else { (None, None) };
        let counted = match h.targets {
            Targets::Classes => y.ne(IGNORE_INDEX).sum(Kind::Int64).int64_value(&[]) as usize,
            Targets::Values => n,
        };
        if counted == 0 {
            return Err(Error::file(
                Role::Data,
                &spec.path,
                format!(
                    "every label of the {n} samples used is {IGNORE_INDEX} (ignored): nothing to average the loss over"
                ),
            ));
        }
        let x = x.contiguous().to_device(device);
        let y = y.contiguous().to_device(device);
        // NaN or inf in the data would make every loss NaN: refuse, naming the first bad sample.
        for (t, what) in [(&x, "X"), (&y, "targets")] {
            if let Some(i) = first_nonfinite(t) {
                return Err(Error::file(
                    Role::Data,
                    &spec.path,
                    format!("{what} of sample {i} (0-based, in file order) holds NaN or inf"),
                ));
            }
        }
        Ok(Dataset {
            x,
            order: None,
            y,
            n,
            counted,
            available,
            targets: h.targets,
            format: h.format,
            path: spec.path.clone(),
            split: Some(spec.split),
            normalization,
            affine,
            unnormalized: bytes && mean.is_empty() && is_image && h.format == DataFormat::Npy,
            sha256: std::sync::OnceLock::new(),
        })
    }
}

/// Normalization applies to byte images with one value or one per channel.
fn normalization_fits(spec: &DataSpec, mean: &[f32], x: &Tensor, bytes: bool) -> Result<()> {
    if mean.is_empty() {
        return Ok(());
    }
    let list = mean.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    if !bytes {
        return Err(Error::setting(
            Setting::Mean,
            list,
            format!("applies to byte (uint8) images only; {} holds float data, used as given", spec.path.display()),
        ));
    }
    let channels = if x.dim() == 4 { x.size()[1] as usize } else { 0 };
    if x.dim() != 4 || (mean.len() != channels && mean.len() != 1) {
        return Err(Error::setting(
            Setting::Mean,
            list,
            format!("has {} values but X has shape {:?} ({channels} channels in NCHW)", mean.len(), x.size()),
        ));
    }
    Ok(())
}

/// Byte images to floats in one affine map per channel: x/255 then (x − mean)/std ==
/// x · (1/(255 std)) + (−mean/std); without mean and std, x/255.
fn byte_affine(
    mean: &[f32],
    std: &[f32],
    x: &Tensor,
    device: Device,
) -> (Option<Normalization>, Option<(Tensor, Tensor)>) {
    let c = if mean.is_empty() { 1 } else { mean.len() };
    let m = if mean.is_empty() { vec![0.0; 1] } else { mean.to_vec() };
    let s = if std.is_empty() { vec![1.0; 1] } else { std.to_vec() };
    let scale: Vec<f32> = s.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let shift: Vec<f32> = m.iter().zip(&s).map(|(m, s)| -m / s).collect();
    let mut shape = vec![1i64; x.dim()];
    if x.dim() == 4 {
        shape[1] = c as i64;
    }
    let t = |v: &[f32]| Tensor::from_slice(v).view(shape.as_slice()).to_device(device);
    (Some(Normalization { divide_by: 255.0, mean: m, std: s }), Some((t(&scale), t(&shift))))
}

/// The index of the first sample of `t` ([N, ...]) with a value that is not finite, if any
/// (floating-point tensors only). One pass on the device, one host sync.
pub fn first_nonfinite(t: &Tensor) -> Option<i64> {
    if !t.is_floating_point() || t.numel() == 0 {
        return None;
    }
    let bad = t.isfinite().logical_not().reshape([t.size()[0], -1]).any_dim(1, false);
    if bad.any().int64_value(&[]) == 0 {
        return None;
    }
    Some(bad.to_kind(Kind::Int64).argmax(0, false).int64_value(&[]))
}

/// Byte images from .npy are divided by 255 and not normalized per channel unless a mean and std
/// are given, which is rarely what the model was trained on: said once per process, by whoever
/// has checked the data against the model (so that a run refused for another reason says only that).
pub fn warn_unnormalized(path: &Path) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        log::warn!(
            target: "losscape::advice::mean,std",
            "{}: uint8 images are divided by 255 but not normalized per channel; give the per-channel mean \
             and std the model was trained with, or save X.npy as normalized float32",
            path.display()
        )
    });
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
        return Err(Error::file(Role::Data, p, "no such file or directory"));
    }
    if p.is_file() {
        if p.extension().and_then(|e| e.to_str()) == Some("npy") {
            if spec.split == Split::Test {
                return Err(Error::file(
                    Role::Data,
                    p,
                    "is one .npy file, which is one split: give the directory holding X_test.npy and y_test.npy for the test split",
                ));
            }
            let y = p.with_file_name("y.npy");
            return read_npy_pair(p, &y, spec.layout);
        }
        return Err(Error::file(Role::Data, p, "expected a directory (CIFAR-10 or X.npy + y.npy) or an X .npy file"));
    }
    for dir in [p.clone(), p.join("cifar-10-batches-bin")] {
        if cifar_names(spec.split).iter().any(|f| dir.join(format!("{f}.bin")).exists()) {
            return read_cifar(&dir, spec.split, DataFormat::CifarBinary);
        }
    }
    for dir in [p.clone(), p.join("cifar-10-batches-py")] {
        if cifar_names(spec.split).iter().any(|f| dir.join(f).exists()) {
            return read_cifar(&dir, spec.split, DataFormat::CifarPython);
        }
    }
    let (xs, ys) = match spec.split {
        Split::Train => ("X.npy", "y.npy"),
        Split::Test => ("X_test.npy", "y_test.npy"),
    };
    if p.join(xs).exists() {
        return read_npy_pair(&p.join(xs), &p.join(ys), spec.layout);
    }
    if spec.split == Split::Test && p.join("X.npy").exists() {
        return Err(Error::file(
            Role::Data,
            p,
            "has X.npy (the training split) but no X_test.npy and y_test.npy for the test split",
        ));
    }
    Err(Error::file(
        Role::Data,
        p,
        format!(
            "found neither CIFAR-10 ({}.bin or python pickles for the {} split) nor X.npy + y.npy",
            cifar_names(spec.split)[0],
            spec.split
        ),
    ))
}

fn cifar_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}")).collect(),
        Split::Test => vec!["test_batch".into()],
    }
}

/// The images (3072 bytes each, CHW) and labels of one CIFAR-10 file.
pub type CifarRecords = (Vec<u8>, Vec<i64>);

/// Parse a CIFAR-10 binary-version file: whole 3,073-byte records (label, then 3,072 pixels),
/// labels 0..9. The problem in words on failure.
pub fn parse_cifar_binary(raw: &[u8]) -> std::result::Result<CifarRecords, String> {
    if raw.is_empty() || !raw.len().is_multiple_of(CIFAR_RECORD) {
        return Err(format!(
            "{} bytes is not a whole number of {CIFAR_RECORD}-byte records (1 label + 3072 pixels); \
             a complete batch file has {} bytes",
            raw.len(),
            CIFAR_PER_FILE * CIFAR_RECORD
        ));
    }
    let mut images = Vec::with_capacity(raw.len() / CIFAR_RECORD * 3072);
    let mut labels = Vec::with_capacity(raw.len() / CIFAR_RECORD);
    for (i, rec) in raw.chunks_exact(CIFAR_RECORD).enumerate() {
        check_cifar_label(i, rec[0] as i64)?;
        labels.push(rec[0] as i64);
        images.extend_from_slice(&rec[1..]);
    }
    Ok((images, labels))
}

fn check_cifar_label(index: usize, label: i64) -> std::result::Result<(), String> {
    if !(0..10).contains(&label) {
        return Err(format!("record {index} has label {label}; CIFAR-10 labels are 0..9"));
    }
    Ok(())
}

/// Parse a CIFAR-10 python-version file (a pickled dict with 'data' and 'labels').
pub fn parse_cifar_pickle(raw: &[u8]) -> std::result::Result<CifarRecords, String> {
    use serde_pickle::{DeOptions, HashableValue as H, Value as V};
    let opts = DeOptions::new().replace_unresolved_globals().keep_restore_state();
    let value = serde_pickle::value_from_slice(raw, opts).map_err(|e| format!("not a readable pickle: {e}"))?;
    let V::Dict(d) = value else {
        return Err("pickle holds no dict".into());
    };
    let get = |key: &str| d.get(&H::Bytes(key.as_bytes().to_vec())).or_else(|| d.get(&H::String(key.to_string())));
    let Some(V::List(ls)) = get("labels") else {
        return Err("no 'labels' list".into());
    };
    let Some(data) = get("data").and_then(longest_bytes) else {
        return Err("no 'data' array".into());
    };
    if data.len() != ls.len() * 3072 {
        return Err(format!(
            "'data' has {} bytes, expected {} (= {} labels × 3072)",
            data.len(),
            ls.len() * 3072,
            ls.len()
        ));
    }
    let mut labels = Vec::with_capacity(ls.len());
    for (i, l) in ls.iter().enumerate() {
        let V::I64(l) = l else {
            return Err(format!("label {i} is not an integer"));
        };
        check_cifar_label(i, *l)?;
        labels.push(*l);
    }
    Ok((data.clone(), labels))
}

fn read_cifar(dir: &Path, split: Split, format: DataFormat) -> Result<HostData> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in cifar_names(split) {
        let file = if format == DataFormat::CifarBinary { dir.join(format!("{name}.bin")) } else { dir.join(&name) };
        let raw = std::fs::read(&file).map_err(|e| Error::file(Role::CifarFile, &file, format!("cannot read: {e}")))?;
        let parsed =
            if format == DataFormat::CifarBinary { parse_cifar_binary(&raw) } else { parse_cifar_pickle(&raw) };
        let (im, la) = parsed.map_err(|p| Error::file(Role::CifarFile, &file, p))?;
        images.extend(im);
        labels.extend(la);
    }
    let n = labels.len();
    Ok(HostData {
        x: Tensor::from_slice(&images).view([n as i64, 3, 32, 32]),
        y: Tensor::from_slice(&labels),
        n,
        targets: Targets::Classes,
        format,
        layout_nhwc: false,
    })
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

/// An .npy array read into a host tensor (integers as int64, float64 as float32).
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
    parse_npy(&bytes).map_err(|p| Error::file(Role::File, path, p))
}

/// Parse .npy bytes into a host tensor (integers as int64, float64 as float32); the problem in
/// words on failure.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    use crate::formats::npy::Values;
    let a = crate::formats::npy::parse(bytes)?;
    let shape: Vec<i64> = a.shape.iter().map(|&d| d as i64).collect();
    let t = match &a.values {
        Values::U8(v) => Tensor::from_slice(v),
        Values::F32(v) => Tensor::from_slice(v),
        Values::F64(v) => Tensor::from_slice(v).to_kind(Kind::Float),
        Values::I64(v) => Tensor::from_slice(v),
    };
    Ok(t.view(shape.as_slice()))
}

fn read_npy_pair(xp: &Path, yp: &Path, layout: Layout) -> Result<HostData> {
    if !yp.exists() {
        return Err(Error::file(
            Role::Data,
            xp,
            format!("no {} beside it (labels or targets, one per sample)", yp.display()),
        ));
    }
    let x = read_npy(xp)?;
    let mut y = read_npy(yp)?;
    if y.kind() == Kind::Uint8 {
        y = y.to_kind(Kind::Int64);
    }
    if x.dim() < 2 {
        return Err(Error::file(
            Role::File,
            xp,
            format!("X must be [N, ...] with at least 2 axes, got shape {:?}", x.size()),
        ));
    }
    match x.kind() {
        // bytes (images), floats, or integers (token ids, int64 after reading).
        Kind::Uint8 | Kind::Float | Kind::Int64 => {}
        k => {
            return Err(Error::file(
                Role::File,
                xp,
                format!("X must be uint8, float32 or integer token ids, got {k:?}"),
            ))
        }
    }
    let n = x.size()[0];
    if y.dim() == 0 || y.size()[0] != n {
        return Err(Error::file(
            Role::File,
            xp,
            format!(
                "has {n} samples (shape {:?}) but {} has shape {:?}: X and y must have the same length",
                x.size(),
                yp.display(),
                y.size()
            ),
        ));
    }
    let targets = if y.kind() == Kind::Int64 {
        if n > 0 {
            // The smallest label other than the ignore index.
            let min = y.masked_fill(&y.eq(IGNORE_INDEX), i64::MAX).min().int64_value(&[]);
            if min < 0 {
                return Err(Error::file(
                    Role::File,
                    yp,
                    format!(
                        "label {min} is negative; class labels must be 0..C-1, or {IGNORE_INDEX} for a target left out"
                    ),
                ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cifar_records_parse_and_bad_ones_are_described() {
        let mut raw = vec![0u8; 2 * CIFAR_RECORD];
        raw[0] = 3;
        raw[CIFAR_RECORD] = 9;
        raw[1] = 200;
        let (im, la) = parse_cifar_binary(&raw).unwrap();
        assert_eq!(la, vec![3, 9]);
        assert_eq!((im.len(), im[0]), (2 * 3072, 200));
        let e = parse_cifar_binary(&raw[..CIFAR_RECORD + 5]).unwrap_err();
        assert!(e.contains("3078 bytes") && e.contains("30730000"), "{e}");
        raw[CIFAR_RECORD] = 11;
        assert!(parse_cifar_binary(&raw).unwrap_err().contains("record 1 has label 11"));
        assert!(parse_cifar_pickle(b"not a pickle").unwrap_err().contains("pickle"));
    }

    #[test]
    fn npy_integers_widen_and_floats_narrow() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }";
        let pad = 64 - (10 + h.len() + 1) % 64;
        b.extend_from_slice(&((h.len() + pad + 1) as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend(std::iter::repeat_n(b' ', pad));
        b.push(b'\n');
        for v in [1i32, -2, 3] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let t = parse_npy(&b).unwrap();
        assert_eq!(t.kind(), Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(&t).unwrap(), vec![1, -2, 3]);
        assert!(parse_npy(&b[..b.len() - 4]).is_err(), "truncated data");
    }

    proptest! {
        #[test]
        fn arbitrary_cifar_binary_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..7000)) {
            match parse_cifar_binary(&bytes) {
                Ok((im, la)) => prop_assert_eq!(im.len(), la.len() * 3072),
                Err(e) => prop_assert!(!e.contains('\n')),
            }
        }

        #[test]
        fn arbitrary_pickles_give_records_or_a_one_line_problem(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse_cifar_pickle(&bytes) {
                Ok((im, la)) => prop_assert_eq!(im.len(), la.len() * 3072),
                Err(e) => prop_assert!(!e.is_empty() && !e.contains('\n'), "{e:?}"),
            }
        }

        #[test]
        fn pickled_dicts_with_wrong_contents_fail_cleanly(labels in proptest::collection::vec(-3i64..14, 0..4), data_len in 0usize..7000) {
            // protocol-2 pickle of {'labels': [...], 'data': b'...'} written by hand.
            let mut p = vec![0x80, 2, b'}', b'('];
            p.extend_from_slice(b"X\x06\x00\x00\x00labels](");
            for l in &labels { p.push(b'J'); p.extend_from_slice(&(*l as i32).to_le_bytes()); }
            p.push(b'e');
            p.extend_from_slice(b"X\x04\x00\x00\x00data");
            p.push(b'B'); p.extend_from_slice(&(data_len as u32).to_le_bytes()); p.extend(std::iter::repeat_n(7u8, data_len));
            p.extend_from_slice(b"u.");
            match parse_cifar_pickle(&p) {
                Ok((im, la)) => {
                    prop_assert_eq!(im.len(), la.len() * 3072);
                    prop_assert!(la.iter().all(|l| (0..10).contains(l)));
                }
                Err(e) => prop_assert!(!e.contains('\n'), "{}", e),
            }
        }

        #[test]
        fn arbitrary_npy_bytes_give_a_tensor_or_a_one_line_problem(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse_npy(&bytes) {
                Ok(t) => prop_assert!(matches!(t.kind(), Kind::Uint8 | Kind::Float | Kind::Int64)),
                Err(e) => prop_assert!(!e.is_empty() && !e.contains('\n'), "{e:?}"),
            }
        }
    }
}
