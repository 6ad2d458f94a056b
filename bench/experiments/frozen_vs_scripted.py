"""Frozen vs scripted vs eager ResNet-56/VGG-9 (fp32/TF32 and bf16, batch 4096, channels_last), and
whether writing into a frozen graph's constants in place changes its output. Run on a GPU machine
from the repository root: python3 bench/experiments/frozen_vs_scripted.py resnet56 vgg9"""
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, 'models')
import arch
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
dev = 'cuda'
N, B = 50000, 4096
g = torch.Generator().manual_seed(0)
X = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev)
Y = torch.randint(0, 10, (N,), generator=g).to(dev)
X = X.contiguous(memory_format=torch.channels_last)

def run(m, dt):
    tot = torch.zeros((), device=dev)
    for i in range(0, N, B):
        x = X[i:i+B].to(dt).div_(255)
        out = m(x)
        tot += F.cross_entropy(out.float(), Y[i:i+B], reduction='sum')
    return tot.item() / N

def bench(name, m, dt, reps=3):
    with torch.inference_mode():
        for _ in range(3): l = run(m, dt)
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps): l = run(m, dt)
        torch.cuda.synchronize(); el = time.perf_counter() - t
    print(f"{name:40s} {N*reps/el:10.0f} img/s  loss {l:.6f}", flush=True)
    return l

for a in sys.argv[1:]:
    torch.manual_seed(0)
    base = arch.build(a).eval()
    # make BN non-trivial
    with torch.no_grad():
        for mod in base.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.1, 0.1)
    for dt in [torch.float32, torch.bfloat16]:
        m = base.to(dev).to(dt).to(memory_format=torch.channels_last)
        tag = f"{a} {str(dt)[6:]}"
        bench(f"{tag} eager", m, dt)
        s = torch.jit.script(m)
        bench(f"{tag} scripted", s, dt)
        fz = torch.jit.freeze(torch.jit.script(m).eval())
        bench(f"{tag} frozen", fz, dt)
        oi = torch.jit.optimize_for_inference(torch.jit.script(m).eval())
        l0 = bench(f"{tag} optimize_for_inference", oi, dt)
        kinds = {}
        for n in oi.graph.nodes():
            kinds[n.kind()] = kinds.get(n.kind(), 0) + 1
        print("   ", {k: v for k, v in kinds.items() if k != 'prim::Constant'})
        # in-place edit of a frozen constant: does the output change?
        consts = [n.output().toIValue() for n in oi.graph.nodes() if n.kind() == 'prim::Constant' and n.output().type().kind() == 'TensorType']
        print("    tensor constants", len(consts), [tuple(c.shape) for c in consts[:4]])
        with torch.no_grad():
            big = max(consts, key=lambda c: c.numel())
            big.mul_(0.0)
        with torch.inference_mode():
            l1 = run(oi, dt)
        print(f"    after zeroing the largest constant in place: loss {l0:.6f} -> {l1:.6f}")
