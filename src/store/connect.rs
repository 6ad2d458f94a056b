//! A connect run on disk: the curve training's progress (`train/progress.json`, written after each
//! epoch's state file, so that a killed training resumes from its last saved epoch), and at the
//! merge the evaluation's arrays (`t.npy`, the curve's and the line's loss and accuracy, per split;
//! the merge computes both paths' barriers as it does a line's).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::space::grid::Grid;
use crate::store::atomic::{read_json, write_json};
use crate::store::files;
use crate::store::npy;
use crate::store::record::{DataMeta, Identity, Quantity, SplitMeta};

/// How far the training got: written after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    /// The run's identity: a directory holding another run's training is refused.
    pub identity: Identity,
    pub epochs_done: usize,
    /// Per epoch done: the mean minibatch loss, the learning rate, the t of each minibatch and
    /// the seconds it took.
    pub epoch_loss: Vec<f64>,
    pub lr: Vec<f64>,
    pub t: Vec<Vec<f64>>,
    pub seconds: Vec<f64>,
    /// The bend and the momentum after `epochs_done` epochs (a file in `train/`), if any.
    pub state: Option<String>,
}

pub fn train_dir(dir: &Path) -> PathBuf {
    dir.join(files::TRAIN)
}

pub fn progress_path(dir: &Path) -> PathBuf {
    train_dir(dir).join(files::TRAIN_PROGRESS)
}

/// The saved progress, if the training was started.
pub fn read_progress(dir: &Path) -> Result<Option<TrainProgress>> {
    let p = progress_path(dir);
    if !p.exists() {
        return Ok(None);
    }
    read_json(&p).map(Some)
}

pub fn write_progress(dir: &Path, p: &TrainProgress) -> Result<()> {
    write_json(&progress_path(dir), p)
}

/// Write the evaluation's arrays — row 0 of the sweep's (t, β) grid is the curve, row 1 the line —
/// per split; `value(q, range)` gives a column's values over a range of points.
pub fn write(
    dir: &Path,
    grid: &Grid,
    data: &DataMeta,
    splits: &[SplitMeta],
    value: &dyn Fn(Quantity, std::ops::Range<usize>) -> Option<Vec<f32>>,
) -> Result<()> {
    let nt = grid.x.len();
    npy::write(&dir.join(files::T), &[nt as u64], &grid.x)?;
    let sets: Vec<(Option<crate::options::Split>, Quantity, Quantity)> = if splits.is_empty() {
        vec![(data.split, Quantity::Loss, Quantity::Acc)]
    } else {
        splits.iter().map(|s| (Some(s.split), Quantity::SplitLoss(s.split), Quantity::SplitAcc(s.split))).collect()
    };
    let name = |file: &str, split: Option<crate::options::Split>| match (splits.is_empty(), split) {
        (false, Some(s)) => files::per_split(file, s),
        _ => file.to_string(),
    };
    for (split, lq, aq) in sets {
        let (Some(loss), Some(acc)) = (value(lq, 0..2 * nt), value(aq, 0..2 * nt)) else { continue };
        for (row, lf, af) in [(0, files::CURVE_LOSS, files::CURVE_ACC), (1, files::LINE_LOSS, files::LINE_ACC)] {
            let r = row * nt..(row + 1) * nt;
            npy::write(&dir.join(name(lf, split)), &[nt as u64], &loss[r.clone()])?;
            npy::write(&dir.join(name(af, split)), &[nt as u64], &acc[r])?;
        }
    }
    Ok(())
}
