//! Which device a run uses: `auto|cpu|cuda|cuda:N`, checked against what libtorch can see.

use std::fmt;
use std::str::FromStr;

use tch::Device;

use crate::error::{Error, Result, Setting};

/// The `--device` option before it is resolved against the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU when libtorch sees one, else the CPU.
    Auto,
    Cpu,
    /// `cuda`: every visible GPU (CUDA_VISIBLE_DEVICES is honoured by CUDA itself).
    AllCuda,
    /// `cuda:N`.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::AllCuda),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(Error::setting(Setting::Device, s, "expected auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::AllCuda => write!(f, "cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Every device this spec names on this machine (several for `cuda`/`auto` with several GPUs),
    /// or an error saying why it cannot be had.
    pub fn resolve_all(self) -> Result<Vec<Device>> {
        let gpus = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
        match self {
            DeviceSpec::Cpu => Ok(vec![Device::Cpu]),
            DeviceSpec::Auto if gpus > 0 => Ok((0..gpus).map(Device::Cuda).collect()),
            DeviceSpec::Auto => Ok(vec![Device::Cpu]),
            DeviceSpec::AllCuda | DeviceSpec::Cuda(_) if gpus == 0 => {
                Err(Error::setting(Setting::Device, self, "CUDA is not available (libtorch sees no GPU); use the CPU"))
            }
            DeviceSpec::AllCuda => Ok((0..gpus).map(Device::Cuda).collect()),
            DeviceSpec::Cuda(n) if n >= gpus => Err(Error::setting(
                Setting::Device,
                self,
                format!("only {gpus} GPU(s) visible (cuda:0..cuda:{})", gpus - 1),
            )),
            DeviceSpec::Cuda(n) => Ok(vec![Device::Cuda(n)]),
        }
    }

    /// The first device of `resolve_all`.
    pub fn resolve(self) -> Result<Device> {
        Ok(self.resolve_all()?[0])
    }
}

/// "cpu" or "cuda:N", as written in meta.json.
pub fn name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

/// Wait for queued device work, so that a clock read after it measures the work.
pub fn synchronize(d: Device) {
    if let Device::Cuda(n) = d {
        tch::Cuda::synchronize(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_print_back() {
        for s in ["auto", "cpu", "cuda", "cuda:3"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        assert_eq!("gpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::AllCuda);
        let e = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cpu.resolve_all().unwrap(), vec![Device::Cpu]);
        if !tch::Cuda::is_available() {
            assert!(DeviceSpec::Cuda(0).resolve().unwrap_err().to_string().contains("CUDA is not available"));
            assert_eq!(DeviceSpec::Auto.resolve().unwrap(), Device::Cpu);
        }
        assert_eq!(name(Device::Cuda(2)), "cuda:2");
    }
}
