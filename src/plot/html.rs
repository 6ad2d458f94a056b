//! `surface.html`: one self-contained page (plotly.js embedded in the binary by the `plotly`
//! crate, so it works offline): a 3-D surface to rotate and zoom, a toggle to a contour view, a
//! colormap switch, hover with (α, β, loss, accuracy), the path and critical points when present.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::json;

use super::critical::CriticalPoint;
use super::{clipped, transform, PlotOptions, RunData};
use crate::error::{Error, Result};

const PAGE: &str = include_str!("surface.html");

/// plotly.js itself, as the `plotly` crate embeds it (its offline page also carries MathJax,
/// which the page does not need: only the first script is taken).
pub fn plotly_js() -> Result<&'static str> {
    static JS: OnceLock<Option<String>> = OnceLock::new();
    JS.get_or_init(|| {
        let all = plotly::Plot::offline_js_sources();
        let start = all.find('>')? + 1;
        let end = all.find("</script>")?;
        (end > start).then(|| all[start..end].to_string())
    })
    .as_deref()
    .ok_or_else(|| Error::other("internal: plotly.js not found in the plotly crate's embedded sources"))
}

pub fn write(d: &RunData, o: &PlotOptions, crit: &[CriticalPoint]) -> Result<Option<PathBuf>> {
    let js = plotly_js()?;
    let out = d.dir.join("surface.html");
    let y = d.y.as_ref().expect("2-D");
    let (nx, ny) = (d.nx(), d.ny());
    let range = d.range(o);
    let z: Vec<Vec<Option<f64>>> = (0..ny)
        .map(|j| (0..nx).map(|i| clipped(d.at(i, j), range.map_or(f64::INFINITY, |r| r.1), o)).collect())
        .collect();
    let custom: Vec<Vec<[Option<f64>; 2]>> = (0..ny)
        .map(|j| {
            (0..nx)
                .map(|i| {
                    [Some(d.at(i, j)).filter(|v| v.is_finite()), Some(d.acc[j * nx + i]).filter(|v| v.is_finite())]
                })
                .collect()
        })
        .collect();
    let near = |v: &[f64], t: f64| {
        v.iter().enumerate().min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs())).map(|(k, _)| k).unwrap_or(0)
    };
    let path = d.path.as_ref().map(|p| {
        p.iter()
            .enumerate()
            .map(|(k, c)| json!({"x": c[0], "y": c[1], "z": z[near(y, c[1])][near(&d.x, c[0])], "step": k}))
            .collect::<Vec<_>>()
    });
    let crit: Vec<_> = crit
        .iter()
        .map(|p| json!({"x": p.coords[0], "y": p.coords[1], "z": transform(p.loss, o), "loss": p.loss, "kind": p.kind}))
        .collect();
    let marks: Vec<_> = d
        .marks
        .iter()
        .map(|(n, c)| json!({"name": n, "x": c[0], "y": c[1], "z": z[near(y, c[1])][near(&d.x, c[0])]}))
        .collect();
    let data = json!({
        "title": format!("losscape {} — {}", d.meta.kind, d.meta.description.model.path.display()),
        "x": d.x, "y": y, "z": z, "custom": custom,
        "zlabel": if o.log { "log10 loss" } else { "loss" },
        "xlabel": d.x_label, "ylabel": d.y_label,
        "path": path, "critical": crit, "marks": marks,
    });
    let page = PAGE.replace("/*DATA*/null", &data.to_string());
    let (head, tail) = page.split_once("/*PLOTLY*/").expect("surface.html has the plotly marker");
    crate::store::atomic::write_atomic(&out, |w| {
        w.write_all(head.as_bytes())?;
        w.write_all(js.as_bytes())?;
        w.write_all(tail.as_bytes())?;
        Ok(())
    })?;
    Ok(Some(out))
}
