//! Which points a task evaluates: point k (row-major over the grid, then the checkpoint states)
//! belongs to shard k mod N, so shares differ by at most one point and each mixes cheap and
//! expensive regions of the grid. A task's shard is `--shard I/N`, or its position in a SLURM
//! job array.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Setting};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shard {
    /// 0-based position of this task.
    pub index: usize,
    /// Number of tasks.
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The flat indices this shard evaluates out of `total`.
    pub fn points(&self, total: usize) -> Vec<usize> {
        (self.index..total).step_by(self.count).collect()
    }

    /// Whether point k is this shard's.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }

    /// File stem of this shard's progress files.
    pub fn stem(&self) -> String {
        format!("shard-{:04}-of-{:04}", self.index, self.count)
    }

    /// The task's shard in a SLURM job array (None outside one), from the array variables that
    /// `get` returns. The position in the array is (ID − MIN) / STEP, which also holds for sparse
    /// arrays such as `1-7:2`; arrays given as irregular lists cannot be placed.
    pub fn from_slurm(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let Some(id) = get("SLURM_ARRAY_TASK_ID") else { return Ok(None) };
        let bad = |name: &str, v: &str, problem: &str| Error::setting(Setting::Shard, format!("{name}={v:?}"), problem);
        let num = |name: &str| -> Result<Option<i64>> {
            match get(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| bad(name, &v, "is not an integer")),
            }
        };
        let id: i64 = id.trim().parse().map_err(|_| bad("SLURM_ARRAY_TASK_ID", &id, "is not an integer"))?;
        let (Some(count), Some(min)) = (num("SLURM_ARRAY_TASK_COUNT")?, num("SLURM_ARRAY_TASK_MIN")?) else {
            return Err(Error::setting(
                Setting::Shard,
                format!("SLURM_ARRAY_TASK_ID={id}"),
                "is set but SLURM_ARRAY_TASK_COUNT/MIN are not: give the shard explicitly",
            ));
        };
        let max = num("SLURM_ARRAY_TASK_MAX")?.unwrap_or(min.saturating_add(count).saturating_sub(1));
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let spaced = count >= 1
            && max.checked_sub(min) == step.checked_mul(count - 1)
            && id.checked_sub(min).is_some_and(|d| d % step == 0);
        if count < 1 || !spaced || id < min || id > max {
            return Err(Error::setting(
                Setting::Shard,
                format!("ID {id}, MIN {min}, MAX {max}, STEP {step}, COUNT {count}"),
                "cannot tell this task's position in the job array (not evenly spaced): give the shard explicitly",
            ));
        }
        Ok(Some(Shard { index: ((id - min) / step) as usize, count: count as usize }))
    }
}

impl FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Shard> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse::<usize>().ok()?, n.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((i, n)) if n >= 1 && i < n => Ok(Shard { index: i, count: n }),
            Some((i, n)) => Err(Error::setting(Setting::Shard, s, format!("need 0 <= I < N, got I = {i}, N = {n}"))),
            None => Err(Error::setting(Setting::Shard, format!("{s:?}"), "expected I/N, e.g. 0/4 (I counts from 0)")),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn slurm_positions_in_dense_sparse_and_irregular_arrays() {
        assert_eq!(Shard::from_slurm(env(&[])).unwrap(), None);
        let dense = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
        ];
        assert_eq!(Shard::from_slurm(env(&dense)).unwrap(), Some(Shard { index: 2, count: 4 }));
        // --array=1-7:2 runs IDs 1, 3, 5, 7: ID 5 is the third task, not ID - MIN = 4.
        let sparse = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(Shard::from_slurm(env(&sparse)).unwrap(), Some(Shard { index: 2, count: 4 }));
        // --array=1,4,9: no even spacing, so no guess.
        let irregular = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
        ];
        assert!(Shard::from_slurm(env(&irregular)).unwrap_err().to_string().contains("explicitly"));
        let half = [("SLURM_ARRAY_TASK_ID", "4")];
        assert!(Shard::from_slurm(env(&half)).unwrap_err().to_string().contains("COUNT/MIN"));
        let junk = [("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "0")];
        assert!(Shard::from_slurm(env(&junk)).unwrap_err().to_string().contains("not an integer"));
    }

    #[test]
    fn shard_specs_parse_and_shares_cover_every_point_once() {
        assert_eq!("3/4".parse::<Shard>().unwrap(), Shard { index: 3, count: 4 });
        for bad in ["4/4", "1", "a/b", "0/0", "-1/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let mut all: Vec<usize> = (0..4).flat_map(|i| Shard { index: i, count: 4 }.points(23)).collect();
        all.sort();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        let sizes: Vec<usize> = (0..4).map(|i| Shard { index: i, count: 4 }.points(23).len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        assert_eq!(Shard { index: 1, count: 3 }.stem(), "shard-0001-of-0003");
        assert!(Shard { index: 1, count: 3 }.owns(7) && !Shard { index: 1, count: 3 }.owns(8));
    }

    proptest! {
        #[test]
        fn any_shard_string_parses_or_fails_cleanly(s in "\\PC{0,20}") {
            if let Ok(sh) = s.parse::<Shard>() {
                prop_assert!(sh.index < sh.count);
            }
        }

        #[test]
        fn any_slurm_environment_gives_a_shard_or_a_clean_error(
            id in "[-0-9x ]{0,4}", count in "[-0-9]{0,3}", min in "[-0-9]{0,3}", max in proptest::option::of("[-0-9]{0,3}"),
            step in proptest::option::of("[-0-9]{0,2}")
        ) {
            let get = |k: &str| match k {
                "SLURM_ARRAY_TASK_ID" => Some(id.clone()),
                "SLURM_ARRAY_TASK_COUNT" => Some(count.clone()),
                "SLURM_ARRAY_TASK_MIN" => Some(min.clone()),
                "SLURM_ARRAY_TASK_MAX" => max.clone(),
                "SLURM_ARRAY_TASK_STEP" => step.clone(),
                _ => None,
            };
            if let Ok(Some(sh)) = Shard::from_slurm(get) {
                prop_assert!(sh.index < sh.count);
            }
        }
    }
}
