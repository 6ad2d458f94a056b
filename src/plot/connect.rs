//! A connect run's picture: the loss (left axis) and accuracy (right axis) along t of the trained
//! curve and of the straight line between the same two models, overlaid, on every split, with
//! each one's chord and barrier marked (`connect.png`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Role};
use crate::store::files;
use crate::store::record::{Meta, SplitBarrier};

use super::{curves, Look, PlotOptions, RunData};

/// Draw `connect.png` of the run in `dir`.
pub fn draw(dir: &Path, o: &PlotOptions, meta: &Meta) -> Result<Vec<PathBuf>> {
    let c = meta
        .description
        .connect
        .as_ref()
        .ok_or_else(|| Error::file(Role::RunDir, dir, "meta.json has no connect record"))?;
    let t = super::read_vec(dir, files::T)?;
    let several = c.curve_barriers.len() > 1;
    let mut views: Vec<(String, RunData)> = Vec::new();
    for (path, loss_file, acc_file, barriers) in [
        ("curve", files::CURVE_LOSS, files::CURVE_ACC, &c.curve_barriers),
        ("line", files::LINE_LOSS, files::LINE_ACC, &c.line_barriers),
    ] {
        for b in barriers.iter() {
            let name = |f: &str| match (several, b.split) {
                (true, Some(s)) => files::per_split(f, s),
                _ => f.to_string(),
            };
            let view = view(dir, meta, &t, &name(loss_file), &name(acc_file), b)?;
            let label = match (several, b.split) {
                (true, Some(s)) => format!("{path}, {s}"),
                _ => path.to_string(),
            };
            views.push((label, view));
        }
    }
    let runs: Vec<(String, &RunData)> = views.iter().map(|(n, v)| (n.clone(), v)).collect();
    let look = Look::of(&views.iter().map(|(_, v)| v).collect::<Vec<_>>(), o);
    let title = format!(
        "{} curve and line from {} to {} — {} loss",
        c.curve,
        super::file_name(&c.from.path),
        super::file_name(&c.to.path),
        meta.description.loss
    );
    curves::curves(&dir.join("connect.png"), &runs, o, look.as_ref(), &title)
}

fn view(dir: &Path, meta: &Meta, t: &[f64], loss: &str, acc: &str, b: &SplitBarrier) -> Result<RunData> {
    let (loss, acc) = (super::read_vec(dir, loss)?, super::read_vec(dir, acc)?);
    if loss.len() != t.len() || acc.len() != t.len() {
        return Err(Error::file(
            Role::RunDir,
            dir,
            format!("the curve's arrays do not have the {} values of t.npy", t.len()),
        ));
    }
    Ok(RunData {
        dir: dir.to_path_buf(),
        meta: meta.clone(),
        x: t.to_vec(),
        y: None,
        loss,
        acc,
        stderr: None,
        path: None,
        marks: Vec::new(),
        x_label: "t  (0 = A, 1 = B)".into(),
        y_label: String::new(),
        barrier: b.loss,
        path_kind: super::PathKind::Optimizer,
    })
}
