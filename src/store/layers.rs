//! A per-layer curvature analysis as a table: `per_layer.csv`, one row per diagonal block in model
//! order (the same numbers as hessian.json's `per_layer`).

use std::path::Path;

use crate::error::Result;
use crate::store::atomic::write_atomic;
use crate::store::files;
use crate::store::record::LayerRecord;

/// Write `per_layer.csv` into `dir`: depth (the block's position in model order), name, tensors
/// (`;`-separated), n_params, lambda_max, lambda_max_residual, lambda_min, lambda_min_residual,
/// trace, trace_stderr, products; a cell is empty where that number was not asked for.
pub fn write_csv(dir: &Path, layers: &[LayerRecord]) -> Result<()> {
    write_atomic(&dir.join(files::PER_LAYER_CSV), |w| {
        let mut out = csv::Writer::from_writer(w);
        let io = |e: csv::Error| std::io::Error::other(e.to_string());
        out.write_record([
            "depth",
            "name",
            "tensors",
            "n_params",
            "lambda_max",
            "lambda_max_residual",
            "lambda_min",
            "lambda_min_residual",
            "trace",
            "trace_stderr",
            "products",
        ])
        .map_err(io)?;
        let cell = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
        for (depth, l) in layers.iter().enumerate() {
            out.write_record([
                depth.to_string(),
                l.name.clone(),
                l.tensors.join(";"),
                l.n_params.to_string(),
                cell(l.largest.map(|e| e.eigenvalue)),
                cell(l.largest.map(|e| e.residual)),
                cell(l.smallest.map(|e| e.eigenvalue)),
                cell(l.smallest.map(|e| e.residual)),
                cell(l.trace.map(|t| t.estimate)),
                cell(l.trace.map(|t| t.stderr)),
                l.products.to_string(),
            ])
            .map_err(io)?;
        }
        out.flush()
    })
}
