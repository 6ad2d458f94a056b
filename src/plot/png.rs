//! PNG pictures drawn with plotters (bitmap backend, an embedded font so that no system fonts are
//! needed) and contour lines from the `contour` crate (marching squares). Every 2-D picture is a
//! panel: cells or level lines in the figure's `Look`, the path and markers in colours that stand
//! out from viridis (with white outlines), and labels placed by `layout` so that none overlaps
//! another, the path, a marker, the legend or the frame.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use contour::ContourBuilder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::critical::{CriticalPoint, Kind, Persistence};
use super::layout::{self, Label, Obstacle, Rect};
use super::scale::{short, tick, Scale};
use super::{title, Look, PathKind, PlotOptions, RunData};

/// Register the embedded font (Ubuntu Light, from epaint_default_fonts) as "sans-serif".
pub fn font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::other("internal: the embedded font did not load"))
    }
}

pub(super) fn size(o: &PlotOptions) -> (u32, u32) {
    (8 * o.dpi, 32 * o.dpi / 5)
}

pub(super) fn px(o: &PlotOptions, points: f64) -> u32 {
    (points * o.dpi as f64 / 100.0).round().max(1.0) as u32
}

pub(super) fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::other(format!("{what}: {e}"))
}

fn viridis(t: f64) -> RGBColor {
    ViridisRGB::get_color(t.clamp(0.0, 1.0))
}

/// The optimizer's path: a red that no part of viridis comes near.
const PATH: RGBColor = RGBColor(228, 0, 58);
const HOLE: RGBColor = RGBColor(200, 200, 200);

pub(super) type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

/// The tick step plotters takes for the range [a, b] cut into at most `n` labels (its key-point
/// rule: 10^k divided by 2, 5 or 10 while the labels, aligned to the step, still fit), so that
/// every label of an axis gets the same number of decimals.
fn tick_step(a: f64, b: f64, n: usize) -> f64 {
    let span = b - a;
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let rem = |v: f64, m: f64| v - (v / m).floor() * m;
    let mut scale = 10f64.powf(span.log10().floor());
    if 1 + (span / scale).floor() as usize > n {
        scale *= 10.0;
    }
    loop {
        let old = scale;
        for nxt in [2.0, 5.0, 10.0] {
            let step = old / nxt;
            let mut left = a - rem(a, step);
            if left < a {
                left += step;
            }
            let right = b - rem(b, step);
            if (1.0 + (right - left) / step).round() as usize > n {
                return scale;
            }
            scale = step;
        }
        if scale < span * 1e-9 {
            return scale;
        }
    }
}

/// Where a label's text goes: centred on its box.
fn centred(o: &PlotOptions, size: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", px(o, size)).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
}

/// Text with a white halo, centred at a pixel of `root`.
fn halo_text(root: &Area, text: &str, at: (i32, i32), o: &PlotOptions, size: f64) -> Result<()> {
    let e = err("label");
    let style = centred(o, size);
    let white = style.color(&WHITE);
    let w = px(o, 1.5) as i32;
    for (dx, dy) in [(-w, 0), (w, 0), (0, -w), (0, w), (-w, -w), (w, w), (-w, w), (w, -w)] {
        root.draw(&Text::new(text.to_string(), (at.0 + dx, at.1 + dy), white.clone())).map_err(&e)?;
    }
    root.draw(&Text::new(text.to_string(), at, style)).map_err(&e)?;
    Ok(())
}

fn text_size(root: &Area, text: &str, o: &PlotOptions, size: f64) -> (f64, f64) {
    let font = ("sans-serif", px(o, size)).into_font();
    root.estimate_text_size(text, &TextStyle::from(font))
        .map(|(w, h)| (w as f64, h as f64))
        .unwrap_or((text.len() as f64 * 8.0, 14.0))
}

/// The plotting area of a chart, in pixels of the whole picture.
fn frame_of<DB: DrawingBackend, CT: CoordTranslate>(chart: &ChartContext<DB, CT>) -> Rect {
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    Rect { x0: xr.start as f64, y0: yr.start as f64, x1: xr.end as f64, y1: yr.end as f64 }
}

/// Where the legend of `entries` sits in the upper right corner of `frame` (an estimate of
/// plotters' box: the widest entry, its sample and margins): an obstacle for labels.
fn legend_box(root: &Area, frame: Rect, entries: &[String], o: &PlotOptions) -> Obstacle {
    let w = entries.iter().map(|t| text_size(root, t, o, 13.0).0).fold(0.0, f64::max) + px(o, 45.0) as f64;
    let h = entries.len() as f64 * (px(o, 13.0) as f64 + 8.0) + 14.0;
    Obstacle::Rect(Rect { x0: frame.x1 - w - 10.0, y0: frame.y0, x1: frame.x1, y1: frame.y0 + h + 10.0 })
}

/// The corner of `frame` for a legend of `entries` that the fewest `obstacles` (the curves' segments)
/// cross, upper right first on a tie: plotters' position and the box, an obstacle for labels.
fn legend_corner(
    root: &Area,
    frame: Rect,
    entries: &[String],
    o: &PlotOptions,
    obstacles: &[Obstacle],
) -> (SeriesLabelPosition, Obstacle) {
    let Obstacle::Rect(upper_right) = legend_box(root, frame, entries, o) else { unreachable!("a box") };
    let (w, h) = (upper_right.x1 - upper_right.x0, upper_right.y1 - upper_right.y0);
    let (left, right, top, bottom) = (frame.x0, frame.x1 - w, frame.y0, frame.y1 - h);
    [
        (SeriesLabelPosition::UpperRight, right, top),
        (SeriesLabelPosition::UpperLeft, left, top),
        (SeriesLabelPosition::LowerRight, right, bottom),
        (SeriesLabelPosition::LowerLeft, left, bottom),
    ]
    .into_iter()
    .map(|(at, x0, y0)| (at, Rect { x0, y0, x1: x0 + w, y1: y0 + h }))
    .min_by_key(|(_, r)| obstacles.iter().filter(|ob| ob.hits(r)).count())
    .map(|(at, r)| (at, Obstacle::Rect(r)))
    .expect("four corners")
}

/// The legend of the labelled series of a chart, in the style of every picture.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
    o: &PlotOptions,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", px(o, 13.0)))
        .draw()
        .map_err(err("legend"))
}

fn marker_style(k: Kind) -> (RGBColor, &'static str) {
    match k {
        Kind::Minimum => (WHITE, "local minimum"),
        Kind::Maximum => (RGBColor(228, 0, 58), "local maximum"),
        Kind::Saddle => (RGBColor(255, 159, 28), "saddle"),
    }
}

/// The outline of a marker, in pixels around its centre: circle (minimum), triangle (maximum),
/// diamond (saddle).
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
        Kind::Minimum => ring(16, 0.0, r),
        Kind::Maximum => ring(3, -std::f64::consts::FRAC_PI_2, r * 1.3),
        Kind::Saddle => ring(4, 0.0, r * 1.3),
    }
}

type Marker<C, DB> = plotters::element::ComposedElement<C, DB, Polygon<(i32, i32)>, PathElement<(i32, i32)>>;

/// Level lines: per level, its polylines in α–β coordinates.
pub(super) type Levels = Vec<(f64, Vec<Vec<(f64, f64)>>)>;

/// A label to place: its text and where it may go.
type TextLabel = (String, Label);

/// A marker as an element at `at` (data or pixel coordinates): filled shape, black outline.
fn marker<C, DB: DrawingBackend>(k: Kind, at: C, r: i32) -> Marker<C, DB> {
    let shape = marker_shape(k, r);
    let mut outline = shape.clone();
    outline.push(shape[0]);
    let (fill, _) = marker_style(k);
    EmptyElement::at(at) + Polygon::new(shape, fill.filled()) + PathElement::new(outline, BLACK.stroke_width(2))
}

type Chart2d<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The α–β ranges of a run; widened so that one unit is as long on both axes when `equal` (the
/// plotting area is `w`×`h` pixels).
fn chart_ranges(d: &RunData, equal: Option<(f64, f64)>) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let y = d.y.as_ref().expect("2-D");
    let pad = |a: f64, b: f64| if b > a { (a, b) } else { (a - 0.5, a + 0.5) };
    let (mut x0, mut x1) = pad(d.x[0], d.x[d.nx() - 1]);
    let (mut y0, mut y1) = pad(y[0], y[y.len() - 1]);
    if let Some((w, h)) = equal {
        let (sx, sy) = ((x1 - x0) / w, (y1 - y0) / h);
        if sx > sy {
            let (c, half) = ((y0 + y1) / 2.0, sx * h / 2.0);
            (y0, y1) = (c - half, c + half);
        } else {
            let (c, half) = ((x0 + x1) / 2.0, sy * w / 2.0);
            (x0, x1) = (c - half, c + half);
        }
    }
    (x0..x1, y0..y1)
}

/// The titled, labelled α–β chart of a panel.
fn chart2d<'a, 'b>(area: &'a Area<'b>, d: &RunData, o: &PlotOptions, caption: &str) -> Result<Chart2d<'a, 'b>> {
    let e = err("2-D chart");
    let (w, h) = area.dim_in_pixel();
    let (xl, yl, margin, cap) = (px(o, 45.0), px(o, 60.0), px(o, 12.0), px(o, 18.0));
    let inner = ((w.saturating_sub(yl + 2 * margin)) as f64, (h.saturating_sub(xl + 2 * margin + 2 * cap)) as f64);
    let equal = d.equal_aspect(o).then_some(inner).filter(|(a, b)| *a > 0.0 && *b > 0.0);
    let (xr, yr) = chart_ranges(d, equal);
    let (sx, sy) = (tick_step(xr.start, xr.end, 8), tick_step(yr.start, yr.end, 8));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", cap))
        .margin(margin)
        .x_label_area_size(xl)
        .y_label_area_size(yl)
        .build_cartesian_2d(xr, yr)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v, sx))
        .y_label_formatter(&|v| tick(*v, sy))
        .x_desc(&d.x_label)
        .y_desc(&d.y_label)
        .label_style(("sans-serif", px(o, 14.0)))
        .axis_desc_style(("sans-serif", px(o, 16.0)))
        .draw()
        .map_err(&e)?;
    Ok(chart)
}

/// Position along a coordinate array at fractional index f (contour vertices live in index space).
fn interp(v: &[f64], f: f64) -> f64 {
    let f = f.clamp(0.0, (v.len() - 1) as f64);
    let i = (f.floor() as usize).min(v.len().saturating_sub(2));
    if v.len() == 1 {
        return v[0];
    }
    v[i] + (v[i + 1] - v[i]) * (f - i as f64)
}

/// The runs of a contour ring that are level lines: not following the grid's border (marching
/// squares closes rings outside the outermost sample centres) and not touching a hole (a non-finite sample: the line
/// there would only be the hole's outline). In sample-index coordinates. The contour crate works
/// in pixel space: sample (i, j) covers [i, i+1] × [j, j+1], border at 0 and n.
fn level_runs(pts: &[contour::Pt], nx: usize, ny: usize, hole: &dyn Fn(usize, usize) -> bool) -> Vec<Vec<(f64, f64)>> {
    let (mx, my) = (nx as f64, ny as f64);
    // Sample centres lie in [0.5, n − 0.5]: a point beyond is on the ring's closing detour.
    let outside = |p: &contour::Pt| p.x < 0.5 || p.y < 0.5 || p.x > mx - 0.5 || p.y > my - 0.5;
    let on_edge = |a: &contour::Pt, b: &contour::Pt| outside(a) || outside(b);
    let near_hole = |p: &contour::Pt| {
        let (a, b) = ((p.x - 0.5).clamp(0.0, mx - 1.0), (p.y - 0.5).clamp(0.0, my - 1.0));
        let (i0, i1, j0, j1) = (a.floor() as usize, a.ceil() as usize, b.floor() as usize, b.ceil() as usize);
        hole(i0, j0) || hole(i1, j0) || hole(i0, j1) || hole(i1, j1)
    };
    let mut runs = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in pts.windows(2) {
        if on_edge(&w[0], &w[1]) || near_hole(&w[0]) || near_hole(&w[1]) {
            if cur.len() > 1 {
                runs.push(std::mem::take(&mut cur));
            }
            cur.clear();
            continue;
        }
        if cur.is_empty() {
            cur.push((w[0].x - 0.5, w[0].y - 0.5));
        }
        cur.push((w[1].x - 0.5, w[1].y - 0.5));
    }
    if cur.len() > 1 {
        runs.push(cur);
    }
    runs
}

/// Level lines of a run at `levels` (loss units), as polylines in α–β coordinates, per level.
pub(super) fn level_lines(d: &RunData, levels: &[f64]) -> Result<Levels> {
    lines_of(&d.x, d.y.as_ref().expect("2-D"), &d.loss, levels)
}

/// Level lines of the grid `loss[j * nx + i]` over (x, y) at `levels`.
fn lines_of(x: &[f64], y: &[f64], loss: &[f64], levels: &[f64]) -> Result<Levels> {
    let (nx, ny) = (x.len(), y.len());
    if levels.is_empty() || nx < 2 || ny < 2 {
        return Ok(vec![]);
    }
    let top = levels[levels.len() - 1];
    let big = top.abs() * 10.0 + 1.0;
    let vals: Vec<f64> = loss.iter().map(|v| if v.is_finite() { *v } else { big }).collect();
    let lines = ContourBuilder::new(nx, ny, true)
        .lines(&vals, levels)
        .map_err(|e| Error::other(format!("contour lines: {e:?}")))?;
    let hole = |i: usize, j: usize| !loss[j * nx + i].is_finite();
    Ok(lines
        .iter()
        .map(|line| {
            let runs = line
                .geometry()
                .0
                .iter()
                .flat_map(|ls| level_runs(&ls.0, nx, ny, &hole))
                .map(|run| run.iter().map(|&(a, b)| (interp(x, a), interp(y, b))).collect())
                .collect();
            (line.threshold(), runs)
        })
        .collect())
}

/// What a panel fills its cells with.
pub(super) enum Fill<'v> {
    /// Nothing (contour lines on white; holes grey).
    Lines,
    /// The loss in the figure's look, with thin level lines.
    Loss,
    /// Other values over a range (the curvature map), no level lines.
    Values(&'v dyn Fn(usize, usize) -> Option<f64>, (f64, f64)),
}

/// One 2-D panel on `area` (a part of `root`): cells, level lines, path, markers, labels, legend.
#[allow(clippy::too_many_arguments)]
pub(super) fn panel(
    root: &Area,
    area: &Area,
    d: &RunData,
    o: &PlotOptions,
    look: Option<&Look>,
    crit: &[CriticalPoint],
    fill: Fill,
    caption: &str,
) -> Result<()> {
    let e = err("2-D panel");
    let mut chart = chart2d(area, d, o, caption)?;
    let y = d.y.as_ref().expect("2-D");
    let edges = |v: &[f64]| -> Vec<f64> {
        let n = v.len();
        if n == 1 {
            return vec![v[0] - 0.5, v[0] + 0.5];
        }
        let mut out = vec![v[0] - (v[1] - v[0]) / 2.0];
        out.extend(v.windows(2).map(|w| (w[0] + w[1]) / 2.0));
        out.push(v[n - 1] + (v[n - 1] - v[n - 2]) / 2.0);
        out
    };
    let (ex, ey) = (edges(&d.x), edges(y));
    let colour: Box<dyn Fn(usize, usize) -> Option<RGBColor>> = match &fill {
        Fill::Lines => Box::new(|i, j| (!d.at(i, j).is_finite()).then_some(HOLE)),
        Fill::Loss => Box::new(|i, j| Some(look.and_then(|l| l.frac(d.at(i, j))).map_or(HOLE, viridis))),
        Fill::Values(v, (lo, hi)) => {
            Box::new(move |i, j| Some(v(i, j).map_or(HOLE, |t| viridis((t - lo) / (hi - lo).max(1e-300)))))
        }
    };
    let cells = (0..d.ny()).flat_map(|j| (0..d.nx()).map(move |i| (i, j)));
    chart
        .draw_series(cells.filter_map(|(i, j)| {
            colour(i, j).map(|c| Rectangle::new([(ex[i], ey[j]), (ex[i + 1], ey[j + 1])], c.filled()))
        }))
        .map_err(&e)?;
    // Level lines, and where their labels may go.
    let mut labels: Vec<(String, Label)> = Vec::new();
    if let (Some(look), false) = (look, matches!(fill, Fill::Values(..))) {
        for (level, runs) in level_lines(d, &look.levels)? {
            let (style, stride) = match fill {
                Fill::Lines => (viridis(0.9 * look.frac(level).unwrap_or(0.0)).stroke_width(px(o, 2.0)), 5),
                _ => (WHITE.mix(0.55).stroke_width(px(o, 1.0)), 5),
            };
            let mut candidates = Vec::new();
            let mut runs = runs;
            runs.sort_by_key(|r| std::cmp::Reverse(r.len()));
            for run in &runs {
                chart.draw_series(std::iter::once(PathElement::new(run.clone(), style))).map_err(&e)?;
                let pix: Vec<(f64, f64)> = run
                    .iter()
                    .map(|p| {
                        let (a, b) = chart.backend_coord(p);
                        (a as f64, b as f64)
                    })
                    .collect();
                candidates.extend(layout::along(&pix, stride));
            }
            if matches!(fill, Fill::Lines) && !candidates.is_empty() {
                let text = short(level);
                labels.push((text.clone(), Label { size: text_size(root, &text, o, 12.0), candidates }));
            }
        }
    }
    let (obstacles, point_labels) = overlays(&mut chart, root, d, o, crit)?;
    // The legend, in the upper right corner: its box is an obstacle.
    let legend = legend_entries(d, crit);
    let frame = frame_of(&chart);
    let mut obstacles = obstacles;
    if !legend.is_empty() {
        obstacles.push(legend_box(root, frame, &legend, o));
    }
    let mut all: Vec<(String, Label, f64)> = point_labels.into_iter().map(|(t, l)| (t, l, 14.0)).collect();
    all.extend(labels.into_iter().map(|(t, l)| (t, l, 12.0)));
    let boxes: Vec<Label> = all.iter().map(|(_, l, _)| l.clone()).collect();
    let placed = layout::place(&boxes, &obstacles, frame.grow(-2.0), 2.0);
    for ((text, _, size), b) in all.iter().zip(placed) {
        let Some(b) = b else { continue };
        let c = (((b.x0 + b.x1) / 2.0) as i32, ((b.y0 + b.y1) / 2.0) as i32);
        if *size < 13.0 {
            root.draw(&Rectangle::new(
                [(b.x0 as i32, b.y0 as i32), (b.x1 as i32, b.y1 as i32)],
                WHITE.mix(0.75).filled(),
            ))
            .map_err(&e)?;
            root.draw(&Text::new(text.clone(), c, centred(o, *size))).map_err(&e)?;
        } else {
            halo_text(root, text, c, o, *size)?;
        }
    }
    if !legend.is_empty() {
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, o)?;
    }
    Ok(())
}

fn legend_entries(d: &RunData, crit: &[CriticalPoint]) -> Vec<String> {
    let mut out: Vec<String> = [Kind::Minimum, Kind::Saddle, Kind::Maximum]
        .iter()
        .filter_map(|&k| {
            let n = crit.iter().filter(|p| p.kind == k).count();
            (n > 0).then(|| format!("{} ({n})", marker_style(k).1))
        })
        .collect();
    if d.path.is_some() {
        out.push(path_name(d));
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

/// Path, named points and critical points; returns what labels must avoid and the labels of the
/// path's ends and the named points (with candidate places around their markers).
fn overlays<'a, 'b: 'a>(
    chart: &mut Chart2d<'a, 'b>,
    root: &Area,
    d: &RunData,
    o: &PlotOptions,
    crit: &[CriticalPoint],
) -> Result<(Vec<Obstacle>, Vec<TextLabel>)> {
    let e = err("overlay");
    let r = px(o, 6.0) as i32;
    let mut obstacles = Vec::new();
    let mut labels = Vec::new();
    let pix = |chart: &Chart2d, p: (f64, f64)| {
        let (a, b) = chart.backend_coord(&p);
        (a as f64, b as f64)
    };
    let mut point_label = |chart: &Chart2d, text: &str, at: (f64, f64), rad: f64| {
        let size = text_size(root, text, o, 14.0);
        let size = (size.0 + 4.0, size.1 + 2.0);
        labels.push((text.to_string(), Label { size, candidates: layout::around_point(pix(chart, at), rad, size) }));
    };
    // Named points (centre; the models of a plane): a black cross with a white outline, drawn
    // first so that a critical point at the same place stays visible on top.
    let arm = r + px(o, 3.0) as i32;
    for (name, p) in &d.marks {
        let at = (p[0], p[1]);
        for (colour, w) in [(WHITE, px(o, 5.0)), (BLACK, px(o, 2.0))] {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + PathElement::new(vec![(-arm, 0), (arm, 0)], colour.stroke_width(w))
                        + PathElement::new(vec![(0, -arm), (0, arm)], colour.stroke_width(w)),
                ))
                .map_err(&e)?;
        }
        obstacles.push(Obstacle::Rect(Rect::around(pix(chart, at), arm as f64)));
        point_label(chart, name, at, arm as f64);
    }
    if let Some(path) = &d.path {
        let pts: Vec<(f64, f64)> = path.iter().map(|p| (p[0], p[1])).collect();
        chart
            .draw_series(std::iter::once(PathElement::new(pts.clone(), WHITE.stroke_width(px(o, 5.0)))))
            .map_err(&e)?;
        chart
            .draw_series(std::iter::once(PathElement::new(pts.clone(), PATH.stroke_width(px(o, 2.5)))))
            .map_err(&e)?
            .label(path_name(d))
            .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], PATH.stroke_width(3)));
        for w in pts.windows(2) {
            obstacles.push(Obstacle::Segment(pix(chart, w[0]), pix(chart, w[1])));
        }
        // The optimizer's checkpoints as dots, its start and end marked (a trained curve runs
        // between two models marked already).
        if d.path_kind == PathKind::Optimizer {
            let dot = (r - 2).max(2);
            chart
                .draw_series(pts.iter().map(|&p| {
                    EmptyElement::at(p)
                        + Circle::new((0, 0), dot, PATH.filled())
                        + Circle::new((0, 0), dot, WHITE.stroke_width(1))
                }))
                .map_err(&e)?;
            let (s, t) = (pts[0], pts[pts.len() - 1]);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(s)
                        + Rectangle::new([(-r, -r), (r, r)], WHITE.filled())
                        + Rectangle::new([(-r, -r), (r, r)], PATH.stroke_width(3)),
                ))
                .map_err(&e)?;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(t)
                        + Circle::new((0, 0), r + 2, WHITE.filled())
                        + Circle::new((0, 0), r + 2, PATH.stroke_width(3)),
                ))
                .map_err(&e)?;
            for p in [s, t] {
                obstacles.push(Obstacle::Rect(Rect::around(pix(chart, p), (r + 3) as f64)));
            }
            point_label(chart, "start", s, (r + 2) as f64);
            point_label(chart, "end", t, (r + 3) as f64);
        }
    }
    for kind in [Kind::Minimum, Kind::Saddle, Kind::Maximum] {
        let pts: Vec<(f64, f64)> = crit.iter().filter(|p| p.kind == kind).map(|p| (p.coords[0], p.coords[1])).collect();
        if pts.is_empty() {
            continue;
        }
        for &p in &pts {
            obstacles.push(Obstacle::Rect(Rect::around(pix(chart, p), (r + 2) as f64)));
        }
        chart
            .draw_series(pts.iter().map(|&p| marker(kind, p, r)))
            .map_err(&e)?
            .label(format!("{} ({})", marker_style(kind).1, pts.len()))
            .legend(move |(x, y)| marker(kind, (x, y), 5));
    }
    Ok((obstacles, labels))
}

/// A vertical colour bar on `area`: viridis over the look's range, ticks in loss units (a log axis
/// for a log scale), a short mark at each contour level.
pub(super) fn colour_bar(area: &Area, o: &PlotOptions, look: &Look, label: &str) -> Result<()> {
    let e = err("colour bar");
    let steps = 200;
    let (ta, tb) = look.t_range();
    let band = |k: usize| look.scale.invert(ta + (tb - ta) * k as f64 / steps as f64);
    let marks = look.levels.clone();
    macro_rules! bar {
        ($range:expr, $fmt:expr) => {{
            let mut cb = ChartBuilder::on(area)
                .margin_top(px(o, 50.0))
                .margin_bottom(px(o, 57.0))
                .margin_right(px(o, 10.0))
                .y_label_area_size(px(o, 62.0))
                .build_cartesian_2d(0.0..1.0, $range)
                .map_err(&e)?;
            cb.configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_labels(8)
                .y_label_formatter($fmt)
                .y_desc(label)
                .label_style(("sans-serif", px(o, 13.0)))
                .axis_desc_style(("sans-serif", px(o, 15.0)))
                .draw()
                .map_err(&e)?;
            cb.draw_series((0..steps).map(|k| {
                Rectangle::new([(0.0, band(k)), (1.0, band(k + 1))], viridis(k as f64 / (steps - 1) as f64).filled())
            }))
            .map_err(&e)?;
            cb.draw_series(marks.iter().map(|&v| PathElement::new(vec![(0.0, v), (0.3, v)], BLACK.stroke_width(1))))
                .map_err(&e)?;
        }};
    }
    let (lo, hi) = (band(0), band(steps));
    match look.scale {
        Scale::Log => bar!((lo..hi).log_scale(), &|v: &f64| short(*v)),
        Scale::Linear => {
            let s = tick_step(lo, hi, 8);
            bar!(lo..hi, &|v: &f64| tick(*v, s))
        }
    }
    Ok(())
}

/// A figure of one panel and a colour bar, or one panel alone.
fn single(
    d: &RunData,
    o: &PlotOptions,
    file: &str,
    draw: impl FnOnce(&Area, &Area) -> Result<()>,
    bar: Option<(&Look, &str)>,
) -> Result<PathBuf> {
    let out = d.dir.join(file);
    let e = err(file);
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    match bar {
        Some((look, label)) => {
            let (w, _) = size(o);
            let (main, side) = root.split_horizontally(w - px(o, 115.0));
            draw(&root, &main)?;
            colour_bar(&side, o, look, label)?;
        }
        None => draw(&root, &root)?,
    }
    root.present().map_err(&e)?;
    Ok(out.clone())
}

/// Contour lines at the look's levels, labelled, with the path and the marked points.
pub fn contour(d: &RunData, o: &PlotOptions, look: Option<&Look>, crit: &[CriticalPoint]) -> Result<PathBuf> {
    let caption = title(d);
    single(d, o, "contour.png", |root, area| panel(root, area, d, o, look, crit, Fill::Lines, &caption), None)
}

/// Filled heatmap (cells coloured by loss, holes grey) with thin level lines and a colour bar.
pub fn heatmap(d: &RunData, o: &PlotOptions, look: Option<&Look>, crit: &[CriticalPoint]) -> Result<PathBuf> {
    let caption = title(d);
    let fallback = Look { scale: Scale::Linear, lo: 0.0, hi: 1.0, levels: vec![] };
    let bar = look.unwrap_or(&fallback);
    single(
        d,
        o,
        "heatmap.png",
        |root, area| panel(root, area, d, o, look, crit, Fill::Loss, &caption),
        Some((bar, bar.scale.axis_title())),
    )
}

/// Li et al.'s map of |λmin / λmax| over the grid (`surface --curvature`): near 0 where the
/// surface is convex, large where negative curvature is strong.
pub fn curvature_map(d: &RunData, o: &PlotOptions, ratio: &[f64]) -> Result<PathBuf> {
    let finite = ratio.iter().copied().filter(|v| v.is_finite());
    let hi = finite.fold(0.0f64, f64::max).max(1e-12);
    let value = |i: usize, j: usize| Some(ratio[j * d.nx() + i]).filter(|v| v.is_finite());
    let caption = format!("|λmin / λmax| of the Hessian — {}", title(d));
    let look = Look { scale: Scale::Linear, lo: 0.0, hi, levels: vec![] };
    single(
        d,
        o,
        "curvature.png",
        |root, area| panel(root, area, d, o, None, &[], Fill::Values(&value, (0.0, hi)), &caption),
        Some((&look, "|λmin / λmax|")),
    )
}

/// The persistence diagram of a classification: each pair as (birth, death) in the figure's
/// scale, minima above the diagonal and maxima below it, the threshold as a band around it;
/// pairs outside the band are the reported ones. Pairs that never die sit on the top edge.
pub fn persistence_diagram(dir: &Path, o: &PlotOptions, p: &Persistence, scale: Scale) -> Result<PathBuf> {
    let out = dir.join("persistence.png");
    let e = err("persistence.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let all = p.minima.iter().chain(&p.maxima);
    let (lo, hi) = all
        .flat_map(|q| [q.birth_value, q.death_value])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = 0.04 * (hi - lo);
    let (a, b) = (lo - pad, hi + pad);
    let s = tick_step(a, b, 8);
    let units = match scale {
        Scale::Log => "log10 loss",
        Scale::Linear => "loss",
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Persistence of critical points (threshold {:.1}% of the range{})",
                100.0 * p.threshold,
                if p.rule == super::critical::Rule::LargestGap { ", at the largest gap" } else { "" }
            ),
            ("sans-serif", px(o, 18.0)),
        )
        .margin(px(o, 12.0))
        .x_label_area_size(px(o, 45.0))
        .y_label_area_size(px(o, 65.0))
        .build_cartesian_2d(a..b, a..b)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v, s))
        .y_label_formatter(&|v| tick(*v, s))
        .x_desc(format!("birth ({units})"))
        .y_desc(format!("death ({units})"))
        .label_style(("sans-serif", px(o, 14.0)))
        .axis_desc_style(("sans-serif", px(o, 16.0)))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(&e)?;
    let cut = p.threshold * p.range;
    chart
        .draw_series(std::iter::once(Polygon::new(
            vec![(a, a - cut), (b, b - cut), (b, b + cut), (a, a + cut)],
            BLACK.mix(0.08).filled(),
        )))
        .map_err(&e)?;
    chart.draw_series(std::iter::once(PathElement::new(vec![(a, a), (b, b)], BLACK.stroke_width(1)))).map_err(&e)?;
    let r = px(o, 5.0) as i32;
    for (pairs, kind, name) in [
        (&p.minima, Kind::Minimum, "minimum–saddle pairs (filled: persistent)"),
        (&p.maxima, Kind::Maximum, "maximum–saddle pairs (filled: persistent)"),
    ] {
        let colour = if kind == Kind::Minimum { RGBColor(30, 90, 230) } else { RGBColor(228, 0, 58) };
        let pts: Vec<(f64, f64, bool)> = pairs
            .iter()
            .map(|q| {
                (
                    q.birth_value,
                    if q.death.is_some() {
                        q.death_value
                    } else {
                        if kind == Kind::Minimum {
                            b
                        } else {
                            a
                        }
                    },
                    q.persistence >= cut,
                )
            })
            .collect();
        chart
            .draw_series(pts.iter().map(|&(x, y, kept)| {
                Circle::new((x, y), r, if kept { colour.filled() } else { colour.stroke_width(1) })
            }))
            .map_err(&e)?
            .label(name)
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, o)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}

/// A rendered 3-D surface in the figure's look: cells drawn far to near in the projection's own
/// depth, coloured by height and shaded by a light from above the viewer, axis titles placed at
/// the outside of the box's edges.
pub fn surface3d(d: &RunData, o: &PlotOptions, look: Option<&Look>, crit: &[CriticalPoint]) -> Result<PathBuf> {
    let out = d.dir.join("surface3d.png");
    let e = err("surface3d.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let y = d.y.as_ref().expect("2-D");
    let Some(look) = look else {
        root.present().map_err(&e)?;
        return Ok(out.clone());
    };
    let (tlo, thi) = look.t_range();
    let height = |v: f64| look.t(v);
    let (xr, yr) = chart_ranges(d, None);
    let (sx, sy, sz) = (tick_step(xr.start, xr.end, 5), tick_step(yr.start, yr.end, 5), tick_step(tlo, thi, 5));
    let mut chart = ChartBuilder::on(&root)
        .caption(title(d), ("sans-serif", px(o, 18.0)))
        .margin(px(o, 30.0))
        .build_cartesian_3d(xr.clone(), tlo..thi, yr.clone())
        .map_err(&e)?;
    chart.with_projection(|mut p| {
        p.yaw = 0.7;
        p.pitch = 0.35;
        p.scale = 0.75;
        p.into_matrix()
    });
    let log = look.scale == Scale::Log;
    chart
        .configure_axes()
        .label_style(("sans-serif", px(o, 13.0)))
        .light_grid_style(BLACK.mix(0.08))
        .max_light_lines(3)
        .x_labels(5)
        .y_labels(5)
        .z_labels(5)
        .x_formatter(&|v| tick(*v, sx))
        .z_formatter(&|v| tick(*v, sy))
        .y_formatter(&|v| if log { short(10f64.powf(*v)) } else { tick(*v, sz) })
        .draw()
        .map_err(&e)?;
    let coord = chart.as_coord_spec().clone();
    // Cells far to near by the projected depth of their centres (larger depth: farther away).
    let mut cells: Vec<(i32, [usize; 4], [f64; 4])> = Vec::new();
    let nx = d.nx();
    for j in 0..d.ny().saturating_sub(1) {
        for i in 0..nx.saturating_sub(1) {
            let corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
            let hs: Option<Vec<f64>> = corners.iter().map(|&(a, b)| height(d.at(a, b))).collect();
            let Some(hs) = hs else { continue };
            let (cx, cy) = ((d.x[i] + d.x[i + 1]) / 2.0, (y[j] + y[j + 1]) / 2.0);
            let depth = coord.projected_depth(&cx, &(hs.iter().sum::<f64>() / 4.0), &cy);
            cells.push((depth, [i, j, i + 1, j + 1], [hs[0], hs[1], hs[2], hs[3]]));
        }
    }
    cells.sort_by_key(|c| std::cmp::Reverse(c.0));
    // Shading: the normal in box units (each axis scaled to 1, height to 0.7) against a light from
    // above, behind the viewer's left shoulder.
    let (ux, uy, uz) = (xr.end - xr.start, yr.end - yr.start, (thi - tlo) / 0.7);
    let light = {
        let l = [-0.35f64, 0.45, 0.82];
        let n = (l[0] * l[0] + l[1] * l[1] + l[2] * l[2]).sqrt();
        [l[0] / n, l[1] / n, l[2] / n]
    };
    let polys = cells.into_iter().map(|(_, [i0, j0, i1, j1], h)| {
        let (dx, dy) = ((d.x[i1] - d.x[i0]) / ux, (y[j1] - y[j0]) / uy);
        // Slopes along x and y from the four corners.
        let gx = ((h[1] - h[0]) + (h[2] - h[3])) / 2.0 / uz / dx.max(1e-12);
        let gy = ((h[3] - h[0]) + (h[2] - h[1])) / 2.0 / uz / dy.max(1e-12);
        let n = (gx * gx + gy * gy + 1.0).sqrt();
        let lambert = ((-gx * light[0] - gy * light[1] + light[2]) / n).max(0.0);
        let shade = 0.55 + 0.45 * lambert;
        let mean = h.iter().sum::<f64>() / 4.0;
        let RGBColor(r, g, b) = viridis((mean - tlo) / (thi - tlo));
        let c = RGBColor((r as f64 * shade) as u8, (g as f64 * shade) as u8, (b as f64 * shade) as u8);
        let pts = vec![(d.x[i0], h[0], y[j0]), (d.x[i1], h[1], y[j0]), (d.x[i1], h[2], y[j1]), (d.x[i0], h[3], y[j1])];
        Polygon::new(pts, c.filled())
    });
    chart.draw_series(polys).map_err(&e)?;
    let r = px(o, 5.0) as i32;
    for p in crit {
        let Some(h) = height(p.loss) else { continue };
        chart.draw_series(std::iter::once(marker(p.kind, (p.coords[0], h, p.coords[1]), r))).map_err(&e)?;
    }
    if let Some(path) = &d.path {
        // The path at the surface's height under each point (nearest grid cell).
        let near = |v: &[f64], t: f64| {
            v.iter().enumerate().min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs())).map(|(k, _)| k).unwrap_or(0)
        };
        let pts: Vec<(f64, f64, f64)> = path
            .iter()
            .filter_map(|p| height(d.at(near(&d.x, p[0]), near(y, p[1]))).map(|h| (p[0], h, p[1])))
            .collect();
        chart
            .draw_series(std::iter::once(PathElement::new(pts.clone(), WHITE.stroke_width(px(o, 5.0)))))
            .map_err(&e)?;
        chart.draw_series(std::iter::once(PathElement::new(pts, PATH.stroke_width(px(o, 2.5))))).map_err(&e)?;
    }
    // Axis titles: at the middle of the box edge the axis is labelled on, pushed outwards from
    // the box's centre on the screen.
    let centre = coord.translate(&((xr.start + xr.end) / 2.0, (tlo + thi) / 2.0, (yr.start + yr.end) / 2.0));
    // Pushed out past the tick labels, and by half the title's extent along the push, so that
    // its near edge clears them.
    let outward = |p: (i32, i32), by: f64, text: &str| {
        let (vx, vy) = ((p.0 - centre.0) as f64, (p.1 - centre.1) as f64);
        let n = vx.hypot(vy).max(1.0);
        let (ux, uy) = (vx / n, vy / n);
        let (w, h) = text_size(&root, text, o, 15.0);
        let by = by + (w / 2.0 * ux.abs()).max(h / 2.0 * uy.abs());
        ((p.0 as f64 + by * ux) as i32, (p.1 as f64 + by * uy) as i32)
    };
    // The bottom edges parallel to x and y nearest the viewer (lowest on the screen).
    let lowest = |a: (i32, i32), b: (i32, i32)| if a.1 >= b.1 { a } else { b };
    let xm = (xr.start + xr.end) / 2.0;
    let ym = (yr.start + yr.end) / 2.0;
    let x_at = lowest(coord.translate(&(xm, tlo, yr.start)), coord.translate(&(xm, tlo, yr.end)));
    let y_at = lowest(coord.translate(&(xr.start, tlo, ym)), coord.translate(&(xr.end, tlo, ym)));
    let zm = (tlo + thi) / 2.0;
    let corners = [(xr.start, yr.start), (xr.start, yr.end), (xr.end, yr.start), (xr.end, yr.end)];
    let z_at = corners.iter().map(|&(a, b)| coord.translate(&(a, zm, b))).min_by_key(|p| p.0).expect("four corners");
    let by = px(o, 30.0) as f64;
    halo_text(&root, &d.x_label, outward(x_at, by, &d.x_label), o, 15.0)?;
    halo_text(&root, &d.y_label, outward(y_at, by, &d.y_label), o, 15.0)?;
    let z_title = match (look.scale, o.zmax) {
        (s, Some(z)) => format!("{} (clipped at {z})", s.axis_title()),
        (s, None) => s.axis_title().to_string(),
    };
    halo_text(
        &root,
        &z_title,
        (z_at.0 - px(o, 20.0) as i32, z_at.1 - px(o, 150.0) as i32).max((px(o, 80.0) as i32, 0)),
        o,
        15.0,
    )?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}

/// The runs of a 1-D figure: (legend name, run).
pub(super) type Curves<'a> = [(String, &'a RunData)];

/// 1-D: loss (left axis, a log axis for a log scale) and accuracy (right axis) against α, one
/// curve per run; non-finite points are gaps.
pub fn curves(out: &Path, runs: &Curves, o: &PlotOptions, look: Option<&Look>, caption: &str) -> Result<PathBuf> {
    let e = err("curve.png");
    let root = BitMapBackend::new(out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let fallback = Look { scale: Scale::Linear, lo: 0.0, hi: 1.0, levels: vec![] };
    let look = look.unwrap_or(&fallback);
    let (lo, hi) = (look.lo, if look.hi > look.lo { look.hi } else { look.lo + 1.0 });
    let xs = runs.iter().flat_map(|(_, d)| d.x.iter().copied());
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let has_acc = runs.iter().any(|(_, d)| d.acc.iter().any(|a| a.is_finite()));
    let sx = tick_step(x0, x1, 10);
    let blues = [RGBColor(30, 90, 230), RGBColor(20, 150, 80), RGBColor(120, 60, 200), RGBColor(0, 150, 190)];
    let oranges = [RGBColor(230, 120, 20), RGBColor(200, 40, 60), RGBColor(180, 140, 0), RGBColor(150, 80, 40)];
    // Pieces of a curve between non-finite points.
    let pieces = |x: &[f64], v: &[f64], ok: &dyn Fn(f64) -> bool| -> Vec<Vec<(f64, f64)>> {
        let mut out: Vec<Vec<(f64, f64)>> = vec![vec![]];
        for (&a, &b) in x.iter().zip(v) {
            if ok(b) {
                out.last_mut().expect("one").push((a, b));
            } else if !out.last().expect("one").is_empty() {
                out.push(vec![]);
            }
        }
        out.retain(|p| !p.is_empty());
        out
    };
    let line_marks: Vec<(String, f64)> = match runs.first().map(|(_, d)| d.meta.kind) {
        Some(crate::store::record::RunKind::Line | crate::store::record::RunKind::Connect) => {
            vec![("A".into(), 0.0), ("B".into(), 1.0)]
        }
        _ => vec![("center".into(), 0.0)],
    };
    // The legend's names of each run's loss and accuracy curves, and of a line's barrier.
    let legend_names: Vec<(String, String)> = runs
        .iter()
        .map(|(n, _)| match runs.len() {
            1 => ("loss".to_string(), "accuracy (right axis)".to_string()),
            _ => (format!("loss: {n}"), format!("accuracy: {n}")),
        })
        .collect();
    let barrier_names: Vec<Option<String>> = runs
        .iter()
        .map(|(n, d)| {
            d.barrier.map(|b| {
                let of = if runs.len() > 1 { format!(" ({n})") } else { String::new() };
                let var = if d.meta.kind == crate::store::record::RunKind::Connect { "t" } else { "α" };
                format!("barrier{of}: {} at {var} = {}", short(b.height), short(b.at))
            })
        })
        .collect();
    macro_rules! draw {
        ($yrange:expr, $ylo:expr, $yhi:expr, $fmt:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", px(o, 18.0)))
                .margin(px(o, 12.0))
                .x_label_area_size(px(o, 45.0))
                .y_label_area_size(px(o, 65.0))
                .right_y_label_area_size(if has_acc { px(o, 65.0) } else { 0 })
                .build_cartesian_2d(x0..x1, $yrange)
                .map_err(&e)?
                .set_secondary_coord(x0..x1, 0.0..1.0);
            chart
                .configure_mesh()
                .x_labels(10)
                .x_label_formatter(&|v| tick(*v, sx))
                .y_label_formatter($fmt)
                .x_desc(&runs[0].1.x_label)
                .y_desc(look.scale.axis_title())
                .label_style(("sans-serif", px(o, 14.0)))
                .axis_desc_style(("sans-serif", px(o, 16.0)))
                .bold_line_style(BLACK.mix(0.12))
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(&e)?;
            for (_, at) in line_marks.iter().filter(|(_, a)| *a >= x0 && *a <= x1) {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(*at, $ylo), (*at, $yhi)],
                        BLACK.mix(0.4).stroke_width(1),
                    )))
                    .map_err(&e)?;
            }
            // Curve segments in pixels: the marks' names keep clear of them and of the legend.
            let mut obstacles: Vec<Obstacle> = Vec::new();
            for (_, d) in runs.iter() {
                let pix: Vec<(f64, f64)> =
                    d.x.iter()
                        .zip(&d.loss)
                        .filter(|(_, v)| v.is_finite() && (look.scale == Scale::Linear || **v > 0.0))
                        .map(|(&x, &v)| {
                            let (a, b) = chart.backend_coord(&(x, v.clamp($ylo, $yhi)));
                            (a as f64, b as f64)
                        })
                        .collect();
                obstacles.extend(pix.windows(2).map(|w| Obstacle::Segment(w[0], w[1])));
                let acc: Vec<(f64, f64)> =
                    d.x.iter()
                        .zip(&d.acc)
                        .filter(|(_, v)| v.is_finite())
                        .map(|(&x, &v)| {
                            let (a, b) = chart.borrow_secondary().backend_coord(&(x, v));
                            (a as f64, b as f64)
                        })
                        .collect();
                obstacles.extend(acc.windows(2).map(|w| Obstacle::Segment(w[0], w[1])));
            }
            let frame = frame_of(&chart);
            let entries: Vec<String> = legend_names
                .iter()
                .zip(&barrier_names)
                .flat_map(|((l, a), b)| std::iter::once(l.clone()).chain(b.clone()).chain(has_acc.then(|| a.clone())))
                .collect();
            let (corner, legend) = legend_corner(&root, frame, &entries, o, &obstacles);
            obstacles.push(legend);
            let labels: Vec<Label> = line_marks
                .iter()
                .filter(|(_, a)| *a >= x0 && *a <= x1)
                .map(|(name, at)| {
                    let (w, h) = text_size(&root, name, o, 14.0);
                    let (w, h) = (w + 4.0, h + 2.0);
                    let (x, _) = chart.backend_coord(&(*at, $ylo));
                    let x = x as f64;
                    let rows = 12;
                    let candidates = (0..rows)
                        .flat_map(|k| {
                            let y = frame.y0
                                + h / 2.0
                                + 4.0
                                + (frame.y1 - frame.y0 - h - 8.0) * k as f64 / (rows - 1) as f64;
                            [(x + w / 2.0 + 5.0, y), (x - w / 2.0 - 5.0, y)]
                        })
                        .collect();
                    Label { size: (w, h), candidates }
                })
                .collect();
            let names: Vec<&String> = line_marks.iter().filter(|(_, a)| *a >= x0 && *a <= x1).map(|(n, _)| n).collect();
            for (name, b) in names.into_iter().zip(layout::place(&labels, &obstacles, frame, 2.0)) {
                if let Some(b) = b {
                    halo_text(&root, name, (((b.x0 + b.x1) / 2.0) as i32, ((b.y0 + b.y1) / 2.0) as i32), o, 14.0)?;
                }
            }
            for (k, (_, d)) in runs.iter().enumerate() {
                let (blue, orange) = (blues[k % blues.len()], oranges[k % oranges.len()]);
                let label = legend_names[k].0.clone();
                let ok = |v: f64| v.is_finite() && (look.scale == Scale::Linear || v > 0.0);
                let loss: Vec<f64> = d.loss.iter().map(|v| v.clamp($ylo, $yhi)).collect();
                let loss: Vec<f64> =
                    loss.iter().zip(&d.loss).map(|(c, v)| if ok(*v) { *c } else { f64::NAN }).collect();
                let parts = pieces(&d.x, &loss, &|v| v.is_finite());
                for (p, part) in parts.iter().enumerate() {
                    let s = chart
                        .draw_series(LineSeries::new(part.iter().copied(), blue.stroke_width(px(o, 2.0))))
                        .map_err(&e)?;
                    if p == 0 {
                        s.label(label.clone())
                            .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], blue.stroke_width(2)));
                    }
                    chart
                        .draw_series(part.iter().map(|&q| Circle::new(q, px(o, 3.0) as i32, blue.filled())))
                        .map_err(&e)?;
                }
                if let (Some(b), Some(name)) = (d.barrier, &barrier_names[k]) {
                    // The chord from A's loss to B's (dashed) and the barrier from it up to the curve.
                    let chord = |t: f64| ((1.0 - t) * b.ends[0] + t * b.ends[1]).clamp($ylo, $yhi);
                    let along: Vec<(f64, f64)> = (0..=64)
                        .map(|i| i as f64 / 64.0)
                        .filter(|t| (x0..=x1).contains(t))
                        .map(|t| (t, chord(t)))
                        .collect();
                    let faint = blue.mix(0.75).stroke_width(px(o, 1.5));
                    chart.draw_series(DashedLineSeries::new(along, px(o, 7.0), px(o, 5.0), faint)).map_err(&e)?;
                    let (top, foot) = (b.value.clamp($ylo, $yhi), chord(b.at));
                    let dark = RGBColor(blue.0 / 2, blue.1 / 2, blue.2 / 2);
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(b.at, foot), (b.at, top)],
                            dark.stroke_width(px(o, 3.0)),
                        )))
                        .map_err(&e)?
                        .label(name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y - 7), (x, y + 7)], dark.stroke_width(3)));
                }
                if has_acc {
                    let label = legend_names[k].1.clone();
                    for (p, part) in pieces(&d.x, &d.acc, &|v| v.is_finite()).iter().enumerate() {
                        let s = chart
                            .draw_secondary_series(LineSeries::new(
                                part.iter().copied(),
                                orange.stroke_width(px(o, 2.0)),
                            ))
                            .map_err(&e)?;
                        if p == 0 {
                            s.label(label.clone()).legend(move |(x, y)| {
                                PathElement::new(vec![(x - 8, y), (x + 8, y)], orange.stroke_width(2))
                            });
                        }
                    }
                }
            }
            if has_acc {
                chart
                    .configure_secondary_axes()
                    .y_desc("top-1 accuracy")
                    .y_label_formatter(&|v| tick(*v, 0.1))
                    .label_style(("sans-serif", px(o, 14.0)))
                    .axis_desc_style(("sans-serif", px(o, 16.0)))
                    .draw()
                    .map_err(&e)?;
            }
            draw_legend(&mut chart, corner, o)?;
        }};
    }
    match look.scale {
        Scale::Log => {
            let (a, b) = (lo / 1.15, hi * 1.15);
            draw!((a..b).log_scale(), a, b, &|v: &f64| short(*v))
        }
        Scale::Linear => {
            let pad = 0.05 * (hi - lo);
            let (a, b) = (lo - pad, hi + pad);
            let s = tick_step(a, b, 10);
            draw!(a..b, a, b, &|v: &f64| tick(*v, s))
        }
    }
    root.present().map_err(&e)?;
    Ok(out.to_path_buf())
}
/// 1-D curvature (`surface --curvature` on a line of points): λmax and λmin against α.
pub fn curvature_curve(d: &RunData, o: &PlotOptions, max: &[f64], min: &[f64]) -> Result<PathBuf> {
    let out = d.dir.join("curvature.png");
    let e = err("curvature.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let all = max.iter().chain(min).copied().filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { (lo.min(0.0), hi.max(lo + 1e-12)) } else { (0.0, 1.0) };
    let pad = 0.05 * (hi - lo);
    let (x0, x1) = (d.x[0], d.x[d.nx() - 1]);
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Hessian eigenvalues — {}", title(d)), ("sans-serif", px(o, 18.0)))
        .margin(px(o, 12.0))
        .x_label_area_size(px(o, 45.0))
        .y_label_area_size(px(o, 65.0))
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(&d.x_label)
        .y_desc("eigenvalue")
        .label_style(("sans-serif", px(o, 14.0)))
        .axis_desc_style(("sans-serif", px(o, 16.0)))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(&e)?;
    for (vals, name, colour) in [(max, "λmax", RGBColor(200, 40, 40)), (min, "λmin", RGBColor(30, 90, 230))] {
        let pts: Vec<(f64, f64)> = d.x.iter().zip(vals).filter(|(_, v)| v.is_finite()).map(|(&x, &v)| (x, v)).collect();
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(px(o, 2.0))))
            .map_err(&e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], colour.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, o)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}

/// The spectral density of a Hessian run (density.npy) on a log scale.
pub fn density(dir: &std::path::Path, o: &PlotOptions, grid: &[f64], dens: &[f64], caption: &str) -> Result<PathBuf> {
    let out = dir.join("density.png");
    let e = err("density.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let top = dens.iter().copied().fold(0.0f64, f64::max).max(1e-300);
    let floor = top * 1e-8;
    let (x0, x1) = (grid[0], grid[grid.len() - 1]);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", px(o, 18.0)))
        .margin(px(o, 12.0))
        .x_label_area_size(px(o, 45.0))
        .y_label_area_size(px(o, 75.0))
        .build_cartesian_2d(x0..x1, (floor..top * 2.0).log_scale())
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("eigenvalue")
        .y_desc("density (log scale)")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", px(o, 14.0)))
        .axis_desc_style(("sans-serif", px(o, 16.0)))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(&e)?;
    let pts = grid.iter().zip(dens).map(|(&x, &v)| (x, v.max(floor)));
    chart.draw_series(LineSeries::new(pts, RGBColor(30, 90, 230).stroke_width(px(o, 2.0)))).map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::coord::ranged1d::Ranged;
    use proptest::prelude::*;

    #[test]
    fn no_level_line_follows_a_hole_or_the_border() {
        let n = 30;
        let g: Vec<f64> = (0..n).map(|k| k as f64).collect();
        let mut z: Vec<f64> =
            (0..n * n).map(|v| ((v % n) as f64 - 14.5).powi(2) + ((v / n) as f64 - 14.5).powi(2)).collect();
        // A block of NaN where the bowl's rings would pass.
        for j in 10..14 {
            for i in 3..9 {
                z[j * n + i] = f64::NAN;
            }
        }
        let lines = lines_of(&g, &g, &z, &[20.0, 60.0, 120.0, 200.0]).unwrap();
        let mut points = 0;
        for (_, runs) in &lines {
            for p in runs.iter().flatten() {
                points += 1;
                // Not within a cell of the hole [3, 8] × [10, 13], inside the sample centres.
                assert!(!(p.0 > 2.0 && p.0 < 9.0 && p.1 > 9.0 && p.1 < 14.0), "{p:?} touches the hole");
                assert!(p.0 >= 0.0 && p.1 >= 0.0 && p.0 <= 29.0 && p.1 <= 29.0);
            }
        }
        assert!(points > 100, "the rings are still drawn elsewhere");
        // The ring at 120 (radius ~11) crosses the hole's columns: it is cut there, not closed round it.
        let ring = &lines.iter().find(|(l, _)| *l == 120.0).unwrap().1;
        assert!(!ring.is_empty() && ring.iter().all(|r| r.len() > 3));
    }

    proptest! {
        /// The step we format ticks for is the step plotters draws them at.
        #[test]
        fn tick_step_is_the_step_plotters_takes(a in -100.0f64..100.0, span in 1e-3f64..500.0, n in 3usize..12) {
            let b = a + span;
            let keys = plotters::coord::types::RangedCoordf64::from(a..b).key_points(n);
            prop_assume!(keys.len() >= 2);
            let step = tick_step(a, b, n);
            let got = keys[1] - keys[0];
            prop_assert!((got - step).abs() <= 1e-6 * step, "[{}, {}] n {}: plotters {} ours {}", a, b, n, got, step);
        }
    }
}
