//! The run record: the types that write and read a run directory's JSON files, so that what is
//! written is what is read (no field built or read back by string key).
//!
//! - `config.json` = [`RunRecord`]: the run's [`Identity`] (what determines its values; its hash
//!   names the run), its [`Plan`] (what every task needs to evaluate its points) and the
//!   [`Description`] known at set-up (the static part of meta.json).
//! - `shards/<shard>.json` = [`ShardFile`]: one task's progress and timing.
//! - `meta.json` = [`Meta`]: the description, the results and every task's record; written last.
//!
//! `docs/meta.schema.json` is the JSON Schema of [`Meta`], generated from these types.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, Role};
use crate::options::{BatchNormMode, DataFormat, Ignore, LossKind, Norm, Normalization, Precision, Split, Targets};
use crate::space::barrier::Barrier;
use crate::space::curve::CurveKind;
use crate::space::grid::{Axis, GridSpec, Spacing};
use crate::space::shard::Shard;
use crate::store::atomic::{read_json, write_json};

/// Version of the layout of meta.json and config.json (1: before the typed record).
pub const SCHEMA_VERSION: u32 = 2;

/// What a run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// θ* + αδ + βη around a model, δ and η random (or given) directions.
    Surface,
    /// (1 − α)·θ_A + α·θ_B between two checkpoints.
    Line,
    /// θ_A + α(θ_B − θ_A) + β(θ_C − θ_A) through three checkpoints.
    Plane,
    /// The PCA plane of a training trajectory, with the optimizer's path on it.
    Trajectory,
    /// Sharpness and flatness measures of one or many models.
    Sharpness,
    /// A curve trained between two models (and the straight line beside it).
    Connect,
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunKind::Surface => "surface",
            RunKind::Line => "line",
            RunKind::Plane => "plane",
            RunKind::Trajectory => "trajectory",
            RunKind::Sharpness => "sharpness",
            RunKind::Connect => "connect",
        })
    }
}

/// A value evaluated at every point: a column of the shard files and an array of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Dataset-mean loss (float32).
    Loss,
    /// Top-1 accuracy (float32; NaN for MSE and capped points).
    Acc,
    /// 1 where the pass stopped at the loss cap (uint8).
    Capped,
    /// 1 where the loss is not finite and a BatchNorm running variance, as interpolated to the
    /// point, is negative (uint8; runs that move BatchNorm statistics in eval mode).
    NegativeVariance,
    /// The largest eigenvalue of the Hessian at the point (float32; `surface --curvature`).
    EigMax,
    /// The smallest (most negative) eigenvalue of the Hessian at the point.
    EigMin,
    /// The loss on one split of a run over several (`--split train,test`), from the same
    /// perturbation as the others (float32; `loss.<split>.npy`).
    SplitLoss(Split),
    /// The accuracy on one split of a run over several (`acc.<split>.npy`).
    SplitAcc(Split),
    /// A sharpness measure's value (float32; the full record is the point's `items/<k>.json`).
    Sharpness,
    /// `--rel-error`: the standard error of the point's loss (float32; 0 where the pass was
    /// complete) and the samples its pass used (uint32).
    Stderr,
    Samples,
    /// `--rel-error` on a run over several splits: each split's standard error and samples used
    /// (`stderr.<split>.npy`, `samples.<split>.npy`).
    SplitStderr(Split),
    SplitSamples(Split),
}

impl Quantity {
    /// The array file of the grid's values.
    pub fn file(self) -> String {
        match self {
            Quantity::Loss => "loss.npy".into(),
            Quantity::Acc => "acc.npy".into(),
            Quantity::Capped => "capped.npy".into(),
            Quantity::NegativeVariance => "negative_variance.npy".into(),
            Quantity::EigMax => "eig_max.npy".into(),
            Quantity::EigMin => "eig_min.npy".into(),
            Quantity::SplitLoss(s) => crate::store::files::per_split("loss.npy", s),
            Quantity::SplitAcc(s) => crate::store::files::per_split("acc.npy", s),
            Quantity::Sharpness => "sharpness.npy".into(),
            Quantity::Stderr => "stderr.npy".into(),
            Quantity::Samples => "samples.npy".into(),
            Quantity::SplitStderr(s) => crate::store::files::per_split("stderr.npy", s),
            Quantity::SplitSamples(s) => crate::store::files::per_split("samples.npy", s),
        }
    }

    /// Stored as uint8 0/1 rather than float32.
    pub fn is_flag(self) -> bool {
        matches!(self, Quantity::Capped | Quantity::NegativeVariance)
    }
}

/// The data a run evaluates on, as identified by its contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataIdentity {
    /// sha256 of the samples used (inputs as NCHW values, then targets).
    pub sha256: String,
    pub n: usize,
    pub normalization: Option<Normalization>,
}

/// Where the run's directions come from, as far as it determines the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// Seeded Gaussian directions, normalized.
    Random { seed: i64, norm: Norm, ignore: Ignore },
    /// A directions file given by the user.
    File { sha256: String },
    /// The segment to another checkpoint (the origin is the first).
    Line { to_sha256: String },
    /// The plane through the origin and two more checkpoints.
    Plane { b_sha256: String, c_sha256: String, orthogonalize: bool },
    /// The PCA of a sequence of checkpoints (sha256 of each, in order); the axes given, if any,
    /// else their extent from the path with a margin.
    Trajectory {
        checkpoints: Vec<String>,
        ignore: Ignore,
        x: Option<Axis>,
        y: Option<Axis>,
        margin: f64,
        points_per_axis: usize,
    },
    /// The models a sharpness run measures (sha256 of each, in order).
    Models { sha256: Vec<String> },
    /// A curve trained from the origin to another checkpoint, and how it was trained.
    Connect { to_sha256: String, training: CurveTraining },
}

/// How a `connect` curve is trained (part of the run's identity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CurveTraining {
    pub curve: CurveKind,
    pub epochs: usize,
    /// The initial learning rate (the schedule: space::curve::learning_rate).
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Samples per minibatch (the last one of an epoch may be smaller).
    pub batch_size: usize,
    /// Seeds each epoch's shuffle and t draws.
    pub seed: u64,
    /// Augmentation of the training minibatches (none in runs made before it existed).
    #[serde(default)]
    pub augment: crate::space::curve::Augment,
}

/// What determines a run's values: two runs with equal identities compute the same numbers (to
/// the rounding of the device and batch size), so tasks of one run may differ in anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    pub kind: RunKind,
    /// sha256 of the TorchScript model (the architecture the checkpoints are applied to).
    pub model_sha256: String,
    /// sha256 of the checkpoint at the origin, when it is not the model file itself.
    pub origin_sha256: Option<String>,
    pub data: DataIdentity,
    /// The grid as asked for; None when it is derived (a trajectory's extent).
    pub grid: Option<GridSpec>,
    pub source: Source,
    pub loss: LossKind,
    pub precision: Precision,
    pub loss_cap: Option<f64>,
    pub fold_batchnorm: bool,
    pub batchnorm: BatchNormMode,
    /// Training samples the BatchNorm statistics are re-estimated on (recompute only).
    pub bn_samples: Option<usize>,
    /// The Hessian's extreme eigenvalues at every point (`surface --curvature`).
    pub curvature: Option<CurvatureSpec>,
    pub columns: Vec<Quantity>,
    /// The dict entry of the model's output the loss is taken on, when one is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The data of the splits after the first, in order (`--split train,test`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_data: Vec<DataIdentity>,
    /// What a sharpness run measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpness: Option<SharpnessSpec>,
    /// `--rel-error`: the points' passes stop once their loss is known to E.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::options::Sampling>,
}

/// How a sharpness run measures (docs/landscape.md, *Sharpness and flatness*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessSpec {
    pub measures: Vec<crate::options::Measure>,
    /// ρ of the average and worst cases (one result per radius); PAC-Bayes takes none.
    pub radii: Vec<f64>,
    pub scale: crate::options::SharpnessScale,
    /// Added to |θ| by the adaptive scale.
    pub floor: f64,
    /// The worst case's ball.
    pub norm: crate::options::PNorm,
    /// Draws of the average case and of each PAC-Bayes level.
    pub samples: usize,
    /// Ascent steps per restart of the worst case.
    pub steps: usize,
    pub restarts: usize,
    /// Worst case over consecutive batches of this many samples, averaged (None: the whole set).
    pub m_sharpness: Option<usize>,
    /// PAC-Bayes: the bound on the increase, and of what.
    pub threshold: f64,
    pub quantity: crate::options::PacQuantity,
    pub seed: u64,
    /// The parameters perturbed (those the directions move).
    pub parameters: Ignore,
}

/// One point of a sharpness run: a measure (at a radius) of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessItem {
    /// Index into the plan's models.
    pub model: usize,
    pub measure: crate::options::Measure,
    pub radius: Option<f64>,
}

/// What every task of a sharpness run needs: the models (checkpoints of the plan's architecture,
/// or TorchScript files of it) and the measurements, one point each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessPlan {
    pub models: Vec<PathBuf>,
    pub items: Vec<SharpnessItem>,
    pub spec: SharpnessSpec,
}

/// What a measure found beyond its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SharpnessDetails {
    /// The Monte-Carlo draws' count is `samples`.
    Average,
    /// The loss at every point of the best restart's ascent (or of each part's, averaged, for
    /// m-sharpness: then each part's value), gradients taken, and the file of δ.
    Worst {
        trace: Vec<f64>,
        gradients: usize,
        parts: Option<Vec<f64>>,
        delta: Option<String>,
        /// ‖δ ⊘ c‖_p of the saved δ (≤ ρ up to rounding).
        constraint: Option<f64>,
    },
    /// σ*, 1/σ*², every σ tried with the mean increase there, and whether σ* is only a bound.
    Pacbayes { sigma: f64, flatness: f64, levels: Vec<[f64; 2]>, bracketed: bool, base: f64 },
}

/// One result of a sharpness run (a point's `items/<k>.json`, and a row of sharpness.json/.csv).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessResult {
    pub measure: crate::options::Measure,
    pub radius: Option<f64>,
    /// Average and worst case: the increase of the loss; PAC-Bayes: σ*.
    pub value: f64,
    /// Monte-Carlo standard error (average case, m-sharpness over parts, PAC-Bayes by the delta method).
    pub stderr: Option<f64>,
    /// 100 · value / (1 + L(θ)) (Keskar et al.'s normalization; None for PAC-Bayes).
    pub relative: Option<f64>,
    /// Draws (average, PAC-Bayes per level) or parts (m-sharpness).
    pub samples: usize,
    /// Ascent steps per restart (worst case).
    pub steps: usize,
    pub details: SharpnessDetails,
    /// `--rel-error`: the samples the random draws' passes used, against exact passes (average case
    /// and PAC-Bayes; the loss at θ and the worst case are exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<SampledUse>,
}

/// Samples used by passes estimated with `--rel-error`, and by the same passes done exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SampledUse {
    pub samples_used: u64,
    pub samples_exact: u64,
}

/// A model of a sharpness run with its own loss and its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessModel {
    pub path: PathBuf,
    pub sha256: String,
    pub loss: f64,
    /// None for regression.
    pub acc: Option<f64>,
    pub results: Vec<SharpnessResult>,
}

/// `items/<k>.json`: a point of a sharpness run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessPoint {
    pub item: SharpnessItem,
    /// L(θ) and accuracy of the model (None for regression).
    pub loss: f64,
    pub acc: Option<f64>,
    pub result: SharpnessResult,
}

/// `sharpness.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessReport {
    pub spec: SharpnessSpec,
    pub models: Vec<SharpnessModel>,
}

impl Identity {
    /// The run's name: the first 16 hex digits of the sha256 of its canonical JSON.
    pub fn hash(&self) -> String {
        let v = serde_json::to_vec(self).expect("an identity serializes");
        Sha256::digest(v).iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The first field (dotted path) where `self` and `other` differ: (field, self's, other's).
    pub fn first_difference(&self, other: &Identity) -> Option<(String, String, String)> {
        let (a, b) = (serde_json::to_value(self).ok()?, serde_json::to_value(other).ok()?);
        first_difference(&a, &b, "").map(|(k, x, y)| (k, x.to_string(), y.to_string()))
    }
}

/// The first key (dotted path) where two JSON values differ.
pub fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, Value, Value)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                first_difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &p)
            })
        }
        _ if a == b => None,
        _ => Some((at.to_string(), a.clone(), b.clone())),
    }
}

/// How the model's state moves with the grid coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Motion {
    /// origin + α·δ + β·η, with δ (`x.<name>`) and η (`y.<name>`) in the run directory's
    /// `directions.safetensors` (tensors it does not name stay at the origin).
    Affine,
    /// (1 − α)·origin + α·to, by `lerp`, over the parameters and floating-point buffers.
    Lerp { to: PathBuf },
    /// No grid: the model's state changes only to each checkpoint's (a sharpness run).
    Fixed,
    /// A curve from the origin (θ_A) through a bend to `to` (θ_B), and the straight line beside
    /// it: θ(t, β) = lerp(curve(t), line(t), β), so β = 0 is the curve and β = 1 the line, each
    /// exact at t = 0 and 1 (space::curve; the bend file, in the run directory, holds the
    /// parameters and floating-point buffers by name).
    Curve { to: PathBuf, bend: PathBuf, curve: CurveKind },
}

/// What every task of a run needs to evaluate its points (besides its own options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// TorchScript file of the model (the architecture that checkpoints are applied to).
    pub arch: PathBuf,
    /// Checkpoint whose state is the origin; None: the model's own values.
    pub origin: Option<PathBuf>,
    pub motion: Motion,
    /// None: no grid (a sharpness run).
    pub grid: Option<GridSpec>,
    /// Checkpoints evaluated as points after the grid's (each one's own loss).
    pub states: Vec<PathBuf>,
    pub columns: Vec<Quantity>,
    /// The Hessian's extreme eigenvalues at every grid point too.
    pub curvature: Option<CurvatureSpec>,
    /// A sharpness run's measurements, points after the states'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpness: Option<SharpnessPlan>,
}

impl Plan {
    /// Points of the grid (0 without one).
    pub fn grid_points(&self) -> usize {
        self.grid.map_or(0, |g| g.grid().len())
    }

    /// Points of the run: the grid's, then the checkpoint states', then the measurements.
    pub fn total_points(&self) -> usize {
        self.grid_points() + self.states.len() + self.sharpness.as_ref().map_or(0, |s| s.items.len())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelMeta {
    /// The TorchScript model file (the architecture, for runs between checkpoints).
    pub path: PathBuf,
    pub sha256: String,
    /// Number of parameter values.
    pub parameters: i64,
    pub parameter_tensors: usize,
    /// The checkpoint the grid is centred on, when it is not the model itself.
    pub origin: Option<PathBuf>,
    /// Tensors (parameters and buffers) that move with the grid coordinates; known once a task ran.
    pub moving_tensors: Option<usize>,
    /// The dict entry of the model's output the loss is taken on, when one is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataMeta {
    pub path: PathBuf,
    pub format: DataFormat,
    /// The split: CIFAR-10's training or test files, or X.npy / X_test.npy (None in runs made
    /// before .npy test splits).
    pub split: Option<Split>,
    /// Samples used.
    pub n: usize,
    /// Samples the source holds.
    pub available: usize,
    pub subset: String,
    pub sha256: String,
    pub targets: Targets,
    pub sample_shape: Vec<i64>,
    pub normalization: Option<Normalization>,
    /// Integer X: token ids, given to the model as int64.
    #[serde(default)]
    pub tokens: bool,
    /// Targets the loss and accuracy average over: the labels that are not -100 (class labels),
    /// or the samples (float targets).
    #[serde(default)]
    pub counted_targets: Option<usize>,
}

/// One split of a run over several (`--split train,test`): its data, its arrays and, once
/// merged, its loss range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SplitMeta {
    pub split: Split,
    pub data: DataMeta,
    /// `loss.<split>.npy`, `acc.<split>.npy`: the grid's values on this split.
    pub loss: String,
    pub acc: String,
    /// Trajectories: each checkpoint's own loss and accuracy on this split.
    pub path_loss: Option<String>,
    pub path_acc: Option<String>,
    /// Smallest and largest finite loss of the grid on this split (filled when merged).
    pub loss_min: Option<f32>,
    pub loss_max: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GridMeta {
    pub dims: u8,
    pub x: Axis,
    pub y: Option<Axis>,
    pub spacing: Spacing,
    /// Shape of the arrays: [ny, nx] or [nx].
    pub shape: Vec<u64>,
    /// What loss[j, i] is.
    pub layout: String,
    pub point: String,
}

/// The files of the run directory, by role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outputs {
    pub loss: String,
    pub acc: String,
    pub x: String,
    pub y: Option<String>,
    pub capped: Option<String>,
    pub directions: String,
    pub path: Option<String>,
    pub path_loss: Option<String>,
    pub path_acc: Option<String>,
}

/// How BatchNorm is treated at each point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchNormMeta {
    pub mode: BatchNormMode,
    /// recompute: training samples the statistics are estimated on (the first ones, in order).
    pub samples: Option<usize>,
    pub note: String,
}

/// The directions of a `surface` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DirectionsMeta {
    pub file: String,
    /// "random", or the file the directions were copied from.
    pub source: String,
    pub seed: Option<i64>,
    pub norm: Option<Norm>,
    pub ignore: Option<Ignore>,
    pub x_norm: f64,
    pub y_norm: Option<f64>,
    /// cos(δ, η).
    pub cos_xy: Option<f64>,
}

/// A checkpoint of a line, plane or trajectory: where it sits and its own loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StateMeta {
    pub path: PathBuf,
    /// Plane coordinates (least squares).
    pub coords: Option<[f64; 2]>,
    /// Its own loss and accuracy (filled when the run is merged).
    pub loss: Option<f64>,
    pub acc: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineMeta {
    pub from: StateMeta,
    pub to: StateMeta,
    pub arch: PathBuf,
    /// ‖θ_B − θ_A‖ over parameters and floating-point buffers.
    pub distance: f64,
    pub interpolated: String,
    pub direction_file: String,
    /// The barrier of the loss and of the error on each split (filled when the run is merged;
    /// empty before, and in runs made before barriers were recorded).
    #[serde(default)]
    pub barriers: Vec<SplitBarrier>,
}

/// A path's barriers on one split: max over t ∈ [0, 1] of v(t) − ((1 − t)·v(0) + t·v(1)) for the
/// loss and for the error (1 − accuracy), over the evaluated points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SplitBarrier {
    /// The split (the run's data's own, for a run over one split).
    pub split: Option<Split>,
    /// None when no evaluated point lies in [0, 1] or an end's value is not finite.
    pub loss: Option<Barrier>,
    /// None also where there is no accuracy (float targets).
    pub error: Option<Barrier>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlaneMeta {
    #[serde(rename = "A")]
    pub a: StateMeta,
    #[serde(rename = "B")]
    pub b: StateMeta,
    #[serde(rename = "C")]
    pub c: StateMeta,
    pub arch: PathBuf,
    pub orthogonalized: bool,
    pub dx: String,
    pub dy: String,
    pub x_norm: f64,
    pub y_norm: f64,
    pub cos_xy: f64,
    pub moved: String,
    /// `plane --curve RUN`: the connect run's curve through the plane's three models, drawn as a
    /// path (path.npy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<PlaneCurve>,
}

/// A trained curve on the plane of its two ends and its bend: θ(t) = w_A θ_A + w_bend θ_bend +
/// w_B θ_B is exactly w_A c_A + w_bend c_bend + w_B c_B in plane coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlaneCurve {
    /// The connect run directory.
    pub run: PathBuf,
    pub curve: CurveKind,
    /// Which of the plane's models (0 = A, 1 = B, 2 = C) is the bend.
    #[serde(default)]
    pub bend: usize,
    /// Plane coordinates of θ(t) at t = 0, 0.01, ..., 1.
    pub path: Vec<[f64; 2]>,
}

/// How the PCA was computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PcaMeta {
    pub memory_budget_mb: f64,
    pub checkpoints_per_block: usize,
    pub blocks: usize,
    pub checkpoint_reads: usize,
    pub seconds: f64,
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrajectoryMeta {
    pub checkpoints: Vec<PathBuf>,
    pub order: String,
    pub origin: PathBuf,
    pub arch: PathBuf,
    pub ignore: Ignore,
    pub vectors: String,
    pub explained_variance_ratio: Vec<f64>,
    pub explained_variance_ratio_top2: f64,
    /// [T][2]: least-squares coordinates of every checkpoint on the plane (also `path.npy`).
    pub path_coords: Vec<[f64; 2]>,
    pub path: String,
    pub path_loss: String,
    pub margin: f64,
    pub directions: String,
    pub pca: PcaMeta,
    /// `path_residual.npy`: each checkpoint's distance from the PCA plane over its distance from
    /// the origin (0 at the origin itself).
    #[serde(default)]
    pub path_residual: Option<String>,
    /// The largest of them.
    #[serde(default)]
    pub path_residual_max: Option<f64>,
    /// The largest distance of a checkpoint from the PCA plane over the largest distance of one
    /// from the origin: how far the drawn path may be from the real one, in units of its extent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_off_plane: Option<f64>,
}

/// A trajectory whose `path_off_plane` exceeds this is said (in the log and on the picture) to
/// leave its PCA plane: some checkpoint is a quarter of the path's extent off it.
pub const PATH_OFF_PLANE_NOTE: f64 = 0.25;

/// The part of meta.json known when the run is set up (kept in config.json until the merge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Description {
    pub tool: Tool,
    /// The command line of the task that set the run up.
    pub argv: Vec<String>,
    pub model: ModelMeta,
    pub data: DataMeta,
    pub loss: LossKind,
    /// None: no grid (a sharpness run).
    pub grid: Option<GridMeta>,
    pub outputs: Option<Outputs>,
    /// The device of the task that set the run up (every task's: `shards.tasks[].workers`).
    pub device: String,
    pub precision: Precision,
    pub dtype: String,
    pub tf32_convolutions: bool,
    pub libtorch_version: String,
    pub channels_last: bool,
    pub cudnn_benchmark: bool,
    pub batchnorm: BatchNormMeta,
    /// Several splits (`--split train,test`): each one's data and arrays, the first's also being
    /// `data`, `loss.npy` and `acc.npy`. Empty for a run over one split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitMeta>,
    /// `surface --curvature`: λmax and λmin of the Hessian at every point (eig_max.npy, eig_min.npy).
    pub curvature: Option<CurvatureSpec>,
    pub directions: Option<DirectionsMeta>,
    pub line: Option<LineMeta>,
    pub plane: Option<PlaneMeta>,
    pub trajectory: Option<TrajectoryMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpness: Option<SharpnessMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectMeta>,
}

/// meta.json's `connect`: the two models, the trained curve, its training and its barriers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectMeta {
    pub from: StateMeta,
    pub to: StateMeta,
    pub arch: PathBuf,
    pub curve: CurveKind,
    /// What θ(t) is.
    pub formula: String,
    /// The bend θ_bend by name (a state dict of the architecture).
    pub bend: String,
    /// What the bend holds besides its trained parameters.
    pub bend_buffers: String,
    pub training: TrainingRecord,
    /// The evaluation: t, and the curve's and the line's loss and accuracy at each (per split as
    /// `<name>.<split>.npy` for a run over several).
    pub t: String,
    pub curve_loss: String,
    pub curve_acc: String,
    pub line_loss: String,
    pub line_acc: String,
    /// Filled when the run is merged.
    #[serde(default)]
    pub curve_barriers: Vec<SplitBarrier>,
    #[serde(default)]
    pub line_barriers: Vec<SplitBarrier>,
}

/// How the bend was trained, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingRecord {
    pub spec: CurveTraining,
    pub schedule: String,
    pub method: String,
    /// The mean minibatch loss of each epoch.
    pub epoch_loss: Vec<f64>,
    /// Minibatches per epoch.
    pub batches: usize,
    /// Where each epoch's shuffle and t draws are recorded (progress.json: `t[epoch][batch]`).
    pub draws: String,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// meta.json's `sharpness`: what was measured and where the results are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpnessMeta {
    pub spec: SharpnessSpec,
    /// The models, in order (path, sha256).
    pub models: Vec<(PathBuf, String)>,
    pub results: String,
    pub table: String,
    /// Worst-case perturbations δ (`x.<param>`, over every parameter), one file per model and ρ.
    pub deltas: Vec<String>,
    /// What each measure is.
    pub definitions: Vec<(crate::options::Measure, String)>,
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunRecord {
    pub schema_version: u32,
    pub config_hash: String,
    pub identity: Identity,
    pub plan: Plan,
    pub description: Description,
}

impl RunRecord {
    pub fn new(identity: Identity, plan: Plan, description: Description) -> RunRecord {
        RunRecord { schema_version: SCHEMA_VERSION, config_hash: identity.hash(), identity, plan, description }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(crate::store::files::CONFIG)
    }

    pub fn read(dir: &Path) -> Result<RunRecord> {
        let r: RunRecord = read_json(&RunRecord::path(dir))?;
        // An edited config.json must not make the run allocate without bound.
        if let Some(g) = r.plan.grid {
            g.check().map_err(|e| Error::file(Role::RunFile, &RunRecord::path(dir), e.to_string()))?;
        }
        Ok(r)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&RunRecord::path(dir), self)
    }
}

/// The strict-fp32 reference at the grid's origin, for runs in another precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrecisionCheck {
    pub reference: String,
    pub center_loss_fp32: f64,
    pub center_loss: f64,
    pub abs_diff: f64,
    pub rel_diff: f64,
    pub center_acc_fp32: f64,
    pub center_acc: f64,
}

/// Whether the points were evaluated on a BatchNorm-folded frozen copy, and why not.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct FoldReport {
    pub requested: bool,
    pub active: bool,
    /// Floating-point constants of the frozen graph.
    pub constants: Option<usize>,
    /// Those that move with the grid coordinates.
    pub moving_constants: Option<usize>,
    /// The copy runs on oneDNN tensors (CPU).
    pub onednn: Option<bool>,
    pub note: Option<String>,
}

/// One worker of a task (a device, or a CPU thread).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerReport {
    pub device: String,
    /// The batch size in the end (halved on out-of-memory).
    pub batch_size: usize,
    pub points: usize,
    /// Seconds from its first point to its last.
    pub seconds: f64,
    /// Seconds spent moving the model to its points.
    pub perturb_seconds: f64,
    /// Seconds spent re-estimating BatchNorm statistics (`--batchnorm recompute`).
    pub batchnorm_seconds: f64,
    /// Seconds spent on Hessian eigenvalues (`surface --curvature`).
    pub curvature_seconds: f64,
    pub precision_check: Option<PrecisionCheck>,
    pub batchnorm_folding: FoldReport,
    pub moving_tensors: usize,
}

/// Seconds a task spent, summed over its sessions (a killed task resumed is several sessions).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ShardTiming {
    /// Loading model and data, preparing (precision check, folding, warm-up).
    pub setup_seconds: f64,
    /// From the first point to the last, per session (workers of a session overlap in it).
    pub eval_seconds: f64,
    /// Each worker's own evaluation seconds, summed over workers.
    pub worker_seconds: f64,
    /// Moving the model to its points, summed over workers.
    pub perturb_seconds: f64,
    /// Re-estimating BatchNorm statistics, summed over workers.
    pub batchnorm_seconds: f64,
    /// Hessian eigenvalues at the points, summed over workers.
    pub curvature_seconds: f64,
    /// Hessian-vector products those took.
    #[serde(default)]
    pub curvature_products: usize,
    /// Gradient passes over the data (sharpness ascent steps), and their seconds summed over workers.
    #[serde(default)]
    pub gradients: usize,
    #[serde(default)]
    pub gradient_seconds: f64,
}

impl std::ops::Add for ShardTiming {
    type Output = ShardTiming;
    fn add(self, o: ShardTiming) -> ShardTiming {
        ShardTiming {
            setup_seconds: self.setup_seconds + o.setup_seconds,
            eval_seconds: self.eval_seconds + o.eval_seconds,
            worker_seconds: self.worker_seconds + o.worker_seconds,
            perturb_seconds: self.perturb_seconds + o.perturb_seconds,
            batchnorm_seconds: self.batchnorm_seconds + o.batchnorm_seconds,
            curvature_seconds: self.curvature_seconds + o.curvature_seconds,
            curvature_products: self.curvature_products + o.curvature_products,
            gradients: self.gradients + o.gradients,
            gradient_seconds: self.gradient_seconds + o.gradient_seconds,
        }
    }
}

/// `shards/<shard>.json`: one task's progress (the values are in `shards/<shard>.npy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShardFile {
    pub config_hash: String,
    pub shard: Shard,
    /// Columns of `shards/<shard>.npy` after the point index (float32 bit patterns).
    pub columns: Vec<Quantity>,
    pub points_done: usize,
    pub points: usize,
    pub complete: bool,
    pub host: String,
    pub sessions: usize,
    pub timing: ShardTiming,
    /// The workers of its last session.
    pub workers: Vec<WorkerReport>,
    pub peak_host_rss_mb: Option<f64>,
}

/// meta.json's summary of the loss cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LossCapMeta {
    pub cap: f64,
    pub capped_points: usize,
    pub meaning: String,
}

/// Why points are not finite, when it can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NonFiniteMeta {
    pub points: usize,
    pub cause: Option<String>,
    pub hint: Option<String>,
}

/// One definition of each timing field, for every kind of run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timing {
    /// Loading and preparing, summed over tasks and sessions.
    pub setup_seconds: f64,
    /// Elapsed seconds of the evaluation loops (first point to last), summed over tasks and sessions.
    pub eval_seconds: f64,
    /// Evaluation seconds of every worker, summed.
    pub worker_seconds: f64,
    /// Points evaluated (grid and checkpoint states).
    pub points: usize,
    /// worker_seconds / points.
    pub seconds_per_point: f64,
    /// points × samples (of every split) / worker_seconds: one worker's throughput (sequences for
    /// token data: tokens per second are this × the sequence length).
    pub images_per_second: f64,
    pub perturb_seconds: f64,
    /// perturb_seconds / worker_seconds.
    pub perturb_fraction: f64,
    /// Re-estimating BatchNorm statistics, summed over workers (`--batchnorm recompute`).
    pub batchnorm_seconds: f64,
    /// Hessian eigenvalues at the points, summed over workers (`surface --curvature`).
    pub curvature_seconds: f64,
    /// Hessian-vector products those took, in all (each about 12 forward passes' work on a CPU).
    #[serde(default)]
    pub curvature_products: usize,
    /// Gradient passes over the data that sharpness measures took (each worst-case ascent step is
    /// one), and their seconds summed over workers: samples × gradients / gradient_seconds is
    /// one worker's ascent throughput.
    #[serde(default)]
    pub gradients: usize,
    #[serde(default)]
    pub gradient_seconds: f64,
}

impl Timing {
    pub fn of(t: ShardTiming, points: usize, samples: usize) -> Timing {
        let w = t.worker_seconds;
        Timing {
            setup_seconds: t.setup_seconds,
            eval_seconds: t.eval_seconds,
            worker_seconds: w,
            points,
            seconds_per_point: w / points.max(1) as f64,
            images_per_second: if w > 0.0 { (points * samples) as f64 / w } else { 0.0 },
            perturb_seconds: t.perturb_seconds,
            perturb_fraction: if w > 0.0 { t.perturb_seconds / w } else { 0.0 },
            batchnorm_seconds: t.batchnorm_seconds,
            curvature_seconds: t.curvature_seconds,
            curvature_products: t.curvature_products,
            gradients: t.gradients,
            gradient_seconds: t.gradient_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShardsMeta {
    pub count: usize,
    pub config_hash: String,
    pub missing_points: usize,
    pub note: Option<String>,
    pub tasks: Vec<ShardFile>,
}

/// `meta.json`: written last; a run directory with one is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Meta {
    pub schema_version: u32,
    pub kind: RunKind,
    pub config_hash: String,
    #[serde(flatten)]
    pub description: Description,
    /// Smallest and largest finite loss of the grid.
    pub loss_min: Option<f32>,
    pub loss_max: Option<f32>,
    pub nonfinite_points: usize,
    pub nonfinite: Option<NonFiniteMeta>,
    pub loss_cap: Option<LossCapMeta>,
    /// The batch size of the first task's first worker.
    pub batch_size: usize,
    pub precision_check: Option<PrecisionCheck>,
    pub batchnorm_folding: FoldReport,
    pub timing: Timing,
    /// The largest over tasks.
    pub peak_host_rss_mb: Option<f64>,
    pub shards: ShardsMeta,
    /// `--rel-error`: how the points were estimated and what it saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingMeta>,
}

/// meta.json's `sampling`: the estimate of every point's loss from part of the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SamplingMeta {
    #[serde(flatten)]
    pub spec: crate::options::Sampling,
    pub definition: String,
    pub stderr: String,
    pub samples: String,
    /// Samples used over the grid's points, against the grid's points × N of exact passes.
    pub samples_used: u64,
    pub samples_exact: u64,
    /// Grid points, and those whose pass ran to the end (exact).
    pub points: usize,
    pub complete_points: usize,
    /// A run over several splits: the same for each split (each with its own order, its own
    /// `stderr.<split>.npy` and `samples.<split>.npy`); the fields above are the first split's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitSampling>,
}

/// One split's share of a `--rel-error` run over several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SplitSampling {
    pub split: Split,
    pub stderr: String,
    pub samples: String,
    pub samples_used: u64,
    pub samples_exact: u64,
    pub complete_points: usize,
}

impl Meta {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(crate::store::files::META)
    }

    pub fn read(dir: &Path) -> Result<Meta> {
        let p = Meta::path(dir);
        let v: Value = read_json(&p)?;
        let version = v.get("schema_version").and_then(Value::as_u64);
        if version != Some(SCHEMA_VERSION as u64) {
            return Err(crate::error::Error::file(
                crate::error::Role::RunFile,
                &p,
                format!(
                    "schema_version {} is not {SCHEMA_VERSION}: written by another losscape version (re-run or re-merge it)",
                    version.map_or("missing".to_string(), |v| v.to_string())
                ),
            ));
        }
        serde_json::from_value(v).map_err(|e| {
            crate::error::Error::file(crate::error::Role::RunFile, &p, format!("not what losscape wrote: {e}"))
        })
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&Meta::path(dir), self)
    }
}

/// The Hessian at a run's origin, for `surface --curvature`: how each point's extreme
/// eigenvalues are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CurvatureSpec {
    /// Which parameters H is taken over (those the directions move).
    pub parameters: Ignore,
    /// The operator whose extreme eigenvalues are mapped (the Hessian unless named).
    #[serde(default, skip_serializing_if = "crate::options::Operator::is_hessian")]
    pub operator: crate::options::Operator,
    /// The tolerance of the eigenvalue test each of λmax and λmin passes (space::spectrum).
    pub tol: f64,
    pub max_steps: usize,
    pub seed: u64,
}

/// `kind` of a Hessian run's meta.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HessianKind {
    Hessian,
}

/// An eigenvalue, the residual of its unit eigenvector v and the test it passed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EigenvalueRecord {
    pub eigenvalue: f64,
    /// ‖Hv − λv‖ / max(|λ|, NEAR_ZERO × max|λ|) (NEAR_ZERO = 1e-3): what `tol` bounds.
    pub residual: f64,
    /// ‖Hv − λv‖: some eigenvalue of H lies within this distance of `eigenvalue`.
    pub residual_norm: f64,
    /// relative (‖Hv − λv‖ ≤ tol·|λ|), near-zero (|λ| < 1e-3·max|λ| and ‖Hv − λv‖ ≤
    /// tol·1e-3·max|λ|) or not-converged.
    pub test: crate::space::spectrum::Convergence,
}

/// Hutchinson's trace estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TraceRecord {
    pub estimate: f64,
    /// The sample standard error of the Hutchinson samples (for Hutch++ those of the part outside
    /// the sketch, conditional on it: the sketched part is exact).
    pub stderr: f64,
    pub matvecs: usize,
    /// hutchinson or hutch++.
    #[serde(default)]
    pub method: crate::options::TraceMethod,
    /// Hutch++: the vectors of the sketch (its part of the trace exact).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sketch: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl From<&crate::space::spectrum::Trace> for TraceRecord {
    fn from(t: &crate::space::spectrum::Trace) -> TraceRecord {
        TraceRecord { estimate: t.estimate, stderr: t.stderr, matvecs: t.matvecs, method: t.method, sketch: t.sketch }
    }
}

/// `hessian.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HessianReport {
    /// The operator the numbers are of: hessian, ggn or empirical-fisher.
    #[serde(default)]
    pub operator: crate::options::Operator,
    /// Largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest: Option<Vec<EigenvalueRecord>>,
    /// Smallest (most negative) first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smallest: Option<Vec<EigenvalueRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceRecord>,
    /// Parameters (entries) H is taken over.
    pub n_params: i64,
    /// Hessian-vector products in all.
    pub hvp_count: usize,
    /// Passes over the data they took (independent products share one).
    #[serde(default)]
    pub passes: usize,
    /// How the products took J·v (Gauss-Newton and empirical Fisher only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jvp: Option<crate::options::Jvp>,
    /// BatchNorm layers folded into the layer before them in the module the products run.
    #[serde(default)]
    pub batchnorm_folded: usize,
    pub seconds: f64,
    /// The loss at the point (dataset mean).
    pub loss: f64,
    pub lanczos_steps: usize,
    /// Every reported residual is within the tolerance.
    pub converged: bool,
    /// With --per-layer: each diagonal block of the set, in model order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<LayerRecord>>,
}

/// One diagonal block of a per-layer analysis (a parameter tensor, or a module's tensors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LayerRecord {
    /// The tensor's name, or the module's.
    pub name: String,
    /// Its parameter tensors, in model order.
    pub tensors: Vec<String>,
    pub n_params: i64,
    /// The block's largest eigenvalue (with its residual and test), if eigenvalues were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest: Option<EigenvalueRecord>,
    /// The block's smallest eigenvalue, with --which smallest or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallest: Option<EigenvalueRecord>,
    /// The block's trace from the whole set's trace probes: estimate and standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<BlockTrace>,
    /// Products of the block's own operator (its eigenvalues).
    pub products: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BlockTrace {
    pub estimate: f64,
    pub stderr: f64,
}

/// The operator of a Hessian run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HessianOperator {
    /// hessian, ggn or empirical-fisher.
    #[serde(default)]
    pub kind: crate::options::Operator,
    /// biasbn: parameters with more than one dimension; keep: all.
    pub parameters: Ignore,
    pub n_params: i64,
    pub parameter_tensors: usize,
    /// --params: the anchored regular expressions on parameter names that chose the set (within
    /// `parameters`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// --per-layer: the blocks (tensor or module) analysed one by one as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<crate::options::PerLayer>,
    pub batch_size: usize,
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LanczosMeta {
    pub k: usize,
    pub which: crate::options::Which,
    pub tol: f64,
    pub max_steps: usize,
    pub seed: u64,
    pub steps: usize,
    pub converged: bool,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DensityMeta {
    pub runs: usize,
    pub steps: usize,
    pub bins: usize,
    /// Gaussian variance = sigma2 × max(1, range of the Ritz values).
    pub sigma2: f64,
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HessianTiming {
    pub setup_seconds: f64,
    pub seconds: f64,
    pub products: usize,
    /// Passes over the data (products of a block share one).
    #[serde(default)]
    pub passes: usize,
    pub seconds_per_product: f64,
    /// products × samples / seconds.
    pub images_per_second: f64,
}

/// `meta.json` of a `hessian` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HessianMeta {
    pub schema_version: u32,
    pub kind: HessianKind,
    pub tool: Tool,
    pub argv: Vec<String>,
    pub model: ModelMeta,
    pub data: DataMeta,
    pub loss: LossKind,
    pub device: String,
    pub precision: Precision,
    pub dtype: String,
    pub libtorch_version: String,
    pub channels_last: bool,
    pub operator: HessianOperator,
    pub lanczos: Option<LanczosMeta>,
    pub trace: Option<TraceRecord>,
    pub density: Option<DensityMeta>,
    /// `hessian.json`, `eigenvectors.safetensors`, `directions.safetensors`, `density.npy`.
    pub files: Vec<String>,
    pub timing: HessianTiming,
    pub peak_host_rss_mb: Option<f64>,
}

impl HessianMeta {
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&Meta::path(dir), self)
    }
}

/// Any run's meta.json: a grid run's or a Hessian run's (told apart by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AnyMeta {
    Grid(Box<Meta>),
    Hessian(Box<HessianMeta>),
}

impl AnyMeta {
    /// Read a run's meta.json, whatever its kind.
    pub fn read(dir: &Path) -> Result<AnyMeta> {
        let p = Meta::path(dir);
        let v: Value = read_json(&p)?;
        if v.get("kind").and_then(Value::as_str) == Some("hessian") {
            serde_json::from_value(v).map(|m| AnyMeta::Hessian(Box::new(m))).map_err(|e| {
                crate::error::Error::file(crate::error::Role::RunFile, &p, format!("not what losscape wrote: {e}"))
            })
        } else {
            Meta::read(dir).map(|m| AnyMeta::Grid(Box::new(m)))
        }
    }
}

/// The JSON Schema of meta.json, every kind (committed as docs/meta.schema.json).
pub fn meta_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(AnyMeta)).expect("a schema serializes")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn identity() -> Identity {
        Identity {
            kind: RunKind::Surface,
            model_sha256: "ab".into(),
            origin_sha256: None,
            data: DataIdentity { sha256: "cd".into(), n: 60, normalization: None },
            grid: Some(GridSpec { x: "-1:1:5".parse().unwrap(), y: None, spacing: Spacing::Linear }),
            source: Source::Random { seed: 0, norm: Norm::Filter, ignore: Ignore::Biasbn },
            loss: LossKind::Ce,
            precision: Precision::Fp32,
            loss_cap: None,
            fold_batchnorm: true,
            batchnorm: BatchNormMode::Eval,
            bn_samples: None,
            curvature: None,
            columns: vec![Quantity::Loss, Quantity::Acc],
            output: None,
            more_data: vec![],
            sharpness: None,
            sampling: None,
        }
    }

    #[test]
    fn runs_over_one_split_keep_their_names_and_several_splits_round_trip() {
        // Fields added for outputs and splits are left out when unused, so earlier runs keep their hash.
        let a = identity();
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("output") && !text.contains("more_data"), "{text}");
        let mut b = a.clone();
        b.more_data.push(DataIdentity { sha256: "ef".into(), n: 20, normalization: None });
        b.columns.extend([Quantity::SplitLoss(Split::Train), Quantity::SplitAcc(Split::Test)]);
        b.output = Some("scores".into());
        assert_ne!(a.hash(), b.hash());
        let back: Identity = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
        assert_eq!(Quantity::SplitLoss(Split::Test).file(), "loss.test.npy");
        assert_eq!(Quantity::SplitAcc(Split::Train).file(), "acc.train.npy");
        let old: Identity = serde_json::from_str(&text).unwrap();
        assert_eq!(old.hash(), a.hash());
    }

    #[test]
    fn the_hash_names_the_identity_and_differences_are_named_by_field() {
        let a = identity();
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 16);
        b.grid.as_mut().unwrap().x.n = 7;
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.first_difference(&b), Some(("grid.x.n".into(), "5".into(), "7".into())));
        let mut c = a.clone();
        c.source = Source::File { sha256: "ff".into() };
        let (field, _, _) = a.first_difference(&c).unwrap();
        assert!(field.starts_with("source."), "{field}");
        assert_eq!(a.first_difference(&a.clone()), None);
    }

    #[test]
    fn identities_round_trip_through_json() {
        let a = identity();
        let text = serde_json::to_string(&a).unwrap();
        let b: Identity = serde_json::from_str(&text).unwrap();
        assert_eq!(a, b);
        assert!(text.contains("\"from\":\"random\""), "{text}");
    }

    #[test]
    fn timing_fields_follow_their_definitions() {
        let t = ShardTiming {
            setup_seconds: 1.0,
            eval_seconds: 2.0,
            worker_seconds: 4.0,
            perturb_seconds: 0.4,
            gradients: 3,
            gradient_seconds: 1.5,
            ..Default::default()
        };
        let s = t + t;
        assert_eq!(s.worker_seconds, 8.0);
        assert_eq!((s.gradients, s.gradient_seconds), (6, 3.0));
        let m = Timing::of(s, 16, 100);
        assert_eq!(m.seconds_per_point, 0.5);
        assert_eq!(m.images_per_second, 200.0);
        assert!((m.perturb_fraction - 0.1).abs() < 1e-12);
        assert_eq!((m.gradients, m.gradient_seconds), (6, 3.0));
        assert_eq!(Timing::of(ShardTiming::default(), 0, 10).images_per_second, 0.0);
    }

    use proptest::prelude::*;

    /// A complete, valid record (a tiny surface run). Long: one struct literal with every field of
    /// a record written out, which is the point of it.
    pub fn record() -> RunRecord {
        let id = identity();
        let grid = id.grid.unwrap();
        let data = DataMeta {
            path: "d".into(),
            format: DataFormat::Npy,
            split: None,
            n: 60,
            available: 60,
            subset: "first".into(),
            sha256: "cd".into(),
            targets: Targets::Classes,
            sample_shape: vec![3, 32, 32],
            normalization: None,
            tokens: false,
            counted_targets: Some(60),
        };
        let split = |split: Split| SplitMeta {
            split,
            data: data.clone(),
            loss: format!("loss.{split}.npy"),
            acc: format!("acc.{split}.npy"),
            path_loss: None,
            path_acc: None,
            loss_min: Some(0.5),
            loss_max: None,
        };
        let d = Description {
            tool: Tool { name: "losscape".into(), version: "0".into() },
            argv: vec![],
            model: ModelMeta {
                path: "m.pt".into(),
                sha256: "ab".into(),
                parameters: 10,
                parameter_tensors: 2,
                origin: None,
                moving_tensors: None,
                output: None,
            },
            data: data.clone(),
            loss: LossKind::Ce,
            grid: Some(GridMeta {
                dims: 1,
                x: grid.x,
                y: None,
                spacing: grid.spacing,
                shape: vec![5],
                layout: "l".into(),
                point: "p".into(),
            }),
            outputs: Some(Outputs {
                loss: "loss.npy".into(),
                acc: "acc.npy".into(),
                x: "x.npy".into(),
                y: None,
                capped: None,
                directions: "directions.safetensors".into(),
                path: None,
                path_loss: None,
                path_acc: None,
            }),
            device: "cpu".into(),
            precision: Precision::Fp32,
            dtype: "float32".into(),
            tf32_convolutions: false,
            libtorch_version: "2.11.0".into(),
            channels_last: true,
            cudnn_benchmark: false,
            batchnorm: BatchNormMeta { mode: BatchNormMode::Eval, samples: None, note: "n".into() },
            splits: vec![split(Split::Train), split(Split::Test)],
            curvature: None,
            directions: None,
            line: None,
            plane: None,
            trajectory: None,
            sharpness: None,
            connect: None,
        };
        let plan = Plan {
            arch: "m.pt".into(),
            origin: None,
            motion: Motion::Affine,
            grid: Some(grid),
            sharpness: None,
            states: vec![],
            columns: id.columns.clone(),
            curvature: None,
        };
        RunRecord::new(id, plan, d)
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "losscape-record-{}-{tag}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    proptest! {
        #[test]
        fn arbitrary_config_json_is_read_or_refused_in_one_line(text in "\\PC{0,300}") {
            let d = scratch("text");
            std::fs::write(d.join("config.json"), &text).unwrap();
            if let Err(e) = RunRecord::read(&d) {
                prop_assert!(!e.to_string().contains('\n'));
            }
            std::fs::write(d.join("meta.json"), &text).unwrap();
            if let Err(e) = AnyMeta::read(&d) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn an_identity_with_a_field_replaced_is_read_or_refused_cleanly(key in 0usize..13, value in prop_oneof![
            Just(serde_json::json!(null)), Just(serde_json::json!(-1)), Just(serde_json::json!("x")),
            Just(serde_json::json!([1, 2])), Just(serde_json::json!({"a": 1})), Just(serde_json::json!(1e308))
        ]) {
            let mut v = serde_json::to_value(record()).unwrap();
            let keys: Vec<String> = v["identity"].as_object().unwrap().keys().cloned().collect();
            let k = keys[key % keys.len()].clone();
            let before = v["identity"][&k].clone();
            v["identity"][&k] = value.clone();
            let d = scratch("identity");
            std::fs::write(d.join("config.json"), v.to_string()).unwrap();
            match RunRecord::read(&d) {
                // Only a value that reads back as the field's type may pass, and it reads as given.
                Ok(r) => {
                    let back = serde_json::to_value(&r.identity).unwrap()[&k].clone();
                    let same = back == value || back.as_f64().zip(value.as_f64()).is_some_and(|(a, b)| a == b);
                    prop_assert!(same, "{} was {}, set {}, read back {}", k, before, value, back);
                }
                Err(e) => prop_assert!(!e.to_string().contains('\n')),
            }
        }
    }

    #[test]
    fn a_record_round_trips_through_config_json() {
        let d = scratch("roundtrip");
        let r = record();
        r.write(&d).unwrap();
        assert_eq!(RunRecord::read(&d).unwrap(), r);
    }

    #[test]
    fn the_committed_schema_is_the_schema_of_the_types() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/meta.schema.json");
        let now = serde_json::to_string_pretty(&meta_schema()).unwrap() + "\n";
        if std::env::var_os("LOSSCAPE_BLESS").is_some() {
            std::fs::write(&path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == now,
            "docs/meta.schema.json is out of date: run `LOSSCAPE_BLESS=1 cargo test --lib schema` and commit it"
        );
    }
}
