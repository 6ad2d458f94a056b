# Two uninterrupted 7x7 ResNet-56 runs and one killed after 14 s and resumed; which points differ (BENCHMARKS.md run 5).
#   resume.sh path/to/losscape [more losscape flags, e.g. --cudnn-benchmark false]
export LD_LIBRARY_PATH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
w=/tmp/rs; mkdir -p $w
python3 -c "
import sys, numpy as np, torch; sys.path.insert(0,'models'); import arch, cifar_io; from export import export
g=np.random.default_rng(0); cifar_io.write_binary('$w/data','train',g.integers(0,256,(50000,3,32,32),dtype=np.uint8),g.integers(0,10,50000).astype(np.uint8))
torch.manual_seed(0); export(arch.build('resnet56'),'$w/resnet56.pt')"
B=${1:?usage: resume.sh path/to/losscape [flags]}; shift
C="--model $w/resnet56.pt --data $w/data --x=-1:1:7 --y=-1:1:7 --device cuda --no-plots $*"
rm -rf $w/whole $w/whole2 $w/killed
$B surface -q $C --out $w/whole
$B surface -q $C --out $w/whole2
$B surface -q $C --out $w/killed --checkpoint-every 0 &
pid=$!; sleep 14; kill -9 $pid; wait $pid 2>/dev/null
python3 -c "import json,glob; [print(f, len(json.load(open(f)).get('points', json.load(open(f)).get('done', [])))) for f in glob.glob('$w/killed/*.json')]" 2>&1 | head
ls $w/killed
$B surface $C --out $w/killed 2>&1 | grep -E "already|points on|resum"
python3 - <<'PY'
import numpy as np
np.set_printoptions(precision=1, linewidth=200)
w='/tmp/rs'
a, b, c = [np.load(f'{w}/{n}/loss.npy') for n in ('whole', 'whole2', 'killed')]
for n, x in (('whole2', b), ('killed+resumed', c)):
    d = np.abs(x - a) / np.abs(a)
    print(f'{n} vs whole: identical {x.tobytes()==a.tobytes()}, {int((d>0).sum())} points differ, max rel {d.max():.1e}')
    print(d)
PY
