"""Export a reference architecture (optionally with trained weights) as TorchScript for losscape.

    python models/export.py --arch resnet56 --out resnet56.pt [--weights CKPT] [--trace] [--num-classes 10]

CKPT may be a `torch.save`d state_dict (also nested under 'state_dict'/'net'/'model', with or without
DataParallel's 'module.' prefix) or a .safetensors file. The module is saved in eval mode; by default
it is scripted, with --trace it is traced on a 32x32 input instead (both load in losscape).
"""
import argparse

import torch

import arch


def load_weights(model, path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=False)
    sd = arch.unwrap_state_dict(sd)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{path}: state_dict does not fit the architecture: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")


def export(model, out, trace=False, example=None):
    model = model.eval()
    if trace:
        example = example if example is not None else torch.zeros(2, 3, 32, 32)
        with torch.no_grad():
            sm = torch.jit.trace(model, example)
    else:
        sm = torch.jit.script(model)
    sm.save(out)
    return sm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=arch.ARCHS + arch.TOKEN_ARCHS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", help="state_dict checkpoint (.pt/.pth/.t7 from torch.save, or .safetensors)")
    ap.add_argument("--trace", action="store_true", help="trace instead of script")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed when no --weights")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = arch.build(a.arch, a.num_classes)
    if a.weights:
        load_weights(model, a.weights)
    export(model, a.out, a.trace, arch.example_input(a.arch))
    n = sum(p.numel() for p in model.parameters())
    print(f"{a.arch}: {n} parameters -> {a.out}")


if __name__ == "__main__":
    main()
