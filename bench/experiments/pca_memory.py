"""Peak memory and time of `losscape trajectory`'s PCA for many large checkpoints (issue: the PCA
works within a memory budget instead of holding all T checkpoints).

Makes T checkpoints (.safetensors) of an architecture along a curved 2-D path plus noise, then runs
`losscape trajectory` on them with each memory budget given, on a 2x2 grid over 8 images (so that
the PCA dominates), and prints the PCA's seconds, its blocks and reads, and the process's peak RSS.

    python bench/experiments/pca_memory.py BIN WORK --arch resnet56 --t 100 --budgets 2048 64
    python bench/experiments/pca_memory.py BIN WORK --arch resnet50 --t 20 --budgets 2048 512
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import arch  # noqa: E402
import cifar_io  # noqa: E402
from export import export  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("work")
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--t", type=int, default=100)
    ap.add_argument("--budgets", type=float, nargs="+", default=[2048])
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more losscape options")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    torch.manual_seed(0)
    model = arch.build(a.arch).eval()
    pt = os.path.join(a.work, f"{a.arch}.pt")
    export(model, pt)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ck = os.path.join(a.work, f"ckpt-{a.arch}-{a.t}")
    if not os.path.isdir(ck):
        os.makedirs(ck)
        g = torch.Generator().manual_seed(1)
        e1 = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in sd.items() if v.is_floating_point()}
        e2 = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in sd.items() if v.is_floating_point()}
        for i in range(a.t):
            s = i / (a.t - 1)
            st = {}
            for k, v in sd.items():
                if v.is_floating_point():
                    st[k] = (v + e1[k] * (3 * np.cos(3 * s)) + e2[k] * np.sin(5 * s)
                             + 0.001 * torch.randn(v.shape, generator=g)).contiguous()
                else:
                    st[k] = v
            save_file(st, os.path.join(ck, f"epoch_{i}.safetensors"))
    size = sum(os.path.getsize(os.path.join(ck, f)) for f in os.listdir(ck)) / 2**20
    rng = np.random.default_rng(0)
    data = os.path.join(a.work, "data")
    cifar_io.write_binary(data, "train", rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8),
                          rng.integers(0, 10, 8).astype(np.uint8))
    params = sum(v.numel() for k, v in model.named_parameters())
    print(f"{a.arch}: {params} parameters, {a.t} checkpoints, {size:.0f} MiB on disk")
    for budget in a.budgets:
        out = os.path.join(a.work, f"run-{a.arch}-{a.t}-{budget:g}")
        t0 = time.perf_counter()
        subprocess.run([a.bin, "trajectory", "--checkpoints", ck, "--arch", pt, "--data", data, "--n", "2",
                        "--pca-memory", str(budget), "--device", "cpu", "--out", out, "--overwrite", "--quiet",
                        "--no-plots", *a.extra], check=True)
        wall = time.perf_counter() - t0
        m = json.load(open(os.path.join(out, "meta.json")))
        p = m["trajectory"]["pca"]
        print(f"  budget {budget:g} MiB: PCA {p['seconds']:.1f} s ({p['blocks']} blocks of {p['checkpoints_per_block']}, "
              f"{p['checkpoint_reads']} checkpoint reads), peak RSS {m['peak_host_rss_mb']:.0f} MiB, whole run {wall:.1f} s, "
              f"top-2 explained {m['trajectory']['explained_variance_ratio_top2']:.4f}")


if __name__ == "__main__":
    main()
