//! `plot`: (re)draw the pictures of a run directory from its saved files alone.

use std::path::{Path, PathBuf};

use crate::error::Result;
pub use crate::plot::PlotOptions;

pub fn plot(dir: &Path, o: &PlotOptions) -> Result<Vec<PathBuf>> {
    crate::plot::plot_run(dir, o)
}
