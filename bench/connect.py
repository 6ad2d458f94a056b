"""Speed of mode-connectivity curve training, measured in one run on this machine: images/s of an
epoch of Bezier-curve training (Garipov et al.) between two models, in

 1. eager PyTorch: the best plain loop we could write — data resident and normalized per batch,
    for each minibatch θ(t) = (1−t)²θ_A + 2t(1−t)θ_bend + t²θ_B written into the module's
    parameters in place, a forward in training mode, the gradient of the mean loss by
    autograd.grad over the parameters, times 2t(1−t) into the bend, torch.optim.SGD (momentum,
    weight decay) on the bend; the same shuffle and t draws as losscape documents;
 2. the same loop with the module's weights and each batch channels_last (oneDNN's preferred
    layout on the CPU, 1.2-1.3x faster for ResNet-20 there), and torch.compile of the module in
    both layouts (mode default); "best" is the fastest of the four;
 3. losscape: `connect --curve bezier` on the same TorchScript model and data, its epochs timed by
    itself (train/progress.json).

Each times the epochs after the first (which warms everything up). The first epoch's mean loss is
compared between eager PyTorch and losscape as a check that they do the same work.

    python bench/connect.py --bin target/release/losscape [--models resnet20] [--n 2000]
                            [--epochs 3] [--batch 128] [--json OUT.json]
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

LR, MOMENTUM, WD, SEED = 0.015, 0.9, 5e-4, 0


def lr_at(e, epochs):
    f = e / epochs
    return LR * (1.0 if f <= 0.5 else (1.0 - (f - 0.5) / 0.4 * 0.99 if f <= 0.9 else 0.01))


def train_loop(net, a, b, x_all, y_all, epochs, batch, channels_last=False):
    """images/s of the epochs after the first, and the first epoch's mean minibatch loss; with
    channels_last, the module's weights and each batch in that memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    params = list(net.parameters())
    pa = [t.detach().clone() for t in a]
    pb = [t.detach().clone() for t in b]
    bend = [((u + v) / 2).clone().requires_grad_(True) for u, v in zip(pa, pb)]
    opt = torch.optim.SGD(bend, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    scale = torch.tensor(1 / (255 * cifar_io.STD)).view(1, 3, 1, 1)
    shift = torch.tensor(-cifar_io.MEAN / cifar_io.STD).view(1, 3, 1, 1)
    n = len(y_all)
    nb = (n + batch - 1) // batch
    net.train()
    times, first = [], None
    for e in range(epochs):
        t0 = time.perf_counter()
        torch.manual_seed(SEED * 2 ** 20 + e)
        order = torch.randperm(n)
        ts = torch.rand(nb, dtype=torch.float64).tolist()
        for g in opt.param_groups:
            g["lr"] = lr_at(e, epochs)
        total = 0.0
        for j in range(nb):
            t = ts[j]
            wa, wm, wb = (1 - t) ** 2, 2 * t * (1 - t), t * t
            with torch.no_grad():
                for p, u, m, v in zip(params, pa, bend, pb):
                    p.copy_(wa * u + wm * m + wb * v)
            idx = order[j * batch:(j + 1) * batch]
            xb = (x_all[idx].float() * scale + shift).contiguous(memory_format=fmt)
            loss = F.cross_entropy(net(xb), y_all[idx])
            grads = torch.autograd.grad(loss, params)
            for m, gr in zip(bend, grads):
                m.grad = wm * gr
            opt.step()
            total += float(loss.detach())
        if e == 0:
            first = total / nb
        else:
            times.append(time.perf_counter() - t0)
    return n / (sum(times) / len(times)), first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/losscape")
    ap.add_argument("--models", nargs="+", default=["resnet20"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--work")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.epochs < 2:
        ap.error("--epochs must be at least 2 (the first is a warm-up)")
    work = a.work or tempfile.mkdtemp(prefix="losscape-connect-bench-")
    os.makedirs(work, exist_ok=True)
    imgs, labels = cifar_io.random_images(a.n)
    data_dir = os.path.join(work, "data")
    cifar_io.write_binary(data_dir, "train", imgs, labels)
    x_all = torch.from_numpy(imgs)
    y_all = torch.from_numpy(labels.astype(np.int64))
    rows = []
    for name in a.models:
        ends = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            ends.append(arch.build(name).eval())
        pa, pb = (os.path.join(work, f"{name}-{k}.pt") for k in "ab")
        export(ends[0], pa)
        export(ends[1], pb)
        a_params = [p.detach() for p in ends[0].parameters()]
        b_params = [p.detach() for p in ends[1].parameters()]
        r = {"model": name, "n": a.n, "epochs": a.epochs, "batch": a.batch}
        torch.manual_seed(0)
        net = arch.build(name)
        r["eager_ips"], r["eager_first_loss"] = train_loop(net, a_params, b_params, x_all, y_all, a.epochs, a.batch)
        r["eager_cl_ips"], _ = train_loop(arch.build(name), a_params, b_params, x_all, y_all, a.epochs, a.batch,
                                          channels_last=True)
        if not a.no_compile:
            for cl, key in ((False, "compiled_ips"), (True, "compiled_cl_ips")):
                t0 = time.perf_counter()
                torch._dynamo.reset()
                cnet = torch.compile(arch.build(name))
                r[key], _ = train_loop(cnet, a_params, b_params, x_all, y_all, a.epochs, a.batch, channels_last=cl)
                r[key.replace("_ips", "_and_run_s")] = time.perf_counter() - t0
        out = os.path.join(work, f"connect-{name}")
        cmd = [a.bin, "connect", "--from", pa, "--to", pb, "--data", data_dir, "--epochs", str(a.epochs),
               "--batch-size", str(a.batch), "--lr", str(LR), "--momentum", str(MOMENTUM), "--weight-decay", str(WD),
               "--seed", str(SEED), "--points", "2", "--bn-samples", "256", "--device", "cpu", "--out", out,
               "--overwrite", "-q", "--no-plots"]
        subprocess.run(cmd, check=True)
        p = json.load(open(os.path.join(out, "train", "progress.json")))
        r["losscape_ips"] = a.n / (sum(p["seconds"][1:]) / len(p["seconds"][1:]))
        r["losscape_first_loss"] = p["epoch_loss"][0]
        best = max(r["eager_ips"], r["eager_cl_ips"], r.get("compiled_ips", 0.0), r.get("compiled_cl_ips", 0.0))
        r["vs_eager"] = r["losscape_ips"] / r["eager_ips"]
        r["vs_best"] = r["losscape_ips"] / best
        rows.append(r)
    machine = f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    print(f"Bezier curve training, images/s ({machine}, {a.n} images, batch {a.batch}, epochs 2..{a.epochs} timed)")
    print(f"{'model':10} {'eager':>9} {'eager cl':>9} {'compiled':>9} {'comp. cl':>9} {'losscape':>9} {'vs eager':>9} {'vs best':>8} "
          f"{'epoch-1 loss eager / losscape':>31}")
    for r in rows:
        c = " ".join(f"{r[k]:9.0f}" if k in r else f"{'-':>9}" for k in ("compiled_ips", "compiled_cl_ips"))
        print(f"{r['model']:10} {r['eager_ips']:9.0f} {r['eager_cl_ips']:9.0f} {c} {r['losscape_ips']:9.0f} {r['vs_eager']:8.2f}x "
              f"{r['vs_best']:7.2f}x {r['eager_first_loss']:15.6f} / {r['losscape_first_loss']:.6f}")
    if a.json:
        json.dump({"machine": machine, "torch": torch.__version__, "rows": rows}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
