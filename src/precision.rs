//! Numeric precision of the forward pass: strict fp32, TF32 tensor cores for float32 convolutions
//! and matmuls (PyTorch's default for convolutions), or the model cast to bf16 / fp16. Losses
//! are always accumulated in float32/float64, and θ* + αδ + βη is always formed in float32.

use std::fmt;

use serde::Serialize;
use tch::{Device, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 with TF32 disabled for convolutions and matmuls (IEEE fp32 throughout).
    Fp32,
    /// float32 tensors, TF32 tensor cores allowed for convolutions and matmuls (CUDA only).
    Tf32,
    /// Model and inputs cast to bfloat16.
    Bf16,
    /// Model and inputs cast to float16.
    Fp16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl Precision {
    /// The default: TF32 on CUDA (as PyTorch does for convolutions), fp32 on CPU.
    pub fn default_for(dev: Device) -> Precision {
        if dev.is_cuda() {
            Precision::Tf32
        } else {
            Precision::Fp32
        }
    }

    /// dtype of the model's weights and inputs during the forward pass.
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 | Precision::Tf32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
        }
    }

    /// numpy's name of `kind()`.
    pub fn dtype_name(self) -> &'static str {
        match self {
            Precision::Fp32 | Precision::Tf32 => "float32",
            Precision::Bf16 => "bfloat16",
            Precision::Fp16 => "float16",
        }
    }

    pub fn is_reduced(self) -> bool {
        self.kind() != Kind::Float
    }
}

pub use crate::ffi::{set_tf32, tf32_conv};
