"""Speed of loss-landscape evaluation, measured in one run on this machine:

 1. reference: the way the Li et al. code does it — a torch DataLoader with PIL + ToTensor +
    Normalize transforms, batch 128, a host-to-device copy and `.item()` per batch, weights
    rebuilt from host-side directions at every point;
 2. eager: the best plain PyTorch loop we could write — data resident on the device as uint8,
    normalized per batch, channels_last, cudnn.benchmark, inference_mode, one sync per point; the
    fastest of batch 1024 and 4096 (GPU), and for bf16/fp16 of autocast and a cast model;
    "eager+fold" is the same with BatchNorm folded into the convolutions (not in the issue's
    recipe; shown so that the lever losscape pulls is visible in plain PyTorch too);
 2b. compiled: the eager loop's module through torch.compile (modes given by --compile-modes;
    parameters written in place per point, no recompilation between points: checked), the
    compile time reported apart from the timed points;
 3. losscape: the release binary on the same TorchScript model, data and grid, with BatchNorm
    folding (its default) and without (`--fold-batchnorm false`), and on CPU with plain tensors
    instead of oneDNN ones (`--onednn false`); with --recompute also with BatchNorm statistics
    re-estimated at every point (`--batchnorm recompute`), its extra forward passes timed apart.

Same synthetic CIFAR-shaped data (uint8, 32x32, 10 classes) and same architectures for all three.
Prints images/s, seconds per grid point and ratios; --json writes them for BENCHMARKS.md.

Token model (`tinylm` in --models, on by default): a causal transformer LM of models/arch.py
(--lm-d, --lm-layers, --lm-heads, --lm-t, --lm-vocab; F.scaled_dot_product_attention) on random
token ids (int32 X.npy [N, T], next-token labels y.npy with -100 at each row's last position),
tokens/s (N·T per second, ignored positions included) of
 4. eager: the module in eval mode, inference_mode, data resident on the device, parameters
    written in place per point, token-level cross-entropy (ignore_index=-100) summed in float64 over
    the set and divided by the counted tokens, one sync per point; the fastest of --lm-batch sizes
    (and for bf16/fp16 of autocast and a cast model);
 5. losscape: `surface` on the same module traced to TorchScript, the same data and grid.
The loss at the grid's centre (same parameters in both) is compared as a check.

    python bench/bench.py --bin target/release/losscape [--device cuda] [--models resnet56 vgg9 tinylm]
                          [--n 50000] [--points 9] [--ref-n 10000] [--ref-points 2] [--repeat R]
                          [--lm-n SEQUENCES] [--lm-points 9] [--lm-batch B ...]
"""
import argparse
import copy
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


def eager_loop(name, imgs, labels, dev, npoints, batch, precision="tf32", cast=False, fold=False):
    """Resident uint8 data, channels_last, cudnn.benchmark, large batch, one sync per point;
    bf16/fp16 through autocast (PyTorch's recommended route) or, with `cast`, by casting the model
    and inputs; TF32 as PyTorch's flags say. With `fold`, BatchNorm is folded into the convolutions
    (torch.fx fusion) and each point is formed in the folded weights, which are affine in the
    unfolded ones when BatchNorm stays put: W'(θ+αδ+βη) = W'(θ) + α(W'(θ+δ) − W'(θ)) + β(...)."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    torch.manual_seed(0)
    cl = torch.channels_last
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    net = arch.build(name).eval()
    dx = directions(net, 1)
    dy = directions(net, 2)
    if fold:
        from torch.fx.experimental.optimization import fuse

        def folded_at(a, b):
            m = copy.deepcopy(net)
            with torch.no_grad():
                for p, d1, d2 in zip(m.parameters(), dx, dy):
                    p.add_(d1 * a + d2 * b)
            return fuse(m)
        f0, f1, f2 = folded_at(0, 0), folded_at(1, 0), folded_at(0, 1)
        dx = [p1.detach() - p0.detach() for p0, p1 in zip(f0.parameters(), f1.parameters())]
        dy = [p2.detach() - p0.detach() for p0, p2 in zip(f0.parameters(), f2.parameters())]
        net = f0
    net = net.to(dev).to(memory_format=cl)
    if cast and amp is not None:
        net = net.to(amp)
    x_all = torch.from_numpy(imgs).to(dev)
    y_all = torch.from_numpy(labels.astype(np.int64)).to(dev)
    scale = torch.tensor(1 / (255 * cifar_io.STD), device=dev).view(1, 3, 1, 1)
    shift = torch.tensor(-cifar_io.MEAN / cifar_io.STD, device=dev).view(1, 3, 1, 1)
    params = [p for p in net.parameters()]
    theta = [p.detach().float().clone() for p in params]
    dx = [d.to(dev) for d in dx]
    dy = [d.to(dev) for d in dy]
    in_kind = amp if (cast and amp is not None) else torch.float32
    n = len(labels)
    pts = grid_points(3)[:npoints + 1]
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    use_amp = amp is not None and not cast
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=use_amp):
        for a, b in pts:
            sync(dev)
            t0 = time.perf_counter()
            for p, t, d1, d2 in zip(params, theta, dx, dy):
                p.copy_(t + d1 * a + d2 * b)
            loss = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            for i in range(0, n, batch):
                xb = (x_all[i:i + batch].float() * scale + shift).contiguous(memory_format=cl).to(in_kind)
                out = net(xb).float()
                loss += F.cross_entropy(out, y_all[i:i + batch], reduction="sum").double()
                correct += (out.argmax(1) == y_all[i:i + batch]).sum()
            _ = (loss / n).item(), correct.item()
            times.append(time.perf_counter() - t0)
    t = sum(times[1:]) / (len(times) - 1)
    mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return n / t, t, mem


def compiled_loop(name, imgs, labels, dev, npoints, batch, mode, precision="tf32"):
    """The eager loop's network through torch.compile(mode=...): parameters written in place per
    point (the compiled graph reads them as inputs: no freezing), one sync per point. Returns
    (images/s over the timed points, compile seconds, graphs compiled after the first point)."""
    import torch._dynamo
    torch._dynamo.reset()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    torch.manual_seed(0)
    cl = torch.channels_last
    net = arch.build(name).eval().to(dev).to(memory_format=cl)
    dx, dy = directions(net, 1), directions(net, 2)
    params = list(net.parameters())
    theta = [p.detach().clone() for p in params]
    dx, dy = [d.to(dev) for d in dx], [d.to(dev) for d in dy]
    cnet = torch.compile(net, mode=mode)
    x_all = torch.from_numpy(imgs).to(dev)
    y_all = torch.from_numpy(labels.astype(np.int64)).to(dev)
    scale = torch.tensor(1 / (255 * cifar_io.STD), device=dev).view(1, 3, 1, 1)
    shift = torch.tensor(-cifar_io.MEAN / cifar_io.STD, device=dev).view(1, 3, 1, 1)
    n = len(labels)

    def point(a, b):
        with torch.no_grad():
            for p, t, d1, d2 in zip(params, theta, dx, dy):
                p.copy_(t + d1 * a + d2 * b)
            loss = torch.zeros((), dtype=torch.float64, device=dev)
            for i in range(0, n, batch):
                xb = (x_all[i:i + batch].float() * scale + shift).contiguous(memory_format=cl)
                out = cnet(xb).float()
                loss += F.cross_entropy(out, y_all[i:i + batch], reduction="sum").double()
            return (loss / n).item()

    t0 = time.perf_counter()
    first = point(0.0, 0.0)  # compiles every batch shape (full and ragged tail)
    point(0.0, 0.0)
    compile_s = time.perf_counter() - t0
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    times = []
    for a, b in grid_points(3)[:npoints]:
        sync(dev)
        t1 = time.perf_counter()
        point(a, b)
        times.append(time.perf_counter() - t1)
    recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
    moved = point(1.0, 1.0) != first
    if not moved:
        raise SystemExit(f"torch.compile({mode}) did not see the parameters move")
    t = sum(times) / len(times)
    return n / t, compile_s - 2 * t, recompiled


def best_eager(name, imgs, labels, dev, npoints, batches, precision, fold=False):
    """The fastest of the eager variants (batch sizes; autocast or a cast model for bf16/fp16):
    (images/s, its label, every variant's images/s, peak allocated MiB of the best)."""
    variants = {}
    for b in batches:
        for cast in ([False, True] if precision in ("bf16", "fp16") else [False]):
            label = f"batch {b}" + (", cast" if cast else (", autocast" if precision in ("bf16", "fp16") else ""))
            ips, _, mem = eager_loop(name, imgs, labels, dev, npoints, b, precision, cast=cast, fold=fold)
            variants[label] = (ips, mem)
    label = max(variants, key=lambda k: variants[k][0])
    return variants[label][0], label, {k: v[0] for k, v in variants.items()}, variants[label][1]


def gpu_memory_of(proc):
    """Largest device memory nvidia-smi reports for a running process (MiB), polled."""
    peak = 0
    while proc.poll() is None:
        try:
            q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5).stdout
            for line in q.splitlines():
                pid, used = [v.strip() for v in line.split(",")]
                if int(pid) == proc.pid:
                    peak = max(peak, int(used))
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        time.sleep(0.2)
    return peak or None


def losscape_run(binary, model_pt, data_dir, dev, points, limit, out, precision, extra=()):
    """Run the binary; (its meta.json, wall seconds, peak GPU MiB as nvidia-smi saw it)."""
    k = int(round(points ** 0.5))
    cmd = [binary, "surface", "--model", model_pt, "--data", data_dir, "--limit", str(limit),
           f"--x=-1:1:{k}", f"--y=-1:1:{k}", "--device", dev, "--precision", precision,
           "--out", out, "--overwrite", "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    mem = gpu_memory_of(proc) if dev.startswith("cuda") else None
    if proc.wait() != 0:
        raise SystemExit(f"losscape failed: {' '.join(cmd)}")
    return json.load(open(os.path.join(out, "meta.json"))), time.perf_counter() - t0, mem


LM_MODELS = ("tinylm",)


def lm_config(a):
    return dict(vocab=a.lm_vocab, d=a.lm_d, layers=a.lm_layers, heads=a.lm_heads, max_len=a.lm_t, sdpa=True)


def lm_build(cfg):
    torch.manual_seed(0)
    return arch.TinyLM(**cfg).eval()


def lm_data(out_dir, n, t, vocab, seed=0):
    """Random token ids int32 [n, t] and next-token labels int64 (-100 at each row's end), written
    as out_dir/X.npy, y.npy."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, t)).astype(np.int32)
    y = np.full((n, t), -100, dtype=np.int64)
    y[:, :-1] = x[:, 1:]
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "X.npy"), x)
    np.save(os.path.join(out_dir, "y.npy"), y)
    return x, y


def lm_eager_loop(cfg, x, y, dev, points, batch, precision="tf32", cast=False):
    """Eager PyTorch over the LM: tokens/s over the timed points (after one warm-up point), and the
    loss at (0, 0) when the grid has it."""
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    net = lm_build(cfg)
    dx, dy = directions(net, 1), directions(net, 2)
    net = net.to(dev)
    if cast and amp is not None:
        net = net.to(amp)
    params = list(net.parameters())
    theta = [p.detach().float().clone() for p in params]
    dx, dy = [d.to(dev) for d in dx], [d.to(dev) for d in dy]
    x_all = torch.from_numpy(x).to(dev).long()
    y_all = torch.from_numpy(y).to(dev)
    count = (y_all != -100).sum()
    n, t = x.shape
    vocab = cfg["vocab"]
    use_amp = amp is not None and not cast
    times, centre = [], None
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=use_amp):
        for i, (a, b) in enumerate([points[0]] + points):
            sync(dev)
            t0 = time.perf_counter()
            for p, th, d1, d2 in zip(params, theta, dx, dy):
                p.copy_(th + d1 * a + d2 * b)
            loss = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            for j in range(0, n, batch):
                out = net(x_all[j:j + batch]).float().reshape(-1, vocab)
                yb = y_all[j:j + batch].reshape(-1)
                loss += F.cross_entropy(out, yb, ignore_index=-100, reduction="sum").double()
                correct += (out.argmax(1) == yb).sum()
            value = (loss / count).item()
            _ = correct.item()
            if i > 0:
                times.append(time.perf_counter() - t0)
                if a == 0 and b == 0:
                    centre = value
    return n * t * len(times) / sum(times), centre


def lm_best_eager(cfg, x, y, dev, points, batches, precision):
    variants = {}
    for bsz in batches:
        for cast in ([False, True] if precision in ("bf16", "fp16") else [False]):
            label = f"batch {bsz}" + (", cast" if cast else (", autocast" if precision in ("bf16", "fp16") else ""))
            variants[label] = lm_eager_loop(cfg, x, y, dev, points, bsz, precision, cast)
    label = max(variants, key=lambda k: variants[k][0])
    return variants[label][0], label, {k: v[0] for k, v in variants.items()}, variants[label][1]


def lm_bench(a, work, dev, precisions):
    """The token-model rows: eager and losscape tokens/s on the same LM, data and grid."""
    cfg = lm_config(a)
    cuda = dev.type == "cuda"
    n = a.lm_n or (8192 if cuda else 256)
    batches = a.lm_batch or ([256, 1024] if cuda else [64])
    data_dir = os.path.join(work, "lm-data")
    x, y = lm_data(data_dir, n, a.lm_t, a.lm_vocab)
    net = lm_build(cfg)
    pt = os.path.join(work, "tinylm.pt")
    with torch.no_grad():
        torch.jit.trace(net, torch.zeros(2, a.lm_t, dtype=torch.int64)).save(pt)
    nparams = sum(p.numel() for p in net.parameters())
    k = max(int(round(a.lm_points ** 0.5)), 2)
    xs = np.linspace(-1, 1, k)
    points = [(float(p), float(q)) for q in xs for p in xs]
    rows = []
    for prec in precisions:
        r = {"model": "tinylm", "precision": prec, "config": cfg, "parameters": nparams, "sequences": n,
             "seq_len": a.lm_t, "tokens_per_point": n * a.lm_t, "counted_tokens": int((y != -100).sum()),
             "points": len(points)}
        runs = {"eager": [], "losscape": []}
        for _ in range(a.repeat):
            ips, r["eager_best"], r["eager_variants"], r["eager_centre_loss"] = lm_best_eager(
                cfg, x, y, dev, points, batches, prec)
            runs["eager"].append(ips)
            try:
                meta, wall, r["losscape_gpu_mib"] = losscape_run(
                    a.bin, pt, data_dir, a.device, k * k, n, os.path.join(work, f"lm-{prec}"), prec,
                    ["--no-plots"] + (["--batch-size", str(a.lm_losscape_batch)] if a.lm_losscape_batch else []))
            except SystemExit as e:
                r["losscape_error"] = str(e)
                break
            tm = meta["timing"]
            runs["losscape"].append(tm.get("tokens_per_second") or tm["images_per_second"] * a.lm_t)
            r.update(losscape_batch=meta.get("batch_size"), losscape_device=meta.get("device"),
                     losscape_wall_s=wall, perturb_fraction=tm.get("perturb_fraction"))
            loss = os.path.join(work, f"lm-{prec}", "loss.npy")
            if k % 2 == 1 and os.path.exists(loss):
                r["losscape_centre_loss"] = float(np.load(loss).reshape(k, k)[k // 2, k // 2])
        med = {m: float(np.median(v)) if v else None for m, v in runs.items()}
        r.update(eager_tps=med["eager"], losscape_tps=med["losscape"], runs=runs,
                 vs_eager=(med["losscape"] / med["eager"]) if med["losscape"] else None)
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def print_lm(rows):
    if not rows:
        return
    c = rows[0]["config"]
    print(f"\ntoken model: TinyLM d={c['d']} layers={c['layers']} heads={c['heads']} vocab={c['vocab']} "
          f"T={rows[0]['seq_len']} ({rows[0]['parameters'] / 1e6:.2f}M parameters), {rows[0]['sequences']} sequences "
          f"= {rows[0]['tokens_per_point']} tokens per point, {rows[0]['points']} points")
    print(f"{'model':10} {'prec':5} {'eager tok/s':>12} {'losscape tok/s':>15} {'vs eager':>8} {'s/point':>8} "
          f"{'centre loss eager / losscape':>30}")
    for r in rows:
        lt = r["losscape_tps"]
        cl = (f"{r['eager_centre_loss']:.6f} / {r['losscape_centre_loss']:.6f}"
              if r.get("eager_centre_loss") is not None and r.get("losscape_centre_loss") is not None else "")
        print(f"{r['model']:10} {r['precision']:5} {r['eager_tps']:12.0f} "
              f"{lt if lt is not None else float('nan'):15.0f} "
              f"{(lt / r['eager_tps']) if lt else float('nan'):7.2f}x "
              f"{(r['tokens_per_point'] / lt) if lt else float('nan'):8.3f} {cl:>30}")
        print(f"  best eager = {r['eager_best']} of {r['eager_variants']}")
        if len(r["runs"]["eager"]) > 1:
            print("  rounds, tokens/s: " + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vs)}"
                                                    for k, vs in r["runs"].items() if vs))
        if "losscape_error" in r:
            print(f"  {r['losscape_error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/losscape")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["resnet56", "vgg9", "tinylm"],
                    help="image architectures of models/arch.py, and tinylm for the token-model section")
    ap.add_argument("--n", type=int, default=0, help="images per grid point (eager, losscape) [50000 on CUDA, 2000 on CPU]")
    ap.add_argument("--points", type=int, default=9, help="grid points timed (a square k x k grid)")
    ap.add_argument("--ref-n", type=int, default=0, help="images per point for the slow reference loop [10000 on CUDA, 1000 on CPU]")
    ap.add_argument("--ref-points", type=int, default=2)
    ap.add_argument("--eager-batch", type=int, nargs="+", help="batch sizes tried [1024 4096 on CUDA, 64 on CPU]")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--precisions", nargs="+", help="default: tf32 bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--loss-cap", type=float, default=0,
                    help="also time the grid with --loss-cap C (C = this x the grid's lowest loss) and report the saving")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of eager, eager+fold and losscape timings, interleaved; medians are reported")
    ap.add_argument("--compile-modes", nargs="*",
                    help="torch.compile modes timed [default, max-autotune-no-cudagraphs; on CUDA also max-autotune]; "
                         "none: skip")
    ap.add_argument("--recompute", action="store_true",
                    help="also time losscape with --batchnorm recompute (statistics re-estimated on --bn-samples)")
    ap.add_argument("--bn-samples", type=int, default=10000)
    ap.add_argument("--lm-n", type=int, default=0, help="token model: sequences per point [8192 on CUDA, 256 on CPU]")
    ap.add_argument("--lm-t", type=int, default=128, help="token model: sequence length")
    ap.add_argument("--lm-vocab", type=int, default=4096)
    ap.add_argument("--lm-d", type=int, default=256, help="token model: width")
    ap.add_argument("--lm-layers", type=int, default=4)
    ap.add_argument("--lm-heads", type=int, default=4)
    ap.add_argument("--lm-points", type=int, default=9, help="token model: grid points timed (k x k, k odd has the centre)")
    ap.add_argument("--lm-batch", type=int, nargs="+", help="token model: eager batch sizes tried [256 1024 on CUDA, 64 on CPU]")
    ap.add_argument("--lm-losscape-batch", type=int, help="token model: losscape --batch-size [its default]")
    ap.add_argument("--json")
    ap.add_argument("--work", help="keep data and models here (default: a temporary directory)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    eager_batches = a.eager_batch or ([1024, 4096] if cuda else [64])
    a.n = a.n or (50000 if cuda else 2000)
    a.ref_n = a.ref_n or (10000 if cuda else 1000)
    work = a.work or tempfile.mkdtemp(prefix="losscape-bench-")
    os.makedirs(work, exist_ok=True)
    image_models = [m for m in a.models if m not in LM_MODELS]
    imgs, labels = cifar_io.random_images(a.n)
    data_dir = os.path.join(work, "data")
    if image_models:
        cifar_io.write_binary(data_dir, "train", imgs, labels)
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    precisions = a.precisions or (["tf32", "bf16"] if cuda else ["fp32"])
    modes = a.compile_modes if a.compile_modes is not None else (
        ["default", "max-autotune-no-cudagraphs"] + (["max-autotune"] if cuda else []))
    rows = []
    for name in image_models:
        torch.manual_seed(0)
        pt = os.path.join(work, f"{name}.pt")
        export(arch.build(name), pt)
        ref = None
        if not a.skip_reference:
            rn = min(a.ref_n, a.n)
            ref, _ = reference_loop(name, imgs[:rn], labels[:rn], dev, a.ref_points)
        for prec in precisions:
            r = {"model": name, "precision": prec, "reference_ips": ref}
            # --repeat R: R rounds, each timing every method once in turn, so that a slow spell
            # of the machine hits all of them; medians, and the median of the rounds' ratios.
            runs = {k: [] for k in ("eager", "eager_fold", "unfolded", "nomkldnn", "losscape")}
            for _ in range(a.repeat):
                r["eager_ips"], r["eager_best"], r["eager_variants"], r["eager_peak_alloc_mib"] = best_eager(
                    name, imgs, labels, dev, a.points, eager_batches, prec)
                r["eager_fold_ips"], r["eager_fold_best"], _, _ = best_eager(
                    name, imgs, labels, dev, a.points, eager_batches[-1:], prec, fold=True)
                mu, _, _ = losscape_run(a.bin, pt, data_dir, a.device, a.points, a.n,
                                        os.path.join(work, f"unfolded-{name}-{prec}"), prec, ["--fold-batchnorm", "false"])
                runs["unfolded"].append(mu["timing"]["images_per_second"])
                if not cuda:
                    mn, _, _ = losscape_run(a.bin, pt, data_dir, a.device, a.points, a.n,
                                            os.path.join(work, f"nomkldnn-{name}-{prec}"), prec, ["--onednn", "false"])
                    runs["nomkldnn"].append(mn["timing"]["images_per_second"])
                meta, wall, r["losscape_gpu_mib"] = losscape_run(
                    a.bin, pt, data_dir, a.device, a.points, a.n, os.path.join(work, f"run-{name}-{prec}"), prec)
                runs["eager"].append(r["eager_ips"])
                runs["eager_fold"].append(r["eager_fold_ips"])
                runs["losscape"].append(meta["timing"]["images_per_second"])
            med = {k: float(np.median(v)) if v else None for k, v in runs.items()}
            r.update(eager_ips=med["eager"], eager_fold_ips=med["eager_fold"], losscape_unfolded_ips=med["unfolded"],
                     losscape_nomkldnn_ips=med["nomkldnn"], runs=runs,
                     vs_eager_per_round=[x / e for x, e in zip(runs["losscape"], runs["eager"])])
            r["batchnorm_folding"] = meta["batchnorm_folding"]
            t = meta["timing"]
            r.update(losscape_ips=med["losscape"], losscape_s_per_point=a.n / med["losscape"],
                     perturb_fraction=t["perturb_fraction"], losscape_wall_s=wall, losscape_batch=meta["batch_size"],
                     losscape_device=meta["device"], host_rss_mib=meta["peak_host_rss_mb"],
                     precision_check=meta.get("precision_check"))
            if a.loss_cap and prec == precisions[0]:
                cap = a.loss_cap * meta["loss_min"]
                mc, wc, _ = losscape_run(a.bin, pt, data_dir, a.device, a.points, a.n,
                                         os.path.join(work, f"cap-{name}"), prec, ["--loss-cap", str(cap)])
                r["loss_cap"] = {"cap": cap, "capped_points": mc["loss_cap"]["capped_points"],
                                 "eval_s_without": t["eval_seconds"], "eval_s_with": mc["timing"]["eval_seconds"]}
            if prec in ("fp32", "tf32"):
                r["compiled"] = {}
                for mode in modes:
                    ips, cs, rec = compiled_loop(name, imgs, labels, dev, a.points, eager_batches[-1], mode, prec)
                    r["compiled"][mode] = {"ips": ips, "compile_s": cs, "recompiled_graphs": rec}
                if r["compiled"]:
                    best = max(r["compiled"], key=lambda m: r["compiled"][m]["ips"])
                    r["best_eager_or_compiled_ips"] = max(r["eager_ips"], r["compiled"][best]["ips"])
            if a.recompute and prec == precisions[0]:
                mr, _, _ = losscape_run(a.bin, pt, data_dir, a.device, a.points, a.n,
                                        os.path.join(work, f"recompute-{name}"), prec,
                                        ["--batchnorm", "recompute", "--bn-samples", str(a.bn_samples)])
                tr = mr["timing"]
                r["recompute"] = {"ips": tr["images_per_second"], "bn_samples": mr["batchnorm"]["samples"],
                                  "batchnorm_s": tr["batchnorm_seconds"], "worker_s": tr["worker_seconds"],
                                  "points": tr["points"]}
            rows.append(r)
            print(json.dumps(r), flush=True)
    lm_rows = lm_bench(a, work, dev, precisions) if any(m in LM_MODELS for m in a.models) else []
    print(f"\nmachine: {machine}; torch {torch.__version__}" +
          (f"; {a.n} images/point, {a.points} points per method" if rows else ""))
    if rows:
        print_images(rows, a)
    print_lm(lm_rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "machine": machine, "device": a.device,
                       "torch": torch.__version__, "n": a.n, "points": a.points, "rows": rows,
                       "lm_rows": lm_rows}, f, indent=1)
    failed = [r["precision"] for r in lm_rows if "losscape_error" in r]
    if failed:
        raise SystemExit(f"losscape failed on the token model ({', '.join(failed)}); the other figures are above")


def print_images(rows, a):
    print(f"{'model':10} {'prec':5} {'reference':>10} {'eager':>10} {'eager+fold':>10} {'unfolded':>10} "
          f"{'losscape':>10} {'s/point':>8} {'vs ref':>7} {'vs eager':>8} {'vs e+fold':>9} {'fold gain':>9} "
          f"{'perturb':>8} {'51x51 min':>9}")
    for r in rows:
        ref, ips = r["reference_ips"], r["losscape_ips"]
        print(f"{r['model']:10} {r['precision']:5} {ref or float('nan'):10.0f} {r['eager_ips']:10.0f} "
              f"{r['eager_fold_ips']:10.0f} {r['losscape_unfolded_ips']:10.0f} {ips:10.0f} "
              f"{r['losscape_s_per_point']:8.3f} {(ips / ref) if ref else float('nan'):6.2f}x "
              f"{ips / r['eager_ips']:7.2f}x {ips / r['eager_fold_ips']:8.2f}x "
              f"{ips / r['losscape_unfolded_ips']:8.2f}x {100 * r['perturb_fraction']:7.2f}% "
              f"{r['losscape_s_per_point'] * 2601 / 60 * 50000 / a.n:9.1f}")
    for r in rows:
        print(f"{r['model']} {r['precision']}: best eager = {r['eager_best']} of {r['eager_variants']}; "
              f"folding {r['batchnorm_folding']}")
        if a.repeat > 1:
            print(f"  {a.repeat} rounds, images/s: " + "; ".join(
                f"{k} {', '.join(f'{v:.0f}' for v in vs)}" for k, vs in r["runs"].items() if vs))
            q = sorted(r["vs_eager_per_round"])
            print(f"  losscape vs eager per round: {', '.join(f'{v:.2f}x' for v in r['vs_eager_per_round'])} "
                  f"(median {float(np.median(q)):.2f}x, lowest {q[0]:.2f}x)")
        if r["losscape_nomkldnn_ips"]:
            print(f"  CPU: losscape without oneDNN layouts (--onednn false) {r['losscape_nomkldnn_ips']:.0f} images/s; "
                  f"with them {r['losscape_ips'] / r['losscape_nomkldnn_ips']:.2f}x that")
    for r in rows:
        for mode, c in (r.get("compiled") or {}).items():
            print(f"{r['model']} {r['precision']}: torch.compile(mode={mode!r}) {c['ips']:.0f} images/s "
                  f"(compiled in {c['compile_s']:.1f}s, {c['recompiled_graphs']} graphs compiled after the first point); "
                  f"losscape {r['losscape_ips'] / c['ips']:.2f}x that")
        if r.get("best_eager_or_compiled_ips"):
            print(f"{r['model']} {r['precision']}: losscape vs the best of eager and compiled: "
                  f"{r['losscape_ips'] / r['best_eager_or_compiled_ips']:.2f}x")
        if "recompute" in r:
            c = r["recompute"]
            print(f"{r['model']} {r['precision']}: --batchnorm recompute ({c['bn_samples']} samples) {c['ips']:.0f} images/s; "
                  f"re-estimation {c['batchnorm_s'] / c['points']:.3f}s per point, "
                  f"{100 * c['batchnorm_s'] / c['worker_s']:.0f}% of the time")
    for r in rows:
        if "loss_cap" in r:
            c = r["loss_cap"]
            print(f"{r['model']}: --loss-cap {c['cap']:.3g} capped {c['capped_points']}/{a.points} points, "
                  f"eval {c['eval_s_without']:.2f}s -> {c['eval_s_with']:.2f}s")


if __name__ == "__main__":
    main()
