"""Convert a direction file of the official loss-landscape code into losscape's directions file.

    python models/convert_official.py DIR_FILE.h5 --model M.pt --out directions.safetensors
    python models/convert_official.py DIR_FILE.h5 --arch resnet56 --out directions.safetensors

The official code (tomgoldstein/loss-landscape) stores a direction as an HDF5 group, `xdirection`
(and `ydirection` for a 2-D surface), holding one dataset per parameter named "0", "1", ... in
`net.parameters()` order (its dir_type 'weights'). losscape names every tensor instead: this script
pairs entry i with the i-th of the model's `named_parameters()` (the same order as `parameters()`
of the eager module a TorchScript file was made from) and writes `x.<name>` / `y.<name>` as float32
to a safetensors file, which `losscape surface --directions FILE` uses as given (no renormalization).

The model is a TorchScript file (--model, e.g. made by models/export.py), or one of the reference
architectures of models/arch.py (--arch; only its parameter names and shapes are used). The number
of entries must equal the number of parameters and every entry's shape its parameter's shape.
A dir_type 'states' file (one entry per state_dict tensor, BatchNorm statistics included) is
recognized and refused. On any error a one-line message goes to stderr, the exit status is 1 and
no output file is written (the output is written to a temporary file beside it and renamed).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
AXES = (("xdirection", "x"), ("ydirection", "y"))


class Fail(Exception):
    """An input problem, reported as one line."""


def one_line(e):
    """The first non-empty line of an exception's message (torch's are often many lines)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


def shape_str(shape):
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def model_tensors(model_path, arch_name, num_classes):
    """(parameters as [(name, shape)] in parameters() order, number of state_dict tensors)."""
    import torch
    if model_path is not None:
        if not os.path.isfile(model_path):
            raise Fail(f"{model_path}: no such file")
        try:
            module = torch.jit.load(model_path, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any load failure is the user's input problem
            raise Fail(f"{model_path}: not a TorchScript file: {one_line(e)}")
    else:
        sys.path.insert(0, HERE)
        import arch
        try:
            module = arch.build(arch_name, num_classes)
        except ValueError as e:
            raise Fail(one_line(e))
    params = [(n, tuple(p.shape)) for n, p in module.named_parameters()]
    if not params:
        raise Fail(f"{model_path or arch_name}: the model has no parameters")
    return params, len(module.state_dict())


def read_list(f, group, path):
    """The entries of one direction as the official h5_util.read_list reads them: f[group][str(i)]."""
    grp = f[group]
    if not hasattr(grp, "keys"):
        raise Fail(f"{path}: {group} is not an HDF5 group (not a direction file of the official code?)")
    n = len(grp)
    names = set(grp.keys())
    expected = {str(i) for i in range(n)}
    if names != expected:
        odd = sorted(names - expected)[:3]
        raise Fail(f"{path}: {group} holds entries {odd} that are not numbered 0..{n - 1} as write_list writes them")
    entries = []
    for i in range(n):
        ds = grp[str(i)]
        if not hasattr(ds, "shape"):
            raise Fail(f"{path}: {group}/{i} is not a dataset")
        entries.append(np.asarray(ds[()]))
    return entries


def convert(h5_path, params, n_states, label):
    """{"x.<name>": float32 array, ...} from the official file, checked against `params`."""
    import h5py
    if not os.path.isfile(h5_path):
        raise Fail(f"{h5_path}: no such file")
    try:
        f = h5py.File(h5_path, "r")
    except Exception as e:  # noqa: BLE001
        raise Fail(f"{h5_path}: not a readable HDF5 file: {one_line(e)}")
    out = {}
    with f:
        if "xdirection" not in f:
            raise Fail(f"{h5_path}: no 'xdirection' group (keys: {sorted(f.keys())[:8]}); "
                       "not a direction file of the official code?")
        for group, axis in AXES:
            if group not in f:
                continue
            entries = read_list(f, group, h5_path)
            n, n_params = len(entries), len(params)
            if n != n_params:
                if n == n_states:
                    kind = ("this looks like a dir_type='states' file (one entry per state_dict tensor), "
                            "which losscape does not take: make the directions with dir_type='weights'")
                else:
                    kind = "it fits neither: the file was made for another architecture"
                raise Fail(f"{h5_path}: {group} has {n} entries but {label} has {n_params} parameters "
                           f"({n_states} state_dict tensors); {kind}")
            for i, (d, (name, shape)) in enumerate(zip(entries, params)):
                if tuple(d.shape) != shape:
                    raise Fail(f"{h5_path}: {group} entry {i} has shape {shape_str(d.shape)} but parameter "
                               f"{i} of {label} ({name}) has shape {shape_str(shape)}")
                if not np.issubdtype(d.dtype, np.floating):
                    raise Fail(f"{h5_path}: {group} entry {i} ({name}) has dtype {d.dtype}, not floating point")
                out[f"{axis}.{name}"] = np.ascontiguousarray(d, dtype=np.float32)
    return out


def write_atomically(tensors, out_path):
    """save_file to a temporary file in the output's directory, then rename it into place."""
    from safetensors.numpy import save_file
    d = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(d):
        raise Fail(f"{out_path}: directory {d} does not exist")
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(out_path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, Exception):
            raise Fail(f"{out_path}: cannot write: {one_line(e)}")
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5", metavar="DIR_FILE.h5",
                    help="direction file of the official code (groups xdirection and, for 2-D, ydirection)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="M.pt", help="the TorchScript model the surface is recomputed for")
    src.add_argument("--arch", metavar="NAME",
                     help="a reference architecture of models/arch.py (resnet8, resnet20, resnet56, ...)")
    ap.add_argument("--num-classes", type=int, default=10, help="classes of --arch (default 10)")
    ap.add_argument("--out", required=True, metavar="FILE.safetensors",
                    help="the directions file to write (x.<name>, y.<name>, float32)")
    a = ap.parse_args(argv)
    prog = os.path.basename(sys.argv[0]) or "convert_official.py"
    try:
        params, n_states = model_tensors(a.model, a.arch, a.num_classes)
        label = f"the model {a.model}" if a.model else f"architecture {a.arch}"
        tensors = convert(a.h5, params, n_states, label)
        write_atomically(tensors, a.out)
    except Fail as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 1
    axes = "x and y" if any(k.startswith("y.") for k in tensors) else "x only"
    print(f"{a.h5}: {len(params)} parameters ({axes}) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
