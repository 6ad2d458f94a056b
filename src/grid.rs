//! Grid axes: the `MIN:MAX:N` specs of the command line, their coordinates, and the order in
//! which a 2-D grid's points are stored (row j = y_j, column i = x_i, as numpy's meshgrid "xy").

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How the N coordinates of an axis are placed between MIN and MAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    /// Evenly spaced, like numpy.linspace(MIN, MAX, N).
    Linear,
    /// Denser near the middle of the range: c + h·t³ for t evenly spaced in [-1, 1],
    /// where c = (MIN+MAX)/2 and h = (MAX-MIN)/2.
    Cubic,
}

/// One axis of a grid: N coordinates from MIN to MAX (both included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl FromStr for Axis {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Axis> {
        let parts: Vec<&str> = s.split(':').collect();
        let expect = "expected MIN:MAX:N, e.g. -1:1:51";
        if parts.len() != 3 {
            bail!("grid spec {s:?}: {expect}");
        }
        let num = |p: &str, what: &str| -> Result<f64> {
            match p.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => bail!("grid spec {s:?}: {what} {p:?} is not a finite number ({expect})"),
            }
        };
        let min = num(parts[0], "MIN")?;
        let max = num(parts[1], "MAX")?;
        let n: i64 = match parts[2].trim().parse() {
            Ok(n) => n,
            Err(_) => bail!("grid spec {s:?}: N {:?} is not an integer ({expect})", parts[2]),
        };
        if n < 1 {
            bail!("grid spec {s:?}: N must be at least 1, got {n}");
        }
        if min > max {
            bail!("grid spec {s:?}: MIN {min} is greater than MAX {max}");
        }
        if n > 1 && min == max {
            bail!("grid spec {s:?}: MIN equals MAX but N is {n}: use N = 1 for a single point");
        }
        Ok(Axis { min, max, n: n as usize })
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.min, self.max, self.n)
    }
}

impl Axis {
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

/// The coordinates of a 1-D or 2-D grid and the storage order of its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub x: Vec<f64>,
    /// None for a 1-D curve.
    pub y: Option<Vec<f64>>,
}

impl Grid {
    pub fn new(x: &Axis, y: Option<&Axis>, spacing: Spacing) -> Grid {
        Grid { x: x.values(spacing), y: y.map(|a| a.values(spacing)) }
    }

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
