//! The library's errors: typed, each carrying what a user needs to act on it (the file, the
//! setting and its value, the shapes), in one line, and without command-line wording: `cli`
//! turns a [`Setting`] into its flag name and adds the flags that would help.

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The log target of a warning that is advice about the inputs, which a quiet user has chosen not
/// to hear (the CLI's --quiet hides it; other warnings it shows). A target
/// `losscape::advice::<name>,<name>` names the settings the advice is about (by [`Setting::name`]):
/// the CLI adds their flags.
pub const ADVICE: &str = "losscape::advice";

/// Defines [`Setting`] from one list: each variant with its library name (a field of the run's
/// configuration, what the library's messages say) and its command-line spelling (what
/// `cli::words` says instead; the library itself never shows it). A new setting cannot miss
/// either, and a unit test in `cli` checks every spelling against the real flags.
macro_rules! settings {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $flag:literal; )*) => {
        /// A setting of a run, by its library name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Setting {
            $( $(#[$doc])* $variant, )*
        }

        impl Setting {
            /// Every setting.
            pub const ALL: &'static [Setting] = &[$(Setting::$variant),*];

            /// The library's name of the setting (a field of the run's configuration).
            pub fn name(self) -> &'static str {
                match self { $(Setting::$variant => $name,)* }
            }

            /// The command line's flag(s) for the setting, `/`-separated where several set it.
            pub fn flag(self) -> &'static str {
                match self { $(Setting::$variant => $flag,)* }
            }
        }
    };
}

settings! {
    Limit => "limit", "--limit";
    Loss => "loss", "--loss";
    BatchSize => "batch_size", "--batch-size";
    Device => "device", "--device";
    Precision => "precision", "--precision";
    LossCap => "loss_cap", "--loss-cap";
    Mean => "mean", "--mean";
    Std => "std", "--std";
    Workers => "workers", "--workers";
    SaveEvery => "save_every", "--save-every";
    Shard => "shard", "--shard";
    Grid => "grid", "--x/--y";
    Arch => "arch", "--arch";
    Models => "models", "--models";
    Directions => "directions", "--directions";
    Checkpoints => "checkpoints", "--checkpoints";
    Margin => "margin", "--margin";
    PointsPerAxis => "points_per_axis", "--n";
    PcaMemory => "pca_memory", "--pca-memory";
    BatchNorm => "batchnorm", "--batchnorm";
    BnSamples => "bn_samples", "--bn-samples";
    Top => "top", "--top";
    Tol => "tol", "--tol";
    MaxSteps => "max_steps", "--max-steps";
    TraceSamples => "trace_samples", "--trace-samples";
    VectorsPerPass => "vectors_per_pass", "--vectors-per-pass";
    /// Regular expressions choosing parameters by name.
    Params => "params", "--params";
    PerLayer => "per_layer", "--per-layer";
    Curvature => "curvature", "--curvature";
    CurvatureTol => "curvature_tol", "--curvature-tol";
    Measure => "measure", "--measure";
    Radius => "radius", "--radius";
    MSharpness => "m_sharpness", "--m-sharpness";
    Samples => "samples", "--samples";
    Steps => "steps", "--steps";
    Restarts => "restarts", "--restarts";
    Threshold => "threshold", "--threshold";
    Floor => "floor", "--floor";
    Dpi => "dpi", "--dpi";
    Format => "format", "--format";
    Size => "size", "--size";
    FontSize => "font_size", "--font-size";
    Levels => "levels", "--levels";
    ColourRange => "colour_range", "--vmin/--vmax";
    Log => "log", "--log";
    Persistence => "persistence", "--persistence";
    /// Points drawn faded where their standard error exceeds this fraction of their loss.
    ShadeStderr => "shade_stderr", "--shade-stderr";
    RelError => "rel_error", "--rel-error";
    MinSamples => "min_samples", "--min-samples";
    Epochs => "epochs", "--epochs";
    Augment => "augment", "--augment";
    Points => "points", "--points";
    LearningRate => "lr", "--lr";
    Momentum => "momentum", "--momentum";
    WeightDecay => "weight_decay", "--weight-decay";
    /// The evaluation's batch size of a command whose --batch-size is a training minibatch.
    EvalBatchSize => "eval_batch_size", "--eval-batch-size";
    /// The minibatch size of curve training.
    TrainBatchSize => "train_batch_size", "--batch-size";
    /// The dict entry of the model's output the loss is taken on.
    Output => "output", "--output";
    /// The data splits a run evaluates on.
    Split => "split", "--split";
    /// The file a figure is written to.
    Figure => "figure", "--out";
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a file is to the run, for the message (`model M.pt: cannot read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Model,
    Data,
    CifarFile,
    Checkpoint,
    Directions,
    /// The run directory (`--out`).
    RunDir,
    /// A file of a run directory (config.json, a shard's progress, an output array).
    RunFile,
    /// Any other file, named by its path alone.
    File,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Model => "model ",
            Role::Data => "data ",
            Role::CifarFile => "CIFAR-10 file ",
            Role::Checkpoint => "checkpoint ",
            Role::Directions => "directions ",
            Role::RunDir => "run directory ",
            Role::RunFile | Role::File => "",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting out of range, or at odds with another setting or with the input.
    #[error("{setting} {value}: {problem}")]
    Setting { setting: Setting, value: String, problem: String },
    /// A setting that must be given here.
    #[error("{setting} is needed: {why}")]
    Needed { setting: Setting, why: String },
    /// A state dict (of the kind `what`) where a TorchScript model was expected: it needs the
    /// architecture it belongs to.
    #[error("model {}: is {what}, not TorchScript; a state dict needs the TorchScript architecture it belongs to{detail}", path.display())]
    StateDict { path: PathBuf, what: &'static str, detail: String },
    /// A file that cannot be used as it is.
    #[error("{role}{}: {problem}", path.display())]
    File { role: Role, path: PathBuf, problem: String },
    /// The run directory already holds a run of another configuration.
    #[error("{} holds a run of another configuration ({field}: {there} there, {here} here)", dir.display())]
    OtherRun { dir: PathBuf, field: String, there: String, here: String },
    /// The run directory already holds a complete run, and replacing it was not asked for.
    #[error("{} already holds a complete run (meta.json)", dir.display())]
    Complete { dir: PathBuf },
    /// Points of the grid are missing at merge time.
    #[error("{}: {missing} of {total} points missing — {}", dir.display(), shards.join("; "))]
    Incomplete { dir: PathBuf, missing: usize, total: usize, shards: Vec<String> },
    /// Another process holds a lock this one needs.
    #[error("{what} of {} is held by another process right now ({})", dir.display(), lock.display())]
    Busy { what: String, dir: PathBuf, lock: PathBuf },
    /// An operation of libtorch failed; `context` says which.
    #[error("{context}: {message}")]
    Torch { context: String, message: String },
    /// libtorch's allocator ran out of memory (its typed `OutOfMemoryError`, where libtorch gives
    /// the type); `context` says in what.
    #[error("{context}: out of memory: {message}")]
    OutOfMemory { context: String, message: String },
    /// Reading or writing a file failed.
    #[error("{}: {op}: {source}", path.display())]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    /// Anything else, already worded.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn setting(setting: Setting, value: impl fmt::Display, problem: impl Into<String>) -> Error {
        Error::Setting { setting, value: value.to_string(), problem: problem.into() }
    }

    pub fn file(role: Role, path: &Path, problem: impl Into<String>) -> Error {
        Error::File { role, path: path.to_path_buf(), problem: problem.into() }
    }

    pub fn io(path: &Path, op: &'static str, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), op, source }
    }

    pub fn other(msg: impl Into<String>) -> Error {
        Error::Other(msg.into())
    }

    /// Whether this is an allocator's out-of-memory (CUDA or CPU), which a smaller batch may avoid:
    /// the typed cause where the shim caught libtorch's `OutOfMemoryError`; otherwise (an error
    /// that came through tch, as text) its wording, which the tests pin down.
    pub fn is_oom(&self) -> bool {
        if matches!(self, Error::OutOfMemory { .. }) {
            return true;
        }
        let s = self.to_string().to_lowercase();
        s.contains("out of memory") || s.contains("not enough memory") || s.contains("can't allocate memory")
    }
}

/// One line of a libtorch error, so that every error the user sees is one line: the first line
/// (a C++ backtrace follows it), or, when the TorchScript interpreter wrapped the error in its
/// traceback, the line naming the original exception (`RuntimeError: ...`).
pub fn torch_msg(e: &tch::TchError) -> String {
    let s = match e {
        tch::TchError::Torch(s) => s.clone(),
        other => other.to_string(),
    };
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if s.contains("failed in the TorchScript interpreter") {
        let is_exception =
            |l: &&&str| l.split_once(": ").is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '));
        if let Some(l) = lines.iter().rev().find(is_exception) {
            return l.to_string();
        }
    }
    clean(lines.first().copied().unwrap_or("unknown libtorch error"))
}

/// A libtorch message without the boilerplate libtorch appends to zip-reader errors.
pub fn clean(msg: &str) -> String {
    msg.split(". This is an internal miniz error").next().unwrap_or(msg).trim().to_string()
}

/// Attach context to a libtorch result.
pub trait TorchContext<T> {
    fn torch(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn torch(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Torch { context: context(), message: torch_msg(&e) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_their_subject() {
        let e = Error::setting(Setting::LossCap, -1, "must be a positive number");
        assert_eq!(e.to_string(), "loss_cap -1: must be a positive number");
        let e = Error::file(Role::Model, Path::new("m.pt"), "cannot read");
        assert_eq!(e.to_string(), "model m.pt: cannot read");
        let e = Error::file(Role::File, Path::new("x.npy"), "not an .npy file");
        assert_eq!(e.to_string(), "x.npy: not an .npy file");
        let e = Error::Incomplete { dir: "r".into(), missing: 2, total: 9, shards: vec!["a".into(), "b".into()] };
        assert_eq!(e.to_string(), "r: 2 of 9 points missing — a; b");
    }

    #[test]
    fn torch_messages_keep_the_exception_line() {
        let e = tch::TchError::Torch(
            "The following operation failed in the TorchScript interpreter.\nTraceback:\n  x\nRuntimeError: shapes differ\n"
                .into(),
        );
        assert_eq!(torch_msg(&e), "RuntimeError: shapes differ");
        let e = tch::TchError::Torch("first line\nbacktrace".into());
        assert_eq!(torch_msg(&e), "first line");
        assert_eq!(clean("bad zip. This is an internal miniz error, sorry"), "bad zip");
    }

    #[test]
    fn out_of_memory_is_recognised_on_cuda_and_cpu() {
        assert!(Error::other("CUDA out of memory. Tried to allocate 2 GiB").is_oom());
        assert!(Error::other("DefaultCPUAllocator: can't allocate memory").is_oom());
        assert!(!Error::other("shape mismatch").is_oom());
    }
}
