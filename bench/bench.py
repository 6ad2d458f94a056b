"""Speed of loss-landscape evaluation, three ways, measured in one run on this machine:

 1. reference: the way the Li et al. code does it — a torch DataLoader with PIL + ToTensor +
    Normalize transforms, batch 128, a host-to-device copy and `.item()` per batch, weights
    rebuilt from host-side directions at every point;
 2. eager: the best plain PyTorch loop we could write — data resident on the device as uint8,
    normalized per batch, channels_last, cudnn.benchmark, batch 1024 (GPU), inference_mode,
    one sync per point;
 3. losscape: the release binary on the same TorchScript model, data and grid.

Same synthetic CIFAR-shaped data (uint8, 32x32, 10 classes) and same architectures for all three.
Prints images/s, seconds per grid point and ratios; --json writes them for BENCHMARKS.md.

    python bench/bench.py --bin target/release/losscape [--device cuda] [--models resnet56 vgg9]
                          [--n 50000] [--points 9] [--ref-n 10000] [--ref-points 2]
"""
import argparse
import datetime
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


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def directions(net, seed=0):
    """Filter-normalized, biasbn-zeroed random directions (enough for timing)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in net.parameters():
        d = torch.randn(p.shape, generator=g)
        if p.dim() <= 1:
            d.zero_()
        else:
            w = p.detach().cpu()
            d.mul_(w.flatten(1).norm(dim=1).view(-1, *[1] * (p.dim() - 1)) /
                   (d.flatten(1).norm(dim=1).view(-1, *[1] * (p.dim() - 1)) + 1e-10))
        out.append(d)
    return out


def grid_points(k):
    xs = np.linspace(-1, 1, k)
    return [(a, b) for b in xs for a in xs]


def reference_loop(name, imgs, labels, dev, npoints):
    """As the Li et al. code evaluates: DataLoader + PIL transforms, batch 128, .item() per batch."""
    import torchvision.transforms as T
    from PIL import Image

    class DS(torch.utils.data.Dataset):
        tf = T.Compose([T.ToTensor(), T.Normalize(cifar_io.MEAN.tolist(), cifar_io.STD.tolist())])

        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(imgs[i].transpose(1, 2, 0))), int(labels[i])

    loader = torch.utils.data.DataLoader(DS(), batch_size=128, shuffle=False, num_workers=2)
    torch.manual_seed(0)
    net = arch.build(name).to(dev).eval()
    weights = [p.data.clone() for p in net.parameters()]
    dx, dy = directions(net, 1), directions(net, 2)
    crit = torch.nn.CrossEntropyLoss()
    times = []
    for a, b in grid_points(3)[:npoints + 1]:
        t0 = time.perf_counter()
        for p, w, d1, d2 in zip(net.parameters(), weights, dx, dy):
            p.data = w + (d1 * a + d2 * b).type(type(w)).to(dev)
        total, correct = 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(dev), y.to(dev)
                out = net(x)
                total += crit(out, y).item() * x.size(0)
                correct += out.max(1)[1].eq(y).sum().item()
        times.append(time.perf_counter() - t0)
    t = sum(times[1:]) / (len(times) - 1)  # the first point warms the workers and cuDNN up
    return len(labels) / t, t


def eager_loop(name, imgs, labels, dev, npoints, batch):
    """Resident uint8 data, channels_last, cudnn.benchmark, large batch, one sync per point."""
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    cl = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    net = arch.build(name).to(dev).eval().to(memory_format=cl)
    x_all = torch.from_numpy(imgs).to(dev)
    y_all = torch.from_numpy(labels.astype(np.int64)).to(dev)
    scale = torch.tensor(1 / (255 * cifar_io.STD), device=dev).view(1, 3, 1, 1)
    shift = torch.tensor(-cifar_io.MEAN / cifar_io.STD, device=dev).view(1, 3, 1, 1)
    params = [p for p in net.parameters()]
    theta = [p.detach().clone() for p in params]
    dx = [d.to(dev) for d in directions(net, 1)]
    dy = [d.to(dev) for d in directions(net, 2)]
    n = len(labels)
    pts = grid_points(3)[:npoints + 1]
    times = []
    with torch.inference_mode():
        for a, b in pts:
            sync(dev)
            t0 = time.perf_counter()
            for p, t, d1, d2 in zip(params, theta, dx, dy):
                p.copy_(t + d1 * a + d2 * b)
            loss = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            for i in range(0, n, batch):
                xb = (x_all[i:i + batch].float() * scale + shift).contiguous(memory_format=cl)
                out = net(xb)
                loss += F.cross_entropy(out, y_all[i:i + batch], reduction="sum").double()
                correct += (out.argmax(1) == y_all[i:i + batch]).sum()
            _ = (loss / n).item(), correct.item()
            times.append(time.perf_counter() - t0)
    t = sum(times[1:]) / (len(times) - 1)
    return n / t, t


def losscape_run(binary, model_pt, data_dir, dev, points, limit, out, batch=None):
    k = int(round(points ** 0.5))
    cmd = [binary, "surface", "--model", model_pt, "--data", data_dir, "--limit", str(limit),
           f"--x=-1:1:{k}", f"--y=-1:1:{k}", "--device", dev, "--out", out, "--overwrite", "--quiet"]
    if batch:
        cmd += ["--batch-size", str(batch)]
    subprocess.run(cmd, check=True)
    m = json.load(open(os.path.join(out, "meta.json")))
    return m["timing"]["images_per_second"], m["timing"]["seconds_per_point"], m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/losscape")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["resnet56", "vgg9"])
    ap.add_argument("--n", type=int, default=0, help="images per grid point (eager, losscape) [50000 on CUDA, 2000 on CPU]")
    ap.add_argument("--points", type=int, default=9, help="grid points timed (a square k x k grid)")
    ap.add_argument("--ref-n", type=int, default=0, help="images per point for the slow reference loop [10000 on CUDA, 1000 on CPU]")
    ap.add_argument("--ref-points", type=int, default=2)
    ap.add_argument("--eager-batch", type=int, default=0, help="default 1024 on CUDA, 64 on CPU")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--work", help="keep data and models here (default: a temporary directory)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    eager_batch = a.eager_batch or (1024 if cuda else 64)
    a.n = a.n or (50000 if cuda else 2000)
    a.ref_n = a.ref_n or (10000 if cuda else 1000)
    work = a.work or tempfile.mkdtemp(prefix="losscape-bench-")
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(a.n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=a.n).astype(np.uint8)
    data_dir = os.path.join(work, "data")
    cifar_io.write_binary(data_dir, "train", imgs, labels)
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    rows = []
    for name in a.models:
        torch.manual_seed(0)
        pt = os.path.join(work, f"{name}.pt")
        export(arch.build(name), pt)
        r = {"model": name}
        if not a.skip_reference:
            rn = min(a.ref_n, a.n)
            r["reference_ips"], _ = reference_loop(name, imgs[:rn], labels[:rn], dev, a.ref_points)
        r["eager_ips"], _ = eager_loop(name, imgs, labels, dev, a.points, eager_batch)
        r["losscape_ips"], r["losscape_s_per_point"], meta = losscape_run(
            a.bin, pt, data_dir, a.device, a.points, a.n, os.path.join(work, f"run-{name}"))
        r["losscape_device"] = meta["device"]
        r["losscape_batch"] = meta["batch_size"]
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(f"\nmachine: {machine}; torch {torch.__version__}; {a.n} images/point, {a.points} points; "
          f"fp32 (PyTorch default TF32 for cuDNN convolutions)")
    print(f"{'model':10} {'reference':>12} {'eager':>12} {'losscape':>12} {'s/point':>9} {'vs ref':>8} {'vs eager':>9}")
    for r in rows:
        ref = r.get("reference_ips")
        print(f"{r['model']:10} {ref or float('nan'):12.0f} {r['eager_ips']:12.0f} {r['losscape_ips']:12.0f} "
              f"{r['losscape_s_per_point']:9.3f} {(r['losscape_ips'] / ref) if ref else float('nan'):8.2f}x "
              f"{r['losscape_ips'] / r['eager_ips']:8.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "machine": machine, "device": a.device,
                       "torch": torch.__version__, "n": a.n, "points": a.points, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
