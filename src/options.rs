//! The run's choices as types: every option that takes one of a few values is an enum here, shared
//! by the command line (which parses them), the engine (which acts on them) and the run record
//! (which stores them in config.json and meta.json under the names given here).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! display_as_serde {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let v = serde_json::to_value(self).map_err(|_| fmt::Error)?;
                f.write_str(v.as_str().unwrap_or("?"))
            }
        }
    )*};
}

/// How a random direction is rescaled to the size of the parameters (docs/landscape.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Per filter (slice along dim 0 of each tensor with dim > 1): ‖δ_k‖ = ‖θ_k‖.
    Filter,
    /// Per tensor: ‖δ‖ = ‖θ‖.
    Layer,
    /// Whole vector: ‖δ‖ = ‖θ‖ over all perturbed parameters.
    Model,
    /// Raw N(0, 1) draws.
    None,
}

/// What happens to parameters with dim ≤ 1 (biases, BatchNorm weight and bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Ignore {
    /// Their direction is 0: they stay at their trained values.
    Biasbn,
    /// They are perturbed too, normalized per tensor like `layer` (`none` leaves them raw).
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Cross-entropy over class logits [N, C], with integer labels; top-1 accuracy beside it.
    Ce,
    /// Mean squared error over all output entries (torch.nn.MSELoss), with float targets.
    Mse,
}

/// Numeric precision of the forward pass. Losses are always accumulated in float32/float64, and
/// θ* + αδ + βη is always formed in float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
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

impl Precision {
    /// The default: TF32 on CUDA (as PyTorch does for convolutions), fp32 on CPU.
    pub fn default_for(cuda: bool) -> Precision {
        if cuda {
            Precision::Tf32
        } else {
            Precision::Fp32
        }
    }

    /// dtype of the model's weights and inputs during the forward pass.
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 | Precision::Tf32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
            Precision::Fp16 => tch::Kind::Half,
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

    /// The model is cast for the forward pass (bf16, fp16).
    pub fn is_reduced(self) -> bool {
        self.kind() != tch::Kind::Float
    }
}

/// How BatchNorm layers are treated at each point of a grid (docs/landscape.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BatchNormMode {
    /// Eval mode with the running statistics as stored (interpolated between checkpoints).
    Eval,
    /// Running statistics re-estimated at every point on training samples, as
    /// `torch.optim.swa_utils.update_bn` does, then eval mode.
    Recompute,
}

/// A sharpness or flatness measure (docs/landscape.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// E_z[L(θ + ρ c⊙z)] − L(θ), z ~ N(0, I): the mean over draws and its standard error.
    Average,
    /// max over ‖δ ⊘ c‖_p ≤ ρ of L(θ + δ) − L(θ), by projected gradient ascent (a lower bound).
    Worst,
    /// PAC-Bayes flatness: the largest σ with E_z[Q(θ + σ c⊙z)] − Q(θ) ≤ T, and 1/σ².
    Pacbayes,
}

/// The scale vector c of a sharpness measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SharpnessScale {
    /// c = |θ| + floor, elementwise (adaptive sharpness; with floor 1, Keskar's ε-sharpness).
    Adaptive,
    /// c = ‖θ_k‖ / √numel(θ_k) for every filter k (slice along dim 0) of a tensor, as filter
    /// normalization scales a direction.
    Filter,
    /// c = 1.
    None,
}

/// The norm of the worst case's ball.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PNorm {
    L2,
    Linf,
}

/// What PAC-Bayes flatness bounds the increase of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PacQuantity {
    /// The training error, 1 − accuracy (Jiang et al.).
    Error,
    /// The loss.
    Loss,
}

/// The curvature operator: the Hessian, the generalized Gauss-Newton matrix (the Fisher of the
/// model's predictive distribution for softmax cross-entropy and squared error), or the
/// empirical Fisher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    /// H = ∇²L, by double backward.
    #[default]
    Hessian,
    /// G = (1/N) Σ J_iᵀ H_i J_i (J_i: the outputs' Jacobian, H_i: the loss's Hessian in the outputs).
    Ggn,
    /// EF = (1/N) Σ g_i g_iᵀ (g_i: sample i's gradient at its label).
    EmpiricalFisher,
}

impl Operator {
    /// Whether this is the Hessian (the default, left out of run identities).
    pub fn is_hessian(&self) -> bool {
        *self == Operator::Hessian
    }
}

/// How a trace is estimated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
pub enum TraceMethod {
    /// Hutchinson: the mean of zᵀCz over Rademacher z.
    #[serde(rename = "hutchinson")]
    #[value(name = "hutchinson")]
    Hutchinson,
    /// Hutch++ (Meyer et al. 2021): the trace on a sketched top subspace exactly, Hutchinson on
    /// the rest.
    #[default]
    #[serde(rename = "hutch++")]
    #[value(name = "hutch++")]
    HutchPlusPlus,
}

/// The blocks of a per-layer curvature analysis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PerLayer {
    /// One block per parameter tensor.
    #[default]
    Tensor,
    /// One block per module (its parameter tensors together).
    Module,
}

/// Which end of a Hessian's spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// The K largest eigenvalues (algebraically).
    Largest,
    /// The K smallest (most negative).
    Smallest,
    /// Both.
    Both,
}

/// How extreme eigenvalues are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EigenMethod {
    /// Lanczos with full reorthogonalization (the default).
    Lanczos,
    /// Power iteration, the largest |λ| only (a baseline: PyHessian's method).
    Power,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    #[default]
    Train,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    CifarBinary,
    CifarPython,
    Npy,
}

/// Memory layout of 4-D image arrays in X.npy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// NHWC when the last axis has 1, 3 or 4 entries and axis 1 does not; NCHW otherwise.
    Auto,
    Nchw,
    Nhwc,
}

/// Labels for classification or values for regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Targets {
    /// Integer class labels, int64 [N].
    Classes,
    /// Float targets, float32 [N, ...].
    Values,
}

/// `--rel-error`: each point's pass visits the samples in one seeded order and stops once the
/// loss is known to `rel_error` relative (space::sample), after at least `min_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Sampling {
    pub rel_error: f64,
    pub min_samples: usize,
    /// Seeds the order (space::sample::permutation; each split's own).
    pub seed: u64,
}

/// The per-channel map applied to byte images: x / divide_by, then (x − mean) / std.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Normalization {
    pub divide_by: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// How the Gauss-Newton and Fisher products take J·v (the outputs', or the per-target losses',
/// derivative along v).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Jvp {
    /// Forward mode: the parameters carry v as their tangent through one forward pass, which also
    /// records the graph Jᵀ is taken on. The default; where an operation of the model has no
    /// forward-mode formula the operator falls back to the double-backward trick for good.
    Forward,
    /// The double-backward trick (two backward passes through the graph).
    DoubleBackward,
}

display_as_serde!(
    Jvp,
    Norm,
    Ignore,
    LossKind,
    Precision,
    BatchNormMode,
    Which,
    Operator,
    TraceMethod,
    PerLayer,
    EigenMethod,
    Measure,
    SharpnessScale,
    PNorm,
    PacQuantity,
    Split,
    DataFormat,
    Layout,
    Targets
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_files_are_the_lowercase_names() {
        assert_eq!(Precision::Tf32.to_string(), "tf32");
        assert_eq!(DataFormat::CifarBinary.to_string(), "cifar_binary");
        assert_eq!(serde_json::to_string(&Norm::Filter).unwrap(), "\"filter\"");
        let back: Ignore = serde_json::from_str("\"keep\"").unwrap();
        assert_eq!(back, Ignore::Keep);
        assert!(serde_json::from_str::<Ignore>("\"Keep\"").is_err());
    }

    #[test]
    fn precision_kinds() {
        assert_eq!(Precision::default_for(true), Precision::Tf32);
        assert_eq!(Precision::default_for(false), Precision::Fp32);
        assert!(Precision::Bf16.is_reduced() && !Precision::Tf32.is_reduced());
        assert_eq!(Precision::Fp16.dtype_name(), "float16");
    }
}
