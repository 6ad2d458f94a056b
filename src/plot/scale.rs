//! The colour and height scale of a picture, decided once per figure and shared by every picture
//! of it (contour PNG, heatmap, 3-D PNG, HTML page, side-by-side figure): a log scale when the
//! finite loss range spans more than a decade, linear otherwise, unless `--log` / `--linear` say.
//! Levels are spaced evenly in the scale's units (log-spaced in loss for a log scale), and tick
//! labels are written without "-0.0" and with as many decimals as the tick step needs.

use serde::Serialize;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleChoice {
    /// Log when the finite range spans more than a decade (`DECADE`), linear otherwise.
    #[default]
    Auto,
    Log,
    Linear,
}

/// The scale a figure is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    Linear,
    Log,
}

/// The ratio hi / lo above which the automatic choice is a log scale.
pub const DECADE: f64 = 10.0;

impl Scale {
    /// The scale for a finite loss range [lo, hi] (lo: the smallest finite value; for a log scale
    /// the smallest positive one is used by the caller).
    pub fn choose(choice: ScaleChoice, lo: f64, hi: f64) -> Scale {
        match choice {
            ScaleChoice::Log => Scale::Log,
            ScaleChoice::Linear => Scale::Linear,
            ScaleChoice::Auto => {
                if lo > 0.0 && hi.is_finite() && hi / lo > DECADE {
                    Scale::Log
                } else {
                    Scale::Linear
                }
            }
        }
    }

    /// The plotted value of a loss (log10 for a log scale); None where it cannot be drawn.
    pub fn apply(self, v: f64) -> Option<f64> {
        match self {
            _ if !v.is_finite() => None,
            Scale::Linear => Some(v),
            Scale::Log if v > 0.0 => Some(v.log10()),
            Scale::Log => None,
        }
    }

    /// A plotted value back in loss units.
    pub fn invert(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log => 10f64.powf(t),
        }
    }

    /// `n` contour levels strictly between lo and hi (loss units), evenly spaced in the scale.
    pub fn levels(self, lo: f64, hi: f64, n: usize) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.apply(lo), self.apply(hi)) else { return vec![] };
        if n == 0 || b <= a {
            return vec![];
        }
        (1..=n).map(|k| self.invert(a + (b - a) * k as f64 / (n + 1) as f64)).collect()
    }

    /// The axis title of the loss in this scale.
    pub fn axis_title(self) -> &'static str {
        match self {
            Scale::Linear => "loss",
            Scale::Log => "loss (log scale)",
        }
    }
}

/// A tick label for `v` on an axis whose ticks are `step` apart: the decimals the step needs, the
/// same for every tick, and never "-0.0".
pub fn tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let decimals = if step > 0.0 && step.is_finite() { (-step.log10().floor()).clamp(0.0, 8.0) as usize } else { 3 };
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        format!("{:.decimals$}", 0.0)
    } else {
        s
    }
}

/// A loss value in a short form for labels: 3 significant digits, no exponent between 1e-3 and
/// 1e5.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - a.log10().floor() as i64).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Labels of increasing values (contour levels) in the short form, with as many significant
/// digits (3 to 6) as it takes for neighbours to read differently.
pub fn distinct(values: &[f64]) -> Vec<String> {
    let fmt = |v: f64, digits: i64| -> String {
        if !v.is_finite() || v == 0.0 {
            return short(v);
        }
        let a = v.abs();
        if !(1e-3..1e5).contains(&a) {
            return format!("{v:.prec$e}", prec = (digits - 1) as usize);
        }
        let decimals = (digits - 1 - a.log10().floor() as i64).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    for digits in 3..=6 {
        let out: Vec<String> = values.iter().map(|&v| fmt(v, digits)).collect();
        if out.windows(2).all(|w| w[0] != w[1]) {
            return out;
        }
    }
    values.iter().map(|&v| fmt(v, 6)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_decade_decides_the_scale() {
        assert_eq!(Scale::choose(ScaleChoice::Auto, 0.07, 55.0), Scale::Log);
        assert_eq!(Scale::choose(ScaleChoice::Auto, 0.5, 4.9), Scale::Linear);
        assert_eq!(Scale::choose(ScaleChoice::Auto, 1.0, 10.0), Scale::Linear);
        assert_eq!(Scale::choose(ScaleChoice::Auto, 1.0, 10.01), Scale::Log);
        assert_eq!(Scale::choose(ScaleChoice::Auto, -1.0, 50.0), Scale::Linear, "no log below zero");
        assert_eq!(Scale::choose(ScaleChoice::Auto, 0.0, 50.0), Scale::Linear);
        assert_eq!(Scale::choose(ScaleChoice::Linear, 0.07, 55.0), Scale::Linear);
        assert_eq!(Scale::choose(ScaleChoice::Log, 0.5, 0.6), Scale::Log);
    }

    #[test]
    fn log_levels_are_evenly_spaced_in_log10() {
        let l = Scale::Log.levels(0.01, 100.0, 3);
        let want = [0.1, 1.0, 10.0];
        for (a, b) in l.iter().zip(want) {
            assert!((a - b).abs() < 1e-12 * b, "{l:?}");
        }
        let l = Scale::Linear.levels(0.0, 4.0, 3);
        assert_eq!(l, vec![1.0, 2.0, 3.0]);
        assert!(Scale::Log.levels(-1.0, 3.0, 4).is_empty());
        assert!(Scale::Linear.levels(2.0, 2.0, 4).is_empty());
    }

    #[test]
    fn ticks_never_read_minus_zero() {
        assert_eq!(tick(-0.0, 0.1), "0.0");
        assert_eq!(tick(-1e-17, 0.5), "0.0");
        assert_eq!(tick(-1e-17, 1.0), "0");
        assert_eq!(tick(0.2, 0.1), "0.2");
        assert_eq!(tick(-0.25, 0.05), "-0.25");
        assert_eq!(tick(3.0, 1.0), "3");
        assert_eq!(tick(1500.0, 500.0), "1500");
        assert_eq!(short(0.0531), "0.0531");
        assert_eq!(short(12.345), "12.3");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(3e-5), "3.00e-5");
    }

    #[test]
    fn close_levels_get_the_digits_that_tell_them_apart() {
        assert_eq!(distinct(&[2.2874, 2.2926, 2.2976]), vec!["2.287", "2.293", "2.298"]);
        assert_eq!(distinct(&[0.1, 0.2, 0.5]), vec!["0.1", "0.2", "0.5"]);
        assert_eq!(distinct(&[1.0, 10.0]), vec!["1", "10"]);
    }

    proptest! {
        #[test]
        fn levels_lie_inside_and_increase(lo in 1e-4f64..10.0, f in 1.01f64..1e4, n in 0usize..40) {
            let hi = lo * f;
            for s in [Scale::Linear, Scale::Log] {
                let l = s.levels(lo, hi, n);
                prop_assert_eq!(l.len(), n);
                prop_assert!(l.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(l.iter().all(|v| *v > lo && *v < hi));
            }
        }

        #[test]
        fn tick_labels_parse_back_close(v in -1e4f64..1e4, k in -4i32..4) {
            let step = 10f64.powi(k);
            let t = tick(v, step);
            let back: f64 = t.parse().unwrap();
            prop_assert!((back - v).abs() <= step / 2.0 + 1e-9, "{} {} {}", v, step, t);
            prop_assert!(!t.starts_with("-0") || t.starts_with("-0."));
            prop_assert!(!t.starts_with('-') || !t.trim_start_matches(['-', '0', '.']).is_empty(), "{}", t);
        }
    }
}
