//! Grid specs and point order.

use losscape::grid::{Axis, Grid, Spacing};

#[test]
fn parses_negative_ranges_and_single_points() {
    let a: Axis = "-1:1:5".parse().unwrap();
    assert_eq!(a.values(Spacing::Linear), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    let b: Axis = "0.5:0.5:1".parse().unwrap();
    assert_eq!(b.values(Spacing::Linear), vec![0.5]);
    let c: Axis = "0:1:11".parse().unwrap();
    assert_eq!(c.values(Spacing::Linear)[10], 1.0);
}

#[test]
fn cubic_spacing_is_denser_near_the_center() {
    let a: Axis = "-1:1:5".parse().unwrap();
    assert_eq!(a.values(Spacing::Cubic), vec![-1.0, -0.125, 0.0, 0.125, 1.0]);
    let b: Axis = "0:2:3".parse().unwrap();
    assert_eq!(b.values(Spacing::Cubic), vec![0.0, 1.0, 2.0]);
}

#[test]
fn malformed_specs_are_rejected_with_the_spec_in_the_message() {
    for bad in ["1:2", "a:1:3", "0:1:0", "0:1:-3", "1:0:5", "0:1:2.5", "0:0:3", "0:inf:3", ""] {
        let e = bad.parse::<Axis>().unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
    }
}

#[test]
fn points_are_row_major_rows_y_columns_x() {
    let g = Grid::new(&"0:1:2".parse().unwrap(), Some(&"10:12:3".parse().unwrap()), Spacing::Linear);
    assert_eq!(g.shape(), vec![3, 2]);
    assert_eq!(g.len(), 6);
    assert_eq!(g.point(0), (0.0, 10.0));
    assert_eq!(g.point(1), (1.0, 10.0));
    assert_eq!(g.point(2), (0.0, 11.0));
    assert_eq!(g.point(5), (1.0, 12.0));
    let one = Grid::new(&"-1:1:3".parse().unwrap(), None, Spacing::Linear);
    assert_eq!(one.shape(), vec![3]);
    assert_eq!(one.point(2), (1.0, 0.0));
}
