//! losscape: loss landscapes of neural networks (Li et al., NeurIPS 2018) on libtorch.
//!
//! Layers, each depending only on those below it (ARCHITECTURE.md):
//!
//! - [`cli`]: the command line — clap arguments, typed plans, wording of errors, progress.
//! - [`commands`]: surface, directions, line, plane, trajectory, merge, plot.
//! - [`engine`]: a model and its data on a device, moved to grid points and evaluated; the sweep.
//! - [`inputs`] (model, checkpoints, data), [`space`] (grids, directions, PCA, shards),
//!   [`store`] (the run directory and its typed record), [`plot`] (pictures from saved files).
//! - [`options`], [`error`], [`ffi`]: the vocabulary, the errors, the libtorch shim.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod formats;
pub mod inputs;
pub mod options;
pub mod plot;
pub mod space;
pub mod store;

pub use error::{Error, Result};

/// The dependency rule of ARCHITECTURE.md, checked on the source: each layer refers only to the
/// layers below it.
#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn allowed(layer: &str) -> &'static [&'static str] {
        match layer {
            "error" | "options" => &["error", "options"],
            "formats" => &["error"],
            "ffi" => &["error"],
            "space" => &["error", "options"],
            "inputs" => &["error", "options", "ffi", "formats"],
            "store" => &["error", "options", "space", "formats"],
            "engine" => &["error", "options", "ffi", "formats", "inputs", "space", "store"],
            "plot" => &["error", "options", "formats", "space", "store"],
            "commands" => &["error", "options", "ffi", "formats", "inputs", "space", "store", "engine", "plot"],
            "cli" => &["error", "options", "ffi", "formats", "inputs", "space", "store", "engine", "plot", "commands"],
            other => panic!("unknown layer {other}"),
        }
    }

    /// The layers a source text refers to (`crate::x`).
    fn uses(text: &str) -> BTreeSet<String> {
        text.match_indices("crate::")
            .map(|(i, _)| text[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
            .collect()
    }

    #[test]
    fn each_layer_uses_only_the_layers_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        for entry in std::fs::read_dir(&src).unwrap() {
            let p = entry.unwrap().path();
            let (layer, files): (String, Vec<std::path::PathBuf>) = if p.is_dir() {
                let files = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|f| f.extension().is_some_and(|e| e == "rs"))
                    .collect();
                (p.file_name().unwrap().to_string_lossy().into_owned(), files)
            } else if p.extension().is_some_and(|e| e == "rs") {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                if stem == "lib" || stem == "main" {
                    continue;
                }
                (stem, vec![p.clone()])
            } else {
                continue;
            };
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for used in uses(&text) {
                    if used != layer {
                        assert!(
                            allowed(&layer).contains(&used.as_str()),
                            "{} ({layer}) uses crate::{used}, which is not below it",
                            f.display()
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} files checked");
    }

    #[test]
    fn the_rule_itself_catches_an_upward_use() {
        assert!(uses("use crate::engine::sweep; crate::store::npy::write").contains("engine"));
        assert!(!allowed("store").contains(&"engine"));
        assert!(!allowed("plot").contains(&"engine"));
    }

    /// ARCHITECTURE.md's table of which layer may use which is the table the test enforces.
    #[test]
    fn the_table_in_architecture_md_is_the_rule() {
        let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
        let layers = ["cli", "commands", "engine", "plot", "store", "inputs", "space", "formats", "ffi"];
        let mut rows = 0;
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
            let layer = cells[0].trim_matches('`');
            let mut documented: BTreeSet<&str> = if cells[1] == "everything below it" {
                layers.iter().copied().filter(|l| *l != layer).chain(["options", "error"]).collect()
            } else {
                cells[1].split(',').map(str::trim).collect()
            };
            documented.insert(layer);
            let mut code: BTreeSet<&str> = allowed(layer).iter().copied().collect();
            code.insert(layer);
            assert_eq!(documented, code, "ARCHITECTURE.md's row for {layer} differs from the rule");
            rows += 1;
        }
        assert_eq!(rows, layers.len(), "ARCHITECTURE.md's table has {rows} rows");
    }
}
