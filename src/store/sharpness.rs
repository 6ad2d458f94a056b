//! A sharpness run's results on disk: each measurement's record (`items/<k>.json`, written by the
//! worker that made it before its point is recorded, so a killed task redoes at most the points
//! it had not recorded), and at the merge `sharpness.json` (by model) and `sharpness.csv` (one
//! row per model × measure × radius).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Role};
use crate::store::atomic::{read_json, write_atomic, write_json};
use crate::store::files;
use crate::store::record::{
    RunRecord, SharpnessDetails, SharpnessModel, SharpnessPlan, SharpnessPoint, SharpnessReport, Source,
};

/// The record of measurement `k` (its index among the plan's items).
pub fn item_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(files::ITEMS).join(format!("{k:06}.json"))
}

/// Write measurement `k`'s record.
pub fn write_item(dir: &Path, k: usize, p: &SharpnessPoint) -> Result<()> {
    let d = dir.join(files::ITEMS);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, "cannot create", e))?;
    write_json(&item_path(dir, k), p)
}

/// The file a worst-case δ of model `stem` at radius `rho` is saved in (relative to the run
/// directory): `worst.safetensors` when the run has one model and one radius.
pub fn delta_file(plan: &SharpnessPlan, model: usize, rho: f64) -> String {
    let worst_radii =
        if plan.spec.measures.contains(&crate::options::Measure::Worst) { plan.spec.radii.len() } else { 0 };
    if plan.models.len() == 1 && worst_radii == 1 {
        return files::WORST.into();
    }
    let stem =
        plan.models[model].file_stem().map_or_else(|| format!("model{model}"), |s| s.to_string_lossy().into_owned());
    format!("{}/{:03}-{stem}-rho{rho}.safetensors", files::WORST_DIR, model)
}

/// Assemble sharpness.json and sharpness.csv from the items' records (those there: a partial merge
/// leaves the missing out).
pub fn write(dir: &Path, rec: &RunRecord, plan: &SharpnessPlan, _first_point: usize) -> Result<()> {
    let shas = match &rec.identity.source {
        Source::Models { sha256 } => sha256.clone(),
        _ => vec![String::new(); plan.models.len()],
    };
    let mut models: Vec<SharpnessModel> = plan
        .models
        .iter()
        .zip(&shas)
        .map(|(p, sha)| SharpnessModel {
            path: p.clone(),
            sha256: sha.clone(),
            loss: f64::NAN,
            acc: None,
            results: vec![],
        })
        .collect();
    for k in 0..plan.items.len() {
        let p = item_path(dir, k);
        if !p.exists() {
            continue;
        }
        let point: SharpnessPoint = read_json(&p)?;
        let m = models
            .get_mut(point.item.model)
            .ok_or_else(|| Error::file(Role::RunFile, &p, "names a model the run does not have"))?;
        (m.loss, m.acc) = (point.loss, point.acc);
        m.results.push(point.result);
    }
    let report = SharpnessReport { spec: plan.spec.clone(), models };
    write_json(&dir.join(files::SHARPNESS), &report)?;
    write_csv(dir, &report)
}

/// sharpness.csv: a row per model × measure × radius.
fn write_csv(dir: &Path, report: &SharpnessReport) -> Result<()> {
    write_atomic(&dir.join(files::SHARPNESS_CSV), |w| {
        let mut out = csv::Writer::from_writer(w);
        let io = |e: csv::Error| std::io::Error::other(e.to_string());
        out.write_record([
            "model",
            "sha256",
            "loss",
            "acc",
            "measure",
            "radius",
            "value",
            "stderr",
            "relative",
            "samples",
            "steps",
            "sigma",
            "flatness",
            "samples_used",
            "samples_exact",
        ])
        .map_err(io)?;
        for m in &report.models {
            for r in &m.results {
                let (sigma, flat) = match &r.details {
                    SharpnessDetails::Pacbayes { sigma, flatness, .. } => (sigma.to_string(), flatness.to_string()),
                    _ => (String::new(), String::new()),
                };
                out.write_record([
                    m.path.display().to_string(),
                    m.sha256.clone(),
                    m.loss.to_string(),
                    m.acc.map_or(String::new(), |x| x.to_string()),
                    r.measure.to_string(),
                    r.radius.map_or(String::new(), |x| x.to_string()),
                    r.value.to_string(),
                    r.stderr.map_or(String::new(), |x| x.to_string()),
                    r.relative.map_or(String::new(), |x| x.to_string()),
                    r.samples.to_string(),
                    r.steps.to_string(),
                    sigma,
                    flat,
                    r.sampled.map_or(String::new(), |u| u.samples_used.to_string()),
                    r.sampled.map_or(String::new(), |u| u.samples_exact.to_string()),
                ])
                .map_err(io)?;
            }
        }
        out.flush()
    })
}
