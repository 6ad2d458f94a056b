//! `connect`: a curve trained between two models (Garipov et al., 2018; engine::connect), then
//! evaluated with the straight line beside it at `points` values of t through the sweep (shards,
//! resume, merge): the sweep's grid is (t, β) with β = 0 the curve and β = 1 the line
//! (`Motion::Curve`). The training is one task: the first task of the run does it while it sets
//! the run up (under the setup lock; resumed from its last saved epoch after a kill).

use std::path::{Path, PathBuf};

use crate::commands::describe;
use crate::commands::line::{arch_of, difference, distinct};
use crate::commands::run::{self, Establish, Outcome, Task};
use crate::engine::batchnorm::Recompute;
use crate::engine::connect::{self as train, TrainObserver, Trainer};
use crate::engine::evaluate::Evaluator;
use crate::engine::session::{Session, Setup};
use crate::engine::sweep::Observer;
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::State;
use crate::inputs::model::sha256_file;
use crate::options::{BatchNormMode, Split};
use crate::space::grid::{Axis, GridSpec, Spacing};
use crate::store::files;
use crate::store::record::{CurveTraining, Description, Motion, Plan, RunKind, Source};

pub struct ConnectConfig {
    pub from: PathBuf,
    pub to: PathBuf,
    pub arch: Option<PathBuf>,
    pub training: CurveTraining,
    /// Values of t evaluated, evenly spaced over [0, 1].
    pub points: usize,
    pub setup: Setup,
    pub task: Task,
    /// Told about each epoch of the training.
    pub train_observer: Box<dyn TrainObserver>,
}

/// Check the training options and the number of points (before anything is loaded).
pub fn check(t: &CurveTraining, points: usize) -> Result<()> {
    if t.epochs == 0 {
        return Err(Error::setting(Setting::Epochs, 0, "must be at least 1"));
    }
    if points < 2 {
        return Err(Error::setting(Setting::Points, points, "must be at least 2 (t = 0 and t = 1)"));
    }
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(Error::setting(Setting::LearningRate, t.lr, "must be a positive number"));
    }
    if !(t.momentum.is_finite() && (0.0..1.0).contains(&t.momentum)) {
        return Err(Error::setting(Setting::Momentum, t.momentum, "must be in [0, 1)"));
    }
    if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
        return Err(Error::setting(Setting::WeightDecay, t.weight_decay, "must be a number >= 0"));
    }
    if t.batch_size == 0 {
        return Err(Error::setting(Setting::TrainBatchSize, 0, "must be at least 1"));
    }
    Ok(())
}

/// Resolve the two models, open the probe, establish the run (training the curve), evaluate.
pub fn connect(cfg: ConnectConfig, observer: &mut dyn Observer) -> Result<Outcome> {
    check(&cfg.training, cfg.points)?;
    if !cfg.setup.splits().contains(&Split::Train) {
        return Err(Error::setting(
            Setting::Split,
            cfg.setup.splits().iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
            "must include train: the curve is trained on the training split",
        ));
    }
    let arch = arch_of(cfg.arch.as_deref(), &cfg.from)?;
    let mut s = Session::open(&arch, &cfg.setup, cfg.task.devices[0])?;
    let mut setup = cfg.setup.clone();
    let ev = s.evaluator()?;
    batchnorm_for_training(&mut s, &mut setup, &ev, &arch)?;
    if cfg.training.augment.any() && (s.data.x.dim() != 4 || s.data.tokens()) {
        return Err(Error::setting(
            Setting::Augment,
            cfg.training.augment,
            format!(
                "needs images [N, C, H, W], but the samples of {} are {:?}",
                s.data.path.display(),
                &s.data.x.size()[1..]
            ),
        ));
    }
    let a = State::load(&cfg.from, &s.model)?;
    let b = State::load(&cfg.to, &s.model)?;
    distinct(&difference(&a, &b), &cfg.from, &cfg.to, "there is nothing to connect")?;
    let t_axis = Axis { min: 0.0, max: 1.0, n: cfg.points };
    let grid = GridSpec::new(t_axis, Some(Axis { min: 0.0, max: 1.0, n: 2 }), Spacing::Linear)?;
    let training = cfg.training;
    let identity = describe::identity(
        RunKind::Connect,
        &s,
        &ev,
        Some(sha256_file(&cfg.from, Role::Checkpoint)?),
        Some(grid),
        Source::Connect { to_sha256: sha256_file(&cfg.to, Role::Checkpoint)?, training },
        None,
    );
    let mut description = describe::description(
        &s,
        &ev,
        &grid,
        "loss[j, i] = L(theta(t, beta)) with t = x[i], beta = y[j]: row 0 the curve, row 1 the line",
        "theta(t, beta) = lerp(curve(t), line(t), beta): beta = 0 the curve, beta = 1 the line (exact at t = 0, 1)",
        &cfg.task.argv,
    );
    description.model.origin = Some(cfg.from.clone());
    let (from, to) = (cfg.from.clone(), cfg.to.clone());
    let plan = Plan {
        arch: arch.clone(),
        origin: Some(from.clone()),
        motion: Motion::Curve { to: to.clone(), bend: files::BEND.into(), curve: training.curve },
        grid: Some(grid),
        states: vec![from.clone(), to.clone()],
        columns: identity.columns.clone(),
        curvature: None,
        sharpness: None,
    };
    let check_identity = identity.clone();
    let train_ev = ev.clone();
    let mut train_observer = cfg.train_observer;
    let prepare = move |dir: &Path, probe: &Session| -> Result<(Plan, Description)> {
        let data = training_data(probe);
        let trainer = Trainer::new(&probe.model, data, &train_ev, &a, &b, training)?;
        let trained = train::train(dir, trainer, &check_identity, train_observer.as_mut())?;
        train::write_tensors(&dir.join(files::BEND), &trained.bend)?;
        description.connect = Some(describe::connect_meta(&from, &to, arch, training, &trained.progress, data.n));
        description.outputs = None;
        Ok((plan, description))
    };
    run::run(&cfg.task, &setup, s, Establish { identity, keep: None, prepare: Box::new(prepare) }, observer)
}

/// BatchNorm while the curve trains and at its points: a model without BatchNorm evaluates in eval
/// mode (nothing to re-estimate, nothing that training mode changes); one with BatchNorm must be
/// able to enter training mode (a traced model cannot).
fn batchnorm_for_training(s: &mut Session, setup: &mut Setup, ev: &Evaluator, arch: &Path) -> Result<()> {
    if s.model.batchnorm_layers()?.is_empty() {
        if setup.batchnorm == BatchNormMode::Recompute {
            log::info!("{} has no BatchNorm layer: nothing to re-estimate at the points", arch.display());
        }
        setup.batchnorm = BatchNormMode::Eval;
        s.setup.batchnorm = BatchNormMode::Eval;
        s.bn_data = None;
        return Ok(());
    }
    match Recompute::new(&s.model, ev, training_data(s)) {
        Err(Error::Setting { setting: Setting::BatchNorm, .. }) => Err(Error::file(
            Role::Model,
            arch,
            "has BatchNorm layers that do not enter training mode (a traced model has eval mode baked in): the curve trains with BatchNorm in training mode, so export the model with torch.jit.script",
        )),
        other => other.map(drop),
    }
}

/// The session's training split (the run's splits include it).
fn training_data(s: &Session) -> &crate::inputs::data::Dataset {
    s.datasets().find(|d| d.split == Some(Split::Train)).unwrap_or(&s.data)
}
