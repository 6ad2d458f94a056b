"""cudnn.benchmark_limit (10 = default, 0 = every algorithm) and NCHW vs channels_last for frozen
ResNet-56. python3 bench/experiments/cudnn_benchmark_limit.py 10; ... 0"""
import sys, time, copy, torch, torch.nn.functional as F
sys.path.insert(0, 'models')
import arch
lim = int(sys.argv[1])
torch.backends.cudnn.benchmark = True
torch.backends.cudnn.benchmark_limit = lim
torch.backends.cudnn.allow_tf32 = True
torch.backends.cuda.matmul.allow_tf32 = True
dev = 'cuda'; N = 50000
g = torch.Generator().manual_seed(0)
X0 = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev)
Y = torch.randint(0, 10, (N,), generator=g).to(dev)
def bench(name, m, dt, X, B=4096, reps=3):
    def run():
        tot = torch.zeros((), device=dev)
        for i in range(0, N, B):
            tot += F.cross_entropy(m(X[i:i+B].to(dt).div_(255)).float(), Y[i:i+B], reduction='sum')
        return tot.item() / N
    with torch.inference_mode():
        for _ in range(3): run()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps): l = run()
        torch.cuda.synchronize(); el = time.perf_counter() - t
    print(f"limit={lim} {name:36s} {N*reps/el:10.0f} img/s", flush=True)
torch.manual_seed(0)
base = arch.build('resnet56').eval()
for dt in [torch.float32, torch.bfloat16]:
    for cl in [True, False]:
        mf = torch.channels_last if cl else torch.contiguous_format
        m = copy.deepcopy(base).to(dev).to(dt).to(memory_format=mf)
        fz = torch.jit.freeze(torch.jit.script(m).eval())
        bench(f"resnet56 {str(dt)[6:]} cl={cl} frozen", fz, dt, X0.contiguous(memory_format=mf))
