//! The picture of a sharpness run (`sharpness.png`): one panel per measure and radius, each model
//! a dot with its standard error as a whisker, in the order of the run (model names under the
//! axis for a dozen models or fewer, their indices beyond).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::png::{err, font, px};
use super::PlotOptions;
use crate::error::Result;
use crate::options::Measure;
use crate::store::atomic::read_json;
use crate::store::files;
use crate::store::record::{SharpnessDetails, SharpnessReport};

/// One panel's series: its title, the y-axis title, and (value, stderr, a bound only) per model
/// (PAC-Bayes in log10 σ*: the models' σ* span decades, and one only bounded can be far off).
struct Series {
    title: String,
    y: &'static str,
    points: Vec<Option<(f64, Option<f64>, bool)>>,
}

fn series(r: &SharpnessReport) -> Vec<Series> {
    let mut keys: Vec<(Measure, Option<f64>)> = Vec::new();
    for m in &r.models {
        for x in &m.results {
            let k = (x.measure, x.radius);
            if !keys.iter().any(|q| q.0 == k.0 && q.1.map(f64::to_bits) == k.1.map(f64::to_bits)) {
                keys.push(k);
            }
        }
    }
    keys.into_iter()
        .map(|(measure, radius)| Series {
            title: match (measure, radius) {
                (Measure::Pacbayes, _) => format!("PAC-Bayes σ* ({} ≤ {})", r.spec.quantity, r.spec.threshold),
                (m, Some(rho)) => format!("{m} case, ρ = {rho}"),
                (m, None) => format!("{m} case"),
            },
            y: if measure == Measure::Pacbayes {
                "log10 σ*  (open: a bound, not bracketed)"
            } else {
                "increase of the loss"
            },
            points: r
                .models
                .iter()
                .map(|m| {
                    m.results
                        .iter()
                        .find(|x| x.measure == measure && x.radius.map(f64::to_bits) == radius.map(f64::to_bits))
                        .map(|x| match &x.details {
                            SharpnessDetails::Pacbayes { bracketed, .. } => {
                                // log10 of σ* ± se, by the delta method.
                                let se = x.stderr.map(|se| se / (x.value * std::f64::consts::LN_10));
                                (x.value.log10(), se, !bracketed)
                            }
                            _ => (x.value, x.stderr, false),
                        })
                })
                .collect(),
        })
        .collect()
}

/// Draw `dir`'s sharpness.png from its sharpness.json.
pub fn draw(dir: &Path, o: &PlotOptions) -> Result<PathBuf> {
    font()?;
    let report: SharpnessReport = read_json(&dir.join(files::SHARPNESS))?;
    let all = series(&report);
    let out = dir.join("sharpness.png");
    let e = err("sharpness.png");
    let cols = all.len().clamp(1, 3);
    let rows = all.len().div_ceil(cols).max(1);
    let (pw, ph) = (6 * o.dpi, 4 * o.dpi);
    let root = BitMapBackend::new(&out, (cols as u32 * pw, rows as u32 * ph)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let names: Vec<String> = report
        .models
        .iter()
        .map(|m| m.path.file_stem().map_or_else(|| m.path.display().to_string(), |s| s.to_string_lossy().into_owned()))
        .collect();
    let n = names.len();
    let label_names = n <= 12;
    for (s, area) in all.iter().zip(root.split_evenly((rows, cols))) {
        let vals: Vec<(f64, f64)> = s
            .points
            .iter()
            .flatten()
            .flat_map(|(v, se, _)| {
                let se = se.unwrap_or(0.0);
                [(v - se), (v + se)]
            })
            .filter(|v| v.is_finite())
            .map(|v| (v, v))
            .collect();
        let lo = vals.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
        // Increases start from 0; log10 σ* where it is.
        let lo = if s.y.starts_with("log10") { lo - 0.08 * lo.abs().max(0.1) } else { lo.min(0.0) };
        let hi = vals.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        let hi = if hi.is_finite() && hi > lo { hi + 0.08 * (hi - lo) } else { lo + 1.0 };
        let mut chart = ChartBuilder::on(&area)
            .caption(&s.title, ("sans-serif", px(o, 17.0)))
            .margin(px(o, 10.0))
            .x_label_area_size(px(o, if label_names { 70.0 } else { 40.0 }))
            .y_label_area_size(px(o, 70.0))
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), lo..hi)
            .map_err(&e)?;
        let labels = names.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(if label_names { n } else { 10 })
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() > 1e-6 || i < 0.0 || i as usize >= labels.len() {
                    return String::new();
                }
                if label_names {
                    labels[i as usize].clone()
                } else {
                    format!("{}", i as usize)
                }
            })
            .x_desc(if label_names { "" } else { "model (in the order of the run)" })
            .y_desc(s.y)
            .label_style(("sans-serif", px(o, 13.0)))
            .axis_desc_style(("sans-serif", px(o, 15.0)))
            .light_line_style(BLACK.mix(0.06))
            .draw()
            .map_err(&e)?;
        let colour = RGBColor(30, 90, 230);
        let pts: Vec<(f64, f64, f64, bool)> = s
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|(v, se, bound)| (i as f64, v, se.unwrap_or(0.0), bound)))
            .filter(|(_, v, _, _)| v.is_finite())
            .collect();
        if n > 12 {
            chart
                .draw_series(LineSeries::new(pts.iter().map(|&(x, v, _, _)| (x, v)), colour.mix(0.35).stroke_width(1)))
                .map_err(&e)?;
        }
        chart
            .draw_series(pts.iter().filter(|p| p.2 > 0.0).map(|&(x, v, se, _)| {
                ErrorBar::new_vertical(x, v - se, v, v + se, BLACK.mix(0.7).stroke_width(px(o, 1.5)), px(o, 8.0))
            }))
            .map_err(&e)?;
        let r = px(o, if n > 40 { 2.5 } else { 4.5 }) as i32;
        chart
            .draw_series(pts.iter().map(|&(x, v, _, bound)| {
                Circle::new((x, v), r, if bound { colour.stroke_width(px(o, 2.0)) } else { colour.filled() })
            }))
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    drop(root);
    Ok(out)
}
