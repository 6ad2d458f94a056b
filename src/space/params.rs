//! Which parameters an analysis is over, by name: a filter of anchored regular expressions on the
//! names `named_parameters` gives, and the partition of a set of parameters into blocks (one per
//! tensor, or one per module) for per-layer curvature.

use regex::Regex;

use crate::error::{Error, Result, Setting};
pub use crate::options::PerLayer;

/// Anchored regular expressions: a name is kept when one of them matches all of it. No patterns
/// keep every name.
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    patterns: Vec<(String, Regex)>,
}

impl NameFilter {
    /// Compile the patterns (each anchored at both ends). A pattern that is not a regular
    /// expression is refused with the first line of the reason.
    pub fn parse(patterns: &[String]) -> Result<NameFilter> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            if p.is_empty() {
                return Err(Error::setting(Setting::Params, "''", "an empty pattern matches no parameter name"));
            }
            let re = Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                let why = e.to_string();
                let line = why
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("error:"))
                    .or_else(|| why.lines().map(str::trim).find(|l| !l.is_empty()))
                    .unwrap_or("invalid")
                    .trim_start_matches("error:")
                    .trim()
                    .to_string();
                Error::setting(Setting::Params, p, format!("not a regular expression: {line}"))
            })?;
            out.push((p.clone(), re));
        }
        Ok(NameFilter { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as given.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Whether the filter keeps `name`.
    pub fn keeps(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|(_, re)| re.is_match(name))
    }

    /// The indices of `names` the filter keeps; every pattern must keep at least one of them (a
    /// pattern that matches nothing is a typo, not an empty set), else the first such pattern is
    /// named.
    pub fn select(&self, names: &[&str]) -> Result<Vec<usize>> {
        if let Some((p, _)) = self.patterns.iter().find(|(_, re)| !names.iter().any(|n| re.is_match(n))) {
            let some: Vec<&str> = names.iter().take(4).copied().collect();
            return Err(Error::setting(
                Setting::Params,
                p,
                format!(
                    "matches no parameter name of the set ({} names, e.g. {}{})",
                    names.len(),
                    some.join(", "),
                    if names.len() > some.len() { ", ..." } else { "" }
                ),
            ));
        }
        Ok((0..names.len()).filter(|&i| self.keeps(names[i])).collect())
    }
}

/// A block of a parameter set: its name (the tensor's, or the module's) and the positions of its
/// tensors in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub name: String,
    pub members: Vec<usize>,
}

/// The module a parameter belongs to: its name without the last component (`layer1.0.conv1` for
/// `layer1.0.conv1.weight`; the name itself when it has no dot).
pub fn module_of(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(m, _)| m)
}

/// The set's tensors (names in model order) in blocks: one per tensor, or one per module (its
/// tensors wherever they are in the order, the block placed at its first tensor).
pub fn blocks(names: &[&str], by: PerLayer) -> Vec<Block> {
    match by {
        PerLayer::Tensor => {
            names.iter().enumerate().map(|(i, n)| Block { name: n.to_string(), members: vec![i] }).collect()
        }
        PerLayer::Module => {
            let mut out: Vec<Block> = Vec::new();
            for (i, n) in names.iter().enumerate() {
                let m = module_of(n);
                match out.iter_mut().find(|b| b.name == m) {
                    Some(b) => b.members.push(i),
                    None => out.push(Block { name: m.to_string(), members: vec![i] }),
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(p: &[&str]) -> NameFilter {
        NameFilter::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_are_anchored_and_any_one_keeps() {
        let names = ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.bn1.weight", "fc.weight", "fc.bias"];
        assert_eq!(f(&["conv1.weight"]).select(&names).unwrap(), vec![0]);
        assert_eq!(f(&["layer1\\..*"]).select(&names).unwrap(), vec![1, 2]);
        assert_eq!(f(&["fc\\..*", "conv1\\.weight"]).select(&names).unwrap(), vec![0, 3, 4]);
        assert_eq!(f(&[]).select(&names).unwrap(), vec![0, 1, 2, 3, 4]);
        // Not a substring search: "conv1" alone matches no whole name.
        let e = f(&["conv1"]).select(&names).unwrap_err();
        assert!(matches!(&e, Error::Setting { setting: Setting::Params, value, .. } if value == "conv1"), "{e}");
        assert!(e.to_string().contains("e.g. conv1.weight"), "{e}");
        // One pattern of two matching nothing is refused too (a typo).
        assert!(f(&["fc\\..*", "fcc.*"]).select(&names).is_err());
    }

    #[test]
    fn bad_patterns_are_one_line_errors() {
        for bad in ["(", "[a-", "a{2,1}", ""] {
            let e = NameFilter::parse(&[bad.to_string()]).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, Error::Setting { setting: Setting::Params, .. }), "{text}");
            assert!(!text.contains('\n'), "{bad}: {text}");
        }
    }

    #[test]
    fn blocks_by_tensor_and_by_module() {
        let names =
            ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "fc.weight", "fc.bias", "scale"];
        let t = blocks(&names, PerLayer::Tensor);
        assert_eq!(t.len(), 7);
        assert_eq!((t[3].name.as_str(), t[3].members.clone()), ("layer1.0.conv1.weight", vec![3]));
        let m = blocks(&names, PerLayer::Module);
        let got: Vec<(&str, Vec<usize>)> = m.iter().map(|b| (b.name.as_str(), b.members.clone())).collect();
        assert_eq!(
            got,
            vec![
                ("conv1", vec![0]),
                ("bn1", vec![1, 2]),
                ("layer1.0.conv1", vec![3]),
                ("fc", vec![4, 5]),
                ("scale", vec![6])
            ]
        );
    }

    proptest! {
        /// Any pattern list is compiled or refused in one line naming --params; a compiled filter
        /// selects only names that one of its patterns matches in full.
        #[test]
        fn any_pattern_compiles_or_is_refused_cleanly(p in "\\PC{0,12}", names in proptest::collection::vec("[a-z0-9.]{1,10}", 1..6)) {
            match NameFilter::parse(std::slice::from_ref(&p)) {
                Ok(filter) => {
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    if let Ok(kept) = filter.select(&refs) {
                        let re = Regex::new(&format!("^(?:{p})$")).unwrap();
                        prop_assert!(!kept.is_empty());
                        for i in kept {
                            prop_assert!(re.is_match(&names[i]));
                        }
                    }
                }
                Err(e) => {
                    let named = matches!(e, Error::Setting { setting: Setting::Params, .. });
                    prop_assert!(named, "{}", e);
                    prop_assert!(!e.to_string().contains('\n'));
                }
            }
        }
    }
}
