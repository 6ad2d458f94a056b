//! The space a landscape is drawn in: grids of coordinates, directions in parameter space, the
//! PCA plane of a trajectory, how the points of a grid are dealt to shards, and the measures of
//! curvature (spectrum) and sharpness over an operator or objective.

pub mod barrier;
pub mod curve;
pub mod directions;
pub mod grid;
pub mod params;
pub mod pca;
pub mod sample;
pub mod shard;
pub mod sharpness;
pub mod spectrum;
