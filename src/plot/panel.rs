//! The 2-D panel: the α–β chart of a run cropped to its grid (a thin frame where the data ends),
//! filled with filled contours, cells or other values, level lines, the path and marked points in
//! colours that stand out from viridis (with white outlines), labels placed by `layout` so that
//! none overlaps another, the path, a marker, the legend or the frame, and a colour bar touching
//! the plot. `contour.png`, `heatmap.png` and `curvature.png` are one panel each; a side-by-side
//! figure is several.

use std::path::PathBuf;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{self, err, font, text_size, viridis, Sample, Side, AXIS, LABEL, TICK};
use super::canvas::{Area, Canvas, TextLook};
use super::contours;
use super::critical::{CriticalPoint, Kind};
use super::layout::{self, Label, Obstacle, Rect};
use super::scale::{tick, Scale};
use super::{output, title, Look, PathKind, PlotOptions, RunData, Style};
use crate::error::Result;

/// The optimizer's path: a red that no part of viridis comes near.
pub(super) const PATH: RGBColor = RGBColor(228, 0, 58);
pub(super) const HOLE: RGBColor = RGBColor(200, 200, 200);

/// A label to place: its text and where it may go.
type TextLabel = (String, Label);

/// One figure of a run: its data, the options, the figure's look and its critical points.
#[derive(Clone, Copy)]
pub(super) struct Picture<'a> {
    pub d: &'a RunData,
    pub o: &'a PlotOptions,
    pub look: Option<&'a Look>,
    pub crit: &'a [CriticalPoint],
}

/// What a panel fills its plot with.
pub(super) enum Fill<'v> {
    /// Nothing (contour lines on white; holes grey).
    Lines,
    /// The loss in the figure's look (filled contours or cells, by `--style`), thin level lines.
    Loss,
    /// Other values over a range (the curvature map), no level lines.
    Values(&'v dyn Fn(usize, usize) -> Option<f64>, (f64, f64)),
}

pub(super) fn marker_style(k: Kind) -> (RGBColor, &'static str) {
    match k {
        Kind::Minimum => (WHITE, "local minimum"),
        Kind::Maximum => (RGBColor(228, 0, 58), "local maximum"),
        Kind::Saddle => (RGBColor(255, 159, 28), "saddle"),
    }
}

/// The outline of a marker, in canvas units around its centre: circle (minimum), triangle
/// (maximum), diamond (saddle).
fn marker_shape(k: Kind, r: i32) -> Vec<(i32, i32)> {
    let r = r as f64;
    let ring = |n: usize, start: f64, rad: f64| -> Vec<(i32, i32)> {
        (0..n)
            .map(|t| {
                let a = start + std::f64::consts::TAU * t as f64 / n as f64;
                ((rad * a.cos()).round() as i32, (rad * a.sin()).round() as i32)
            })
            .collect()
    };
    match k {
        Kind::Minimum => ring(24, 0.0, r),
        Kind::Maximum => ring(3, -std::f64::consts::FRAC_PI_2, r * 1.3),
        Kind::Saddle => ring(4, 0.0, r * 1.3),
    }
}

type Marker<C, DB> = plotters::element::ComposedElement<C, DB, Polygon<(i32, i32)>, PathElement<(i32, i32)>>;

/// A marker as an element at `at` (data or canvas coordinates): filled shape, black outline.
pub(super) fn marker<C, DB: DrawingBackend>(k: Kind, at: C, r: i32, line: u32) -> Marker<C, DB> {
    let shape = marker_shape(k, r);
    let mut outline = shape.clone();
    outline.push(shape[0]);
    let (fill, _) = marker_style(k);
    EmptyElement::at(at) + Polygon::new(shape, fill.filled()) + PathElement::new(outline, BLACK.stroke_width(line))
}

pub(super) type Chart2d<'a> = ChartContext<
    'a,
    Canvas,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The α–β extent of a run's grid (a single point widened to a unit).
pub(super) fn extent(d: &RunData) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let y = d.y.as_ref().expect("2-D");
    let pad = |a: f64, b: f64| if b > a { a..b } else { a - 0.5..a + 0.5 };
    (pad(d.x[0], d.x[d.nx() - 1]), pad(y[0], y[y.len() - 1]))
}

/// The space around a panel's frame, in canvas units.
#[derive(Debug, Clone, Copy)]
pub(super) struct Margins {
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Margins {
    /// A panel of `d` `width` units wide titled `caption`, with a colour bar of `bar` units beside it.
    pub fn of(d: &RunData, o: &PlotOptions, caption: &str, width: f64, bar: f64) -> Margins {
        let (_, yr) = extent(d);
        let s = axes::tick_step(yr.start, yr.end, 8);
        let ticks = axes::key_points(yr.start, yr.end, 8);
        let tw = ticks.iter().map(|&v| text_size(o, &tick(v, s), TICK).0).fold(0.0, f64::max);
        let (th, ah) = (text_size(o, "0", TICK).1, text_size(o, "0", AXIS).1);
        let y_title = if d.y_label.is_empty() { 0.0 } else { ah + o.em(6.0) };
        Margins {
            left: o.em(8.0) + y_title + tw + o.em(8.0),
            right: if bar > 0.0 { bar } else { o.em(14.0) },
            top: axes::title_height(o, caption, width),
            bottom: o.em(5.0) + th + o.em(6.0) + ah + o.em(10.0),
        }
    }

    fn wide(&self) -> f64 {
        self.left + self.right
    }

    fn high(&self) -> f64 {
        self.top + self.bottom
    }
}

/// The canvas size (inches) of a one-panel figure: the options' size, cropped with equal units
/// so that the plot is the grid's shape instead of padded around it.
pub(super) fn panel_inches(p: &Picture, caption: &str, bar: f64) -> (f64, f64) {
    let (w, h) = p.o.inches();
    let u = super::canvas::UNITS;
    if !p.d.equal_aspect(p.o) {
        return (w, h);
    }
    let m = Margins::of(p.d, p.o, caption, w * u, bar);
    let (xr, yr) = extent(p.d);
    let (iw, ih) = (w * u - m.wide(), h * u - m.high());
    if iw <= 0.0 || ih <= 0.0 {
        return (w, h);
    }
    let ratio = (yr.end - yr.start) / (xr.end - xr.start);
    // Cropped, but not below 40% of the plot's height or width: a flatter grid is padded (the
    // frame still shows where it ends) rather than drawn as a sliver.
    if ih / iw > ratio {
        (w, (m.high() + (iw * ratio).max(0.4 * ih)) / u)
    } else {
        ((m.wide() + (ih / ratio).max(0.4 * iw)) / u, h)
    }
}

/// The α–β ranges of a panel whose plot is `w`×`h` units: the grid's extent, widened around its
/// centre so that one unit is as long on both axes when `equal`.
fn ranges(d: &RunData, equal: bool, (w, h): (f64, f64)) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (xr, yr) = extent(d);
    if !equal || w <= 0.0 || h <= 0.0 {
        return (xr, yr);
    }
    let (sx, sy) = ((xr.end - xr.start) / w, (yr.end - yr.start) / h);
    if sx > sy {
        let (c, half) = ((yr.start + yr.end) / 2.0, sx * h / 2.0);
        (xr, c - half..c + half)
    } else {
        let (c, half) = ((xr.start + xr.end) / 2.0, sy * w / 2.0);
        (c - half..c + half, yr)
    }
}

/// The α–β chart of a panel, cropped to the grid (padded only where equal units need it); with
/// the frame of the grid's extent (canvas units).
fn chart2d<'a>(area: &'a Area, d: &RunData, o: &PlotOptions, m: Margins) -> Result<(Chart2d<'a>, Rect)> {
    let e = err("2-D chart");
    let (w, h) = area.dim_in_pixel();
    let inner = (w as f64 - m.wide(), h as f64 - m.high());
    let (xr, yr) = ranges(d, d.equal_aspect(o), inner);
    let (sx, sy) = (axes::tick_step(xr.start, xr.end, 8), axes::tick_step(yr.start, yr.end, 8));
    let tick_h = text_size(o, "0", TICK).1;
    let mut chart = ChartBuilder::on(area)
        .margin_top(m.top as u32)
        .margin_right(m.right as u32)
        .margin_left(o.em(8.0) as u32)
        .margin_bottom(o.em(10.0) as u32)
        .x_label_area_size((m.bottom - o.em(10.0)) as u32)
        .y_label_area_size((m.left - o.em(8.0)) as u32)
        .build_cartesian_2d(xr, yr)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v, sx))
        .y_label_formatter(&|v| tick(*v, sy))
        .label_style(font(o, TICK))
        .set_all_tick_mark_size(o.em(4.0) as u32)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .x_label_offset(0)
        .draw()
        .map_err(&e)?;
    let _ = tick_h;
    let (gx, gy) = extent(d);
    let (a, b) = (chart.backend_coord(&(gx.start, gy.end)), chart.backend_coord(&(gx.end, gy.start)));
    let frame = Rect { x0: a.0 as f64, y0: a.1 as f64, x1: b.0 as f64, y1: b.1 as f64 };
    Ok((chart, frame))
}

/// The cells' edges along one axis: halfway between samples, half a step beyond the ends.
pub(super) fn edges(v: &[f64]) -> Vec<f64> {
    let n = v.len();
    if n == 1 {
        return vec![v[0] - 0.5, v[0] + 0.5];
    }
    let mut out = vec![v[0] - (v[1] - v[0]) / 2.0];
    out.extend(v.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    out.push(v[n - 1] + (v[n - 1] - v[n - 2]) / 2.0);
    out
}

/// Cells coloured by `colour` (None: not drawn).
fn draw_cells(chart: &mut Chart2d, d: &RunData, colour: &dyn Fn(usize, usize) -> Option<RGBColor>) -> Result<()> {
    let (ex, ey) = (edges(&d.x), edges(d.y.as_ref().expect("2-D")));
    let cells = (0..d.ny()).flat_map(|j| (0..d.nx()).map(move |i| (i, j)));
    chart
        .draw_series(cells.filter_map(|(i, j)| {
            colour(i, j).map(|c| Rectangle::new([(ex[i], ey[j]), (ex[i + 1], ey[j + 1])], c.filled()))
        }))
        .map_err(err("cells"))?;
    Ok(())
}

/// Holes of filled contours: every quad between four samples with a non-finite corner is grey
/// (as matplotlib leaves the quads of a masked point empty), so that no band is drawn towards a
/// value that does not exist.
fn draw_hole_quads(chart: &mut Chart2d, d: &RunData) -> Result<()> {
    let y = d.y.as_ref().expect("2-D");
    let bad = |i: usize, j: usize| !d.at(i, j).is_finite();
    let quads = (0..d.ny().saturating_sub(1)).flat_map(|j| (0..d.nx().saturating_sub(1)).map(move |i| (i, j)));
    chart
        .draw_series(
            quads
                .filter(|&(i, j)| bad(i, j) || bad(i + 1, j) || bad(i, j + 1) || bad(i + 1, j + 1))
                .map(|(i, j)| Rectangle::new([(d.x[i], y[j]), (d.x[i + 1], y[j + 1])], HOLE.filled())),
        )
        .map_err(err("holes"))?;
    Ok(())
}

/// The veil over shaded points: white over colours, grey over contour lines on white.
pub(super) fn veil(fill: &Fill) -> (RGBColor, f64) {
    match fill {
        Fill::Lines => (RGBColor(120, 120, 120), 0.25),
        _ => (WHITE, 0.6),
    }
}

/// The legend's words for the shaded points.
pub(super) fn shade_name(o: &PlotOptions) -> String {
    format!("stderr > {}% of the loss", super::scale::short(100.0 * o.shade_stderr.unwrap_or(0.0)))
}

/// Veil the cells of the points marked in `shaded` (`--shade-stderr`), each row's run of
/// neighbouring cells as one rectangle; returns the legend's entry.
fn shade(canvas: &Canvas, chart: &Chart2d, p: &Picture, fill: &Fill, shaded: &[bool]) -> (String, Sample) {
    let d = p.d;
    let (ex, ey) = (edges(&d.x), edges(d.y.as_ref().expect("2-D")));
    let to = |x: f64, y: f64| {
        let (a, b) = chart.backend_coord(&(x, y));
        (a as f64, b as f64)
    };
    let mut rings = Vec::new();
    for j in 0..d.ny() {
        let mut i = 0;
        while i < d.nx() {
            if !shaded[j * d.nx() + i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < d.nx() && shaded[j * d.nx() + i] {
                i += 1;
            }
            let (x0, x1, y0, y1) = (ex[start], ex[i], ey[j], ey[j + 1]);
            rings.push(vec![to(x0, y0), to(x1, y0), to(x1, y1), to(x0, y1)]);
        }
    }
    let (c, a) = veil(fill);
    canvas.veil(&rings, c, a);
    let under = if matches!(fill, Fill::Lines) { WHITE } else { viridis(0.5) };
    (shade_name(p.o), Sample::Patch(under, c, a))
}

/// Filled contours: the lowest band over the whole grid, then the area above each level in the
/// next band's colour.
fn draw_bands(canvas: &Canvas, chart: &Chart2d, d: &RunData, look: &Look) -> Result<()> {
    let colours = axes::band_colours(look);
    let y = d.y.as_ref().expect("2-D");
    let to_canvas = |p: &(f64, f64)| {
        let (a, b) = chart.backend_coord(p);
        (a as f64, b as f64)
    };
    let (xr, yr) = extent(d);
    let whole = [(xr.start, yr.start), (xr.end, yr.start), (xr.end, yr.end), (xr.start, yr.end)];
    canvas.rings(&[whole.iter().map(to_canvas).collect()], colours[0]);
    for (rings, c) in contours::areas_above(&d.x, y, &d.loss, &look.levels)?.iter().zip(&colours[1..]) {
        let rings: Vec<Vec<(f64, f64)>> = rings.iter().map(|r| r.iter().map(to_canvas).collect()).collect();
        canvas.rings(&rings, *c);
    }
    Ok(())
}

/// The fill of a panel and its level lines; returns the labels the lines want.
fn fill_and_lines(canvas: &Canvas, chart: &mut Chart2d, p: &Picture, fill: &Fill) -> Result<Vec<(String, Label)>> {
    let (d, o, look) = (p.d, p.o, p.look);
    let hole = |i: usize, j: usize| (!d.at(i, j).is_finite()).then_some(HOLE);
    match (fill, look) {
        (Fill::Lines, _) => draw_cells(chart, d, &hole)?,
        (Fill::Loss, Some(l)) if o.style == Style::Bands && !l.levels.is_empty() => {
            draw_bands(canvas, chart, d, l)?;
            draw_hole_quads(chart, d)?;
        }
        (Fill::Loss, _) => {
            draw_cells(chart, d, &|i, j| Some(look.and_then(|l| l.frac(d.at(i, j))).map_or(HOLE, viridis)))?
        }
        (Fill::Values(v, (lo, hi)), _) => {
            draw_cells(chart, d, &|i, j| Some(v(i, j).map_or(HOLE, |t| viridis((t - lo) / (hi - lo).max(1e-300)))))?
        }
    }
    let mut labels = Vec::new();
    let Some(look) = look.filter(|_| !matches!(fill, Fill::Values(..))) else { return Ok(labels) };
    let names = super::scale::distinct(&look.levels);
    for ((level, mut runs), text) in contours::level_lines(d, &look.levels)?.into_iter().zip(names) {
        let style = match fill {
            Fill::Lines => viridis(0.9 * look.frac(level).unwrap_or(0.0)).stroke_width(o.w(1.4)),
            _ => WHITE.mix(0.6).stroke_width(o.w(0.6)),
        };
        let mut candidates = Vec::new();
        runs.sort_by_key(|r| std::cmp::Reverse(r.len()));
        for run in &runs {
            chart.draw_series(std::iter::once(PathElement::new(run.clone(), style))).map_err(err("level lines"))?;
            let pix: Vec<(f64, f64)> = run
                .iter()
                .map(|q| {
                    let (a, b) = chart.backend_coord(q);
                    (a as f64, b as f64)
                })
                .collect();
            candidates.extend(layout::along(&pix, 3));
        }
        if matches!(fill, Fill::Lines) && !candidates.is_empty() {
            let (w, h) = text_size(o, &text, LABEL);
            labels.push((text, Label { size: (w + o.em(3.0), h), candidates }));
        }
    }
    Ok(labels)
}

/// One 2-D panel on `area` (a part of `canvas`): fill, level lines, path, markers, labels, legend,
/// title and axis titles; with a colour bar beside it when `bar` is given. Returns its frame.
pub(super) fn panel(
    canvas: &Canvas,
    area: &Area,
    p: &Picture,
    fill: Fill,
    caption: &str,
    bar: Option<(&Look, &str)>,
) -> Result<Rect> {
    let o = p.o;
    let (w, _) = area.dim_in_pixel();
    let bar_w = bar.map_or(0.0, |(l, _)| axes::bar_width(o, l));
    let m = Margins::of(p.d, o, caption, w as f64, bar_w);
    let (mut chart, frame) = chart2d(area, p.d, o, m)?;
    let plot = axes::frame_of(&chart);
    canvas.clip(frame);
    let labels = fill_and_lines(canvas, &mut chart, p, &fill)?;
    let shaded = match fill {
        Fill::Values(..) => None,
        _ => p.d.shaded(o)?.filter(|s| s.contains(&true)).map(|s| shade(canvas, &chart, p, &fill, &s)),
    };
    canvas.unclip();
    axes::draw_frame(canvas, o, frame)?;
    let (mut obstacles, point_labels) = overlays(&mut chart, p)?;
    let mut legend = legend_entries(p.d, p.crit);
    legend.extend(shaded);
    let mut legend_at = None;
    if !legend.is_empty() {
        let names: Vec<String> = legend.iter().map(|(t, _)| t.clone()).collect();
        let (r, _) = axes::legend_place(plot, axes::legend_size(o, &names), &obstacles, o.em(4.0));
        obstacles.push(Obstacle::Rect(r));
        legend_at = Some(r);
    }
    place_labels(canvas, o, frame, &obstacles, point_labels, labels)?;
    if let Some(r) = legend_at {
        axes::draw_legend(canvas, o, r, &legend)?;
    }
    let (x0, y0) = area.get_base_pixel();
    axes::draw_title(canvas, o, caption, (x0 as f64, x0 as f64 + w as f64), y0 as f64);
    axes::axis_title(canvas, o, &p.d.x_label, plot, Side::Bottom);
    axes::axis_title(canvas, o, &p.d.y_label, plot, Side::Left(x0 as f64 + o.em(8.0)));
    if let Some((look, t)) = bar {
        axes::colour_bar(canvas, o, look, plot, t)?;
    }
    Ok(plot)
}

/// Place the point labels (first) and the level labels, and draw those that found room.
fn place_labels(
    canvas: &Canvas,
    o: &PlotOptions,
    frame: Rect,
    obstacles: &[Obstacle],
    points: Vec<(String, Label)>,
    levels: Vec<(String, Label)>,
) -> Result<()> {
    let mut all: Vec<(String, Label, bool)> = points.into_iter().map(|(t, l)| (t, l, true)).collect();
    all.extend(levels.into_iter().map(|(t, l)| (t, l, false)));
    let boxes: Vec<Label> = all.iter().map(|(_, l, _)| l.clone()).collect();
    let placed = layout::place(&boxes, obstacles, frame.grow(-o.em(2.0)), o.em(4.0));
    for ((text, _, point), b) in all.iter().zip(placed) {
        let Some(b) = b else { continue };
        let c = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
        if *point {
            let look = TextLook { halo: Some(o.pt(1.6)), ..TextLook::new(o.em(LABEL + 1.0)) };
            canvas.text(text, c, look);
        } else {
            // Inline, as matplotlib's clabel: the line is hidden under its label.
            canvas
                .root()
                .draw(&Rectangle::new([(b.x0 as i32, b.y0 as i32), (b.x1 as i32, b.y1 as i32)], WHITE.filled()))
                .map_err(err("label"))?;
            canvas.text(
                text,
                c,
                TextLook { anchor: Pos::new(HPos::Center, VPos::Center), ..TextLook::new(o.em(LABEL)) },
            );
        }
    }
    Ok(())
}

fn legend_entries(d: &RunData, crit: &[CriticalPoint]) -> Vec<(String, Sample)> {
    let mut out: Vec<(String, Sample)> = [Kind::Minimum, Kind::Saddle, Kind::Maximum]
        .iter()
        .filter_map(|&k| {
            let n = crit.iter().filter(|p| p.kind == k).count();
            (n > 0).then(|| (format!("{} ({n})", marker_style(k).1), Sample::Marker(k)))
        })
        .collect();
    if d.path.is_some() {
        let sample =
            if d.path_kind == PathKind::Optimizer { Sample::Path(PATH) } else { Sample::Line(PATH, 1.8, false) };
        out.push((path_name(d), sample));
    }
    out
}

/// The legend's name of a run's path.
pub(super) fn path_name(d: &RunData) -> String {
    match d.path_kind {
        PathKind::Optimizer => "optimizer path".to_string(),
        PathKind::Curve(k) => format!("trained {k} curve"),
    }
}

fn pix(chart: &Chart2d, p: (f64, f64)) -> (f64, f64) {
    let (a, b) = chart.backend_coord(&p);
    (a as f64, b as f64)
}

/// A label for a point marker of radius `rad` at `at`, with candidate places around it.
fn point_label(chart: &Chart2d, o: &PlotOptions, text: &str, at: (f64, f64), rad: f64) -> (String, Label) {
    let (w, h) = text_size(o, text, LABEL + 1.0);
    let size = (w + o.em(3.0), h);
    (text.to_string(), Label { size, candidates: layout::around_point(pix(chart, at), rad + o.em(5.0), size) })
}

/// Path, named points and critical points; returns what labels must avoid and the labels of the
/// path's ends and the named points.
fn overlays(chart: &mut Chart2d, p: &Picture) -> Result<(Vec<Obstacle>, Vec<TextLabel>)> {
    let (d, o) = (p.d, p.o);
    let e = err("overlay");
    // Markers go with the text: smaller in a figure with smaller letters.
    let r = o.em(4.3).round() as i32;
    let mut obstacles = Vec::new();
    let mut labels = Vec::new();
    // Named points (centre; the models of a plane): a black cross with a white outline, drawn
    // first so that a critical point at the same place stays visible on top.
    let arm = r + o.em(2.2).round() as i32;
    for (name, q) in &d.marks {
        let at = (q[0], q[1]);
        for (colour, w) in [(WHITE, o.w(3.6)), (BLACK, o.w(1.4))] {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + PathElement::new(vec![(-arm, 0), (arm, 0)], colour.stroke_width(w))
                        + PathElement::new(vec![(0, -arm), (0, arm)], colour.stroke_width(w)),
                ))
                .map_err(&e)?;
        }
        obstacles.push(Obstacle::Rect(Rect::around(pix(chart, at), arm as f64)));
        labels.push(point_label(chart, o, name, at, arm as f64));
    }
    if let Some(path) = &d.path {
        path_overlay(chart, p, path, r, &mut obstacles, &mut labels)?;
    }
    for kind in [Kind::Minimum, Kind::Saddle, Kind::Maximum] {
        let pts: Vec<(f64, f64)> =
            p.crit.iter().filter(|c| c.kind == kind).map(|c| (c.coords[0], c.coords[1])).collect();
        if pts.is_empty() {
            continue;
        }
        for &q in &pts {
            obstacles.push(Obstacle::Rect(Rect::around(pix(chart, q), (r + 2) as f64)));
        }
        let line = o.w(1.2);
        chart.draw_series(pts.iter().map(|&q| marker(kind, q, r, line))).map_err(&e)?;
    }
    Ok((obstacles, labels))
}

/// The path (white-outlined), its checkpoints as dots, its start and end marked and labelled.
fn path_overlay(
    chart: &mut Chart2d,
    p: &Picture,
    path: &[[f64; 2]],
    r: i32,
    obstacles: &mut Vec<Obstacle>,
    labels: &mut Vec<(String, Label)>,
) -> Result<()> {
    let (d, o) = (p.d, p.o);
    let e = err("path");
    let pts: Vec<(f64, f64)> = path.iter().map(|q| (q[0], q[1])).collect();
    chart.draw_series(std::iter::once(PathElement::new(pts.clone(), WHITE.stroke_width(o.w(3.6))))).map_err(&e)?;
    chart.draw_series(std::iter::once(PathElement::new(pts.clone(), PATH.stroke_width(o.w(1.8))))).map_err(&e)?;
    for w in pts.windows(2) {
        obstacles.push(Obstacle::Segment(pix(chart, w[0]), pix(chart, w[1])));
    }
    // The optimizer's checkpoints as dots, its start and end marked (a trained curve runs
    // between two models marked already).
    if d.path_kind != PathKind::Optimizer {
        return Ok(());
    }
    let dot = (r - 1).max(2);
    let thin = o.w(0.7);
    chart
        .draw_series(pts.iter().map(|&q| {
            EmptyElement::at(q)
                + Circle::new((0, 0), dot, PATH.filled())
                + Circle::new((0, 0), dot, WHITE.stroke_width(thin))
        }))
        .map_err(&e)?;
    let (s, t) = (pts[0], pts[pts.len() - 1]);
    let edge = o.w(2.0);
    chart
        .draw_series(std::iter::once(
            EmptyElement::at(s)
                + Rectangle::new([(-r, -r), (r, r)], WHITE.filled())
                + Rectangle::new([(-r, -r), (r, r)], PATH.stroke_width(edge)),
        ))
        .map_err(&e)?;
    chart
        .draw_series(std::iter::once(
            EmptyElement::at(t)
                + Circle::new((0, 0), r + 2, WHITE.filled())
                + Circle::new((0, 0), r + 2, PATH.stroke_width(edge)),
        ))
        .map_err(&e)?;
    for q in [s, t] {
        obstacles.push(Obstacle::Rect(Rect::around(pix(chart, q), (r + 4) as f64)));
    }
    labels.push(point_label(chart, o, "start", s, (r + 3) as f64));
    labels.push(point_label(chart, o, "end", t, (r + 4) as f64));
    Ok(())
}

/// A figure of one panel (and its colour bar), written in every format asked for.
fn single(p: &Picture, file: &str, fill: Fill, caption: &str, bar: Option<(&Look, &str)>) -> Result<Vec<PathBuf>> {
    let bar_w = bar.map_or(0.0, |(l, _)| axes::bar_width(p.o, l));
    let canvas = Canvas::new(panel_inches(p, caption, bar_w));
    let area = canvas.area();
    panel(&canvas, &area, p, fill, caption, bar)?;
    output::write(&canvas, &p.d.dir.join(file), p.o)
}

/// Contour lines at the look's levels, labelled, with the path, the marked points and a colour bar.
pub(super) fn contour(p: &Picture) -> Result<Vec<PathBuf>> {
    let caption = title(p.d);
    single(p, "contour.png", Fill::Lines, &caption, p.look.map(|l| (l, l.scale.axis_title())))
}

/// Filled contours (or cells, holes grey) with thin level lines and a colour bar.
pub(super) fn heatmap(p: &Picture) -> Result<Vec<PathBuf>> {
    let caption = title(p.d);
    single(p, "heatmap.png", Fill::Loss, &caption, p.look.map(|l| (l, l.scale.axis_title())))
}

/// Li et al.'s map of |λmin / λmax| over the grid (`surface --curvature`): near 0 where the
/// surface is convex, large where negative curvature is strong.
pub(super) fn curvature_map(d: &RunData, o: &PlotOptions, ratio: &[f64]) -> Result<Vec<PathBuf>> {
    let finite = ratio.iter().copied().filter(|v| v.is_finite());
    let hi = finite.fold(0.0f64, f64::max).max(1e-12);
    let value = |i: usize, j: usize| Some(ratio[j * d.nx() + i]).filter(|v| v.is_finite());
    let caption = format!("|λmin / λmax| of the Hessian — {}", title(d));
    let look = Look { scale: Scale::Linear, lo: 0.0, hi, levels: vec![] };
    let p = Picture { d, o, look: None, crit: &[] };
    single(&p, "curvature.png", Fill::Values(&value, (0.0, hi)), &caption, Some((&look, "|λmin / λmax|")))
}
