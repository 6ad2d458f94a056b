//! .npy files: the arrays a run writes (float32 grids, float64 coordinates, uint8 flags) and
//! reading them back as float64 for merging and drawing.

use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result, Role};
use crate::store::atomic::write_atomic;

/// An .npy file of `data` with `shape` (C order), written atomically.
pub fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) -> Result<()> {
    if shape.iter().product::<u64>() as usize != data.len() {
        return Err(Error::other(format!("{}: {} values for shape {shape:?}", path.display(), data.len())));
    }
    write_atomic(path, |w| {
        let mut npy = npyz::WriteOptions::new().default_dtype().shape(shape).writer(w).begin_nd()?;
        npy.extend(data.iter().copied())?;
        npy.finish()
    })
}

/// An array read back: its shape and values as float64.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<u64>,
    pub values: Vec<f64>,
}

/// Read a numeric .npy file (bool, integers or floats, C order) as float64.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
    parse(&bytes).map_err(|problem| Error::file(Role::File, path, problem))
}

/// Parse .npy bytes (formats::npy) into float64 values; the problem in words on failure.
pub fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
    let a = crate::formats::npy::parse(bytes)?;
    Ok(Array { values: a.values.to_f64(), shape: a.shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip_through_files() {
        let d = std::env::temp_dir().join(format!("losscape-npy-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("a.npy");
        write(&p, &[2, 3], &[1.5f32, 2.0, -3.0, f32::NAN, 0.0, 1e30]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.values[0], 1.5);
        assert!(a.values[3].is_nan());
        write(&p, &[2], &[7u8, 0]).unwrap();
        assert_eq!(read(&p).unwrap().values, vec![7.0, 0.0]);
        assert!(write(&p, &[3], &[1.0f64]).is_err(), "shape and data must agree");
        let _ = std::fs::remove_dir_all(&d);
    }
}
