"""Reference architectures of the loss-landscape literature, exportable as TorchScript.

* CIFAR ResNet-20/56/110 (He et al. 2016, 3 stages of 16/32/64 channels, BatchNorm, 1x1
  projection shortcuts where the shape changes, as in the Li et al. experiments), plus a
  `resnet8` used by the demo and the tests because it trains in seconds on a CPU.
* VGG-9 as used by Li et al. (7 conv+BN+ReLU layers, 3 max-pools, Linear+BN1d+ReLU, Linear).
* torchvision's ResNet-50 and VGG-11 (with BatchNorm) with 10 output classes.

`build(name)` returns an nn.Module; `export.py` turns it (optionally with a state_dict loaded)
into a TorchScript file that `losscape` reads.
"""
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


ARCHS = ["resnet8", "resnet20", "resnet56", "resnet110", "vgg9", "resnet50", "vgg11", "mlp"]


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
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")


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
