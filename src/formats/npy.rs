//! One `.npy` parser (C order, plain dtypes) for the data a user gives (`inputs`) and the arrays a
//! run writes and reads back (`store`): the problem in words on failure, never a panic.

/// The values of an array, in the widest type of their kind: bytes and bools as bytes, float32
/// and float64 as they are, every other integer widened to int64 (uint64 wraps).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::U8(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value as float64.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Values::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::F64(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// An array: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    pub shape: Vec<u64>,
    pub values: Values,
}

/// Parse .npy bytes.
pub fn parse(bytes: &[u8]) -> Result<Npy, String> {
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
    if n.saturating_mul(ts.size_field()) > bytes.len() as u64 || shape.iter().any(|&d| d > i64::MAX as u64) {
        return Err(format!("shape {shape:?} needs more data than the file holds ({} bytes)", bytes.len()));
    }
    let bad = |e: std::io::Error| format!("cannot read its data: {e}");
    let wide = |v: Vec<i64>| Values::I64(v);
    let values = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Uint, 1) | (TypeChar::Bool, 1) => Values::U8(npy.into_vec::<u8>().map_err(bad)?),
        (TypeChar::Float, 4) => Values::F32(npy.into_vec::<f32>().map_err(bad)?),
        (TypeChar::Float, 8) => Values::F64(npy.into_vec::<f64>().map_err(bad)?),
        (TypeChar::Int, 1) => wide(npy.into_vec::<i8>().map_err(bad)?.into_iter().map(i64::from).collect()),
        (TypeChar::Int, 2) => wide(npy.into_vec::<i16>().map_err(bad)?.into_iter().map(i64::from).collect()),
        (TypeChar::Int, 4) => wide(npy.into_vec::<i32>().map_err(bad)?.into_iter().map(i64::from).collect()),
        (TypeChar::Int, 8) => wide(npy.into_vec::<i64>().map_err(bad)?),
        (TypeChar::Uint, 2) => wide(npy.into_vec::<u16>().map_err(bad)?.into_iter().map(i64::from).collect()),
        (TypeChar::Uint, 4) => wide(npy.into_vec::<u32>().map_err(bad)?.into_iter().map(i64::from).collect()),
        (TypeChar::Uint, 8) => wide(npy.into_vec::<u64>().map_err(bad)?.into_iter().map(|v| v as i64).collect()),
        _ => return Err(format!("dtype {ts} is not supported (bool, integers, float32 or float64)")),
    };
    if values.len() as u64 != n {
        return Err(format!("holds {} values for shape {shape:?}", values.len()));
    }
    Ok(Npy { shape, values })
}

#[cfg(test)]
pub(crate) fn header(descr: &str, shape: &[u64], fortran: bool) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({}{}), }}",
        if fortran { "True" } else { "False" },
        dims.join(", "),
        if dims.len() == 1 { "," } else { "" }
    );
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let pad = 64 - (10 + header.len() + 1) % 64;
    bytes.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(b' ', pad));
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_widen_and_a_short_file_is_refused() {
        let mut b = header("<i4", &[3], false);
        for v in [1i32, -2, 3] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(parse(&b).unwrap(), Npy { shape: vec![3], values: Values::I64(vec![1, -2, 3]) });
        let e = parse(&b[..b.len() - 4]).unwrap_err();
        assert!(e.contains("cannot read its data") && !e.contains('\n'), "{e}");
        let e = parse(&header("<f8", &[1000], false)).unwrap_err();
        assert!(e.contains("needs more data"), "{e}");
        let e = parse(&header("<f4", &[1], true)).unwrap_err();
        assert!(e.contains("Fortran"), "{e}");
    }

    proptest! {
        /// Any bytes: a value whose size is its shape's, or a one-line problem; never a panic.
        #[test]
        fn arbitrary_bytes_give_an_array_or_a_one_line_problem(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            match parse(&bytes) {
                Ok(a) => prop_assert_eq!(a.values.len() as u64, a.shape.iter().product::<u64>()),
                Err(e) => prop_assert!(!e.is_empty() && !e.contains('\n'), "{e:?}"),
            }
        }

        /// Well-formed headers of any dtype and shape, with any tail.
        #[test]
        fn arbitrary_headers_give_an_array_or_a_one_line_problem(dtype in "[<>|]?[fiub][0-9]{1,2}", shape in proptest::collection::vec(0u64..1_000_000_000, 0..4), fortran in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = header(&dtype, &shape, fortran);
            bytes.extend_from_slice(&tail);
            match parse(&bytes) {
                Ok(a) => {
                    prop_assert!(!fortran);
                    prop_assert_eq!(a.values.len() as u64, a.shape.iter().product::<u64>());
                    prop_assert_eq!(a.shape, shape);
                }
                Err(e) => prop_assert!(!e.is_empty() && !e.contains('\n'), "{e:?}"),
            }
        }
    }
}
