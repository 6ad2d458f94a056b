"""Test fixtures for losscape's integration tests, made fresh at test time (nothing binary is
committed), and PyTorch reference values to compare losscape against.

    python tests/fixtures.py make DIR
        tiny models (scripted, traced, MLP, broken ones), the same synthetic images in CIFAR-10
        binary, CIFAR-10 python and X.npy/y.npy (NCHW and NHWC) form, regression data, bad inputs;
        token data (tokens/: int32 ids, next-token labels with -100) with a small causal LM (lm.pt)
        and its dict/tuple/list-output variants, class data with -100 labels (cls-ignore/, mlp8.pt),
        a small ViT (vit.pt) for the CIFAR images. See make_tokens.
    python tests/fixtures.py archs DIR
        every reference architecture of models/arch.py as TorchScript (tinylm.pt takes token ids).
    python tests/fixtures.py reference --model M --data D --directions F --points P --out OUT.json
        [--loss ce|mse] [--limit N] [--split train|test] [--output KEY]: the loss/accuracy PyTorch
        gives at θ + a·δ + b·η for each (a, b) in P (a JSON list), with the data normalized as
        losscape documents; the whole set in one forward pass. --split test: CIFAR's test batch, or
        X_test.npy/y_test.npy of an .npy directory. Integer X (token ids, int32/int64) is passed as
        int64. ce: logits [N, C] with labels [N], or [N, T, V] with labels [N, T] (token level);
        labels -100 are not counted: loss = the sum of the counted samples' or tokens' losses
        (float64) / their number, over the whole set; accuracy over the same. An output that is a
        tuple or list is scored by its first tensor, a dict by its entry KEY (default logits).
    python tests/fixtures.py directions --model M --seed S --norm filter|layer|model|none
        --ignore biasbn|keep --out F: directions computed in PyTorch from torch.manual_seed(S),
        as docs/landscape.md defines them.
    python tests/fixtures.py dense-hessian --model M --arch A --data D [--ignore biasbn|keep]
        [--directions F --points P] [--vectors F] --out OUT.json: eigenvalues and trace of the dense
        float64 Hessian of the dataset-mean loss (torch.autograd.functional.hessian), at each point.
    python tests/fixtures.py eigsh-hessian --model M --data D [--ignore biasbn|keep] [--k K] --out OUT.json:
        the K largest and smallest eigenvalues of the float64 Hessian by scipy's eigsh (ARPACK, tol
        1e-10) over PyTorch Hessian-vector products.
    python tests/fixtures.py sharpness-closed --model linear.pt --data linear --rho R [--scale S --floor F
        --threshold T] --out OUT.json: the closed forms of every sharpness measure for the least-squares
        fixture (½ρ² tr(CHC), ½ρ² λmax(CHC), the best vertex of the box, √(2T / tr(CHC))).
    python tests/fixtures.py sharpness-reference --model M --data D --rho R [--samples M --steps K
        --delta F] --out OUT.json: PyTorch's average case (fresh draws), a plain projected-gradient
        ascent, and L(θ + δ) − L(θ) for a saved δ.
    python tests/fixtures.py pyhessian --model M --arch A --data D --out OUT.json: PyHessian's top
        eigenvalue over all parameters, the samples as one batch.
    python tests/fixtures.py bn-reference --model M --data D --points P --bn-samples N
        --batch-size B (--directions F | --line-to CKPT) --out OUT.json: the loss at each point
        with BatchNorm statistics re-estimated by torch.optim.swa_utils.update_bn on an eager
        copy of the fixture ResNet (the first N training samples in batches of B), then eval.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
import arch  # noqa: E402
import cifar_io  # noqa: E402
from export import export  # noqa: E402


def randomize_bn(model, g):
    """Give BatchNorm layers non-trivial affine params and running stats, so eval mode matters."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))


def class_loss(out, y):
    """Mean cross-entropy over the targets whose label is not -100, the class axis last."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)


def fit(model, x, y, steps, lr, loss=class_loss):
    """Fit `model` a little to (x, y): `steps` full-batch Adam steps on `loss`."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        value = loss(model(x), y)
        opt.zero_grad()
        value.backward()
        opt.step()


class OomAbove8(nn.Module):
    """Raises the CUDA allocator's out-of-memory error for batches over 8 samples."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.size(0) > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by tests/fixtures.py)")
        return self.inner(x)


class SmoothCNN(nn.Module):
    """A small CNN with BatchNorm and a smooth activation: its Hessian can be formed densely."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        h = F.softplus(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


class WeightNormCNN(nn.Module):
    """SmoothCNN with a weight-normalized classifier (w = g·v/‖v‖ per row, torch._weight_norm):
    an operation that has a double backward but no forward-mode derivative in libtorch; and a
    BatchNorm1d after a mean, which no layer before it can absorb."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.bn_pooled = nn.BatchNorm1d(4)
        self.v = nn.Parameter(torch.randn(10, 4))
        self.g = nn.Parameter(torch.rand(10, 1) + 0.5)
        self.b = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        h = self.bn_pooled(F.softplus(self.bn(self.conv(x))).mean(dim=(2, 3)))
        return F.linear(h, torch._weight_norm(self.v, self.g, 0), self.b)


class ConvsCNN(nn.Module):
    """Convolutions of every kind the Hessian products rewrite: 2-D with a bias, stride and uneven
    padding; grouped and dilated with BatchNorm; 3-D; 1-D over the flattened map, without a bias
    and without a BatchNorm to fold into it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=(1, 2))
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.c = nn.Conv3d(8, 4, (1, 3, 3), stride=(1, 2, 2))
        self.d = nn.Conv1d(4, 6, 5, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        h = F.softplus(self.bn(self.b(F.softplus(self.a(x)))))
        h = F.softplus(self.c(h.unsqueeze(2))).squeeze(2)
        h = F.softplus(self.d(h.flatten(2)))
        return self.fc(h.mean(dim=2))


class NoGrad(nn.Module):
    """Its output does not depend differentiably on its parameters."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).detach()


class NanGrad(nn.Module):
    """A finite loss whose gradient is NaN: sqrt at 0 (infinite slope) times 0."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)
        self.w = nn.Parameter(torch.zeros(10, 1))

    def forward(self, x):
        return self.fc(x.flatten(1)) + torch.sqrt(self.w * self.w).t()


def eager(arch_name):
    """An eager model of a fixture architecture (to load a TorchScript file's state into)."""
    if arch_name == "smooth_cnn":
        return SmoothCNN()
    if arch_name == "mlp16":
        return arch.SmallMLP(16)
    if arch_name == "mlp8":
        return Mlp8()
    return arch.build(arch_name)


class BadOutput(nn.Module):
    """Returns [N, 10, 1]: not [N, classes]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).unsqueeze(2)


class LMDict(arch.TinyLM):
    """TinyLM returning {"logits": logits, "hidden": h} (the Hugging Face style); the same
    parameter names as TinyLM, so the same seed gives the same directions."""

    def forward(self, idx):
        h = self.hidden(idx)
        return {"logits": self.head(h), "hidden": h}


class LMDictScores(arch.TinyLM):
    """A dict output without a `logits` key: {"scores": logits, "hidden": h}."""

    def forward(self, idx):
        h = self.hidden(idx)
        return {"scores": self.head(h), "hidden": h}


class LMTuple(arch.TinyLM):
    def forward(self, idx):
        h = self.hidden(idx)
        return self.head(h), h


class LMList(arch.TinyLM):
    def forward(self, idx):
        h = self.hidden(idx)
        return [self.head(h), h]


class ReturnsInt(nn.Module):
    """Has a parameter, returns a Python int (the batch size): not a tensor output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return x.size(0)


class ReturnsStr(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return "not a tensor"


class Mlp8(nn.Module):
    """8 features -> 4 classes."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x)


def token_data(rng, n, t, vocab, ignored=0.15):
    """Token ids from a noisy affine Markov chain (next = 5·cur + 3 mod V with probability 0.8,
    else uniform), so that a small LM can learn something; next-token targets (X shifted left) with
    -100 at each row's last position and at a fraction `ignored` of the others."""
    x = np.empty((n, t), dtype=np.int64)
    x[:, 0] = rng.integers(0, vocab, size=n)
    for j in range(1, t):
        follow = rng.random(n) < 0.8
        x[:, j] = np.where(follow, (5 * x[:, j - 1] + 3) % vocab, rng.integers(0, vocab, size=n))
    y = np.full((n, t), -100, dtype=np.int64)
    y[:, :-1] = x[:, 1:]
    y[rng.random((n, t)) < ignored] = -100
    return x.astype(np.int32), y


def make_tokens(out):
    """Token data (tokens/), the TinyLM and its output variants, class data with ignored labels
    (cls-ignore/) and its MLP, a TinyViT for the CIFAR images."""
    rng = np.random.default_rng(11)
    vocab, t = 64, 16
    x, y = token_data(rng, 48, t, vocab)
    y[5] = -100  # a row with no counted token: the mean is over tokens, not over rows or batches
    xt, yt = token_data(rng, 24, t, vocab)
    d = os.path.join(out, "tokens")
    os.makedirs(d, exist_ok=True)
    for name, arr in (("X", x), ("y", y), ("X_test", xt), ("y_test", yt)):
        np.save(os.path.join(d, f"{name}.npy"), arr)
    torch.manual_seed(31)
    lm = arch.TinyLM(vocab=vocab, d=32, layers=2, heads=2, max_len=t)
    # Fitted: loss ~0.22 at the centre (log 64 = 4.16), ~5.6 one unit out.
    fit(lm, torch.from_numpy(x).long(), torch.from_numpy(y), steps=25, lr=0.01)
    lm.eval()
    example = torch.zeros(2, t, dtype=torch.int64)
    with torch.no_grad():
        torch.jit.trace(lm, example).save(os.path.join(out, "lm.pt"))
        for cls, name in ((LMDict, "lm_dict.pt"), (LMDictScores, "lm_dict_out.pt"), (LMTuple, "lm_tuple.pt"),
                          (LMList, "lm_list.pt")):
            v = cls(vocab=vocab, d=32, layers=2, heads=2, max_len=t)
            v.load_state_dict(lm.state_dict())
            torch.jit.trace(v.eval(), example, strict=False).save(os.path.join(out, name))
    torch.jit.script(ReturnsInt()).save(os.path.join(out, "returns_int.pt"))
    torch.jit.script(ReturnsStr()).save(os.path.join(out, "returns_str.pt"))

    # Classes with ignored labels: 8 features, 4 classes from a linear teacher, ~20% labels -100.
    d = os.path.join(out, "cls-ignore")
    os.makedirs(d, exist_ok=True)
    w = rng.normal(size=(8, 4))
    sets = {}
    for suffix, n in (("", 40), ("_test", 20)):
        xc = rng.normal(size=(n, 8)).astype(np.float32)
        yc = np.argmax(xc @ w + 0.5 * rng.normal(size=(n, 4)), axis=1).astype(np.int64)
        yc[rng.random(n) < 0.2] = -100
        yc[0] = -100
        np.save(os.path.join(d, f"X{suffix}.npy"), xc)
        np.save(os.path.join(d, f"y{suffix}.npy"), yc)
        sets[suffix] = (xc, yc)
    torch.manual_seed(32)
    mlp = Mlp8()
    fit(mlp, *(torch.from_numpy(v) for v in sets[""]), steps=30, lr=0.02)
    export(mlp, os.path.join(out, "mlp8.pt"), trace=True, example=torch.zeros(2, 8))

    # A small ViT on the CIFAR fixture images (32x32, 10 classes), fitted a little like the ResNet.
    torch.manual_seed(33)
    vit = arch.TinyViT(10, d=32, layers=2, heads=2, patch=8)
    tr_x, tr_y = cifar_io.read_binary(os.path.join(out, "cifar-bin"), "train")
    fit(vit, torch.from_numpy(cifar_io.normalize(tr_x)), torch.from_numpy(tr_y), steps=15, lr=0.003)
    export(vit, os.path.join(out, "vit.pt"), trace=True)


def make(out):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    # Images: 5 train files of 12 records, 1 test file of 20; the same in every format.
    rng = np.random.default_rng(7)
    tr_x = rng.integers(0, 256, size=(60, 3, 32, 32), dtype=np.uint8)
    tr_y = rng.integers(0, 10, size=60).astype(np.uint8)
    te_x = rng.integers(0, 256, size=(20, 3, 32, 32), dtype=np.uint8)
    te_y = rng.integers(0, 10, size=20).astype(np.uint8)

    # A tiny CIFAR ResNet-8 (width 4): conv weights, BN, a Linear with bias; fitted a little to the
    # train images so that the landscape has a basin (BN starts from random affine params and statistics).
    model = arch.CifarResNet(8, num_classes=10, width=4)
    randomize_bn(model, g)
    xt, yt = torch.from_numpy(cifar_io.normalize(tr_x)), torch.from_numpy(tr_y.astype(np.int64))
    fit(model, xt, yt, steps=40, lr=0.02)
    export(model, os.path.join(out, "resnet.pt"))
    export(model, os.path.join(out, "resnet_traced.pt"), trace=True)
    export(OomAbove8(model), os.path.join(out, "oom_above_8.pt"))
    torch.save(model.state_dict(), os.path.join(out, "state_dict.pt"))  # not TorchScript
    export(BadOutput(), os.path.join(out, "bad_output.pt"))
    # Curvature: a smooth CNN with BatchNorm (untrained: a saddle, with negative eigenvalues), the
    # models whose products are not usable, and a ResNet-20 for the comparison with PyHessian.
    torch.manual_seed(21)
    cnn = SmoothCNN()
    randomize_bn(cnn, g)
    export(cnn, os.path.join(out, "smooth_cnn.pt"))
    wn = WeightNormCNN()
    randomize_bn(wn, torch.Generator().manual_seed(77))
    export(wn, os.path.join(out, "weightnorm_cnn.pt"))
    convs = ConvsCNN()
    randomize_bn(convs, torch.Generator().manual_seed(78))
    export(convs, os.path.join(out, "convs_cnn.pt"))
    export(NoGrad(), os.path.join(out, "nograd.pt"))
    export(NanGrad(), os.path.join(out, "nangrad.pt"))
    torch.manual_seed(20)
    r20 = arch.build("resnet20")
    randomize_bn(r20, g)
    export(r20, os.path.join(out, "resnet20.pt"))
    # A second ResNet-20 (another seed, its own generator) as the other end of a curve.
    torch.manual_seed(22)
    r20b = arch.build("resnet20")
    randomize_bn(r20b, torch.Generator().manual_seed(23))
    from safetensors.torch import save_file as save_st
    save_st({k: v.contiguous() for k, v in r20b.state_dict().items()}, os.path.join(out, "resnet20_b.safetensors"))
    with open(os.path.join(out, "garbage.pt"), "wb") as f:
        f.write(b"this is not a model\n")

    for split, x, y in (("train", tr_x, tr_y), ("test", te_x, te_y)):
        cifar_io.write_binary(os.path.join(out, "cifar-bin"), split, x, y)
        cifar_io.write_python(os.path.join(out, "cifar-py", "cifar-10-batches-py"), split, x, y)
    os.makedirs(os.path.join(out, "npy_nchw"), exist_ok=True)
    np.save(os.path.join(out, "npy_nchw", "X.npy"), tr_x)
    np.save(os.path.join(out, "npy_nchw", "y.npy"), tr_y.astype(np.int64))
    np.save(os.path.join(out, "npy_nchw", "X_test.npy"), te_x)  # the test split (--split test)
    np.save(os.path.join(out, "npy_nchw", "y_test.npy"), te_y.astype(np.int64))
    os.makedirs(os.path.join(out, "npy_nhwc"), exist_ok=True)
    np.save(os.path.join(out, "npy_nhwc", "X.npy"), np.ascontiguousarray(tr_x.transpose(0, 2, 3, 1)))
    np.save(os.path.join(out, "npy_nhwc", "y.npy"), tr_y.astype(np.int32))
    # Float images, already normalized by the user.
    os.makedirs(os.path.join(out, "npy_float"), exist_ok=True)
    np.save(os.path.join(out, "npy_float", "X.npy"), cifar_io.normalize(tr_x))
    np.save(os.path.join(out, "npy_float", "y.npy"), tr_y.astype(np.int64))
    # The same images in three consecutive batches of 20 (m-sharpness against each batch alone).
    for b in range(3):
        d = os.path.join(out, "sharp_parts", str(b))
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "X.npy"), cifar_io.normalize(tr_x)[20 * b:20 * (b + 1)])
        np.save(os.path.join(d, "y.npy"), tr_y[20 * b:20 * (b + 1)].astype(np.int64))

    # Regression: an MLP fitting y = x^2 (trained briefly), MSE.
    xs = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    ys = xs ** 2
    mlp = arch.SmallMLP(16)
    fit(mlp, torch.from_numpy(xs), torch.from_numpy(ys), steps=300, lr=0.01, loss=F.mse_loss)
    export(mlp, os.path.join(out, "mlp.pt"))
    # BatchNorm statistics deliberately wrong for the data (eval and recompute disagree), and a
    # checkpoint whose running variances are far smaller (a line past it extrapolates them below 0).
    wrong = arch.CifarResNet(8, num_classes=10, width=4)
    wrong.load_state_dict(model.state_dict())
    far = arch.CifarResNet(8, num_classes=10, width=4)
    far.load_state_dict(model.state_dict())
    with torch.no_grad():
        for m in wrong.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(2.0)
                m.running_var.mul_(8.0)
        for m in far.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.mul_(0.05)
    export(wrong, os.path.join(out, "bn_wrong.pt"))
    save_file({k: v.contiguous() for k, v in far.state_dict().items()}, os.path.join(out, "bn_far.safetensors"))
    os.makedirs(os.path.join(out, "square"), exist_ok=True)
    np.save(os.path.join(out, "square", "X.npy"), xs)
    np.save(os.path.join(out, "square", "y.npy"), ys)

    # Bad inputs.
    bad = os.path.join(out, "bad")
    os.makedirs(bad, exist_ok=True)
    trunc = os.path.join(bad, "truncated")
    cifar_io.write_binary(trunc, "train", tr_x, tr_y)
    with open(os.path.join(trunc, "data_batch_3.bin"), "r+b") as f:
        f.truncate(12 * 3073 - 100)
    badlabel = os.path.join(bad, "cifar_label")
    cifar_io.write_binary(badlabel, "train", tr_x, tr_y)
    with open(os.path.join(badlabel, "data_batch_2.bin"), "r+b") as f:
        f.seek(3073 * 5)
        f.write(bytes([11]))
    for name, x, y in (("labels_range", tr_x, np.full(60, 12, dtype=np.int64)),
                       ("length", tr_x, tr_y[:50].astype(np.int64)),
                       ("float_targets", tr_x, np.zeros(60, dtype=np.float32))):
        os.makedirs(os.path.join(bad, name), exist_ok=True)
        np.save(os.path.join(bad, name, "X.npy"), x)
        np.save(os.path.join(bad, name, "y.npy"), y)
    # Float images with one NaN (sample 13), and float regression targets with an inf (sample 5).
    nan_x = cifar_io.normalize(tr_x).copy()
    nan_x[13, 2, 5, 7] = np.nan
    os.makedirs(os.path.join(bad, "nan_x"), exist_ok=True)
    np.save(os.path.join(bad, "nan_x", "X.npy"), nan_x)
    np.save(os.path.join(bad, "nan_x", "y.npy"), tr_y.astype(np.int64))
    inf_y = (xs ** 2).copy()
    inf_y[5, 0] = np.inf
    os.makedirs(os.path.join(bad, "inf_y"), exist_ok=True)
    np.save(os.path.join(bad, "inf_y", "X.npy"), xs)
    np.save(os.path.join(bad, "inf_y", "y.npy"), inf_y)
    # Directions for a different model: a Linear net's parameter names.
    other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    save_file({f"x.{k}": v.detach() for k, v in other.named_parameters()}, os.path.join(bad, "other_dirs.safetensors"))
    # A resnet8 checkpoint in the wrappers people save: nested under 'net' with DataParallel's
    # 'module.' prefix (torch.save), and a plain safetensors state dict; plus its TorchScript.
    ck = os.path.join(out, "ckpt")
    os.makedirs(ck, exist_ok=True)
    torch.manual_seed(5)
    r8 = arch.build("resnet8")
    randomize_bn(r8, g)
    sd = {k: v.detach().clone() for k, v in r8.state_dict().items()}
    torch.save({"epoch": 3, "net": {f"module.{k}": v for k, v in sd.items()}}, os.path.join(ck, "nested.pt"))
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(ck, "plain.safetensors"))
    export(r8, os.path.join(ck, "resnet8.pt"))
    trajectories(out, model, g)
    make_tokens(out)
    trained_resnet(out)
    linear_least_squares(out)
    connect_pair(out)
    print(f"fixtures -> {out}")


class BnMLP(nn.Module):
    """2 -> 32 -> 32 -> 2 with BatchNorm1d after each hidden Linear (the mode-connectivity pair)."""

    def __init__(self, width=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width),
                                 nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        return self.net(x)


def spirals(n, rng):
    """Two interleaved spirals in the plane, labels 0/1, a little noise."""
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    c = rng.integers(0, 2, n)
    r = t / (3 * np.pi)
    x = np.stack([r * np.cos(t + np.pi * c), r * np.sin(t + np.pi * c)], 1) + 0.03 * rng.normal(size=(n, 2))
    return x.astype(np.float32), c.astype(np.int64)


def connect_pair(out):
    """spirals/ (256 train, 128 test points) and two BnMLPs fitted to it from different seeds
    (pair_a.pt, pair_b.pt scripted; pair_b.safetensors its state dict): the straight line between
    them crosses a loss barrier of about 1 (nats), a trained curve does not. pair_narrow.safetensors:
    a BnMLP of width 16 (the same names, other shapes)."""
    from safetensors.torch import save_file
    rng = np.random.default_rng(3)
    x, y = spirals(256, rng)
    xt, yt = spirals(128, rng)
    d = os.path.join(out, "spirals")
    os.makedirs(d, exist_ok=True)
    for name, v in (("X", x), ("y", y), ("X_test", xt), ("y_test", yt)):
        np.save(os.path.join(d, f"{name}.npy"), v)
    # 4096 more points of the same spirals, in file order and sorted by label (all of class 0
    # first): estimates from part of the data (--rel-error) must not depend on the file's order.
    xb, yb = spirals(4096, np.random.default_rng(4))
    by = np.argsort(yb, kind="stable")
    for name, order in (("spirals_big", np.arange(4096)), ("spirals_big_sorted", by)):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "X.npy"), xb[order])
        np.save(os.path.join(d, "y.npy"), yb[order])
    # A test split for the big set (2048 points): --rel-error on several splits.
    xbt, ybt = spirals(2048, np.random.default_rng(5))
    np.save(os.path.join(out, "spirals_big", "X_test.npy"), xbt)
    np.save(os.path.join(out, "spirals_big", "y_test.npy"), ybt)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for seed, name in ((1, "pair_a"), (2, "pair_b")):
        torch.manual_seed(seed)
        m = BnMLP()
        fit(m, xs, ys, steps=600, lr=0.02)
        m.eval()
        export(m, os.path.join(out, f"{name}.pt"))
        if name == "pair_b":
            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, f"{name}.safetensors"))
    # The same layers, narrower: every name matches, the shapes do not.
    save_file({k: v.contiguous() for k, v in BnMLP(16).state_dict().items()}, os.path.join(out, "pair_narrow.safetensors"))


def curve_weights(curve, t):
    """(w_A, w_bend, w_B) of θ(t) as docs/landscape.md defines the Bezier curve and the chain."""
    if curve == "bezier":
        return (1 - t) ** 2, 2 * t * (1 - t), t * t
    return (1 - 2 * t, 2 * t, 0.0) if t <= 0.5 else (0.0, 2 - 2 * t, 2 * t - 1)


def curve_lr(lr, e, epochs):
    f = e / epochs
    return lr * (1.0 if f <= 0.5 else (1.0 - (f - 0.5) / 0.4 * 0.99 if f <= 0.9 else 0.01))


def connect_reference(a):
    """Curve training between two BnMLPs (or, with --arch, two width-4 ResNet-8s or ResNet-20s) as
    losscape documents it, written out with torch.optim.SGD on the bend, with the documented
    --augment draws (flips, then crop offsets, per minibatch, after the epoch's shuffle and t
    draws; crops from images padded by 4 pixels of byte-0 black), and the loss of θ(t) from a bend
    file with update_bn."""
    from safetensors.torch import load_file
    from torch.func import functional_call
    from torch.optim.swa_utils import update_bn

    def state_of(path):
        if path.endswith(".safetensors"):
            return load_file(path)
        return {k: v.detach() for k, v in torch.jit.load(path, map_location="cpu").state_dict().items()}

    sa, sb = state_of(a.from_), state_of(a.to)
    nets = {"resnet8w4": lambda: arch.CifarResNet(8, num_classes=10, width=4),
            "resnet20": lambda: arch.build("resnet20"), "bnmlp": BnMLP}
    net = nets[a.arch]()
    names = [k for k, _ in net.named_parameters()]
    x, y = load_data(a.data, "train")
    augment = set() if a.augment == "none" else set(a.augment.split(","))
    # Byte 0 after normalization, per channel: the value the crop's padding has.
    black = torch.from_numpy(cifar_io.normalize(np.zeros((1, 3, 1, 1), np.uint8))).view(1, 3, 1, 1)

    def augmented(xb):
        if "flip" in augment:
            f = torch.rand(len(xb)) < 0.5
            xb = torch.where(f.view(-1, 1, 1, 1), xb.flip(3), xb)
        if "crop" in augment:
            off = torch.randint(0, 9, (len(xb), 2))
            h, w = xb.shape[2], xb.shape[3]
            padded = F.pad(xb - black, (4, 4, 4, 4)) + black
            xb = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(off.tolist())])
        return xb
    result = {}
    if a.epochs:
        draws = json.load(open(a.progress))["t"] if a.progress else None
        bend = {k: ((sa[k].float() + sb[k].float()) / 2).clone().requires_grad_(True) for k in names}
        result["start"] = {k: v.detach().reshape(-1).tolist() for k, v in bend.items()}
        opt = torch.optim.SGD(list(bend.values()), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
        net.load_state_dict(sa)
        net.train()
        n, bs = len(y), a.batch_size
        batches = (n + bs - 1) // bs
        same_draws = True
        for e in range(a.epochs):
            torch.manual_seed(a.seed * 2 ** 20 + e)
            order = torch.randperm(n)
            ts = torch.rand(batches, dtype=torch.float64).tolist()
            if draws is not None:
                same_draws = same_draws and draws[e] == ts
                ts = draws[e]
            for group in opt.param_groups:
                group["lr"] = curve_lr(a.lr, e, a.epochs)
            for j in range(batches):
                idx = order[j * bs:(j + 1) * bs]
                wa, wm, wb = curve_weights(a.curve, ts[j])
                theta = {k: (wa * sa[k].float() + wm * bend[k].detach() + wb * sb[k].float()).requires_grad_(True)
                         for k in names}
                loss = F.cross_entropy(functional_call(net, theta, (augmented(x[idx]),)), y[idx])
                grads = torch.autograd.grad(loss, [theta[k] for k in names])
                for k, g in zip(names, grads):
                    bend[k].grad = wm * g
                opt.step()
        result["bend"] = {k: v.detach().reshape(-1).tolist() for k, v in bend.items()}
        result["same_draws"] = same_draws
    if a.bend:
        sm = load_file(a.bend)
        xb = x[:a.bn_samples]
        loader = [xb[i:i + a.eval_batch_size] for i in range(0, len(xb), a.eval_batch_size)]
        xe, ye = load_data(a.data, a.split)
        losses = []
        for t in json.loads(a.points):
            wa, wm, wb = curve_weights(a.curve, t)
            sd = {k: wa * sa[k].float() + wm * sm[k].float() + wb * sb[k].float()
                  for k in sa if sa[k].is_floating_point()}
            net.load_state_dict(sd, strict=False)
            update_bn(loader, net)
            net.eval()
            with torch.no_grad():
                out = net(xe)
            losses.append(ce_scores(out, ye)[0])
        result["loss"] = losses
    with open(a.out, "w") as f:
        json.dump(result, f)


def linear_least_squares(out):
    """linear.pt and linear/ (X.npy [64, 6], y.npy [64, 2] float): a Linear(6, 2) at the exact
    least-squares minimum of its data (weights and bias from lstsq), so that under MSE the loss is
    exactly L(θ) + ½ δᵀHδ around it and every sharpness measure has a closed form."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(64, 6)).astype(np.float64) * np.array([1.0, 0.5, 2.0, 1.5, 0.8, 1.2])
    y = x @ rng.normal(size=(6, 2)) + 0.3 * rng.normal(size=(64, 2)) + 0.5
    a = np.concatenate([x, np.ones((64, 1))], axis=1)
    sol, *_ = np.linalg.lstsq(a, y, rcond=None)
    model = nn.Linear(6, 2)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(sol[:6].T.copy()))
        model.bias.copy_(torch.from_numpy(sol[6].copy()))
    export(model, os.path.join(out, "linear.pt"), trace=True, example=torch.zeros(2, 6))
    d = os.path.join(out, "linear")
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "X.npy"), x.astype(np.float32))
    np.save(os.path.join(d, "y.npy"), y.astype(np.float32))
    # Two reflections through the minimum, θ* ± δ: the same loss, and a convex loss between them.
    from safetensors.torch import save_file
    dg = np.random.default_rng(12)
    delta = {k: torch.from_numpy(dg.normal(size=tuple(v.shape)).astype(np.float32)) * 0.5
             for k, v in model.state_dict().items()}
    for name, sign in (("linear_a", 1.0), ("linear_b", -1.0)):
        save_file({k: (v.detach() + sign * delta[k]).contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out, f"{name}.safetensors"))


def trained_resnet(out):
    """trained_r8.pt and trained/ (X.npy, y.npy: 32 normalized float images): a ResNet-8 of width 4
    with BatchNorm trained as the demo trains its model (SGD with momentum, weight decay, a cosine
    schedule) to a low loss on synthetic CIFAR-like images. Its Hessian on those images has λmin
    ≈ -0.01 λmax and a bulk near 0: a convergence test measured against max|λ| accepts a bulk
    Ritz value near 0 as λmin after a few products."""
    import synthetic_cifar
    x, y = synthetic_cifar.make(300, 1, synthetic_cifar.prototypes(0))
    x = torch.from_numpy(cifar_io.normalize(x))
    y = torch.from_numpy(y.astype(np.int64))
    torch.manual_seed(0)
    model = arch.CifarResNet(8, num_classes=10, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps = 300
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    export(model, os.path.join(out, "trained_r8.pt"))
    d = os.path.join(out, "trained")
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "X.npy"), x[:32].numpy())
    np.save(os.path.join(d, "y.npy"), y[:32].numpy())


def numpy_pca(vectors):
    """sklearn.decomposition.PCA(n_components=2) written out: mean-centred SVD."""
    c = vectors - vectors.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    var = s ** 2
    return vt[:2], var[:2] / var.sum()


def trajectories(out, model, g):
    """Checkpoint sets for line / plane / trajectory, with numpy reference values."""
    from safetensors.torch import save_file
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = [k for k, _ in model.named_parameters()]
    big = [k for k in params if sd[k].dim() > 1]          # what biasbn PCA looks at
    sizes = [sd[k].numel() for k in big]

    def write_sd(path, state, how):
        state = {k: v.contiguous() for k, v in state.items()}
        if how == "safetensors":
            save_file(state, path)
        elif how == "zip":
            torch.save(state, path)
        elif how == "nested":
            torch.save({"epoch": 7, "net": {f"module.{k}": v for k, v in state.items()},
                        "optimizer": {"lr": 0.1, "momentum_buffer": torch.zeros(3)}}, path)

    # B: the model moved along a random direction (all params and BN stats), in every form.
    b = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in sd.items()}
    ck = os.path.join(out, "ckpt")
    m_b = arch.CifarResNet(8, num_classes=10, width=4)
    m_b.load_state_dict(b)
    export(m_b, os.path.join(ck, "b.pt"))
    write_sd(os.path.join(ck, "b_zip.pt"), b, "zip")
    write_sd(os.path.join(ck, "b_nested.pth"), b, "nested")
    write_sd(os.path.join(ck, "b.safetensors"), b, "safetensors")
    # What most training scripts write: model.state_dict() (an OrderedDict with _metadata), alone,
    # nested in a dict, and with DataParallel's prefix.
    torch.save(m_b.state_dict(), os.path.join(ck, "b_od.pt"))
    torch.save({"epoch": 9, "state_dict": m_b.state_dict(), "optimizer": {"lr": 0.1}}, os.path.join(ck, "b_od_nested.pt"))
    dp = torch.nn.DataParallel(m_b)
    torch.save(dp.state_dict(), os.path.join(ck, "b_od_dp.pt"))
    c = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in sd.items()}
    write_sd(os.path.join(ck, "c.safetensors"), c, "safetensors")
    torch.save(b, os.path.join(ck, "b_legacy.pt"), _use_new_zipfile_serialization=False)
    mlp = arch.SmallMLP(16)
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, os.path.join(ck, "other_arch.safetensors"))

    # A trajectory inside a known plane: theta_i = theta_T + a_i e1 + b_i e2 (e1, e2 orthonormal over
    # the dim > 1 parameters), 12 checkpoints named so that natural order matters (epoch_10 > epoch_9).
    flat = torch.randn(sum(sizes), 2, generator=g, dtype=torch.float64)
    e, _ = torch.linalg.qr(flat)
    t = np.arange(12)
    coords = np.stack([3.0 * np.cos(t / 4.0) - 3.0 * np.cos(11 / 4.0), 1.0 * np.sin(t / 3.0) - np.sin(11 / 3.0)], 1)
    pdir = os.path.join(out, "traj_plane")
    os.makedirs(pdir, exist_ok=True)
    for i in range(12):
        v = e[:, 0] * coords[i, 0] + e[:, 1] * coords[i, 1]
        st = dict(sd)
        for k, piece in zip(big, torch.split(v, sizes)):
            st[k] = (sd[k].double() + piece.view(sd[k].shape)).float()
        write_sd(os.path.join(pdir, f"epoch_{i}.safetensors"), st, "safetensors")
    with open(os.path.join(out, "traj_plane.json"), "w") as f:
        json.dump({"coords": coords.tolist()}, f)

    # A random trajectory in all directions (6 checkpoints, mixed formats and a duplicated stem),
    # with numpy's PCA of it as the reference.
    rdir = os.path.join(out, "traj_rand")
    os.makedirs(rdir, exist_ok=True)
    states = []
    for i in range(6):
        st = {k: (v + (0.3 / (i + 1)) * torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
              for k, v in sd.items()}
        states.append(st)
        write_sd(os.path.join(rdir, f"step{i + 1}.safetensors"), st, "safetensors")
        if i % 2 == 0:
            write_sd(os.path.join(rdir, f"step{i + 1}.pt"), st, "zip")  # same stem: the .safetensors wins
    vec = np.stack([np.concatenate([(st[k] - states[-1][k]).double().flatten().numpy() for k in big]) for st in states])
    comps, ratio = numpy_pca(vec)
    save_file({f"{n}.{k}": torch.from_numpy(piece.copy()).view(sd[k].shape).float()
               for n, comp in (("pc1", comps[0]), ("pc2", comps[1]))
               for k, piece in zip(big, np.split(comp, np.cumsum(sizes)[:-1]))},
              os.path.join(out, "traj_rand_pca.safetensors"))
    with open(os.path.join(out, "traj_rand_pca.json"), "w") as f:
        json.dump({"ratio": ratio.tolist(), "proj": (vec @ comps.T).tolist()}, f)

    # Isotropic noise: the top two components explain little.
    idir = os.path.join(out, "traj_iso")
    os.makedirs(idir, exist_ok=True)
    for i in range(8):
        st = {k: (v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in sd.items()}
        write_sd(os.path.join(idir, f"ck{i}.safetensors"), st, "safetensors")
    few = os.path.join(out, "traj_few")
    os.makedirs(few, exist_ok=True)
    for i in range(2):
        write_sd(os.path.join(few, f"e{i}.safetensors"), sd, "safetensors")


def archs(out):
    """Every reference architecture as TorchScript (random init)."""
    os.makedirs(out, exist_ok=True)
    for name in arch.ARCHS + arch.TOKEN_ARCHS:
        torch.manual_seed(0)
        export(arch.build(name), os.path.join(out, f"{name}.pt"), example=arch.example_input(name))


def load_data(path, split="train", limit=None):
    """(inputs, targets) as losscape documents: byte images normalized to float32, integer X
    (token ids, int32 or int64) as int64 and otherwise untouched. For an .npy directory, the test
    split is X_test.npy / y_test.npy."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "data_batch_1.bin")):
        x, y = cifar_io.read_binary(path, split)
        x = cifar_io.normalize(x)
    else:
        d = path if os.path.isdir(path) else os.path.dirname(path)
        suffix = "_test" if split == "test" else ""
        x = np.load(os.path.join(d, f"X{suffix}.npy"))
        y = np.load(os.path.join(d, f"y{suffix}.npy"))
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif x.dtype in (np.int32, np.int64):
            x = x.astype(np.int64)
        if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
    if limit:
        x, y = x[:limit], y[:limit]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y))


def pick_output(out, key="logits"):
    """The tensor losscape scores: the output itself, a tuple's or list's first tensor, a dict's
    entry `key`; anything else is an error."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
        raise SystemExit(f"the model returned a {type(out).__name__} with no tensor in it")
    if isinstance(out, dict):
        if key not in out:
            raise SystemExit(f"the model returned a dict without {key!r} (keys: {sorted(out)})")
        return out[key]
    raise SystemExit(f"the model returned a {type(out).__name__}, not a tensor")


IGNORE_INDEX = -100


def ce_scores(out, y):
    """(mean cross-entropy, accuracy) over the samples or tokens whose label is not -100: the
    per-token losses summed in float64 over the whole set and divided by their number (not a mean
    of batch means). Logits [N, C] with labels [N], or [N, T, V] with labels [N, T]."""
    y = y.long()
    if out.dim() == y.dim() + 1 and out.dim() > 2:
        out = out.reshape(-1, out.size(-1))
        y = y.reshape(-1)
    keep = y != IGNORE_INDEX
    count = int(keep.sum())
    if count == len(y):  # no ignored label: exactly as before
        loss = F.cross_entropy(out, y, reduction="sum").double().item() / len(y)
        acc = (out.argmax(1) == y).sum().item() / len(y)
        return loss, acc
    if count == 0:
        return float("nan"), float("nan")
    per = F.cross_entropy(out, y, ignore_index=IGNORE_INDEX, reduction="none")
    loss = per.double().sum().item() / count
    acc = ((out.argmax(1) == y) & keep).sum().item() / count
    return loss, acc


def reference(a):
    from safetensors.torch import load_file
    model = torch.jit.load(a.model, map_location="cpu").eval()
    dirs = load_file(a.directions)
    params = dict(model.named_parameters())
    theta = {k: v.detach().clone() for k, v in params.items()}
    x, y = load_data(a.data, a.split, a.limit)
    points = json.loads(a.points)
    results = []
    with torch.no_grad():
        for alpha, beta in points:
            for k, p in params.items():
                v = theta[k] + dirs[f"x.{k}"] * alpha
                if f"y.{k}" in dirs:
                    v = v + dirs[f"y.{k}"] * beta
                p.copy_(v)
            out = pick_output(model(x), a.output).float()
            if a.loss == "ce":
                loss, acc = ce_scores(out, y)
            else:
                loss = F.mse_loss(out.reshape(len(y), -1), y.float().reshape(len(y), -1), reduction="sum").double().item()
                loss /= out.numel()
                acc = float("nan")
            results.append({"loss": None if loss != loss else loss, "acc": None if acc != acc else acc})
        for k, p in params.items():
            p.copy_(theta[k])
    with open(a.out, "w") as f:
        json.dump(results, f)


def directions(a):
    """The definition, written out in PyTorch, to compare losscape's directions with."""
    from safetensors.torch import save_file
    model = torch.jit.load(a.model, map_location="cpu")
    params = [(k, v.detach().float()) for k, v in model.named_parameters()]
    torch.manual_seed(a.seed)
    out = {}
    for axis in ("x", "y"):
        d = {k: torch.randn(p.shape) for k, p in params}
        for k, p in params:
            if p.dim() <= 1:
                if a.ignore == "biasbn":
                    d[k].zero_()
                elif a.norm != "none":
                    d[k].mul_(p.norm() / (d[k].norm() + 1e-10))
            elif a.norm == "filter":
                for i in range(p.shape[0]):
                    d[k][i].mul_(p[i].norm() / (d[k][i].norm() + 1e-10))
            elif a.norm == "layer":
                d[k].mul_(p.norm() / (d[k].norm() + 1e-10))
        if a.norm == "model":
            keep = [k for k, p in params if not (p.dim() <= 1 and a.ignore == "biasbn")]
            pn = torch.sqrt(sum((dict(params)[k].double() ** 2).sum() for k in keep))
            dn = torch.sqrt(sum((d[k].double() ** 2).sum() for k in keep))
            for k in keep:
                d[k].mul_(float(pn / (dn + 1e-10)))
        out.update({f"{axis}.{k}": v.contiguous() for k, v in d.items()})
    save_file(out, a.out)


def bn_reference(a):
    """update_bn at every point, on an eager copy of the fixture ResNet-8 (width 4)."""
    from safetensors.torch import load_file
    from torch.optim.swa_utils import update_bn
    from torch.utils.data import DataLoader, TensorDataset
    ts = torch.jit.load(a.model, map_location="cpu")
    model = arch.CifarResNet(8, num_classes=10, width=4)
    model.load_state_dict(ts.state_dict())
    model.eval()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y = load_data(a.data, a.split, a.limit)
    xb, _ = load_data(a.data, "train", a.bn_samples)
    loader = DataLoader(TensorDataset(xb), batch_size=a.batch_size, shuffle=False)
    if a.line_to:
        end = load_file(a.line_to)
    else:
        dirs = load_file(a.directions)
    results = []
    with torch.no_grad():
        for alpha, beta in json.loads(a.points):
            state = {}
            for k, v in start.items():
                if not v.is_floating_point():
                    state[k] = v
                elif a.line_to:
                    state[k] = torch.lerp(v, end[k], alpha)
                else:
                    w = v
                    if f"x.{k}" in dirs:
                        w = w + dirs[f"x.{k}"] * alpha
                    if f"y.{k}" in dirs:
                        w = w + dirs[f"y.{k}"] * beta
                    state[k] = w
            model.load_state_dict(state)
            update_bn(loader, model)
            model.eval()
            out = model(x)
            loss = F.cross_entropy(out, y.long(), reduction="sum").double().item() / len(y)
            acc = (out.argmax(1) == y.long()).sum().item() / len(y)
            results.append({"loss": loss, "acc": acc})
    with open(a.out, "w") as f:
        json.dump(results, f)


def dense_hessian(a):
    """Eigenvalues, trace and top eigenvectors of the dense Hessian (float64) of the dataset-mean
    loss over the chosen parameters, at θ + a·δ + b·η for each point of --points. With --operator
    ggn the Gauss-Newton matrix (1/N) Σ J_iᵀ H_i J_i instead (J from torch.func.jacrev, H_i the
    loss's Hessian in the outputs formed by torch.func.hessian per target), with empirical-fisher
    (1/N) Σ g_i g_iᵀ from the stacked per-target gradients (jacrev of the per-target losses)."""
    from safetensors.torch import load_file, save_file
    ts = torch.jit.load(a.model, map_location="cpu")
    model = eager(a.arch)
    model.load_state_dict(ts.state_dict())
    model = model.double().eval()
    x, y = load_data(a.data, a.split, a.limit)
    x = x.double()
    if a.loss == "mse":
        y = y.double()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    names = [k for k, v in params.items() if a.ignore == "keep" or v.dim() > 1]
    if a.params:
        import re
        names = [k for k in names if any(re.fullmatch(p, k) for p in a.params.split(","))]
    dirs = load_file(a.directions) if a.directions else {}
    results = []
    vectors = {}
    for p_i, (alpha, beta) in enumerate(json.loads(a.points)):
        base = {}
        for k, v in params.items():
            w = v
            if f"x.{k}" in dirs:
                w = w + dirs[f"x.{k}"].double() * alpha
            if f"y.{k}" in dirs:
                w = w + dirs[f"y.{k}"].double() * beta
            base[k] = w
        sizes = [base[k].numel() for k in names]

        def outputs(flat):
            p = dict(base)
            off = 0
            for k, n in zip(names, sizes):
                p[k] = flat[off:off + n].view(base[k].shape)
                off += n
            return torch.func.functional_call(model, {**p, **buffers}, (x,))

        def target_losses(out):
            """Per-target losses (the terms the loss sums) and the loss's denominator."""
            if a.loss == "ce":
                c = out.shape[-1]
                labels = y.long().reshape(-1)
                return F.cross_entropy(out.reshape(-1, c), labels, reduction="none"), int((labels != -100).sum())
            sq = (out.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2
            return sq.sum(1), out.numel()

        def f(flat):
            losses, denom = target_losses(outputs(flat))
            return losses.sum() / denom

        flat0 = torch.cat([base[k].flatten() for k in names])
        if a.operator == "hessian":
            h = torch.autograd.functional.hessian(f, flat0)
        elif a.operator == "ggn":
            out0 = outputs(flat0).detach()
            jac = torch.func.jacrev(outputs)(flat0)  # [N, ..., K, P]
            k = out0.shape[-1]
            jac = jac.reshape(-1, k, len(flat0))
            rows = out0.reshape(-1, k)
            _, denom = target_losses(out0)
            h = torch.zeros(len(flat0), len(flat0), dtype=torch.float64)
            for i in range(rows.shape[0]):
                if a.loss == "ce":
                    label = y.long().reshape(-1)[i]
                    if label == -100:
                        continue
                    hi = torch.func.hessian(lambda z: F.cross_entropy(z[None], label[None], reduction="sum"))(rows[i])
                else:
                    target = y.reshape(rows.shape[0], -1)[i].double()
                    hi = torch.func.hessian(lambda z: ((z - target) ** 2).sum())(rows[i])
                h += jac[i].t() @ hi @ jac[i]
            h /= denom
        else:
            grads = torch.func.jacrev(lambda flat: target_losses(outputs(flat))[0])(flat0)  # [M, P]
            _, denom = target_losses(outputs(flat0))
            h = grads.t() @ grads / denom
        h = 0.5 * (h + h.t())
        evals, evecs = torch.linalg.eigh(h)
        # The diagonal blocks, per tensor and per module (the name without its last component).
        offsets = {}
        off = 0
        for k, n in zip(names, sizes):
            offsets[k] = list(range(off, off + n))
            off += n
        groups = {"tensors": [(k, [k]) for k in names], "modules": []}
        for k in names:
            m = k.rsplit(".", 1)[0] if "." in k else k
            if groups["modules"] and groups["modules"][-1][0] == m:
                groups["modules"][-1][1].append(k)
            elif any(g[0] == m for g in groups["modules"]):
                next(g for g in groups["modules"] if g[0] == m)[1].append(k)
            else:
                groups["modules"].append((m, [k]))
        blocks = {}
        for kind, gs in groups.items():
            blocks[kind] = []
            for name, members in gs:
                idx = torch.tensor([i for k in members for i in offsets[k]])
                hb = h[idx][:, idx]
                ev = torch.linalg.eigvalsh(hb)
                blocks[kind].append({"name": name, "tensors": members, "n": len(idx),
                                     "max": float(ev[-1]), "min": float(ev[0]), "trace": float(torch.trace(hb))})
        results.append({"eigenvalues": evals.tolist(), "trace": float(torch.trace(h)), "n": len(flat0),
                        "names": names, "blocks": blocks})
        if p_i == 0:
            for i in range(3):
                v = evecs[:, -1 - i]
                off = 0
                for k, n in zip(names, sizes):
                    vectors[f"largest{i}.{k}"] = v[off:off + n].view(base[k].shape).float().contiguous()
                    off += n
    if a.vectors:
        save_file(vectors, a.vectors)
    with open(a.out, "w") as f:
        json.dump(results, f)


def eigsh_hessian(a):
    """The k largest and smallest eigenvalues of the Hessian of the dataset-mean loss (float64,
    over the parameters with more than one dimension, or all with --ignore keep), BatchNorm in eval
    mode, by scipy's eigsh (ARPACK, tol 1e-10) over PyTorch Hessian-vector products (double
    backward through the TorchScript module)."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    model = torch.jit.load(a.model, map_location="cpu").eval().double()
    x, y = load_data(a.data, a.split, a.limit)
    x = x.double()
    y = y.long()
    params = [p for p in model.parameters() if a.ignore == "keep" or p.dim() > 1]
    n = sum(p.numel() for p in params)
    count = [0]

    def hvp(v):
        count[0] += 1
        v = torch.from_numpy(np.asarray(v, dtype=np.float64).ravel())
        loss = F.cross_entropy(model(x), y, reduction="sum") / len(y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([t.reshape(-1) for t in g])
        h = torch.autograd.grad(flat @ v, params)
        return torch.cat([t.reshape(-1) for t in h]).numpy()

    op = LinearOperator((n, n), matvec=hvp, dtype=np.float64)
    top = eigsh(op, k=a.k, which="LA", tol=1e-10, ncv=40, return_eigenvectors=False)
    bottom = eigsh(op, k=a.k, which="SA", tol=1e-10, ncv=80, return_eigenvectors=False)
    with open(a.out, "w") as f:
        json.dump({"n": n, "largest": sorted(top.tolist(), reverse=True), "smallest": sorted(bottom.tolist()),
                   "products": count[0]}, f)


def sharpness_scale(t, scale, floor):
    """The scale vector c of a parameter tensor, as docs/landscape.md defines it."""
    if scale == "adaptive":
        return t.abs() + floor
    if scale == "none":
        return torch.ones_like(t)
    if t.dim() > 1:
        flat = t.reshape(t.shape[0], -1)
        return (flat.norm(dim=1, keepdim=True) / flat.shape[1] ** 0.5).expand_as(flat).reshape(t.shape)
    return torch.full_like(t, float(t.norm()) / t.numel() ** 0.5)


def sharpness_closed(a):
    """Closed forms for linear.pt under MSE (weights only: biasbn): H of the weight [K, d] flattened
    row-major is block-diagonal, (2 / (N K)) XᵀX per output; C = diag(c)."""
    import itertools
    model = torch.jit.load(a.model)
    w = dict(model.named_parameters())["weight"].detach().double()
    x, _ = load_data(a.data)
    x = x.double()
    n, k = x.shape[0], w.shape[0]
    block = 2.0 / (n * k) * x.t() @ x
    h = torch.block_diag(*[block] * k)
    c = sharpness_scale(w, a.scale, a.floor).reshape(-1)
    m = c[:, None] * h * c[None, :]
    rho, t = a.rho, a.threshold
    eig = torch.linalg.eigvalsh(m)
    best = 0.0
    dim = m.shape[0]
    if dim <= 16:
        for signs in itertools.product([-1.0, 1.0], repeat=dim):
            u = torch.tensor(signs, dtype=torch.float64) * rho
            best = max(best, 0.5 * float(u @ m @ u))
    out = {
        "average": 0.5 * rho * rho * float(torch.trace(m)),
        "average_draw_std": rho * rho * float(m.norm()) / 2 ** 0.5,
        "worst_l2": 0.5 * rho * rho * float(eig[-1]),
        "worst_linf": best,
        "pacbayes_loss": (2 * t / float(torch.trace(m))) ** 0.5,
    }
    with open(a.out, "w") as f:
        json.dump(out, f)


def sharpness_reference(a):
    """PyTorch's own sharpness numbers on a TorchScript model (parameters with more than one
    dimension): the average case over M fresh draws, a plain projected-gradient ascent (normalized
    gradient steps of 2ρ/K in the l2 ball, K steps, from δ = 0), and L(θ + δ) − L(θ) for a saved δ."""
    from safetensors.torch import load_file
    model = torch.jit.load(a.model).eval()
    x, y = load_data(a.data, limit=a.limit)
    params = [(k, p) for k, p in model.named_parameters() if p.dim() > 1]
    theta = [p.detach().clone() for _, p in params]
    cs = [sharpness_scale(t, a.scale, a.floor) for t in theta]

    def loss_at(deltas, grad=False):
        with torch.no_grad():
            for (_, p), t, d in zip(params, theta, deltas):
                p.copy_(t + d)
        if grad:
            out = model(x)
            value = class_or_mse(out, y)
            g = torch.autograd.grad(value, [p for _, p in params])
            return float(value), g
        with torch.no_grad():
            return float(class_or_mse(model(x), y)), None

    def class_or_mse(out, y):
        if y.dtype.is_floating_point:
            return F.mse_loss(out.reshape(len(y), -1), y.float().reshape(len(y), -1))
        return F.cross_entropy(out, y.long())

    zero = [torch.zeros_like(t) for t in theta]
    base = loss_at(zero)[0]
    res = {"base": base}
    g = torch.Generator().manual_seed(123)
    diffs = []
    for _ in range(a.samples):
        d = [a.rho * c * torch.randn(t.shape, generator=g) for t, c in zip(theta, cs)]
        diffs.append(loss_at(d)[0] - base)
    diffs = np.array(diffs)
    res["average"] = float(diffs.mean())
    res["average_stderr"] = float(diffs.std(ddof=1) / len(diffs) ** 0.5)
    u = [torch.zeros_like(t) for t in theta]
    best = base
    alpha = 2 * a.rho / a.steps
    for _ in range(a.steps):
        value, grads = loss_at([c * ui for c, ui in zip(cs, u)], grad=True)
        best = max(best, value)
        gu = [c * gi for c, gi in zip(cs, grads)]
        norm = float(torch.sqrt(sum((t * t).sum() for t in gu)))
        if norm == 0:
            break
        u = [ui + alpha * t / norm for ui, t in zip(u, gu)]
        un = float(torch.sqrt(sum((t * t).sum() for t in u)))
        if un > a.rho:
            u = [t * (a.rho / un) for t in u]
    best = max(best, loss_at([c * ui for c, ui in zip(cs, u)])[0])
    res["pgd"] = best - base
    if a.delta:
        dd = load_file(a.delta)
        res["delta_increase"] = loss_at([dd[f"x.{k}"] for k, _ in params])[0] - base
    loss_at(zero)
    with open(a.out, "w") as f:
        json.dump(res, f)


def pyhessian_top(a):
    """PyHessian's top eigenvalue (power iteration) over all parameters, the samples as one batch."""
    from pyhessian import hessian
    ts = torch.jit.load(a.model, map_location="cpu")
    model = eager(a.arch)
    model.load_state_dict(ts.state_dict())
    model.eval()
    x, y = load_data(a.data, a.split, a.limit)
    torch.manual_seed(0)
    h = hessian(model, nn.CrossEntropyLoss(), data=(x, y.long()), cuda=False)
    top, _ = h.eigenvalues(maxIter=a.max_iter, tol=a.tol)
    with open(a.out, "w") as f:
        json.dump({"top": top[0]}, f)


def curvlinops_top(a):
    """curvlinops 3.0.1's top eigenvalue of the Hessian or the GGN (HessianLinearOperator /
    GGNLinearOperator over every parameter, the samples in batches of --batch, eval mode), by scipy's
    eigsh (ARPACK, which='LA', tol 1e-6): the peer tool on the same model, data and set."""
    from curvlinops import GGNLinearOperator, HessianLinearOperator
    from scipy.sparse.linalg import eigsh
    ts = torch.jit.load(a.model, map_location="cpu")
    model = eager(a.arch)
    model.load_state_dict(ts.state_dict())
    model.eval()
    x, y = load_data(a.data, a.split, a.limit)
    data = [(x[i:i + a.batch], y[i:i + a.batch].long()) for i in range(0, len(x), a.batch)]
    params = [p for p in model.parameters() if p.requires_grad]
    cls = {"hessian": HessianLinearOperator, "ggn": GGNLinearOperator}[a.operator]
    op = cls(model, nn.CrossEntropyLoss(reduction="mean"), params, data, check_deterministic=False).to_scipy()
    top = eigsh(op, k=1, which="LA", tol=1e-6, return_eigenvectors=False)
    with open(a.out, "w") as f:
        json.dump({"top": float(top[0])}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    ar = sub.add_parser("archs")
    ar.add_argument("dir")
    r = sub.add_parser("reference")
    r.add_argument("--model", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--split", default="train")
    r.add_argument("--limit", type=int)
    r.add_argument("--directions", required=True)
    r.add_argument("--points", required=True)
    r.add_argument("--loss", default="ce")
    r.add_argument("--output", default="logits", help="the entry of a dict output that is scored")
    r.add_argument("--out", required=True)
    d = sub.add_parser("directions")
    d.add_argument("--model", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--norm", default="filter")
    d.add_argument("--ignore", default="biasbn")
    d.add_argument("--out", required=True)
    b = sub.add_parser("bn-reference")
    b.add_argument("--model", required=True)
    b.add_argument("--data", required=True)
    b.add_argument("--split", default="train")
    b.add_argument("--limit", type=int)
    b.add_argument("--bn-samples", type=int, required=True)
    b.add_argument("--batch-size", type=int, required=True)
    b.add_argument("--directions")
    b.add_argument("--line-to")
    b.add_argument("--points", required=True)
    b.add_argument("--out", required=True)
    dh = sub.add_parser("dense-hessian")
    dh.add_argument("--model", required=True)
    dh.add_argument("--arch", required=True)
    dh.add_argument("--data", required=True)
    dh.add_argument("--split", default="train")
    dh.add_argument("--limit", type=int)
    dh.add_argument("--loss", default="ce")
    dh.add_argument("--ignore", default="biasbn")
    dh.add_argument("--directions")
    dh.add_argument("--points", default="[[0, 0]]")
    dh.add_argument("--vectors")
    dh.add_argument("--operator", default="hessian", choices=["hessian", "ggn", "empirical-fisher"])
    dh.add_argument("--params", help="comma-separated regular expressions, each matching whole names")
    dh.add_argument("--out", required=True)
    cl = sub.add_parser("curvlinops-top")
    cl.add_argument("--model", required=True)
    cl.add_argument("--arch", required=True)
    cl.add_argument("--data", required=True)
    cl.add_argument("--split", default="train")
    cl.add_argument("--limit", type=int)
    cl.add_argument("--batch", type=int, default=32)
    cl.add_argument("--operator", default="hessian", choices=["hessian", "ggn"])
    cl.add_argument("--out", required=True)
    eg = sub.add_parser("eigsh-hessian")
    eg.add_argument("--model", required=True)
    eg.add_argument("--data", required=True)
    eg.add_argument("--split", default="train")
    eg.add_argument("--limit", type=int)
    eg.add_argument("--ignore", default="biasbn")
    eg.add_argument("--k", type=int, default=1)
    eg.add_argument("--out", required=True)
    sc = sub.add_parser("sharpness-closed")
    sc.add_argument("--model", required=True)
    sc.add_argument("--data", required=True)
    sc.add_argument("--scale", default="adaptive")
    sc.add_argument("--floor", type=float, default=0.0)
    sc.add_argument("--rho", type=float, required=True)
    sc.add_argument("--threshold", type=float, default=0.1)
    sc.add_argument("--out", required=True)
    sr = sub.add_parser("sharpness-reference")
    sr.add_argument("--model", required=True)
    sr.add_argument("--data", required=True)
    sr.add_argument("--limit", type=int)
    sr.add_argument("--scale", default="adaptive")
    sr.add_argument("--floor", type=float, default=0.0)
    sr.add_argument("--rho", type=float, required=True)
    sr.add_argument("--samples", type=int, default=100)
    sr.add_argument("--steps", type=int, default=20)
    sr.add_argument("--delta")
    sr.add_argument("--out", required=True)
    ph = sub.add_parser("pyhessian")
    ph.add_argument("--model", required=True)
    ph.add_argument("--arch", required=True)
    ph.add_argument("--data", required=True)
    ph.add_argument("--split", default="train")
    ph.add_argument("--limit", type=int)
    ph.add_argument("--tol", type=float, default=1e-4)
    ph.add_argument("--max-iter", type=int, default=1000)
    ph.add_argument("--out", required=True)
    cr = sub.add_parser("connect-reference")
    cr.add_argument("--from", dest="from_", required=True)
    cr.add_argument("--to", required=True)
    cr.add_argument("--data", required=True)
    cr.add_argument("--curve", default="bezier")
    cr.add_argument("--epochs", type=int, default=0)
    cr.add_argument("--lr", type=float, default=0.015)
    cr.add_argument("--momentum", type=float, default=0.9)
    cr.add_argument("--weight-decay", type=float, default=5e-4)
    cr.add_argument("--batch-size", type=int, default=128)
    cr.add_argument("--seed", type=int, default=0)
    cr.add_argument("--arch", default="bnmlp", choices=["bnmlp", "resnet8w4", "resnet20"])
    cr.add_argument("--augment", default="none")
    cr.add_argument("--progress")
    cr.add_argument("--bend")
    cr.add_argument("--points")
    cr.add_argument("--split", default="train")
    cr.add_argument("--bn-samples", type=int, default=10000)
    cr.add_argument("--eval-batch-size", type=int, default=64)
    cr.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "make":
        make(a.dir)
    elif a.cmd == "archs":
        archs(a.dir)
    elif a.cmd == "reference":
        reference(a)
    elif a.cmd == "bn-reference":
        bn_reference(a)
    elif a.cmd == "curvlinops-top":
        curvlinops_top(a)
    elif a.cmd == "dense-hessian":
        dense_hessian(a)
    elif a.cmd == "eigsh-hessian":
        eigsh_hessian(a)
    elif a.cmd == "sharpness-closed":
        sharpness_closed(a)
    elif a.cmd == "sharpness-reference":
        sharpness_reference(a)
    elif a.cmd == "pyhessian":
        pyhessian_top(a)
    elif a.cmd == "connect-reference":
        connect_reference(a)
    else:
        directions(a)


if __name__ == "__main__":
    main()
