//! `--rel-error E`: each point's loss estimated from the samples in one seeded order until it is
//! known to E, against the exact surface; the reported standard errors against the spread over
//! seeds; file order; shards; E = 0 is the exact pass; bad input.

use std::path::Path;

use crate::common::{assert_valid_meta, fxp, losscape, meta_json, npy, ok, out_dir};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `surface` of the spirals MLP on `data` over `grid` into `out`, batches of 16, then `extra`.
fn surface(data: &str, out: &Path, grid: &[&str], extra: &[&str]) -> String {
    let (m, d, o) = (s(&fxp("pair_a.pt")), s(&fxp(data)), s(out));
    let mut a = vec!["surface", "--model", &m, "--data", &d, "--batch-size", "16", "--out", &o, "--no-plots"];
    a.extend_from_slice(grid);
    a.extend_from_slice(extra);
    ok(&losscape(&a))
}

const GRID: [&str; 2] = ["--x=-1:1:11", "--y=-1:1:11"];

#[test]
fn estimates_are_within_their_standard_errors_of_the_exact_surface_whatever_the_file_order() {
    let exact = out_dir("sampled-exact");
    surface("spirals_big", &exact, &GRID, &["-q"]);
    let (_, want) = npy(&exact.join("loss.npy"));
    for data in ["spirals_big", "spirals_big_sorted"] {
        let out = out_dir(&format!("sampled-{data}"));
        let e = 0.05;
        let err = surface(data, &out, &GRID, &["--rel-error", "0.05", "--min-samples", "256"]);
        assert_valid_meta(&out);
        let (_, got) = npy(&out.join("loss.npy"));
        let (_, se) = npy(&out.join("stderr.npy"));
        let (shape, used) = npy(&out.join("samples.npy"));
        assert_eq!(shape, vec![11, 11]);
        let mut outside = 0;
        for k in 0..got.len() {
            let (g, w, sd) = (got[k], want[k], se[k]);
            assert!(
                (g - w).abs() <= 3.0 * e * w.abs() + 1e-6 * w.abs(),
                "{data} point {k}: {g} vs exact {w} (E = {e})"
            );
            if used[k] == 4096.0 {
                assert_eq!(sd, 0.0);
                assert!((g - w).abs() <= 1e-5 * w.abs(), "{data} point {k}: complete but {g} vs {w}");
            } else if (g - w).abs() > 4.0 * sd {
                outside += 1;
            }
        }
        assert!(outside <= 1, "{data}: {outside} of 121 points beyond 4 of their standard errors");
        let total: f64 = used.iter().sum();
        assert!(total < 0.5 * 4096.0 * 121.0, "{data}: {total} samples used, not fewer than half");
        assert!(used.iter().filter(|&&u| u < 4096.0).count() >= 60, "{data}: most points ran to the end");
        let m = meta_json(&out);
        assert_eq!(m["sampling"]["samples_used"].as_f64().unwrap(), total);
        assert_eq!(m["sampling"]["samples_exact"].as_u64().unwrap(), 4096 * 121);
        assert!(err.contains("--rel-error 0.05: ") && err.contains("% of the samples"), "{err}");
    }
}

#[test]
fn the_reported_standard_error_is_the_spread_over_seeds() {
    let runs: Vec<(Vec<f64>, Vec<f64>)> = (0..20)
        .map(|seed| {
            let out = out_dir(&format!("sampled-seed-{seed}"));
            let sd = seed.to_string();
            let e = ["--rel-error", "0.05", "--min-samples", "256", "--sample-seed", &sd, "-q"];
            surface("spirals_big", &out, &["--x=0.6:1:3"], &e);
            (npy(&out.join("loss.npy")).1, npy(&out.join("stderr.npy")).1)
        })
        .collect();
    for k in 0..3 {
        let est: Vec<f64> = runs.iter().map(|r| r.0[k]).collect();
        let mean = est.iter().sum::<f64>() / 20.0;
        let spread = (est.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 19.0).sqrt();
        let reported = (runs.iter().map(|r| r.1[k] * r.1[k]).sum::<f64>() / 20.0).sqrt();
        assert!(reported > 0.0, "point {k}: every pass ran to the end");
        let ratio = spread / reported;
        assert!((1.0 / 1.5..=1.5).contains(&ratio), "point {k}: spread {spread} vs reported {reported} ({ratio})");
    }
}

#[test]
fn zero_is_the_exact_pass_and_shards_give_the_whole_run() {
    let (a, b) = (out_dir("sampled-none"), out_dir("sampled-zero"));
    surface("spirals", &a, &["--x=-1:1:5"], &["-q"]);
    surface("spirals", &b, &["--x=-1:1:5"], &["--rel-error", "0", "-q"]);
    assert_eq!(meta_json(&a)["config_hash"], meta_json(&b)["config_hash"]);
    assert_eq!(std::fs::read(a.join("loss.npy")).unwrap(), std::fs::read(b.join("loss.npy")).unwrap());
    assert!(!b.join("stderr.npy").exists());
    let whole = out_dir("sampled-whole");
    let extra = ["--rel-error", "0.05", "--min-samples", "256", "-q"];
    surface("spirals_big", &whole, &GRID, &extra);
    let sharded = out_dir("sampled-shards");
    for shard in ["0/2", "1/2"] {
        let mut e = extra.to_vec();
        e.extend(["--shard", shard]);
        surface("spirals_big", &sharded, &GRID, &e);
    }
    for f in ["loss.npy", "acc.npy", "stderr.npy", "samples.npy"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(sharded.join(f)).unwrap(), "{f}");
    }
}

/// Several splits: each split is estimated in its own seeded order, from the same perturbation,
/// and equals the run of that split alone bit for bit (loss, stderr, samples); meta.json counts the
/// samples of each.
#[test]
fn several_splits_are_each_estimated_as_in_a_run_of_their_own() {
    let extra = ["--rel-error", "0.05", "--min-samples", "256", "-q"];
    let both = out_dir("sampled-splits");
    let mut e = extra.to_vec();
    e.extend(["--split", "train,test"]);
    surface("spirals_big", &both, &GRID, &e);
    assert_valid_meta(&both);
    let m = meta_json(&both);
    let splits = m["sampling"]["splits"].as_array().unwrap();
    assert_eq!(splits.len(), 2, "{m}");
    for (sp, n) in [("train", 4096u64), ("test", 2048)] {
        let alone = out_dir(&format!("sampled-split-{sp}"));
        let mut e = extra.to_vec();
        e.extend(["--split", sp]);
        surface("spirals_big", &alone, &GRID, &e);
        for f in ["loss", "acc", "stderr", "samples"] {
            assert_eq!(
                std::fs::read(both.join(format!("{f}.{sp}.npy"))).unwrap(),
                std::fs::read(alone.join(format!("{f}.npy"))).unwrap(),
                "{f} on {sp}"
            );
        }
        let rec = splits.iter().find(|r| r["split"] == sp).unwrap();
        let (_, used) = npy(&alone.join("samples.npy"));
        assert_eq!(rec["samples_used"].as_f64().unwrap(), used.iter().sum::<f64>(), "{sp}");
        assert_eq!(rec["samples_exact"].as_u64().unwrap(), n * 121, "{sp}");
        assert!(used.iter().any(|&u| (u as u64) < n), "{sp}: every pass ran to the end");
    }
    // The first split's arrays are also the run's plain ones.
    assert_eq!(std::fs::read(both.join("stderr.npy")).unwrap(), std::fs::read(both.join("stderr.train.npy")).unwrap());
}

#[test]
fn bad_rel_error_input_is_one_line_and_writes_nothing() {
    for (name, extra, code, part) in [
        ("negative", vec!["--rel-error=-0.1"], 1, "--rel-error"),
        ("one", vec!["--rel-error", "1"], 1, "--rel-error"),
        ("text", vec!["--rel-error", "abc"], 2, "--rel-error"),
        ("min0", vec!["--rel-error", "0.01", "--min-samples", "0"], 1, "--min-samples"),
    ] {
        let out = out_dir(&format!("sampled-bad-{name}"));
        let (m, d, o) = (s(&fxp("pair_a.pt")), s(&fxp("spirals")), s(&out));
        let mut a = vec!["surface", "--model", &m, "--data", &d, "--x=0:1:2", "--out", &o];
        a.extend(extra.iter().copied());
        let r = losscape(&a);
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        assert_eq!(r.status.code(), Some(code), "{name}: {err}");
        assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{name}: {err}");
        assert!(err.contains(part), "{name}: {err}");
        assert!(!out.exists(), "{name}: {} left behind", out.display());
    }
}

/// The `d` attribute of the SVG's one path with this fill opacity (None: no such path).
fn veil_path(svg: &str, opacity: &str) -> Option<String> {
    let at = svg.find(&format!(r#"fill-opacity="{opacity}""#))?;
    let start = svg[..at].rfind("<path d=\"")? + 9;
    let end = start + svg[start..].find('"')?;
    Some(svg[start..end].to_string())
}

/// Each row's runs of consecutive marked points: the rectangles a 2-D veil is made of.
fn row_runs(marked: &[bool], nx: usize) -> usize {
    marked.chunks(nx).map(|row| row.iter().enumerate().filter(|&(i, &m)| m && (i == 0 || !row[i - 1])).count()).sum()
}

/// `plot --shade-stderr F` veils exactly the points whose standard error exceeds F times their
/// loss: one rectangle per row run of such points in both 2-D pictures, one span per point in a
/// 1-D curve; the legend says F. A run without standard errors and F outside (0, 1] are one-line
/// errors.
#[test]
fn plot_shades_the_points_known_less_well_than_asked() {
    let extra = ["--rel-error", "0.05", "--min-samples", "256", "-q"];
    let two = out_dir("sampled-shade-2d");
    surface("spirals_big", &two, &GRID, &extra);
    let (_, loss) = npy(&two.join("loss.npy"));
    let (_, se) = npy(&two.join("stderr.npy"));
    let mut ratio: Vec<f64> = loss.iter().zip(&se).map(|(l, s)| s / l.abs()).collect();
    ratio.sort_by(f64::total_cmp);
    let f = ratio[ratio.len() / 2];
    let marked: Vec<bool> = loss.iter().zip(&se).map(|(l, s)| *s > f * l.abs()).collect();
    let n = marked.iter().filter(|&&m| m).count();
    assert!(n > 10 && n < 110, "{n} of 121 points marked at F = {f}: not a mixed picture");
    let fs = f.to_string();
    ok(&losscape(&["plot", &s(&two), "--shade-stderr", &fs, "--format", "svg"]));
    for (pic, opacity) in [("heatmap.svg", "0.60"), ("contour.svg", "0.25")] {
        let svg = std::fs::read_to_string(two.join(pic)).unwrap();
        let d = veil_path(&svg, opacity).unwrap_or_else(|| panic!("{pic}: no veil"));
        assert_eq!(d.matches('M').count(), row_runs(&marked, 11), "{pic}");
        assert!(svg.contains("% of the loss</text>"), "{pic}: no legend entry");
    }

    let one = out_dir("sampled-shade-1d");
    surface("spirals_big", &one, &["--x=-1:1:15"], &extra);
    let (_, loss) = npy(&one.join("loss.npy"));
    let (_, se) = npy(&one.join("stderr.npy"));
    let marked = loss.iter().zip(&se).filter(|(l, s)| **s > f * l.abs()).count();
    assert!(marked > 0 && marked < 15, "{marked} of 15 points marked at F = {f}: not a mixed picture");
    ok(&losscape(&["plot", &s(&one), "--shade-stderr", &fs, "--format", "svg"]));
    let svg = std::fs::read_to_string(one.join("curve.svg")).unwrap();
    assert_eq!(veil_path(&svg, "0.25").map_or(0, |d| d.matches('M').count()), marked);

    let exact = out_dir("sampled-shade-exact");
    surface("spirals", &exact, &["--x=-1:1:5"], &["-q"]);
    for (dir, f, part) in
        [(&exact, "0.1", "--rel-error"), (&two, "0", "--shade-stderr"), (&two, "1.5", "--shade-stderr")]
    {
        let r = losscape(&["plot", &s(dir), "--shade-stderr", f]);
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        assert_eq!(r.status.code(), Some(1), "{f}: {err}");
        assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{f}: {err}");
        assert!(err.contains(part), "{f}: {err}");
    }
}
