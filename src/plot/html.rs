//! `surface.html`: one self-contained page (plotly.js embedded in the binary by the `plotly`
//! crate, so it works offline): a 3-D surface to rotate and zoom, a toggle to a contour view, a
//! colormap switch, hover with (α, β, loss, accuracy), the path and critical points when present.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::json;

use super::critical::CriticalPoint;
use super::scale::short;
use super::{Look, RunData, Scale};
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

/// Colour-bar ticks in loss units: for a log scale, 1-2-5 values of each decade in range placed at
/// their log10 (the bar itself is in log10 units); None for a linear scale (plotly's own ticks).
fn log_ticks(look: &Look) -> Option<(Vec<f64>, Vec<String>)> {
    if look.scale != Scale::Log {
        return None;
    }
    let (a, b) = (look.lo.log10().floor() as i32, look.hi.log10().ceil() as i32);
    let per = if b - a > 4 { vec![1.0] } else { vec![1.0, 2.0, 5.0] };
    let vals: Vec<f64> = (a..=b)
        .flat_map(|e| per.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|v| *v >= look.lo * 0.999 && *v <= look.hi * 1.001)
        .collect();
    Some((vals.iter().map(|v| v.log10()).collect(), vals.iter().map(|&v| short(v)).collect()))
}

pub fn write(d: &RunData, look: &Look, crit: &[CriticalPoint], equal: bool) -> Result<Option<PathBuf>> {
    let js = plotly_js()?;
    let out = d.dir.join("surface.html");
    let y = d.y.as_ref().expect("2-D");
    let (nx, ny) = (d.nx(), d.ny());
    let z: Vec<Vec<Option<f64>>> = (0..ny).map(|j| (0..nx).map(|i| look.t(d.at(i, j))).collect()).collect();
    // The picture's contour levels, evenly spaced in the plotted units.
    let lv: Vec<f64> = look.levels.iter().filter_map(|&v| look.scale.apply(v)).collect();
    let contours = (lv.len() >= 2).then(|| json!({"start": lv[0], "end": lv[lv.len() - 1], "size": lv[1] - lv[0]}));
    let ticks = log_ticks(look).map(|(v, t)| json!({"tickvals": v, "ticktext": t}));
    let (tlo, thi) = look.t_range();

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
        .map(|p| {
            let loss = p.loss;
            json!({"x": p.coords[0], "y": p.coords[1], "z": look.t(loss), "loss": loss, "kind": p.kind,
                   "persistence": p.relative_persistence})
        })
        .collect();
    let marks: Vec<_> = d
        .marks
        .iter()
        .map(|(n, c)| json!({"name": n, "x": c[0], "y": c[1], "z": z[near(y, c[1])][near(&d.x, c[0])]}))
        .collect();
    let data = json!({
        "title": super::title(d),
        "x": d.x, "y": y, "z": z, "custom": custom,
        "zlabel": look.scale.axis_title(), "log": look.scale == Scale::Log,
        "contours": contours, "ticks": ticks, "zrange": [tlo, thi],
        "xlabel": d.x_label, "ylabel": d.y_label,
        "path": path, "path_name": super::panel::path_name(d), "critical": crit, "marks": marks, "equal": equal,
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
