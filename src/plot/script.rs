//! `figures.py` (`losscape plot RUN --script`): written later.

use std::path::PathBuf;

use super::{Look, PlotOptions, RunData};
use crate::error::Result;

pub(super) fn write(d: &RunData, _look: Option<&Look>, _o: &PlotOptions) -> Result<PathBuf> {
    Ok(d.dir.join("figures.py"))
}
