//! The command line: parse (clap) → plan (typed, validated configurations) → run a command →
//! report. Every error becomes one line on stderr and exit status 1 (2 for usage errors); only
//! this layer talks to the user.

pub mod args;
pub mod plan;
pub mod progress;
pub mod words;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::args::{Cli, Command};
use crate::cli::plan::ProcessEnv;
use crate::cli::progress::{sig6, Progress};
use crate::commands::run::{Outcome, Summary};
use crate::commands::{self};
use crate::error::Result;
use crate::plot::PlotOptions;

/// The `losscape` program.
pub fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    progress::init_log(quiet(&cli.command));
    let host = crate::engine::settings::keep_host_memory();
    log::debug!("host allocator: {host:?}");
    let given = match cli.command {
        Command::Merge(_) | Command::Plot(_) => words::RunDirGiven::Positional,
        _ => words::RunDirGiven::Out,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("losscape: error: {}", words::line_for(&e, given));
            ExitCode::from(1)
        }
    }
}

fn quiet(c: &Command) -> bool {
    match c {
        Command::Surface(a) => a.out.quiet,
        Command::Directions(a) => a.out.quiet,
        Command::Line(a) => a.out.quiet,
        Command::Plane(a) => a.out.quiet,
        Command::Trajectory(a) => a.out.quiet,
        Command::Hessian(a) => a.out.quiet,
        Command::Sharpness(a) => a.out.quiet,
        Command::Connect(a) => a.out.quiet,
        Command::Merge(a) => a.quiet,
        Command::Plot(_) => false,
    }
}

/// clap's usage errors, folded into one line (help and --version print as usual).
fn parse_args() -> std::result::Result<Cli, ExitCode> {
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

fn run(cli: Cli) -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let env = ProcessEnv;
    let (outcome, quiet, plots) = match cli.command {
        Command::Plot(a) => return plot(&a),
        Command::Hessian(a) => return hessian(&a, argv),
        Command::Merge(a) => {
            let s = commands::merge::merge(&a.run_dir, a.allow_partial)?;
            if !a.quiet && s.meta.shards.count > 1 {
                eprintln!("losscape: merged {} shards of run {}", s.meta.shards.count, s.meta.config_hash);
            }
            (Outcome::Complete(s), a.quiet, !a.no_plots)
        }
        Command::Surface(a) => {
            let cfg = plan::surface(&a, &env, argv)?;
            let mut p = Progress::new(a.out.quiet);
            (commands::surface::surface(&cfg, &mut p)?, a.out.quiet, !a.task.no_plots)
        }
        Command::Directions(a) => {
            let cfg = plan::directions(&a, &env, argv)?;
            let mut p = Progress::new(true);
            (commands::surface::surface(&cfg, &mut p)?, a.out.quiet, false)
        }
        Command::Line(a) => {
            let cfg = plan::line(&a, &env, argv)?;
            let mut p = Progress::new(a.out.quiet);
            (commands::line::line(&cfg, &mut p)?, a.out.quiet, !a.task.no_plots)
        }
        Command::Plane(a) => {
            let cfg = plan::plane(&a, &env, argv)?;
            let mut p = Progress::new(a.out.quiet);
            (commands::plane::plane(&cfg, &mut p)?, a.out.quiet, !a.task.no_plots)
        }
        Command::Connect(a) => {
            let cfg = plan::connect(&a, &env, argv)?;
            let mut p = Progress::new(a.out.quiet);
            (commands::connect::connect(cfg, &mut p)?, a.out.quiet, !a.task.no_plots)
        }
        Command::Sharpness(a) => {
            let cfg = plan::sharpness(&a, &env, argv)?;
            let mut p = Progress::new(a.out.quiet);
            (commands::sharpness::sharpness(&cfg, &mut p)?, a.out.quiet, !a.task.no_plots)
        }
        Command::Trajectory(a) => {
            let cfg = plan::trajectory(&a, &env, argv)?;
            let mut p = Progress::new(a.out.quiet);
            (commands::trajectory::trajectory(&cfg, &mut p)?, a.out.quiet, !a.task.no_plots)
        }
    };
    report(&outcome, quiet);
    if let (true, Outcome::Complete(s)) = (plots, &outcome) {
        // The run itself is complete; a picture that fails is reported, not fatal.
        if let Err(e) = commands::plot::plot(&s.dir, &PlotOptions::default()) {
            eprintln!(
                "losscape: warning: pictures not drawn: {} (the run's data is complete; see `losscape plot`)",
                words::line(&e)
            );
        }
    }
    Ok(())
}

/// `losscape plot`: a run's pictures, or several runs side by side in one figure.
fn plot(a: &args::PlotArgs) -> Result<()> {
    let o = plan::plot(a)?;
    match (&a.out, a.run_dirs.as_slice()) {
        (Some(out), dirs) => {
            let f = commands::plot::side_by_side(dirs, out, &o)?;
            println!("{}", f.path.display());
            eprintln!(
                "losscape: {} runs, {}×{} px, {} scale {}..{}, {} levels",
                f.runs,
                f.size.0,
                f.size.1,
                match f.scale {
                    crate::plot::Scale::Log => "log",
                    crate::plot::Scale::Linear => "linear",
                },
                crate::plot::scale::short(f.range.0),
                crate::plot::scale::short(f.range.1),
                f.levels.len()
            );
        }
        (None, [dir]) => {
            for f in commands::plot::plot(dir, &o)? {
                println!("{}", f.display());
            }
        }
        (None, _) => {
            return Err(crate::error::Error::setting(
                crate::error::Setting::Figure,
                "",
                "several run directories are drawn into one figure: name it with --out FIG.png",
            ))
        }
    }
    Ok(())
}

/// `losscape hessian`: the analysis, its summary line and its pictures.
fn hessian(a: &args::HessianArgs, argv: Vec<String>) -> Result<()> {
    let cfg = plan::hessian(a, argv)?;
    let o = commands::hessian::hessian(&cfg)?;
    if !a.out.quiet {
        eprintln!("{}", hessian_line(&o));
    }
    if !a.no_plots {
        if let Err(e) = commands::plot::plot(&o.dir, &PlotOptions::default()) {
            eprintln!("losscape: warning: pictures not drawn: {}", words::line(&e));
        }
    }
    Ok(())
}

/// The summary line of a finished task.
fn report(outcome: &Outcome, quiet: bool) {
    if quiet {
        return;
    }
    match outcome {
        Outcome::Complete(s) => eprintln!("{}", summary_line(s)),
        Outcome::AlreadyComplete(s) => {
            eprintln!("losscape: {} already holds this run, complete; nothing to do", s.dir.display())
        }
        Outcome::ShardDone { shard, points, missing } => eprintln!(
            "losscape: shard {shard} done ({points} points); {missing} points of the run are in other shards \
             — the last shard to finish merges by itself, or run `losscape merge` once they are done"
        ),
        Outcome::Prepared { points } => {
            eprintln!("losscape: the run is set up for `surface --shard I/N` tasks ({points} points)")
        }
    }
}

/// A sharpness run's summary: the measurements, then a line per model with its results.
fn sharpness_lines(s: &Summary) -> String {
    let m = &s.meta;
    let report: Option<crate::store::record::SharpnessReport> =
        crate::store::atomic::read_json(&s.dir.join(crate::store::files::SHARPNESS)).ok();
    let mut out = format!(
        "losscape: {} measurements on {} in {:.1}s -> {}",
        m.timing.points,
        m.description.device,
        m.timing.eval_seconds,
        display(&s.dir)
    );
    for model in report.iter().flat_map(|r| &r.models) {
        let results: Vec<String> = model
            .results
            .iter()
            .map(|r| {
                let at = r.radius.map_or(String::new(), |x| format!(" ρ={x}"));
                let name = if r.measure == crate::options::Measure::Pacbayes {
                    "pacbayes σ*".to_string()
                } else {
                    format!("{}{at}", r.measure)
                };
                let unbracketed =
                    matches!(r.details, crate::store::record::SharpnessDetails::Pacbayes { bracketed: false, .. });
                match r.stderr {
                    _ if unbracketed => format!("{name} {} (a bound: not bracketed)", sig6(r.value)),
                    Some(se) => format!("{name} {} ± {}", sig6(r.value), sig6(se)),
                    None => format!("{name} {}", sig6(r.value)),
                }
            })
            .collect();
        out += &format!(
            "\n  {}: loss {}, {}",
            model
                .path
                .file_name()
                .map_or_else(|| model.path.display().to_string(), |f| f.to_string_lossy().into_owned()),
            sig6(model.loss),
            results.join(", ")
        );
    }
    out
}

/// `losscape: 441 points on cpu in 67.2s (3281 images/s), loss 0.0734126 .. 55.1235 -> DIR`, with
/// the non-finite points and their cause when there are any.
pub fn summary_line(s: &Summary) -> String {
    let m = &s.meta;
    if m.kind == crate::store::record::RunKind::Sharpness {
        return sharpness_lines(s);
    }
    let t = &m.timing;
    let range = match (m.loss_min, m.loss_max) {
        (Some(a), Some(b)) => format!("loss {} .. {}", sig6(a as f64), sig6(b as f64)),
        _ => "no finite loss".into(),
    };
    let data = &m.description.data;
    let rate = if data.tokens {
        let per_sequence = data.sample_shape.iter().product::<i64>() as f64;
        format!("{:.0} sequences/s, {:.0} tokens/s", t.images_per_second, t.images_per_second * per_sequence)
    } else {
        format!("{:.0} images/s", t.images_per_second)
    };
    let mut line = format!(
        "losscape: {} points on {} in {:.1}s ({rate}), {range}",
        t.points, m.description.device, t.eval_seconds
    );
    if let Some(l) = &m.description.line {
        line += &barrier_words(&l.barriers, "α");
    }
    if let Some(c) = &m.description.connect {
        let words = |b: &[crate::store::record::SplitBarrier]| {
            barrier_words(b, "t").trim_start_matches("; barrier ").to_string()
        };
        line += &format!(
            "; {} curve trained {} epochs ({:.1}s, final training loss {}): barrier {}; the line's: {}",
            c.curve,
            c.training.spec.epochs,
            c.training.seconds,
            c.training.epoch_loss.last().map_or("-".into(), |l| sig6(*l)),
            words(&c.curve_barriers),
            words(&c.line_barriers)
        );
    }
    if let Some(n) = m.description.batchnorm.samples {
        line += &format!("; BatchNorm statistics re-estimated at every point on {n} training samples");
    }
    if let Some(sm) = &m.sampling {
        line += &format!(
            "; --rel-error {}: {:.1}% of the samples of exact passes ({} of {} points complete)",
            sm.spec.rel_error,
            100.0 * sm.samples_used as f64 / sm.samples_exact.max(1) as f64,
            sm.complete_points,
            sm.points
        );
    }
    if m.nonfinite_points > 0 {
        line += &format!(
            "; {} of {} grid points are not finite",
            m.nonfinite_points,
            m.description.grid.as_ref().map_or(0, |g| g.shape.iter().product::<u64>())
        );
        if let Some(cause) = m.nonfinite.as_ref().and_then(|n| n.cause.as_ref()) {
            line += &format!(" ({cause}: try --batchnorm recompute)");
        }
    }
    if m.shards.missing_points > 0 {
        line += &format!("; {} points missing (NaN)", m.shards.missing_points);
    }
    line + &format!(" -> {}", display(&s.dir))
}

/// `; barrier: loss 0.412 at α = 0.5, error 0.3 at α = 0.45` (per split when there are several).
fn barrier_words(barriers: &[crate::store::record::SplitBarrier], var: &str) -> String {
    let several = barriers.len() > 1;
    let parts: Vec<String> = barriers
        .iter()
        .filter_map(|b| {
            let at = |name: &str, v: &Option<crate::space::barrier::Barrier>| {
                v.map(|v| format!("{name} {} at {var} = {}", sig6(v.height), (v.at * 1e6).round() / 1e6))
            };
            let both: Vec<String> = [at("loss", &b.loss), at("error", &b.error)].into_iter().flatten().collect();
            match (both.is_empty(), several, b.split) {
                (true, _, _) => None,
                (false, true, Some(s)) => Some(format!("on {s}: {}", both.join(", "))),
                _ => Some(both.join(", ")),
            }
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("; barrier {}", parts.join("; "))
    }
}

/// `losscape: λmax 12.3457 (residual 2.1e-4), trace 345.678 ± 12.3, 61 products in 9.8s -> DIR`.
fn hessian_line(o: &commands::hessian::HessianOutcome) -> String {
    let r = &o.report;
    let mut parts = Vec::new();
    let list = |v: &[crate::store::record::EigenvalueRecord]| {
        v.iter().map(|e| format!("{} (residual {:.1e})", sig6(e.eigenvalue), e.residual)).collect::<Vec<_>>().join(", ")
    };
    if let Some(l) = &r.largest {
        parts.push(format!("largest {}", list(l)));
    }
    if let Some(s) = &r.smallest {
        parts.push(format!("smallest {}", list(s)));
    }
    if let Some(t) = &r.trace {
        parts.push(format!("trace {} ± {}", sig6(t.estimate), sig6(t.stderr)));
    }
    if let Some(layers) = &r.per_layer {
        let top =
            layers.iter().filter_map(|l| l.largest.map(|e| (e.eigenvalue, &l.name))).max_by(|a, b| a.0.total_cmp(&b.0));
        match top {
            Some((v, name)) => parts.push(format!(
                "{} blocks in per_layer.csv (largest block λmax {} in {name})",
                layers.len(),
                sig6(v)
            )),
            None => parts.push(format!("{} blocks in per_layer.csv", layers.len())),
        }
    }
    if r.converged {
        parts.push(format!("{} products in {:.1}s", r.hvp_count, r.seconds));
    } else {
        parts.push(format!("{} products in {:.1}s, NOT converged", r.hvp_count, r.seconds));
    }
    let name = match r.operator {
        crate::options::Operator::Hessian => "Hessian",
        crate::options::Operator::Ggn => "Gauss-Newton matrix",
        crate::options::Operator::EmpiricalFisher => "empirical Fisher",
    };
    format!("losscape: {name} of {} parameters: {} -> {}", r.n_params, parts.join("; "), display(&o.dir))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
