"""A minimal stand-in for the `torchvision` package, so that tests can build networks with the real PyPI
packages `lpips` (0.1.4) and `pytorch-fid` (0.3.0), which both import torchvision.

Why a stand-in: PyPI's torchvision wheels are built against one exact torch release (torchvision 0.29.1
pins torch 2.14.1 with CUDA); next to the CPU torch 2.13 of this project it fails on import ("operator
torchvision::nms does not exist"), and installing it would replace that torch. Neither package uses
anything of torchvision beyond a few model constructors and module classes, listed here, written from
torchvision's published architectures (module names, layer indices, shapes and the forwards that run):

  torchvision.__version__
  torchvision.models.alexnet(pretrained=False)     .features (13 layers) / .avgpool / .classifier
  torchvision.models.vgg16(pretrained=False)       .features (31 layers, config 'D') / .avgpool / .classifier
  torchvision.models.inception_v3(weights=None, num_classes=..., aux_logits=False, init_weights=...)
  torchvision.models.inception.{BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
                                Inception3}

Pretrained weights are refused (nothing is ever downloaded). Inception3 has no forward here: pytorch-fid
only takes its blocks, and replaces (and re-implements the forward of) every InceptionA/C/E; the
InceptionB/D forwards, which pytorch-fid runs as Mixed_6a/Mixed_7a, are torchvision's.

    with standin_torchvision():
        lpips = pytest.importorskip("lpips")
        ...
"""

from __future__ import annotations

import contextlib
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

__version__ = "0.29.0+standin"  # pytorch-fid reads it: >= 0.13 takes `weights=`, >= 0.6 `init_weights=`

# Packages whose imports bind the stand-in; they are imported afresh inside standin_torchvision() and
# forgotten afterwards, so nothing outside the block sees the stand-in.
_BOUND_PACKAGES = ("torchvision", "lpips", "pytorch_fid")

ALEXNET_FEATURES = 13  # len(torchvision.models.alexnet().features)
VGG16_CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
IMAGENET_CLASSES = 1000
INCEPTION_BN_EPS = 0.001  # BasicConv2d's BatchNorm2d eps (TensorFlow's value)
INCEPTION_INIT_STD = 0.1  # Inception3(init_weights=True): truncated normal std of conv / linear weights


def _refuse_pretrained(pretrained: bool, weights) -> None:
    if pretrained or weights is not None:
        raise RuntimeError(
            "torchvision stand-in: pretrained weights are not available (nothing is downloaded); "
            "construct with pretrained=False / weights=None"
        )


def _classifier(in_features: int, num_classes: int) -> nn.Sequential:
    """Both classifiers' layout; built on the meta device (shapes only): no test runs them, and VGG16's
    would be 120M parameters to initialise."""
    with torch.device("meta"):
        return nn.Sequential(
            nn.Dropout(),
            nn.Linear(in_features, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )


class AlexNet(nn.Module):
    """torchvision AlexNet (the 'one weird trick' variant: 64-192-384-256-256 channels)."""

    def __init__(self, num_classes: int = IMAGENET_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        assert len(self.features) == ALEXNET_FEATURES
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = _classifier(256 * 6 * 6, num_classes)


class VGG(nn.Module):
    """torchvision VGG without batch norm: `features` from a config, 7x7 average pool, classifier."""

    def __init__(self, config, num_classes: int = IMAGENET_CLASSES):
        super().__init__()
        layers, cin = [], 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = _classifier(512 * 7 * 7, num_classes)


def alexnet(pretrained: bool = False, weights=None, progress: bool = True, **kwargs) -> AlexNet:
    _refuse_pretrained(pretrained, weights)
    return AlexNet(**kwargs)


def vgg16(pretrained: bool = False, weights=None, progress: bool = True, **kwargs) -> VGG:
    _refuse_pretrained(pretrained, weights)
    return VGG(VGG16_CONFIG_D, **kwargs)


# ---------------------------------------------------------------------------------------------- Inception-v3
class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm2d(eps=0.001) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=INCEPTION_BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    """35x35 block: 1x1 (64) | 1x1 (48) -> 5x5 (64) | 1x1 (64) -> 3x3 (96) -> 3x3 (96) | pool -> 1x1."""

    def __init__(self, in_channels: int, pool_features: int, conv_block=None):
        super().__init__()
        conv_block = conv_block or BasicConv2d
        self.branch1x1 = conv_block(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = conv_block(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = conv_block(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = conv_block(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv_block(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv_block(96, 96, kernel_size=3, padding=1)
        self.branch_pool = conv_block(in_channels, pool_features, kernel_size=1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 (384) | 1x1 (64) -> 3x3 (96) -> 3x3/2 (96) | 3x3/2 max pool."""

    def __init__(self, in_channels: int, conv_block=None):
        super().__init__()
        conv_block = conv_block or BasicConv2d
        self.branch3x3 = conv_block(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = conv_block(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv_block(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv_block(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3(x)
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([branch3x3, dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 / 7x1) of width channels_7x7."""

    def __init__(self, in_channels: int, channels_7x7: int, conv_block=None):
        super().__init__()
        conv_block = conv_block or BasicConv2d
        c7 = channels_7x7
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = conv_block(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = conv_block(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = conv_block(c7, c7, **row)
        self.branch7x7_3 = conv_block(c7, 192, **col)
        self.branch7x7dbl_1 = conv_block(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = conv_block(c7, c7, **col)
        self.branch7x7dbl_3 = conv_block(c7, c7, **row)
        self.branch7x7dbl_4 = conv_block(c7, c7, **col)
        self.branch7x7dbl_5 = conv_block(c7, 192, **row)
        self.branch_pool = conv_block(in_channels, 192, kernel_size=1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1 -> 3x3/2 (320) | 1x1 -> 1x7 -> 7x1 -> 3x3/2 (192) | 3x3/2 max pool."""

    def __init__(self, in_channels: int, conv_block=None):
        super().__init__()
        conv_block = conv_block or BasicConv2d
        self.branch3x3_1 = conv_block(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = conv_block(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = conv_block(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = conv_block(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv_block(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv_block(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded 1x3 / 3x1 outputs: 320 + 2·384 + 2·384 + 192 = 2048 channels."""

    def __init__(self, in_channels: int, conv_block=None):
        super().__init__()
        conv_block = conv_block or BasicConv2d
        row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.branch1x1 = conv_block(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = conv_block(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = conv_block(384, 384, **row)
        self.branch3x3_2b = conv_block(384, 384, **col)
        self.branch3x3dbl_1 = conv_block(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = conv_block(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = conv_block(384, 384, **row)
        self.branch3x3dbl_3b = conv_block(384, 384, **col)
        self.branch_pool = conv_block(in_channels, 192, kernel_size=1)


class Inception3(nn.Module):
    """torchvision Inception3's modules (its state dict keys); aux_logits=True (InceptionAux) is not provided."""

    def __init__(
        self,
        num_classes: int = IMAGENET_CLASSES,
        aux_logits: bool = True,
        transform_input: bool = False,
        inception_blocks=None,
        init_weights: bool | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        if aux_logits or inception_blocks is not None:
            raise NotImplementedError("torchvision stand-in: only aux_logits=False with the default blocks")
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        if init_weights is None or init_weights:  # torchvision's default when not told
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=INCEPTION_INIT_STD, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)


def inception_v3(*, weights=None, progress: bool = True, **kwargs) -> Inception3:
    _refuse_pretrained(False, weights)
    return Inception3(**kwargs)


# ---------------------------------------------------------------------------------------------- sys.modules
def _modules() -> dict[str, types.ModuleType]:
    """torchvision, torchvision.models and torchvision.models.inception, holding the objects above."""
    root = types.ModuleType("torchvision", __doc__)
    models = types.ModuleType("torchvision.models")
    inception = types.ModuleType("torchvision.models.inception")
    root.__version__, root.models = __version__, models
    for name in (
        "BasicConv2d",
        "InceptionA",
        "InceptionB",
        "InceptionC",
        "InceptionD",
        "InceptionE",
        "Inception3",
        "inception_v3",
    ):
        setattr(inception, name, globals()[name])
    for name in ("AlexNet", "VGG", "alexnet", "vgg16", "Inception3", "inception_v3"):
        setattr(models, name, globals()[name])
    models.inception = inception
    return {m.__name__: m for m in (root, models, inception)}


def _is_bound(name: str) -> bool:
    return name.split(".")[0] in _BOUND_PACKAGES


@contextlib.contextmanager
def standin_torchvision():
    """Install the stand-in as `torchvision` in sys.modules for the block; restore sys.modules after.

    lpips / pytorch_fid modules imported inside the block are dropped afterwards (they hold the
    stand-in), and any such modules imported before are put back as they were."""
    saved = {name: mod for name, mod in sys.modules.items() if _is_bound(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(_modules())
    try:
        yield
    finally:
        for name in [n for n in sys.modules if _is_bound(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
