//! The names of the files in a run directory, in one place: the commands that write them, the
//! merge that assembles them, `--overwrite` that removes them and the plots that read them all
//! use these.

/// The run's configuration and plan (written first, under the setup lock).
pub const CONFIG: &str = "config.json";
/// The run's record, written last: a directory with one holds a complete run.
pub const META: &str = "meta.json";
/// Held while the first task establishes the run (config.json and direction files).
pub const SETUP_LOCK: &str = ".setup.lock";
/// Each task's progress (`<shard>.npy`, `<shard>.json`, `<shard>.lock`) and the merge lock.
pub const SHARDS: &str = "shards";
pub const MERGE_LOCK: &str = "merge.lock";
/// The plot directions, `x.<param>` and `y.<param>`.
pub const DIRECTIONS: &str = "directions.safetensors";
/// Grid coordinates.
pub const X: &str = "x.npy";
pub const Y: &str = "y.npy";
/// A trajectory's path on the PCA plane, each checkpoint's own loss and accuracy, and how far each
/// is from the plane.
pub const PATH: &str = "path.npy";
pub const PATH_LOSS: &str = "path_loss.npy";
pub const PATH_ACC: &str = "path_acc.npy";
pub const PATH_RESIDUAL: &str = "path_residual.npy";
/// `hessian`'s results.
pub const HESSIAN: &str = "hessian.json";
pub const EIGENVECTORS: &str = "eigenvectors.safetensors";
pub const DENSITY: &str = "density.npy";
/// `hessian --per-layer`'s table.
pub const PER_LAYER_CSV: &str = "per_layer.csv";
/// A sharpness run: every measurement's record, the results by model and as a table, and the
/// worst-case perturbations (one file, or a directory of them).
pub const ITEMS: &str = "items";
pub const SHARPNESS: &str = "sharpness.json";
pub const SHARPNESS_CSV: &str = "sharpness.csv";
pub const WORST: &str = "worst.safetensors";
pub const WORST_DIR: &str = "worst";
/// A connect run: the trained bend, the training's progress (resumed from), the evaluation's
/// t and the curve's and the line's arrays.
pub const BEND: &str = "bend.safetensors";
pub const TRAIN: &str = "train";
pub const TRAIN_PROGRESS: &str = "progress.json";
pub const T: &str = "t.npy";
pub const CURVE_LOSS: &str = "curve_loss.npy";
pub const CURVE_ACC: &str = "curve_acc.npy";
pub const LINE_LOSS: &str = "line_loss.npy";
pub const LINE_ACC: &str = "line_acc.npy";
/// Critical points of a 2-D surface (written by the pictures).
pub const CRITICAL_POINTS: &str = "critical_points.json";

/// A per-split array name: `loss.test.npy` for (`loss.npy`, test).
pub fn per_split(file: &str, split: impl std::fmt::Display) -> String {
    let stem = file.strip_suffix(".npy").unwrap_or(file);
    format!("{stem}.{split}.npy")
}

/// `plot --script`'s matplotlib program.
pub const FIGURES_SCRIPT: &str = "figures.py";

/// The pictures `plot` draws into a run directory.
pub const PICTURES: &[&str] = &[
    "contour.png",
    "heatmap.png",
    "surface3d.png",
    "curve.png",
    "curvature.png",
    "persistence.png",
    "density.png",
    "per_layer.png",
    "sharpness.png",
    "connect.png",
    "surface.html",
    "surface.vtp",
    "surface.ply",
];

/// Whether `name` is a file some run writes into its directory (data, records or pictures), which
/// `--overwrite` removes: the fixed names, the per-split and per-quantity arrays, the pictures.
/// Anything else (a user's notes, a direction file given with `--directions`) is left alone.
pub fn is_output(name: &str) -> bool {
    const FIXED: &[&str] = &[
        META,
        CONFIG,
        DIRECTIONS,
        X,
        Y,
        PATH,
        PATH_LOSS,
        PATH_ACC,
        PATH_RESIDUAL,
        HESSIAN,
        EIGENVECTORS,
        DENSITY,
        PER_LAYER_CSV,
        CRITICAL_POINTS,
        SHARPNESS,
        SHARPNESS_CSV,
        WORST,
        BEND,
        T,
    ];
    if FIXED.contains(&name) || PICTURES.contains(&name) || name == FIGURES_SCRIPT {
        return true;
    }
    // A picture's vector siblings (contour.svg, contour.pdf).
    for ext in [".svg", ".pdf"] {
        if let Some(stem) = name.strip_suffix(ext) {
            if PICTURES.iter().any(|p| p.strip_suffix(".png") == Some(stem)) {
                return true;
            }
        }
    }
    // loss.npy and loss.<split>.npy, for every quantity of the arrays.
    let arrays = [
        "loss",
        "acc",
        "capped",
        "negative_variance",
        "eig_max",
        "eig_min",
        "path_loss",
        "path_acc",
        "curve_loss",
        "curve_acc",
        "line_loss",
        "line_acc",
        "stderr",
        "samples",
    ];
    let Some(stem) = name.strip_suffix(".npy") else { return false };
    arrays.iter().any(|a| {
        stem == *a
            || stem
                .strip_prefix(a)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|split| !split.is_empty() && !split.contains('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_recognised_and_other_files_are_not() {
        for f in [
            "meta.json",
            "loss.npy",
            "loss.test.npy",
            "acc.train.npy",
            "eig_min.npy",
            "contour.png",
            "hessian.json",
            "bend.safetensors",
            "curve_loss.test.npy",
            "line_acc.npy",
        ] {
            assert!(is_output(f), "{f}");
        }
        for f in ["notes.txt", "X.npy", "loss.test.extra.npy", "mydirs.safetensors", "lossy.npy"] {
            assert!(!is_output(f), "{f}");
        }
        assert_eq!(per_split("loss.npy", "test"), "loss.test.npy");
    }
}
