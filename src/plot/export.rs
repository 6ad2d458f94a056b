//! Meshes of a 2-D surface for other tools: ParaView's VTK XML PolyData (`surface.vtp`) and a PLY
//! mesh with per-vertex colours (`surface.ply`), both short ASCII formats written directly (the
//! Rust VTK crate drags in unmaintained parsers). Vertices are (x_i, y_j, height) with height the
//! loss in the figure's scale (log10 when the pictures use a log scale), clipped to its colour range; only quads whose four corners are finite are written.

use std::io::Write;
use std::path::PathBuf;

use crate::error::Result;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::RGBColor;

use super::{Look, RunData, Scale};

/// Heights of every vertex (None where masked) and the quads to draw, as vertex indices.
/// Per-vertex heights (None where masked), the quads, and the plotted height range.
type Mesh = (Vec<Option<f64>>, Vec<[usize; 4]>, (f64, f64));

fn mesh(d: &RunData, look: &Look) -> Mesh {
    let (tlo, thi) = look.t_range();
    let h: Vec<Option<f64>> = d.loss.iter().map(|&v| look.t(v)).collect();
    let nx = d.nx();
    let mut quads = Vec::new();
    for j in 0..d.ny().saturating_sub(1) {
        for i in 0..nx.saturating_sub(1) {
            let q = [j * nx + i, j * nx + i + 1, (j + 1) * nx + i + 1, (j + 1) * nx + i];
            if q.iter().all(|&k| h[k].is_some()) {
                quads.push(q);
            }
        }
    }
    (h, quads, (tlo, thi))
}

fn vertex(d: &RunData, k: usize, h: f64) -> [f64; 3] {
    let y = d.y.as_ref().expect("2-D");
    [d.x[k % d.nx()], y[k / d.nx()], h]
}

/// VTK XML PolyData: points, quads (connectivity + offsets), point data "loss" and "accuracy"
/// (NaN where not finite). Open in ParaView with File > Open, then Apply; colour by "loss".
pub fn vtp(d: &RunData, look: &Look) -> Result<PathBuf> {
    let out = d.dir.join("surface.vtp");
    let (h, quads, (tlo, _)) = mesh(d, look);
    let join = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(" ");
    crate::store::atomic::write_atomic(&out, |w| {
        writeln!(w, r#"<?xml version="1.0"?>"#)?;
        writeln!(w, r#"<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">"#)?;
        writeln!(
            w,
            "<!-- losscape {}: x, y, height = loss{} -->",
            d.meta.kind,
            if look.scale == Scale::Log { " (log10)" } else { "" }
        )?;
        writeln!(w, r#"<PolyData><Piece NumberOfPoints="{}" NumberOfPolys="{}">"#, h.len(), quads.len())?;
        writeln!(w, r#"<PointData Scalars="loss">"#)?;
        for (name, vals) in [("loss", &d.loss), ("accuracy", &d.acc)] {
            writeln!(w, r#"<DataArray type="Float64" Name="{name}" format="ascii">"#)?;
            writeln!(
                w,
                "{}",
                join(&mut vals.iter().map(|v| if v.is_finite() { v.to_string() } else { "nan".into() }))
            )?;
            writeln!(w, "</DataArray>")?;
        }
        writeln!(w, "</PointData>")?;
        writeln!(w, r#"<Points><DataArray type="Float64" NumberOfComponents="3" format="ascii">"#)?;
        writeln!(
            w,
            "{}",
            join(&mut h.iter().enumerate().flat_map(|(k, v)| vertex(d, k, v.unwrap_or(tlo))).map(|c| c.to_string()))
        )?;
        writeln!(w, "</DataArray></Points>")?;
        writeln!(w, r#"<Polys><DataArray type="Int64" Name="connectivity" format="ascii">"#)?;
        writeln!(w, "{}", join(&mut quads.iter().flatten().map(|k| k.to_string())))?;
        writeln!(w, r#"</DataArray><DataArray type="Int64" Name="offsets" format="ascii">"#)?;
        writeln!(w, "{}", join(&mut (1..=quads.len()).map(|k| (4 * k).to_string())))?;
        writeln!(w, "</DataArray></Polys>")?;
        writeln!(w, "</Piece></PolyData></VTKFile>")?;
        Ok(())
    })?;
    Ok(out)
}

pub fn ply(d: &RunData, look: &Look) -> Result<PathBuf> {
    let out = d.dir.join("surface.ply");
    let (h, quads, (tlo, thi)) = mesh(d, look);
    crate::store::atomic::write_atomic(&out, |w| {
        writeln!(
            w,
            "ply\nformat ascii 1.0\ncomment losscape {} surface: x, y, height = loss{}",
            d.meta.kind,
            if look.scale == Scale::Log { " (log10)" } else { "" }
        )?;
        writeln!(w, "element vertex {}\nproperty double x\nproperty double y\nproperty double z", h.len())?;
        writeln!(w, "property uchar red\nproperty uchar green\nproperty uchar blue")?;
        writeln!(w, "element face {}\nproperty list uchar uint vertex_indices\nend_header", quads.len())?;
        for (k, v) in h.iter().enumerate() {
            let z = v.unwrap_or(tlo);
            let [x, y, z] = vertex(d, k, z);
            let RGBColor(r, g, b) = ViridisRGB::get_color(((z - tlo) / (thi - tlo).max(1e-300)).clamp(0.0, 1.0));
            writeln!(w, "{x} {y} {z} {r} {g} {b}")?;
        }
        for q in &quads {
            writeln!(w, "4 {} {} {} {}", q[0], q[1], q[2], q[3])?;
        }
        Ok(())
    })?;
    Ok(out)
}
