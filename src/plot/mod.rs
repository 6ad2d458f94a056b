//! Pictures of a run, drawn from its saved files alone (meta.json and the .npy arrays, no model,
//! no data): contour lines and a filled heatmap with the path and marked points, a 1-D curve with
//! accuracy on a twin axis, a rendered 3-D surface, critical points, ParaView (.vtp) and PLY
//! meshes, and a self-contained interactive HTML page.

mod axes;
pub mod canvas;
mod compose;
mod connect;
mod contours;
mod critical;
mod curves;
mod diagrams;
mod export;
pub mod fonts;
mod html;
mod layers;
pub mod layout;
pub mod output;
mod panel;
pub mod scale;
mod script;
mod sharpness;
mod surface3d;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Role, Setting};
use crate::space::barrier::Barrier;
use crate::store::record::{AnyMeta, HessianMeta, Meta, RunKind, PATH_OFF_PLANE_NOTE};

pub use compose::{side_by_side, Figure};
pub use critical::{classify, CriticalPoint, Kind as CriticalKind, Persistence};
pub use output::Format;
pub use scale::{Scale, ScaleChoice};

/// The aspect of the α–β axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aspect {
    /// Equal for trajectories (PCA coordinates share one unit), free otherwise.
    #[default]
    Auto,
    Equal,
    Free,
}

/// What a 2-D heatmap is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// Filled contours: the bands between the contour levels.
    #[default]
    Bands,
    /// One block per grid point.
    Cells,
}

/// The default size of a picture, in inches.
pub const SIZE: (f64, f64) = (8.0, 6.4);

/// Drawing options of `losscape plot` (the defaults are used after every run).
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// Log or linear colours, heights and contour spacing (Auto: log when the range spans more
    /// than a decade).
    pub scale: ScaleChoice,
    /// Colour range (loss units); None: the finite min / max.
    pub vmin: Option<f64>,
    pub vmax: Option<f64>,
    /// Number of contour levels.
    pub levels: usize,
    /// Clip heights of the 3-D surface at this loss.
    pub zmax: Option<f64>,
    /// Pixels per inch of the PNG: 100 gives 800×640 pictures.
    pub dpi: u32,
    /// The files each picture is written as (PNG and PDF by default).
    pub formats: Vec<Format>,
    /// A single picture's size in inches (None: 8×6.4; a figure of panels grows with its panels).
    pub size: Option<(f64, f64)>,
    /// The size of tick labels in points; titles and labels are drawn in proportion.
    pub font_size: f64,
    /// Filled contours or cells for the heatmap.
    pub style: Style,
    /// Also write `figures.py`, a matplotlib program drawing the same figures from the arrays.
    pub script: bool,
    /// Critical points are reported when their persistence is at least this fraction of the range
    /// (None: at the largest gap of the persistence diagram).
    pub persistence: Option<f64>,
    /// Shade the points of a `--rel-error` run whose standard error exceeds this fraction of
    /// their loss (None: no shading).
    pub shade_stderr: Option<f64>,
    pub aspect: Aspect,
}

impl PlotOptions {
    /// Check the options against each other (before anything is read or drawn).
    pub fn check(&self) -> Result<()> {
        if self.dpi < 20 || self.dpi > 600 {
            return Err(Error::setting(Setting::Dpi, self.dpi, "use 20..600"));
        }
        if self.formats.is_empty() {
            return Err(Error::setting(Setting::Format, "", "name at least one of png, svg, pdf"));
        }
        if let Some((w, h)) = self.size {
            if !(1.0..=40.0).contains(&w) || !(1.0..=40.0).contains(&h) {
                return Err(Error::setting(Setting::Size, format!("{w}x{h}"), "use 1..40 inches each way"));
            }
        }
        if !(4.0..=30.0).contains(&self.font_size) {
            return Err(Error::setting(Setting::FontSize, self.font_size, "use 4..30 points"));
        }
        if !(2..=200).contains(&self.levels) {
            return Err(Error::setting(Setting::Levels, self.levels, "use 2..200 contour levels"));
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
        if let Some(p) = self.persistence.filter(|p| !(0.0..=1.0).contains(p)) {
            return Err(Error::setting(Setting::Persistence, p, "use a fraction of the range in 0..1"));
        }
        if let Some(f) = self.shade_stderr.filter(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err(Error::setting(Setting::ShadeStderr, f, "use a fraction of the loss in (0, 1]"));
        }
        if self.scale == ScaleChoice::Log
            && (self.vmin.is_some_and(|v| v <= 0.0) || self.zmax.is_some_and(|v| v <= 0.0))
        {
            return Err(Error::setting(Setting::Log, "", "a log scale needs a positive lower end and height clip"));
        }
        Ok(())
    }
}

impl PlotOptions {
    /// A length that goes with the text (label areas, gaps, text sizes): `v` points of a 10-point
    /// figure, in canvas units, scaled with `--font-size`.
    pub fn em(&self, v: f64) -> f64 {
        v * canvas::UNITS / 72.0 * self.font_size / 10.0
    }

    /// A length that does not (strokes, markers): `v` points in canvas units.
    pub fn pt(&self, v: f64) -> f64 {
        v * canvas::UNITS / 72.0
    }

    /// A stroke width or marker radius in whole canvas units.
    pub fn w(&self, v: f64) -> u32 {
        self.pt(v).round().max(1.0) as u32
    }

    /// A single picture's size in inches.
    pub fn inches(&self) -> (f64, f64) {
        self.size.unwrap_or(SIZE)
    }
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            scale: ScaleChoice::Auto,
            vmin: None,
            vmax: None,
            levels: 12,
            zmax: None,
            dpi: 100,
            formats: vec![Format::Png, Format::Pdf],
            size: None,
            font_size: 10.0,
            style: Style::Bands,
            script: false,
            persistence: None,
            shade_stderr: None,
            aspect: Aspect::Auto,
        }
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
    /// A `--rel-error` run: the standard error of each point's loss (0 where its pass was
    /// complete), shaped as `loss`.
    pub stderr: Option<Vec<f64>>,
    /// Trajectory runs: [T][2] plane coordinates of the checkpoints, in order.
    pub path: Option<Vec<[f64; 2]>>,
    /// Named points to mark: the origin, and for planes the three models.
    pub marks: Vec<(String, [f64; 2])>,
    /// Axis titles.
    pub x_label: String,
    pub y_label: String,
    /// A line's loss barrier on the split drawn (meta.json's `line.barriers`).
    pub barrier: Option<Barrier>,
    /// What the path is: the optimizer's (a trajectory, each checkpoint a dot, its start and end
    /// labelled) or a trained curve between two models (`plane --curve`, a plain line).
    pub path_kind: PathKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Optimizer,
    Curve(crate::space::curve::CurveKind),
}

pub(crate) fn read_vec(dir: &Path, name: &str) -> Result<Vec<f64>> {
    Ok(crate::store::npy::read(&dir.join(name))?.values)
}

/// An array of the run that must have one value per grid point.
fn read_sized(dir: &Path, name: &str, n: usize) -> Result<Vec<f64>> {
    let v = read_vec(dir, name)?;
    if v.len() != n {
        return Err(Error::file(Role::RunFile, &dir.join(name), format!("has {} values, the grid has {n}", v.len())));
    }
    Ok(v)
}

/// The named points a run's pictures mark: the origin, or a plane's three models.
fn marks(meta: &Meta) -> Vec<(String, [f64; 2])> {
    let mut marks = Vec::new();
    match (&meta.kind, &meta.description.plane) {
        (RunKind::Plane, Some(p)) => {
            // With a curve drawn on the plane, its bend is named as such.
            let bend = p.curve.as_ref().map(|c| c.bend);
            for (i, (k, s)) in [("A", &p.a), ("B", &p.b), ("C", &p.c)].into_iter().enumerate() {
                if let Some(c) = s.coords {
                    let name = if bend == Some(i) { "bend" } else { k };
                    marks.push((name.to_string(), c));
                }
            }
        }
        (RunKind::Trajectory, _) => {}
        _ => marks.push(("center".to_string(), [0.0, 0.0])),
    }
    marks
}

/// The α and β axis titles of a run's pictures.
fn axis_titles(meta: &Meta) -> (String, String) {
    let ratio = |k: usize| {
        meta.description
            .trajectory
            .as_ref()
            .and_then(|t| t.explained_variance_ratio.get(k).copied())
            .unwrap_or(f64::NAN)
    };
    // A path that leaves the plane is said so under the plot (path_residual.npy).
    let off_plane = meta
        .description
        .trajectory
        .as_ref()
        .and_then(|t| t.path_off_plane)
        .filter(|&r| r > PATH_OFF_PLANE_NOTE)
        .map_or(String::new(), |r| {
            format!("   —   projected: the path leaves the plane by up to {:.0}% of its extent", 100.0 * r)
        });
    match meta.kind {
        RunKind::Trajectory => (
            format!("PC1 ({:.1}% of variance){off_plane}", 100.0 * ratio(0)),
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
        RunKind::Sharpness | RunKind::Connect => (String::new(), String::new()),
    }
}

impl RunData {
    pub fn load(dir: &Path) -> Result<RunData> {
        if !Meta::path(dir).exists() {
            return Err(Error::file(Role::RunDir, dir, "no meta.json (not a complete losscape run)"));
        }
        let meta = Meta::read(dir)?;
        let Some(grid) = &meta.description.grid else {
            return Err(Error::file(Role::RunDir, dir, format!("is a {} run: it has no grid to draw", meta.kind)));
        };
        let two = grid.dims == 2;
        let x = read_vec(dir, "x.npy")?;
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
        let stderr = match &meta.sampling {
            Some(s) => Some(read_sized(dir, &s.stderr, n)?),
            None => None,
        };
        let path = if dir.join("path.npy").exists() {
            let p = read_vec(dir, "path.npy")?;
            Some(p.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
        } else {
            None
        };
        let marks = marks(&meta);
        let (x_label, y_label) = axis_titles(&meta);
        // The first split's barrier is the one of loss.npy.
        let barrier = meta.description.line.as_ref().and_then(|l| l.barriers.first()).and_then(|b| b.loss);
        let path_kind = match meta.description.plane.as_ref().and_then(|p| p.curve.as_ref()) {
            Some(c) => PathKind::Curve(c.curve),
            None => PathKind::Optimizer,
        };
        Ok(RunData {
            dir: dir.to_path_buf(),
            meta,
            x,
            y,
            loss,
            acc,
            stderr,
            path,
            marks,
            x_label,
            y_label,
            barrier,
            path_kind,
        })
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

    /// A run over several splits as one view per split (its loss and accuracy on that split),
    /// named by the split; empty for a run over one split.
    pub fn split_views(&self) -> Result<Vec<(String, RunData)>> {
        self.meta
            .description
            .splits
            .iter()
            .map(|sp| {
                let mut v = self.clone();
                v.loss = read_vec(&self.dir, &sp.loss)?;
                v.acc = read_vec(&self.dir, &sp.acc)?;
                v.barrier = self
                    .meta
                    .description
                    .line
                    .as_ref()
                    .and_then(|l| l.barriers.iter().find(|b| b.split == Some(sp.split)).and_then(|b| b.loss));
                let sampled = self.meta.sampling.as_ref().and_then(|s| s.splits.iter().find(|t| t.split == sp.split));
                v.stderr = match sampled {
                    Some(t) => Some(read_sized(&self.dir, &t.stderr, self.loss.len())?),
                    None => None,
                };
                if v.loss.len() != self.loss.len() || v.acc.len() != self.acc.len() {
                    return Err(Error::file(
                        Role::RunDir,
                        &self.dir,
                        format!("{} or {} does not have the grid's {} values", sp.loss, sp.acc, self.loss.len()),
                    ));
                }
                Ok((sp.split.to_string(), v))
            })
            .collect()
    }

    /// The points to shade under `--shade-stderr F`: those whose standard error exceeds F times
    /// their loss. None without the option; an error for a run that has no standard errors.
    pub fn shaded(&self, o: &PlotOptions) -> Result<Option<Vec<bool>>> {
        let Some(f) = o.shade_stderr else { return Ok(None) };
        let Some(se) = &self.stderr else {
            return Err(Error::file(
                Role::RunDir,
                &self.dir,
                "has no standard errors to shade by (it was not run with --rel-error)",
            ));
        };
        Ok(Some(self.loss.iter().zip(se).map(|(l, s)| l.is_finite() && *s > f * l.abs()).collect()))
    }

    /// A short name for legends: the run directory's name.
    pub fn name(&self) -> String {
        self.dir.file_name().map_or_else(|| self.dir.display().to_string(), |f| f.to_string_lossy().into_owned())
    }

    /// Whether the α–β axes are drawn in equal units.
    pub fn equal_aspect(&self, o: &PlotOptions) -> bool {
        match o.aspect {
            Aspect::Equal => true,
            Aspect::Free => false,
            Aspect::Auto => self.meta.kind == RunKind::Trajectory,
        }
    }
}

/// The scale, colour range and contour levels of a figure: decided once from the finite losses
/// of every run in it and the options, then used by each of its pictures.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub scale: Scale,
    /// The colour range in loss units.
    pub lo: f64,
    pub hi: f64,
    /// The contour levels in loss units.
    pub levels: Vec<f64>,
}

impl Look {
    /// None when no run has a drawable value.
    pub fn of(runs: &[&RunData], o: &PlotOptions) -> Option<Look> {
        let values = || runs.iter().flat_map(|d| d.loss.iter().copied()).filter(|v| v.is_finite());
        let (lo, hi) = values().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            return None;
        }
        let lo = o.vmin.unwrap_or(lo);
        let hi = o.vmax.unwrap_or(hi).min(o.zmax.unwrap_or(f64::INFINITY)).max(lo);
        let scale = Scale::choose(o.scale, lo, hi);
        let lo = match scale {
            Scale::Log if lo <= 0.0 => values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min),
            _ => lo,
        };
        if !lo.is_finite() {
            return None;
        }
        let hi = hi.max(lo);
        Some(Look { scale, lo, hi, levels: scale.levels(lo, hi, o.levels) })
    }

    /// The plotted range (scale units), never empty.
    pub fn t_range(&self) -> (f64, f64) {
        let a = self.scale.apply(self.lo).unwrap_or(0.0);
        let b = self.scale.apply(self.hi).unwrap_or(a);
        if b > a {
            (a, b)
        } else {
            (a - 0.5, a + 0.5)
        }
    }

    /// The plotted value of a loss, clipped to the colour range; None for a hole.
    pub fn t(&self, v: f64) -> Option<f64> {
        let (a, b) = self.t_range();
        self.scale.apply(v).map(|t| t.clamp(a, b))
    }

    /// Position of a loss in the colour range, 0..1.
    pub fn frac(&self, v: f64) -> Option<f64> {
        let (a, b) = self.t_range();
        self.t(v).map(|t| (t - a) / (b - a))
    }

    /// The values critical points are classified on: the loss in the figure's scale, unclipped.
    pub fn classified(&self, loss: &[f64]) -> Vec<f64> {
        loss.iter().map(|&v| self.scale.apply(v).unwrap_or(f64::NAN)).collect()
    }
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into_owned())
}

/// What the run is, in words: the title of its pictures.
pub fn title(d: &RunData) -> String {
    let m = &d.meta.description;
    let what = match (d.meta.kind, &m.line, &m.plane, &m.trajectory) {
        (RunKind::Line, Some(l), _, _) => format!("Line from {} to {}", file_name(&l.from.path), file_name(&l.to.path)),
        (RunKind::Plane, _, Some(p), _) => {
            format!("Plane through {}, {}, {}", file_name(&p.a.path), file_name(&p.b.path), file_name(&p.c.path))
        }
        (RunKind::Trajectory, _, _, Some(t)) => {
            format!("Trajectory of {} checkpoints on its PCA plane", t.checkpoints.len())
        }
        _ if d.y.is_none() => format!("1-D slice through {}", file_name(&m.model.path)),
        _ => format!("2-D surface around {}", file_name(&m.model.path)),
    };
    let samples = if m.splits.is_empty() {
        let split = m.data.split.map_or(String::new(), |s| format!(" {s}"));
        format!("{}{split}", m.data.n)
    } else {
        m.splits.iter().map(|s| format!("{} {}", s.data.n, s.split)).collect::<Vec<_>>().join(" + ")
    };
    format!("{what} — {} loss, {samples} samples", m.loss)
}

/// Critical points of a 2-D run in the look's scale, with each point's value put back in loss
/// units.
pub fn classified_points(d: &RunData, look: &Look, o: &PlotOptions) -> Persistence {
    let mut p = critical::classify(&d.x, d.y.as_ref().expect("2-D"), &look.classified(&d.loss), o.persistence);
    for q in &mut p.points {
        q.loss = look.scale.invert(q.loss);
    }
    p
}

/// Draw every picture and export of a run directory; returns the files written.
pub fn plot_run(dir: &Path, o: &PlotOptions) -> Result<Vec<PathBuf>> {
    o.check()?;
    match AnyMeta::read(dir)? {
        AnyMeta::Hessian(m) => return hessian_pictures(dir, o, &m),
        AnyMeta::Grid(m) if m.kind == RunKind::Sharpness => return sharpness::draw(dir, o),
        AnyMeta::Grid(m) if m.kind == RunKind::Connect => return connect::draw(dir, o, &m),
        AnyMeta::Grid(_) => {}
    }
    let d = RunData::load(dir)?;
    let look = Look::of(&[&d], o);
    let mut written = Vec::new();
    let curvature = d.meta.description.curvature.is_some() && dir.join("eig_max.npy").exists();
    let eigs = if curvature { Some((read_vec(dir, "eig_max.npy")?, read_vec(dir, "eig_min.npy")?)) } else { None };
    if d.y.is_none() {
        let views = d.split_views()?;
        let curve = dir.join("curve.png");
        let (runs, look) = if views.is_empty() {
            (vec![(d.name(), &d)], look.clone())
        } else {
            // Li et al.'s 1-D figures: every split's loss and accuracy over one axis pair.
            let runs: Vec<(String, &RunData)> = views.iter().map(|(n, v)| (n.clone(), v)).collect();
            (runs, Look::of(&views.iter().map(|(_, v)| v).collect::<Vec<_>>(), o))
        };
        written.extend(curves::curves(&curve, &runs, o, look.as_ref(), &title(&d))?);
        if let Some((max, min)) = &eigs {
            written.extend(curves::curvature_curve(&d, o, max, min)?);
        }
        if o.script {
            written.push(script::write(&d, look.as_ref(), &[], o)?);
        }
        return Ok(written);
    }
    if let Some((max, min)) = &eigs {
        let ratio: Vec<f64> = max.iter().zip(min).map(|(a, b)| (b / a).abs()).collect();
        written.extend(panel::curvature_map(&d, o, &ratio)?);
    }
    let t = std::time::Instant::now();
    let lap = |what: &str| {
        if std::env::var_os("LOSSCAPE_PLOT_TIMING").is_some() {
            eprintln!("{what}: {:.3}s", t.elapsed().as_secs_f64());
        }
    };
    let crit = match &look {
        Some(l) => {
            let p = classified_points(&d, l, o);
            let cp = dir.join("critical_points.json");
            crate::store::atomic::write_json(&cp, &p.to_json(l.scale))?;
            written.push(cp);
            written.extend(diagrams::persistence_diagram(dir, o, &p, l.scale)?);
            p.points
        }
        None => vec![],
    };
    lap("critical points");
    let picture = panel::Picture { d: &d, o, look: look.as_ref(), crit: &crit };
    written.extend(panel::contour(&picture)?);
    lap("contour");
    written.extend(panel::heatmap(&picture)?);
    lap("heatmap");
    written.extend(surface3d::surface3d(&picture)?);
    lap("surface3d");
    if let Some(l) = &look {
        written.push(export::vtp(&d, l)?);
        written.push(export::ply(&d, l)?);
        lap("vtp + ply");
        if let Some(h) = html::write(&d, l, &crit, d.equal_aspect(o))? {
            written.push(h);
        }
        lap("surface.html");
    }
    if o.script {
        written.push(script::write(&d, look.as_ref(), &crit, o)?);
    }
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
        written.extend(diagrams::density(dir, o, &a.values[..b], &a.values[b..], &caption)?);
    }
    if m.operator.per_layer.is_some() {
        let report: crate::store::record::HessianReport =
            crate::store::atomic::read_json(&dir.join(crate::store::files::HESSIAN))?;
        written.extend(layers::draw(dir, o, &report)?);
    }
    Ok(written)
}
