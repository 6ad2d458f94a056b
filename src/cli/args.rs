//! The command line as typed ("low" arguments): clap structures only. `plan` turns them into
//! the library's validated configurations.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::device::DeviceSpec;
use crate::options::{BatchNormMode, Ignore, Layout, LossKind, Norm, Precision, Split};
use crate::space::grid::{Axis, Spacing};
use crate::space::shard::Shard;

/// Loss landscapes of neural networks: loss grids around trained TorchScript models along
/// filter-normalized random directions, between checkpoints, and on the PCA plane of a training
/// trajectory (Li et al., NeurIPS 2018).
#[derive(Parser, Debug)]
#[command(name = "losscape", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Loss on a 1-D (--x) or 2-D (--x and --y) grid of θ* + αδ + βη, δ and η random directions.
    Surface(SurfaceArgs),
    /// Set up a surface run directory (config.json and directions) for `surface --shard` tasks.
    Directions(DirectionsArgs),
    /// Loss along the segment θ(α) = (1−α)·θ_A + α·θ_B between two checkpoints.
    Line(LineArgs),
    /// Loss on the plane through three checkpoints: origin A, axes B − A and C − A.
    Plane(PlaneArgs),
    /// PCA of a training trajectory: the optimizer's path on the plane of its top two principal
    /// directions, and the loss surface on that plane.
    Trajectory(TrajectoryArgs),
    /// Curvature at the model: the Hessian's extreme eigenvalues and eigenvectors (Lanczos), its
    /// trace (Hutchinson) and spectral density (stochastic Lanczos quadrature).
    Hessian(HessianArgs),
    /// Sharpness and flatness of one model or many: average case, worst case (adaptive, l2 or l∞,
    /// m-sharpness) and PAC-Bayes flatness, one result per model × measure × radius.
    Sharpness(SharpnessArgs),
    /// Mode connectivity: a Bezier or polygonal-chain curve trained between two models (Garipov
    /// et al., 2018), evaluated beside the straight line, with the barrier of each.
    Connect(ConnectArgs),
    /// Assemble the arrays and meta.json of a run from its shards.
    Merge(MergeArgs),
    /// (Re)draw the pictures of a run directory from its saved files alone (no model, no data).
    Plot(PlotArgs),
}

/// The data and how its loss is measured.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// CIFAR-10 directory (binary or python version), a directory with X.npy + y.npy, or an X .npy file.
    #[arg(long, value_name = "DIR_OR_NPY")]
    pub data: PathBuf,
    /// Use the first N samples only (in file order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Loss: ce (class labels) or mse (float targets). Default: by the dtype of the labels.
    #[arg(long, value_enum)]
    pub loss: Option<LossKind>,
    /// Per-channel mean of byte images on the [0, 1] scale, comma-separated [default for CIFAR-10: 0.4914,0.4824,0.4467].
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std of byte images on the [0, 1] scale [default for CIFAR-10: 0.2471,0.2435,0.2616].
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Layout of 4-D X.npy.
    #[arg(long, value_enum, default_value = "auto")]
    pub layout: Layout,
    /// For a model whose forward returns a dict: the entry the loss is taken on [default: logits].
    /// (A tuple or list: its first element.)
    #[arg(long, value_name = "KEY")]
    pub output: Option<String>,
}

/// The splits a grid command evaluates at every point.
#[derive(Args, Debug, Clone)]
pub struct SplitArgs {
    /// Split(s) to evaluate: train (CIFAR-10's data_batch_*, or X.npy + y.npy) or test (test_batch,
    /// or X_test.npy + y_test.npy). `train,test` evaluates both at every point from one
    /// perturbation: loss.npy is the first's, loss.<split>.npy each one's.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "train", value_name = "SPLIT[,SPLIT]")]
    pub split: Vec<Split>,
}

/// Options that change the values a run computes (they are part of its identity).
#[derive(Args, Debug, Clone)]
pub struct ValueArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Forward precision: fp32 (strict, TF32 off), tf32 (CUDA only), bf16 or fp16 [default: tf32 on CUDA, fp32 on CPU].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Stop a point's pass once its partial mean proves loss > C; such points are flagged in capped.npy.
    #[arg(long, value_name = "C")]
    pub loss_cap: Option<f64>,
    /// Evaluate a frozen copy of the model with each BatchNorm folded into the layer before it,
    /// where the directions leave BatchNorm fixed (checked; falls back otherwise).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub fold_batchnorm: bool,
    /// BatchNorm at each point: eval (running statistics as stored, interpolated between
    /// checkpoints) or recompute (re-estimated on training samples, as update_bn does).
    #[arg(long, value_enum, default_value = "eval")]
    pub batchnorm: BatchNormMode,
    /// recompute: the first N training samples (all if fewer).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub bn_samples: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Passes estimated from part of the data (`--rel-error`).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Stop a pass once its loss is known to E relative (standard error <= E·|loss|, the samples
    /// in a seeded order); 0: every sample, exactly. Grid commands: each point's pass (stderr.npy,
    /// samples.npy); sharpness: each random draw's (average, pacbayes).
    #[arg(long, value_name = "E", default_value_t = 0.0)]
    pub rel_error: f64,
    /// --rel-error: the fewest samples a pass uses (all if fewer).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub min_samples: usize,
    /// --rel-error: seeds the order the samples are visited in.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub sample_seed: u64,
}

/// Options that change only how fast a task runs.
#[derive(Args, Debug, Clone)]
pub struct SpeedArgs {
    /// Samples per forward pass, halved on out-of-memory [default: 4096 on CUDA, 64 on CPU].
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,
    /// channels_last memory format for conv weights and images.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub channels_last: bool,
    /// CUDA: let cuDNN time its convolution algorithms in each process and keep the fastest
    /// (2-11% faster than its heuristics, measured); false: heuristics, the same choice every time.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub cudnn_benchmark: bool,
    /// CPU: run the folded copy's convolutions on oneDNN (MKLDNN) tensors, checked like the fold
    /// (1.1-1.3x faster on CIFAR ResNets, measured; falls back to plain tensors where it fails).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub onednn: bool,
}

/// Where the run goes and how this task takes part in it.
#[derive(Args, Debug, Clone)]
pub struct TaskArgs {
    /// Evaluate only share I of N of the points (points k with k mod N = I) [default: the SLURM
    /// array task's share inside a job array, else all].
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// CPU worker threads, each with its own model and data (on CUDA: one worker per GPU of --device).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Save progress at most every this many seconds (and at the end); 0 saves after every point.
    #[arg(long, visible_alias = "checkpoint-every", default_value_t = 5.0, value_name = "SECONDS")]
    pub save_every: f64,
    /// Do not draw the pictures at the end (`losscape plot RUN_DIR` draws them later).
    #[arg(long)]
    pub no_plots: bool,
}

/// The run directory.
#[derive(Args, Debug, Clone)]
pub struct OutArgs {
    /// Run directory for the arrays, directions and meta.json.
    #[arg(long, value_name = "RUN_DIR")]
    pub out: PathBuf,
    /// Start afresh: remove an earlier run's files in RUN_DIR (a grid run's shards and their progress too).
    #[arg(long)]
    pub overwrite: bool,
    /// No progress or notes on stderr (warnings and errors still).
    #[arg(long, short)]
    pub quiet: bool,
}

/// The model and its random directions.
#[derive(Args, Debug, Clone)]
pub struct ModelDirectionArgs {
    /// TorchScript model file (torch.jit.script or torch.jit.trace, see models/export.py), or with
    /// --arch a checkpoint (state dict) of that architecture.
    #[arg(long, value_name = "M.pt")]
    pub model: PathBuf,
    /// The TorchScript architecture a state-dict --model is applied to.
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// x axis (α): MIN:MAX:N, e.g. -1:1:51.
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    pub x: Axis,
    /// y axis (β): MIN:MAX:N; omit for a 1-D curve.
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    pub y: Option<Axis>,
    /// Placement of grid coordinates.
    #[arg(long, value_enum, default_value = "linear")]
    pub spacing: Spacing,
    /// Direction normalization.
    #[arg(long, value_enum, default_value = "filter")]
    pub norm: Norm,
    /// Parameters with dim <= 1 (biases, BatchNorm): biasbn = not perturbed, keep = perturbed (normalized per tensor).
    #[arg(long, value_enum, default_value = "biasbn")]
    pub ignore: Ignore,
    /// Seed of the Gaussian directions (torch's CPU generator: the same directions on every device).
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Reuse directions from a directions.safetensors of an earlier run (x.<param>, y.<param>).
    #[arg(long, value_name = "FILE")]
    pub directions: Option<PathBuf>,
}

/// Curvature maps on a surface.
#[derive(Args, Debug, Clone)]
pub struct CurvatureArgs {
    /// Also λmax and λmin of the Hessian at every point (eig_max.npy, eig_min.npy; Li et al.'s
    /// |λmin/λmax| map). H over the parameters the directions move (--ignore); default precision fp32.
    #[arg(long)]
    pub curvature: bool,
    /// Each eigenvalue's residual ‖Hv − λv‖ is within T·|λ| (T·1e-3·λmax for λ ≈ 0).
    #[arg(long, value_name = "T", default_value_t = 1e-2)]
    pub curvature_tol: f64,
    /// Lanczos steps at most per point.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub curvature_max_steps: usize,
    /// The operator mapped: hessian, ggn (generalized Gauss-Newton, the Fisher of the model's
    /// predictive distribution) or empirical-fisher.
    #[arg(long, value_enum, default_value = "hessian", requires = "curvature")]
    pub operator: crate::options::Operator,
}

#[derive(Args, Debug)]
pub struct SurfaceArgs {
    #[command(flatten)]
    pub model: ModelDirectionArgs,
    #[command(flatten)]
    pub curvature: CurvatureArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    #[command(flatten)]
    pub value: ValueArgs,
    #[command(flatten)]
    pub speed: SpeedArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct DirectionsArgs {
    #[command(flatten)]
    pub model: ModelDirectionArgs,
    #[command(flatten)]
    pub curvature: CurvatureArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    #[command(flatten)]
    pub value: ValueArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct LineArgs {
    /// Checkpoint at α = 0: TorchScript, torch.save state_dict (zip) or .safetensors.
    #[arg(long, value_name = "A")]
    pub from: PathBuf,
    /// Checkpoint at α = 1.
    #[arg(long, value_name = "B")]
    pub to: PathBuf,
    /// TorchScript architecture the state dicts are applied to [default: A, if it is TorchScript].
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// α axis: MIN:MAX:N.
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true, default_value = "-0.5:1.5:41")]
    pub x: Axis,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    #[command(flatten)]
    pub value: ValueArgs,
    #[command(flatten)]
    pub speed: SpeedArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The model at t = 0: TorchScript, torch.save state_dict (zip) or .safetensors.
    #[arg(long, value_name = "A")]
    pub from: PathBuf,
    /// The model at t = 1.
    #[arg(long, value_name = "B")]
    pub to: PathBuf,
    /// TorchScript architecture the state dicts are applied to [default: A, if it is TorchScript].
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// The curve: quadratic Bezier, or the polygonal chain through the bend.
    #[arg(long, value_enum, default_value = "bezier")]
    pub curve: crate::space::curve::CurveKind,
    /// Epochs of curve training over the training split.
    #[arg(long, value_name = "E")]
    pub epochs: usize,
    /// Initial learning rate of SGD on the bend (then Garipov et al.'s schedule).
    #[arg(long, value_name = "LR", default_value_t = 0.015)]
    pub lr: f64,
    #[arg(long, value_name = "M", default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, value_name = "WD", default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Samples per training minibatch.
    #[arg(long, value_name = "B", default_value_t = 128)]
    pub batch_size: usize,
    /// Seeds each epoch's shuffle and t draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Augment the training minibatches (images only): flip (left-right, p = ½), crop (from the
    /// image padded by 4 black pixels), both as flip,crop, or none.
    #[arg(long, value_name = "LIST", default_value = "none")]
    pub augment: crate::space::curve::Augment,
    /// Values of t evaluated, evenly spaced over [0, 1] (the line at the same t).
    #[arg(long, value_name = "T", default_value_t = 61)]
    pub points: usize,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// BatchNorm at each evaluated point: recompute (re-estimated on training samples, as
    /// Garipov et al. do) or eval (the statistics of the bend's midpoint buffers, interpolated).
    #[arg(long, value_enum, default_value = "recompute")]
    pub batchnorm: BatchNormMode,
    /// recompute: the first N training samples (all if fewer).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub bn_samples: usize,
    /// Samples per forward pass of the evaluation, halved on out-of-memory [default: 4096 on CUDA, 64 on CPU].
    #[arg(long, value_name = "B")]
    pub eval_batch_size: Option<usize>,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct PlaneArgs {
    /// Three checkpoints A B C: the plane's origin A and axes B − A, C − A.
    #[arg(long, num_args = 3, value_names = ["A", "B", "C"], required = true)]
    pub models: Vec<PathBuf>,
    /// TorchScript architecture the state dicts are applied to [default: A, if it is TorchScript].
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// x axis (coefficient of B − A).
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true, default_value = "-0.5:1.5:21")]
    pub x: Axis,
    /// y axis (coefficient of C − A, or of its part orthogonal to B − A).
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true, default_value = "-0.5:1.5:21")]
    pub y: Axis,
    /// Gram–Schmidt: make the y axis orthogonal to B − A (C then sits at (c, 1), recorded in meta.json).
    #[arg(long)]
    pub orthogonalize: bool,
    /// A connect run whose curve runs through the three models (its A, B and bend.safetensors, in
    /// any order): the curve is drawn on the plane.
    #[arg(long, value_name = "CONNECT_RUN")]
    pub curve: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    #[command(flatten)]
    pub value: ValueArgs,
    #[command(flatten)]
    pub speed: SpeedArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct TrajectoryArgs {
    /// A directory of checkpoints, or a glob such as 'run/epoch_*.pt' (quote it); ordered naturally.
    #[arg(long, value_name = "DIR_OR_GLOB")]
    pub checkpoints: String,
    /// TorchScript architecture the state dicts are applied to [default: the last checkpoint, if TorchScript].
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// The plane's origin: the last checkpoint, or another checkpoint file.
    #[arg(long, default_value = "last", value_name = "last|FILE")]
    pub origin: String,
    /// Parameters with dim <= 1 (biases, BatchNorm): biasbn = left out of the PCA, keep = included.
    #[arg(long, value_enum, default_value = "biasbn")]
    pub ignore: Ignore,
    /// x axis [default: the path's extent plus a margin, --n points].
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    pub x: Option<Axis>,
    /// y axis [default: the path's extent plus a margin, --n points].
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    pub y: Option<Axis>,
    /// Margin around the path, as a fraction of its extent on each axis.
    #[arg(long, default_value_t = 0.25)]
    pub margin: f64,
    /// Points per axis when the extent is automatic.
    #[arg(long, default_value_t = 21)]
    pub n: usize,
    /// Memory for checkpoint vectors during the PCA, in MiB (more checkpoints than fit are
    /// processed in blocks, read again as needed).
    #[arg(long, value_name = "MIB", default_value_t = 2048.0)]
    pub pca_memory: f64,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    #[command(flatten)]
    pub value: ValueArgs,
    #[command(flatten)]
    pub speed: SpeedArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// The parameters a Hessian is taken over (the same sets as `--ignore` of the grid commands).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HessianParameters {
    /// The tensors with more than one dimension (weights; not biases or BatchNorm's γ, β), the
    /// parameters random directions move by default.
    Biasbn,
    /// Every parameter.
    Keep,
}

impl From<HessianParameters> for Ignore {
    fn from(p: HessianParameters) -> Ignore {
        match p {
            HessianParameters::Biasbn => Ignore::Biasbn,
            HessianParameters::Keep => Ignore::Keep,
        }
    }
}

/// The precisions a Hessian product runs in (reduced precisions are refused: curvature needs fp32).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HessianPrecision {
    /// float32 with TF32 disabled for convolutions and matmuls (IEEE fp32 throughout).
    Fp32,
    /// float32 tensors, TF32 tensor cores allowed (CUDA only).
    Tf32,
}

impl From<HessianPrecision> for Precision {
    fn from(p: HessianPrecision) -> Precision {
        match p {
            HessianPrecision::Fp32 => Precision::Fp32,
            HessianPrecision::Tf32 => Precision::Tf32,
        }
    }
}

#[derive(Args, Debug)]
pub struct HessianArgs {
    /// TorchScript model file, or with --arch a checkpoint (state dict) of that architecture.
    #[arg(long, value_name = "M.pt")]
    pub model: PathBuf,
    /// The TorchScript architecture a state-dict --model is applied to.
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// Parameters H is taken over.
    #[arg(long, value_enum, default_value = "biasbn")]
    pub ignore: HessianParameters,
    /// Only the parameters whose names (as named_parameters gives them) one of these regular
    /// expressions matches in full, within the --ignore set; comma-separated.
    #[arg(long, value_name = "REGEX[,REGEX]", value_delimiter = ',')]
    pub params: Vec<String>,
    /// Also each diagonal block: λmax (and λmin with --which both/smallest) of each parameter
    /// tensor's block, or each module's with `--per-layer module`, and its trace (from the --trace
    /// probes); per_layer.csv, hessian.json per_layer, per_layer.png.
    #[arg(long, value_enum, value_name = "tensor|module", num_args = 0..=1, default_missing_value = "tensor")]
    pub per_layer: Option<crate::options::PerLayer>,
    /// The operator: hessian, ggn (generalized Gauss-Newton Jᵀ H_out J, the Fisher of the
    /// model's predictive distribution for cross-entropy and squared error) or empirical-fisher
    /// ((1/N) Σ g_i g_iᵀ at the labels).
    #[arg(long, value_enum, default_value = "hessian")]
    pub operator: crate::options::Operator,
    /// Eigenvalues wanted at each end asked for.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub top: usize,
    /// Which end: largest (algebraic), smallest (most negative) or both.
    #[arg(long, value_enum, default_value = "largest")]
    pub which: crate::options::Which,
    /// Each reported pair's residual ‖Hv − λv‖ is within T·|λ| (T·1e-3·max|λ| for λ ≈ 0).
    #[arg(long, value_name = "T", default_value_t = 1e-3)]
    pub tol: f64,
    /// Lanczos steps at most (each one Hessian-vector product).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub max_steps: usize,
    /// lanczos, or power (power iteration for the largest |λ|: a baseline, --top 1 only).
    #[arg(long, value_enum, default_value = "lanczos")]
    pub method: crate::options::EigenMethod,
    /// Seed of the random start vectors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also estimate the trace (Hutch++ or Hutchinson, Rademacher vectors).
    #[arg(long)]
    pub trace: bool,
    /// Trace: hutch++ (a third of the products sketch the top subspace, a third take its part of
    /// the trace exactly, the rest is Hutchinson on the remainder) or hutchinson.
    #[arg(long, value_enum, default_value = "hutch++")]
    pub trace_method: crate::options::TraceMethod,
    /// Trace: at most this many products (fewer once the standard error is within --tol).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub trace_samples: usize,
    /// Independent products (trace probes, density runs) taken together in one pass over the
    /// data: one forward and first backward per batch for all of them.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub vectors_per_pass: usize,
    /// Also the spectral density (stochastic Lanczos quadrature): density.npy and density.png.
    #[arg(long)]
    pub density: bool,
    /// Density: Lanczos runs.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub density_runs: usize,
    /// Density: steps per run.
    #[arg(long, value_name = "N", default_value_t = 80)]
    pub density_steps: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// The split H is taken on: train (CIFAR-10's data_batch_*, or X.npy + y.npy) or test
    /// (test_batch, or X_test.npy + y_test.npy).
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,
    /// auto, cpu, cuda or cuda:N (one device).
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Precision of the products [default: fp32 on every device].
    #[arg(long, value_enum)]
    pub precision: Option<HessianPrecision>,
    /// Samples per pass of a product, halved on out-of-memory [default: 1024 on CUDA, 64 on CPU].
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub out: OutArgs,
    /// Do not draw density.png.
    #[arg(long)]
    pub no_plots: bool,
}

#[derive(Args, Debug)]
pub struct SharpnessArgs {
    /// One model: a TorchScript file, or with --arch a checkpoint (state dict) of that architecture.
    #[arg(long, value_name = "M.pt", conflicts_with_all = ["models", "checkpoints"])]
    pub model: Option<PathBuf>,
    /// Several models, measured in the order given (one row each).
    #[arg(long, value_name = "M.pt", num_args = 1.., conflicts_with = "checkpoints")]
    pub models: Vec<PathBuf>,
    /// Every checkpoint of a directory, or of a glob, in natural order.
    #[arg(long, value_name = "DIR_OR_GLOB")]
    pub checkpoints: Option<String>,
    /// The TorchScript architecture the state-dict models are applied to.
    #[arg(long, value_name = "ARCH.pt")]
    pub arch: Option<PathBuf>,
    /// Measures: average, worst, pacbayes (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "average,worst", value_name = "M[,M]")]
    pub measure: Vec<crate::options::Measure>,
    /// ρ of the average and worst cases, comma-separated (one result each; pacbayes takes none).
    #[arg(long, value_delimiter = ',', value_name = "R[,R]", allow_hyphen_values = true)]
    pub radius: Vec<f64>,
    /// The scale vector c of the perturbation δ = c ⊙ u.
    #[arg(long, value_enum, default_value = "adaptive")]
    pub scale: crate::options::SharpnessScale,
    /// Added to |θ| by the adaptive scale (1 gives Keskar et al.'s ε-sharpness with --norm linf).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub floor: f64,
    /// The worst case's ball: ‖δ ⊘ c‖₂ ≤ ρ or ‖δ ⊘ c‖∞ ≤ ρ.
    #[arg(long, value_enum, default_value = "l2")]
    pub norm: crate::options::PNorm,
    /// Draws of the average case, and of each level of the PAC-Bayes search.
    #[arg(long, value_name = "M", default_value_t = 100)]
    pub samples: usize,
    /// Ascent steps per restart of the worst case (one gradient over the data each).
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub steps: usize,
    /// Starts of the worst case: the first from δ = 0, the others at random points of the ball.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub restarts: usize,
    /// Worst case over consecutive batches of M samples (each its own δ), averaged [default: the whole set].
    #[arg(long, value_name = "M")]
    pub m_sharpness: Option<usize>,
    /// PAC-Bayes: the bound T on the mean increase of the quantity.
    #[arg(long, value_name = "T", default_value_t = 0.1)]
    pub threshold: f64,
    /// PAC-Bayes: what increases by at most T.
    #[arg(long, value_enum, default_value = "error")]
    pub quantity: crate::options::PacQuantity,
    /// Parameters perturbed: biasbn = those with more than one dimension, keep = all.
    #[arg(long, value_enum, default_value = "biasbn")]
    pub ignore: HessianParameters,
    /// Seed of every draw (the same values in one process or in shards).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The split measured: train (CIFAR-10's data_batch_*, or X.npy + y.npy) or test.
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Precision of the passes [default: fp32 on every device].
    #[arg(long, value_enum)]
    pub precision: Option<HessianPrecision>,
    /// BatchNorm at each perturbed point: eval (statistics as stored) or recompute (re-estimated
    /// on training samples, as update_bn does; gradients then taken in eval mode with them).
    #[arg(long, value_enum, default_value = "eval")]
    pub batchnorm: BatchNormMode,
    /// recompute: the first N training samples (all if fewer).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub bn_samples: usize,
    /// Samples per pass, halved on out-of-memory [default: 1024 on CUDA, 64 on CPU].
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The run directory the shards wrote to.
    pub run_dir: PathBuf,
    /// Write NaN for missing points instead of failing.
    #[arg(long)]
    pub allow_partial: bool,
    /// Do not draw the pictures.
    #[arg(long)]
    pub no_plots: bool,
    /// No messages.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectArg {
    Equal,
    Free,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A run directory (with meta.json); with --out, several of them drawn in one figure.
    #[arg(required = true, num_args = 1..)]
    pub run_dirs: Vec<PathBuf>,
    /// Draw the runs side by side into this .png (one colour scale, the same contour levels;
    /// 1-D runs as overlaid curves) instead of redrawing each run's own pictures.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A log colour scale, heights and contour spacing (default: log when the finite loss range
    /// spans more than a decade, linear otherwise).
    #[arg(long, conflicts_with = "linear")]
    pub log: bool,
    /// A linear scale even when the range spans more than a decade.
    #[arg(long)]
    pub linear: bool,
    /// Report critical points whose persistence is at least this fraction of the plotted range
    /// [default: at the largest gap of the persistence diagram].
    #[arg(long, value_name = "FRACTION")]
    pub persistence: Option<f64>,
    /// Axes of 2-D pictures: equal units (default for trajectories), or free.
    #[arg(long, value_enum)]
    pub aspect: Option<AspectArg>,
    /// A run made with --rel-error: shade the points whose loss is known less well than this
    /// fraction of itself (standard error > FRACTION x loss), e.g. 0.01.
    #[arg(long, value_name = "FRACTION")]
    pub shade_stderr: Option<f64>,
    /// Lower end of the colour range (loss units).
    #[arg(long, allow_hyphen_values = true)]
    pub vmin: Option<f64>,
    /// Upper end of the colour range (loss units).
    #[arg(long, allow_hyphen_values = true)]
    pub vmax: Option<f64>,
    /// Number of contour levels.
    #[arg(long, default_value_t = 12)]
    pub levels: usize,
    /// Clip the 3-D surface's height at this loss.
    #[arg(long)]
    pub zmax: Option<f64>,
    /// Pixels per inch of the PNG files: 100 gives 800x640 pictures at the default size.
    #[arg(long, default_value_t = 100)]
    pub dpi: u32,
    /// The files each picture is written as: any of png, svg, pdf, comma-separated.
    #[arg(long, default_value = "png,pdf", value_name = "FORMATS")]
    pub format: String,
    /// A picture's size in inches, WxH (e.g. 3.5x2.8 for a journal column) [default: 8x6.4].
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Size of tick labels in points; titles and labels are drawn in proportion.
    #[arg(long, default_value_t = 10.0, value_name = "POINTS")]
    pub font_size: f64,
    /// The heatmap's fill: filled contours between the contour levels, or one cell per grid point.
    #[arg(long, value_enum, default_value_t = StyleArg::Bands)]
    pub style: StyleArg,
    /// Also write figures.py beside the arrays: a matplotlib program that draws the same
    /// figures (same levels, scale, path and markers) from the run's files.
    #[arg(long)]
    pub script: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StyleArg {
    Bands,
    Cells,
}
