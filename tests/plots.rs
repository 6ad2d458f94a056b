//! Pictures: critical points of analytic surfaces, every picture redrawn from the files alone,
//! the exports read back by independent parsers, the HTML page in a real headless Chromium, and
//! the example notebook executed top to bottom.

use std::path::{Path, PathBuf};
use std::process::Command;

use losscape::plot::{classify, side_by_side, CriticalKind, PlotOptions, Scale};
use losscape::store::npy::write as write_npy;

use crate::common::{fxp, losscape, ok, out_dir, python, root, trajectory};

fn grid(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64).collect()
}

fn surface(x: &[f64], y: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    y.iter().flat_map(|&b| x.iter().map(move |&a| (a, b))).map(|(a, b)| f(a, b)).collect()
}

fn kinds(x: &[f64], y: &[f64], z: &[f64]) -> Vec<(CriticalKind, f64, f64)> {
    let mut k: Vec<_> =
        classify(x, y, z, None).points.into_iter().map(|p| (p.kind, p.coords[0], p.coords[1])).collect();
    k.sort_by(|p, q| p.1.total_cmp(&q.1));
    k
}

#[test]
fn critical_points_of_analytic_surfaces() {
    let x = grid(21, -2.0, 2.0);
    let y = grid(21, -2.0, 2.0);
    assert_eq!(kinds(&x, &y, &surface(&x, &y, |a, b| a * a + b * b)), vec![(CriticalKind::Minimum, 0.0, 0.0)], "bowl");
    assert_eq!(
        kinds(&x, &y, &surface(&x, &y, |a, b| -(a * a) - 2.0 * b * b)),
        vec![(CriticalKind::Maximum, 0.0, 0.0)],
        "cap"
    );
    assert_eq!(kinds(&x, &y, &surface(&x, &y, |a, b| a * a - b * b)), vec![(CriticalKind::Saddle, 0.0, 0.0)], "saddle");
    // Double well (a² − 1)² + b²: minima at a = ±1, a saddle between them.
    let dw = kinds(&x, &y, &surface(&x, &y, |a, b| (a * a - 1.0).powi(2) + b * b));
    assert_eq!(
        dw,
        vec![(CriticalKind::Minimum, -1.0, 0.0), (CriticalKind::Saddle, 0.0, 0.0), (CriticalKind::Minimum, 1.0, 0.0)]
    );
    // Non-finite neighbours: not classified, no panic.
    let mut z = surface(&x, &y, |a, b| a * a + b * b);
    z[10 * 21 + 11] = f64::NAN;
    assert!(kinds(&x, &y, &z).is_empty());
}

/// The meta.json of a real (tiny) 2-D surface run, made once: synthetic runs borrow it.
fn real_meta() -> &'static str {
    static META: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    META.get_or_init(|| {
        let d = out_dir("plot-meta-donor");
        ok(&losscape(&[
            "surface",
            "--model",
            fxp("resnet.pt").to_str().unwrap(),
            "--data",
            fxp("cifar-bin").to_str().unwrap(),
            "--limit",
            "8",
            "--x=-1:1:3",
            "--y=-1:1:3",
            "--out",
            d.to_str().unwrap(),
            "-q",
            "--no-plots",
        ]));
        std::fs::read_to_string(d.join("meta.json")).unwrap()
    })
}

/// A run directory made by hand: a double well on a non-square grid, with NaN and inf cells,
/// described by a real run's meta.json.
fn synthetic_run(name: &str, nx: usize, ny: usize) -> PathBuf {
    let d = out_dir(name);
    std::fs::create_dir_all(&d).unwrap();
    let x = grid(nx, -2.0, 2.0);
    let y = grid(ny, -1.0, 1.0);
    let mut loss: Vec<f32> =
        surface(&x, &y, |a, b| 0.1 + (a * a - 1.0).powi(2) + b * b).into_iter().map(|v| v as f32).collect();
    loss[0] = f32::NAN;
    loss[nx - 1] = f32::INFINITY;
    let acc: Vec<f32> = loss.iter().map(|l| (1.0 / (1.0 + l)).min(1.0)).collect();
    write_npy(&d.join("x.npy"), &[nx as u64], &x).unwrap();
    write_npy(&d.join("y.npy"), &[ny as u64], &y).unwrap();
    write_npy(&d.join("loss.npy"), &[ny as u64, nx as u64], &loss).unwrap();
    write_npy(&d.join("acc.npy"), &[ny as u64, nx as u64], &acc).unwrap();
    std::fs::write(d.join("meta.json"), real_meta()).unwrap();
    d
}

fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[1..4], b"PNG", "{} is not a PNG", p.display());
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

#[test]
fn plot_redraws_every_picture_from_the_files_alone() {
    let d = synthetic_run("plot-synthetic", 41, 23);
    let o = losscape(&["plot", d.to_str().unwrap(), "--log", "--levels", "8", "--dpi", "80", "--zmax", "3"]);
    ok(&o);
    for f in ["contour.png", "heatmap.png", "surface3d.png"] {
        assert_eq!(png_size(&d.join(f)), (640, 512), "{f}");
    }
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("critical_points.json")).unwrap()).unwrap();
    assert_eq!(cp["counts"]["minimum"], 2, "{cp}");
    assert_eq!(cp["counts"]["saddle"], 1, "{cp}");
    // The exports, read back by Python's own parsers.
    let check = r#"
import sys, xml.etree.ElementTree as ET
d = sys.argv[1]
root = ET.parse(d + "/surface.vtp").getroot()
assert root.tag == "VTKFile" and root.get("type") == "PolyData"
piece = root.find("PolyData/Piece")
npts, npolys = int(piece.get("NumberOfPoints")), int(piece.get("NumberOfPolys"))
assert npts == 41 * 23, npts
assert npolys == 40 * 22 - 2, npolys            # the two quads touching the NaN and inf corners are left out
arrays = {a.get("Name"): a.text.split() for a in root.iter("DataArray")}
assert len(arrays["loss"]) == npts and len(arrays["connectivity"]) == 4 * npolys
pts = root.find("PolyData/Piece/Points/DataArray").text.split()
assert len(pts) == 3 * npts
with open(d + "/surface.ply") as f:
    head = [next(f).strip() for _ in range(11)]
assert head[0] == "ply" and "element vertex %d" % npts in head and "element face %d" % npolys in head, head
print("ok")
"#;
    let o = Command::new(python()).args(["-c", check, d.to_str().unwrap()]).output().unwrap();
    ok(&o);
    // Bad options: one line each.
    for (args, word) in [(vec!["--dpi", "5"], "--dpi"), (vec!["--vmin", "2", "--vmax", "1"], "--vmin/--vmax")] {
        let mut a = vec!["plot", d.to_str().unwrap()];
        a.extend(args);
        let o = losscape(&a);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains(word) && e.lines().count() == 1, "{e}");
    }
    let o = losscape(&["plot", "/nonexistent/run"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("meta.json"));
    // A meta.json of another layout: named, one line.
    std::fs::write(d.join("meta.json"), r#"{"schema_version": 1, "kind": "surface"}"#).unwrap();
    let o = losscape(&["plot", d.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && e.contains("schema_version 1") && e.lines().count() == 1, "{e}");
}

/// A synthetic run whose losses are `f` of the double well's: one decade or several.
fn scaled_run(name: &str, f: impl Fn(f32) -> f32) -> PathBuf {
    let d = synthetic_run(name, 31, 21);
    let a = losscape::store::npy::read(&d.join("loss.npy")).unwrap();
    let v: Vec<f32> = a.values.iter().map(|&x| f(x as f32)).collect();
    write_npy(&d.join("loss.npy"), &[21, 31], &v).unwrap();
    d
}

fn scale_of(d: &Path) -> String {
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("critical_points.json")).unwrap()).unwrap();
    cp["scale"].as_str().unwrap().to_string()
}

#[test]
fn one_scale_rule_for_every_picture_and_the_html_page() {
    // The double well spans 0.1 .. 10.1: more than a decade, so log; squeezed into 1 .. 2: linear.
    let wide = scaled_run("scale-wide", |x| x);
    let narrow = scaled_run("scale-narrow", |x| 1.0 + x / 10.1);
    for (d, want) in [(&wide, "log"), (&narrow, "linear")] {
        ok(&losscape(&["plot", d.to_str().unwrap(), "--dpi", "60"]));
        assert_eq!(scale_of(d), want);
        let html = std::fs::read_to_string(d.join("surface.html")).unwrap();
        assert!(html.contains(&format!("\"log\":{}", want == "log")), "the page uses the same scale");
        // The page's levels are the pictures' levels: 12 by default, evenly spaced in its units.
        let at = html.find("\"contours\":{").expect("explicit contour levels");
        let c: serde_json::Value = serde_json::from_str(html[at + 11..].split_inclusive('}').next().unwrap()).unwrap();
        let (start, end, size) =
            (c["start"].as_f64().unwrap(), c["end"].as_f64().unwrap(), c["size"].as_f64().unwrap());
        assert!(((end - start) / size - 11.0).abs() < 1e-9, "{c}");
    }
    // The flags override the rule.
    ok(&losscape(&["plot", wide.to_str().unwrap(), "--linear", "--dpi", "60"]));
    assert_eq!(scale_of(&wide), "linear");
    ok(&losscape(&["plot", narrow.to_str().unwrap(), "--log", "--dpi", "60"]));
    assert_eq!(scale_of(&narrow), "log");
    let o = losscape(&["plot", wide.to_str().unwrap(), "--log", "--linear"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn runs_side_by_side_share_one_scale() {
    let a = scaled_run("side-a", |x| x);
    let b = scaled_run("side-b", |x| 3.0 * x);
    let out = out_dir("side-figure");
    std::fs::create_dir_all(&out).unwrap();
    let fig_path = out.join("fig.png");
    let o = PlotOptions { dpi: 50, ..PlotOptions::default() };
    let f = side_by_side(&[a.clone(), b.clone()], &fig_path, &o).unwrap();
    // Two panels of 6×5 inches and a colour bar beside them, at 50 pixels per inch.
    let (w, h) = png_size(&fig_path);
    assert!(h == 250 && w > 600 && w < 600 + 100, "{w}x{h}");
    assert_eq!(f.size, png_size(&fig_path));
    assert_eq!(f.scale, Scale::Log);
    // The shared range spans both runs: the lowest of a to the highest finite value of b.
    let finite = |d: &Path| -> Vec<f64> {
        losscape::store::npy::read(&d.join("loss.npy")).unwrap().values.into_iter().filter(|v| v.is_finite()).collect()
    };
    let lo = finite(&a).into_iter().fold(f64::INFINITY, f64::min);
    let hi = finite(&b).into_iter().fold(f64::NEG_INFINITY, f64::max);
    assert!((f.range.0 - lo).abs() < 1e-12 && (f.range.1 - hi).abs() < 1e-12, "{:?} vs {lo}..{hi}", f.range);
    assert_eq!(f.levels, Scale::Log.levels(lo, hi, 12), "the same levels as each run's own pictures would get");
    // The command line: several runs need --out; a 1-D and a 2-D run do not mix; no partial file.
    let o = losscape(&["plot", a.to_str().unwrap(), b.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && e.contains("--out") && e.lines().count() == 1, "{e}");
    let one = out_dir("side-1d");
    ok(&losscape(&[
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--limit",
        "8",
        "--x=-1:1:5",
        "--out",
        one.to_str().unwrap(),
        "-q",
        "--no-plots",
    ]));
    let mixed = out.join("mixed.png");
    let o = losscape(&["plot", a.to_str().unwrap(), one.to_str().unwrap(), "--out", mixed.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && e.contains("side-1d") && e.lines().count() == 1, "{e}");
    assert!(!mixed.exists() && !out.join("mixed.partial.png").exists());
    // 1-D runs overlaid in one picture.
    let curves = out.join("curves.png");
    ok(&losscape(&[
        "plot",
        one.to_str().unwrap(),
        one.to_str().unwrap(),
        "--out",
        curves.to_str().unwrap(),
        "--dpi",
        "50",
    ]));
    assert_eq!(png_size(&curves), (400, 320));
    // --out names a format of its own: FIG.svg is written beside the default PNG and PDF.
    let svg = out.join("both.svg");
    ok(&losscape(&["plot", a.to_str().unwrap(), b.to_str().unwrap(), "--out", svg.to_str().unwrap(), "--dpi", "30"]));
    assert!(svg.exists() && out.join("both.png").exists() && out.join("both.pdf").exists());
}

#[test]
fn runs_draw_their_pictures_unless_told_not_to() {
    let a = out_dir("pictures-on");
    let o = losscape(&[
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--x=-1:1:5",
        "--y=-1:1:4",
        "--out",
        a.to_str().unwrap(),
        "-q",
    ]);
    ok(&o);
    for f in [
        "contour.png",
        "heatmap.png",
        "surface3d.png",
        "critical_points.json",
        "persistence.png",
        "surface.vtp",
        "surface.ply",
        "surface.html",
        "contour.pdf",
        "heatmap.pdf",
        "surface3d.pdf",
    ] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    assert!(!a.join("contour.svg").exists() && !a.join("figures.py").exists(), "PNG and PDF by default");
    let b = out_dir("pictures-off");
    let o = losscape(&[
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--x=-1:1:5",
        "--out",
        b.to_str().unwrap(),
        "-q",
        "--no-plots",
    ]);
    assert!(o.status.success());
    assert!(!b.join("curve.png").exists());
    let o = losscape(&["plot", b.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(png_size(&b.join("curve.png")), (800, 640));
}

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new("which").arg(c).output() {
            if o.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            }
        }
    }
    panic!("no headless Chromium found: `make test` installs Debian's chromium package");
}

fn headless(url: &str, extra: &[&str]) -> std::process::Output {
    let profile = out_dir(&format!("chromium-profile-{}", url.len() + extra.len()));
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-unsafe-swiftshader",
        "--use-angle=swiftshader",
        "--virtual-time-budget=20000",
    ];
    let ud = format!("--user-data-dir={}", profile.display());
    args.push(&ud);
    args.extend_from_slice(extra);
    args.push(url);
    Command::new(chromium()).args(&args).output().expect("run chromium")
}

#[test]
fn the_html_page_works_in_headless_chromium() {
    let d = out_dir("html-traj");
    let o = trajectory("traj_rand", 7, &d, &[]);
    ok(&o);
    let html = d.join("surface.html");
    let size = std::fs::metadata(&html).unwrap().len();
    assert!(size < 6_000_000, "surface.html is {size} bytes");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script src") && !page.contains("<link "), "the page must load nothing from outside");
    for (hash, view) in [("", "3d"), ("#contour", "contour")] {
        let o = headless(&format!("file://{}{hash}", html.display()), &["--dump-dom"]);
        let dom = String::from_utf8_lossy(&o.stdout);
        assert!(
            dom.contains("data-plot-status=\"ok\""),
            "plot did not finish ({hash}): {}",
            &dom[..dom.len().min(300)]
        );
        assert!(!dom.contains("data-plot-error"), "JS error: {}", &dom[..dom.len().min(500)]);
        assert!(dom.contains(&format!("data-view=\"{view}\"")));
        assert!(dom.contains("main-svg"), "no plotly SVG in the page");
    }
    let shot = d.join("screenshot.png");
    let o = headless(
        &format!("file://{}", html.display()),
        &["--window-size=1000,800", &format!("--screenshot={}", shot.display())],
    );
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let check = r#"
import sys
import numpy as np
from PIL import Image
px = np.asarray(Image.open(sys.argv[1]).convert("RGB")).reshape(-1, 3)
colours = len(np.unique(px, axis=0))
busy = float((px != 255).any(axis=1).mean())
assert colours > 200 and busy > 0.05, (colours, busy)
print(colours, busy)
"#;
    let o = Command::new(python()).args(["-c", check, shot.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "blank screenshot? {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_example_notebook_runs_top_to_bottom() {
    let d = out_dir("notebook-traj");
    let o = trajectory("traj_plane", 6, &d, &["--no-plots", "--split", "train,test"]);
    ok(&o);
    // Sharpness of the same checkpoints, for the notebook's last section.
    let sharp = out_dir("notebook-sharpness");
    let (c, a, data) = (fxp("traj_plane"), fxp("resnet.pt"), fxp("cifar-bin"));
    ok(&crate::common::losscape(&[
        "sharpness",
        "--checkpoints",
        c.to_str().unwrap(),
        "--arch",
        a.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--measure",
        "average",
        "--radius",
        "0.05",
        "--samples",
        "4",
        "--no-plots",
        "-q",
        "--out",
        sharp.to_str().unwrap(),
    ]));
    let executed = out_dir("notebook-out").with_extension("ipynb");
    let o = Command::new(python())
        .arg(root().join("examples/run_notebook.py"))
        .arg(&d)
        .arg(&executed)
        .arg(&sharp)
        .output()
        .unwrap();
    assert!(o.status.success(), "notebook failed: {}", String::from_utf8_lossy(&o.stderr));
    let nb = std::fs::read_to_string(&executed).unwrap();
    assert!(nb.contains("image/png"), "the notebook drew no figure");
    assert!(nb.contains("explained variance of PC1, PC2"), "the path cell did not run");
    assert!(nb.contains("against their test loss"), "the sharpness cell did not run against test losses");
}

/// A 1-D run over two splits (train and test), without pictures.
fn one_d_splits(name: &str) -> PathBuf {
    let d = out_dir(name);
    ok(&losscape(&[
        "surface",
        "--model",
        fxp("resnet.pt").to_str().unwrap(),
        "--data",
        fxp("cifar-bin").to_str().unwrap(),
        "--limit",
        "8",
        "--x=-1:1:5",
        "--split",
        "train,test",
        "--out",
        d.to_str().unwrap(),
        "-q",
        "--no-plots",
    ]));
    d
}

/// A picture in its three formats: the SVG parses with the embedded fonts and names them, draws
/// nothing outside its canvas (text measured as shaped), the PNG is the canvas at `dpi`, and the
/// PDF opens in poppler.
fn check_formats(dir: &Path, name: &str, dpi: u32) {
    let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
    assert!(svg.contains("font-family=\"DejaVu Sans"), "{name}.svg names no font");
    let out = losscape::plot::output::outside(&svg, 0.5).unwrap();
    assert!(out.is_empty(), "{}/{name}: drawn outside the canvas:\n{}", dir.display(), out.join("\n"));
    let inches = |attr: &str| -> f64 {
        let at = svg.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
        svg[at..].split("in\"").next().unwrap().parse().unwrap()
    };
    let (w, h) = (inches("width"), inches("height"));
    assert_eq!(
        png_size(&dir.join(format!("{name}.png"))),
        ((w * dpi as f64).round() as u32, (h * dpi as f64).round() as u32)
    );
    let page = out_dir(&format!("pdftoppm-{}-{name}", dir.file_name().unwrap().to_string_lossy()));
    let o = Command::new("pdftoppm")
        .args(["-png", "-r", "20", "-singlefile"])
        .arg(dir.join(format!("{name}.pdf")))
        .arg(&page)
        .output()
        .expect("pdftoppm (poppler-utils: `make test-deps` installs it)");
    assert!(o.status.success(), "{name}.pdf: {}", String::from_utf8_lossy(&o.stderr));
    let (pw, ph) = png_size(&page.with_extension("png"));
    assert!((pw as f64 - w * 20.0).abs() <= 1.0 && (ph as f64 - h * 20.0).abs() <= 1.0, "{name}.pdf is {pw}x{ph}");
}

#[test]
fn every_picture_is_png_svg_and_pdf_with_nothing_outside_its_canvas() {
    // NaN and inf cells, a long run name and a long title (the model's file name).
    let d = synthetic_run("plot-formats-a-run-directory-named-at-length-by-a-hyperparameter-sweep", 41, 23);
    let long = "resnet20_cifar10_sgd_lr0.1_momentum0.9_wd5e-4_batch128_cosine_seed1234_epoch200.pt";
    std::fs::write(d.join("meta.json"), real_meta().replace("resnet.pt", long)).unwrap();
    let dir = d.to_str().unwrap();
    ok(&losscape(&["plot", dir, "--format", "png,svg,pdf", "--dpi", "40"]));
    for f in ["contour", "heatmap", "surface3d", "persistence"] {
        check_formats(&d, f, 40);
    }
    // The colour bar is labelled at the figure's levels, in the scale's formatting.
    let run = losscape::plot::RunData::load(&d).unwrap();
    let look = losscape::plot::Look::of(&[&run], &PlotOptions::default()).unwrap();
    let svg = std::fs::read_to_string(d.join("heatmap.svg")).unwrap();
    for l in losscape::plot::scale::distinct(&look.levels) {
        assert!(svg.contains(&format!(">{l}</text>")), "level {l} is not on the colour bar");
    }
    // The persistence diagram fills exactly the extrema critical_points.json reports (and one
    // legend sample of each kind).
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("critical_points.json")).unwrap()).unwrap();
    let diagram = std::fs::read_to_string(d.join("persistence.svg")).unwrap();
    for (colour, kind) in [("#0072b2", "minimum"), ("#d55e00", "maximum")] {
        let filled =
            diagram.lines().filter(|l| l.starts_with("<circle") && l.contains(&format!("fill=\"{colour}\""))).count();
        assert_eq!(filled as u64 - 1, cp["counts"][kind].as_u64().unwrap(), "{kind}");
    }
    // A journal column: 3.5×2.8 inches, 8-point labels; cells instead of filled contours.
    ok(&losscape(&[
        "plot",
        dir,
        "--format",
        "png,svg,pdf",
        "--size",
        "3.5x2.8",
        "--font-size",
        "8",
        "--style",
        "cells",
        "--dpi",
        "100",
    ]));
    assert_eq!(png_size(&d.join("heatmap.png")), (350, 280));
    for f in ["contour", "heatmap", "surface3d", "persistence"] {
        check_formats(&d, f, 100);
    }
    // PNG and PDF by default; bad values name their flag, and nothing is redrawn.
    let before = std::fs::read(d.join("contour.svg")).unwrap();
    for (args, flag) in
        [(vec!["--format", "gif"], "--format"), (vec!["--size", "0x3"], "--size"), (vec!["--dpi", "5"], "--dpi")]
    {
        let mut a = vec!["plot", dir];
        a.extend(args);
        let o = losscape(&a);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.code() == Some(1) && e.contains(flag) && e.lines().count() == 1, "{e}");
    }
    assert_eq!(std::fs::read(d.join("contour.svg")).unwrap(), before);
    // A 1-D run over two splits.
    let one = one_d_splits("plot-formats-1d");
    ok(&losscape(&["plot", one.to_str().unwrap(), "--format", "png,svg,pdf", "--dpi", "40"]));
    check_formats(&one, "curve", 40);
}

#[test]
fn a_trajectory_is_cropped_to_its_grid_in_equal_units() {
    let d = out_dir("plot-trajectory-formats");
    ok(&trajectory("traj_rand", 5, &d, &["--no-plots"]));
    ok(&losscape(&["plot", d.to_str().unwrap(), "--format", "png,svg,pdf", "--dpi", "40"]));
    for f in ["contour", "heatmap", "surface3d", "persistence"] {
        check_formats(&d, f, 40);
    }
    // Equal units: the figure is no wider than asked, and its height is cut to the grid's shape
    // (or its width, for a tall grid).
    let (w, h) = png_size(&d.join("contour.png"));
    assert!(w <= 320 && h <= 256 && (w < 320 || h < 256), "{w}x{h}");
}

#[test]
fn figures_py_draws_the_arrays_with_the_pictures_levels() {
    let d = synthetic_run("script-2d", 31, 21);
    ok(&losscape(&["plot", d.to_str().unwrap(), "--script", "--format", "svg"]));
    let report = |dir: &Path| -> serde_json::Value {
        let r = dir.join("report.json");
        let o = Command::new(python())
            .arg(dir.join("figures.py"))
            .arg(dir.join("matplotlib"))
            .args(["--report", r.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "figures.py: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(r).unwrap()).unwrap()
    };
    let r = report(&d);
    let run = losscape::plot::RunData::load(&d).unwrap();
    let look = losscape::plot::Look::of(&[&run], &PlotOptions::default()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
    };
    assert_eq!(r["scale"], "log");
    for got in [floats(&r["levels"]), floats(&r["contour"]["levels"])] {
        assert_eq!(got.len(), look.levels.len());
        for (a, b) in got.iter().zip(&look.levels) {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
        }
    }
    assert_eq!(floats(&r["heatmap"]["norm"]), vec![look.lo, look.hi]);
    // The heatmap's values are the loss clipped to the colour range, holes as holes.
    let z: Vec<f64> = r["heatmap"]["z"].as_array().unwrap().iter().flat_map(&floats).collect();
    assert_eq!(z.len(), run.loss.len());
    for (a, &v) in z.iter().zip(&run.loss) {
        if v.is_finite() {
            assert!((a - v.clamp(look.lo, look.hi)).abs() < 1e-12, "{a} vs {v}");
        } else {
            assert!(a.is_nan(), "a hole is drawn as {a}");
        }
    }
    // The critical points are critical_points.json's.
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("critical_points.json")).unwrap()).unwrap();
    let drawn = r["heatmap"]["critical"].as_array().unwrap();
    let listed = cp["points"].as_array().unwrap();
    assert_eq!(drawn.len(), listed.len());
    for (a, b) in drawn.iter().zip(listed) {
        assert_eq!(a[0], b["kind"]);
        assert_eq!((a[1].as_f64(), a[2].as_f64()), (b["coords"][0].as_f64(), b["coords"][1].as_f64()));
    }
    assert!(d.join("matplotlib/heatmap.pdf").exists() && d.join("matplotlib/surface3d.png").exists());
    // 1-D over two splits: each split's curves are its arrays.
    let one = one_d_splits("script-1d");
    ok(&losscape(&["plot", one.to_str().unwrap(), "--script", "--format", "svg"]));
    let r = report(&one);
    let lines = r["curve"]["lines"].as_array().unwrap();
    assert_eq!(lines.iter().map(|l| l["name"].as_str().unwrap()).collect::<Vec<_>>(), ["train", "test"]);
    for l in lines {
        let name = l["name"].as_str().unwrap();
        let (_, loss) = crate::common::npy(&one.join(format!("loss.{name}.npy")));
        let (_, acc) = crate::common::npy(&one.join(format!("acc.{name}.npy")));
        assert_eq!(floats(&l["loss"]), loss);
        assert_eq!(floats(&l["acc"]), acc);
    }
}
