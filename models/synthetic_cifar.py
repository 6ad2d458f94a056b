"""Make a small, learnable, synthetic image-classification set in the CIFAR-10 layouts.

No CIFAR-10 can be downloaded where the demo and the tests run, so this stands in for it: each of
the 10 classes has a smooth random colour prototype; an image is its class prototype, randomly
shifted, scaled in contrast and covered in pixel noise, so a small CNN learns it in a few epochs
but not perfectly (train accuracy well below 100% after the demo's epochs).

    python models/synthetic_cifar.py --out DIR [--train 5000] [--test 1000] [--python] [--seed 0]
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F

import cifar_io


def make(n, seed, protos):
    g = np.random.default_rng(seed)
    labels = g.integers(0, 10, size=n)
    base = protos[labels]                                           # [n, 3, 40, 40]
    dx, dy = g.integers(0, 9, size=n), g.integers(0, 9, size=n)
    imgs = np.stack([base[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    contrast = g.uniform(0.3, 1.0, size=(n, 1, 1, 1))
    noise = g.normal(0, 1.1, size=imgs.shape)
    x = 128 + 70 * (contrast * imgs + noise)
    return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def prototypes(seed):
    torch.manual_seed(seed)
    low = torch.randn(10, 3, 5, 5)
    return F.interpolate(low, size=(40, 40), mode="bicubic", align_corners=False).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for data_batch_*.bin / test_batch.bin")
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--python", metavar="DIR", help="also write the python-pickle version here")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    protos = prototypes(a.seed)
    for split, n, s in (("train", a.train, a.seed + 1), ("test", a.test, a.seed + 2)):
        imgs, labels = make(n, s, protos)
        cifar_io.write_binary(a.out, split, imgs, labels)
        if a.python:
            cifar_io.write_python(a.python, split, imgs, labels)
    print(f"synthetic CIFAR-10: {a.train} train + {a.test} test images in {a.out}")


if __name__ == "__main__":
    main()
