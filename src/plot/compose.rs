//! Several runs in one figure (`losscape plot RUN_A RUN_B ... --out FIG.png`): 2-D runs as panels
//! side by side under one colour scale with the same contour levels, 1-D runs as overlaid curves
//! on one axis, so that minima can be compared at a glance (Li et al.'s small- against large-batch
//! figures).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::png::{self, Fill};
use super::{classified_points, Look, PlotOptions, RunData, Scale};
use crate::error::{Error, Result, Role, Setting};

/// What a side-by-side figure was drawn with.
#[derive(Debug, Clone)]
pub struct Figure {
    pub path: PathBuf,
    pub size: (u32, u32),
    pub runs: usize,
    pub scale: Scale,
    /// The shared colour range and levels (loss units).
    pub range: (f64, f64),
    pub levels: Vec<f64>,
}

/// Draw `dirs` into one PNG at `out` (written whole or not at all).
pub fn side_by_side(dirs: &[PathBuf], out: &Path, o: &PlotOptions) -> Result<Figure> {
    o.check()?;
    png::font()?;
    if out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() != Some("png") {
        return Err(Error::setting(Setting::Figure, out.display(), "a side-by-side figure is a .png file"));
    }
    if dirs.is_empty() {
        return Err(Error::setting(Setting::Figure, out.display(), "give at least one run directory"));
    }
    let runs: Vec<RunData> = dirs.iter().map(|d| RunData::load(d)).collect::<Result<_>>()?;
    let two = runs[0].y.is_some();
    if let Some(bad) = runs.iter().find(|d| d.y.is_some() != two) {
        return Err(Error::file(
            Role::RunDir,
            &bad.dir,
            format!(
                "is {}-D, the first run is {}-D: a figure shows runs of one kind",
                if two { 1 } else { 2 },
                if two { 2 } else { 1 }
            ),
        ));
    }
    let refs: Vec<&RunData> = runs.iter().collect();
    let look = Look::of(&refs, o);
    let partial = out.with_extension("partial.png");
    // The drawing library reports a file it cannot write in its own words, after drawing: find
    // out first, in ours.
    std::fs::File::create(&partial).map_err(|e| Error::io(out, "cannot write", e))?;
    let drawn = if two {
        draw_panels(&partial, &runs, o, look.as_ref())
    } else {
        draw_curves(&partial, &runs, o, look.as_ref())
    };
    let size = drawn.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    std::fs::rename(&partial, out).map_err(|e| Error::file(Role::File, out, e.to_string()))?;
    let (scale, range, levels) = match look {
        Some(l) => (l.scale, (l.lo, l.hi), l.levels),
        None => (Scale::Linear, (f64::NAN, f64::NAN), vec![]),
    };
    Ok(Figure { path: out.to_path_buf(), size, runs: runs.len(), scale, range, levels })
}

fn draw_curves(out: &Path, runs: &[RunData], o: &PlotOptions, look: Option<&Look>) -> Result<(u32, u32)> {
    let named: Vec<(String, &RunData)> = runs.iter().map(|d| (d.name(), d)).collect();
    let caption =
        format!("1-D runs compared: {}", named.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "));
    png::curves(out, &named, o, look, &caption)?;
    Ok(png::size(o))
}

/// Columns × rows of panels for n runs: at most three columns.
pub fn arrangement(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (cols, n.div_ceil(cols))
}

fn draw_panels(out: &Path, runs: &[RunData], o: &PlotOptions, look: Option<&Look>) -> Result<(u32, u32)> {
    let e = png::err("side-by-side figure");
    let (cols, rows) = arrangement(runs.len());
    let (pw, ph) = (6 * o.dpi, 5 * o.dpi);
    let bar = png::px(o, 115.0);
    let size = (cols as u32 * pw + bar, rows as u32 * ph);
    let root = BitMapBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (main, side) = root.split_horizontally(cols as u32 * pw);
    let areas = main.split_evenly((rows, cols));
    for (d, area) in runs.iter().zip(&areas) {
        let crit = look.map(|l| classified_points(d, l, o).points).unwrap_or_default();
        png::panel(&root, area, d, o, look, &crit, Fill::Loss, &d.name())?;
    }
    if let Some(l) = look {
        png::colour_bar(&side, o, l, l.scale.axis_title())?;
    }
    root.present().map_err(&e)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    #[test]
    fn panels_fill_rows_of_three() {
        assert_eq!(super::arrangement(1), (1, 1));
        assert_eq!(super::arrangement(2), (2, 1));
        assert_eq!(super::arrangement(3), (3, 1));
        assert_eq!(super::arrangement(4), (3, 2));
        assert_eq!(super::arrangement(7), (3, 3));
    }
}
