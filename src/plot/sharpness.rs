//! The picture of a sharpness run (`sharpness.png`): one panel per measure and radius, each model
//! a dot with its standard error as a whisker, in the order of the run (model names under the
//! axis for a dozen models or fewer, their indices beyond).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::axes::{self, err, font, text_size, Side, AXIS, TICK};
use super::canvas::{Canvas, TextLook};
use super::curves::PALETTE;
use super::{output, PlotOptions};
use crate::error::Result;
use crate::options::Measure;
use crate::store::atomic::read_json;
use crate::store::files;
use crate::store::record::{SharpnessDetails, SharpnessReport};
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

/// Draw `dir`'s sharpness.png (and its siblings) from its sharpness.json.
pub fn draw(dir: &Path, o: &PlotOptions) -> Result<Vec<PathBuf>> {
    let report: SharpnessReport = read_json(&dir.join(files::SHARPNESS))?;
    let all = series(&report);
    let cols = all.len().clamp(1, 3);
    let rows = all.len().div_ceil(cols).max(1);
    let canvas = Canvas::new(o.size.unwrap_or((cols as f64 * 6.0, rows as f64 * 4.0)));
    let root = canvas.area();
    let names: Vec<String> = report
        .models
        .iter()
        .map(|m| m.path.file_stem().map_or_else(|| m.path.display().to_string(), |s| s.to_string_lossy().into_owned()))
        .collect();
    for (s, area) in all.iter().zip(root.split_evenly((rows, cols))) {
        panel(&canvas, &area, o, s, &names)?;
    }
    output::write(&canvas, &dir.join("sharpness.png"), o)
}

/// The range of a panel's values with their whiskers: increases from 0, log10 σ* where it is.
fn range(s: &Series) -> (f64, f64) {
    let vals: Vec<f64> = s
        .points
        .iter()
        .flatten()
        .flat_map(|(v, se, _)| {
            let se = se.unwrap_or(0.0);
            [(v - se), (v + se)]
        })
        .filter(|v| v.is_finite())
        .collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let lo = if s.y.starts_with("log10") { lo - 0.08 * lo.abs().max(0.1) } else { lo.min(0.0) };
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let hi = if hi.is_finite() && hi > lo { hi + 0.08 * (hi - lo) } else { lo + 1.0 };
    (if lo.is_finite() { lo } else { 0.0 }, hi)
}

/// One measure's panel: each model a dot with its standard error as a whisker.
fn panel(canvas: &Canvas, area: &super::canvas::Area, o: &PlotOptions, s: &Series, names: &[String]) -> Result<()> {
    let e = err("sharpness.png");
    let n = names.len();
    let label_names = n <= 12;
    let (lo, hi) = range(s);
    let sy = axes::tick_step(lo, hi, 8);
    let left = axes::key_points(lo, hi, 8)
        .iter()
        .map(|&v| text_size(o, &super::scale::tick(v, sy), TICK).0)
        .fold(0.0, f64::max);
    let widest = names.iter().map(|m| text_size(o, m, axes::LABEL).0).fold(0.0, f64::max);
    let (x0, y0) = area.get_base_pixel();
    let (w, _) = area.dim_in_pixel();
    let bottom = if label_names { widest.min(o.em(90.0)) } else { text_size(o, "0", TICK).1 }
        + o.em(12.0)
        + text_size(o, "0", AXIS).1;
    let mut chart = ChartBuilder::on(area)
        .margin_top(axes::title_height(o, &s.title, w as f64) as u32)
        .margin_left(o.em(8.0) as u32)
        .margin_right(o.em(14.0) as u32)
        .margin_bottom(o.em(8.0) as u32)
        .x_label_area_size(bottom as u32)
        .y_label_area_size((left + o.em(16.0) + text_size(o, "0", AXIS).1) as u32)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), lo..hi)
        .map_err(&e)?;
    // Model names are written by hand under their ticks, turned to read downwards; indices
    // (beyond a dozen models) are plotters' ticks.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(if label_names { 0 } else { 10 })
        .y_labels(8)
        .x_label_formatter(&|x| axes::index_label(*x))
        .y_label_formatter(&|v| super::scale::tick(*v, sy))
        .label_style(font(o, TICK))
        .bold_line_style(BLACK.mix(0.08).stroke_width(o.w(0.5)))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .draw()
        .map_err(&e)?;
    draw_points(&mut chart, o, s, n)?;
    let frame = axes::frame_of(&chart);
    if label_names {
        for (i, name) in names.iter().enumerate() {
            let (x, _) = chart.backend_coord(&(i as f64, lo));
            let size = axes::fit(o, name, axes::LABEL, o.em(90.0));
            let look =
                TextLook { anchor: Pos::new(HPos::Left, VPos::Center), rotate: 90.0, ..TextLook::new(o.em(size)) };
            canvas.text(name, (x as f64, frame.y1 + o.em(5.0)), look);
        }
    }
    axes::draw_title(canvas, o, &s.title, (x0 as f64, x0 as f64 + w as f64), y0 as f64);
    if !label_names {
        axes::axis_title(canvas, o, "model (in the order of the run)", frame, Side::Bottom);
    }
    axes::axis_title(canvas, o, s.y, frame, Side::Left(x0 as f64 + o.em(8.0)));
    Ok(())
}

/// Each model's value as a dot (open: only a bound), its standard error as a whisker; joined by
/// a faint line beyond a dozen models.
fn draw_points(
    chart: &mut ChartContext<
        Canvas,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    o: &PlotOptions,
    s: &Series,
    n: usize,
) -> Result<()> {
    let e = err("sharpness.png");
    let colour = PALETTE[0];
    let pts: Vec<(f64, f64, f64, bool)> = s
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|(v, se, bound)| (i as f64, v, se.unwrap_or(0.0), bound)))
        .filter(|(_, v, _, _)| v.is_finite())
        .collect();
    if n > 12 {
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, v, _, _)| (x, v)),
                colour.mix(0.35).stroke_width(o.w(0.7)),
            ))
            .map_err(&e)?;
    }
    let cap = o.pt(5.0) as u32;
    chart
        .draw_series(pts.iter().filter(|p| p.2 > 0.0).map(|&(x, v, se, _)| {
            ErrorBar::new_vertical(x, v - se, v, v + se, BLACK.mix(0.7).stroke_width(o.w(1.0)), cap)
        }))
        .map_err(&e)?;
    let r = o.pt(if n > 40 { 1.8 } else { 3.2 }) as i32;
    chart
        .draw_series(pts.iter().map(|&(x, v, _, bound)| {
            Circle::new((x, v), r, if bound { colour.stroke_width(o.w(1.4)) } else { colour.filled() })
        }))
        .map_err(&e)?;
    Ok(())
}
