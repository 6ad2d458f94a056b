#!/usr/bin/env bash
# GPU checks that CI (CPU-only) cannot run. On a GPU machine with torch 2.11.0 (+cu130) in python3:
#
#   bench/gpu_check.sh path/to/losscape [WORKDIR]
#
# 1. the binary sees CUDA and runs on it (meta.json "device": "cuda:0");
# 2. a run killed with kill -9 and resumed equals an uninterrupted run bit for bit on the GPU
#    (GPU_CHECK_SKIP_RESUME=1 skips it; a mismatch is reported, the other checks still run);
# 3. a ResNet-56 2-D surface with all pictures, and its images/s;
# 4. every precision's centre-point deviation from strict fp32.
# Results go to BENCHMARKS.md by hand (with the machine named).
set -euo pipefail
bin=$(realpath "$1"); work=${2:-/tmp/losscape-gpu-check}
here=$(cd "$(dirname "$0")/.." && pwd)
torchlib=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
export LD_LIBRARY_PATH=$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p "$work"
python3 -c "
import os, sys, numpy as np, torch
sys.path.insert(0, '$here/models')
import arch, cifar_io
from export import export
w = '$work'
if not os.path.exists(w + '/data/data_batch_1.bin'):
    g = np.random.default_rng(0)
    cifar_io.write_binary(w + '/data', 'train', g.integers(0, 256, (50000, 3, 32, 32), dtype=np.uint8), g.integers(0, 10, 50000).astype(np.uint8))
torch.manual_seed(0); export(arch.build('resnet56'), w + '/resnet56.pt')
print('torch', torch.__version__, torch.cuda.get_device_name(0))
"
m=$work/resnet56.pt; d=$work/data
echo "== 1. CUDA"
"$bin" surface -q --model "$m" --data "$d" --limit 4096 --x=0:0:1 --device cuda --out "$work/cuda" --overwrite --no-plots
python3 -c "import json; m=json.load(open('$work/cuda/meta.json')); assert m['device'].startswith('cuda'), m['device']; print('device', m['device'])"
status=0
if [ -z "${GPU_CHECK_SKIP_RESUME:-}" ]; then
echo "== 2. kill -9 and resume (7x7, 50k images)"
rm -rf "$work/whole" "$work/killed"
"$bin" surface -q --model "$m" --data "$d" --x=-1:1:7 --y=-1:1:7 --device cuda --out "$work/whole" --no-plots
"$bin" surface -q --model "$m" --data "$d" --x=-1:1:7 --y=-1:1:7 --device cuda --out "$work/killed" --no-plots --checkpoint-every 0 &
pid=$!; sleep 12; kill -9 $pid; wait $pid 2>/dev/null || true
"$bin" surface --model "$m" --data "$d" --x=-1:1:7 --y=-1:1:7 --device cuda --out "$work/killed" --no-plots 2>&1 | grep -E "already done|points on"
python3 -c "
import sys, numpy as np
a, b = np.load('$work/whole/loss.npy'), np.load('$work/killed/loss.npy')
d = np.abs(a - b) / np.abs(a)
print('resumed == uninterrupted, bit for bit:', a.tobytes() == b.tobytes(), '| points that differ:', int((d > 0).sum()), 'of', a.size, '| max rel diff %.1e' % d.max())
sys.exit(0 if a.tobytes() == b.tobytes() else 1)" || status=1
fi
echo "== 3. 11x11 ResNet-56 surface with pictures"
"$bin" surface --model "$m" --data "$d" --x=-1:1:11 --y=-1:1:11 --device cuda --out "$work/r56" --overwrite 2>&1 | tail -1
ls "$work/r56"
echo "== 4. precisions (centre-point deviation from strict fp32)"
for p in fp32 tf32 bf16 fp16; do
  "$bin" surface -q --model "$m" --data "$d" --x=0:0:1 --device cuda --precision $p --out "$work/p-$p" --overwrite --no-plots
  python3 -c "import json; m=json.load(open('$work/p-$p/meta.json')); c=m['precision_check'] or {}; print('$p', 'loss', m['loss_min'], 'rel_diff', c.get('rel_diff'))"
done
exit $status
