//! Which grid points a task evaluates: `--shard I/N`, or I and N from a SLURM job array. Point k
//! (row-major) belongs to shard k mod N, so shares differ by at most one point and each mixes
//! cheap and expensive regions of the grid.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based position of this task.
    pub index: usize,
    /// Number of tasks.
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The flat indices (row-major over the grid) this shard evaluates.
    pub fn points(&self, total: usize) -> Vec<usize> {
        (self.index..total).step_by(self.count).collect()
    }

    /// File stem of this shard's progress files.
    pub fn stem(&self) -> String {
        format!("shard-{:04}-of-{:04}", self.index, self.count)
    }

    /// The task's shard in a SLURM job array (None outside one). The position in the array is
    /// (ID − MIN) / STEP, which also holds for sparse arrays such as `1-7:2`; arrays given as
    /// irregular lists need an explicit --shard.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let Some(id) = get("SLURM_ARRAY_TASK_ID") else { return Ok(None) };
        let num = |name: &str| -> Result<Option<i64>> {
            match get(name) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<i64>() {
                    Ok(n) => Ok(Some(n)),
                    Err(_) => bail!("{name}={v:?} is not an integer"),
                },
            }
        };
        let id: i64 = match id.trim().parse() {
            Ok(n) => n,
            Err(_) => bail!("SLURM_ARRAY_TASK_ID={id:?} is not an integer"),
        };
        let (Some(count), Some(min)) = (num("SLURM_ARRAY_TASK_COUNT")?, num("SLURM_ARRAY_TASK_MIN")?) else {
            bail!("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT/MIN are not: pass --shard I/N");
        };
        let max = num("SLURM_ARRAY_TASK_MAX")?.unwrap_or(min + count - 1);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if count < 1 || (max - min) != step * (count - 1) || (id - min) % step != 0 || id < min || id > max {
            bail!(
                "cannot tell this task's position in the job array (ID {id}, MIN {min}, MAX {max}, STEP {step}, COUNT {count}: \
                 not evenly spaced); pass --shard I/N explicitly"
            );
        }
        Ok(Some(Shard { index: ((id - min) / step) as usize, count: count as usize }))
    }
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Shard> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse::<usize>().ok()?, n.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((i, n)) if n >= 1 && i < n => Ok(Shard { index: i, count: n }),
            Some((i, n)) => bail!("shard {s:?}: need 0 <= I < N, got I = {i}, N = {n}"),
            None => bail!("shard {s:?}: expected I/N, e.g. 0/4 (I counts from 0)"),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
