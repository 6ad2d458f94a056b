//! The space a landscape is drawn in: grids of coordinates, directions in parameter space, the
//! PCA plane of a trajectory, and how the points of a grid are dealt to shards.

pub mod directions;
pub mod grid;
pub mod pca;
pub mod shard;
pub mod spectrum;
