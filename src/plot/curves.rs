//! 1-D pictures: loss (left axis; log10 of it for a log scale, labelled in loss units) and
//! accuracy (right axis) against α, one colour per run or split from the Okabe–Ito palette
//! (colour-blind safe), one line style per quantity (loss solid, accuracy dashed); a line's
//! barrier and the marked points; the legend where no curve runs (the y range grows until there
//! is such a place). Also the curvature curve of `surface --curvature` on a line.

use std::path::{Path, PathBuf};

use plotters::chart::DualCoordChartContext;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::axes::{self, err, font, text_size, Sample, Side, AXIS, TICK};
use super::canvas::{Area, Canvas, TextLook};
use super::layout::{self, Label, Obstacle, Rect};
use super::scale::{short, tick, Scale};
use super::{output, title, Look, PlotOptions, RunData};
use crate::error::Result;
use crate::store::record::RunKind;

/// The Okabe–Ito palette (without its yellow, too pale on white), in order of use.
pub(super) const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// The runs of a 1-D figure: (legend name, run).
pub(super) type Curves<'a> = [(String, &'a RunData)];

type Plane = Cartesian2d<RangedCoordf64, RangedCoordf64>;
type Chart1d<'a> = DualCoordChartContext<'a, Canvas, Plane, Plane>;

/// The loss axis in plotted units (log10 of the loss for a log scale) with its ticks.
#[derive(Debug, Clone)]
struct LossAxis {
    scale: Scale,
    a: f64,
    b: f64,
    ticks: Vec<f64>,
}

impl LossAxis {
    fn new(look: &Look, headroom: f64, room: usize) -> LossAxis {
        let (lo, hi) = (look.lo, if look.hi > look.lo { look.hi } else { look.lo + 1.0 });
        let (a, b) = match look.scale {
            Scale::Log => (lo.log10() - 0.06, hi.log10() + 0.06),
            Scale::Linear => (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)),
        };
        let b = b + headroom * (b - a);
        let ticks = match look.scale {
            Scale::Log => axes::log_ticks(10f64.powf(a), 10f64.powf(b), room).iter().map(|v| v.log10()).collect(),
            Scale::Linear => axes::key_points(a, b, room),
        };
        LossAxis { scale: look.scale, a, b, ticks }
    }

    fn t(&self, v: f64) -> Option<f64> {
        self.scale.apply(v).map(|t| t.clamp(self.a, self.b))
    }

    fn label(&self, t: f64) -> String {
        match self.scale {
            Scale::Log => axes::log_label(10f64.powf(t)),
            Scale::Linear => tick(t, axes::tick_step(self.a, self.b, 8)),
        }
    }
}

/// Pieces of a curve between non-finite points.
fn pieces(x: &[f64], v: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![vec![]];
    for (&a, &b) in x.iter().zip(v) {
        if b.is_finite() {
            out.last_mut().expect("one").push((a, b));
        } else if !out.last().expect("one").is_empty() {
            out.push(vec![]);
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// Everything a 1-D figure draws, decided before drawing.
struct Plan<'a> {
    runs: &'a Curves<'a>,
    o: &'a PlotOptions,
    axis: LossAxis,
    x: (f64, f64),
    has_acc: bool,
    caption: &'a str,
    /// `--shade-stderr`: each run's points whose standard error exceeds the fraction.
    shaded: Vec<Vec<bool>>,
}

impl Plan<'_> {
    /// The loss of run k in plotted units (NaN: not drawn).
    fn loss(&self, k: usize) -> Vec<f64> {
        self.runs[k].1.loss.iter().map(|&v| self.axis.t(v).unwrap_or(f64::NAN)).collect()
    }

    fn barrier_name(&self, k: usize) -> Option<String> {
        let (n, d) = &self.runs[k];
        d.barrier.map(|b| {
            let of = if self.runs.len() > 1 { format!(" ({n})") } else { String::new() };
            let var = if d.meta.kind == RunKind::Connect { "t" } else { "α" };
            format!("barrier{of}: {} at {var} = {}", short(b.height), short(b.at))
        })
    }

    fn colour(&self, k: usize) -> RGBColor {
        PALETTE[k % PALETTE.len()]
    }
}

/// The marked points of a 1-D run (A and B of a line, the centre of a slice).
fn line_marks(runs: &Curves) -> Vec<(String, f64)> {
    match runs.first().map(|(_, d)| d.meta.kind) {
        Some(RunKind::Line | RunKind::Connect) => vec![("A".into(), 0.0), ("B".into(), 1.0)],
        _ => vec![("center".into(), 0.0)],
    }
}

fn chart<'a>(area: &'a Area, p: &Plan, headroom: f64) -> Result<Chart1d<'a>> {
    let (o, e) = (p.o, err("1-D chart"));
    let right =
        if p.has_acc { o.em(8.0) + text_size(o, "0.0", TICK).0 + o.em(8.0) + text_size(o, "0", AXIS).1 } else { 0.0 };
    let left_w = p.axis.ticks.iter().map(|&t| text_size(o, &p.axis.label(t), TICK).0).fold(0.0, f64::max);
    let width = area.dim_in_pixel().0 as f64;
    let acc_top = 1.0 + headroom * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin_top(axes::title_height(o, p.caption, width) as u32)
        .margin_left(o.em(8.0) as u32)
        .margin_right(o.em(10.0) as u32)
        .margin_bottom(o.em(10.0) as u32)
        .x_label_area_size((o.em(11.0) + text_size(o, "0", TICK).1 + text_size(o, "0", AXIS).1) as u32)
        .y_label_area_size((left_w + o.em(16.0) + text_size(o, "0", AXIS).1) as u32)
        .right_y_label_area_size(right as u32)
        .build_cartesian_2d(p.x.0..p.x.1, p.axis.a..p.axis.b)
        .map_err(&e)?
        .set_secondary_coord(p.x.0..p.x.1, -0.02..acc_top);
    let sx = axes::tick_step(p.x.0, p.x.1, 10);
    chart
        .configure_mesh()
        .x_labels(10)
        .y_labels(0)
        .disable_y_mesh()
        .x_label_formatter(&|v| tick(*v, sx))
        .label_style(font(o, TICK))
        .bold_line_style(BLACK.mix(0.1).stroke_width(o.w(0.5)))
        .light_line_style(TRANSPARENT)
        .set_all_tick_mark_size(o.em(4.0) as u32)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .draw()
        .map_err(&e)?;
    Ok(chart)
}

/// The loss axis's ticks on the left and the accuracy's on the right, drawn by hand (a log axis
/// labelled in loss units at 1, 2 and 5 of each decade).
fn ticks(canvas: &Canvas, chart: &Chart1d, p: &Plan, frame: Rect) -> Result<()> {
    let loss: Vec<(f64, String)> =
        p.axis.ticks.iter().map(|&t| (chart.backend_coord(&(p.x.0, t)).1 as f64, p.axis.label(t))).collect();
    axes::y_ticks(canvas, p.o, frame, &loss, false)?;
    if p.has_acc {
        let acc: Vec<(f64, String)> = axes::key_points(0.0, 1.0, 6)
            .iter()
            .map(|&v| (chart.borrow_secondary().backend_coord(&(p.x.0, v)).1 as f64, tick(v, 0.2)))
            .collect();
        axes::y_ticks(canvas, p.o, frame, &acc, true)?;
    }
    Ok(())
}

/// The curves' segments in canvas units: what the legend and labels keep clear of.
fn obstacles(chart: &Chart1d, p: &Plan) -> Vec<Obstacle> {
    let mut out = Vec::new();
    for (k, (_, d)) in p.runs.iter().enumerate() {
        let to = |q: &(f64, f64)| {
            let (a, b) = chart.backend_coord(q);
            (a as f64, b as f64)
        };
        for part in pieces(&d.x, &p.loss(k)) {
            let px: Vec<(f64, f64)> = part.iter().map(to).collect();
            out.extend(px.windows(2).map(|w| Obstacle::Segment(w[0], w[1])));
        }
        for part in pieces(&d.x, &d.acc) {
            let px: Vec<(f64, f64)> = part
                .iter()
                .map(|q| {
                    let (a, b) = chart.borrow_secondary().backend_coord(q);
                    (a as f64, b as f64)
                })
                .collect();
            out.extend(px.windows(2).map(|w| Obstacle::Segment(w[0], w[1])));
        }
    }
    out
}

/// Run k's loss (solid, dots at the points), barrier and accuracy (dashed).
fn draw_run(chart: &mut Chart1d, p: &Plan, k: usize) -> Result<()> {
    let (o, e) = (p.o, err("curve"));
    let d = p.runs[k].1;
    let c = p.colour(k);
    for part in pieces(&d.x, &p.loss(k)) {
        chart.draw_series(LineSeries::new(part.iter().copied(), c.stroke_width(o.w(1.5)))).map_err(&e)?;
        if part.len() <= 60 {
            let r = o.pt(1.8) as i32;
            chart.draw_series(part.iter().map(|&q| Circle::new(q, r, c.filled()))).map_err(&e)?;
        }
    }
    if let (Some(b), Some(_)) = (d.barrier, p.barrier_name(k)) {
        // The chord from A's loss to B's (dotted) and the barrier from it up to the curve.
        let t = |v: f64| p.axis.t(v).unwrap_or(p.axis.a);
        let chord = |s: f64| t((1.0 - s) * b.ends[0] + s * b.ends[1]);
        let along: Vec<(f64, f64)> =
            (0..=64).map(|i| i as f64 / 64.0).filter(|s| (p.x.0..=p.x.1).contains(s)).map(|s| (s, chord(s))).collect();
        let faint = c.mix(0.7).stroke_width(o.w(1.0));
        chart.draw_series(DashedLineSeries::new(along, o.pt(2.0) as u32, o.pt(3.0) as u32, faint)).map_err(&e)?;
        let dark = RGBColor(c.0 / 2, c.1 / 2, c.2 / 2);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(b.at, chord(b.at)), (b.at, t(b.value))],
                dark.stroke_width(o.w(2.2)),
            )))
            .map_err(&e)?;
    }
    if p.has_acc {
        let style = c.stroke_width(o.w(1.5));
        for part in pieces(&d.x, &d.acc) {
            chart
                .draw_secondary_series(DashedLineSeries::new(part, o.pt(6.0) as u32, o.pt(3.5) as u32, style))
                .map_err(&e)?;
        }
    }
    Ok(())
}

/// The legend's entries: the quantities' line styles (in the run's colour for one run), each
/// run's colour, the barriers.
fn legend_entries(p: &Plan) -> Vec<(String, Sample)> {
    let one = p.runs.len() == 1;
    let ink = if one { p.colour(0) } else { RGBColor(60, 60, 60) };
    let mut out = vec![("loss".to_string(), Sample::Line(ink, 1.5, false))];
    if p.has_acc {
        out.push(("accuracy (right axis)".into(), Sample::Line(ink, 1.5, true)));
    }
    if !one {
        out.extend(p.runs.iter().enumerate().map(|(k, (n, _))| (n.clone(), Sample::Line(p.colour(k), 3.0, false))));
    }
    if p.shaded.iter().flatten().any(|&s| s) {
        let (c, a) = SHADE;
        out.push((super::panel::shade_name(p.o), Sample::Patch(WHITE, c, a)));
    }
    for k in 0..p.runs.len() {
        if let Some(n) = p.barrier_name(k) {
            let c = p.colour(k);
            out.push((n, Sample::Line(RGBColor(c.0 / 2, c.1 / 2, c.2 / 2), 2.2, false)));
        }
    }
    out
}

/// The veil over the spans of shaded points.
const SHADE: (RGBColor, f64) = (RGBColor(120, 120, 120), 0.25);

/// Veil the span of every shaded point (its cell: from midway to its left neighbour to midway
/// to its right, clipped to the frame), the plot's full height.
fn draw_shade(canvas: &Canvas, chart: &Chart1d, p: &Plan, frame: Rect) {
    let mut rings = Vec::new();
    for ((_, d), shaded) in p.runs.iter().zip(&p.shaded) {
        let e = super::panel::edges(&d.x);
        for i in (0..d.x.len()).filter(|&i| shaded[i]) {
            let px = |v: f64| chart.backend_coord(&(v, p.axis.a)).0 as f64;
            let (xa, xb) = (px(e[i]), px(e[i + 1]));
            let (xa, xb) = if xb - xa < 1.0 { (xa - 0.5, xb + 0.5) } else { (xa, xb) };
            rings.push(vec![(xa, frame.y0), (xb, frame.y0), (xb, frame.y1), (xa, frame.y1)]);
        }
    }
    let (c, a) = SHADE;
    canvas.clip(frame);
    canvas.veil(&rings, c, a);
    canvas.unclip();
}

/// The marks' names (A, B, centre) beside their vertical lines, clear of the curves and legend.
fn draw_marks(
    canvas: &Canvas,
    area: &Area,
    chart: &Chart1d,
    p: &Plan,
    frame: Rect,
    obstacles: &[Obstacle],
) -> Result<()> {
    let o = p.o;
    let marks: Vec<(String, f64)> =
        line_marks(p.runs).into_iter().filter(|(_, a)| *a >= p.x.0 && *a <= p.x.1).collect();
    let mut labels = Vec::new();
    for (name, at) in &marks {
        let (x, _) = chart.backend_coord(&(*at, p.axis.a));
        area.draw(&PathElement::new(
            vec![(x, frame.y0 as i32), (x, frame.y1 as i32)],
            BLACK.mix(0.4).stroke_width(o.w(0.7)),
        ))
        .map_err(err("marks"))?;
        let (w, h) = text_size(o, name, axes::LABEL + 1.0);
        let (w, h) = (w + o.em(3.0), h);
        let rows = 12;
        let candidates = (0..rows)
            .flat_map(|k| {
                let y = frame.y0
                    + h / 2.0
                    + o.em(3.0)
                    + (frame.y1 - frame.y0 - h - o.em(6.0)) * k as f64 / (rows - 1) as f64;
                [(x as f64 + w / 2.0 + o.em(3.0), y), (x as f64 - w / 2.0 - o.em(3.0), y)]
            })
            .collect();
        labels.push(Label { size: (w, h), candidates });
    }
    for ((name, _), b) in marks.iter().zip(layout::place(&labels, obstacles, frame, o.em(2.0))) {
        if let Some(b) = b {
            let look = TextLook { halo: Some(o.pt(1.6)), ..TextLook::new(o.em(axes::LABEL + 1.0)) };
            canvas.text(name, ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0), look);
        }
    }
    Ok(())
}

/// Draw the figure with `headroom` (a fraction of the loss range) above the curves; None when
/// its legend found no place clear of them.
fn attempt(p: &Plan, headroom: f64) -> Result<Option<Canvas>> {
    let canvas = Canvas::new(p.o.inches());
    let area = canvas.area();
    let mut chart = chart(&area, p, headroom)?;
    let frame = axes::frame_of(&chart);
    ticks(&canvas, &chart, p, frame)?;
    let mut obstacles = obstacles(&chart, p);
    let (r, hits) = axes::legend_place(
        frame,
        axes::legend_size(p.o, &legend_entries(p).into_iter().map(|(t, _)| t).collect::<Vec<_>>()),
        &obstacles,
        p.o.em(4.0),
    );
    if hits > 0 && headroom < 1.0 {
        return Ok(None);
    }
    draw_shade(&canvas, &chart, p, frame);
    for k in 0..p.runs.len() {
        draw_run(&mut chart, p, k)?;
    }
    obstacles.push(Obstacle::Rect(r));
    draw_marks(&canvas, &area, &chart, p, frame, &obstacles)?;
    axes::draw_legend(&canvas, p.o, r, &legend_entries(p))?;
    let w = canvas.size().0 as f64;
    axes::draw_title(&canvas, p.o, p.caption, (0.0, w), 0.0);
    axes::axis_title(&canvas, p.o, &p.runs[0].1.x_label, frame, Side::Bottom);
    axes::axis_title(&canvas, p.o, p.axis.scale.axis_title(), frame, Side::Left(p.o.em(8.0)));
    if p.has_acc {
        axes::axis_title(&canvas, p.o, "top-1 accuracy", frame, Side::Right(w - p.o.em(10.0)));
    }
    Ok(Some(canvas))
}

/// 1-D: loss and accuracy against α, one colour per run; written as `out` and its siblings.
pub(super) fn curves(
    out: &Path,
    runs: &Curves,
    o: &PlotOptions,
    look: Option<&Look>,
    caption: &str,
) -> Result<Vec<PathBuf>> {
    let fallback = Look { scale: Scale::Linear, lo: 0.0, hi: 1.0, levels: vec![] };
    let look = look.unwrap_or(&fallback);
    let xs = runs.iter().flat_map(|(_, d)| d.x.iter().copied());
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let x = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let has_acc = runs.iter().any(|(_, d)| d.acc.iter().any(|a| a.is_finite()));
    let shaded: Vec<Vec<bool>> = runs.iter().filter_map(|(_, d)| d.shaded(o).transpose()).collect::<Result<_>>()?;
    let mut headroom = 0.0;
    loop {
        let shaded = shaded.clone();
        let p = Plan { runs, o, axis: LossAxis::new(look, headroom, 8), x, has_acc, caption, shaded };
        if let Some(canvas) = attempt(&p, headroom)? {
            return output::write(&canvas, out, o);
        }
        headroom += 0.15;
    }
}

/// 1-D curvature (`surface --curvature` on a line of points): λmax and λmin against α.
pub(super) fn curvature_curve(d: &RunData, o: &PlotOptions, max: &[f64], min: &[f64]) -> Result<Vec<PathBuf>> {
    let e = err("curvature.png");
    let canvas = Canvas::new(o.inches());
    let area = canvas.area();
    let all = max.iter().chain(min).copied().filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { (lo.min(0.0), hi.max(lo + 1e-12)) } else { (0.0, 1.0) };
    let pad = 0.05 * (hi - lo);
    let (x0, x1) = (d.x[0], d.x[d.nx() - 1]);
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let caption = format!("Hessian eigenvalues — {}", title(d));
    let (ya, yb) = (lo - pad, hi + pad);
    let sy = axes::tick_step(ya, yb, 8);
    let sx = axes::tick_step(x0, x1, 10);
    let left = axes::key_points(ya, yb, 8).iter().map(|&v| text_size(o, &tick(v, sy), TICK).0).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&area)
        .margin_top(axes::title_height(o, &caption, canvas.size().0 as f64) as u32)
        .margin_left(o.em(8.0) as u32)
        .margin_right(o.em(12.0) as u32)
        .margin_bottom(o.em(10.0) as u32)
        .x_label_area_size((o.em(11.0) + text_size(o, "0", TICK).1 + text_size(o, "0", AXIS).1) as u32)
        .y_label_area_size((left + o.em(16.0) + text_size(o, "0", AXIS).1) as u32)
        .build_cartesian_2d(x0..x1, ya..yb)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v, sx))
        .y_label_formatter(&|v| tick(*v, sy))
        .label_style(font(o, TICK))
        .bold_line_style(BLACK.mix(0.1).stroke_width(o.w(0.5)))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .draw()
        .map_err(&e)?;
    let mut obstacles = Vec::new();
    for (k, vals) in [max, min].into_iter().enumerate() {
        let pts: Vec<(f64, f64)> = d.x.iter().zip(vals).filter(|(_, v)| v.is_finite()).map(|(&x, &v)| (x, v)).collect();
        let px: Vec<(f64, f64)> =
            pts.iter().map(|q| chart.backend_coord(q)).map(|(a, b)| (a as f64, b as f64)).collect();
        obstacles.extend(px.windows(2).map(|w| Obstacle::Segment(w[0], w[1])));
        chart.draw_series(LineSeries::new(pts, PALETTE[k].stroke_width(o.w(1.5)))).map_err(&e)?;
    }
    let frame = axes::frame_of(&chart);
    let entries = vec![
        ("λmax".to_string(), Sample::Line(PALETTE[0], 1.5, false)),
        ("λmin".to_string(), Sample::Line(PALETTE[1], 1.5, false)),
    ];
    let (r, _) =
        axes::legend_place(frame, axes::legend_size(o, &["λmax".into(), "λmin".into()]), &obstacles, o.em(4.0));
    axes::draw_legend(&canvas, o, r, &entries)?;
    axes::draw_title(&canvas, o, &caption, (0.0, canvas.size().0 as f64), 0.0);
    axes::axis_title(&canvas, o, &d.x_label, frame, Side::Bottom);
    axes::axis_title(&canvas, o, "eigenvalue", frame, Side::Left(o.em(8.0)));
    output::write(&canvas, &d.dir.join("curvature.png"), o)
}
