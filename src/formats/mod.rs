//! File formats read from user input and from run directories alike, below every layer that
//! needs them: `.npy` arrays and sha256 digests of files.

pub mod hash;
pub mod npy;
