"""Train a reference model on CIFAR-10 (binary version) and keep a checkpoint per epoch.

    python models/train.py --data DIR --arch resnet20 --epochs 6 --out RUN [--limit N] [--seed 0]

Writes RUN/checkpoints/epoch_{e}.pt (state_dict, torch.save) and epoch_{e}.safetensors for every
epoch e = 0 (the initialisation) .. E, and RUN/model.pt: the final model as TorchScript, eval mode.
CPU by default (the demo runs on 2 cores); --device cuda if you have one. Augmentation: random
horizontal flips only, so the landscape is computed on the same images the model fitted.
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import arch
import cifar_io
from export import export


def evaluate(model, x, y, bs=1000):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), bs):
            out = model(x[i:i + bs])
            loss += F.cross_entropy(out, y[i:i + bs], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + bs]).sum().item()
    return loss / len(y), correct / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="CIFAR-10 binary version directory")
    ap.add_argument("--arch", default="resnet20", choices=[a for a in arch.ARCHS if a != "mlp"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    imgs, labels = cifar_io.read_binary(cifar_io.find_binary_dir(a.data), "train")
    if a.limit:
        imgs, labels = imgs[:a.limit], labels[:a.limit]
    dev = torch.device(a.device)
    x = torch.from_numpy(cifar_io.normalize(imgs)).to(dev)
    y = torch.from_numpy(labels).to(dev)
    model = arch.build(a.arch).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(a.epochs, 1))
    ckdir = os.path.join(a.out, "checkpoints")
    os.makedirs(ckdir, exist_ok=True)

    def save(epoch):
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(sd, os.path.join(ckdir, f"epoch_{epoch}.pt"))
        save_file(sd, os.path.join(ckdir, f"epoch_{epoch}.safetensors"))

    save(0)
    g = torch.Generator(device="cpu").manual_seed(a.seed)
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(y), generator=g).to(dev)
        for i in range(0, len(y), a.batch_size):
            idx = perm[i:i + a.batch_size]
            xb = x[idx]
            flip = (torch.rand(len(idx), generator=g) < 0.5).to(dev)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        save(epoch)
        tl, ta = evaluate(model, x, y)
        print(f"epoch {epoch}/{a.epochs}: train loss {tl:.4f}, acc {ta:.3f} ({time.time() - t0:.1f}s)", flush=True)
    model.cpu()
    export(model, os.path.join(a.out, "model.pt"))
    print(f"TorchScript model -> {os.path.join(a.out, 'model.pt')}")


if __name__ == "__main__":
    main()
