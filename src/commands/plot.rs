//! `plot`: (re)draw the pictures of a run directory from its saved files alone.

use std::path::{Path, PathBuf};

use crate::error::Result;
pub use crate::plot::{Figure, PlotOptions};

pub fn plot(dir: &Path, o: &PlotOptions) -> Result<Vec<PathBuf>> {
    crate::plot::plot_run(dir, o)
}

/// Several runs in one figure (one colour scale and the same levels; 1-D runs overlaid).
pub fn side_by_side(dirs: &[PathBuf], out: &Path, o: &PlotOptions) -> Result<Figure> {
    crate::plot::side_by_side(dirs, out, o)
}
