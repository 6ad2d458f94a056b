"""Reference architectures of the loss-landscape literature, exportable as TorchScript.

* CIFAR ResNet-20/56/110 (He et al. 2016, 3 stages of 16/32/64 channels, BatchNorm, 1x1
  projection shortcuts where the shape changes, as in the Li et al. experiments), plus a
  `resnet8` used by the demo and the tests because it trains in seconds on a CPU.
* VGG-9 as used by Li et al. (7 conv+BN+ReLU layers, 3 max-pools, Linear+BN1d+ReLU, Linear).
* torchvision's ResNet-50 and VGG-11 (with BatchNorm) with 10 output classes.
* `tinyvit`: a small vision transformer for 32x32 images (8x8 patches, class token, 2 pre-LayerNorm
  blocks), and `tinylm`: a small causal transformer language model (token + learned positional
  embeddings, pre-LayerNorm causal self-attention, GELU MLP, final LayerNorm, linear head) whose
  input is int64 token ids [B, T] and output logits [B, T, vocab]. Both script and trace
  (`example_input(name)` gives a tracing input); sizes are constructor arguments.

`build(name)` returns an nn.Module; `export.py` turns it (optionally with a state_dict loaded)
into a TorchScript file that `losscape` reads. ARCHS are the image models (CIFAR-shaped input),
TOKEN_ARCHS the token models.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs."""

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        stages = []
        for i, cout in enumerate([width, 2 * width, 4 * width]):
            blocks = []
            for b in range(n):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.layer3(self.layer2(self.layer1(y)))
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.linear(y)


class VGG9(nn.Module):
    """VGG-9 of Li et al.: conv 64,64,M,128,128,M,256,256,256,M then FC 256 (BN) and classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers = []
        cin = 3
        for c in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                cin = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(256 * 4 * 4, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.classifier(self.fc(self.features(x).flatten(1)))


class SmallMLP(nn.Module):
    """A 1-input regression MLP (the y = x^2 example of the README)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention; with `causal`, position t attends to positions <= t only.
    `sdpa` uses F.scaled_dot_product_attention (one fused op in TorchScript); otherwise the
    attention is written out: softmax(q k^T / sqrt(d_head)) v, the mask by torch.triu + masked_fill."""

    def __init__(self, d: int, heads: int, causal: bool, sdpa: bool = False):
        super().__init__()
        if d % heads != 0:
            raise ValueError(f"width {d} is not a multiple of {heads} heads")
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads
        self.causal = causal
        self.sdpa = sdpa
        self.scale = 1.0 / math.sqrt(d // heads)

    def forward(self, x):
        b, t, c = x.size(0), x.size(1), x.size(2)
        qkv = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            att = torch.matmul(q, k.transpose(-2, -1)) * self.scale
            if self.causal:
                mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
                att = att.masked_fill(mask, float("-inf"))
            y = torch.matmul(att.softmax(dim=-1), v)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) (GELU, 4x wide)."""

    def __init__(self, d: int, heads: int, causal: bool, sdpa: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, causal, sdpa)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A small causal transformer language model: int64 token ids [B, T] (T <= max_len) ->
    next-token logits [B, T, vocab]. `hidden(idx)` is the final LayerNorm's output [B, T, d]."""

    def __init__(self, vocab: int = 64, d: int = 32, layers: int = 2, heads: int = 2, max_len: int = 16,
                 sdpa: bool = False):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(max_len, d))
        self.blocks = nn.Sequential(*[Block(d, heads, causal=True, sdpa=sdpa) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def hidden(self, idx):
        t = idx.size(1)
        return self.ln_f(self.blocks(self.tok(idx) + self.pos[:t]))

    def forward(self, idx):
        return self.head(self.hidden(idx))


class TinyViT(nn.Module):
    """A small vision transformer: conv patch embedding (patch x patch, stride patch), a class
    token, learned positional embedding, pre-LayerNorm blocks, final LayerNorm, a linear head on
    the class token: [B, 3, size, size] -> [B, classes]."""

    def __init__(self, num_classes: int = 10, d: int = 32, layers: int = 2, heads: int = 2, patch: int = 8,
                 size: int = 32, sdpa: bool = False):
        super().__init__()
        n = (size // patch) ** 2
        self.patch = nn.Conv2d(3, d, patch, stride=patch)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d))
        self.pos = nn.Parameter(0.02 * torch.randn(n + 1, d))
        self.blocks = nn.Sequential(*[Block(d, heads, causal=False, sdpa=sdpa) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(p.size(0), -1, -1), p], dim=1) + self.pos
        return self.head(self.ln(self.blocks(h))[:, 0])


ARCHS = ["resnet8", "resnet20", "resnet56", "resnet110", "vgg9", "resnet50", "vgg11", "mlp", "tinyvit"]
TOKEN_ARCHS = ["tinylm"]


def example_input(name: str, batch: int = 2, seq_len: int = 16):
    """An input to trace architecture `name` with: token ids for token models, a [B, 1] column for
    the MLP, 32x32 images otherwise."""
    name = name.lower()
    if name in TOKEN_ARCHS:
        return torch.zeros(batch, seq_len, dtype=torch.int64)
    if name == "mlp":
        return torch.zeros(batch, 1)
    return torch.zeros(batch, 3, 32, 32)


def build(name: str, num_classes: int = 10) -> nn.Module:
    name = name.lower()
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in (8, 20, 32, 44, 56, 110):
        return CifarResNet(int(name[6:]), num_classes)
    if name == "vgg9":
        return VGG9(num_classes)
    if name == "resnet50":
        import torchvision
        return torchvision.models.resnet50(num_classes=num_classes)
    if name == "vgg11":
        import torchvision
        return torchvision.models.vgg11_bn(num_classes=num_classes)
    if name == "mlp":
        return SmallMLP()
    if name == "tinyvit":
        return TinyViT(num_classes)
    if name == "tinylm":
        return TinyLM()
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS + TOKEN_ARCHS)}")


def unwrap_state_dict(obj):
    """The tensors of a checkpoint in the forms people save: nested under 'state_dict'/'net'/'model',
    with DataParallel's 'module.' prefix."""
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "net", "model"):
            if key in obj:
                obj = obj[key]
                break
        else:
            raise ValueError(f"no state_dict found in checkpoint (keys: {sorted(obj)[:8]})")
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
