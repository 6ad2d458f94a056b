//! The `losscape` command line: parses arguments into typed configs, runs, and turns any error
//! into one line on stderr and exit status 1 (2 for usage errors, from clap).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use losscape::data::{DataSpec, Layout, Split};
use losscape::device::DeviceSpec;
use losscape::directions::{Ignore, Norm};
use losscape::eval::LossKind;
use losscape::grid::{Axis, Spacing};
use losscape::precision::Precision;
use losscape::surface::{self, SurfaceConfig};

/// Loss landscapes of neural networks: 1-D and 2-D loss grids around a trained TorchScript model
/// along filter-normalized random directions (Li et al., NeurIPS 2018).
#[derive(Parser)]
#[command(name = "losscape", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate the loss on a 1-D (--x) or 2-D (--x and --y) grid of θ + αδ + βη.
    Surface(SurfaceArgs),
}

#[derive(Args)]
struct SurfaceArgs {
    /// TorchScript model file (torch.jit.script or torch.jit.trace, see models/export.py).
    #[arg(long, value_name = "M.pt")]
    model: PathBuf,
    /// CIFAR-10 directory (binary or python version), a directory with X.npy + y.npy, or an X .npy file.
    #[arg(long, value_name = "DIR_OR_NPY")]
    data: PathBuf,
    /// Which CIFAR-10 split (ignored for .npy data).
    #[arg(long, value_enum, default_value = "train")]
    split: Split,
    /// Use the first N samples only (in file order).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
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
    /// Loss: ce (class labels) or mse (float targets). Default: by the dtype of the labels.
    #[arg(long, value_enum)]
    loss: Option<LossKind>,
    /// Samples per forward pass [default: 4096 on CUDA, 64 on CPU].
    #[arg(long, value_name = "B")]
    batch_size: Option<usize>,
    /// Forward precision: fp32 (strict, TF32 off), tf32, bf16 or fp16 [default: tf32 on CUDA, fp32 on CPU].
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Stop a point's pass once its partial mean proves loss > C; such points are flagged in capped.npy.
    #[arg(long, value_name = "C")]
    loss_cap: Option<f64>,
    /// channels_last memory format for conv weights and images [default: true].
    #[arg(long, value_name = "BOOL")]
    channels_last: Option<bool>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
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
}

fn surface_config(a: SurfaceArgs) -> SurfaceConfig {
    let data = DataSpec { path: a.data, split: a.split, limit: a.limit, mean: a.mean, std: a.std, layout: a.layout };
    SurfaceConfig {
        model: a.model,
        data,
        x: a.x,
        y: a.y,
        spacing: a.spacing,
        norm: a.norm,
        ignore: a.ignore,
        seed: a.seed,
        directions: a.directions,
        loss: a.loss,
        batch_size: a.batch_size,
        channels_last: a.channels_last,
        precision: a.precision,
        loss_cap: a.loss_cap,
        device: a.device,
        out: a.out,
        overwrite: a.overwrite,
        quiet: a.quiet,
        argv: std::env::args().collect(),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Surface(a) => {
            let cfg = surface_config(a);
            let s = surface::run(&cfg)?;
            if !cfg.quiet {
                let t = &s.meta["timing"];
                eprintln!(
                    "losscape: {} points on {} in {:.1}s ({:.0} images/s), loss {} .. {} -> {}",
                    s.grid.len(),
                    s.meta["device"].as_str().unwrap_or("?"),
                    t["wall_seconds"].as_f64().unwrap_or(0.0),
                    t["images_per_second"].as_f64().unwrap_or(0.0),
                    s.meta["loss_min"],
                    s.meta["loss_max"],
                    cfg.out.display()
                );
            }
            Ok(())
        }
    }
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
