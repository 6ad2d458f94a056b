//! Checkpoints in the forms people have: a TorchScript file, a `torch.save`d state_dict (zip
//! format, also nested under 'state_dict'/'net'/'model'/... and with DataParallel's `module.`
//! prefix), or a .safetensors state dict. A checkpoint is applied to a TorchScript architecture by
//! name: every parameter and floating-point buffer of the architecture must be found, with its shape.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use tch::{CModule, Device, Kind, Tensor};

use crate::model::Model;
use crate::torch_msg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Torchscript,
    TorchSave,
    Safetensors,
}

/// The named tensors of a checkpoint file, as stored (CPU).
pub fn read(path: &Path) -> Result<(Format, Vec<(String, Tensor)>)> {
    if !path.is_file() {
        bail!("checkpoint {}: no such file", path.display());
    }
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        let t = Tensor::read_safetensors(path).map_err(|e| {
            anyhow!("checkpoint {}: not a readable safetensors file: {}", path.display(), torch_msg(&e))
        })?;
        return Ok((Format::Safetensors, t));
    }
    let ts_err = match CModule::load_on_device(path, Device::Cpu) {
        Ok(m) => {
            let mut named =
                m.named_parameters().map_err(|e| anyhow!("checkpoint {}: {}", path.display(), torch_msg(&e)))?;
            if let Some((_, first)) = named.first() {
                let buffers = crate::ffi::named_buffers(&m, &first.shallow_clone())?;
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
                format!("not TorchScript ({ts_err}) nor a readable torch.save zip file ({e:#})")
            };
            bail!(
                "checkpoint {}: {why}; convert it with `python models/convert_checkpoint.py {} OUT.safetensors`",
                path.display(),
                path.display()
            )
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
        bail!(
            "checkpoint {}: no tensor for the model's first parameter {first:?} (its first keys: {keys:?}); \
             is it a checkpoint of this architecture?",
            path.display()
        );
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
        bail!(
            "checkpoint {} does not fit the architecture: {} missing [{}], {} unexpected [{}], {} shape conflicts [{}]",
            path.display(),
            missing.len(),
            few(&missing),
            unexpected.len(),
            few(&unexpected),
            conflicts.len(),
            conflicts.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    Ok(out)
}
