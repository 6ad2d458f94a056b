//! Where labels go, computed before anything is drawn (so it can be tested without rendering):
//! each label has candidate positions in order of preference, and takes the first whose box stays
//! inside the frame and touches neither a label already placed nor an obstacle (the optimizer's
//! path, markers, the legend). A label with no free candidate is left out rather than drawn over
//! something. Coordinates are pixels.

/// An axis-aligned box, x0 < x1 and y0 < y1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn centred(c: (f64, f64), w: f64, h: f64) -> Rect {
        Rect { x0: c.0 - w / 2.0, y0: c.1 - h / 2.0, x1: c.0 + w / 2.0, y1: c.1 + h / 2.0 }
    }

    pub fn around(c: (f64, f64), r: f64) -> Rect {
        Rect::centred(c, 2.0 * r, 2.0 * r)
    }

    pub fn grow(self, m: f64) -> Rect {
        Rect { x0: self.x0 - m, y0: self.y0 - m, x1: self.x1 + m, y1: self.y1 + m }
    }

    pub fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn inside(&self, frame: &Rect) -> bool {
        self.x0 >= frame.x0 && self.y0 >= frame.y0 && self.x1 <= frame.x1 && self.y1 <= frame.y1
    }

    /// Whether the segment p–q passes through the box (Liang–Barsky clipping).
    pub fn crossed_by(&self, p: (f64, f64), q: (f64, f64)) -> bool {
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        for (den, num) in [(-dx, p.0 - self.x0), (dx, self.x1 - p.0), (-dy, p.1 - self.y0), (dy, self.y1 - p.1)] {
            if den == 0.0 {
                if num < 0.0 {
                    return false;
                }
            } else {
                let t = num / den;
                if den < 0.0 {
                    t0 = t0.max(t);
                } else {
                    t1 = t1.min(t);
                }
                if t0 > t1 {
                    return false;
                }
            }
        }
        true
    }
}

/// Something labels must keep clear of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Obstacle {
    Rect(Rect),
    Segment((f64, f64), (f64, f64)),
}

impl Obstacle {
    pub fn hits(&self, r: &Rect) -> bool {
        match self {
            Obstacle::Rect(o) => o.intersects(r),
            Obstacle::Segment(p, q) => r.crossed_by(*p, *q),
        }
    }
}

/// A label to place: its box size and the centres it may take, best first.
#[derive(Debug, Clone)]
pub struct Label {
    pub size: (f64, f64),
    pub candidates: Vec<(f64, f64)>,
}

/// The box each label gets (None: every candidate collided), in order; `gap` pixels are kept
/// between labels and around obstacles.
pub fn place(labels: &[Label], obstacles: &[Obstacle], frame: Rect, gap: f64) -> Vec<Option<Rect>> {
    let mut placed: Vec<Rect> = Vec::new();
    labels
        .iter()
        .map(|l| {
            let chosen = l.candidates.iter().map(|&c| Rect::centred(c, l.size.0, l.size.1)).find(|b| {
                let g = b.grow(gap);
                b.inside(&frame) && !placed.iter().any(|p| p.intersects(&g)) && !obstacles.iter().any(|o| o.hits(&g))
            });
            if let Some(b) = chosen {
                placed.push(b);
            }
            chosen
        })
        .collect()
}

/// Candidate centres for the label of a point marker of radius r: right, left, above, below and
/// the four diagonals, each far enough that a w×h box clears the marker.
pub fn around_point(p: (f64, f64), r: f64, (w, h): (f64, f64)) -> Vec<(f64, f64)> {
    let (dx, dy) = (r + 3.0 + w / 2.0, r + 3.0 + h / 2.0);
    vec![
        (p.0 + dx, p.1 - dy),
        (p.0 + dx, p.1 + dy),
        (p.0 - dx, p.1 - dy),
        (p.0 - dx, p.1 + dy),
        (p.0 + dx, p.1),
        (p.0 - dx, p.1),
        (p.0, p.1 - dy),
        (p.0, p.1 + dy),
    ]
}

/// Candidate centres along a polyline: its vertices, starting from the middle and moving outwards
/// (a label in the middle of a level line reads best), every `step`-th vertex.
pub fn along(line: &[(f64, f64)], step: usize) -> Vec<(f64, f64)> {
    let n = line.len();
    if n == 0 {
        return vec![];
    }
    let mid = n / 2;
    let step = step.max(1);
    let mut out = vec![line[mid]];
    let mut k = step;
    while k <= mid || mid + k < n {
        if mid + k < n {
            out.push(line[mid + k]);
        }
        if k <= mid {
            out.push(line[mid - k]);
        }
        k += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segments_cross_boxes() {
        let r = Rect { x0: 0.0, y0: 0.0, x1: 10.0, y1: 10.0 };
        assert!(r.crossed_by((-5.0, 5.0), (15.0, 5.0)));
        assert!(r.crossed_by((5.0, 5.0), (6.0, 6.0)), "inside");
        assert!(!r.crossed_by((-5.0, -5.0), (-1.0, 20.0)));
        assert!(!r.crossed_by((11.0, 0.0), (20.0, 9.0)));
        assert!(r.crossed_by((-1.0, 11.0), (11.0, -1.0)), "diagonal through");
    }

    #[test]
    fn a_label_with_no_room_is_left_out() {
        let frame = Rect { x0: 0.0, y0: 0.0, x1: 100.0, y1: 100.0 };
        let l = Label { size: (40.0, 10.0), candidates: vec![(50.0, 50.0)] };
        let got = place(&[l.clone(), l.clone()], &[], frame, 1.0);
        assert!(got[0].is_some() && got[1].is_none());
        let path = [Obstacle::Segment((0.0, 50.0), (100.0, 50.0))];
        assert!(place(&[l], &path, frame, 1.0)[0].is_none());
        let edge = Label { size: (40.0, 10.0), candidates: vec![(5.0, 50.0), (70.0, 20.0)] };
        assert_eq!(place(&[edge], &[], frame, 1.0)[0].unwrap().x0, 50.0, "the frame moves it to its second choice");
    }

    #[test]
    fn along_starts_in_the_middle() {
        let line: Vec<(f64, f64)> = (0..11).map(|k| (k as f64, 0.0)).collect();
        let c = along(&line, 2);
        assert_eq!(c[0], (5.0, 0.0));
        assert_eq!(c[1], (7.0, 0.0));
        assert_eq!(c[2], (3.0, 0.0));
        assert_eq!(c, vec![(5.0, 0.0), (7.0, 0.0), (3.0, 0.0), (9.0, 0.0), (1.0, 0.0)]);
    }

    fn arb_label() -> impl Strategy<Value = Label> {
        ((5.0f64..80.0, 5.0f64..20.0), prop::collection::vec((0.0f64..400.0, 0.0f64..300.0), 1..12))
            .prop_map(|(size, candidates)| Label { size, candidates })
    }

    proptest! {
        /// Placed labels never overlap each other, an obstacle or the frame's edge.
        #[test]
        fn placed_boxes_never_intersect(
            labels in prop::collection::vec(arb_label(), 0..30),
            segs in prop::collection::vec(((0.0f64..400.0, 0.0f64..300.0), (0.0f64..400.0, 0.0f64..300.0)), 0..10),
            boxes in prop::collection::vec((0.0f64..400.0, 0.0f64..300.0, 1.0f64..30.0), 0..5),
        ) {
            let frame = Rect { x0: 10.0, y0: 10.0, x1: 390.0, y1: 290.0 };
            let mut obstacles: Vec<Obstacle> = segs.iter().map(|&(p, q)| Obstacle::Segment(p, q)).collect();
            obstacles.extend(boxes.iter().map(|&(x, y, r)| Obstacle::Rect(Rect::around((x, y), r))));
            let got = place(&labels, &obstacles, frame, 2.0);
            prop_assert_eq!(got.len(), labels.len());
            let boxes: Vec<Rect> = got.iter().flatten().copied().collect();
            for (k, a) in boxes.iter().enumerate() {
                prop_assert!(a.inside(&frame));
                prop_assert!(!obstacles.iter().any(|o| o.hits(a)));
                for b in &boxes[k + 1..] {
                    prop_assert!(!a.intersects(b), "{:?} {:?}", a, b);
                }
            }
            // Each placed box is one of its label's candidates.
            for (l, g) in labels.iter().zip(&got) {
                if let Some(b) = g {
                    let c = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
                    prop_assert!(l.candidates.iter().any(|p| (p.0 - c.0).abs() < 1e-9 && (p.1 - c.1).abs() < 1e-9));
                }
            }
        }
    }
}
