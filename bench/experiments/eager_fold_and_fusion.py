"""Eager batch sizes, autocast vs a cast model, eager with BatchNorm folded by torch.fx, frozen
TorchScript at batch 4096/8192, and the frozen conv-add-relu fusion pass (BENCHMARKS.md run 5).
python3 bench/experiments/eager_fold_and_fusion.py resnet56 vgg9"""
import sys, time, copy, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, 'models')
import arch
from torch.fx.experimental.optimization import fuse as fx_fuse
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
dev = 'cuda'
N = 50000
g = torch.Generator().manual_seed(0)
X = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev).contiguous(memory_format=torch.channels_last)
Y = torch.randint(0, 10, (N,), generator=g).to(dev)

def run(m, dt, B):
    tot = torch.zeros((), device=dev)
    for i in range(0, N, B):
        x = X[i:i+B].to(dt).div_(255)
        tot += F.cross_entropy(m(x).float(), Y[i:i+B], reduction='sum')
    return tot.item() / N

def bench(name, m, dt, B=4096, reps=3, ac=None):
    with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=ac is not None):
        for _ in range(3): l = run(m, dt, B)
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps): l = run(m, dt, B)
        torch.cuda.synchronize(); el = time.perf_counter() - t
    print(f"{name:46s} {N*reps/el:10.0f} img/s  loss {l:.6f}", flush=True)

def kinds(gr):
    k = {}
    for n in gr.nodes():
        if n.kind() != 'prim::Constant': k[n.kind()] = k.get(n.kind(), 0) + 1
    return k

for a in sys.argv[1:]:
    torch.manual_seed(0)
    base = arch.build(a).eval()
    for dt in [torch.float32, torch.bfloat16]:
        tag = f"{a} {str(dt)[6:]}"
        m = copy.deepcopy(base).to(dev).to(dt).to(memory_format=torch.channels_last)
        for B in [1024, 4096, 8192]:
            bench(f"{tag} eager B={B}", m, dt, B)
        if dt == torch.bfloat16:
            m32 = copy.deepcopy(base).to(dev).to(memory_format=torch.channels_last)
            for B in [1024, 4096]:
                bench(f"{tag} eager autocast B={B}", m32, torch.float32, B, ac=True)
        ef = fx_fuse(copy.deepcopy(base)).to(dev).to(dt).to(memory_format=torch.channels_last)
        bench(f"{tag} eager BN-folded (fx fuse) B=4096", ef, dt)
        fz = torch.jit.freeze(torch.jit.script(m).eval())
        bench(f"{tag} frozen B=4096", fz, dt)
        bench(f"{tag} frozen B=8192", fz, dt, 8192)
        fz2 = torch.jit.freeze(torch.jit.script(m).eval())
        torch._C._jit_pass_fuse_frozen_conv_add_relu(fz2.graph)
        print("   ", kinds(fz2.graph))
        bench(f"{tag} frozen + conv-add-relu fusion", fz2, dt)
