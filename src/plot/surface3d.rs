//! The rendered 3-D surface (`surface3d.png`): plotters' 3-D chart, cells drawn far to near in
//! the projection's own depth and coloured by height, shaded by a light from above the viewer, and
//! closed by a skirt from the grid's edges down to the floor (so the near edge shows a wall, not
//! the surface's underside); axis titles placed outside the box and kept on the canvas; a colour
//! bar beside it.

use std::path::PathBuf;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{self, err, font, text_size, viridis, AXIS};
use super::canvas::{Canvas, TextLook};
use super::layout::Rect;
use super::panel::{extent, marker, Picture, PATH};
use super::scale::{short, tick, Scale};
use super::{output, title, Look, RunData};
use crate::error::Result;

/// A face to paint: its corners (x, height, y) and colour; a cell of the surface, or a piece of
/// the skirt under one of the grid's four sides (its midpoint on the floor).
struct Face {
    corners: Vec<(f64, f64, f64)>,
    colour: RGBColor,
    cell: bool,
    side: Option<(f64, f64, f64)>,
}

type Coord3d = plotters::coord::ranged3d::Cartesian3d<RangedCoordf64, RangedCoordf64, RangedCoordf64>;

/// Twice the signed area of a face as projected on the screen (its sign tells which side faces
/// the viewer).
fn screen_area(coord: &Coord3d, corners: &[(f64, f64, f64)]) -> f64 {
    let p: Vec<(f64, f64)> = corners
        .iter()
        .map(|c| {
            let (a, b) = coord.translate(c);
            (a as f64, b as f64)
        })
        .collect();
    p.iter().zip(p.iter().cycle().skip(1)).map(|(a, b)| a.0 * b.1 - b.0 * a.1).sum()
}

/// The camera's pitch: the lowest of 0.45, 0.55, ... 1.25 radians from which at most 2% of the
/// surface's cells show their underside, so that the camera looks from above the near edge's
/// slope (a steep bowl is seen from higher up) and no part of the surface reads as a fold.
fn pitch(chart: &mut ChartContext<Canvas, Coord3d>, faces: &[Face], flat: &[(f64, f64, f64)]) -> f64 {
    let cells: Vec<&Face> = faces.iter().filter(|f| f.cell).collect();
    let mut pitch = 0.45;
    while pitch < 1.25 {
        project(chart, pitch);
        let coord = chart.as_coord_spec();
        let up = screen_area(coord, flat).signum();
        let under = cells.iter().filter(|f| screen_area(coord, &f.corners) * up < 0.0).count();
        if under as f64 <= 0.02 * cells.len() as f64 {
            break;
        }
        pitch += 0.1;
    }
    project(chart, pitch);
    pitch
}

fn project(chart: &mut ChartContext<Canvas, Coord3d>, pitch: f64) {
    chart.with_projection(|mut q| {
        q.yaw = 0.7;
        q.pitch = pitch;
        q.scale = 0.72;
        q.into_matrix()
    });
}

fn shaded(c: RGBColor, shade: f64) -> RGBColor {
    RGBColor((c.0 as f64 * shade) as u8, (c.1 as f64 * shade) as u8, (c.2 as f64 * shade) as u8)
}

/// Every `step`-th of `n` indices, and the last: a grid thinned to at most [`CELLS`] cells a side.
fn thinned(n: usize) -> Vec<usize> {
    let step = n.saturating_sub(1).div_ceil(CELLS).max(1);
    let mut k: Vec<usize> = (0..n).step_by(step).collect();
    if k.last() != Some(&(n - 1)) {
        k.push(n - 1);
    }
    k
}

/// The most cells a side the surface is drawn with (matplotlib's plot_surface draws at most 50
/// rows and columns too): a finer grid is sampled, which looks the same at a picture's size.
const CELLS: usize = 50;

/// The surface's cells and the skirt under its edges, coloured, in no order yet.
fn faces(d: &RunData, look: &Look) -> Vec<Face> {
    let y = d.y.as_ref().expect("2-D");
    let (xs, ys) = (thinned(d.nx()), thinned(d.ny()));
    let (tlo, thi) = look.t_range();
    let (xr, yr) = extent(d);
    let h = |i: usize, j: usize| look.t(d.at(i, j));
    // Shading: the normal in box units (each axis scaled to 1, height to 0.7) against a light
    // from above, behind the viewer's left shoulder.
    let (ux, uy, uz) = (xr.end - xr.start, yr.end - yr.start, (thi - tlo) / 0.7);
    let l = [-0.35f64, 0.45, 0.82];
    let n = (l[0] * l[0] + l[1] * l[1] + l[2] * l[2]).sqrt();
    let light = [l[0] / n, l[1] / n, l[2] / n];
    let mut out = Vec::new();
    for jw in ys.windows(2) {
        for iw in xs.windows(2) {
            let (i, j, i1, j1) = (iw[0], jw[0], iw[1], jw[1]);
            let (Some(a), Some(b), Some(c), Some(e)) = (h(i, j), h(i1, j), h(i1, j1), h(i, j1)) else {
                continue;
            };
            let (dx, dy) = ((d.x[i1] - d.x[i]) / ux, (y[j1] - y[j]) / uy);
            let gx = ((b - a) + (c - e)) / 2.0 / uz / dx.max(1e-12);
            let gy = ((e - a) + (c - b)) / 2.0 / uz / dy.max(1e-12);
            let norm = (gx * gx + gy * gy + 1.0).sqrt();
            let lambert = ((-gx * light[0] - gy * light[1] + light[2]) / norm).max(0.0);
            let mean = (a + b + c + e) / 4.0;
            out.push(Face {
                cell: true,
                side: None,
                corners: vec![(d.x[i], a, y[j]), (d.x[i1], b, y[j]), (d.x[i1], c, y[j1]), (d.x[i], e, y[j1])],
                colour: shaded(viridis((mean - tlo) / (thi - tlo)), 0.55 + 0.45 * lambert),
            });
        }
    }
    // The skirt: a wall under every edge segment of the grid whose two ends are finite.
    let (nx, ny) = (d.nx(), d.ny());
    let mid = ((xr.start + xr.end) / 2.0, (yr.start + yr.end) / 2.0);
    let mut edge = |p: (usize, usize), q: (usize, usize), shade: f64| {
        let (Some(a), Some(b)) = (h(p.0, p.1), h(q.0, q.1)) else { return };
        let (xa, ya, xb, yb) = (d.x[p.0], y[p.1], d.x[q.0], y[q.1]);
        // The side's midpoint: x or y of the side, the other coordinate at the grid's middle.
        let side = if ya == yb { (mid.0, tlo, ya) } else { (xa, tlo, mid.1) };
        out.push(Face {
            cell: false,
            side: Some(side),
            corners: vec![(xa, a, ya), (xb, b, yb), (xb, tlo, yb), (xa, tlo, ya)],
            colour: shaded(RGBColor(215, 215, 215), shade),
        });
    };
    for w in xs.windows(2) {
        edge((w[0], 0), (w[1], 0), 0.9);
        edge((w[0], ny - 1), (w[1], ny - 1), 0.9);
    }
    for w in ys.windows(2) {
        edge((0, w[0]), (0, w[1]), 0.75);
        edge((nx - 1, w[0]), (nx - 1, w[1]), 0.75);
    }
    out
}

/// The canvas point of `p`, moved so that a text of `size` centred on it stays `m` inside the
/// canvas `w`×`h`.
fn inside(p: (f64, f64), size: (f64, f64), (w, h): (f64, f64), m: f64) -> (f64, f64) {
    (
        axes::within(p.0, m + size.0 / 2.0, w - m - size.0 / 2.0),
        axes::within(p.1, m + size.1 / 2.0, h - m - size.1 / 2.0),
    )
}

/// The axis titles: at the middle of the box edge each axis is labelled on, pushed out from the
/// box's centre past the tick labels, and kept inside the canvas (left of the colour bar's `bar`
/// units); the height's title above the box's leftmost top corner.
fn axis_titles(
    canvas: &Canvas,
    coord: &plotters::coord::ranged3d::Cartesian3d<RangedCoordf64, RangedCoordf64, RangedCoordf64>,
    p: &Picture,
    look: &Look,
    bar: f64,
) {
    let (d, o) = (p.d, p.o);
    let (cw, ch) = (canvas.size().0 as f64, canvas.size().1 as f64);
    let (tlo, thi) = look.t_range();
    let (xr, yr) = extent(d);
    let t = |x: f64, h: f64, y: f64| {
        let (a, b) = coord.translate(&(x, h, y));
        (a as f64, b as f64)
    };
    let centre = t((xr.start + xr.end) / 2.0, (tlo + thi) / 2.0, (yr.start + yr.end) / 2.0);
    let push = |q: (f64, f64), text: &str| {
        let (vx, vy) = (q.0 - centre.0, q.1 - centre.1);
        let n = vx.hypot(vy).max(1.0);
        let (ux, uy) = (vx / n, vy / n);
        let size = text_size(o, text, AXIS);
        let by = o.em(26.0) + (size.0 / 2.0 * ux.abs()).max(size.1 / 2.0 * uy.abs());
        inside((q.0 + by * ux, q.1 + by * uy), size, (cw - bar, ch), o.em(4.0))
    };
    let lowest = |a: (f64, f64), b: (f64, f64)| if a.1 >= b.1 { a } else { b };
    let (xm, ym) = ((xr.start + xr.end) / 2.0, (yr.start + yr.end) / 2.0);
    let x_at = lowest(t(xm, tlo, yr.start), t(xm, tlo, yr.end));
    let y_at = lowest(t(xr.start, tlo, ym), t(xr.end, tlo, ym));
    let halo = |size: f64| TextLook { halo: Some(o.pt(1.6)), ..TextLook::new(o.em(size)) };
    for (text, q) in [(&d.x_label, x_at), (&d.y_label, y_at)] {
        let size = axes::fit(o, text, AXIS, cw - bar - o.em(8.0));
        let at = push(q, text);
        let half = text_size(o, text, size).0 / 2.0;
        canvas.text(text, (axes::within(at.0, o.em(4.0) + half, cw - bar - o.em(4.0) - half), at.1), halo(size));
    }
    let z_title = match o.zmax {
        Some(z) => format!("{} (clipped at {z})", look.scale.axis_title()),
        None => look.scale.axis_title().to_string(),
    };
    let corners = [(xr.start, yr.start), (xr.start, yr.end), (xr.end, yr.start), (xr.end, yr.end)];
    // Along the height axis (the box's leftmost vertical edge), left of its tick labels, turned
    // to read upwards.
    let (a, b) =
        corners.iter().copied().min_by(|p, q| t(p.0, tlo, p.1).0.total_cmp(&t(q.0, tlo, q.1).0)).expect("four corners");
    let (bottom, top) = (t(a, tlo, b), t(a, thi, b));
    let ticks = text_size(o, "0.000", axes::LABEL).0;
    let size = axes::fit(o, &z_title, AXIS, (bottom.1 - top.1).abs().max(o.em(40.0)));
    let h = text_size(o, "0", size).1;
    let x = axes::within(bottom.0.min(top.0) - o.em(10.0) - ticks - h / 2.0, o.em(4.0) + h / 2.0, cw);
    let look = TextLook { anchor: Pos::new(HPos::Center, VPos::Center), rotate: 270.0, ..halo(size) };
    canvas.text(&z_title, (x, (bottom.1 + top.1) / 2.0), look);
}

/// A rendered 3-D surface in the figure's look.
pub(super) fn surface3d(p: &Picture) -> Result<Vec<PathBuf>> {
    let (d, o) = (p.d, p.o);
    let e = err("surface3d.png");
    let canvas = Canvas::new(o.inches());
    let root = canvas.area();
    let Some(look) = p.look else {
        return output::write(&canvas, &d.dir.join("surface3d.png"), o);
    };
    let (cw, ch) = (canvas.size().0 as f64, canvas.size().1 as f64);
    let bar = axes::bar_width(o, look);
    let (main, _) = root.split_horizontally((cw - bar) as u32);
    let (tlo, thi) = look.t_range();
    let (xr, yr) = extent(d);
    let (sx, sy, sz) =
        (axes::tick_step(xr.start, xr.end, 5), axes::tick_step(yr.start, yr.end, 5), axes::tick_step(tlo, thi, 5));
    let caption = title(d);
    let top = axes::title_height(o, &caption, cw);
    let mut chart = ChartBuilder::on(&main)
        .margin(o.em(20.0) as u32)
        .margin_top((top + o.em(12.0)) as u32)
        .build_cartesian_3d(xr.clone(), tlo..thi, yr.clone())
        .map_err(&e)?;
    let mut all = faces(d, look);
    let flat = [(xr.start, tlo, yr.start), (xr.end, tlo, yr.start), (xr.end, tlo, yr.end), (xr.start, tlo, yr.end)];
    pitch(&mut chart, &all, &flat);
    let log = look.scale == Scale::Log;
    chart
        .configure_axes()
        .label_style(font(o, axes::LABEL))
        .light_grid_style(BLACK.mix(0.08))
        .bold_grid_style(BLACK.mix(0.15))
        .axis_panel_style(WHITE.mix(0.0))
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
    // Far to near by the projected depth of each face's centre.
    let depth = |f: &Face| {
        let n = f.corners.len() as f64;
        let c = f.corners.iter().fold((0.0, 0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n, a.2 + p.2 / n));
        coord.projected_depth(&c.0, &c.1, &c.2)
    };
    // The walls of the two far sides face away from the viewer: only the near sides' are drawn
    // (a far wall's piece could otherwise come out in front of the cells beside it).
    let centre = coord.projected_depth(&((xr.start + xr.end) / 2.0), &tlo, &((yr.start + yr.end) / 2.0));
    all.retain(|f| f.side.is_none_or(|m| coord.projected_depth(&m.0, &m.1, &m.2) < centre));
    all.sort_by_cached_key(|f| std::cmp::Reverse(depth(f)));
    chart.draw_series(all.into_iter().map(|f| Polygon::new(f.corners, f.colour.filled()))).map_err(&e)?;
    let r = o.pt(3.6) as i32;
    for c in p.crit {
        let Some(h) = look.t(c.loss) else { continue };
        chart.draw_series(std::iter::once(marker(c.kind, (c.coords[0], h, c.coords[1]), r, o.w(1.0)))).map_err(&e)?;
    }
    if let Some(path) = &d.path {
        // The path at the surface's height under each point (nearest grid cell).
        let y = d.y.as_ref().expect("2-D");
        let near = |v: &[f64], t: f64| {
            v.iter().enumerate().min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs())).map(|(k, _)| k).unwrap_or(0)
        };
        let pts: Vec<(f64, f64, f64)> = path
            .iter()
            .filter_map(|q| look.t(d.at(near(&d.x, q[0]), near(y, q[1]))).map(|h| (q[0], h, q[1])))
            .collect();
        chart.draw_series(std::iter::once(PathElement::new(pts.clone(), WHITE.stroke_width(o.w(3.6))))).map_err(&e)?;
        chart.draw_series(std::iter::once(PathElement::new(pts, PATH.stroke_width(o.w(1.8))))).map_err(&e)?;
    }
    axis_titles(&canvas, &coord, p, look, bar);
    axes::draw_title(&canvas, o, &caption, (0.0, cw), 0.0);
    let frame = Rect { x0: cw - bar - o.em(10.0), y0: top + 0.12 * ch, x1: cw - bar, y1: ch - 0.12 * ch };
    axes::colour_bar(&canvas, o, look, frame, look.scale.axis_title())?;
    output::write(&canvas, &d.dir.join("surface3d.png"), o)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fine_grid_is_thinned_to_fifty_cells_keeping_its_ends() {
        assert_eq!(super::thinned(21), (0..21).collect::<Vec<_>>());
        let k = super::thinned(101);
        assert_eq!((k[0], k[k.len() - 1], k.len()), (0, 100, 51));
        let k = super::thinned(202);
        assert!(k.len() <= 52 && k[k.len() - 1] == 201, "{k:?}");
    }
}
