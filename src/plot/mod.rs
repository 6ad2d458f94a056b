//! Pictures of a run, drawn from its saved files alone (meta.json and the .npy arrays, no model,
//! no data): contour lines and a filled heatmap with the path and marked points, a 1-D curve with
//! accuracy on a twin axis, a rendered 3-D surface, critical points, ParaView (.vtp) and PLY
//! meshes, and a self-contained interactive HTML page.

mod critical;
mod export;
mod html;
mod png;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Role, Setting};
use crate::store::record::{AnyMeta, HessianMeta, Meta, RunKind};

pub use critical::{classify, CriticalPoint, Kind as CriticalKind};

/// Drawing options of `losscape plot` (the defaults are used after every run).
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// log10 of the loss for colours, heights and contour spacing.
    pub log: bool,
    /// Colour range (loss units); None: the finite min / max.
    pub vmin: Option<f64>,
    pub vmax: Option<f64>,
    /// Number of contour levels.
    pub levels: usize,
    /// Clip heights of the 3-D surface at this loss.
    pub zmax: Option<f64>,
    /// Pixels per inch: 100 gives 800×640 pictures.
    pub dpi: u32,
}

impl PlotOptions {
    /// Check the options against each other (before anything is read or drawn).
    pub fn check(&self) -> Result<()> {
        if self.dpi < 20 || self.dpi > 600 {
            return Err(Error::setting(Setting::Dpi, self.dpi, "use 20..600"));
        }
        if self.levels > 200 {
            return Err(Error::setting(Setting::Levels, self.levels, "use at most 200"));
        }
        if let (Some(a), Some(b)) = (self.vmin, self.vmax) {
            if a.partial_cmp(&b) != Some(std::cmp::Ordering::Less) {
                return Err(Error::setting(
                    Setting::ColourRange,
                    format!("{a}..{b}"),
                    "the lower end must be below the upper",
                ));
            }
        }
        if self.log && (self.vmin.is_some_and(|v| v <= 0.0) || self.zmax.is_some_and(|v| v <= 0.0)) {
            return Err(Error::setting(Setting::Log, "", "a log scale needs a positive lower end and height clip"));
        }
        Ok(())
    }
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions { log: false, vmin: None, vmax: None, levels: 12, zmax: None, dpi: 100 }
    }
}

/// Everything a picture needs, read back from a run directory.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub meta: Meta,
    pub x: Vec<f64>,
    /// None for a 1-D run.
    pub y: Option<Vec<f64>>,
    /// Row-major [ny, nx] (or [nx]).
    pub loss: Vec<f64>,
    pub acc: Vec<f64>,
    /// Trajectory runs: [T][2] plane coordinates of the checkpoints, in order.
    pub path: Option<Vec<[f64; 2]>>,
    /// Named points to mark: the origin, and for planes the three models.
    pub marks: Vec<(String, [f64; 2])>,
    /// Axis titles.
    pub x_label: String,
    pub y_label: String,
}

fn read_vec(dir: &Path, name: &str) -> Result<Vec<f64>> {
    Ok(crate::store::npy::read(&dir.join(name))?.values)
}

impl RunData {
    pub fn load(dir: &Path) -> Result<RunData> {
        if !Meta::path(dir).exists() {
            return Err(Error::file(Role::RunDir, dir, "no meta.json (not a complete losscape run)"));
        }
        let meta = Meta::read(dir)?;
        let x = read_vec(dir, "x.npy")?;
        let two = meta.description.grid.dims == 2;
        let y = if two { Some(read_vec(dir, "y.npy")?) } else { None };
        let loss = read_vec(dir, "loss.npy")?;
        let acc = read_vec(dir, "acc.npy")?;
        let n = x.len() * y.as_ref().map_or(1, Vec::len);
        if loss.len() != n || acc.len() != n {
            return Err(Error::file(
                Role::RunDir,
                dir,
                format!("loss.npy has {} values, expected {n} for the grid of x.npy and y.npy", loss.len()),
            ));
        }
        let path = if dir.join("path.npy").exists() {
            let p = read_vec(dir, "path.npy")?;
            Some(p.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
        } else {
            None
        };
        let mut marks = Vec::new();
        match (&meta.kind, &meta.description.plane) {
            (RunKind::Plane, Some(p)) => {
                for (k, s) in [("A", &p.a), ("B", &p.b), ("C", &p.c)] {
                    if let Some(c) = s.coords {
                        marks.push((k.to_string(), c));
                    }
                }
            }
            (RunKind::Trajectory, _) => {}
            _ => marks.push(("center".to_string(), [0.0, 0.0])),
        }
        let ratio = |k: usize| {
            meta.description
                .trajectory
                .as_ref()
                .and_then(|t| t.explained_variance_ratio.get(k).copied())
                .unwrap_or(f64::NAN)
        };
        let (x_label, y_label) = match meta.kind {
            RunKind::Trajectory => (
                format!("PC1 ({:.1}% of variance)", 100.0 * ratio(0)),
                format!("PC2 ({:.1}% of variance)", 100.0 * ratio(1)),
            ),
            RunKind::Plane => ("α · (B − A)".to_string(), "β · (C − A)".to_string()),
            RunKind::Line => ("α  (0 = A, 1 = B)".to_string(), String::new()),
            RunKind::Surface => {
                let norm = meta
                    .description
                    .directions
                    .as_ref()
                    .and_then(|d| d.norm)
                    .map_or("given".to_string(), |n| n.to_string());
                (format!("α  (δ: {norm}-normalized)"), format!("β  (η: {norm}-normalized)"))
            }
        };
        Ok(RunData { dir: dir.to_path_buf(), meta, x, y, loss, acc, path, marks, x_label, y_label })
    }

    pub fn nx(&self) -> usize {
        self.x.len()
    }

    pub fn ny(&self) -> usize {
        self.y.as_ref().map_or(1, Vec::len)
    }

    /// Loss at column i, row j.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.loss[j * self.nx() + i]
    }

    /// The finite loss range, then clipped by the options.
    pub fn range(&self, o: &PlotOptions) -> Option<(f64, f64)> {
        let finite = self.loss.iter().copied().filter(|v| v.is_finite() && (!o.log || *v > 0.0));
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            return None;
        }
        let lo = o.vmin.unwrap_or(lo);
        let hi = o.vmax.unwrap_or(hi).min(o.zmax.unwrap_or(f64::INFINITY)).max(lo);
        Some((lo, hi))
    }
}

/// The value used for colours and heights: log10 when asked (non-positive values are masked).
pub fn transform(v: f64, o: &PlotOptions) -> Option<f64> {
    if !v.is_finite() || (o.log && v <= 0.0) {
        None
    } else if o.log {
        Some(v.log10())
    } else {
        Some(v)
    }
}

/// The plotted value of a loss: `transform` of it clipped at `hi`; None (masked) when not finite.
pub fn clipped(v: f64, hi: f64, o: &PlotOptions) -> Option<f64> {
    if v.is_finite() {
        transform(v.min(hi), o)
    } else {
        None
    }
}

/// Contour levels between lo and hi: log-spaced when both are positive (as loss landscapes span
/// decades), linear otherwise.
pub fn levels(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n == 0 || hi.is_nan() || lo.is_nan() || hi <= lo {
        return vec![];
    }
    if lo > 0.0 {
        let (a, b) = (lo.ln(), hi.ln());
        (1..=n).map(|k| (a + (b - a) * k as f64 / (n + 1) as f64).exp()).collect()
    } else {
        (1..=n).map(|k| lo + (hi - lo) * k as f64 / (n + 1) as f64).collect()
    }
}

/// Draw every picture and export of a run directory; returns the files written.
pub fn plot_run(dir: &Path, o: &PlotOptions) -> Result<Vec<PathBuf>> {
    o.check()?;
    png::font()?;
    if let AnyMeta::Hessian(m) = AnyMeta::read(dir)? {
        return hessian_pictures(dir, o, &m);
    }
    let d = RunData::load(dir)?;
    let mut written = Vec::new();
    let curvature = d.meta.description.curvature.is_some() && dir.join("eig_max.npy").exists();
    let eigs = if curvature { Some((read_vec(dir, "eig_max.npy")?, read_vec(dir, "eig_min.npy")?)) } else { None };
    if d.y.is_none() {
        written.push(png::curve(&d, o)?);
        if let Some((max, min)) = &eigs {
            written.push(png::curvature_curve(&d, o, max, min)?);
        }
        return Ok(written);
    }
    if let Some((max, min)) = &eigs {
        let ratio: Vec<f64> = max.iter().zip(min).map(|(a, b)| (b / a).abs()).collect();
        written.push(png::curvature_map(&d, o, &ratio)?);
    }
    let t = std::time::Instant::now();
    let lap = |what: &str| {
        if std::env::var_os("LOSSCAPE_PLOT_TIMING").is_some() {
            eprintln!("{what}: {:.3}s", t.elapsed().as_secs_f64());
        }
    };
    let crit = critical::classify(&d.x, d.y.as_ref().expect("2-D"), &d.loss);
    let cp = dir.join("critical_points.json");
    crate::store::atomic::write_json(&cp, &critical::to_json(&crit))?;
    written.push(cp);
    lap("critical points");
    written.push(png::contour(&d, o, &crit)?);
    lap("contour.png");
    written.push(png::heatmap(&d, o, &crit)?);
    lap("heatmap.png");
    written.push(png::surface3d(&d, o, &crit)?);
    lap("surface3d.png");
    written.push(export::vtp(&d, o)?);
    written.push(export::ply(&d, o)?);
    lap("vtp + ply");
    if let Some(h) = html::write(&d, o, &crit)? {
        written.push(h);
    }
    lap("surface.html");
    Ok(written)
}

/// The pictures of a Hessian run: its spectral density, when one was computed.
fn hessian_pictures(dir: &Path, o: &PlotOptions, m: &HessianMeta) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if let Some(d) = &m.density {
        let a = crate::store::npy::read(&dir.join(&d.file))?;
        if a.shape.len() != 2 || a.shape[0] != 2 || a.shape[1] < 2 {
            return Err(Error::file(
                Role::RunFile,
                &dir.join(&d.file),
                format!("expected a [2, B] array, found {:?}", a.shape),
            ));
        }
        let b = a.shape[1] as usize;
        let model = m.model.path.file_name().map_or("?".into(), |f| f.to_string_lossy().into_owned());
        let caption = format!("Hessian spectral density of {model} ({} samples, SLQ {}×{})", m.data.n, d.runs, d.steps);
        written.push(png::density(dir, o, &a.values[..b], &a.values[b..], &caption)?);
    }
    Ok(written)
}
