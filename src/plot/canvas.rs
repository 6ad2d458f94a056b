//! The surface every picture is drawn on: a plotters backend that writes SVG (so a figure is drawn
//! once and then rendered to PNG, kept as SVG and converted to PDF by `output`). Coordinates are
//! units of 1/300 inch, so that the integer coordinates plotters works in are finer than any
//! printer's dot. Besides the backend's primitives, the canvas writes what plotters has no
//! element for: text with a halo, clipping to a plot's frame, and paths with holes (filled
//! contours).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::FontTransform;
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind};

use super::fonts;
use super::layout::Rect;

/// Drawing units per inch.
pub const UNITS: f64 = 300.0;

#[derive(Debug, Default)]
struct Doc {
    body: String,
    size: (u32, u32),
    inches: (f64, f64),
    clips: usize,
}

/// An SVG document being drawn (cheap to clone: every clone draws into the same document).
#[derive(Debug, Clone)]
pub struct Canvas(Rc<RefCell<Doc>>);

pub type Area = DrawingArea<Canvas, Shift>;

/// How a text is drawn by [`Canvas::text`].
#[derive(Clone, Copy)]
pub struct TextLook {
    /// Em size in units.
    pub size: f64,
    pub anchor: Pos,
    pub colour: RGBColor,
    /// A white outline of this width (units) under the letters.
    pub halo: Option<f64>,
    /// Degrees clockwise.
    pub rotate: f64,
}

impl TextLook {
    pub fn new(size: f64) -> TextLook {
        TextLook { size, anchor: Pos::new(HPos::Center, VPos::Center), colour: BLACK, halo: None, rotate: 0.0 }
    }
}

fn colour(c: BackendColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.rgb.0, c.rgb.1, c.rgb.2)
}

fn opacity(kind: &str, c: BackendColor) -> String {
    if c.alpha >= 1.0 {
        String::new()
    } else {
        format!(r#" {kind}-opacity="{:.3}""#, c.alpha)
    }
}

/// The paint of a filled shape: an opaque one is outlined in its own colour by a hairline, so
/// that neighbouring cells and faces show no anti-aliasing seams between them.
fn seamless(c: BackendColor) -> String {
    if c.alpha >= 1.0 {
        format!("fill=\"{0}\" stroke=\"{0}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"", colour(c))
    } else {
        format!("fill=\"{}\"{}", colour(c), opacity("fill", c))
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn points(p: &[(i32, i32)]) -> String {
    let mut s = String::with_capacity(p.len() * 10);
    for (k, (x, y)) in p.iter().enumerate() {
        let _ = write!(s, "{}{x},{y}", if k == 0 { "" } else { " " });
    }
    s
}

impl Canvas {
    /// A blank canvas of `w`×`h` inches.
    pub fn new((w, h): (f64, f64)) -> Canvas {
        let size = ((w * UNITS).round().max(1.0) as u32, (h * UNITS).round().max(1.0) as u32);
        Canvas(Rc::new(RefCell::new(Doc { body: String::new(), size, inches: (w, h), clips: 0 })))
    }

    /// The whole canvas as a plotters drawing area, filled white.
    pub fn area(&self) -> Area {
        let a = self.clone().into_drawing_area();
        let _ = a.fill(&WHITE);
        a
    }

    /// The whole canvas as a drawing area in canvas units, as it is (for drawing at absolute
    /// positions from inside a panel).
    pub fn root(&self) -> Area {
        self.clone().into_drawing_area()
    }

    pub fn size(&self) -> (u32, u32) {
        self.0.borrow().size
    }

    pub fn inches(&self) -> (f64, f64) {
        self.0.borrow().inches
    }

    fn push(&self, s: &str) {
        self.0.borrow_mut().body.push_str(s);
    }

    /// Text at `at` (units), anchored as `look` says; with a halo, a white outline is drawn under
    /// the letters first.
    pub fn text(&self, text: &str, at: (f64, f64), look: TextLook) {
        let (asc, desc) = fonts::extent(look.size);
        let dy = match look.anchor.v_pos {
            VPos::Top => asc,
            VPos::Center => fonts::cap_height(look.size) / 2.0,
            VPos::Bottom => desc,
        };
        let anchor = match look.anchor.h_pos {
            HPos::Left => "start",
            HPos::Center => "middle",
            HPos::Right => "end",
        };
        let rotate = if look.rotate != 0.0 {
            format!(r#" transform="rotate({} {:.1} {:.1})""#, look.rotate, at.0, at.1)
        } else {
            String::new()
        };
        let head = format!(
            r#"<text x="{:.1}" y="{:.1}" font-family="{}, {}" font-size="{:.1}" text-anchor="{anchor}"{rotate}"#,
            at.0,
            at.1 + dy,
            fonts::FAMILY,
            fonts::MATH_FAMILY,
            look.size
        );
        let body = escape(text);
        let mut s = String::new();
        if let Some(w) = look.halo {
            let _ = write!(
                s,
                r##"{head} fill="#ffffff" stroke="#ffffff" stroke-width="{:.1}" stroke-linejoin="round">{body}</text>"##,
                2.0 * w
            );
        }
        let RGBColor(r, g, b) = look.colour;
        let _ = writeln!(s, r##"{head} fill="#{r:02x}{g:02x}{b:02x}">{body}</text>"##);
        self.push(&s);
    }

    /// Everything drawn until [`Canvas::unclip`] is clipped to `r`.
    pub fn clip(&self, r: Rect) {
        let id = {
            let mut d = self.0.borrow_mut();
            d.clips += 1;
            d.clips
        };
        self.push(&format!(
            r#"<clipPath id="clip{id}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath><g clip-path="url(#clip{id})">"#,
            r.x0,
            r.y0,
            r.x1 - r.x0,
            r.y1 - r.y0
        ));
        self.push("\n");
    }

    pub fn unclip(&self) {
        self.push("</g>\n");
    }

    /// A filled path of closed rings (units), holes by the even-odd rule.
    pub fn rings(&self, rings: &[Vec<(f64, f64)>], fill: RGBColor) {
        self.path(rings, fill, 1.0);
    }

    /// Rings filled with `fill` at `opacity` over what is drawn: one path, so that rings sharing
    /// an edge show no seam.
    pub fn veil(&self, rings: &[Vec<(f64, f64)>], fill: RGBColor, opacity: f64) {
        self.path(rings, fill, opacity);
    }

    fn path(&self, rings: &[Vec<(f64, f64)>], fill: RGBColor, opacity: f64) {
        let mut d = String::new();
        for ring in rings.iter().filter(|r| r.len() > 2) {
            for (k, (x, y)) in ring.iter().enumerate() {
                let _ = write!(d, "{}{x:.1} {y:.1}", if k == 0 { "M" } else { "L" });
            }
            d.push('Z');
        }
        if d.is_empty() {
            return;
        }
        let RGBColor(r, g, b) = fill;
        let alpha = if opacity < 1.0 { format!(r#" fill-opacity="{opacity:.2}""#) } else { String::new() };
        self.push(&format!(r##"<path d="{d}" fill="#{r:02x}{g:02x}{b:02x}"{alpha} fill-rule="evenodd"/>"##));
        self.push("\n");
    }

    /// The finished SVG document.
    pub fn finish(&self) -> String {
        let d = self.0.borrow();
        let (w, h) = d.size;
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{}in\" height=\"{}in\" viewBox=\"0 0 {w} {h}\">\n{}</svg>\n",
            d.inches.0, d.inches.1, d.body
        )
    }
}

type Drawn = Result<(), DrawingErrorKind<std::fmt::Error>>;

impl DrawingBackend for Canvas {
    type ErrorType = std::fmt::Error;

    fn get_size(&self) -> (u32, u32) {
        self.size()
    }

    fn ensure_prepared(&mut self) -> Drawn {
        Ok(())
    }

    fn present(&mut self) -> Drawn {
        Ok(())
    }

    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> Drawn {
        if c.alpha > 0.0 {
            self.push(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"1\" height=\"1\" fill=\"{}\"{}/>\n",
                p.0,
                p.1,
                colour(c),
                opacity("fill", c)
            ));
        }
        Ok(())
    }

    fn draw_line<S: BackendStyle>(&mut self, a: BackendCoord, b: BackendCoord, style: &S) -> Drawn {
        self.draw_path([a, b], style)
    }

    fn draw_rect<S: BackendStyle>(&mut self, a: BackendCoord, b: BackendCoord, style: &S, fill: bool) -> Drawn {
        let c = style.color();
        if c.alpha == 0.0 {
            return Ok(());
        }
        let (x0, y0, x1, y1) = (a.0.min(b.0), a.1.min(b.1), a.0.max(b.0), a.1.max(b.1));
        if !fill && (x0 == x1 || y0 == y1) {
            // An outline with no area is a line (SVG refuses a rect of zero width).
            return self.draw_path([(x0, y0), (x1, y1)], style);
        }
        let paint = if fill {
            seamless(c)
        } else {
            format!(
                "fill=\"none\" stroke=\"{}\"{} stroke-width=\"{}\"",
                colour(c),
                opacity("stroke", c),
                style.stroke_width()
            )
        };
        self.push(&format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" {paint}/>\n",
            (x1 - x0).max(if fill { 1 } else { 0 }),
            (y1 - y0).max(if fill { 1 } else { 0 })
        ));
        Ok(())
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, path: I, style: &S) -> Drawn {
        let c = style.color();
        let p: Vec<(i32, i32)> = path.into_iter().collect();
        if c.alpha == 0.0 || p.len() < 2 {
            return Ok(());
        }
        self.push(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\"{} stroke-width=\"{}\" stroke-linejoin=\"round\" stroke-linecap=\"round\"/>\n",
            points(&p),
            colour(c),
            opacity("stroke", c),
            style.stroke_width()
        ));
        Ok(())
    }

    fn draw_circle<S: BackendStyle>(&mut self, c0: BackendCoord, r: u32, style: &S, fill: bool) -> Drawn {
        let c = style.color();
        if c.alpha == 0.0 {
            return Ok(());
        }
        let paint = if fill {
            format!("fill=\"{}\"{}", colour(c), opacity("fill", c))
        } else {
            format!(
                "fill=\"none\" stroke=\"{}\"{} stroke-width=\"{}\"",
                colour(c),
                opacity("stroke", c),
                style.stroke_width()
            )
        };
        self.push(&format!("<circle cx=\"{}\" cy=\"{}\" r=\"{r}\" {paint}/>\n", c0.0, c0.1));
        Ok(())
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, vert: I, style: &S) -> Drawn {
        let c = style.color();
        let p: Vec<(i32, i32)> = vert.into_iter().collect();
        if c.alpha == 0.0 || p.len() < 3 {
            return Ok(());
        }
        self.push(&format!("<polygon points=\"{}\" {}/>\n", points(&p), seamless(c)));
        Ok(())
    }

    fn draw_text<T: BackendTextStyle>(&mut self, text: &str, style: &T, pos: BackendCoord) -> Drawn {
        let c = style.color();
        if c.alpha == 0.0 {
            return Ok(());
        }
        let rotate = match style.transform() {
            FontTransform::Rotate90 => 90.0,
            FontTransform::Rotate180 => 180.0,
            FontTransform::Rotate270 => 270.0,
            _ => 0.0,
        };
        let look = TextLook {
            size: style.size(),
            anchor: style.anchor(),
            colour: RGBColor(c.rgb.0, c.rgb.1, c.rgb.2),
            halo: None,
            rotate,
        };
        self.text(text, (pos.0 as f64, pos.1 as f64), look);
        Ok(())
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<std::fmt::Error>> {
        let (w, h) = fonts::measure(text, style.size());
        Ok((w.ceil() as u32, h.ceil() as u32))
    }
}
