//! `sharpness`: sharpness and flatness measures of one model or many (average case, worst case,
//! m-sharpness, PAC-Bayes flatness; docs/landscape.md), each model × measure × radius a point of
//! the sweep (shards, SLURM arrays, resume, workers, merge). Writes `items/<k>.json` per point,
//! then `sharpness.json`, `sharpness.csv`, the worst-case perturbations and `meta.json`.

use std::path::{Path, PathBuf};

use crate::commands::describe;
use crate::commands::line::arch_of;
use crate::commands::run::{self, Establish, Outcome, Task};
use crate::engine::session::{Session, Setup};
use crate::engine::sweep::Observer;
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::checkpoint::State;
use crate::inputs::model::sha256_file;
use crate::options::{Measure, Precision};
use crate::store::files;
use crate::store::record::{
    Description, Motion, Plan, RunKind, SharpnessItem, SharpnessMeta, SharpnessPlan, SharpnessSpec, Source,
};

#[derive(Debug, Clone)]
pub struct SharpnessConfig {
    /// The models, in the order of the results: TorchScript files, or checkpoints of `arch`.
    pub models: Vec<PathBuf>,
    pub arch: Option<PathBuf>,
    pub spec: SharpnessSpec,
    pub setup: Setup,
    pub task: Task,
}

/// The measurements of a run: for each model, each measure at each radius (PAC-Bayes once).
pub fn items(models: usize, spec: &SharpnessSpec) -> Vec<SharpnessItem> {
    let mut out = Vec::new();
    for model in 0..models {
        for &measure in &spec.measures {
            match measure {
                Measure::Pacbayes => out.push(SharpnessItem { model, measure, radius: None }),
                _ => out.extend(spec.radii.iter().map(|&r| SharpnessItem { model, measure, radius: Some(r) })),
            }
        }
    }
    out
}

/// Check a specification (before anything is loaded).
pub fn check(spec: &SharpnessSpec) -> Result<()> {
    if spec.measures.is_empty() {
        return Err(Error::setting(Setting::Measure, "", "name at least one measure"));
    }
    let ms = spec.measures.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
    if let Some(i) = (1..spec.measures.len()).find(|&i| spec.measures[..i].contains(&spec.measures[i])) {
        return Err(Error::setting(Setting::Measure, &ms, format!("names {} twice", spec.measures[i])));
    }
    let radial = spec.measures.iter().any(|m| *m != Measure::Pacbayes);
    let radii = spec.radii.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    if radial && spec.radii.is_empty() {
        return Err(Error::Needed { setting: Setting::Radius, why: format!("the {ms} measures take a radius ρ") });
    }
    if !radial && !spec.radii.is_empty() {
        return Err(Error::setting(Setting::Radius, &radii, "pacbayes takes no radius (it finds its own σ)"));
    }
    if let Some(r) = spec.radii.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        return Err(Error::setting(Setting::Radius, &radii, format!("{r} is not a positive number")));
    }
    if !(spec.floor.is_finite() && spec.floor >= 0.0) {
        return Err(Error::setting(Setting::Floor, spec.floor, "must be a number >= 0"));
    }
    let mc = spec.measures.iter().any(|m| *m != Measure::Worst);
    if mc && spec.samples < 2 {
        return Err(Error::setting(
            Setting::Samples,
            spec.samples,
            "must be at least 2 (a standard error needs two draws)",
        ));
    }
    if spec.steps == 0 {
        return Err(Error::setting(Setting::Steps, 0, "must be at least 1"));
    }
    if spec.restarts == 0 {
        return Err(Error::setting(Setting::Restarts, 0, "must be at least 1"));
    }
    if spec.m_sharpness == Some(0) {
        return Err(Error::setting(Setting::MSharpness, 0, "must be at least 1 sample per batch"));
    }
    if !(spec.threshold.is_finite() && spec.threshold > 0.0) {
        return Err(Error::setting(Setting::Threshold, spec.threshold, "must be a positive number"));
    }
    Ok(())
}

/// What each measure is, for meta.json.
fn definitions(spec: &SharpnessSpec) -> Vec<(Measure, String)> {
    spec.measures
        .iter()
        .map(|&m| {
            let d = match m {
                Measure::Average => format!(
                    "E_z[L(θ + ρ c⊙z)] − L(θ), z ~ N(0, I) over the parameter set, {} draws; value = the mean, \
                     stderr = sample std / √draws",
                    spec.samples
                ),
                Measure::Worst => format!(
                    "max over ‖δ ⊘ c‖_{} ≤ ρ of L(θ + δ) − L(θ) by projected gradient ascent ({} steps, {} \
                     restarts; the first from δ = 0), the best point visited (a lower bound){}",
                    if spec.norm == crate::options::PNorm::L2 { "2" } else { "∞" },
                    spec.steps,
                    spec.restarts,
                    spec.m_sharpness.map_or(String::new(), |m| format!(
                        "; m-sharpness: the mean over consecutive batches of {m} samples of each batch's own maximum"
                    ))
                ),
                Measure::Pacbayes => format!(
                    "σ* = the largest σ with E_z[Q(θ + σ c⊙z)] − Q(θ) ≤ {}, Q = the {}, {} draws per level (the same \
                     at every level); value = σ*, flatness = 1/σ*²",
                    spec.threshold, spec.quantity, spec.samples
                ),
            };
            (m, d)
        })
        .collect()
}

/// Resolve the models and their architecture, open the probe, establish the run, measure.
pub fn sharpness(cfg: &SharpnessConfig, observer: &mut dyn Observer) -> Result<Outcome> {
    check(&cfg.spec)?;
    let first = cfg.models.first().ok_or_else(|| Error::Needed {
        setting: Setting::Models,
        why: "a sharpness run measures at least one model".into(),
    })?;
    if cfg.setup.precision.is_some_and(Precision::is_reduced) {
        return Err(Error::setting(
            Setting::Precision,
            cfg.setup.precision.expect("some"),
            "sharpness needs fp32 or tf32",
        ));
    }
    let arch = arch_of(cfg.arch.as_deref(), first)?;
    let s = Session::open(&arch, &cfg.setup, cfg.task.devices[0])?;
    let ev = s.evaluator()?;
    if let Some(m) = cfg.spec.m_sharpness.filter(|&m| m > s.data.n) {
        return Err(Error::setting(
            Setting::MSharpness,
            m,
            format!("is more than the {} samples of {}", s.data.n, s.data.path.display()),
        ));
    }
    // Every model must fit the architecture (checked now, before anything is written).
    for m in &cfg.models {
        State::load(m, &s.model)?;
    }
    let shas = cfg.models.iter().map(|m| sha256_file(m, Role::Checkpoint)).collect::<Result<Vec<_>>>()?;
    let mut identity =
        describe::identity(RunKind::Sharpness, &s, &ev, None, None, Source::Models { sha256: shas.clone() }, None);
    identity.sharpness = Some(cfg.spec.clone());
    let plan =
        SharpnessPlan { models: cfg.models.clone(), items: items(cfg.models.len(), &cfg.spec), spec: cfg.spec.clone() };
    let deltas: Vec<String> = plan
        .items
        .iter()
        .filter(|i| i.measure == Measure::Worst && cfg.spec.m_sharpness.is_none())
        .map(|i| crate::store::sharpness::delta_file(&plan, i.model, i.radius.unwrap_or(f64::NAN)))
        .collect();
    let mut description = describe::base_description(&s, &ev, &cfg.task.argv);
    description.sharpness = Some(SharpnessMeta {
        spec: cfg.spec.clone(),
        models: cfg.models.iter().cloned().zip(shas).collect(),
        results: files::SHARPNESS.into(),
        table: files::SHARPNESS_CSV.into(),
        deltas,
        definitions: definitions(&cfg.spec),
    });
    let run_plan = Plan {
        arch: arch.clone(),
        origin: None,
        motion: Motion::Fixed,
        grid: None,
        states: Vec::new(),
        columns: identity.columns.clone(),
        curvature: None,
        sharpness: Some(plan),
    };
    let prepare = move |_: &Path, _: &Session| -> Result<(Plan, Description)> { Ok((run_plan, description)) };
    run::run(&cfg.task, &cfg.setup, s, Establish { identity, keep: None, prepare: Box::new(prepare) }, observer)
}
