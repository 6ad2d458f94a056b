"""Convert a checkpoint losscape cannot read directly into a .safetensors state dict.

losscape reads TorchScript files, current (zip) torch.save files and .safetensors. This handles the
rest through PyTorch itself: old-style (pre-1.6, non-zip) torch.save files such as the .t7 files of
the Li et al. repository, pickled whole nn.Modules, and checkpoints nested under
'state_dict'/'net'/'model' with DataParallel's 'module.' prefix. Only tensors are kept.

    python models/convert_checkpoint.py CKPT OUT.safetensors

It unpickles CKPT (weights_only=False): only convert files you trust.
"""
import argparse

import torch
from safetensors.torch import save_file

import arch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("out")
    a = ap.parse_args()
    obj = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    sd = arch.unwrap_state_dict(obj)
    tensors = {k: v.detach().contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, a.out)
    print(f"{a.ckpt}: {len(tensors)} tensors -> {a.out}")


if __name__ == "__main__":
    main()
