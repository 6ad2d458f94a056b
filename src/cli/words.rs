//! The library's errors in the command line's words: settings become the flags that set them,
//! and errors that a flag can resolve say which.

use crate::error::{Error, Role, Setting};

/// The flag that sets `s`.
pub fn flag(s: Setting) -> &'static str {
    s.flag()
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
        Error::StateDict { path, what, detail } => format!(
            "--arch is needed: {} is {what}, not TorchScript; give the TorchScript architecture it belongs to \
             (--arch ARCH.pt) with this file as the checkpoint, or export it with models/export.py --arch NAME \
             --weights CKPT{detail}",
            path.display()
        ),
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
    fn every_settings_flag_is_a_flag_of_the_command_line() {
        use clap::CommandFactory;
        let cli = crate::cli::args::Cli::command();
        let mut longs: Vec<String> = Vec::new();
        for sub in cli.get_subcommands() {
            longs.extend(sub.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")));
        }
        for s in Setting::ALL {
            for f in s.flag().split('/') {
                assert!(longs.iter().any(|l| l == f), "{s:?}'s flag {f} is no flag of any command");
            }
            assert!(!s.name().is_empty() && !s.name().contains('-'), "{s:?}: {}", s.name());
        }
        let mut names: Vec<&str> = Setting::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Setting::ALL.len(), "two settings share a name");
    }
}
