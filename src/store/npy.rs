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

/// Parse .npy bytes; the problem in words on failure.
pub fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
    use npyz::{DType, TypeChar};
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("not an .npy file: {e}"))?;
    if npy.order() == npyz::Order::Fortran {
        return Err("Fortran-ordered array; save it with np.ascontiguousarray".into());
    }
    let shape = npy.shape().to_vec();
    let n = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or("the shape's size overflows")?;
    let DType::Plain(ts) = npy.dtype() else {
        return Err(format!("structured dtype {:?} is not supported", npy.dtype().descr()));
    };
    if n.saturating_mul(ts.size_field()) > bytes.len() as u64 {
        return Err(format!("shape {shape:?} needs more data than the file holds ({} bytes)", bytes.len()));
    }
    let bad = |e: std::io::Error| format!("cannot read its data: {e}");
    let values: Vec<f64> = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(bad)?.into_iter().map(f64::from).collect(),
        (TypeChar::Float, 8) => npy.into_vec::<f64>().map_err(bad)?,
        (TypeChar::Uint, 1) | (TypeChar::Bool, 1) => {
            npy.into_vec::<u8>().map_err(bad)?.into_iter().map(f64::from).collect()
        }
        (TypeChar::Int, 4) => npy.into_vec::<i32>().map_err(bad)?.into_iter().map(f64::from).collect(),
        (TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(bad)?.into_iter().map(|v| v as f64).collect(),
        _ => return Err(format!("dtype {ts} is not supported here")),
    };
    if values.len() as u64 != n {
        return Err(format!("holds {} values for shape {shape:?}", values.len()));
    }
    Ok(Array { shape, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn arbitrary_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Err(e) = parse(&bytes) {
                prop_assert!(!e.contains('\n'));
            }
        }

        #[test]
        fn arbitrary_headers_fail_cleanly(dtype in "[<>|]?[fiub][0-9]{1,2}", shape in proptest::collection::vec(0u64..1_000_000_000, 0..4), fortran in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            let header = format!("{{'descr': '{dtype}', 'fortran_order': {}, 'shape': ({}{}), }}",
                if fortran { "True" } else { "False" }, dims.join(", "), if dims.len() == 1 { "," } else { "" });
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            let pad = 64 - (10 + header.len() + 1) % 64;
            let len = (header.len() + pad + 1) as u16;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(b' ', pad));
            bytes.push(b'\n');
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes);
        }
    }
}
