//! Checkpoints in the forms people have: a TorchScript file, a `torch.save`d state_dict (zip
//! format, also nested under 'state_dict'/'net'/'model'/... and with DataParallel's `module.`
//! prefix), or a .safetensors state dict. A checkpoint is applied to a TorchScript architecture by
//! name: every parameter and floating-point buffer of the architecture must be found, with its shape.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{CModule, Device, Kind, Tensor};

use crate::error::{torch_msg, Error, Result, Role};
use crate::inputs::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Torchscript,
    TorchSave,
    Safetensors,
}

/// The named tensors of a checkpoint file, as stored (CPU).
pub fn read(path: &Path) -> Result<(Format, Vec<(String, Tensor)>)> {
    let bad = |problem: String| Error::file(Role::Checkpoint, path, problem);
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        let t = Tensor::read_safetensors(path)
            .map_err(|e| bad(format!("not a readable safetensors file: {}", torch_msg(&e))))?;
        return Ok((Format::Safetensors, t));
    }
    let ts_err = match CModule::load_on_device(path, Device::Cpu) {
        Ok(m) => {
            let mut named = m.named_parameters().map_err(|e| bad(torch_msg(&e)))?;
            if let Some((_, first)) = named.first() {
                let handle = crate::ffi::Module::share(&m, first).map_err(|e| bad(e.to_string()))?;
                let buffers = handle.named_buffers().map_err(|e| bad(e.to_string()))?;
                named.extend(buffers);
            }
            return Ok((Format::Torchscript, named));
        }
        Err(e) => torch_msg(&e),
    };
    match crate::ffi::torch_load(path) {
        Ok(t) => Ok((Format::TorchSave, t)),
        Err(e) => {
            let why = if ts_err.contains("central directory") || ts_err.contains("not a ZIP archive") {
                "not a zip archive, so neither TorchScript nor a current torch.save file (an old-style torch.save?)"
                    .to_string()
            } else {
                format!("not TorchScript ({ts_err}) nor a readable torch.save zip file ({e})")
            };
            Err(bad(format!(
                "{why}; convert it with `python models/convert_checkpoint.py {} OUT.safetensors`",
                path.display()
            )))
        }
    }
}

/// A checkpoint's values for `Model::state()`, in that order: float32 on the CPU.
#[derive(Debug)]
pub struct State {
    pub path: PathBuf,
    pub format: Format,
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
}

impl State {
    /// The model's own current values.
    pub fn of_model(model: &Model) -> State {
        let _g = tch::no_grad_guard();
        let (names, tensors) = model
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).to_kind(Kind::Float).copy()))
            .unzip();
        State { path: model.path.clone(), format: Format::Torchscript, names, tensors }
    }

    /// Read `path` and match it to `model`'s state by name.
    pub fn load(path: &Path, model: &Model) -> Result<State> {
        let (format, named) = read(path)?;
        let targets = model.state();
        let tensors = match_names(path, named, &targets)?;
        Ok(State { path: path.to_path_buf(), format, names: targets.into_iter().map(|(n, _)| n).collect(), tensors })
    }
}

/// Put `named` (a checkpoint's tensors) in the order of `targets`, after removing the wrapper
/// prefix that the checkpoint's keys carry (found from the first target's name: 'net.module.' in
/// 'net.module.conv1.weight'). Missing and unexpected names and shape conflicts are reported.
fn match_names(path: &Path, named: Vec<(String, Tensor)>, targets: &[(String, Tensor)]) -> Result<Vec<Tensor>> {
    let first = &targets[0].0;
    let prefix = named
        .iter()
        .filter_map(|(k, _)| {
            if k == first {
                Some(String::new())
            } else {
                k.strip_suffix(&format!(".{first}")).map(|p| format!("{p}."))
            }
        })
        .min_by_key(|p| p.len());
    let Some(prefix) = prefix else {
        let keys: Vec<&str> = named.iter().take(5).map(|(k, _)| k.as_str()).collect();
        return Err(Error::file(
            Role::Checkpoint,
            path,
            format!(
                "no tensor for the model's first parameter {first:?} (its first keys: {keys:?}); \
                 is it a checkpoint of this architecture?"
            ),
        ));
    };
    let mut by_name: std::collections::HashMap<String, Tensor> =
        named.into_iter().filter_map(|(k, t)| k.strip_prefix(&prefix).map(|k| (k.to_string(), t))).collect();
    let mut out = Vec::with_capacity(targets.len());
    let mut missing = Vec::new();
    let mut conflicts = Vec::new();
    for (name, t) in targets {
        match by_name.remove(name) {
            None => missing.push(name.as_str()),
            Some(v) if v.size() != t.size() => {
                conflicts.push(format!("{name}: checkpoint {:?} vs model {:?}", v.size(), t.size()))
            }
            Some(v) => out.push(v.to_kind(Kind::Float)),
        }
    }
    // Integer buffers (num_batches_tracked) are not part of the state; ignore them.
    let mut unexpected: Vec<String> =
        by_name.into_iter().filter(|(_, t)| t.is_floating_point()).map(|(k, _)| k).collect();
    unexpected.sort();
    if !missing.is_empty() || !unexpected.is_empty() || !conflicts.is_empty() {
        let few = |v: &[&str]| v.iter().take(4).copied().collect::<Vec<_>>().join(", ");
        let unexpected: Vec<&str> = unexpected.iter().map(String::as_str).collect();
        return Err(Error::file(
            Role::Checkpoint,
            path,
            format!(
                "does not fit the architecture: {} missing [{}], {} unexpected [{}], {} shape conflicts [{}]",
                missing.len(),
                few(&missing),
                unexpected.len(),
                few(&unexpected),
                conflicts.len(),
                conflicts.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    Ok(out)
}

/// The TorchScript file that gives the architecture: `arch`, else `fallback` when it is
/// TorchScript itself (None: a state dict with no architecture).
pub fn arch_file(arch: Option<&Path>, fallback: &Path) -> Result<Option<PathBuf>> {
    if let Some(a) = arch {
        return Ok(Some(a.to_path_buf()));
    }
    match read(fallback)? {
        (Format::Torchscript, _) => Ok(Some(fallback.to_path_buf())),
        _ => Ok(None),
    }
}

const CHECKPOINT_EXTS: [&str; 5] = ["pt", "pth", "t7", "ckpt", "safetensors"];

/// The checkpoint files of a directory (every file with a checkpoint extension; where one stem has
/// several, the .safetensors one) or of a glob, in natural order (epoch_2 before epoch_10).
pub fn list(spec: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(spec);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        let mut by_stem: std::collections::BTreeMap<String, PathBuf> = std::collections::BTreeMap::new();
        let rd = std::fs::read_dir(p).map_err(|e| Error::io(p, "cannot list", e))?;
        for e in rd {
            let f = e.map_err(|e| Error::io(p, "cannot list", e))?.path();
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !f.is_file() || !CHECKPOINT_EXTS.contains(&ext) {
                continue;
            }
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let keep_old =
                by_stem.get(&stem).is_some_and(|old| old.extension().and_then(|e| e.to_str()) == Some("safetensors"));
            if !keep_old {
                by_stem.insert(stem, f);
            }
        }
        by_stem.into_values().collect()
    } else {
        let paths = glob::glob(spec).map_err(|e| {
            Error::setting(
                crate::error::Setting::Checkpoints,
                format!("{spec:?}"),
                format!("not a valid glob pattern: {e}"),
            )
        })?;
        paths.filter_map(|r| r.ok()).filter(|f| f.is_file()).collect()
    };
    files.sort_by(|a, b| alphanumeric_sort::compare_path(a, b));
    Ok(files)
}
