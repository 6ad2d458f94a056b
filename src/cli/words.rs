//! The library's errors in the command line's words: settings become the flags that set them,
//! and errors that a flag can resolve say which.

use crate::error::{Error, Role, Setting};

/// The flag that sets `s`.
pub fn flag(s: Setting) -> &'static str {
    match s {
        Setting::Limit => "--limit",
        Setting::Loss => "--loss",
        Setting::BatchSize => "--batch-size",
        Setting::Device => "--device",
        Setting::Precision => "--precision",
        Setting::LossCap => "--loss-cap",
        Setting::Mean => "--mean",
        Setting::Std => "--std",
        Setting::Workers => "--workers",
        Setting::SaveEvery => "--save-every",
        Setting::Shard => "--shard",
        Setting::Grid => "--x/--y",
        Setting::Arch => "--arch",
        Setting::Models => "--models",
        Setting::Directions => "--directions",
        Setting::Checkpoints => "--checkpoints",
        Setting::Margin => "--margin",
        Setting::PointsPerAxis => "--n",
        Setting::PcaMemory => "--pca-memory",
        Setting::BatchNorm => "--batchnorm",
        Setting::BnSamples => "--bn-samples",
        Setting::Top => "--top",
        Setting::Tol => "--tol",
        Setting::MaxSteps => "--max-steps",
        Setting::Curvature => "--curvature",
        Setting::Dpi => "--dpi",
        Setting::Levels => "--levels",
        Setting::ColourRange => "--vmin/--vmax",
        Setting::Log => "--log",
        Setting::Persistence => "--persistence",
        Setting::Output => "--output",
        Setting::Split => "--split",
        Setting::Figure => "--out",
    }
}

/// One line for `e`, as the user of the command line should read it (a command whose run
/// directory is given with --out).
pub fn line(e: &Error) -> String {
    line_for(e, RunDirGiven::Out)
}

/// How a command takes its run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDirGiven {
    /// `--out DIR` (the commands that make runs).
    Out,
    /// A positional argument (`merge DIR`, `plot DIR`).
    Positional,
}

/// One line for `e`, for a command that takes its run directory as `given`.
pub fn line_for(e: &Error, given: RunDirGiven) -> String {
    let text = match e {
        Error::File { role: Role::RunDir, .. } if given == RunDirGiven::Positional => e.to_string(),
        Error::Setting { setting, value, problem } if value.is_empty() => format!("{}: {problem}", flag(*setting)),
        Error::Setting { setting, value, problem } => format!("{} {value}: {problem}", flag(*setting)),
        Error::Needed { setting, why } => format!("{} is needed: {why}", flag(*setting)),
        Error::File { role: Role::RunDir, path, problem } => format!("--out {}: {problem}", path.display()),
        Error::OtherRun { .. } => format!("--out {e}; use another --out, or --overwrite to start it again"),
        Error::Complete { dir } => {
            format!("--out {} already holds a complete run (meta.json); pass --overwrite to replace it", dir.display())
        }
        Error::Incomplete { .. } => {
            format!("{e}; run those shards again (they resume), or merge --allow-partial")
        }
        Error::Busy { .. } => format!("{e}; not starting a second one"),
        _ => e.to_string(),
    };
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn settings_are_named_by_their_flags() {
        let e = Error::setting(Setting::LossCap, -1, "must be a positive number");
        assert_eq!(line(&e), "--loss-cap -1: must be a positive number");
        let e = Error::Needed { setting: Setting::Arch, why: "x.pt is a state dict".into() };
        assert_eq!(line(&e), "--arch is needed: x.pt is a state dict");
        let e =
            Error::OtherRun { dir: PathBuf::from("r"), field: "grid.x.n".into(), there: "5".into(), here: "7".into() };
        let l = line(&e);
        assert!(
            l.starts_with("--out r holds a run of another configuration (grid.x.n: 5 there, 7 here)")
                && l.contains("--overwrite"),
            "{l}"
        );
        let e = Error::Incomplete {
            dir: "r".into(),
            missing: 5,
            total: 20,
            shards: vec!["shard 3/4: 5 of 5 points missing".into()],
        };
        assert!(line(&e).contains("merge --allow-partial"));
        let e = Error::setting(Setting::Log, "", "needs a positive lower end");
        assert_eq!(line(&e), "--log: needs a positive lower end");
    }

    #[test]
    fn every_setting_has_a_flag() {
        use Setting::*;
        for s in [
            Limit,
            Loss,
            BatchSize,
            Device,
            Precision,
            LossCap,
            Mean,
            Std,
            Workers,
            SaveEvery,
            Shard,
            Grid,
            Arch,
            Models,
            Directions,
            Checkpoints,
            Margin,
            PointsPerAxis,
            PcaMemory,
            BatchNorm,
            BnSamples,
            Top,
            Tol,
            MaxSteps,
            Curvature,
            Dpi,
            Levels,
            ColourRange,
            Log,
            Persistence,
            Output,
            Split,
            Figure,
        ] {
            assert!(flag(s).starts_with("--"), "{s:?}");
        }
    }
}
