"""Speed of worst-case sharpness, measured in one run on this machine: images/s of an ascent step
(one forward and backward pass over the data, the gradient with respect to the perturbation) in

 1. eager PyTorch: the best plain loop we could write — the model in eval mode, data resident on
    the device and normalized per batch, parameters written in place at θ + c⊙u each step,
    gradients of the summed loss by backward per batch over the parameters with more than one
    dimension, one sync per step; batch --batch;
 2. the same loop with the module's weights and each batch channels_last (oneDNN's preferred
    layout on the CPU, 1.2-1.3x faster for ResNet-20 there), and torch.compile of the module in
    both layouts (mode default); "best" is the fastest of the four;
 3. losscape: `sharpness --measure worst` on the same TorchScript model and data, its ascent steps
    timed by itself (meta.json's timing: the gradient passes and their seconds; the loss-only
    passes of a measurement are not in them).

Also the seconds per model of the default measures (average and worst, --samples and --steps as
given) in losscape. The loss at θ is compared between losscape and eager PyTorch as a check.

    python bench/sharpness.py --bin target/release/losscape [--models resnet20] [--n 2000]
                              [--steps 10] [--samples 20] [--json OUT.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
import arch  # noqa: E402
import cifar_io  # noqa: E402
from export import export  # noqa: E402


def ascent_loop(net, x_all, y_all, steps, batch, channels_last=False, rho=0.05):
    """images/s of `steps` normalized-gradient ascent steps on u (adaptive scale c = |θ|), and the
    loss at θ; with channels_last, the module's weights and each batch in that memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    params = [p for p in net.parameters() if p.dim() > 1]
    theta = [p.detach().clone() for p in params]
    cs = [t.abs() for t in theta]
    u = [torch.zeros_like(t) for t in theta]
    scale = torch.tensor(1 / (255 * cifar_io.STD)).view(1, 3, 1, 1)
    shift = torch.tensor(-cifar_io.MEAN / cifar_io.STD).view(1, 3, 1, 1)
    n = len(y_all)
    times, base = [], None
    for step in range(steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            for p, t, c, ui in zip(params, theta, cs, u):
                p.copy_(t + c * ui)
        grads = [torch.zeros_like(t) for t in theta]
        total = torch.zeros((), dtype=torch.float64)
        for i in range(0, n, batch):
            xb = (x_all[i:i + batch].float() * scale + shift).contiguous(memory_format=fmt)
            loss = F.cross_entropy(net(xb), y_all[i:i + batch], reduction="sum")
            g = torch.autograd.grad(loss, params)
            for acc, gi in zip(grads, g):
                acc += gi
            total += loss.detach().double()
        gu = [c * g / n for c, g in zip(cs, grads)]
        norm = float(torch.sqrt(sum((t * t).sum() for t in gu))) or 1.0
        u = [ui + (2 * rho / steps) * g / norm for ui, g in zip(u, gu)]
        if step == 0:
            base = float(total) / n
        else:  # the first step warms the executor up
            times.append(time.perf_counter() - t0)
    with torch.no_grad():
        for p, t in zip(params, theta):
            p.copy_(t)
    return n / (sum(times) / len(times)), base


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/losscape")
    ap.add_argument("--models", nargs="+", default=["resnet20"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--work")
    ap.add_argument("--json")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="losscape-sharpness-bench-")
    os.makedirs(work, exist_ok=True)
    imgs, labels = cifar_io.random_images(a.n)
    data_dir = os.path.join(work, "data")
    cifar_io.write_binary(data_dir, "train", imgs, labels)
    x_all = torch.from_numpy(imgs)
    y_all = torch.from_numpy(labels.astype(np.int64))
    rows = []
    for name in a.models:
        torch.manual_seed(0)
        net = arch.build(name).eval()
        pt = os.path.join(work, f"{name}.pt")
        export(net, pt)
        r = {"model": name, "n": a.n, "steps": a.steps, "batch": a.batch}
        r["eager_ips"], r["eager_base_loss"] = ascent_loop(net, x_all, y_all, a.steps, a.batch)
        r["eager_cl_ips"], _ = ascent_loop(net, x_all, y_all, a.steps, a.batch, channels_last=True)
        net.to(memory_format=torch.contiguous_format)
        if not a.no_compile:
            for cl, key in ((False, "compiled_ips"), (True, "compiled_cl_ips")):
                t0 = time.perf_counter()
                torch._dynamo.reset()
                cnet = torch.compile(net)
                r[key], _ = ascent_loop(cnet, x_all, y_all, a.steps, a.batch, channels_last=cl)
                r[key.replace("_ips", "_and_run_s")] = time.perf_counter() - t0
                net.to(memory_format=torch.contiguous_format)
        out = os.path.join(work, f"worst-{name}")
        cmd = [a.bin, "sharpness", "--model", pt, "--data", data_dir, "--measure", "worst", "--radius", "0.05",
               "--steps", str(a.steps), "--batch-size", str(a.batch), "--out", out, "--overwrite", "-q", "--no-plots"]
        subprocess.run(cmd, check=True)
        meta = json.load(open(os.path.join(out, "meta.json")))
        res = json.load(open(os.path.join(out, "sharpness.json")))["models"][0]
        t = meta["timing"]
        assert t["gradients"] == res["results"][0]["details"]["gradients"]
        # Every gradient pass, the first included (the PyTorch loops leave their first step out).
        r["losscape_ips"] = t["gradients"] * a.n / t["gradient_seconds"]
        r["losscape_base_loss"] = res["loss"]
        out = os.path.join(work, f"default-{name}")
        cmd = [a.bin, "sharpness", "--model", pt, "--data", data_dir, "--radius", "0.05", "--samples", str(a.samples),
               "--steps", str(a.steps), "--batch-size", str(a.batch), "--out", out, "--overwrite", "-q", "--no-plots"]
        subprocess.run(cmd, check=True)
        r["default_measures_s"] = json.load(open(os.path.join(out, "meta.json")))["timing"]["worker_seconds"]
        best = max(r["eager_ips"], r["eager_cl_ips"], r.get("compiled_ips", 0.0), r.get("compiled_cl_ips", 0.0))
        r["vs_eager"] = r["losscape_ips"] / r["eager_ips"]
        r["vs_best"] = r["losscape_ips"] / best
        rows.append(r)
    machine = f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    print(f"worst-case ascent steps, images/s ({machine}, {a.n} images, batch {a.batch})")
    print(f"{'model':10} {'eager':>9} {'eager cl':>9} {'compiled':>9} {'comp. cl':>9} {'losscape':>9} {'vs eager':>9} {'vs best':>8} "
          f"{'default s/model':>16} {'loss at θ eager / losscape':>28}")
    for r in rows:
        c = " ".join(f"{r[k]:9.0f}" if k in r else f"{'-':>9}" for k in ("compiled_ips", "compiled_cl_ips"))
        print(f"{r['model']:10} {r['eager_ips']:9.0f} {r['eager_cl_ips']:9.0f} {c} {r['losscape_ips']:9.0f} {r['vs_eager']:8.2f}x "
              f"{r['vs_best']:7.2f}x {r['default_measures_s']:16.1f} "
              f"{r['eager_base_loss']:13.6f} / {r['losscape_base_loss']:.6f}")
    if a.json:
        json.dump({"machine": machine, "torch": torch.__version__, "rows": rows}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
