//! Curves between two models through a trained bend θ_bend (Garipov et al., 2018), as the weights
//! of θ_A, θ_bend and θ_B at t ∈ [0, 1]:
//!
//! - quadratic Bezier: θ(t) = (1 − t)²·θ_A + 2t(1 − t)·θ_bend + t²·θ_B;
//! - polygonal chain: θ(t) = θ_A + 2t·(θ_bend − θ_A) for t ≤ ½, then θ_bend + (2t − 1)·(θ_B − θ_bend).
//!
//! The weight of θ_bend is also ∂θ(t)/∂θ_bend, the factor by which a gradient at θ(t) reaches it.
//! At t = 0 the weights are exactly (1, 0, 0) and at t = 1 exactly (0, 0, 1): the curve's ends are
//! the two models bit for bit. The learning-rate schedule of curve training is here too.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Setting};

/// The family of curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CurveKind {
    Bezier,
    Polychain,
}

impl fmt::Display for CurveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CurveKind::Bezier => "bezier",
            CurveKind::Polychain => "polychain",
        })
    }
}

impl CurveKind {
    /// (w_A, w_bend, w_B) with θ(t) = w_A·θ_A + w_bend·θ_bend + w_B·θ_B; t is clamped to [0, 1].
    pub fn weights(self, t: f64) -> [f64; 3] {
        let t = t.clamp(0.0, 1.0);
        match self {
            CurveKind::Bezier => [(1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t],
            CurveKind::Polychain if t <= 0.5 => [1.0 - 2.0 * t, 2.0 * t, 0.0],
            CurveKind::Polychain => [0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0],
        }
    }

    /// What θ(t) is, for meta.json.
    pub fn formula(self) -> &'static str {
        match self {
            CurveKind::Bezier => "theta(t) = (1 - t)^2 theta_A + 2 t (1 - t) theta_bend + t^2 theta_B",
            CurveKind::Polychain => {
                "theta(t) = theta_A + 2 t (theta_bend - theta_A) for t <= 1/2, then theta_bend + (2 t - 1) (theta_B - theta_bend)"
            }
        }
    }
}

/// The learning rate of epoch `e` (0-based) of `epochs`, Garipov et al.'s schedule: `lr` for the
/// first half, then a linear decay to lr/100 at 90% of the epochs, lr/100 after that.
pub fn learning_rate(lr: f64, e: usize, epochs: usize) -> f64 {
    let f = e as f64 / epochs.max(1) as f64;
    let factor = if f <= 0.5 {
        1.0
    } else if f <= 0.9 {
        1.0 - (f - 0.5) / 0.4 * 0.99
    } else {
        0.01
    };
    lr * factor
}

/// Data augmentation of the training minibatches of a curve (`--augment flip,crop`, images only):
/// each sample flipped left-right with probability ½, and/or cropped back to its size at a uniform
/// offset from the image padded by 4 pixels of black (torchvision's `RandomHorizontalFlip` and
/// `RandomCrop(size, padding=4)`, as Garipov et al. train). The draws come from the epoch's seeded
/// generator after its shuffle and t draws, so a resumed run repeats them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Augment {
    pub flip: bool,
    pub crop: bool,
}

impl Augment {
    /// Padding of the random crop, in pixels.
    pub const PAD: i64 = 4;

    pub fn any(&self) -> bool {
        self.flip || self.crop
    }
}

impl std::str::FromStr for Augment {
    type Err = Error;
    /// A comma list of `flip` and `crop` (any order, repeats allowed), or `none`.
    fn from_str(s: &str) -> Result<Augment> {
        let mut a = Augment::default();
        for part in s.split(',').map(str::trim) {
            match part {
                "flip" => a.flip = true,
                "crop" => a.crop = true,
                "none" if s.trim() == "none" => {}
                _ => {
                    return Err(Error::setting(
                        Setting::Augment,
                        format!("{s:?}"),
                        format!("{part:?} is not an augmentation: give flip, crop, both as flip,crop, or none"),
                    ))
                }
            }
        }
        Ok(a)
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [(self.flip, "flip"), (self.crop, "crop")].iter().filter(|p| p.0).map(|p| p.1).collect();
        f.write_str(if parts.is_empty() { "none".to_string() } else { parts.join(",") }.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ends_are_the_models_exactly_and_the_middle_is_the_bends_share() {
        for k in [CurveKind::Bezier, CurveKind::Polychain] {
            assert_eq!(k.weights(0.0), [1.0, 0.0, 0.0], "{k}");
            assert_eq!(k.weights(1.0), [0.0, 0.0, 1.0], "{k}");
        }
        assert_eq!(CurveKind::Bezier.weights(0.5), [0.25, 0.5, 0.25]);
        assert_eq!(CurveKind::Polychain.weights(0.5), [0.0, 1.0, 0.0], "the chain passes through the bend");
        assert_eq!(CurveKind::Polychain.weights(0.25), [0.5, 0.5, 0.0]);
        assert_eq!(CurveKind::Polychain.weights(0.75), [0.0, 0.5, 0.5]);
    }

    #[test]
    fn the_schedule_holds_then_decays_to_a_hundredth() {
        let lr = |e| learning_rate(0.1, e, 10);
        assert_eq!((lr(0), lr(5)), (0.1, 0.1));
        assert!((lr(7) - 0.1 * (1.0 - 0.5 * 0.99)).abs() < 1e-12, "{}", lr(7));
        assert!((lr(9) - 0.001).abs() < 1e-15 && (learning_rate(0.1, 0, 1) - 0.1).abs() < 1e-15);
    }

    proptest! {
        /// The weights sum to 1 (an affine combination), are ≥ 0, and w_bend is the derivative of
        /// θ(t) with respect to θ_bend (a finite difference in θ_bend, exact for these polynomials).
        #[test]
        fn weights_are_an_affine_combination(t in 0.0f64..=1.0, bezier in any::<bool>()) {
            let k = if bezier { CurveKind::Bezier } else { CurveKind::Polychain };
            let w = k.weights(t);
            prop_assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            prop_assert!(w.iter().all(|&x| x >= 0.0));
            let theta = |bend: f64| w[0] * 1.0 + w[1] * bend + w[2] * -2.0;
            prop_assert!(((theta(3.0) - theta(1.0)) / 2.0 - w[1]).abs() < 1e-12);
        }
    }

    #[test]
    fn augmentations_parse_in_any_order_and_name_a_wrong_one() {
        let both = Augment { flip: true, crop: true };
        for text in ["flip,crop", "crop,flip", " flip , crop ", "flip,flip,crop"] {
            assert_eq!(text.parse::<Augment>().unwrap(), both, "{text}");
        }
        assert_eq!("none".parse::<Augment>().unwrap(), Augment::default());
        assert_eq!("crop".parse::<Augment>().unwrap(), Augment { flip: false, crop: true });
        for bad in ["", "flip,", "rotate", "flip,none", "FLIP"] {
            let e = bad.parse::<Augment>().unwrap_err().to_string();
            assert!(e.contains("augment") && !e.contains('\n'), "{bad}: {e}");
        }
        let e = "flip,rotate".parse::<Augment>().unwrap_err().to_string();
        assert!(e.contains("\"rotate\""), "{e}");
    }

    proptest::proptest! {
        /// Display and parse are inverse; any list of the two words parses to the set it names.
        #[test]
        fn augmentations_round_trip(words in proptest::collection::vec(proptest::sample::select(vec!["flip", "crop"]), 1..5)) {
            let a: Augment = words.join(",").parse().unwrap();
            proptest::prop_assert_eq!(a, Augment { flip: words.contains(&"flip"), crop: words.contains(&"crop") });
            proptest::prop_assert_eq!(a.to_string().parse::<Augment>().unwrap(), a);
        }
    }
}
