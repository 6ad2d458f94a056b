//! Progress of a grid: an indicatif bar with ETA on a terminal, plain periodic lines otherwise
//! (batch logs of cluster jobs), nothing when quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: usize,
    start: Instant,
    last_line: Instant,
    samples_per_point: usize,
}

/// Seconds between plain lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(30);

impl Progress {
    pub fn new(total: usize, samples_per_point: usize, quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} points [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            b
        });
        let now = Instant::now();
        Progress { bar, lines: !quiet && !tty, total, done: 0, start: now, last_line: now, samples_per_point }
    }

    pub fn point_done(&mut self, loss: f64) {
        self.done += 1;
        let rate = self.images_per_sec();
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.4}, {}", human_rate(rate)));
            b.inc(1);
        } else if self.lines && (self.last_line.elapsed() >= LINE_EVERY || self.done == self.total || self.done == 1) {
            self.last_line = Instant::now();
            let el = self.start.elapsed().as_secs_f64();
            let eta = el / self.done as f64 * (self.total - self.done) as f64;
            eprintln!(
                "losscape: {}/{} points ({:.0}%), last loss {loss:.4}, {}, elapsed {}, ETA {}",
                self.done,
                self.total,
                100.0 * self.done as f64 / self.total as f64,
                human_rate(rate),
                hms(el),
                hms(eta)
            );
        }
    }

    pub fn images_per_sec(&self) -> f64 {
        (self.done * self.samples_per_point) as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

fn human_rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k img/s", r / 1000.0)
    } else {
        format!("{r:.0} img/s")
    }
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
