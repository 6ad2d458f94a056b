//! PNG pictures drawn with plotters (bitmap backend, an embedded font so that no system fonts are
//! needed) and contour lines from the `contour` crate (marching squares).

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use contour::ContourBuilder;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::FontStyle;

use super::critical::{CriticalPoint, Kind};
use super::{clipped, levels, transform, PlotOptions, RunData};

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

fn size(o: &PlotOptions) -> (u32, u32) {
    (8 * o.dpi, 32 * o.dpi / 5)
}

fn px(o: &PlotOptions, points: f64) -> u32 {
    (points * o.dpi as f64 / 100.0).round().max(1.0) as u32
}

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::other(format!("{what}: {e}"))
}

fn viridis(t: f64) -> RGBColor {
    ViridisRGB::get_color(t.clamp(0.0, 1.0))
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

/// Split a contour ring into the runs that do not follow the grid's border (marching squares
/// closes rings along the edge, which is not a level line), in sample-index coordinates. The
/// contour crate works in pixel space: sample (i, j) covers [i, i+1] × [j, j+1], border at 0 and n.
fn interior_runs(pts: &[contour::Pt], nx: usize, ny: usize) -> Vec<Vec<(f64, f64)>> {
    let (mx, my) = (nx as f64, ny as f64);
    let on_edge = |a: &contour::Pt, b: &contour::Pt| {
        (a.x == 0.0 && b.x == 0.0) || (a.x == mx && b.x == mx) || (a.y == 0.0 && b.y == 0.0) || (a.y == my && b.y == my)
    };
    let mut runs = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in pts.windows(2) {
        if on_edge(&w[0], &w[1]) {
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

fn title(d: &RunData) -> String {
    let m = &d.meta.description;
    let model = m.model.path.file_name().map_or("?".into(), |f| f.to_string_lossy().into_owned());
    format!(
        "{} of {} ({} loss, {} {} samples)",
        d.meta.kind,
        model,
        m.loss,
        m.data.n,
        m.data.split.map_or(String::new(), |s| s.to_string())
    )
}

fn marker_style(k: Kind) -> (RGBColor, &'static str) {
    match k {
        Kind::Minimum => (RGBColor(30, 90, 230), "local minimum"),
        Kind::Maximum => (RGBColor(220, 30, 30), "local maximum"),
        Kind::Saddle => (RGBColor(255, 140, 0), "saddle"),
    }
}

type Chart2d<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Path, named points and critical points on a 2-D chart, with a legend when any are labelled.
fn overlays<'a, 'b: 'a>(
    chart: &mut Chart2d<'a, 'b>,
    d: &RunData,
    o: &PlotOptions,
    crit: &[CriticalPoint],
) -> Result<()> {
    draw_overlays(chart, d, o, crit)?;
    if !crit.is_empty() || d.path.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", px(o, 13.0)))
            .draw()
            .map_err(err("legend"))?;
    }
    Ok(())
}

fn draw_overlays(chart: &mut Chart2d, d: &RunData, o: &PlotOptions, crit: &[CriticalPoint]) -> Result<()> {
    let e = err("overlay");
    let r = px(o, 5.0) as i32;
    for kind in [Kind::Minimum, Kind::Maximum, Kind::Saddle] {
        let (c, label) = marker_style(kind);
        let pts: Vec<(f64, f64)> = crit.iter().filter(|p| p.kind == kind).map(|p| (p.coords[0], p.coords[1])).collect();
        if pts.is_empty() {
            continue;
        }
        let s = match kind {
            Kind::Minimum => chart.draw_series(pts.iter().map(|&p| Circle::new(p, r, c.filled()))).map_err(&e)?,
            Kind::Maximum => {
                chart.draw_series(pts.iter().map(|&p| TriangleMarker::new(p, r + 1, c.filled()))).map_err(&e)?
            }
            Kind::Saddle => chart.draw_series(pts.iter().map(|&p| Cross::new(p, r, c.stroke_width(2)))).map_err(&e)?,
        };
        s.label(format!("{label} ({})", pts.len())).legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
    }
    if let Some(path) = &d.path {
        let n = path.len().max(2) - 1;
        let col = |k: usize| ViridisRGB::get_color(k as f64 / n as f64);
        chart
            .draw_series(path.windows(2).enumerate().map(|(k, w)| {
                PathElement::new(vec![(w[0][0], w[0][1]), (w[1][0], w[1][1])], col(k).stroke_width(px(o, 2.0)))
            }))
            .map_err(&e)?
            .label("optimizer path (colour: epoch order)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x - 8, y), (x + 8, y)], ViridisRGB::get_color(0.5).stroke_width(2))
            });
        chart
            .draw_series(
                path.iter().enumerate().map(|(k, p)| Circle::new((p[0], p[1]), r - 1, col(k).filled().stroke_width(1))),
            )
            .map_err(&e)?;
        let (s, t) = (path[0], path[path.len() - 1]);
        let font = ("sans-serif", px(o, 15.0)).into_font();
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((s[0], s[1]))
                    + Rectangle::new([(-r, -r), (r, r)], BLACK.stroke_width(2))
                    + Text::new("start", (r + 2, -r - 14), font.clone()),
            ))
            .map_err(&e)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((t[0], t[1]))
                    + Circle::new((0, 0), r + 3, BLACK.stroke_width(2))
                    + Text::new("end", (r + 4, -r - 14), font),
            ))
            .map_err(&e)?;
    }
    let font = ("sans-serif", px(o, 15.0)).into_font();
    chart
        .draw_series(d.marks.iter().map(|(name, p)| {
            EmptyElement::at((p[0], p[1]))
                + Cross::new((0, 0), r + 2, RED.stroke_width(3))
                + Text::new(name.clone(), (r + 3, r), font.clone())
        }))
        .map_err(&e)?;
    Ok(())
}

fn chart_ranges(d: &RunData) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let y = d.y.as_ref().expect("2-D");
    let pad = |a: f64, b: f64| if b > a { (a, b) } else { (a - 0.5, a + 0.5) };
    let (x0, x1) = pad(d.x[0], d.x[d.nx() - 1]);
    let (y0, y1) = pad(y[0], y[y.len() - 1]);
    (x0..x1, y0..y1)
}

/// The titled, labelled α–β chart that the contour and heatmap pictures draw on.
fn chart2d<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    d: &RunData,
    o: &PlotOptions,
    caption: Option<String>,
) -> Result<Chart2d<'a, 'b>> {
    let e = err("2-D chart");
    let (xr, yr) = chart_ranges(d);
    let mut chart = ChartBuilder::on(area)
        .caption(caption.unwrap_or_else(|| title(d)), ("sans-serif", px(o, 18.0)))
        .margin(px(o, 12.0))
        .x_label_area_size(px(o, 45.0))
        .y_label_area_size(px(o, 60.0))
        .build_cartesian_2d(xr, yr)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&d.x_label)
        .y_desc(&d.y_label)
        .label_style(("sans-serif", px(o, 14.0)))
        .axis_desc_style(("sans-serif", px(o, 16.0)))
        .draw()
        .map_err(&e)?;
    Ok(chart)
}

/// Contour lines at log-spaced levels, labelled, with the path and the marked points.
pub fn contour(d: &RunData, o: &PlotOptions, crit: &[CriticalPoint]) -> Result<PathBuf> {
    let out = d.dir.join("contour.png");
    let e = err("contour.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = chart2d(&root, d, o, None)?;
    if let Some((lo, hi)) = d.range(o) {
        let lv = levels(lo, hi, o.levels);
        let y = d.y.as_ref().expect("2-D");
        // Non-finite cells count as high ground (the loss blew up there).
        let big = hi * 10.0 + 1.0;
        let vals: Vec<f64> = d.loss.iter().map(|v| if v.is_finite() { *v } else { big }).collect();
        let lines = ContourBuilder::new(d.nx(), d.ny(), true)
            .lines(&vals, &lv)
            .map_err(|e| Error::other(format!("contour lines: {e:?}")))?;
        let (tlo, thi) = (transform(lo, o).unwrap_or(lo), transform(hi, o).unwrap_or(hi));
        let font = ("sans-serif", px(o, 12.0)).into_font();
        for line in &lines {
            let level = line.threshold();
            let t = (transform(level, o).unwrap_or(level) - tlo) / (thi - tlo).max(1e-300);
            let color = viridis(0.9 * t);
            let mut longest: Option<Vec<(f64, f64)>> = None;
            for ls in line.geometry().0.iter() {
                for run in interior_runs(&ls.0, d.nx(), d.ny()) {
                    let pts: Vec<(f64, f64)> = run.iter().map(|&(a, b)| (interp(&d.x, a), interp(y, b))).collect();
                    chart
                        .draw_series(std::iter::once(PathElement::new(pts.clone(), color.stroke_width(px(o, 2.0)))))
                        .map_err(&e)?;
                    if longest.as_ref().is_none_or(|l| l.len() < pts.len()) {
                        longest = Some(pts);
                    }
                }
            }
            if let Some(pts) = longest.filter(|p| p.len() > 4) {
                let at = pts[pts.len() / 2];
                chart.draw_series(std::iter::once(Text::new(format!("{level:.3}"), at, font.clone()))).map_err(&e)?;
            }
        }
    }
    overlays(&mut chart, d, o, crit)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}

/// Filled heatmap (cells coloured by loss, non-finite cells grey) with a colour bar.
pub fn heatmap(d: &RunData, o: &PlotOptions, crit: &[CriticalPoint]) -> Result<PathBuf> {
    let range = d.range(o);
    let (tlo, thi) =
        range.map(|(a, b)| (transform(a, o).unwrap_or(a), transform(b, o).unwrap_or(b))).unwrap_or((0.0, 1.0));
    let value = |i: usize, j: usize| transform(d.at(i, j), o);
    let label = if o.log { "log10 loss" } else { "loss" };
    field(d, o, crit, "heatmap.png", &value, (tlo, thi), label, None)
}

/// Li et al.'s map of |λmin / λmax| over the grid (`surface --curvature`): near 0 where the
/// surface is convex, large where negative curvature is strong.
pub fn curvature_map(d: &RunData, o: &PlotOptions, ratio: &[f64]) -> Result<PathBuf> {
    let finite = ratio.iter().copied().filter(|v| v.is_finite());
    let hi = finite.fold(0.0f64, f64::max).max(1e-12);
    let value = |i: usize, j: usize| Some(ratio[j * d.nx() + i]).filter(|v| v.is_finite());
    let caption = format!("|λmin / λmax| of the Hessian — {}", title(d));
    field(d, o, &[], "curvature.png", &value, (0.0, hi), "|λmin / λmax|", Some(caption))
}

/// Cells of the grid coloured by `value(i, j)` over [lo, hi] (None: grey), a colour bar labelled
/// `label`, the overlays of the run.
#[allow(clippy::too_many_arguments)]
fn field(
    d: &RunData,
    o: &PlotOptions,
    crit: &[CriticalPoint],
    file: &str,
    value: &dyn Fn(usize, usize) -> Option<f64>,
    (tlo, thi): (f64, f64),
    label: &str,
    caption: Option<String>,
) -> Result<PathBuf> {
    let out = d.dir.join(file);
    let e = err(file);
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (w, _) = size(o);
    let (main, bar) = root.split_horizontally(w - px(o, 110.0));
    let mut chart = chart2d(&main, d, o, caption)?;
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
    let color_of = |v: Option<f64>| -> RGBColor {
        match v {
            Some(t) => viridis((t - tlo) / (thi - tlo).max(1e-300)),
            None => RGBColor(190, 190, 190),
        }
    };
    let cells = (0..d.ny()).flat_map(|j| (0..d.nx()).map(move |i| (i, j)));
    chart
        .draw_series(
            cells
                .map(|(i, j)| Rectangle::new([(ex[i], ey[j]), (ex[i + 1], ey[j + 1])], color_of(value(i, j)).filled())),
        )
        .map_err(&e)?;
    overlays(&mut chart, d, o, crit)?;
    // Colour bar.
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(px(o, 50.0))
        .margin_bottom(px(o, 57.0))
        .margin_right(px(o, 10.0))
        .y_label_area_size(px(o, 60.0))
        .build_cartesian_2d(0.0..1.0, tlo..thi.max(tlo + 1e-12))
        .map_err(&e)?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(label)
        .label_style(("sans-serif", px(o, 13.0)))
        .axis_desc_style(("sans-serif", px(o, 15.0)))
        .draw()
        .map_err(&e)?;
    let steps = 200;
    cb.draw_series((0..steps).map(|k| {
        let (a, b) = (tlo + (thi - tlo) * k as f64 / steps as f64, tlo + (thi - tlo) * (k + 1) as f64 / steps as f64);
        Rectangle::new([(0.0, a), (1.0, b)], viridis(k as f64 / (steps - 1) as f64).filled())
    }))
    .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", px(o, 13.0)))
        .draw()
        .map_err(&e)?;
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

/// A rendered 3-D surface, coloured by height, with optional log scale and height clip.
pub fn surface3d(d: &RunData, o: &PlotOptions, crit: &[CriticalPoint]) -> Result<PathBuf> {
    let out = d.dir.join("surface3d.png");
    let e = err("surface3d.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let y = d.y.as_ref().expect("2-D");
    let Some((lo, hi)) = d.range(o) else {
        root.present().map_err(&e)?;
        return Ok(out.clone());
    };
    let (tlo, thi) = (transform(lo, o).unwrap_or(lo), transform(hi, o).unwrap_or(hi));
    let thi = if thi > tlo { thi } else { tlo + 1.0 };
    let height = |v: f64| clipped(v, hi, o).map(|t| t.clamp(tlo, thi));
    let (xr, yr) = chart_ranges(d);
    let mut chart = ChartBuilder::on(&root)
        .caption(title(d), ("sans-serif", px(o, 18.0)))
        .margin(px(o, 20.0))
        .build_cartesian_3d(xr.clone(), tlo..thi, yr.clone())
        .map_err(&e)?;
    let (yaw, pitch) = (0.7f64, 0.35f64);
    chart.with_projection(|mut p| {
        p.yaw = yaw;
        p.pitch = pitch;
        p.scale = 0.8;
        p.into_matrix()
    });
    chart
        .configure_axes()
        .label_style(("sans-serif", px(o, 13.0)))
        .light_grid_style(BLACK.mix(0.08))
        .max_light_lines(3)
        .draw()
        .map_err(&e)?;
    // Cells back to front (painter's algorithm): farther from the viewer first. Viewed from yaw,
    // depth grows along (sin yaw, −cos yaw) in the (x, y) plane, normalized per axis.
    let (sx, sy) = (xr.end - xr.start, yr.end - yr.start);
    let depth = |i: usize, j: usize| -> f64 {
        let (cx, cy) = ((d.x[i] - xr.start) / sx, (y[j] - yr.start) / sy);
        -(cx * yaw.sin() - cy * yaw.cos())
    };
    let mut cells: Vec<(usize, usize)> =
        (0..d.ny().saturating_sub(1)).flat_map(|j| (0..d.nx().saturating_sub(1)).map(move |i| (i, j))).collect();
    cells.sort_by(|a, b| depth(b.0, b.1).total_cmp(&depth(a.0, a.1)));
    let polys = cells.into_iter().filter_map(|(i, j)| {
        let corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
        let hs: Vec<f64> = corners.iter().map(|&(a, b)| height(d.at(a, b))).collect::<Option<_>>()?;
        let mean = hs.iter().sum::<f64>() / 4.0;
        let pts: Vec<(f64, f64, f64)> = corners.iter().zip(&hs).map(|(&(a, b), &h)| (d.x[a], h, y[b])).collect();
        Some(Polygon::new(pts, viridis((mean - tlo) / (thi - tlo)).filled()))
    });
    chart.draw_series(polys).map_err(&e)?;
    let r = px(o, 5.0) as i32;
    for p in crit {
        let Some(h) = height(p.loss) else { continue };
        let (c, _) = marker_style(p.kind);
        chart.draw_series(std::iter::once(Circle::new((p.coords[0], h, p.coords[1]), r, c.filled()))).map_err(&e)?;
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
        chart.draw_series(std::iter::once(PathElement::new(pts, RED.stroke_width(px(o, 2.0))))).map_err(&e)?;
    }
    let desc = format!(
        "axes: x = {}, y = {}; height: {}{}",
        d.x_label,
        d.y_label,
        if o.log { "log10 loss" } else { "loss" },
        o.zmax.map(|z| format!(", clipped at {z}")).unwrap_or_default()
    );
    root.draw(&Text::new(desc, (px(o, 15.0) as i32, (size(o).1 - px(o, 25.0)) as i32), ("sans-serif", px(o, 14.0))))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}

/// 1-D: loss (left axis, optionally log) and accuracy (right axis) against α.
pub fn curve(d: &RunData, o: &PlotOptions) -> Result<PathBuf> {
    let out = d.dir.join("curve.png");
    let e = err("curve.png");
    let root = BitMapBackend::new(&out, size(o)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let pts: Vec<(f64, f64)> = d.x.iter().zip(&d.loss).filter_map(|(&x, &l)| transform(l, o).map(|t| (x, t))).collect();
    let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (lo, hi) = if lo <= hi { (lo, if hi > lo { hi } else { lo + 1.0 }) } else { (0.0, 1.0) };
    let pad = 0.05 * (hi - lo);
    let (x0, x1) = (d.x[0], d.x[d.nx() - 1]);
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let has_acc = d.acc.iter().any(|a| a.is_finite());
    let mut chart = ChartBuilder::on(&root)
        .caption(title(d), ("sans-serif", px(o, 18.0)))
        .margin(px(o, 12.0))
        .x_label_area_size(px(o, 45.0))
        .y_label_area_size(px(o, 65.0))
        .right_y_label_area_size(if has_acc { px(o, 65.0) } else { 0 })
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(&e)?
        .set_secondary_coord(x0..x1, 0.0..1.0);
    chart
        .configure_mesh()
        .x_desc(&d.x_label)
        .y_desc(if o.log { "log10 loss" } else { "loss" })
        .label_style(("sans-serif", px(o, 14.0)))
        .axis_desc_style(("sans-serif", px(o, 16.0)))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(&e)?;
    let blue = RGBColor(30, 90, 230);
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), blue.stroke_width(px(o, 2.0))))
        .map_err(&e)?
        .label("loss")
        .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], blue.stroke_width(2)));
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, px(o, 3.0) as i32, blue.filled()))).map_err(&e)?;
    if has_acc {
        chart
            .configure_secondary_axes()
            .y_desc("top-1 accuracy")
            .label_style(("sans-serif", px(o, 14.0)))
            .axis_desc_style(("sans-serif", px(o, 16.0)))
            .draw()
            .map_err(&e)?;
        let orange = RGBColor(230, 120, 20);
        let acc: Vec<(f64, f64)> =
            d.x.iter().zip(&d.acc).filter(|(_, a)| a.is_finite()).map(|(&x, &a)| (x, a)).collect();
        chart
            .draw_secondary_series(LineSeries::new(acc, orange.stroke_width(px(o, 2.0))))
            .map_err(&e)?
            .label("accuracy (right axis)")
            .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], orange.stroke_width(2)));
    }
    let marks: Vec<(String, f64)> = if d.meta.kind == crate::store::record::RunKind::Line {
        vec![("A".into(), 0.0), ("B".into(), 1.0)]
    } else {
        vec![("center".into(), 0.0)]
    };
    let font = ("sans-serif", px(o, 14.0)).into_font();
    for (name, at) in marks.into_iter().filter(|(_, a)| *a >= x0 && *a <= x1) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(at, lo - pad), (at, hi + pad)],
                BLACK.mix(0.4).stroke_width(1),
            )))
            .map_err(&e)?;
        chart.draw_series(std::iter::once(Text::new(name, (at, hi + pad), font.clone()))).map_err(&e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", px(o, 13.0)))
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(out.clone())
}
