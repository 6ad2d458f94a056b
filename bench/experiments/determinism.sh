# Same grid in 3 processes and as 3 shards, folded and not, and folded vs unfolded at fp32/tf32/bf16 (BENCHMARKS.md run 5).
export LD_LIBRARY_PATH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
test -f /tmp/gc/resnet56.pt || python3 -c "
import sys, numpy as np, torch; sys.path.insert(0,'models'); import arch, cifar_io; from export import export
g=np.random.default_rng(0); cifar_io.write_binary('/tmp/gc/data','train',g.integers(0,256,(10000,3,32,32),dtype=np.uint8),g.integers(0,10,10000).astype(np.uint8))
torch.manual_seed(0); export(arch.build('resnet56'),'/tmp/gc/resnet56.pt')"
B=${1:?usage: determinism.sh path/to/losscape}; m=/tmp/gc/resnet56.pt; d=/tmp/gc/data
C="--model $m --data $d --limit 10000 --x=-1:1:5 --y=-1:1:5 --device cuda --no-plots"
for f in true false; do
  $B surface -q $C --fold-batchnorm $f --out /tmp/d2/whole-$f --overwrite
  $B surface -q $C --fold-batchnorm $f --out /tmp/d2/sh-$f --overwrite --shard 1/3
  $B surface -q $C --fold-batchnorm $f --out /tmp/d2/sh-$f --shard 0/3
  $B surface -q $C --fold-batchnorm $f --out /tmp/d2/sh-$f --shard 2/3
done
for p in fp32 tf32 bf16; do for f in true false; do
  $B surface -q $C --precision $p --fold-batchnorm $f --out /tmp/d2/p-$p-$f --overwrite
done; done
python3 - <<'PY'
import numpy as np
np.set_printoptions(precision=2, linewidth=200)
for f in ['true', 'false']:
    a, b = np.load(f'/tmp/d2/whole-{f}/loss.npy'), np.load(f'/tmp/d2/sh-{f}/loss.npy')
    print(f'fold={f}: sharded (3 processes) == whole bit for bit: {a.tobytes()==b.tobytes()}; rel diff per point:')
    print(np.abs(a-b)/np.abs(a))
for p in ['fp32', 'tf32', 'bf16']:
    a, b = np.load(f'/tmp/d2/p-{p}-true/loss.npy'), np.load(f'/tmp/d2/p-{p}-false/loss.npy')
    print(f'{p}: folded vs unfolded max rel diff {(np.abs(a-b)/np.abs(b)).max():.2e}; loss range {b.min():.3f}..{b.max():.3f}')
    print((np.abs(a-b)/np.abs(b)))
PY
