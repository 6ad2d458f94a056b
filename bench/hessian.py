"""Speed of Hessian eigenvalues, losscape against PyHessian, measured in one run on this machine.

For each model, on the same synthetic CIFAR-shaped data, weights and parameter set (all
parameters: PyHessian takes every parameter that requires grad, so losscape runs with
--ignore keep):

 1. PyHessian 0.1 (the peer tool): `hessian(model, CrossEntropyLoss(), data=(x, y))` with the
    samples as one batch (its fastest mode: the gradient graph is built once and reused), then
    `eigenvalues(maxIter=100, tol=1e-3, top_n=1)`: power iteration, stopping when two
    consecutive estimates differ by less than the tolerance. Run in a subprocess, so that its
    time, products and peak memory are its own.
 2. losscape hessian --top 1 --tol 1e-3: Lanczos with full reorthogonalization, stopping when
    the residual ‖Hv − λv‖ / |λ| is within the tolerance (a stricter test than PyHessian's).

Prints the time to λmax of each, their ratio, products per eigenvalue, the top eigenvalues and
their relative difference, per-product throughput (images/s: products × samples / seconds)
beside losscape's forward-only throughput on the same data, and peak memory.

    python bench/hessian.py --bin target/release/losscape [--device cpu] [--models resnet20] [--n 2000]
"""
import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
import arch  # noqa: E402
import cifar_io  # noqa: E402
from export import export  # noqa: E402


def pyhessian_worker(a):
    """(In a subprocess.) PyHessian's top eigenvalue; prints a JSON line."""
    import importlib
    ph = importlib.import_module("pyhessian.hessian")  # the module (the package exports the class under its name)
    calls = {"n": 0}
    hvp = ph.hessian_vector_product

    def counted(*args, **kw):
        calls["n"] += 1
        return hvp(*args, **kw)

    ph.hessian_vector_product = counted
    dev = torch.device(a.device)
    model = arch.build(a.model)
    model.load_state_dict(torch.jit.load(a.model_pt, map_location="cpu").state_dict())
    model = model.to(dev).eval()
    x, y = cifar_io.read_binary(a.data, "train")
    x = torch.from_numpy(cifar_io.normalize(x[:a.n])).to(dev)
    y = torch.from_numpy(y[:a.n].astype(np.int64)).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize(dev)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    h = ph.hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=dev.type == "cuda")
    top, _ = h.eigenvalues(maxIter=100, tol=a.tol, top_n=1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    secs = time.perf_counter() - t0
    out = {"top": top[0], "seconds": secs, "products": calls["n"],
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_device_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}
    print(json.dumps(out))


def run(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/losscape")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["resnet20"])
    ap.add_argument("--n", type=int, default=0, help="samples [50000 on CUDA, 2000 on CPU]")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, help="losscape's samples per pass of a product")
    ap.add_argument("--json")
    ap.add_argument("--work")
    ap.add_argument("--pyhessian-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--model-pt", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    a.n = a.n or (50000 if cuda else 2000)
    if a.pyhessian_worker:
        return pyhessian_worker(a)
    work = a.work or tempfile.mkdtemp(prefix="losscape-hessian-bench-")
    os.makedirs(work, exist_ok=True)
    imgs, labels = cifar_io.random_images(a.n)
    data_dir = os.path.join(work, "data")
    cifar_io.write_binary(data_dir, "train", imgs, labels)
    machine = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    rows = []
    for name in a.models:
        torch.manual_seed(0)
        pt = os.path.join(work, f"{name}.pt")
        export(arch.build(name), pt)
        p, _ = run([sys.executable, __file__, "--pyhessian-worker", "--model", name, "--model-pt", pt,
                    "--data", data_dir, "--device", a.device, "--n", str(a.n), "--tol", str(a.tol)])
        peer = json.loads(p.stdout.strip().splitlines()[-1])
        out = os.path.join(work, f"hessian-{name}")
        base = [a.bin, "hessian", "--model", pt, "--data", data_dir, "--limit", str(a.n), "--ignore", "keep",
                "--top", "1", "--tol", str(a.tol), "--device", a.device, "--overwrite", "--quiet", "--no-plots"]
        if a.batch_size:
            base += ["--batch-size", str(a.batch_size)]
        _, wall = run(base + ["--out", out])
        meta = json.load(open(os.path.join(out, "meta.json")))
        rep = json.load(open(os.path.join(out, "hessian.json")))
        # Power iteration in losscape itself, same operator, same residual test: products at equal tolerance.
        pout = os.path.join(work, f"power-{name}")
        run(base + ["--method", "power", "--max-steps", "1000", "--out", pout])
        power = json.load(open(os.path.join(pout, "hessian.json")))
        fwd_out = os.path.join(work, f"forward-{name}")
        run([a.bin, "surface", "--model", pt, "--data", data_dir, "--limit", str(a.n), "--x=-0.01:0.01:3", "--device", a.device,
             "--fold-batchnorm", "false", "--precision", "fp32", "--out", fwd_out, "--overwrite", "--quiet", "--no-plots"])
        fwd = json.load(open(os.path.join(fwd_out, "meta.json")))["timing"]["images_per_second"]
        ours = rep["largest"][0]
        t = meta["timing"]
        r = {"model": name, "n": a.n, "n_params": rep["n_params"],
             "pyhessian": peer, "losscape": {"top": ours["eigenvalue"], "residual": ours["residual"],
                                             "seconds": rep["seconds"], "setup_seconds": t["setup_seconds"],
                                             "wall_seconds": wall, "products": rep["hvp_count"],
                                             "lanczos_steps": rep["lanczos_steps"],
                                             "product_ips": t["images_per_second"], "forward_ips": fwd,
                                             "peak_rss_mib": meta["peak_host_rss_mb"]},
             "power": {"top": power["largest"][0]["eigenvalue"], "residual": power["largest"][0]["residual"],
                       "products": power["hvp_count"], "seconds": power["seconds"]},
             "speedup": peer["seconds"] / rep["seconds"],
             "relative_difference": abs(ours["eigenvalue"] - peer["top"]) / abs(peer["top"])}
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(f"\nmachine: {machine}; torch {torch.__version__}; {a.n} samples; tolerance {a.tol}")
    print(f"{'model':9} {'params':>8} {'PyHessian s':>11} {'products':>8} {'losscape s':>10} {'products':>8} "
          f"{'speedup':>8} {'λmax PyH':>10} {'λmax ours':>10} {'rel diff':>9} {'HVP img/s':>10} {'fwd img/s':>10}")
    for r in rows:
        p, o = r["pyhessian"], r["losscape"]
        print(f"{r['model']:9} {r['n_params']:8d} {p['seconds']:11.1f} {p['products']:8d} {o['seconds']:10.1f} "
              f"{o['products']:8d} {r['speedup']:7.2f}x {p['top']:10.5g} {o['top']:10.5g} "
              f"{r['relative_difference']:9.1e} {o['product_ips']:10.0f} {o['forward_ips']:10.0f}")
        q = r["power"]
        print(f"  at the same tolerance (residual ≤ {a.tol}): Lanczos {o['products']} products, power iteration "
              f"{q['products']} ({q['seconds']:.1f}s, λ {q['top']:.5g}); PyHessian's own test stopped after {p['products']}")
        print(f"  peak memory: PyHessian {p['peak_rss_mib']:.0f} MiB RSS"
              + (f", {p['peak_device_mib']:.0f} MiB device" if p.get("peak_device_mib") else "")
              + f"; losscape {o['peak_rss_mib']:.0f} MiB RSS; losscape residual {o['residual']:.1e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "machine": machine, "device": a.device,
                       "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
