//! `merge`: assemble a run from its shards (store::merge), by hand.

use std::path::Path;

use crate::error::Result;
pub use crate::store::merge::Summary;

/// Assemble the run in `dir`; missing points are an error unless `allow_partial` (then NaN).
pub fn merge(dir: &Path, allow_partial: bool) -> Result<Summary> {
    crate::store::merge::merge(dir, allow_partial)
}
