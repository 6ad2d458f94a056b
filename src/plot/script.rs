//! `figures.py` (`losscape plot RUN --script`): a short matplotlib program, written beside the
//! run's arrays, that loads them (the .npy files and meta.json) and draws the same figures as
//! losscape's own pictures — the same contour levels, colour range, scale, path and marked points,
//! written into it as constants — for researchers who restyle figures for a paper. With
//! `--report FILE` it also writes the values each figure plots, as JSON (the tests compare them
//! with the arrays).

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::critical::{CriticalPoint, Kind};
use super::{panel, title, Look, PlotOptions, RunData, Scale};
use crate::error::Result;
use crate::store::record::RunKind;

/// A value as a Python literal (JSON numbers, strings, lists and booleans are Python too, once
/// `true`/`false`/`null` are spelled the Python way).
fn py(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Bool(true) => "True".into(),
        serde_json::Value::Bool(false) => "False".into(),
        serde_json::Value::Null => "None".into(),
        serde_json::Value::Array(a) => format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

const HEAD: &str = r##"#!/usr/bin/env python3
"""The figures of the losscape run in this directory, drawn by matplotlib from its arrays.

Written by `losscape plot RUN --script`. It draws what losscape's own pictures show, with the same
contour levels, colour range, scale, path and marked points (the constants below), for restyling
a figure for a paper: change anything below. Run it where it lies, next to the run's files:

    python figures.py [OUT_DIR] [--report FILE]

The figures go to OUT_DIR (default: ./matplotlib) as PNG and PDF; --report writes the values each
figure plots as JSON.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

RUN = Path(__file__).resolve().parent
META = json.loads((RUN / "meta.json").read_text())
"##;

const TWO_D: &str = r##"

def grid():
    """The grid and its loss, NaN and inf masked (drawn as holes)."""
    x, y = np.load(RUN / "x.npy"), np.load(RUN / "y.npy")
    loss = np.ma.masked_invalid(np.load(RUN / "loss.npy").astype(float))
    return x, y, loss


def norm():
    return LogNorm(VMIN, VMAX) if SCALE == "log" else Normalize(VMIN, VMAX)


def frame(fig, ax, x, y, mappable):
    """Axes cropped to the grid, titles, and a colour bar labelled at the levels."""
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    if EQUAL:
        ax.set_aspect("equal")
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(YLABEL)
    ax.set_title(TITLE, fontsize="medium")
    bar = fig.colorbar(mappable, ax=ax, pad=0.02)
    bar.set_label(ZLABEL)
    bar.set_ticks(LEVELS)
    bar.set_ticklabels([f"{v:.4g}" for v in LEVELS])


def overlays(ax):
    """Named points, the path and the critical points; returns what was drawn."""
    drawn = {"marks": [], "critical": [], "path": None}
    for name, (a, b) in MARKS.items():
        ax.plot(a, b, "+", color="black", ms=12, mew=2)
        ax.annotate(name, (a, b), xytext=(6, 6), textcoords="offset points")
        drawn["marks"].append([name, a, b])
    if PATH is not None:
        p = np.load(RUN / PATH)
        (line,) = ax.plot(p[:, 0], p[:, 1], "-o", color="#e4003a", ms=3, lw=1.8, label=PATH_NAME)
        drawn["path"] = line.get_xydata().tolist()
    style = {"minimum": ("o", "white"), "saddle": ("D", "#ff9f1c"), "maximum": ("^", "#e4003a")}
    for kind, a, b in CRITICAL:
        shape, colour = style[kind]
        ax.plot(a, b, shape, ms=8, mfc=colour, mec="black", label=f"local {kind}" if kind != "saddle" else kind)
        drawn["critical"].append([kind, a, b])
    if PATH is not None or CRITICAL:
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize="small", loc="best")
    return drawn


def contour(out, report):
    x, y, loss = grid()
    fig, ax = plt.subplots(figsize=SIZE, layout="constrained")
    cs = ax.contour(x, y, loss, levels=LEVELS, norm=norm(), cmap="viridis", linewidths=1.2)
    ax.clabel(cs, fmt=lambda v: f"{v:.3g}", fontsize="small")
    frame(fig, ax, x, y, cs)
    report["contour"] = {"levels": [float(v) for v in cs.levels], "norm": [cs.norm.vmin, cs.norm.vmax],
                         **overlays(ax)}
    save(fig, out, "contour")


def heatmap(out, report):
    """Filled contours: the bands between VMIN, the levels and VMAX (--style cells: pcolormesh)."""
    x, y, loss = grid()
    fig, ax = plt.subplots(figsize=SIZE, layout="constrained")
    z = np.ma.clip(loss, VMIN, VMAX)
    if STYLE == "cells":
        filled = ax.pcolormesh(x, y, z, norm=norm(), cmap="viridis", shading="nearest")
    else:
        filled = ax.contourf(x, y, z, levels=[VMIN, *LEVELS, VMAX], norm=norm(), cmap="viridis")
        ax.contour(x, y, loss, levels=LEVELS, colors="white", linewidths=0.5, alpha=0.6)
    ax.set_facecolor("#c8c8c8")  # holes
    frame(fig, ax, x, y, filled)
    report["heatmap"] = {"z": np.ma.filled(z.astype(float), np.nan).tolist(), "norm": [filled.norm.vmin, filled.norm.vmax],
                         **overlays(ax)}
    save(fig, out, "heatmap")


def surface3d(out, report):
    """The surface in the pictures' scale (log10 of the loss for a log scale), clipped to the range."""
    x, y, loss = grid()
    t = np.ma.clip(loss, VMIN, VMAX)
    t = np.ma.log10(t) if SCALE == "log" else t
    fig = plt.figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot(projection="3d")
    xx, yy = np.meshgrid(x, y)
    surf = ax.plot_surface(xx, yy, np.ma.filled(t, np.nan), cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(YLABEL)
    ax.set_zlabel(("log10 " if SCALE == "log" else "") + "loss")
    ax.set_title(TITLE, fontsize="medium")
    fig.colorbar(surf, ax=ax, shrink=0.6, label=("log10 " if SCALE == "log" else "") + "loss")
    report["surface3d"] = {"z": np.ma.filled(t.astype(float), np.nan).tolist()}
    save(fig, out, "surface3d")


FIGURES = [contour, heatmap, surface3d]
"##;

const ONE_D: &str = r##"

# The Okabe-Ito palette: one colour per split; loss solid, accuracy dashed on the right axis.
COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"]


def splits():
    """(name, loss, accuracy) per split of the run (its loss.npy alone for a run of one split)."""
    if META.get("splits"):
        return [(s["split"], np.load(RUN / s["loss"]), np.load(RUN / s["acc"])) for s in META["splits"]]
    return [("loss", np.load(RUN / "loss.npy"), np.load(RUN / "acc.npy"))]


def curve(out, report):
    x = np.load(RUN / "x.npy")
    fig, ax = plt.subplots(figsize=SIZE, layout="constrained")
    right = ax.twinx()
    lines = []
    for k, (name, loss, acc) in enumerate(splits()):
        colour = COLOURS[k % len(COLOURS)]
        (l,) = ax.plot(x, loss, "-", marker="o", ms=2.5, color=colour, label=f"{name} loss")
        (a,) = right.plot(x, acc, "--", color=colour, label=f"{name} accuracy")
        lines.append({"name": name, "loss": l.get_ydata().astype(float).tolist(),
                      "acc": a.get_ydata().astype(float).tolist()})
    if SCALE == "log":
        ax.set_yscale("log")
    ax.set_ylim(VMIN / 1.15, VMAX * 1.15)
    right.set_ylim(-0.02, 1.02)
    for name, at in MARKS.items():
        ax.axvline(at, color="0.6", lw=0.8)
        ax.annotate(name, (at, 1), xycoords=("data", "axes fraction"), xytext=(4, -12), textcoords="offset points")
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(ZLABEL)
    right.set_ylabel("top-1 accuracy")
    ax.set_title(TITLE, fontsize="medium")
    handles = ax.get_lines() + right.get_lines()
    ax.legend(handles, [h.get_label() for h in handles], fontsize="small", loc="best")
    report["curve"] = {"x": x.astype(float).tolist(), "lines": lines, "ylim": list(ax.get_ylim())}
    save(fig, out, "curve")


FIGURES = [curve]
"##;

const TAIL: &str = r##"

def save(fig, out, name):
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=DPI)
    fig.savefig(out / f"{name}.pdf")
    plt.close(fig)


def main(argv):
    report_file = None
    if "--report" in argv:
        i = argv.index("--report")
        report_file = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    out = Path(argv[0]) if argv else RUN / "matplotlib"
    report = {"scale": SCALE, "vmin": VMIN, "vmax": VMAX, "levels": LEVELS}
    for draw in FIGURES:
        draw(out, report)
    if report_file is not None:
        # Holes (NaN) as null, so that any JSON reader takes the report.
        report_file.write_text(json.dumps(report).replace("NaN", "null"))
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
"##;

/// The constants block: what losscape's pictures of `d` used.
fn constants(d: &RunData, look: Option<&Look>, crit: &[CriticalPoint], o: &PlotOptions) -> String {
    let fallback = Look { scale: Scale::Linear, lo: 0.0, hi: 1.0, levels: vec![] };
    let l = look.unwrap_or(&fallback);
    let (w, h) = o.inches();
    let marks: Vec<String> = if d.y.is_some() {
        d.marks.iter().map(|(n, c)| format!("{}: ({}, {})", py(&json!(n)), c[0], c[1])).collect()
    } else {
        let ends = matches!(d.meta.kind, RunKind::Line | RunKind::Connect);
        let named: Vec<(&str, f64)> = if ends { vec![("A", 0.0), ("B", 1.0)] } else { vec![("center", 0.0)] };
        named.iter().map(|(n, a)| format!("{}: {a}", py(&json!(n)))).collect()
    };
    let kind = |k: Kind| match k {
        Kind::Minimum => "minimum",
        Kind::Maximum => "maximum",
        Kind::Saddle => "saddle",
    };
    let critical: Vec<String> =
        crit.iter().map(|p| format!("({}, {}, {})", py(&json!(kind(p.kind))), p.coords[0], p.coords[1])).collect();
    let path = if d.path.is_some() { py(&json!("path.npy")) } else { "None".into() };
    let mut s = String::from("\n# What losscape's pictures of this run used.\n");
    s += &format!("TITLE = {}\n", py(&json!(title(d))));
    s += &format!("SCALE = {}  # colours, heights and contour spacing: \"log\" or \"linear\"\n", py(&json!(l.scale)));
    s += &format!("VMIN, VMAX = {}, {}  # the colour range, in loss units\n", json!(l.lo), json!(l.hi));
    s += &format!("LEVELS = {}  # the contour levels, in loss units\n", py(&json!(l.levels)));
    s += &format!("XLABEL = {}\nYLABEL = {}\n", py(&json!(d.x_label)), py(&json!(d.y_label)));
    s += &format!("ZLABEL = {}\n", py(&json!(l.scale.axis_title())));
    s += &format!("EQUAL = {}  # equal units on both axes\n", if d.equal_aspect(o) { "True" } else { "False" });
    s += &format!("MARKS = {{{}}}  # named points\n", marks.join(", "));
    s += &format!("CRITICAL = [{}]  # critical_points.json: kind, alpha, beta\n", critical.join(", "));
    s += &format!("PATH = {path}\nPATH_NAME = {}\n", py(&json!(panel::path_name(d))));
    s += &format!("STYLE = {}\n", py(&json!(if o.style == super::Style::Cells { "cells" } else { "bands" })));
    s += &format!("SIZE = ({w}, {h})  # inches\nDPI = {}\n", o.dpi);
    s
}

/// Write `figures.py` into the run directory of `d`.
pub(super) fn write(d: &RunData, look: Option<&Look>, crit: &[CriticalPoint], o: &PlotOptions) -> Result<PathBuf> {
    let out = d.dir.join(crate::store::files::FIGURES_SCRIPT);
    let body = if d.y.is_some() { TWO_D } else { ONE_D };
    let text = format!("{HEAD}{}{body}{TAIL}", constants(d, look, crit, o));
    crate::store::atomic::write_atomic(&out, |w| w.write_all(text.as_bytes()))?;
    Ok(out)
}
