//! The picture of `hessian --per-layer` (`per_layer.png`): each diagonal block's λmax, λmin and
//! trace as bars in model order, one panel per quantity (a trace with its standard error as a
//! whisker). A panel whose values are all positive and span more than two decades is drawn on a
//! log scale; block names are written under their bars for two dozen blocks or fewer, their depth
//! beyond.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{self, err, font, text_size, Side, AXIS, TICK};
use super::canvas::{Area, Canvas, TextLook};
use super::curves::PALETTE;
use super::{output, PlotOptions};
use crate::error::Result;
use crate::store::record::HessianReport;

/// Name labels under the bars up to this many blocks.
const NAMED: usize = 24;

/// One panel: its title, its axis title and (value, standard error) per block.
struct Panel {
    title: String,
    y: &'static str,
    values: Vec<Option<(f64, Option<f64>)>>,
}

impl Panel {
    fn finite(&self) -> impl Iterator<Item = f64> + '_ {
        self.values.iter().flatten().map(|v| v.0).filter(|v| v.is_finite())
    }

    /// All positive and more than two decades apart: a log scale reads better.
    fn log(&self) -> bool {
        let (lo, hi) = self.finite().fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
        self.finite().all(|v| v > 0.0) && lo.is_finite() && hi / lo > 100.0
    }
}

fn panels(r: &HessianReport, what: &str) -> Vec<Panel> {
    let Some(layers) = &r.per_layer else { return Vec::new() };
    let mut out = Vec::new();
    if layers.iter().any(|l| l.largest.is_some()) {
        out.push(Panel {
            title: format!("largest eigenvalue of each block of the {what}"),
            y: "λmax",
            values: layers.iter().map(|l| l.largest.map(|e| (e.eigenvalue, None))).collect(),
        });
    }
    if layers.iter().any(|l| l.smallest.is_some()) {
        out.push(Panel {
            title: format!("smallest eigenvalue of each block of the {what}"),
            y: "λmin",
            values: layers.iter().map(|l| l.smallest.map(|e| (e.eigenvalue, None))).collect(),
        });
    }
    if layers.iter().any(|l| l.trace.is_some()) {
        out.push(Panel {
            title: format!("trace of each block of the {what} (± standard error)"),
            y: "trace",
            values: layers.iter().map(|l| l.trace.map(|t| (t.estimate, Some(t.stderr)))).collect(),
        });
    }
    out
}

/// Draw per_layer.png (and its siblings) from a Hessian run's report; nothing without per-layer
/// results.
pub(super) fn draw(dir: &Path, o: &PlotOptions, r: &HessianReport) -> Result<Vec<PathBuf>> {
    let what = match r.operator {
        crate::options::Operator::Hessian => "Hessian",
        crate::options::Operator::Ggn => "Gauss-Newton matrix",
        crate::options::Operator::EmpiricalFisher => "empirical Fisher",
    };
    let all = panels(r, what);
    let Some(layers) = r.per_layer.as_ref().filter(|_| !all.is_empty()) else { return Ok(Vec::new()) };
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let named = names.len() <= NAMED;
    let height = if named { 3.6 } else { 2.8 };
    let canvas = Canvas::new(o.size.unwrap_or((8.0, height * all.len() as f64)));
    let root = canvas.area();
    for (p, area) in all.iter().zip(root.split_evenly((all.len(), 1))) {
        panel(&canvas, &area, o, p, &names)?;
    }
    output::write(&canvas, &dir.join("per_layer.png"), o)
}

/// A panel's y range, in the units it is drawn in (log10 of the values on a log panel), the
/// whiskers and the bars' base included.
fn range(p: &Panel, log: bool) -> (f64, f64) {
    let ends: Vec<f64> = p
        .values
        .iter()
        .flatten()
        .flat_map(|&(v, se)| {
            let se = se.filter(|s| s.is_finite()).unwrap_or(0.0);
            [v - se, v + se]
        })
        .filter(|v| v.is_finite())
        .collect();
    if log {
        let vals: Vec<f64> = p.finite().map(f64::log10).collect();
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min) - 0.3;
        let hi = ends.iter().filter(|v| **v > 0.0).map(|v| v.log10()).fold(f64::NEG_INFINITY, f64::max) + 0.2;
        return (lo, hi.max(lo + 1.0));
    }
    let lo = ends.iter().copied().fold(0.0f64, f64::min);
    let hi = ends.iter().copied().fold(0.0f64, f64::max);
    let pad = 0.08 * (hi - lo).max(1e-300);
    (if lo < 0.0 { lo - pad } else { 0.0 }, if hi > 0.0 { hi + pad } else { pad })
}

/// One quantity's bars (from 0, or from the bottom of a log panel) with whiskers.
fn panel(canvas: &Canvas, area: &Area, o: &PlotOptions, p: &Panel, names: &[String]) -> Result<()> {
    let e = err("per_layer.png");
    let n = names.len();
    let named = n <= NAMED;
    let log = p.log();
    let (lo, hi) = range(p, log);
    let sy = axes::tick_step(lo, hi, 6);
    let ticks: Vec<f64> = if log { axes::log_ticks(10f64.powf(lo), 10f64.powf(hi), 6) } else { Vec::new() };
    let label = |v: f64| if log { axes::log_label(v) } else { super::scale::tick(v, sy) };
    let left = if log { ticks.clone() } else { axes::key_points(lo, hi, 6) }
        .iter()
        .map(|&v| text_size(o, &label(v), TICK).0)
        .fold(0.0, f64::max);
    let widest = names.iter().map(|m| text_size(o, m, axes::LABEL).0).fold(0.0, f64::max);
    let (x0, y0) = area.get_base_pixel();
    let (w, _) = area.dim_in_pixel();
    let bottom =
        if named { widest.min(o.em(70.0)) } else { text_size(o, "0", TICK).1 } + o.em(12.0) + text_size(o, "0", AXIS).1;
    let mut chart = ChartBuilder::on(area)
        .margin_top(axes::title_height(o, &p.title, w as f64) as u32)
        .margin_left(o.em(8.0) as u32)
        .margin_right(o.em(14.0) as u32)
        .margin_bottom(o.em(6.0) as u32)
        .x_label_area_size(bottom as u32)
        .y_label_area_size((left + o.em(16.0) + text_size(o, "0", AXIS).1) as u32)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), lo..hi)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(if named { 0 } else { 10 })
        .y_labels(if log { 0 } else { 6 })
        .x_label_formatter(&|x| axes::index_label(*x))
        .y_label_formatter(&|v| super::scale::tick(*v, sy))
        .label_style(font(o, TICK))
        .bold_line_style(BLACK.mix(0.08).stroke_width(o.w(0.5)))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .draw()
        .map_err(&e)?;
    let frame = axes::frame_of(&chart);
    if log {
        let at: Vec<(f64, String)> =
            ticks.iter().map(|&t| (chart.backend_coord(&(0.0, t.log10())).1 as f64, label(t))).collect();
        axes::y_ticks(canvas, o, frame, &at, false)?;
    }
    let y = |v: f64| if log { v.log10() } else { v };
    let base = if log { lo } else { 0.0 };
    let half = if n > 60 { 0.45 } else { 0.35 };
    let bars = p.values.iter().enumerate().filter_map(|(i, v)| {
        let (v, _) = (*v)?;
        (v.is_finite() && (!log || v > 0.0)).then(|| {
            let x = i as f64;
            Rectangle::new([(x - half, base), (x + half, y(v))], PALETTE[0].mix(0.85).filled())
        })
    });
    chart.draw_series(bars).map_err(&e)?;
    let cap = o.pt(4.0) as u32;
    let whiskers = p.values.iter().enumerate().filter_map(|(i, v)| {
        let (v, se) = (*v)?;
        let se = se.filter(|s| s.is_finite() && *s > 0.0)?;
        let lo_end = if log { (v - se).max(10f64.powf(lo)) } else { v - se };
        Some(ErrorBar::new_vertical(i as f64, y(lo_end), y(v), y(v + se), BLACK.mix(0.7).stroke_width(o.w(1.0)), cap))
    });
    chart.draw_series(whiskers).map_err(&e)?;
    let labels = Labels { names, named, log, frame, x0: x0 as f64, w: w as f64, y0: y0 as f64 };
    labels.draw(canvas, o, p, &|i| chart.backend_coord(&(i as f64, lo)).0 as f64);
    Ok(())
}

/// What is written around a panel: block names (or the depth axis), the title, the y title.
struct Labels<'a> {
    names: &'a [String],
    named: bool,
    log: bool,
    frame: super::layout::Rect,
    x0: f64,
    w: f64,
    y0: f64,
}

impl Labels<'_> {
    /// `x_of(i)`: the canvas x of block i's bar.
    fn draw(&self, canvas: &Canvas, o: &PlotOptions, p: &Panel, x_of: &dyn Fn(usize) -> f64) {
        if self.named {
            // One size for every name (the one the longest fits at), so none reads larger.
            let size =
                self.names.iter().map(|n| axes::fit(o, n, axes::LABEL, o.em(70.0))).fold(f64::INFINITY, f64::min);
            for (i, name) in self.names.iter().enumerate() {
                let look =
                    TextLook { anchor: Pos::new(HPos::Left, VPos::Center), rotate: 90.0, ..TextLook::new(o.em(size)) };
                canvas.text(name, (x_of(i), self.frame.y1 + o.em(5.0)), look);
            }
        } else {
            axes::axis_title(canvas, o, "block (depth in the model's order)", self.frame, Side::Bottom);
        }
        axes::draw_title(canvas, o, &p.title, (self.x0, self.x0 + self.w), self.y0);
        let y_title = if self.log { format!("{} (log scale)", p.y) } else { p.y.to_string() };
        axes::axis_title(canvas, o, &y_title, self.frame, Side::Left(self.x0 + o.em(8.0)));
    }
}
