//! A drawn figure to files: the SVG document is parsed once by usvg with the embedded fonts (text
//! shaped and kerned by its text stack), rendered by resvg to the PNG (anti-aliased, at `--dpi`),
//! converted by svg2pdf to the PDF (fonts embedded and subset, text kept as text), and kept as it
//! is for the SVG. Each file is written whole or not at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::canvas::Canvas;
use super::fonts;
use super::PlotOptions;
use crate::error::{Error, Result};

/// A file format of the pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
    Pdf,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
            Format::Pdf => "pdf",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Format, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "png" => Ok(Format::Png),
            "svg" => Ok(Format::Svg),
            "pdf" => Ok(Format::Pdf),
            other => Err(format!("unknown format '{other}': use png, svg, pdf")),
        }
    }
}

/// Parse the usvg tree of a drawn document with the embedded fonts only.
pub fn tree(svg: &str) -> Result<usvg::Tree> {
    let opt =
        usvg::Options { fontdb: fonts::database(), font_family: fonts::FAMILY.to_string(), ..usvg::Options::default() };
    usvg::Tree::from_str(svg, &opt).map_err(|e| Error::other(format!("internal: a drawn figure does not parse: {e}")))
}

/// The PNG of a tree at `dpi` for a canvas of `inches`.
pub fn png(tree: &usvg::Tree, inches: (f64, f64), dpi: u32) -> Result<Vec<u8>> {
    let (w, h) = ((inches.0 * dpi as f64).round().max(1.0) as u32, (inches.1 * dpi as f64).round().max(1.0) as u32);
    let mut pix = resvg::tiny_skia::Pixmap::new(w, h).ok_or_else(|| Error::other("internal: empty picture"))?;
    pix.fill(resvg::tiny_skia::Color::WHITE);
    let size = tree.size();
    let t = resvg::tiny_skia::Transform::from_scale(w as f32 / size.width(), h as f32 / size.height());
    resvg::render(tree, t, &mut pix.as_mut());
    pix.encode_png().map_err(|e| Error::other(format!("PNG encoding: {e}")))
}

/// The PDF of a tree, one page the canvas's size.
pub fn pdf(tree: &usvg::Tree) -> Result<Vec<u8>> {
    // usvg measures the document in CSS pixels, 96 to the inch.
    let page = svg2pdf::PageOptions { dpi: 96.0 };
    svg2pdf::to_pdf(tree, svg2pdf::ConversionOptions::default(), page)
        .map_err(|e| Error::other(format!("PDF conversion: {e}")))
}

fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::store::atomic::write_atomic(path, |w| w.write_all(bytes))
}

/// Write the figure drawn on `canvas` as `png_path` and its siblings in the other formats asked
/// for (`contour.png`, `contour.svg`, `contour.pdf`); returns the files written, in the order of
/// the formats.
pub fn write(canvas: &Canvas, png_path: &Path, o: &PlotOptions) -> Result<Vec<PathBuf>> {
    let t0 = std::time::Instant::now();
    let svg = canvas.finish();
    let parsed = if o.formats.iter().any(|f| *f != Format::Svg) { Some(tree(&svg)?) } else { None };
    let path = |f: Format| png_path.with_extension(f.extension());
    // The PDF is converted on a second thread while the PNG is rendered.
    std::thread::scope(|s| -> Result<()> {
        let pdf = match (&parsed, o.formats.contains(&Format::Pdf)) {
            (Some(t), true) => Some(s.spawn(move || pdf(t))),
            _ => None,
        };
        if let (Some(t), true) = (&parsed, o.formats.contains(&Format::Png)) {
            put(&path(Format::Png), &png(t, canvas.inches(), o.dpi)?)?;
        }
        if o.formats.contains(&Format::Svg) {
            put(&path(Format::Svg), svg.as_bytes())?;
        }
        if let Some(h) = pdf {
            put(&path(Format::Pdf), &h.join().map_err(|_| Error::other("internal: the PDF conversion panicked"))??)?;
        }
        Ok(())
    })?;
    if std::env::var_os("LOSSCAPE_PLOT_TIMING").is_some() {
        eprintln!(
            "  {}: {} kB of SVG, written in {:.3}s",
            png_path.display(),
            svg.len() / 1000,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(o.formats.iter().map(|&f| path(f)).collect())
}

/// The PNG's size in pixels of a canvas of `inches` at `dpi` (what [`png`] makes).
pub fn pixels(inches: (f64, f64), dpi: u32) -> (u32, u32) {
    ((inches.0 * dpi as f64).round() as u32, (inches.1 * dpi as f64).round() as u32)
}

/// What a figure draws outside its canvas (more than `slack` CSS pixels beyond an edge): one line
/// per drawn thing, naming it (a text by its words) and its box. A clipped group counts by its
/// clip, not by what it clips.
pub fn outside(svg: &str, slack: f32) -> Result<Vec<String>> {
    let t = tree(svg)?;
    let (w, h) = (t.size().width(), t.size().height());
    let mut out = Vec::new();
    fn walk(g: &usvg::Group, w: f32, h: f32, slack: f32, out: &mut Vec<String>) {
        for n in g.children() {
            if let usvg::Node::Group(c) = n {
                if c.clip_path().is_none() {
                    walk(c, w, h, slack, out);
                }
                continue;
            }
            let b = n.abs_stroke_bounding_box();
            if b.left() < -slack || b.top() < -slack || b.right() > w + slack || b.bottom() > h + slack {
                let what = match n {
                    usvg::Node::Text(t) => {
                        format!("text '{}'", t.chunks().iter().map(|c| c.text()).collect::<String>())
                    }
                    usvg::Node::Path(p) => format!("path {}", p.id()),
                    _ => "image".to_string(),
                };
                out.push(format!(
                    "{what}: [{:.1}, {:.1}] x [{:.1}, {:.1}] on a {w:.0}x{h:.0} canvas",
                    b.left(),
                    b.right(),
                    b.top(),
                    b.bottom()
                ));
            }
        }
    }
    walk(t.root(), w, h, slack, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::canvas::{Canvas, TextLook};

    #[test]
    fn text_beyond_the_canvas_is_found() {
        let c = Canvas::new((2.0, 1.0));
        let _ = c.area();
        c.text("inside", (300.0, 150.0), TextLook::new(40.0));
        assert!(super::outside(&c.finish(), 0.5).unwrap().is_empty());
        c.text("cut at the left", (10.0, 150.0), TextLook::new(40.0));
        let out = super::outside(&c.finish(), 0.5).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("cut at the left"), "{out:?}");
    }
}
