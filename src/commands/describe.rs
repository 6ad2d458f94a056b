//! The parts of a run's identity and description that every command fills the same way, from the
//! probe session (the model and data as the first task loaded them).

use std::path::PathBuf;

use crate::engine::device;
use crate::engine::evaluate::Evaluator;
use crate::engine::hessian::{Analysis, Hessian, Request};
use crate::engine::session::{peak_rss_mb, Session, Setup};
use crate::inputs::data::{Dataset, Targets};
use crate::options::{BatchNormMode, EigenMethod, Ignore, Operator, Precision};
use crate::space::grid::GridSpec;
use crate::store::record::{
    BatchNormMeta, CurvatureSpec, DataIdentity, DataMeta, DensityMeta, Description, GridMeta, HessianKind, HessianMeta,
    HessianOperator, HessianTiming, Identity, LanczosMeta, ModelMeta, Outputs, PcaMeta, Quantity, RunKind, Source,
    SplitMeta, Tool, TraceRecord, TrajectoryMeta, SCHEMA_VERSION,
};

/// The values evaluated at every point of a run of `kind` with these options.
pub fn columns(kind: RunKind, setup: &Setup, curvature: bool) -> Vec<Quantity> {
    let mut c = vec![Quantity::Loss, Quantity::Acc];
    if kind == RunKind::Sharpness {
        c.push(Quantity::Sharpness);
    }
    if curvature {
        c.extend([Quantity::EigMax, Quantity::EigMin]);
    }
    if setup.loss_cap.is_some() {
        c.push(Quantity::Capped);
    }
    // (A sharpness run records its draws' samples in each measurement instead.)
    if setup.sampling.is_some() && kind != RunKind::Sharpness {
        c.extend([Quantity::Stderr, Quantity::Samples]);
    }
    // Lines and planes interpolate BatchNorm statistics: watch for negative variances.
    if setup.batchnorm == BatchNormMode::Eval && matches!(kind, RunKind::Line | RunKind::Plane | RunKind::Connect) {
        c.push(Quantity::NegativeVariance);
    }
    // Several splits: each one's loss and accuracy (the first's also in loss/acc).
    let splits = setup.splits();
    if splits.len() > 1 {
        for s in splits {
            c.extend([Quantity::SplitLoss(s), Quantity::SplitAcc(s)]);
            if setup.sampling.is_some() {
                c.extend([Quantity::SplitStderr(s), Quantity::SplitSamples(s)]);
            }
        }
    }
    c
}

fn data_identity(d: &Dataset) -> DataIdentity {
    DataIdentity { sha256: d.sha256().to_string(), n: d.n, normalization: d.normalization.clone() }
}

/// The identity of a run of `kind` on the probe's model and data.
pub fn identity(
    kind: RunKind,
    s: &Session,
    ev: &Evaluator,
    origin_sha256: Option<String>,
    grid: Option<GridSpec>,
    source: Source,
    curvature: Option<CurvatureSpec>,
) -> Identity {
    let setup = &s.setup;
    Identity {
        kind,
        model_sha256: s.model.sha256.clone(),
        origin_sha256,
        data: data_identity(&s.data),
        grid,
        source,
        loss: ev.loss,
        precision: s.precision,
        loss_cap: setup.loss_cap,
        fold_batchnorm: setup.fold_batchnorm,
        batchnorm: setup.batchnorm,
        bn_samples: (setup.batchnorm == BatchNormMode::Recompute).then_some(setup.bn_samples),
        curvature,
        columns: columns(kind, setup, curvature.is_some()),
        output: setup.output.clone(),
        more_data: s.more.iter().map(data_identity).collect(),
        sharpness: None,
        sampling: setup.sampling,
    }
}

pub fn tool() -> Tool {
    Tool { name: "losscape".into(), version: env!("CARGO_PKG_VERSION").into() }
}

/// meta.json's `model` for the probe's model.
pub fn model_meta(s: &Session) -> ModelMeta {
    ModelMeta {
        path: s.model.path.clone(),
        sha256: s.model.sha256.clone(),
        parameters: s.model.num_params(),
        parameter_tensors: s.model.params.len(),
        origin: None,
        moving_tensors: None,
        output: s.model.output.clone(),
    }
}

/// meta.json's `data` for the probe's data.
pub fn data_meta(s: &Session) -> DataMeta {
    dataset_meta(&s.data)
}

/// meta.json's record of one dataset.
pub fn dataset_meta(data: &Dataset) -> DataMeta {
    DataMeta {
        path: data.path.clone(),
        format: data.format,
        split: data.split,
        n: data.n,
        available: data.available,
        subset: "first n samples in file order".into(),
        sha256: data.sha256().to_string(),
        targets: data.targets,
        sample_shape: data.sample_shape(),
        normalization: data.normalization.clone(),
        tokens: data.tokens(),
        counted_targets: (data.targets == Targets::Classes).then_some(data.counted),
    }
}

/// meta.json's `splits` of a run over several splits (empty for one); a trajectory adds its
/// per-split path files.
fn splits_meta(s: &Session) -> Vec<SplitMeta> {
    if s.more.is_empty() {
        return Vec::new();
    }
    std::iter::once(&s.data)
        .chain(&s.more)
        .map(|d| {
            let split = d.split.unwrap_or_default();
            SplitMeta {
                split,
                data: dataset_meta(d),
                loss: Quantity::SplitLoss(split).file(),
                acc: Quantity::SplitAcc(split).file(),
                path_loss: None,
                path_acc: None,
                loss_min: None,
                loss_max: None,
            }
        })
        .collect()
}

/// The common part of meta.json: tool, model, data, grid, device and precision. `layout` says
/// what loss[j, i] is; `point` how a point is formed.
pub fn description(
    s: &Session,
    ev: &Evaluator,
    grid: &GridSpec,
    layout: &str,
    point: &str,
    argv: &[String],
) -> Description {
    let two = grid.y.is_some();
    let g = grid.grid();
    let setup = &s.setup;
    let mut d = base_description(s, ev, argv);
    d.grid = Some(GridMeta {
        dims: if two { 2 } else { 1 },
        x: grid.x,
        y: grid.y,
        spacing: grid.spacing,
        shape: g.shape(),
        layout: layout.into(),
        point: point.into(),
    });
    d.outputs = Some(Outputs {
        loss: "loss.npy".into(),
        acc: "acc.npy".into(),
        x: crate::store::files::X.into(),
        y: two.then(|| crate::store::files::Y.into()),
        capped: setup.loss_cap.map(|_| "capped.npy".into()),
        directions: crate::store::files::DIRECTIONS.into(),
        path: None,
        path_loss: None,
        path_acc: None,
    });
    d
}

/// The part of meta.json every run has, grid or not: tool, model, data, device, precision,
/// BatchNorm, splits.
pub fn base_description(s: &Session, ev: &Evaluator, argv: &[String]) -> Description {
    let setup = &s.setup;
    Description {
        tool: tool(),
        argv: argv.to_vec(),
        model: model_meta(s),
        data: data_meta(s),
        loss: ev.loss,
        grid: None,
        outputs: None,
        device: device::name(s.dev),
        precision: s.precision,
        dtype: s.precision.dtype_name().into(),
        tf32_convolutions: s.dev.is_cuda() && s.precision != Precision::Fp32,
        libtorch_version: env!("LOSSCAPE_LIBTORCH_VERSION").into(),
        channels_last: setup.channels_last,
        cudnn_benchmark: s.dev.is_cuda() && setup.cudnn_benchmark,
        batchnorm: BatchNormMeta {
            mode: setup.batchnorm,
            samples: s.bn_data.as_ref().map(|b| b.n),
            note: match setup.batchnorm {
                BatchNormMode::Eval => "eval mode with the running statistics as stored (interpolated with the \
                                         checkpoints for line and plane runs)"
                    .into(),
                BatchNormMode::Recompute => "running statistics re-estimated at every point on the first training \
                                              samples in the run's batches (torch.optim.swa_utils.update_bn), then \
                                              eval mode"
                    .into(),
            },
        },
        splits: splits_meta(s),
        curvature: None,
        directions: None,
        line: None,
        plane: None,
        trajectory: None,
        sharpness: None,
        connect: None,
    }
}

/// What loss[j, i] is, for a 1-D or 2-D grid whose point is `point(x, y)`.
pub fn layout(two: bool, point: &str) -> String {
    if two {
        format!("loss[j, i] = L({point}) with x = x[i], y = y[j]: rows are y, columns are x (meshgrid 'xy')")
    } else {
        format!("loss[i] = L({point}) with x = x[i]")
    }
}

/// What a `hessian` run's meta.json is made from.
pub struct HessianRun<'a> {
    pub session: &'a Session,
    pub hessian: &'a Hessian<'a>,
    pub analysis: &'a Analysis,
    pub request: &'a Request,
    pub ignore: Ignore,
    /// --params' patterns (empty: none).
    pub params: Vec<String>,
    /// The checkpoint the model was moved to (with an architecture), if any.
    pub origin: Option<PathBuf>,
    pub argv: &'a [String],
    pub precision: Precision,
    pub channels_last: bool,
    pub files: Vec<String>,
    pub setup_seconds: f64,
    pub density: Option<DensityMeta>,
}

/// What a curvature operator is and how its products are taken, for meta.json.
fn operator_definition(op: Operator) -> &'static str {
    match op {
        Operator::Hessian => {
            "H = Hessian of the dataset-mean loss (sum over targets / N) with respect to the parameters in the set, \
             BatchNorm in eval mode; Hv by double backward, summed over batches"
        }
        Operator::Ggn => {
            "G = (1/N) sum_i J_i^T H_i J_i, J_i the Jacobian of sample i's outputs with respect to the parameters in \
             the set, H_i the Hessian of its loss in the outputs (softmax cross-entropy: diag(p) - p p^T per label; \
             squared error: 2I, N counting every output), BatchNorm in eval mode; Jv by the double-backward trick, \
             J^T by one backward, summed over batches"
        }
        Operator::EmpiricalFisher => {
            "EF = (1/N) sum_i g_i g_i^T, g_i the gradient of target i's loss at its label (a label per row for \
             cross-entropy; a sample's squared error summed over its outputs, N counting every output), BatchNorm \
             in eval mode; the g_i . v by the double-backward trick, then one backward of sum_i (g_i . v) loss_i"
        }
    }
}

/// A `hessian` run's meta.json.
pub fn hessian_meta(r: &HessianRun) -> HessianMeta {
    let (s, h, a) = (r.session, r.hessian, r.analysis);
    let mut model = model_meta(s);
    model.origin = r.origin.clone();
    model.moving_tensors = Some(h.names().len());
    HessianMeta {
        schema_version: SCHEMA_VERSION,
        kind: HessianKind::Hessian,
        tool: tool(),
        argv: r.argv.to_vec(),
        model,
        data: data_meta(s),
        loss: h.loss_kind(),
        device: device::name(s.dev),
        precision: r.precision,
        dtype: r.precision.dtype_name().into(),
        libtorch_version: env!("LOSSCAPE_LIBTORCH_VERSION").into(),
        channels_last: r.channels_last,
        operator: HessianOperator {
            kind: h.operator(),
            parameters: r.ignore,
            n_params: h.dim(),
            parameter_tensors: h.names().len(),
            params: r.params.clone(),
            per_layer: r.request.per_layer,
            batch_size: h.batch_size,
            definition: operator_definition(h.operator()).into(),
        },
        lanczos: r.request.lanczos.zip(a.extremes.as_ref()).map(|(o, e)| LanczosMeta {
            k: o.k,
            which: o.which,
            tol: o.tol,
            max_steps: o.max_steps,
            seed: o.seed,
            steps: e.steps,
            converged: e.converged,
            method: match r.request.method {
                EigenMethod::Lanczos => "Lanczos with full reorthogonalization (twice per step) from a seeded \
                                         Rademacher start; a pair is accepted in a Krylov space of at least \
                                         max(2K+1, 20) vectors once its residual, computed with one product, is \
                                         within tol of |λ| (of 1e-3 max|λ| for λ ≈ 0)"
                    .into(),
                EigenMethod::Power => "power iteration from a seeded Rademacher start, stopping on the residual \
                                       of the current vector relative to |λ| (largest |λ| only)"
                    .into(),
            },
        }),
        trace: a.trace.as_ref().map(TraceRecord::from),
        density: r.density.clone(),
        files: r.files.clone(),
        timing: HessianTiming {
            setup_seconds: r.setup_seconds,
            seconds: a.seconds,
            products: a.products,
            passes: a.passes,
            seconds_per_product: a.seconds / a.products.max(1) as f64,
            images_per_second: (a.products * s.data.n) as f64 / a.seconds.max(1e-12),
        },
        peak_host_rss_mb: peak_rss_mb(),
    }
}

/// A trajectory run's arrays beside the grid's: the path, each checkpoint's own loss and accuracy
/// (per split).
pub fn trajectory_outputs(d: &mut Description) {
    for sp in d.splits.iter_mut() {
        sp.path_loss = Some(crate::store::files::per_split(crate::store::files::PATH_LOSS, sp.split));
        sp.path_acc = Some(crate::store::files::per_split(crate::store::files::PATH_ACC, sp.split));
    }
    if let Some(o) = d.outputs.as_mut() {
        o.path = Some(crate::store::files::PATH.into());
        o.path_loss = Some(crate::store::files::PATH_LOSS.into());
        o.path_acc = Some(crate::store::files::PATH_ACC.into());
    }
}

/// What a trajectory's meta.json section is made from.
pub struct TrajectoryRun<'a> {
    pub checkpoints: &'a [PathBuf],
    pub origin: &'a std::path::Path,
    pub arch: &'a std::path::Path,
    pub ignore: Ignore,
    pub margin: f64,
    pub pca_memory_mb: f64,
    pub pca: &'a crate::space::pca::Pca,
    /// Seconds the PCA took, and where.
    pub seconds: f64,
    pub device: tch::Device,
}

/// meta.json's `trajectory`.
pub fn trajectory_meta(r: TrajectoryRun) -> TrajectoryMeta {
    let pc = r.pca;
    let ratio = |k: usize| pc.explained_variance_ratio.get(k).copied().unwrap_or(0.0);
    TrajectoryMeta {
        checkpoints: r.checkpoints.to_vec(),
        order: "natural sort of the file names".into(),
        origin: r.origin.to_path_buf(),
        arch: r.arch.to_path_buf(),
        ignore: r.ignore,
        vectors: "m_i = theta_i - theta_origin over the parameters (biasbn: dim <= 1 left out); PCA mean-centred, \
                  via the T x T Gram matrix accumulated in blocks"
            .into(),
        explained_variance_ratio: pc.explained_variance_ratio.iter().take(10).copied().collect(),
        explained_variance_ratio_top2: ratio(0) + ratio(1),
        path_coords: pc.coords.clone(),
        path: "path.npy [T, 2]: least-squares coordinates of every m_i on (pc1, pc2)".into(),
        path_loss: "path_loss.npy [T]: each checkpoint's own loss (parameters and BatchNorm statistics as saved)"
            .into(),
        margin: r.margin,
        directions: "directions.safetensors: x.<param> = pc1, y.<param> = pc2 (unit vectors, not filter-normalized)"
            .into(),
        pca: PcaMeta {
            memory_budget_mb: r.pca_memory_mb,
            checkpoints_per_block: pc.blocks.per_block,
            blocks: pc.blocks.blocks,
            checkpoint_reads: pc.blocks.reads,
            seconds: r.seconds,
            device: device::name(r.device),
        },
        path_residual: Some(
            "path_residual.npy [T]: each checkpoint's distance from the PCA plane over its distance from the \
             origin (0 at the origin)"
                .into(),
        ),
        path_residual_max: Some(pc.residuals.iter().copied().fold(0.0, f64::max)),
        path_off_plane: Some(pc.off_plane),
    }
}

/// meta.json's `connect` for a trained curve (the barriers are filled by the merge).
pub fn connect_meta(
    from: &std::path::Path,
    to: &std::path::Path,
    arch: PathBuf,
    training: crate::store::record::CurveTraining,
    p: &crate::store::connect::TrainProgress,
    samples: usize,
) -> crate::store::record::ConnectMeta {
    use crate::store::files;
    let state = |p: &std::path::Path| crate::store::record::StateMeta {
        path: p.to_path_buf(),
        coords: None,
        loss: None,
        acc: None,
    };
    let seconds: f64 = p.seconds.iter().sum();
    crate::store::record::ConnectMeta {
        from: state(from),
        to: state(to),
        arch,
        curve: training.curve,
        formula: training.curve.formula().into(),
        bend: files::BEND.into(),
        bend_buffers: "the trained parameters; floating-point buffers (BatchNorm statistics) at the midpoint of \
                       A's and B's, re-estimated at every point with batchnorm recompute"
            .into(),
        training: crate::store::record::TrainingRecord {
            spec: training,
            schedule: "lr for the first half of the epochs, then linear decay to lr/100 at 90%, lr/100 after \
                       (Garipov et al.)"
                .into(),
            method: "per minibatch of a seeded shuffle of the training split: t ~ U(0, 1), the model set to \
                     theta(t), the minibatch mean loss with BatchNorm in training mode, its gradient times \
                     d theta(t)/d theta_bend to the bend; SGD with momentum and weight decay \
                     (torch.optim.SGD) on the bend"
                .into(),
            epoch_loss: p.epoch_loss.clone(),
            batches: crate::engine::connect::batches(samples, training.batch_size),
            draws: format!("{}/{} (t[epoch][minibatch])", files::TRAIN, files::TRAIN_PROGRESS),
            seconds,
            images_per_second: (p.epochs_done * samples) as f64 / seconds.max(1e-12),
        },
        t: files::T.into(),
        curve_loss: files::CURVE_LOSS.into(),
        curve_acc: files::CURVE_ACC.into(),
        line_loss: files::LINE_LOSS.into(),
        line_acc: files::LINE_ACC.into(),
        curve_barriers: Vec::new(),
        line_barriers: Vec::new(),
    }
}
