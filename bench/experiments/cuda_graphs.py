"""Do CUDA graphs pay for losscape's forward passes? (issue 5's "CUDA graphs or streams if they pay
for small models"; written in a session without a GPU: not yet run.) For ResNet-56 and
VGG-9, frozen and folded as losscape runs them (channels_last, TF32 and bf16), one pass over 50,000
resident images at batches 1024 and 4096: plain calls against one CUDA graph per batch shape
(captured once; each batch is copied into the graph's static input, then the graph replays the
forward pass and the loss sum). Also, at batch 1024, two points on two streams at once.
Run on a GPU machine from the repository root:

    python3 bench/experiments/cuda_graphs.py resnet56 vgg9"""
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "models")
import arch  # noqa: E402

if not torch.cuda.is_available():
    sys.exit("cuda_graphs.py: needs a CUDA GPU")
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
dev = "cuda"
N = 50000
cl = torch.channels_last
g = torch.Generator().manual_seed(0)
X = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev).contiguous(memory_format=cl)
Y = torch.randint(0, 10, (N,), generator=g).to(dev)


def plain(m, dt, batch):
    tot = torch.zeros((), device=dev, dtype=torch.float64)
    for i in range(0, N - N % batch, batch):
        out = m(X[i:i + batch].to(dt).div_(255))
        tot += F.cross_entropy(out.float(), Y[i:i + batch], reduction="sum").double()
    return tot


def graphed(m, dt, batch):
    """A function that evaluates the same sum with one CUDA graph replayed per batch."""
    xs = torch.empty((batch, 3, 32, 32), device=dev, dtype=dt).contiguous(memory_format=cl)
    ys = torch.empty((batch,), device=dev, dtype=torch.int64)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up (profiling executor, cuDNN autotuning) before capture
            F.cross_entropy(m(xs).float(), ys, reduction="sum")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = F.cross_entropy(m(xs).float(), ys, reduction="sum").double()

    def run():
        tot = torch.zeros((), device=dev, dtype=torch.float64)
        for i in range(0, N - N % batch, batch):
            xs.copy_(X[i:i + batch].to(dt).div_(255))
            ys.copy_(Y[i:i + batch])
            graph.replay()
            tot += loss
        return tot
    return run


def timed(f, batch, reps=3):
    """(images/s, the last value) of f, which evaluates the images of whole batches once."""
    for _ in range(2):
        f()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        v = f().item()
    torch.cuda.synchronize()
    return (N - N % batch) * reps / (time.perf_counter() - t), v


for name in sys.argv[1:] or ["resnet56", "vgg9"]:
    torch.manual_seed(0)
    base = arch.build(name).eval()
    for dt in (torch.float32, torch.bfloat16):
        m = torch.jit.freeze(torch.jit.script(base.to(dev).to(dt).to(memory_format=cl)).eval())
        with torch.inference_mode():
            for batch in (1024, 4096):
                ips_p, lp = timed(lambda: plain(m, dt, batch), batch)
                run = graphed(m, dt, batch)
                ips_g, lg = timed(run, batch)
                print(f"{name} {str(dt)[6:]} batch {batch}: plain {ips_p:,.0f} img/s, CUDA graph {ips_g:,.0f} "
                      f"({ips_g / ips_p:.2f}x); loss sums {lp:.6f} / {lg:.6f}", flush=True)
            # Two points at once on two streams (the second model stands for a second grid point).
            batch = 1024
            m2 = torch.jit.freeze(torch.jit.script(base.to(dev).to(dt).to(memory_format=cl)).eval())
            s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()

            def two_streams():
                with torch.cuda.stream(s1):
                    a = plain(m, dt, batch)
                with torch.cuda.stream(s2):
                    b = plain(m2, dt, batch)
                torch.cuda.synchronize()
                return a + b
            ips_2, _ = timed(two_streams, batch)
            print(f"{name} {str(dt)[6:]} batch {batch}: two points on two streams {2 * ips_2:,.0f} img/s "
                  f"(images of both points per second)", flush=True)
