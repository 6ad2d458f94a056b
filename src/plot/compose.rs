//! Several runs in one figure (`losscape plot RUN_A RUN_B ... --out FIG.png`): 2-D runs as panels
//! side by side under one colour scale with the same contour levels, 1-D runs as overlaid curves
//! on one axis, so that minima can be compared at a glance (Li et al.'s small- against large-batch
//! figures).

use std::path::{Path, PathBuf};

use super::canvas::{Canvas, UNITS};
use super::layout::Rect;
use super::panel::{self, Fill, Picture};
use super::{axes, classified_points, curves, output, Look, PlotOptions, RunData, Scale};
use crate::error::{Error, Result, Role, Setting};

/// What a side-by-side figure was drawn with.
#[derive(Debug, Clone)]
pub struct Figure {
    pub path: PathBuf,
    /// The PNG's size in pixels.
    pub size: (u32, u32),
    pub runs: usize,
    pub scale: Scale,
    /// The shared colour range and levels (loss units).
    pub range: (f64, f64),
    pub levels: Vec<f64>,
}

/// Draw `dirs` into one figure at `out` (FIG.png, and its siblings in the other formats asked
/// for; each written whole or not at all).
pub fn side_by_side(dirs: &[PathBuf], out: &Path, o: &PlotOptions) -> Result<Figure> {
    o.check()?;
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("png" | "svg" | "pdf")) {
        return Err(Error::setting(Setting::Figure, out.display(), "a figure is a .png, .svg or .pdf file"));
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
    // A file that cannot be written is found out before drawing, in our words.
    let probe = out.with_extension("partial");
    std::fs::File::create(&probe).map_err(|e| Error::io(out, "cannot write", e))?;
    let _ = std::fs::remove_file(&probe);
    let refs: Vec<&RunData> = runs.iter().collect();
    let look = Look::of(&refs, o);
    // The file named by --out is written whatever --format says (FIG.svg gives an SVG too).
    let mut o = o.clone();
    if let Some(f) = ext.as_deref().and_then(|e| e.parse::<output::Format>().ok()).filter(|f| !o.formats.contains(f)) {
        o.formats.push(f);
    }
    let o = &o;
    let png = out.with_extension("png");
    let (inches, written) = if two {
        draw_panels(&png, &runs, o, look.as_ref())?
    } else {
        let named: Vec<(String, &RunData)> = runs.iter().map(|d| (d.name(), d)).collect();
        let caption =
            format!("1-D runs compared: {}", named.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "));
        (o.inches(), curves::curves(&png, &named, o, look.as_ref(), &caption)?)
    };
    let path = written.iter().find(|p| p.extension() == out.extension()).cloned().unwrap_or_else(|| written[0].clone());
    let (scale, range, levels) = match look {
        Some(l) => (l.scale, (l.lo, l.hi), l.levels),
        None => (Scale::Linear, (f64::NAN, f64::NAN), vec![]),
    };
    Ok(Figure { path, size: output::pixels(inches, o.dpi), runs: runs.len(), scale, range, levels })
}

/// Columns × rows of panels for n runs: at most three columns.
pub fn arrangement(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (cols, n.div_ceil(cols))
}

/// Panels of 6×5 inches (or the figure's `--size` shared out), one colour bar beside the last
/// column, as tall as the panels' frames.
fn draw_panels(
    out: &Path,
    runs: &[RunData],
    o: &PlotOptions,
    look: Option<&Look>,
) -> Result<((f64, f64), Vec<PathBuf>)> {
    let (cols, rows) = arrangement(runs.len());
    let bar = look.map_or(0.0, |l| axes::bar_width(o, l)) / UNITS;
    let inches = o.size.unwrap_or((cols as f64 * 6.0 + bar, rows as f64 * 5.0));
    let canvas = Canvas::new(inches);
    let root = canvas.area();
    let main_w = ((inches.0 - bar) * UNITS).max(1.0) as u32;
    let (main, _) = root.split_horizontally(main_w);
    let areas = main.split_evenly((rows, cols));
    let mut frames = Vec::new();
    for (d, area) in runs.iter().zip(&areas) {
        let crit = look.map(|l| classified_points(d, l, o).points).unwrap_or_default();
        let p = Picture { d, o, look, crit: &crit };
        frames.push(panel::panel(&canvas, area, &p, Fill::Loss, &d.name(), None)?);
    }
    if let (Some(l), Some(first)) = (look, frames.first()) {
        let bottom = frames.iter().map(|f| f.y1).fold(first.y1, f64::max);
        let right = frames.iter().map(|f| f.x1).fold(first.x1, f64::max);
        let frame = Rect { x0: right - 1.0, y0: first.y0, x1: right, y1: bottom };
        axes::colour_bar(&canvas, o, l, frame, l.scale.axis_title())?;
    }
    Ok((inches, output::write(&canvas, out, o)?))
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
