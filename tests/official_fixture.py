"""Fixture for models/convert_official.py: direction files written the way the official
loss-landscape code (tomgoldstein/loss-landscape) writes them, and PyTorch reference losses.

    python tests/official_fixture.py OUT_DIR

writes into OUT_DIR
    model.pt              resnet8 of models/arch.py (BatchNorm made non-trivial, fitted a little), TorchScript
    data/X.npy, y.npy     40 float32 images [N, 3, 32, 32] (used by losscape as given), int64 labels
    dirs.h5               xdirection and ydirection over net.parameters(): dir_type 'weights',
                          ignore 'biasbn', norm 'filter', written by the official write_list
    dirs_1d.h5            xdirection only (a 1-D surface's direction file)
    dirs_states.h5        dir_type 'states': one entry per state_dict tensor (not convertible)
    expected.safetensors  the directions of dirs.h5 keyed x.<name> / y.<name> by the eager
                          module's named_parameters(): what the converter must produce
    reference.json        eager PyTorch mean cross-entropy (eval mode) at theta and at
                          theta + 0.5 x - 0.25 y, and the model's parameter and state_dict counts

The direction code below is the official net_plotter.py / h5_util.py written out.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
import arch  # noqa: E402
from export import export  # noqa: E402
from fixtures import fit, randomize_bn  # noqa: E402

POINT = (0.5, -0.25)


# --- the official code (net_plotter.py, h5_util.py) --------------------------------------------

def get_weights(net):
    return [p.data for p in net.parameters()]


def get_random_weights(weights):
    return [torch.randn(w.size()) for w in weights]


def get_random_states(states):
    return [torch.randn(w.size()) for k, w in states.items()]


def normalize_direction(direction, weights, norm="filter"):
    if norm == "filter":
        # Each filter (slice along dimension 0) gets the norm of the weight's filter.
        for d, w in zip(direction, weights):
            d.mul_(w.norm() / (d.norm() + 1e-10))
    elif norm == "layer":
        direction.mul_(weights.norm() / direction.norm())


def normalize_directions_for_weights(direction, weights, norm="filter", ignore="biasbn"):
    assert len(direction) == len(weights)
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)  # ignore directions for weights with 1 dimension
            else:
                d.copy_(w)  # keep directions for weights/bias that are only 1 per node
        else:
            normalize_direction(d, w, norm)


def normalize_directions_for_states(direction, states, norm="filter", ignore="ignore"):
    assert len(direction) == len(states)
    for d, (k, w) in zip(direction, states.items()):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)
            else:
                d.copy_(w)
        else:
            normalize_direction(d, w, norm)


def create_random_direction(net, dir_type="weights", ignore="biasbn", norm="filter"):
    if dir_type == "weights":
        weights = get_weights(net)
        direction = get_random_weights(weights)
        normalize_directions_for_weights(direction, weights, norm, ignore)
    elif dir_type == "states":
        states = net.state_dict()
        direction = get_random_states(states)
        normalize_directions_for_states(direction, states, norm, ignore)
    return direction


def write_list(f, name, direction):
    """Save the direction to the hdf5 file with name as the key."""
    grp = f.create_group(name)
    for i, l in enumerate(direction):
        grp.create_dataset(str(i), data=l.numpy())


# --- the fixture --------------------------------------------------------------------------------

def mean_ce(model, x, y):
    with torch.no_grad():
        out = model(x)
    return F.cross_entropy(out.double(), y, reduction="sum").item() / len(y)


def make(out):
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((40, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, size=40).astype(np.int64)
    np.save(os.path.join(out, "data", "X.npy"), x)
    np.save(os.path.join(out, "data", "y.npy"), y)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    # A resnet8, fitted a little to the images so that the surface has a basin around theta.
    torch.manual_seed(3)
    net = arch.build("resnet8")
    randomize_bn(net, torch.Generator().manual_seed(4))
    fit(net, xt, yt, steps=12, lr=0.01)
    net.eval()
    export(net, os.path.join(out, "model.pt"))

    torch.manual_seed(123)
    xdir = create_random_direction(net, "weights", "biasbn", "filter")
    ydir = create_random_direction(net, "weights", "biasbn", "filter")
    with h5py.File(os.path.join(out, "dirs.h5"), "w") as f:
        write_list(f, "xdirection", xdir)
        write_list(f, "ydirection", ydir)
    with h5py.File(os.path.join(out, "dirs_1d.h5"), "w") as f:
        write_list(f, "xdirection", xdir)
    sx = create_random_direction(net, "states", "biasbn", "filter")
    sy = create_random_direction(net, "states", "biasbn", "filter")
    with h5py.File(os.path.join(out, "dirs_states.h5"), "w") as f:
        write_list(f, "xdirection", sx)
        write_list(f, "ydirection", sy)

    from safetensors.torch import save_file
    names = [n for n, _ in net.named_parameters()]
    expected = {f"x.{n}": d.contiguous() for n, d in zip(names, xdir)}
    expected.update({f"y.{n}": d.contiguous() for n, d in zip(names, ydir)})
    save_file(expected, os.path.join(out, "expected.safetensors"))

    center = mean_ce(net, xt, yt)
    a, b = POINT
    with torch.no_grad():
        theta = [p.detach().clone() for p in net.parameters()]
        for p, t, dx, dy in zip(net.parameters(), theta, xdir, ydir):
            p.copy_(t + a * dx + b * dy)
    moved = mean_ce(net, xt, yt)
    ref = {
        "center": center,
        "points": [{"x": a, "y": b, "loss": moved}],
        "parameters": len(names),
        "state_dict": len(net.state_dict()),
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"official fixture -> {out}: {len(names)} parameters, loss {center:.6f} at theta, "
          f"{moved:.6f} at theta + {a} x + {b} y")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", metavar="OUT_DIR", help="directory to write the fixture into (created)")
    make(ap.parse_args().out)


if __name__ == "__main__":
    main()
