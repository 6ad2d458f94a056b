"""CPU: losscape with and without oneDNN layouts (--onednn), in alternating pairs of runs, so that
the machine's slow spells hit both alike; prints each pair's images/s and the median ratio.

    python bench/experiments/onednn_ab.py target/release/losscape WORKDIR [PAIRS]

WORKDIR is a `bench/bench.py --work` directory (data/, resnet20.pt, resnet56.pt)."""
import json
import os
import subprocess
import sys

import numpy as np

binary, work = sys.argv[1], sys.argv[2]
pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
for model in ("resnet20", "resnet56"):
    ratios, on_all, off_all = [], [], []
    for i in range(pairs):
        ips = {}
        for flag in (("true", "false") if i % 2 == 0 else ("false", "true")):
            out = os.path.join(work, f"ab-{model}-{flag}")
            subprocess.run([binary, "surface", "--model", os.path.join(work, f"{model}.pt"), "--data",
                            os.path.join(work, "data"), "--limit", "1000", "--x=-1:1:3", "--y=-1:1:3", "--device",
                            "cpu", "--out", out, "--overwrite", "--quiet", "--no-plots", "--onednn", flag], check=True)
            m = json.load(open(os.path.join(out, "meta.json")))
            assert m["batchnorm_folding"]["onednn"] == (flag == "true"), m["batchnorm_folding"]
            ips[flag] = m["timing"]["images_per_second"]
        on_all.append(ips["true"])
        off_all.append(ips["false"])
        ratios.append(ips["true"] / ips["false"])
        print(f"{model} pair {i}: oneDNN {ips['true']:.0f}, plain {ips['false']:.0f} images/s, {ratios[-1]:.2f}x", flush=True)
    print(f"{model}: median oneDNN {np.median(on_all):.0f}, plain {np.median(off_all):.0f} images/s; "
          f"ratio median {np.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x over {pairs} pairs)")
