//! The `losscape` command line: parses arguments into typed configs, runs, and turns any error
//! into one line on stderr and exit status 1 (2 for usage errors).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use losscape::checkpoints::{LineConfig, Origin, PlaneConfig, TrajectoryConfig};
use losscape::data::{DataSpec, Layout, Split};
use losscape::device::DeviceSpec;
use losscape::directions::{Ignore, Norm};
use losscape::eval::LossKind;
use losscape::grid::{Axis, Spacing};
use losscape::plot::{self, PlotOptions};
use losscape::precision::Precision;
use losscape::run::{EvalOptions, GridSpec};
use losscape::shard::Shard;
use losscape::surface::{self, Outcome, Surface, SurfaceConfig};

/// Loss landscapes of neural networks: loss grids around trained TorchScript models along
/// filter-normalized random directions, between checkpoints, and on the PCA plane of a training
/// trajectory (Li et al., NeurIPS 2018).
#[derive(Parser)]
#[command(name = "losscape", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Loss on a 1-D (--x) or 2-D (--x and --y) grid of θ* + αδ + βη, δ and η random directions.
    Surface(SurfaceArgs),
    /// Make a run directory (config.json and directions) for `surface --shard` tasks to fill.
    Directions(SurfaceArgs),
    /// Assemble loss.npy, acc.npy and meta.json from the shards of a run directory.
    Merge(MergeArgs),
    /// Loss along the segment θ(α) = (1−α)·θ_A + α·θ_B between two checkpoints.
    Line(LineArgs),
    /// Loss on the plane through three checkpoints: origin A, axes B − A and C − A.
    Plane(PlaneArgs),
    /// PCA of a training trajectory: the optimizer's path on the plane of its top two principal
    /// directions, and the loss surface on that plane.
    Trajectory(TrajectoryArgs),
    /// (Re)draw the pictures of a run directory from its saved files alone (no model, no data).
    Plot(PlotArgs),
}

#[derive(Args)]
struct MergeArgs {
    /// The run directory the shards wrote to.
    run_dir: PathBuf,
    /// Write NaN for missing points instead of failing.
    #[arg(long)]
    allow_partial: bool,
    /// Do not draw the pictures.
    #[arg(long)]
    no_plots: bool,
    /// No messages.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct PlotArgs {
    /// A run directory (with meta.json).
    run_dir: PathBuf,
    /// Colours, heights and contour spacing on log10(loss).
    #[arg(long)]
    log: bool,
    /// Lower end of the colour range (loss units).
    #[arg(long, allow_hyphen_values = true)]
    vmin: Option<f64>,
    /// Upper end of the colour range (loss units).
    #[arg(long, allow_hyphen_values = true)]
    vmax: Option<f64>,
    /// Number of contour levels.
    #[arg(long, default_value_t = 12)]
    levels: usize,
    /// Clip the 3-D surface's height at this loss.
    #[arg(long)]
    zmax: Option<f64>,
    /// Resolution: 100 gives 800x640 pictures.
    #[arg(long, default_value_t = 100)]
    dpi: u32,
}

/// Data, evaluation and output options shared by every command.
#[derive(Args)]
struct EvalArgs {
    /// CIFAR-10 directory (binary or python version), a directory with X.npy + y.npy, or an X .npy file.
    #[arg(long, value_name = "DIR_OR_NPY")]
    data: PathBuf,
    /// Which CIFAR-10 split (ignored for .npy data).
    #[arg(long, value_enum, default_value = "train")]
    split: Split,
    /// Use the first N samples only (in file order).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Loss: ce (class labels) or mse (float targets). Default: by the dtype of the labels.
    #[arg(long, value_enum)]
    loss: Option<LossKind>,
    /// Samples per forward pass, halved on out-of-memory [default: 4096 on CUDA, 64 on CPU].
    #[arg(long, value_name = "B")]
    batch_size: Option<usize>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Forward precision: fp32 (strict, TF32 off), tf32, bf16 or fp16 [default: tf32 on CUDA, fp32 on CPU].
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Stop a point's pass once its partial mean proves loss > C; such points are flagged in capped.npy.
    #[arg(long, value_name = "C")]
    loss_cap: Option<f64>,
    /// channels_last memory format for conv weights and images [default: true].
    #[arg(long, value_name = "BOOL")]
    channels_last: Option<bool>,
    /// Evaluate a frozen copy of the model with each BatchNorm folded into the layer before it,
    /// where the directions leave BatchNorm fixed (checked; falls back otherwise).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    fold_batchnorm: bool,
    /// CUDA: let cuDNN time its convolution algorithms in each process and keep the fastest
    /// (2-11% faster than its heuristics, measured); false: heuristics, the same choice every time.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    cudnn_benchmark: bool,
    /// CPU: run the folded copy's convolutions on oneDNN (MKLDNN) tensors, checked like the fold
    /// (1.1-1.3x faster on CIFAR ResNets, measured; falls back to plain tensors where it fails).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    onednn: bool,
    /// Per-channel mean of byte images on the [0, 1] scale, comma-separated [default for CIFAR-10: 0.4914,0.4824,0.4467].
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel std of byte images on the [0, 1] scale [default for CIFAR-10: 0.2471,0.2435,0.2616].
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Layout of 4-D X.npy.
    #[arg(long, value_enum, default_value = "auto")]
    layout: Layout,
    /// Run directory for loss.npy, acc.npy, x.npy, y.npy, directions.safetensors, meta.json.
    #[arg(long, value_name = "RUN_DIR")]
    out: PathBuf,
    /// Replace a complete run already in RUN_DIR.
    #[arg(long)]
    overwrite: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Do not draw the pictures at the end (`losscape plot RUN_DIR` draws them later).
    #[arg(long)]
    no_plots: bool,
}

impl EvalArgs {
    fn options(&self) -> EvalOptions {
        let s = self;
        let data = DataSpec {
            path: s.data.clone(),
            split: s.split,
            limit: s.limit,
            mean: s.mean.clone(),
            std: s.std.clone(),
            layout: s.layout,
        };
        EvalOptions {
            data,
            loss: s.loss,
            batch_size: s.batch_size,
            precision: s.precision,
            loss_cap: s.loss_cap,
            channels_last: s.channels_last,
            fold_batchnorm: s.fold_batchnorm,
            cudnn_benchmark: s.cudnn_benchmark,
            onednn: s.onednn,
            device: s.device,
            out: s.out.clone(),
            overwrite: s.overwrite,
            quiet: s.quiet,
            argv: std::env::args().collect(),
        }
    }
}

#[derive(Args)]
struct SurfaceArgs {
    /// TorchScript model file (torch.jit.script or torch.jit.trace, see models/export.py).
    #[arg(long, value_name = "M.pt")]
    model: PathBuf,
    /// x axis (α): MIN:MAX:N, e.g. -1:1:51.
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    x: Axis,
    /// y axis (β): MIN:MAX:N; omit for a 1-D curve.
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    y: Option<Axis>,
    /// Placement of grid coordinates.
    #[arg(long, value_enum, default_value = "linear")]
    spacing: Spacing,
    /// Direction normalization.
    #[arg(long, value_enum, default_value = "filter")]
    norm: Norm,
    /// Parameters with dim <= 1 (biases, BatchNorm): biasbn = not perturbed, keep = perturbed (normalized per tensor).
    #[arg(long, value_enum, default_value = "biasbn")]
    ignore: Ignore,
    /// Seed of the Gaussian directions (torch's CPU generator: the same directions on every device).
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Reuse directions from a directions.safetensors of an earlier run (x.<param>, y.<param>).
    #[arg(long, value_name = "FILE")]
    directions: Option<PathBuf>,
    /// Evaluate only share I of N of the grid (points k with k mod N = I) [default: the SLURM
    /// array task's share inside a job array, else the whole grid].
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// CPU worker threads, each with its own model and data (on CUDA: one worker per GPU of --device).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Save progress at most every this many seconds (and at the end); 0 saves after every point.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    checkpoint_every: f64,
    #[command(flatten)]
    eval: EvalArgs,
}

#[derive(Args)]
struct LineArgs {
    /// Checkpoint at α = 0: TorchScript, torch.save state_dict (zip) or .safetensors.
    #[arg(long, value_name = "A")]
    from: PathBuf,
    /// Checkpoint at α = 1.
    #[arg(long, value_name = "B")]
    to: PathBuf,
    /// TorchScript architecture the state dicts are applied to [default: A, if it is TorchScript].
    #[arg(long, value_name = "M.pt")]
    arch: Option<PathBuf>,
    /// α axis: MIN:MAX:N.
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true, default_value = "-0.5:1.5:41")]
    x: Axis,
    #[command(flatten)]
    eval: EvalArgs,
}

#[derive(Args)]
struct PlaneArgs {
    /// Three checkpoints A B C: the plane's origin A and axes B − A, C − A.
    #[arg(long, num_args = 3, value_names = ["A", "B", "C"])]
    models: Vec<PathBuf>,
    /// TorchScript architecture the state dicts are applied to [default: A, if it is TorchScript].
    #[arg(long, value_name = "M.pt")]
    arch: Option<PathBuf>,
    /// x axis (coefficient of B − A).
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true, default_value = "-0.5:1.5:21")]
    x: Axis,
    /// y axis (coefficient of C − A, or of its part orthogonal to B − A).
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true, default_value = "-0.5:1.5:21")]
    y: Axis,
    /// Gram–Schmidt: make the y axis orthogonal to B − A (C then sits at (c, 1), recorded in meta.json).
    #[arg(long)]
    orthogonalize: bool,
    #[command(flatten)]
    eval: EvalArgs,
}

#[derive(Args)]
struct TrajectoryArgs {
    /// A directory of checkpoints, or a glob such as 'run/epoch_*.pt' (quote it); ordered naturally.
    #[arg(long, value_name = "DIR_OR_GLOB")]
    checkpoints: String,
    /// TorchScript architecture the state dicts are applied to [default: the last checkpoint, if TorchScript].
    #[arg(long, value_name = "M.pt")]
    arch: Option<PathBuf>,
    /// The plane's origin: the last checkpoint, or another checkpoint file.
    #[arg(long, default_value = "last", value_name = "last|FILE")]
    origin: Origin,
    /// Parameters with dim <= 1 (biases, BatchNorm): biasbn = left out of the PCA, keep = included.
    #[arg(long, value_enum, default_value = "biasbn")]
    ignore: Ignore,
    /// x axis [default: the path's extent plus a margin, 21 points].
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    x: Option<Axis>,
    /// y axis [default: the path's extent plus a margin, 21 points].
    #[arg(long, value_name = "MIN:MAX:N", allow_hyphen_values = true)]
    y: Option<Axis>,
    /// Margin around the path, as a fraction of its extent on each axis.
    #[arg(long, default_value_t = 0.25)]
    margin: f64,
    /// Points per axis when the extent is automatic.
    #[arg(long, default_value_t = 21)]
    n: usize,
    #[command(flatten)]
    eval: EvalArgs,
}

fn report(s: &Surface, quiet: bool, out: &std::path::Path) {
    if quiet {
        return;
    }
    let t = &s.meta["timing"];
    eprintln!(
        "losscape: {} points on {} in {:.1}s ({:.0} images/s), loss {} .. {} -> {}",
        s.grid.len(),
        s.meta["device"].as_str().unwrap_or("?"),
        t["wall_seconds"].as_f64().unwrap_or(0.0),
        t["images_per_second"].as_f64().unwrap_or(0.0),
        s.meta["loss_min"],
        s.meta["loss_max"],
        out.display()
    );
}

fn run(cli: Cli) -> Result<()> {
    let prepare_only = matches!(cli.command, Command::Directions(_));
    let (s, quiet, out, plots) = match cli.command {
        Command::Plot(a) => {
            let o = PlotOptions { log: a.log, vmin: a.vmin, vmax: a.vmax, levels: a.levels, zmax: a.zmax, dpi: a.dpi };
            let files = plot::plot_run(&a.run_dir, &o)?;
            for f in files {
                println!("{}", f.display());
            }
            return Ok(());
        }
        Command::Merge(a) => {
            let s = surface::merge(&a.run_dir, a.allow_partial, a.quiet)?;
            (s, a.quiet, a.run_dir, !a.no_plots)
        }
        Command::Surface(a) | Command::Directions(a) => {
            if !(a.checkpoint_every >= 0.0 && a.checkpoint_every.is_finite()) {
                anyhow::bail!("--checkpoint-every {}: must be a number of seconds >= 0", a.checkpoint_every);
            }
            let cfg = SurfaceConfig {
                model: a.model,
                grid: GridSpec { x: a.x, y: a.y, spacing: a.spacing },
                norm: a.norm,
                ignore: a.ignore,
                seed: a.seed,
                directions: a.directions,
                eval: a.eval.options(),
                shard: a.shard,
                workers: a.workers,
                checkpoint_every: std::time::Duration::from_secs_f64(a.checkpoint_every),
                prepare_only,
            };
            match surface::run_sharded(&cfg)? {
                Outcome::Complete(s) => (s, cfg.eval.quiet, cfg.eval.out, !a.eval.no_plots),
                Outcome::ShardDone { shard, points, missing } => {
                    if !cfg.eval.quiet {
                        eprintln!(
                            "losscape: shard {shard} done ({points} points); {missing} points of the grid are in other shards \
                             — `losscape merge {}` once they are done (the last shard to finish merges by itself)",
                            cfg.eval.out.display()
                        );
                    }
                    return Ok(());
                }
                Outcome::Prepared { points } => {
                    if !cfg.eval.quiet {
                        eprintln!(
                            "losscape: {} is ready for `surface --shard I/N` tasks ({points} points)",
                            cfg.eval.out.display()
                        );
                    }
                    return Ok(());
                }
            }
        }
        Command::Line(a) => {
            let cfg = LineConfig { from: a.from, to: a.to, arch: a.arch, x: a.x, eval: a.eval.options() };
            (losscape::checkpoints::line(&cfg)?, cfg.eval.quiet, cfg.eval.out, !a.eval.no_plots)
        }
        Command::Plane(a) => {
            let [m0, m1, m2]: [PathBuf; 3] = a.models.try_into().expect("clap gives exactly 3");
            let cfg = PlaneConfig {
                models: [m0, m1, m2],
                arch: a.arch,
                grid: GridSpec { x: a.x, y: Some(a.y), spacing: Spacing::Linear },
                orthogonalize: a.orthogonalize,
                eval: a.eval.options(),
            };
            (losscape::checkpoints::plane(&cfg)?, cfg.eval.quiet, cfg.eval.out, !a.eval.no_plots)
        }
        Command::Trajectory(a) => {
            let cfg = TrajectoryConfig {
                checkpoints: a.checkpoints,
                arch: a.arch,
                origin: a.origin,
                ignore: a.ignore,
                x: a.x,
                y: a.y,
                margin: a.margin,
                n: a.n,
                eval: a.eval.options(),
            };
            (losscape::checkpoints::trajectory(&cfg)?, cfg.eval.quiet, cfg.eval.out, !a.eval.no_plots)
        }
    };
    report(&s, quiet, &out);
    if plots {
        // The run itself is complete; a picture that fails is reported, not fatal.
        if let Err(e) = plot::plot_run(&out, &PlotOptions::default()) {
            eprintln!("losscape: warning: pictures not drawn: {e:#} (the run's data is complete; see `losscape plot`)");
        }
    }
    Ok(())
}

/// clap's usage errors, folded into one line (help and --version print as usual).
fn parse_args() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
            || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        let text = e.render().to_string();
        let msg: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
        eprintln!("losscape: {} (see losscape --help)", msg.join(" "));
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("losscape: error: {msg}");
            ExitCode::from(1)
        }
    }
}
