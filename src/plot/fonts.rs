//! The fonts every picture is drawn with, embedded in the binary so that every machine draws the
//! same figure: DejaVu Sans for text and DejaVu Math TeX Gyre, its math companion, for symbols the
//! sans lacks (both under the DejaVu licence, `assets/fonts/LICENSE-DejaVu.txt`). Text is measured
//! here (advances and kerning, for the layout of labels) with the same font the renderer shapes
//! it with.

use std::sync::{Arc, OnceLock};

use ab_glyph::{Font, FontRef, ScaleFont};

pub const SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub const MATH: &[u8] = include_bytes!("../../assets/fonts/DejaVuMathTeXGyre.ttf");
/// The family names the SVG files use (`font-family`), as the font files name themselves.
pub const FAMILY: &str = "DejaVu Sans";
pub const MATH_FAMILY: &str = "DejaVu Math TeX Gyre";

fn fonts() -> &'static (FontRef<'static>, FontRef<'static>) {
    static FONTS: OnceLock<(FontRef<'static>, FontRef<'static>)> = OnceLock::new();
    FONTS.get_or_init(|| {
        (
            FontRef::try_from_slice(SANS).expect("the embedded DejaVu Sans parses"),
            FontRef::try_from_slice(MATH).expect("the embedded DejaVu Math TeX Gyre parses"),
        )
    })
}

/// The font database of the renderer: the two embedded fonts and nothing from the system.
pub fn database() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(SANS.to_vec());
        db.load_font_data(MATH.to_vec());
        db.set_sans_serif_family(FAMILY);
        db.set_serif_family(FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// Ascent and descent (negative) of text of em size `size`.
pub fn extent(size: f64) -> (f64, f64) {
    let f = &fonts().0;
    let em = f.units_per_em().unwrap_or(2048.0) as f64;
    (f.ascent_unscaled() as f64 * size / em, f.descent_unscaled() as f64 * size / em)
}

/// The height of capital letters and digits at em size `size` (for centring a label on a point).
pub fn cap_height(size: f64) -> f64 {
    0.729 * size
}

/// Width and height (ascent − descent) of `text` at em size `size`: glyph advances with kerning,
/// from the math font where the sans has no glyph.
pub fn measure(text: &str, size: f64) -> (f64, f64) {
    let (sans, math) = fonts();
    let scale = |f: &FontRef| {
        let em = f.units_per_em().unwrap_or(2048.0);
        ab_glyph::PxScale::from(size as f32 * f.height_unscaled() / em)
    };
    let (s, m) = (sans.as_scaled(scale(sans)), math.as_scaled(scale(math)));
    let mut w = 0.0f64;
    let mut prev: Option<ab_glyph::GlyphId> = None;
    for c in text.chars() {
        let g = sans.glyph_id(c);
        if g.0 == 0 && math.glyph_id(c).0 != 0 {
            w += m.h_advance(math.glyph_id(c)) as f64;
            prev = None;
            continue;
        }
        if let Some(p) = prev {
            w += s.kern(p, g) as f64;
        }
        w += s.h_advance(g) as f64;
        prev = Some(g);
    }
    let (a, d) = extent(size);
    (w, a - d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_by_its_glyphs() {
        let (w1, h) = measure("0", 10.0);
        let (w3, _) = measure("000", 10.0);
        assert!((w3 - 3.0 * w1).abs() < 1e-6 && w1 > 5.0 && w1 < 7.0, "{w1}");
        assert!(h > 10.0 && h < 13.0, "{h}");
        assert!(measure("αβλ", 10.0).0 > 15.0, "Greek letters have glyphs");
        assert_eq!(database().faces().count(), 2);
    }
}
