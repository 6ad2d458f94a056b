"""What `--rel-error` saves, measured in one run on this machine: the same surface of a CIFAR ResNet
evaluated exactly and at E = 0.01 and 0.003 — wall-clock ratio (evaluation seconds), samples used,
and the largest error against the exact surface in units of E.

By default the model is the architecture at its seeded initialization on random CIFAR-shaped
images (no basin, where passes would run to the end). With --train-epochs K it is trained first by
models/train.py for K epochs on the learnable synthetic set of models/synthetic_cifar.py (the
demo's data), and the surface is taken on that set's first --n training images around the trained
model: a basin in the middle, where the loss is small and passes run longer, and steep walls.
--train-n M trains on the first M of them only (default: all n), so that a surface over a whole
training set of 50,000 images can be taken around a model trained in minutes on the CPU.

The saving depends on n: a pass stops once (1 − k/n)·CV²/k ≤ E² (k samples seen, CV the
per-sample losses' coefficient of variation), so with CV ≈ 1 it needs about n/(1 + E²n) samples —
1.4× fewer than n at n = 4,000 and E = 0.01, 6× fewer at n = 50,000.

    python bench/rel_error.py --bin target/release/losscape [--model resnet20] [--n 4000]
                              [--grid 9] [--train-epochs K] [--train-n M] [--json OUT.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
import arch  # noqa: E402
import cifar_io  # noqa: E402
from export import export  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/losscape")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--errors", type=float, nargs="+", default=[0.01, 0.003])
    ap.add_argument("--min-samples", type=int, default=512)
    ap.add_argument("--train-epochs", type=int, default=0, help="train the model first (0: its initialization)")
    ap.add_argument("--train-n", type=int, default=0, help="train on the first M of the n images [all]")
    ap.add_argument("--range", type=float, default=1.0, help="the grid spans [-R, R] on both axes")
    ap.add_argument("--work")
    ap.add_argument("--json")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="losscape-rel-error-bench-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    models_dir = os.path.join(HERE, "..", "models")
    if a.train_epochs > 0:
        subprocess.run([sys.executable, os.path.join(models_dir, "synthetic_cifar.py"), "--out", data,
                        "--train", str(a.n), "--test", "100"], check=True, stdout=subprocess.DEVNULL)
        run_dir = os.path.join(work, "train")
        subprocess.run([sys.executable, os.path.join(models_dir, "train.py"), "--data", data, "--arch", a.model,
                        "--epochs", str(a.train_epochs), "--limit", str(a.train_n or a.n), "--out", run_dir], check=True,
                       stdout=subprocess.DEVNULL)
        model = os.path.join(run_dir, "model.pt")
    else:
        imgs, labels = cifar_io.random_images(a.n)
        cifar_io.write_binary(data, "train", imgs, labels)
        torch.manual_seed(0)
        model = os.path.join(work, f"{a.model}.pt")
        export(arch.build(a.model).eval(), model)
    axis = f"-{a.range}:{a.range}:{a.grid}"

    def run(name, extra):
        out = os.path.join(work, name)
        cmd = [a.bin, "surface", "--model", model, "--data", data, "--limit", str(a.n), f"--x={axis}", f"--y={axis}",
               "--device", "cpu",
               "--out", out, "--overwrite", "-q", "--no-plots"] + extra
        subprocess.run(cmd, check=True)
        meta = json.load(open(os.path.join(out, "meta.json")))
        return out, meta

    exact_dir, exact_meta = run("exact", [])
    exact = np.load(os.path.join(exact_dir, "loss.npy")).astype(np.float64)
    t_exact = exact_meta["timing"]["eval_seconds"]
    rows = []
    for e in a.errors:
        d, m = run(f"e{e}", ["--rel-error", str(e), "--min-samples", str(a.min_samples)])
        est = np.load(os.path.join(d, "loss.npy")).astype(np.float64)
        used = m["sampling"]["samples_used"]
        rows.append({
            "rel_error": e,
            "seconds": m["timing"]["eval_seconds"],
            "speedup": t_exact / m["timing"]["eval_seconds"],
            "samples_used": used,
            "samples_exact": m["sampling"]["samples_exact"],
            "fewer_samples": m["sampling"]["samples_exact"] / used,
            "max_error_in_E": float(np.max(np.abs(est - exact) / np.abs(exact)) / e),
        })
    machine = f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    state = f"trained {a.train_epochs} epochs" if a.train_epochs else "at initialization"
    print(f"--rel-error on a {a.grid}x{a.grid} surface of {a.model} {state} ({machine}, {a.n} images, "
          f"min {a.min_samples})")
    print(f"exact: {t_exact:.1f} s")
    print(f"{'E':>7} {'seconds':>8} {'speed-up':>9} {'fewer samples':>14} {'max |err|/(E·L)':>16}")
    for r in rows:
        print(f"{r['rel_error']:7g} {r['seconds']:8.1f} {r['speedup']:8.2f}x {r['fewer_samples']:13.2f}x "
              f"{r['max_error_in_E']:16.2f}")
    if a.json:
        json.dump({"machine": machine, "torch": torch.__version__, "model": a.model, "train_epochs": a.train_epochs,
                   "train_n": a.train_n or a.n, "grid": a.grid, "n": a.n, "min_samples": a.min_samples,
                   "exact_seconds": t_exact, "rows": rows},
                  open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
