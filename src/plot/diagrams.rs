//! Diagrams that are not maps of the grid: the persistence diagram of the critical points
//! (`persistence.png`) and the spectral density of a Hessian run (`density.png`).

use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::axes::{self, err, font, text_size, Sample, Side, AXIS, TICK};
use super::canvas::{Area, Canvas};
use super::critical::{Kind, Pair, Persistence, Rule};
use super::layout::{Obstacle, Rect};
use super::scale::{tick, Scale};
use super::{output, PlotOptions};
use crate::error::Result;

/// Margins of a chart with tick labels `left_w` wide on the left, titled `caption`.
fn chart_on<'a>(
    area: &'a Area,
    o: &PlotOptions,
    caption: &str,
    left_w: f64,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<ChartContext<'a, Canvas, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    ChartBuilder::on(area)
        .margin_top(axes::title_height(o, caption, area.dim_in_pixel().0 as f64) as u32)
        .margin_left(o.em(8.0) as u32)
        .margin_right(o.em(14.0) as u32)
        .margin_bottom(o.em(10.0) as u32)
        .x_label_area_size((o.em(11.0) + text_size(o, "0", TICK).1 + text_size(o, "0", AXIS).1) as u32)
        .y_label_area_size((left_w + o.em(16.0) + text_size(o, "0", AXIS).1) as u32)
        .build_cartesian_2d(x, y)
        .map_err(err("chart"))
}

/// Where a pair sits: (birth, death), a pair that never dies on the "never dies" row at `top`.
fn at(q: &Pair, top: f64) -> (f64, f64) {
    (q.birth_value, if q.death.is_some() { q.death_value } else { top })
}

/// The persistence diagram of a classification: each pair as (birth, death) in the figure's
/// scale, minima above the diagonal and maxima below it, the threshold as a band around it.
/// Filled markers are exactly the extrema critical_points.json reports; pairs that never die sit
/// on a row of their own above the data.
pub(super) fn persistence_diagram(dir: &Path, o: &PlotOptions, p: &Persistence, scale: Scale) -> Result<Vec<PathBuf>> {
    let e = err("persistence.png");
    let canvas = Canvas::new(o.inches());
    let area = canvas.area();
    let all = p.minima.iter().chain(&p.maxima);
    let (lo, hi) = all
        .flat_map(|q| [q.birth_value, q.death_value])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = 0.06 * (hi - lo);
    // Pairs that never die: a row above the data (the minima's) and one below it (the maxima's).
    let (never_up, never_down) = (hi + pad, lo - pad);
    let (a, b) = (lo - 2.0 * pad, hi + 2.0 * pad);
    let s = axes::tick_step(a, b, 8);
    let units = match scale {
        Scale::Log => "log10 loss",
        Scale::Linear => "loss",
    };
    let caption = format!(
        "Persistence of critical points (threshold {:.1}% of the range{})",
        100.0 * p.threshold,
        if p.rule == Rule::LargestGap { ", at the largest gap" } else { "" }
    );
    let keys = axes::key_points(a, b, 8);
    let left = keys.iter().map(|&v| text_size(o, &tick(v, s), TICK).0).fold(0.0, f64::max);
    let mut chart = chart_on(&area, o, &caption, left, a..b, a..b)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v, s))
        .y_label_formatter(&|v| tick(*v, s))
        .label_style(font(o, TICK))
        .bold_line_style(BLACK.mix(0.08).stroke_width(o.w(0.5)))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .draw()
        .map_err(&e)?;
    let cut = p.threshold * p.range;
    let band = vec![(a, a - cut), (b, b - cut), (b, b + cut), (a, a + cut)];
    chart.draw_series(std::iter::once(Polygon::new(band, BLACK.mix(0.08).filled()))).map_err(&e)?;
    chart
        .draw_series(std::iter::once(PathElement::new(vec![(a, a), (b, b)], BLACK.stroke_width(o.w(0.7)))))
        .map_err(&e)?;
    for y in [never_up, never_down] {
        let dash = DashedLineSeries::new(
            vec![(a, y), (b, y)],
            o.pt(3.0) as u32,
            o.pt(3.0) as u32,
            BLACK.mix(0.4).stroke_width(o.w(0.6)),
        );
        chart.draw_series(dash).map_err(&e)?;
    }
    let frame = axes::frame_of(&chart);
    draw_pairs(&canvas, &mut chart, o, p, (never_up, never_down), (a, b))?;
    let w = canvas.size().0 as f64;
    axes::draw_title(&canvas, o, &caption, (0.0, w), 0.0);
    axes::axis_title(&canvas, o, &format!("birth ({units})"), frame, Side::Bottom);
    axes::axis_title(&canvas, o, &format!("death ({units}); dashed rows: never dies"), frame, Side::Left(o.em(8.0)));
    output::write(&canvas, &dir.join("persistence.png"), o)
}

/// The pairs as dots (filled: reported in critical_points.json; pairs that never die on the rows
/// `never`) and the legend, placed clear of them and of the diagonal of [a, b].
fn draw_pairs(
    canvas: &Canvas,
    chart: &mut ChartContext<Canvas, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    o: &PlotOptions,
    p: &Persistence,
    (never_up, never_down): (f64, f64),
    (a, b): (f64, f64),
) -> Result<()> {
    let e = err("persistence.png");
    let r = o.pt(3.6) as i32;
    let line = o.w(1.0);
    let mut entries = Vec::new();
    for (pairs, kind, top, name) in [
        (&p.minima, Kind::Minimum, never_up, "minimum–saddle pairs"),
        (&p.maxima, Kind::Maximum, never_down, "maximum–saddle pairs"),
    ] {
        let colour = if kind == Kind::Minimum { RGBColor(0, 114, 178) } else { RGBColor(213, 94, 0) };
        chart
            .draw_series(pairs.iter().map(|q| {
                Circle::new(at(q, top), r, if q.reported { colour.filled() } else { colour.stroke_width(line) })
            }))
            .map_err(&e)?;
        let reported = pairs.iter().filter(|q| q.reported).count();
        entries.push((format!("{name}: {reported} reported (filled)"), Sample::Dot(colour, true)));
        entries.push((format!("{name}: {} not reported", pairs.len() - reported), Sample::Dot(colour, false)));
    }
    let names: Vec<String> = entries.iter().map(|(t, _)| t.clone()).collect();
    // Clear of every marker and of the diagonal.
    let pix = |q: (f64, f64)| {
        let (x, y) = chart.backend_coord(&q);
        (x as f64, y as f64)
    };
    let frame = axes::frame_of(chart);
    let mut obstacles: Vec<Obstacle> = p
        .minima
        .iter()
        .map(|q| at(q, never_up))
        .chain(p.maxima.iter().map(|q| at(q, never_down)))
        .map(|q| Obstacle::Rect(Rect::around(pix(q), r as f64 + o.em(2.0))))
        .collect();
    obstacles.push(Obstacle::Segment(pix((a, a)), pix((b, b))));
    let (spot, _) = axes::legend_place(frame, axes::legend_size(o, &names), &obstacles, o.em(6.0));
    axes::draw_legend(canvas, o, spot, &entries)?;
    Ok(())
}

/// A power of ten as a label: 10 with a superscript exponent.
fn power(e: i32) -> String {
    let sup = |c: char| match c {
        '-' => '⁻',
        '0' => '⁰',
        '1' => '¹',
        '2' => '²',
        '3' => '³',
        '4' => '⁴',
        '5' => '⁵',
        '6' => '⁶',
        '7' => '⁷',
        '8' => '⁸',
        _ => '⁹',
    };
    format!("10{}", e.to_string().chars().map(sup).collect::<String>())
}

/// The spectral density of a Hessian run (density.npy) on a log scale, clipped to its frame.
pub(super) fn density(dir: &Path, o: &PlotOptions, grid: &[f64], dens: &[f64], caption: &str) -> Result<Vec<PathBuf>> {
    let e = err("density.png");
    let canvas = Canvas::new(o.inches());
    let area = canvas.area();
    let top = dens.iter().copied().fold(0.0f64, f64::max).max(1e-300);
    // Eight decades below the top, in log10 units.
    let (b, a) = ((top * 2.0).log10(), (top * 2.0).log10() - 8.3);
    let keys: Vec<f64> = ((a.ceil() as i32)..=(b.floor() as i32)).map(|k| k as f64).collect();
    let left = keys.iter().map(|&k| text_size(o, &power(k as i32), TICK).0).fold(0.0, f64::max);
    let (x0, x1) = (grid[0], grid[grid.len() - 1]);
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let sx = axes::tick_step(x0, x1, 10);
    let mut chart = chart_on(&area, o, caption, left, x0..x1, a..b)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v, sx))
        .y_labels(0)
        .disable_y_mesh()
        .label_style(font(o, TICK))
        .bold_line_style(BLACK.mix(0.08).stroke_width(o.w(0.5)))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.stroke_width(o.w(0.8)))
        .draw()
        .map_err(&e)?;
    let frame = axes::frame_of(&chart);
    let ticks: Vec<(f64, String)> =
        keys.iter().map(|&k| (chart.backend_coord(&(x0, k)).1 as f64, power(k as i32))).collect();
    axes::y_ticks(&canvas, o, frame, &ticks, false)?;
    let pts = grid.iter().zip(dens).map(|(&x, &v)| (x, v.max(1e-300).log10().max(a - 1.0)));
    canvas.clip(frame);
    chart.draw_series(LineSeries::new(pts, RGBColor(0, 114, 178).stroke_width(o.w(1.3)))).map_err(&e)?;
    canvas.unclip();
    axes::draw_title(&canvas, o, caption, (0.0, canvas.size().0 as f64), 0.0);
    axes::axis_title(&canvas, o, "eigenvalue", frame, Side::Bottom);
    axes::axis_title(&canvas, o, "density (log scale)", frame, Side::Left(o.em(8.0)));
    output::write(&canvas, &dir.join("density.png"), o)
}

#[cfg(test)]
mod tests {
    #[test]
    fn powers_of_ten_are_written_with_superscripts() {
        assert_eq!(super::power(-3), "10⁻³");
        assert_eq!(super::power(12), "10¹²");
        assert_eq!(super::power(0), "10⁰");
    }
}
