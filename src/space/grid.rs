//! Grid axes: the `MIN:MAX:N` specs of the command line, their coordinates, and the order in
//! which a 2-D grid's points are stored (row j = y_j, column i = x_i, as numpy's meshgrid "xy").

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Setting};

/// How the N coordinates of an axis are placed between MIN and MAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    /// Evenly spaced, like numpy.linspace(MIN, MAX, N).
    Linear,
    /// Denser near the middle of the range: c + h·t³ for t evenly spaced in [-1, 1],
    /// where c = (MIN+MAX)/2 and h = (MAX-MIN)/2.
    Cubic,
}

/// One axis of a grid: N coordinates from MIN to MAX (both included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl FromStr for Axis {
    type Err = Error;

    fn from_str(s: &str) -> Result<Axis> {
        let bad = |problem: String| Error::setting(Setting::Grid, format!("{s:?}"), problem);
        let expect = "expected MIN:MAX:N, e.g. -1:1:51";
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(bad(expect.into()));
        }
        let num = |p: &str, what: &str| -> Result<f64> {
            match p.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(bad(format!("{what} {p:?} is not a finite number ({expect})"))),
            }
        };
        let min = num(parts[0], "MIN")?;
        let max = num(parts[1], "MAX")?;
        let n: i64 =
            parts[2].trim().parse().map_err(|_| bad(format!("N {:?} is not an integer ({expect})", parts[2])))?;
        Axis::new(min, max, n).map_err(|e| match e {
            Error::Setting { problem, .. } => bad(problem),
            e => e,
        })
    }
}

impl Axis {
    /// An axis, checked: finite ends, MIN ≤ MAX, N ≥ 1, and MIN < MAX when N > 1.
    pub fn new(min: f64, max: f64, n: i64) -> Result<Axis> {
        let v = format!("{min}:{max}:{n}");
        if !(min.is_finite() && max.is_finite()) {
            return Err(Error::setting(Setting::Grid, v, "MIN and MAX must be finite numbers"));
        }
        if n < 1 {
            return Err(Error::setting(Setting::Grid, v, format!("N must be at least 1, got {n}")));
        }
        if n > 100_000 {
            return Err(Error::setting(Setting::Grid, v, format!("N = {n} points on one axis is more than 100000")));
        }
        if min > max {
            return Err(Error::setting(Setting::Grid, v, format!("MIN {min} is greater than MAX {max}")));
        }
        if n > 1 && min == max {
            return Err(Error::setting(
                Setting::Grid,
                v,
                format!("MIN equals MAX but N is {n}: use N = 1 for a single point"),
            ));
        }
        Ok(Axis { min, max, n: n as usize })
    }

    /// The N coordinates, in increasing order. N = 1 gives [MIN] (as numpy.linspace does).
    pub fn values(&self, spacing: Spacing) -> Vec<f64> {
        if self.n == 1 {
            return vec![self.min];
        }
        let last = (self.n - 1) as f64;
        (0..self.n)
            .map(|i| {
                if i == 0 {
                    return self.min;
                }
                if i == self.n - 1 {
                    return self.max;
                }
                let u = i as f64 / last;
                match spacing {
                    Spacing::Linear => self.min + u * (self.max - self.min),
                    Spacing::Cubic => {
                        let t = 2.0 * u - 1.0;
                        let c = 0.5 * (self.min + self.max);
                        let h = 0.5 * (self.max - self.min);
                        c + h * t * t * t
                    }
                }
            })
            .collect()
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.min, self.max, self.n)
    }
}

/// The axes of a grid as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GridSpec {
    pub x: Axis,
    /// None: a 1-D curve.
    pub y: Option<Axis>,
    pub spacing: Spacing,
}

/// Points a grid may have in all: ten million (a 3162 × 3162 grid, days of evaluation on a GPU).
/// A run holds a few values per point in memory and on disk; the bound keeps every such array
/// allocatable and is checked before anything is written.
pub const MAX_POINTS: usize = 10_000_000;

/// Refuse a grid of `nx` × `ny` points (described as `what`) when that is over [`MAX_POINTS`].
pub fn check_points(nx: usize, ny: usize, what: String) -> Result<()> {
    match nx.checked_mul(ny) {
        Some(p) if p <= MAX_POINTS => Ok(()),
        p => {
            let count = p.map_or_else(|| format!("{nx} × {ny}"), |p| p.to_string());
            Err(Error::setting(
                Setting::Grid,
                what,
                format!("{count} points in all is more than the limit of {MAX_POINTS} (e.g. 3162 × 3162)"),
            ))
        }
    }
}

impl GridSpec {
    /// A grid of the axes `x` (and `y`), checked against [`MAX_POINTS`].
    pub fn new(x: Axis, y: Option<Axis>, spacing: Spacing) -> Result<GridSpec> {
        let g = GridSpec { x, y, spacing };
        g.check()?;
        Ok(g)
    }

    /// The grid's points in all, or None when the count overflows.
    pub fn points(&self) -> Option<usize> {
        self.x.n.checked_mul(self.y.map_or(1, |a| a.n))
    }

    /// Refuse a grid of more than [`MAX_POINTS`] points.
    pub fn check(&self) -> Result<()> {
        let axes = match self.y {
            Some(y) => format!("{} by {}", self.x, y),
            None => self.x.to_string(),
        };
        check_points(self.x.n, self.y.map_or(1, |a| a.n), axes)
    }

    pub fn grid(&self) -> Grid {
        Grid { x: self.x.values(self.spacing), y: self.y.map(|a| a.values(self.spacing)) }
    }
}

/// The coordinates of a 1-D or 2-D grid and the storage order of its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub x: Vec<f64>,
    /// None for a 1-D curve.
    pub y: Option<Vec<f64>>,
}

impl Grid {
    pub fn len(&self) -> usize {
        self.x.len() * self.y.as_ref().map_or(1, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of the stored arrays: [ny, nx] for 2-D, [nx] for 1-D.
    pub fn shape(&self) -> Vec<u64> {
        match &self.y {
            Some(y) => vec![y.len() as u64, self.x.len() as u64],
            None => vec![self.x.len() as u64],
        }
    }

    /// Coordinates (α, β) of the point with flat index k (row-major over [ny, nx]); β = 0 in 1-D.
    pub fn point(&self, k: usize) -> (f64, f64) {
        let nx = self.x.len();
        let (j, i) = (k / nx, k % nx);
        (self.x[i], self.y.as_ref().map_or(0.0, |y| y[j]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_negative_ranges_and_single_points() {
        let a: Axis = "-1:1:5".parse().unwrap();
        assert_eq!(a.values(Spacing::Linear), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        let one: Axis = "0.5:0.5:1".parse().unwrap();
        assert_eq!(one.values(Spacing::Linear), vec![0.5]);
        let b: Axis = " -2 : -1 : 2 ".parse().unwrap();
        assert_eq!((b.min, b.max, b.n), (-2.0, -1.0, 2));
    }

    #[test]
    fn cubic_spacing_is_denser_near_the_center_and_keeps_the_ends() {
        let v = Axis { min: -1.0, max: 1.0, n: 5 }.values(Spacing::Cubic);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[4], 1.0);
        assert!((v[1] + 0.125).abs() < 1e-12 && v[2].abs() < 1e-12);
    }

    #[test]
    fn malformed_specs_say_what_is_wrong() {
        for (bad, word) in [
            ("-1:1", "MIN:MAX:N"),
            ("a:1:3", "MIN \"a\""),
            ("0:1:0", "N must be at least 1"),
            ("2:1:3", "greater than MAX"),
            ("1:1:3", "N = 1"),
            ("0:1:2.5", "not an integer"),
            ("0:inf:3", "finite"),
            ("0:1:1000000", "more than 100000"),
        ] {
            let e = bad.parse::<Axis>().unwrap_err().to_string();
            assert!(e.contains(word) && e.contains(bad.split(':').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn points_are_row_major_rows_y_columns_x() {
        let g = GridSpec { x: "0:2:3".parse().unwrap(), y: Some("10:11:2".parse().unwrap()), spacing: Spacing::Linear }
            .grid();
        assert_eq!(g.shape(), vec![2, 3]);
        assert_eq!(g.len(), 6);
        assert_eq!(g.point(0), (0.0, 10.0));
        assert_eq!(g.point(2), (2.0, 10.0));
        assert_eq!(g.point(3), (0.0, 11.0));
        let g1 = GridSpec { x: "0:1:2".parse().unwrap(), y: None, spacing: Spacing::Linear }.grid();
        assert_eq!((g1.shape(), g1.point(1)), (vec![2], (1.0, 0.0)));
    }

    #[test]
    fn a_grid_of_more_points_than_the_limit_is_refused_before_anything_is_allocated() {
        let big: Axis = "-1:1:100000".parse().unwrap();
        let e = GridSpec::new(big, Some(big), Spacing::Linear).unwrap_err().to_string();
        assert!(e.contains("10000000000 points") && e.contains("10000000"), "{e}");
        assert!(!e.contains('\n'));
        let ok: Axis = "-1:1:3162".parse().unwrap();
        assert!(GridSpec::new(ok, Some(ok), Spacing::Linear).is_ok());
        let over: Axis = "-1:1:3163".parse().unwrap();
        assert!(GridSpec::new(over, Some(over), Spacing::Linear).is_err());
        assert!(GridSpec::new(big, None, Spacing::Linear).is_ok());
    }

    proptest! {
        #[test]
        fn any_string_parses_or_fails_cleanly(s in "\\PC{0,40}") {
            if let Ok(a) = s.parse::<Axis>() {
                let v = a.values(Spacing::Linear);
                prop_assert_eq!(v.len(), a.n);
                prop_assert!(v.windows(2).all(|w| w[0] <= w[1]));
            }
        }

        #[test]
        fn colon_separated_numbers_parse_or_fail_cleanly(a in any::<f64>(), b in any::<f64>(), n in -5i64..300) {
            let s = format!("{a}:{b}:{n}");
            match s.parse::<Axis>() {
                Ok(ax) => {
                    prop_assert!(ax.min <= ax.max && ax.n >= 1);
                    let v = ax.values(Spacing::Cubic);
                    prop_assert_eq!(v[0], ax.min);
                    // N = 1 is the single point MIN; otherwise both ends are on the grid.
                    prop_assert_eq!(*v.last().unwrap(), if ax.n == 1 { ax.min } else { ax.max });
                }
                Err(e) => prop_assert!(!e.to_string().contains('\n')),
            }
        }
    }
}
