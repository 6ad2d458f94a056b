//! Axes, ticks, titles, legends and colour bars: the parts every chart shares. Tick positions are
//! plotters' own key points; labels are formatted by `scale` with one number of decimals per
//! axis. Titles and axis titles are drawn by the canvas (measured, and made smaller when they
//! would not fit the canvas), so that nothing is cut at its edge.

use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::{Canvas, TextLook};
use super::fonts;
use super::layout::{Obstacle, Rect};
use super::scale::{short, tick, Scale};
use super::{Look, PlotOptions};
use crate::error::{Error, Result};

pub(super) fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::other(format!("{what}: {e}"))
}

pub(super) fn viridis(t: f64) -> RGBColor {
    ViridisRGB::get_color(t.clamp(0.0, 1.0))
}

/// Text sizes of a figure, in points of a 10-point figure (scaled by `PlotOptions::em`).
pub(super) const TICK: f64 = 10.0;
pub(super) const AXIS: f64 = 11.0;
pub(super) const TITLE: f64 = 12.0;
pub(super) const LABEL: f64 = 9.0;

/// A plotters font of `size` points (scaled): the embedded sans, which plotters measures legend
/// entries with (registered once).
pub(super) fn font(o: &PlotOptions, size: f64) -> TextStyle<'static> {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, fonts::SANS);
    });
    TextStyle::from(("sans-serif", o.em(size)).into_font())
}

/// The size of `text` at `size` points (scaled), in canvas units.
pub(super) fn text_size(o: &PlotOptions, text: &str, size: f64) -> (f64, f64) {
    fonts::measure(text, o.em(size))
}

/// Plotters' key points of [a, b] for at most `n` ticks.
pub(super) fn key_points(a: f64, b: f64, n: usize) -> Vec<f64> {
    if b.partial_cmp(&a) != Some(std::cmp::Ordering::Greater) {
        return vec![a];
    }
    RangedCoordf64::from(a..b).key_points(n)
}

/// The step between plotters' ticks of [a, b] (at most `n`), so that every label of an axis gets
/// the same number of decimals.
pub(super) fn tick_step(a: f64, b: f64, n: usize) -> f64 {
    let k = key_points(a, b, n);
    if k.len() >= 2 {
        k[1] - k[0]
    } else {
        (b - a).abs().max(1e-12)
    }
}

/// Ticks of a log axis over [lo, hi] (loss units): 1, 2 and 5 of each decade when there is room
/// for `room` labels, the decades alone (or every other one) otherwise.
pub(super) fn log_ticks(lo: f64, hi: f64, room: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return vec![];
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let inside = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    for mults in [&[1.0, 2.0, 5.0][..], &[1.0, 3.0][..], &[1.0][..]] {
        let t: Vec<f64> = (a..=b).flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e))).filter(inside).collect();
        if t.len() <= room.max(2) && t.len() >= 2 {
            return t;
        }
    }
    let every = ((b - a) as usize).div_ceil(room.max(2)).max(1);
    (a..=b).step_by(every).map(|e| 10f64.powi(e)).filter(inside).collect()
}

/// A log axis's tick label: the short form, or for values beyond 1e-3..1e5 the mantissa and
/// exponent without padding ("1e-4", "2e6").
pub(super) fn log_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-3..1e5).contains(&a) {
        return short(v);
    }
    let e = a.log10().floor() as i32;
    let m = v / 10f64.powi(e);
    format!("{}e{e}", short((m * 100.0).round() / 100.0))
}

/// The size (points, scaled) at which `text` fits `width` units: `size`, or smaller down to 70%.
pub(super) fn fit(o: &PlotOptions, text: &str, size: f64, width: f64) -> f64 {
    let w = text_size(o, text, size).0;
    if w <= width || w <= 0.0 {
        size
    } else {
        (size * width / w).max(0.5 * size)
    }
}

/// `v` moved into [a, b], or the middle of them when the interval is empty (a text wider than
/// its room).
pub(super) fn within(v: f64, a: f64, b: f64) -> f64 {
    if a <= b {
        v.clamp(a, b)
    } else {
        (a + b) / 2.0
    }
}

/// The lines a title takes within `width`: one, or split at its " — ", then between words (and
/// inside a long file name after its `_`, `-` and `.`), filling each line.
pub(super) fn title_lines(o: &PlotOptions, text: &str, width: f64) -> Vec<String> {
    if text_size(o, text, TITLE).0 <= width {
        return vec![text.to_string()];
    }
    let fits = |t: &str| text_size(o, t, TITLE).0 <= width;
    let mut lines = Vec::new();
    for part in text.split(" — ") {
        // Pieces that keep their separator: words (with the space after them), and the parts of
        // a word too long for a line.
        let mut pieces: Vec<String> = Vec::new();
        for word in part.split_inclusive(' ') {
            if fits(word) {
                pieces.push(word.to_string());
            } else {
                pieces.extend(word.split_inclusive(['_', '-', '.']).map(str::to_string));
            }
        }
        let mut line = String::new();
        for p in pieces {
            if !line.is_empty() && !fits(&format!("{line}{p}")) {
                lines.push(line.trim_end().to_string());
                line.clear();
            }
            line.push_str(&p);
        }
        if !line.trim().is_empty() {
            lines.push(line.trim_end().to_string());
        }
    }
    lines
}

/// The height a title takes at the top of a canvas `width` units wide (with its margins).
pub(super) fn title_height(o: &PlotOptions, text: &str, width: f64) -> f64 {
    if text.is_empty() {
        return o.em(8.0);
    }
    let n = title_lines(o, text, width - 2.0 * o.em(8.0)).len() as f64;
    n * 1.25 * o.em(TITLE) + o.em(12.0)
}

/// Draw a title centred over `[x0, x1]`, at the top of a panel whose top edge is at `top`.
pub(super) fn draw_title(canvas: &Canvas, o: &PlotOptions, text: &str, (x0, x1): (f64, f64), top: f64) {
    let width = x1 - x0 - 2.0 * o.em(8.0);
    for (k, line) in title_lines(o, text, width).iter().enumerate() {
        let size = fit(o, line, TITLE, width);
        let y = top + o.em(8.0) + k as f64 * 1.25 * o.em(TITLE);
        canvas.text(
            line,
            ((x0 + x1) / 2.0, y),
            TextLook { anchor: Pos::new(HPos::Center, VPos::Top), ..TextLook::new(o.em(size)) },
        );
    }
}

/// An axis title centred under `frame` (below its tick labels), or beside it rotated for the y
/// axis (left) or a right axis; shrunk to fit the frame's extent.
pub(super) fn axis_title(canvas: &Canvas, o: &PlotOptions, text: &str, frame: Rect, side: Side) {
    if text.is_empty() {
        return;
    }
    let tick_h = text_size(o, "0", TICK).1;
    match side {
        Side::Bottom => {
            let size = fit(o, text, AXIS, canvas.size().0 as f64 - 2.0 * o.em(6.0));
            let half = text_size(o, text, size).0 / 2.0;
            let x = within((frame.x0 + frame.x1) / 2.0, o.em(6.0) + half, canvas.size().0 as f64 - o.em(6.0) - half);
            let y = frame.y1 + o.em(5.0) + tick_h + o.em(6.0);
            canvas.text(
                text,
                (x, y),
                TextLook { anchor: Pos::new(HPos::Center, VPos::Top), ..TextLook::new(o.em(size)) },
            );
        }
        Side::Left(x) | Side::Right(x) => {
            let size = fit(o, text, AXIS, frame.y1 - frame.y0);
            let rotate = if matches!(side, Side::Left(_)) { 270.0 } else { 90.0 };
            let look = TextLook { anchor: Pos::new(HPos::Center, VPos::Top), rotate, ..TextLook::new(o.em(size)) };
            canvas.text(text, (x, (frame.y0 + frame.y1) / 2.0), look);
        }
    }
}

/// Where an axis title goes: under the frame, or at a given x left or right of it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Side {
    Bottom,
    Left(f64),
    Right(f64),
}

/// Ticks of a vertical axis drawn by hand: at each (canvas y, label) a mark outside `frame` on
/// its left (or right) side, the label beside it, and a faint grid line across the frame.
pub(super) fn y_ticks(
    canvas: &Canvas,
    o: &PlotOptions,
    frame: Rect,
    ticks: &[(f64, String)],
    right: bool,
) -> Result<()> {
    let e = err("ticks");
    let area = &canvas.root();
    let (x, dir) = if right { (frame.x1, 1.0) } else { (frame.x0, -1.0) };
    for (y, label) in ticks.iter().filter(|(y, _)| *y >= frame.y0 - 0.5 && *y <= frame.y1 + 0.5) {
        let yi = y.round() as i32;
        if !right {
            area.draw(&PathElement::new(
                vec![(frame.x0 as i32, yi), (frame.x1 as i32, yi)],
                BLACK.mix(0.1).stroke_width(o.w(0.5)),
            ))
            .map_err(&e)?;
        }
        let tip = x + dir * o.em(4.0);
        area.draw(&PathElement::new(vec![(x as i32, yi), (tip as i32, yi)], BLACK.stroke_width(o.w(0.8))))
            .map_err(&e)?;
        let anchor = Pos::new(if right { HPos::Left } else { HPos::Right }, VPos::Center);
        canvas.text(label, (tip + dir * o.em(3.0), *y), TextLook { anchor, ..TextLook::new(o.em(TICK)) });
    }
    Ok(())
}

/// The plotting area of a chart, in canvas units.
pub(super) fn frame_of<DB: DrawingBackend, CT: CoordTranslate>(chart: &ChartContext<DB, CT>) -> Rect {
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    Rect { x0: xr.start as f64, y0: yr.start as f64, x1: xr.end as f64, y1: yr.end as f64 }
}

/// A thin frame around `r`: where the data ends.
pub(super) fn draw_frame(canvas: &Canvas, o: &PlotOptions, r: Rect) -> Result<()> {
    canvas
        .root()
        .draw(&Rectangle::new([(r.x0 as i32, r.y0 as i32), (r.x1 as i32, r.y1 as i32)], BLACK.stroke_width(o.w(0.8))))
        .map_err(err("frame"))
}

/// The size of a legend box of `entries` (their text, a sample and margins).
pub(super) fn legend_size(o: &PlotOptions, entries: &[String]) -> (f64, f64) {
    let w = entries.iter().map(|t| text_size(o, t, LABEL).0).fold(0.0, f64::max) + o.em(40.0);
    let h = entries.len() as f64 * o.em(LABEL * 1.5) + o.em(10.0);
    (w, h)
}

/// The place for a legend of `size` inside `frame` that the fewest `obstacles` cross: the four
/// corners and the middles of the edges, upper right first on a tie. Returns the box and how
/// many obstacles it covers.
pub(super) fn legend_place(frame: Rect, size: (f64, f64), obstacles: &[Obstacle], m: f64) -> (Rect, usize) {
    let (w, h) = size;
    let xs = [frame.x1 - w - m, frame.x0 + m, (frame.x0 + frame.x1 - w) / 2.0];
    let ys = [frame.y0 + m, frame.y1 - h - m, (frame.y0 + frame.y1 - h) / 2.0];
    let spots = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2)];
    spots
        .iter()
        .map(|&(i, j)| Rect { x0: xs[i], y0: ys[j], x1: xs[i] + w, y1: ys[j] + h })
        .map(|r| (r, obstacles.iter().filter(|ob| ob.hits(&r)).count()))
        .min_by_key(|(_, n)| *n)
        .expect("eight places")
}

/// What a legend entry shows before its text.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sample {
    /// A line of a colour and width (points), solid or dashed.
    Line(RGBColor, f64, bool),
    /// A critical point's marker.
    Marker(super::critical::Kind),
    /// A dot, filled or open.
    Dot(RGBColor, bool),
    /// The optimizer's path: a line with a dot.
    Path(RGBColor),
    /// A patch of the first colour veiled by the second at an opacity, outlined (the veil over
    /// shaded points).
    Patch(RGBColor, RGBColor, f64),
}

/// A tick label on an axis of item indices (bars, models): the index at whole numbers from 0,
/// nothing between them.
pub(super) fn index_label(x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        String::new()
    } else {
        format!("{}", i as usize)
    }
}

/// A legend in the box `r` (from [`legend_size`] and [`legend_place`]): a sample and a text per
/// entry, on a white box.
pub(super) fn draw_legend(canvas: &Canvas, o: &PlotOptions, r: Rect, entries: &[(String, Sample)]) -> Result<()> {
    let e = err("legend");
    let area = &canvas.root();
    let corners = [(r.x0 as i32, r.y0 as i32), (r.x1 as i32, r.y1 as i32)];
    area.draw(&Rectangle::new(corners, WHITE.mix(0.9).filled())).map_err(&e)?;
    area.draw(&Rectangle::new(corners, BLACK.mix(0.5).stroke_width(o.w(0.6)))).map_err(&e)?;
    let row = o.em(LABEL * 1.5);
    for (i, (text, sample)) in entries.iter().enumerate() {
        let y = r.y0 + o.em(5.0) + row * (i as f64 + 0.5);
        let (x0, x1) = (r.x0 + o.em(5.0), r.x0 + o.em(27.0));
        let (xm, yi) = (((x0 + x1) / 2.0) as i32, y as i32);
        let line = vec![(x0 as i32, yi), (x1 as i32, yi)];
        match *sample {
            Sample::Line(c, w, false) => area.draw(&PathElement::new(line, c.stroke_width(o.w(w)))).map_err(&e)?,
            Sample::Line(c, w, true) => area
                .draw(&plotters::element::DashedPathElement::new(
                    line,
                    o.pt(5.0) as u32,
                    o.pt(3.0) as u32,
                    c.stroke_width(o.w(w)),
                ))
                .map_err(&e)?,
            Sample::Marker(k) => {
                area.draw(&super::panel::marker(k, (xm, yi), o.pt(3.6) as i32, o.w(1.0))).map_err(&e)?
            }
            Sample::Dot(c, filled) => {
                let style = if filled { c.filled() } else { c.stroke_width(o.w(1.0)) };
                area.draw(&Circle::new((xm, yi), o.pt(3.6) as i32, style)).map_err(&e)?
            }
            Sample::Patch(under, c, a) => {
                let h = (o.em(LABEL) * 0.45) as i32;
                let corners = [(x0 as i32, yi - h), (x1 as i32, yi + h)];
                area.draw(&Rectangle::new(corners, under.filled())).map_err(&e)?;
                area.draw(&Rectangle::new(corners, c.mix(a).filled())).map_err(&e)?;
                area.draw(&Rectangle::new(corners, BLACK.mix(0.4).stroke_width(o.w(0.5)))).map_err(&e)?;
            }
            Sample::Path(c) => {
                area.draw(&PathElement::new(line, WHITE.stroke_width(o.w(3.6)))).map_err(&e)?;
                area.draw(&PathElement::new(vec![(x0 as i32, yi), (x1 as i32, yi)], c.stroke_width(o.w(1.8))))
                    .map_err(&e)?;
                area.draw(&Circle::new((xm, yi), o.pt(2.6) as i32, c.filled())).map_err(&e)?;
            }
        }
        let look = TextLook { anchor: Pos::new(HPos::Left, VPos::Center), ..TextLook::new(o.em(LABEL)) };
        canvas.text(text, (x1 + o.em(6.0), y), look);
    }
    Ok(())
}

/// The ticks of a colour bar: the look's levels (each labelled while the labels have room), or
/// for a look without levels the scale's own ticks.
fn bar_ticks(o: &PlotOptions, look: &Look, height: f64) -> (Vec<f64>, Vec<f64>) {
    let room = (height / (1.6 * text_size(o, "0", TICK).1)).floor().max(2.0) as usize;
    if !look.levels.is_empty() {
        let every = look.levels.len().div_ceil(room).max(1);
        let labelled = look.levels.iter().skip(every - 1).step_by(every).copied().collect();
        return (look.levels.clone(), labelled);
    }
    let t = match look.scale {
        Scale::Log => log_ticks(look.lo, look.hi, room),
        Scale::Linear => key_points(look.lo, look.hi, room.min(8)),
    };
    (vec![], t)
}

/// The width a colour bar beside a plot takes (gap, bar, tick labels, title).
pub(super) fn bar_width(o: &PlotOptions, look: &Look) -> f64 {
    let (_, labelled) = bar_ticks(o, look, 1e9);
    let w = bar_labels(look, &labelled).iter().map(|t| text_size(o, t, TICK).0).fold(0.0, f64::max);
    o.em(10.0) + o.em(14.0) + o.em(5.0) + w + o.em(8.0) + text_size(o, "0", AXIS).1 + o.em(8.0)
}

/// The labels of a colour bar's ticks: levels told apart by their digits, or the scale's ticks.
fn bar_labels(look: &Look, ticks: &[f64]) -> Vec<String> {
    match (look.scale, look.levels.is_empty()) {
        (Scale::Linear, true) => ticks.iter().map(|&v| tick(v, tick_step_of(ticks))).collect(),
        (Scale::Log, true) => ticks.iter().map(|&v| log_label(v)).collect(),
        // The contour labels' names of the same levels.
        _ => {
            let names = super::scale::distinct(&look.levels);
            ticks
                .iter()
                .map(|v| look.levels.iter().position(|l| l == v).map_or_else(|| short(*v), |k| names[k].clone()))
                .collect()
        }
    }
}

fn tick_step_of(v: &[f64]) -> f64 {
    if v.len() >= 2 {
        v[1] - v[0]
    } else {
        1.0
    }
}

/// The band colours of a look: band k lies between boundary k and k + 1 of lo, the levels, hi,
/// coloured at its middle.
pub(super) fn band_colours(look: &Look) -> Vec<RGBColor> {
    let b = boundaries(look);
    b.windows(2)
        .map(|w| {
            let (a, c) = (look.frac(w[0]).unwrap_or(0.0), look.frac(w[1]).unwrap_or(1.0));
            viridis((a + c) / 2.0)
        })
        .collect()
}

/// lo, the levels, hi.
pub(super) fn boundaries(look: &Look) -> Vec<f64> {
    let mut b = vec![look.lo];
    b.extend(look.levels.iter().copied());
    b.push(look.hi);
    b
}

/// A vertical colour bar beside `frame` (a plot's frame), as tall as it: the look's bands (or a
/// continuous ramp for a look without levels), ticks at the levels labelled in the scale's
/// formatting, the title rotated along its right side.
pub(super) fn colour_bar(canvas: &Canvas, o: &PlotOptions, look: &Look, frame: Rect, title: &str) -> Result<()> {
    let e = err("colour bar");
    let area = &canvas.root();
    let (x0, x1) = (frame.x1 + o.em(10.0), frame.x1 + o.em(24.0));
    let (y0, y1) = (frame.y0, frame.y1);
    let (ta, tb) = look.t_range();
    let y_of = |v: f64| {
        let t = look.scale.apply(v).unwrap_or(ta).clamp(ta, tb);
        y1 - (t - ta) / (tb - ta) * (y1 - y0)
    };
    let rect = |a: f64, b: f64, c: RGBColor| {
        Rectangle::new([(x0 as i32, y_of(b).round() as i32), (x1 as i32, y_of(a).round() as i32)], c.filled())
    };
    if look.levels.is_empty() {
        let steps = 120;
        let v = |k: usize| look.scale.invert(ta + (tb - ta) * k as f64 / steps as f64);
        for k in 0..steps {
            area.draw(&rect(v(k), v(k + 1), viridis((k as f64 + 0.5) / steps as f64))).map_err(&e)?;
        }
    } else {
        for (w, c) in boundaries(look).windows(2).zip(band_colours(look)) {
            area.draw(&rect(w[0], w[1], c)).map_err(&e)?;
        }
    }
    area.draw(&Rectangle::new([(x0 as i32, y0 as i32), (x1 as i32, y1 as i32)], BLACK.stroke_width(o.w(0.8))))
        .map_err(&e)?;
    let (marks, labelled) = bar_ticks(o, look, y1 - y0);
    for &v in &marks {
        let y = y_of(v) as i32;
        area.draw(&PathElement::new(vec![(x0 as i32, y), (x1 as i32, y)], BLACK.mix(0.7).stroke_width(o.w(0.6))))
            .map_err(&e)?;
    }
    let mut widest: f64 = 0.0;
    let names = bar_labels(look, &labelled);
    for (&v, text) in labelled.iter().zip(names) {
        let y = y_of(v);
        area.draw(&PathElement::new(
            vec![(x1 as i32, y as i32), ((x1 + o.em(4.0)) as i32, y as i32)],
            BLACK.stroke_width(o.w(0.8)),
        ))
        .map_err(&e)?;
        widest = widest.max(text_size(o, &text, TICK).0);
        let at = (x1 + o.em(6.0), y);
        canvas.text(&text, at, TextLook { anchor: Pos::new(HPos::Left, VPos::Center), ..TextLook::new(o.em(TICK)) });
    }
    let right = x1 + o.em(6.0) + widest + o.em(6.0) + text_size(o, "0", AXIS).1;
    axis_title(canvas, o, title, Rect { x0: frame.x0, x1: right, ..frame }, Side::Right(right));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_plotters_key_point_steps() {
        assert_eq!(tick_step(0.0, 1.0, 11), 0.1);
        assert!((tick_step(-1.0, 1.0, 8) - 0.5).abs() < 1e-12);
        // Every label of an axis gets the decimals of its step.
        let s = tick_step(-0.95, 0.95, 8);
        let labels: Vec<String> = key_points(-0.95, 0.95, 8).iter().map(|&v| tick(v, s)).collect();
        let decimals: Vec<usize> = labels.iter().map(|l| l.split('.').nth(1).map_or(0, str::len)).collect();
        assert!(decimals.windows(2).all(|w| w[0] == w[1]), "{labels:?}");
    }

    #[test]
    fn long_titles_are_wrapped_into_the_width() {
        let o = PlotOptions::default();
        let title = "2-D surface around resnet20_cifar10_sgd_lr0.1_momentum0.9_wd5e-4_batch128_seed1234.pt — ce loss, 8 samples";
        let width = o.em(200.0);
        let lines = title_lines(&o, title, width);
        assert!(lines.len() >= 3, "{lines:?}");
        assert!(lines.iter().all(|l| text_size(&o, l, TITLE).0 <= width), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', ""), title.replace(" — ", "").replace(' ', ""));
        assert_eq!(title_lines(&o, "short", width), vec!["short"]);
        assert_eq!(within(5.0, 0.0, 3.0), 3.0);
        assert_eq!(within(5.0, 4.0, 2.0), 3.0);
    }

    #[test]
    fn log_ticks_have_twos_and_fives_when_there_is_room() {
        assert_eq!(log_ticks(0.1, 10.0, 12), vec![0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(log_ticks(0.1, 10.0, 4), vec![0.1, 1.0, 10.0]);
        let many = log_ticks(1e-6, 1e6, 5);
        assert!(many.len() <= 7 && many.len() >= 2, "{many:?}");
        assert!(log_ticks(0.0, 1.0, 5).is_empty());
        assert_eq!(
            (log_label(1e-4), log_label(2e6), log_label(0.05), log_label(5e-6)),
            ("1e-4".into(), "2e6".into(), "0.05".into(), "5e-6".into())
        );
        // Labels in the scale's own formatting: no trailing dots.
        for v in log_ticks(0.01, 100.0, 20) {
            let s = short(v);
            assert!(!s.ends_with('.'), "{s}");
        }
    }

    #[test]
    fn the_colour_bar_labels_the_levels() {
        let look = Look { scale: Scale::Log, lo: 0.1, hi: 10.0, levels: Scale::Log.levels(0.1, 10.0, 12) };
        let o = PlotOptions::default();
        let (marks, labelled) = bar_ticks(&o, &look, o.em(400.0));
        assert_eq!(marks, look.levels);
        assert_eq!(labelled, look.levels, "room for all twelve");
        let (_, few) = bar_ticks(&o, &look, o.em(80.0));
        assert!(few.len() < 12 && few.len() >= 2 && few.iter().all(|v| look.levels.contains(v)));
        assert_eq!(band_colours(&look).len(), 13);
    }
}
