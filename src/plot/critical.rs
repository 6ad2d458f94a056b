//! Critical points of a 2-D loss grid, from each interior point's 8 neighbours: a local minimum is
//! strictly below all of them, a maximum strictly above all of them, and a saddle sees the sign of
//! (neighbour − centre) change at least four times going round them (ties, equal to the centre,
//! are skipped in that count). Points touching a non-finite value are not classified.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Minimum,
    Maximum,
    Saddle,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriticalPoint {
    /// Column i (x) and row j (y) in loss[j, i].
    pub index: [usize; 2],
    pub coords: [f64; 2],
    pub loss: f64,
    pub kind: Kind,
}

/// The 8 neighbours in circular order.
const RING: [(i64, i64); 8] = [(-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0)];

pub fn classify(x: &[f64], y: &[f64], loss: &[f64]) -> Vec<CriticalPoint> {
    let (nx, ny) = (x.len(), y.len());
    let mut out = Vec::new();
    if nx < 3 || ny < 3 {
        return out;
    }
    for j in 1..ny - 1 {
        for i in 1..nx - 1 {
            let c = loss[j * nx + i];
            let ring: Vec<f64> = RING
                .iter()
                .map(|(di, dj)| loss[(j as i64 + dj) as usize * nx + (i as i64 + di) as usize] - c)
                .collect();
            if !c.is_finite() || ring.iter().any(|d| !d.is_finite()) {
                continue;
            }
            let kind = if ring.iter().all(|d| *d > 0.0) {
                Kind::Minimum
            } else if ring.iter().all(|d| *d < 0.0) {
                Kind::Maximum
            } else {
                let signs: Vec<bool> = ring.iter().filter(|d| **d != 0.0).map(|d| *d > 0.0).collect();
                let n = signs.len();
                let changes = (0..n).filter(|&k| signs[k] != signs[(k + 1) % n]).count();
                if changes >= 4 {
                    Kind::Saddle
                } else {
                    continue;
                }
            };
            out.push(CriticalPoint { index: [i, j], coords: [x[i], y[j]], loss: c, kind });
        }
    }
    out
}

pub fn to_json(points: &[CriticalPoint]) -> serde_json::Value {
    let count = |k: Kind| points.iter().filter(|p| p.kind == k).count();
    serde_json::json!({
        "method": "8-neighbourhood of interior grid points: minimum (all neighbours higher), maximum (all lower), saddle (>= 4 sign changes around the ring)",
        "index": "[i, j] = column (x), row (y) of loss[j, i]",
        "counts": {"minimum": count(Kind::Minimum), "maximum": count(Kind::Maximum), "saddle": count(Kind::Saddle)},
        "points": points,
    })
}
