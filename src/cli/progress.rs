//! What the command line shows while it works: a progress bar with ETA on a terminal, plain lines
//! every 30 s otherwise (batch logs of cluster jobs), nothing when quiet; and the library's notes
//! and warnings (the `log` records it emits), one line each.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::sweep::Observer;

/// Seconds between plain lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(30);

pub struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: usize,
    start: Instant,
    last_line: Instant,
    samples_per_point: usize,
    /// Hessian-vector products done, and about the most a point takes (0: no curvature).
    products: usize,
    max_products: usize,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            quiet,
            bar: None,
            lines: false,
            total: 0,
            done: 0,
            start: now,
            last_line: now,
            samples_per_point: 0,
            products: 0,
            max_products: 0,
        }
    }

    fn images_per_sec(&self) -> f64 {
        (self.done * self.samples_per_point) as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Seconds left: the remaining points at the cost per point so far. With curvature, whose
    /// products dominate and vary from point to point, also the most it can take: every
    /// remaining point at the largest number of products, at the seconds per product so far.
    fn eta(&self) -> (f64, Option<f64>) {
        let el = self.start.elapsed().as_secs_f64();
        let left = self.total.saturating_sub(self.done) as f64;
        let eta = el / self.done.max(1) as f64 * left;
        let most = (self.max_products > 0 && self.products > 0)
            .then(|| el / self.products as f64 * left * self.max_products as f64);
        (eta, most.map(|m| m.max(eta)))
    }

    /// The message beside the bar or in the line: the rate, and the products with curvature.
    fn work(&self, rate: f64) -> String {
        if self.max_products == 0 {
            return human_rate(rate);
        }
        let per = self.products as f64 / self.done.max(1) as f64;
        let el = self.start.elapsed().as_secs_f64();
        format!(
            "{} Hessian products ({per:.0} per point, {:.2}s each)",
            self.products,
            el / self.products.max(1) as f64
        )
    }
}

impl Observer for Progress {
    fn start(&mut self, points: usize, samples: usize, max_products: usize) {
        let tty = std::io::stderr().is_terminal();
        self.total = points;
        self.samples_per_point = samples;
        self.max_products = max_products;
        self.start = Instant::now();
        self.last_line = self.start;
        self.lines = !self.quiet && !tty;
        self.bar = (!self.quiet && tty).then(|| {
            let b = ProgressBar::new(points as u64);
            b.set_style(
                // Curvature runs say their own ETA (from the products), in the message.
                ProgressStyle::with_template(if max_products > 0 {
                    "{bar:40.cyan/blue} {pos}/{len} points [{elapsed_precise}] {msg}"
                } else {
                    "{bar:40.cyan/blue} {pos}/{len} points [{elapsed_precise} < {eta_precise}] {msg}"
                })
                .expect("valid template"),
            );
            b
        });
    }

    fn point(&mut self, loss: f64, products: usize) {
        self.done += 1;
        self.products += products;
        let rate = self.images_per_sec();
        let (eta, most) = self.eta();
        let eta_text = match most {
            Some(m) => format!("ETA {} (at most {})", hms(eta), hms(m)),
            None => format!("ETA {}", hms(eta)),
        };
        if let Some(b) = &self.bar {
            match most {
                Some(_) => b.set_message(format!("loss {loss:.4}, {}, {eta_text}", self.work(rate))),
                None => b.set_message(format!("loss {loss:.4}, {}", self.work(rate))),
            }
            b.inc(1);
        } else if self.lines && (self.last_line.elapsed() >= LINE_EVERY || self.done == self.total || self.done == 1) {
            self.last_line = Instant::now();
            eprintln!(
                "losscape: {}/{} points ({:.0}%), last loss {loss:.4}, {}, elapsed {}, {eta_text}",
                self.done,
                self.total,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                self.work(rate),
                hms(self.start.elapsed().as_secs_f64()),
            );
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

fn human_rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k images/s", r / 1000.0)
    } else {
        format!("{r:.0} images/s")
    }
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The library's log records on stderr: warnings as `losscape: warning: ...`, notes as
/// `losscape: ...`; only warnings when quiet, and not the warnings whose target is
/// [`crate::error::ADVICE`] (advice about the inputs that a quiet user has chosen not to hear).
struct Logger;

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        let advice = r.target().strip_prefix(crate::error::ADVICE);
        if !self.enabled(r.metadata()) || (advice.is_some() && QUIET.load(std::sync::atomic::Ordering::Relaxed)) {
            return;
        }
        let mut text = r.args().to_string().replace('\n', " ");
        // Advice about named settings: their flags.
        if let Some(names) = advice.and_then(|a| a.strip_prefix("::")) {
            let flags: Vec<&str> = names
                .split(',')
                .filter_map(|n| crate::error::Setting::ALL.iter().find(|s| s.name() == n).map(|s| s.flag()))
                .collect();
            if !flags.is_empty() {
                text += &format!(" ({})", flags.join(", "));
            }
        }
        match r.level() {
            log::Level::Error | log::Level::Warn => eprintln!("losscape: warning: {text}"),
            _ => eprintln!("losscape: {text}"),
        }
    }

    fn flush(&self) {}
}

/// Install the logger (once per process).
pub fn init_log(quiet: bool) {
    static LOGGER: Logger = Logger;
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if quiet { log::LevelFilter::Warn } else { log::LevelFilter::Info });
}

/// x with 6 significant digits, in plain notation where it reads well.
pub fn sig6(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{x:.5e}");
    }
    format!("{x:.*}", (5 - mag).max(0) as usize)
}

/// What the command line shows while a curve trains: a bar per epoch with the running loss on a
/// terminal, one line per epoch otherwise, nothing when quiet.
pub struct TrainProgress {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl TrainProgress {
    pub fn new(quiet: bool) -> TrainProgress {
        TrainProgress { quiet, bar: None }
    }
}

impl crate::engine::connect::TrainObserver for TrainProgress {
    fn epoch(&mut self, e: usize, epochs: usize, batches: usize) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let b = ProgressBar::new(batches as u64);
        b.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} {bar:30.cyan/blue} {pos}/{len} minibatches [{elapsed_precise}] {msg}",
            )
            .expect("valid template"),
        );
        b.set_prefix(format!("{}/{epochs}", e + 1));
        self.bar = Some(b);
    }

    fn batch(&mut self, running: f64) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("loss {}", sig6(running)));
        }
    }

    fn epoch_done(&mut self, e: usize, epochs: usize, ep: &crate::engine::connect::Epoch) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "losscape: curve epoch {}/{epochs}: training loss {}, lr {}, {:.1}s",
                e + 1,
                sig6(ep.loss),
                sig6(ep.lr),
                ep.seconds
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_significant_digits() {
        assert_eq!(sig6(2.302581234), "2.30258");
        assert_eq!(sig6(0.0734125678), "0.0734126");
        assert_eq!(sig6(55.12345678), "55.1235");
        assert_eq!(sig6(123456.7), "123457");
        assert_eq!(sig6(1234567.0), "1.23457e6");
        assert_eq!(sig6(0.00001234567), "1.23457e-5");
        assert_eq!(sig6(0.0), "0");
        assert_eq!(sig6(f64::NAN), "NaN");
        assert_eq!(sig6(-0.5), "-0.500000");
    }

    #[test]
    fn clock_and_rate_formats() {
        assert_eq!(hms(3725.4), "1:02:05");
        assert_eq!(human_rate(1530.0), "1.5k images/s");
        assert_eq!(human_rate(812.2), "812 images/s");
    }
}
