//! Contour extraction with the `contour` crate (marching squares): level lines cut where they
//! would follow the grid's border or a hole, and filled contours (the areas above each level,
//! painted from the lowest up, so that neighbouring bands share their edges without seams). The
//! crate works in pixel space: sample (i, j) covers [i, i+1] × [j, j+1], so a sample centre is at
//! i + 0.5.

use contour::ContourBuilder;

use super::RunData;
use crate::error::{Error, Result};

/// Level lines: per level, its polylines in α–β coordinates.
pub(super) type Levels = Vec<(f64, Vec<Vec<(f64, f64)>>)>;

/// Closed rings in α–β coordinates (exteriors and holes alike).
pub(super) type Rings = Vec<Vec<(f64, f64)>>;

/// Position along a coordinate array at fractional index f (contour vertices live in index space).
pub(super) fn interp(v: &[f64], f: f64) -> f64 {
    let f = f.clamp(0.0, (v.len() - 1) as f64);
    let i = (f.floor() as usize).min(v.len().saturating_sub(2));
    if v.len() == 1 {
        return v[0];
    }
    v[i] + (v[i + 1] - v[i]) * (f - i as f64)
}

/// The runs of a contour ring that are level lines: not following the grid's border (marching
/// squares closes rings outside the outermost sample centres) and not touching a hole (a
/// non-finite sample: the line there would only be the hole's outline). In sample-index
/// coordinates.
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

/// The grid's values with holes (non-finite values) raised above every level.
fn filled_holes(loss: &[f64], levels: &[f64]) -> Vec<f64> {
    let top = levels.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let big = top.abs() * 10.0 + 1.0;
    loss.iter().map(|v| if v.is_finite() { *v } else { big }).collect()
}

/// Level lines of the grid `loss[j * nx + i]` over (x, y) at `levels`.
pub(super) fn lines_of(x: &[f64], y: &[f64], loss: &[f64], levels: &[f64]) -> Result<Levels> {
    let (nx, ny) = (x.len(), y.len());
    if levels.is_empty() || nx < 2 || ny < 2 {
        return Ok(vec![]);
    }
    let vals = filled_holes(loss, levels);
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

/// The areas where the loss is at least each level, as closed rings (exteriors and holes, to be
/// filled by the even-odd rule) in α–β coordinates, clipped to the grid's extent. Holes of the
/// grid count as above every level (they are drawn over afterwards).
pub(super) fn areas_above(x: &[f64], y: &[f64], loss: &[f64], levels: &[f64]) -> Result<Vec<Rings>> {
    let (nx, ny) = (x.len(), y.len());
    if levels.is_empty() || nx < 2 || ny < 2 {
        return Ok(vec![]);
    }
    let vals = filled_holes(loss, levels);
    let areas = ContourBuilder::new(nx, ny, true)
        .contours(&vals, levels)
        .map_err(|e| Error::other(format!("filled contours: {e:?}")))?;
    let to_data = |p: &contour::Pt| (interp(x, p.x - 0.5), interp(y, p.y - 0.5));
    Ok(areas
        .iter()
        .map(|a| {
            a.geometry()
                .0
                .iter()
                .flat_map(|poly| std::iter::once(poly.exterior()).chain(poly.interiors()))
                .map(|ring| ring.0.iter().map(to_data).collect())
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bowl(n: usize) -> (Vec<f64>, Vec<f64>) {
        let g: Vec<f64> = (0..n).map(|k| k as f64).collect();
        let c = (n as f64 - 1.0) / 2.0;
        let z = (0..n * n).map(|v| ((v % n) as f64 - c).powi(2) + ((v / n) as f64 - c).powi(2)).collect();
        (g, z)
    }

    #[test]
    fn no_level_line_follows_a_hole_or_the_border() {
        let n = 30;
        let (g, mut z) = bowl(n);
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

    #[test]
    fn filled_areas_lie_on_the_grid_and_shrink_with_the_level() {
        let n = 21;
        let (g, z) = bowl(n);
        let areas = areas_above(&g, &g, &z, &[10.0, 50.0, 150.0]).unwrap();
        assert_eq!(areas.len(), 3);
        // The shoelace area of the even-odd fill: the area above a level shrinks as it rises.
        let area = |rings: &Vec<Vec<(f64, f64)>>| -> f64 {
            rings
                .iter()
                .map(|r| {
                    let s: f64 = r.iter().zip(r.iter().cycle().skip(1)).map(|(a, b)| a.0 * b.1 - b.0 * a.1).sum();
                    s / 2.0
                })
                .sum::<f64>()
                .abs()
        };
        let a: Vec<f64> = areas.iter().map(area).collect();
        assert!(a[0] > a[1] && a[1] > a[2] && a[2] > 0.0, "{a:?}");
        // Outside a circle of radius √10 around the centre, inside the 20×20 grid.
        assert!((a[0] - (400.0 - std::f64::consts::PI * 10.0)).abs() < 8.0, "{a:?}");
        for p in areas.iter().flatten().flatten() {
            assert!(p.0 >= 0.0 && p.0 <= 20.0 && p.1 >= 0.0 && p.1 <= 20.0, "{p:?}");
        }
    }
}
