"""CPU, in PyTorch: eager (channels_last), a frozen TorchScript model (channels_last), the same
frozen graph after torch._C._jit_pass_convert_frozen_ops_to_mkldnn (what losscape --onednn does),
and torch.jit.optimize_for_inference; images/s on 1,000 random inputs, median of 3 passes, two
rounds, batches 64 and 256 (BENCHMARKS.md, oneDNN on CPU).

    python bench/experiments/cpu_onednn_pytorch.py resnet20 [resnet56 vgg9 ...]"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
import arch  # noqa: E402

N = 1000
cl = torch.channels_last


def timeit(f, xs, batch, reps=3):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, N, batch):
                f(xs[i:i + batch])
        ts.append(time.perf_counter() - t0)
    return N / np.median(ts)


for name in sys.argv[1:]:
    torch.manual_seed(0)
    net = arch.build(name).eval()
    x = torch.randn(N, 3, 32, 32)
    netcl = arch.build(name).eval()
    netcl.load_state_dict(net.state_dict())
    netcl = netcl.to(memory_format=cl)
    frcl = torch.jit.freeze(torch.jit.script(netcl).eval())
    mk = torch.jit.freeze(torch.jit.script(net).eval())
    torch._C._jit_pass_convert_frozen_ops_to_mkldnn(mk.graph)
    ofi = torch.jit.optimize_for_inference(torch.jit.script(net).eval())
    xcl = x.contiguous(memory_format=cl)
    with torch.inference_mode():
        print(name, "oneDNN graph vs eager, max |diff|:", (mk(x[:64]) - net(x[:64])).abs().max().item())
    for batch in (64, 256):
        cands = {"eager_cl": (netcl, xcl), "frozen_cl": (frcl, xcl), "frozen_onednn": (mk, x), "optimize_for_inference": (ofi, x)}
        with torch.inference_mode():
            for f, xs in cands.values():
                for _ in range(3):
                    f(xs[:batch])
        for rnd in range(2):
            print(name, "batch", batch, "round", rnd, {k: round(timeit(f, xs, batch)) for k, (f, xs) in cands.items()}, flush=True)
