"""cuDNN autotuning on (1) or off (0, heuristics) for frozen ResNet-56 and VGG-9.
python3 bench/experiments/cudnn_benchmark_off.py 1; ... 0"""
import sys, time, copy, torch, torch.nn.functional as F
sys.path.insert(0, 'models')
import arch
torch.backends.cudnn.benchmark = sys.argv[1] == '1'
dev = 'cuda'; N = 50000
X = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8).to(dev).contiguous(memory_format=torch.channels_last)
Y = torch.randint(0, 10, (N,)).to(dev)
for name in ['resnet56', 'vgg9']:
    torch.manual_seed(0)
    for dt in [torch.float32, torch.bfloat16]:
        m = arch.build(name).eval().to(dev).to(dt).to(memory_format=torch.channels_last)
        fz = torch.jit.freeze(torch.jit.script(m).eval())
        def run():
            tot = torch.zeros((), device=dev)
            for i in range(0, N, 4096):
                tot += F.cross_entropy(fz(X[i:i+4096].to(dt).div_(255)).float(), Y[i:i+4096], reduction='sum')
            return tot.item()
        with torch.inference_mode():
            for _ in range(3): run()
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(3): run()
            torch.cuda.synchronize(); el = time.perf_counter() - t
        print(f"benchmark={sys.argv[1]} {name} {str(dt)[6:]} frozen {3*N/el:9.0f} img/s", flush=True)
