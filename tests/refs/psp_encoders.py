"""PyTorch reference of the pSp / e4e encoders (IR-SE backbone, GradualStyleEncoder, Encoder4Editing and
the W encoder BackboneEncoderUsingLastLayerIntoW, e4e's SingleStyleCodeEncoder).

Written for the parity tests from the published architecture (pSp, Richardson et al. 2021; e4e, Tov et
al. 2021; IR-SE from ArcFace) with the module and parameter names of the official code, so that
`state_dict()` has the official keys (`input_layer.0.weight`, `body.3.res_layer.5.fc1.weight`,
`styles.0.convs.0.weight`, `styles.0.linear.weight`, `latlayer1.bias`, `linear.weight`, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_STAGES = {
    50: ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)),
    100: ((64, 64, 3), (64, 128, 13), (128, 256, 30), (256, 512, 3)),
    152: ((64, 64, 3), (64, 128, 8), (128, 256, 36), (256, 512, 3)),
}


def unit_specs(num_layers):
    """(in_channel, depth, stride) per bottleneck unit; the first unit of each stage has stride 2."""
    out = []
    for in_c, depth, n in _STAGES[num_layers]:
        out += [(in_c, depth, 2)] + [(depth, depth, 1)] * (n - 1)
    return out


class SEModule(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIR(nn.Module):
    """bottleneck_IR (use_se=False) / bottleneck_IR_SE (use_se=True)."""

    def __init__(self, in_channel, depth, stride, use_se=True):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if use_se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


def input_layer(input_nc=3):
    """Conv3x3(input_nc -> 64, no bias), BatchNorm, PReLU (official `input_layer`)."""
    return nn.Sequential(nn.Conv2d(input_nc, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))


def body(num_layers=50, mode="ir_se"):
    """The bottleneck units in order (official `body`)."""
    return nn.Sequential(*[BottleneckIR(i, d, s, use_se=mode == "ir_se") for i, d, s in unit_specs(num_layers)])


class IRSEBody(nn.Module):
    """input_layer + body; forward returns (last output, [outputs at `taps`])."""

    def __init__(self, num_layers=50, mode="ir_se", input_nc=3):
        super().__init__()
        self.input_layer = input_layer(input_nc)
        self.body = body(num_layers, mode)

    def forward(self, x, taps=()):
        x = self.input_layer(x)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in taps:
                feats[i] = x
        return x, [feats[t] for t in taps]


class EqualLinear(nn.Module):
    """rosinality EqualLinear without activation: x @ (W * scale).T + b * lr_mul."""

    def __init__(self, in_dim, out_dim, lr_mul=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1 / math.sqrt(in_dim) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    def __init__(self, in_c, out_c, spatial):
        super().__init__()
        self.out_c = out_c
        n = int(math.log2(spatial))
        mods = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(n - 1):
            mods += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*mods)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x):
        return self.linear(self.convs(x).view(-1, self.out_c))


def upsample_add(x, y):
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class _FPNEncoder(nn.Module):
    coarse_ind, middle_ind = 3, 7

    def __init__(self, num_layers=50, mode="ir_se", stylegan_size=1024, input_nc=3):
        super().__init__()
        self.input_layer = input_layer(input_nc)
        self.body = body(num_layers, mode)
        self.style_count = 2 * int(math.log2(stylegan_size)) - 2
        self.styles = nn.ModuleList(
            [
                GradualStyleBlock(512, 512, 16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64)
                for i in range(self.style_count)
            ]
        )
        self.latlayer1 = nn.Conv2d(256, 512, 1, 1, 0)
        self.latlayer2 = nn.Conv2d(128, 512, 1, 1, 0)

    def features(self, x):
        x = self.input_layer(x)
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == 6:
                c1 = x
            elif i == 20:
                c2 = x
            elif i == 23:
                c3 = x
        return c1, c2, c3


class GradualStyleEncoder(_FPNEncoder):
    """pSp: every style from its own block."""

    def forward(self, x):
        c1, c2, c3 = self.features(x)
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        feats = [c3] * self.coarse_ind + [p2] * (self.middle_ind - self.coarse_ind)
        feats += [p1] * (self.style_count - self.middle_ind)
        return torch.stack([s(f) for s, f in zip(self.styles, feats)], dim=1)


class Encoder4Editing(_FPNEncoder):
    """e4e: w0 from styles[0](c3), w_i = w0 + styles[i](features) for 1 <= i <= progressive_stage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.progressive_stage = 18  # ProgressiveStage.Inference

    def forward(self, x):
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        w = w0.repeat(self.style_count, 1, 1).permute(1, 0, 2)
        feats = c3
        for i in range(1, min(self.progressive_stage + 1, self.style_count)):
            if i == self.coarse_ind:
                p2 = upsample_add(c3, self.latlayer1(c2))
                feats = p2
            elif i == self.middle_ind:
                p1 = upsample_add(p2, self.latlayer2(c1))
                feats = p1
            w[:, i] += self.styles[i](feats)
        return w


class BackboneEncoderUsingLastLayerIntoW(nn.Module):
    """e4e's SingleStyleCodeEncoder: the IR-SE body, a global average pool, EqualLinear(512, 512), and the
    one w repeated for every style layer: (B, style_count, 512). Attributes registered in the official order."""

    def __init__(self, num_layers=50, mode="ir_se", stylegan_size=1024, input_nc=3):
        super().__init__()
        self.input_layer = input_layer(input_nc)
        self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = EqualLinear(512, 512, lr_mul=1)
        self.body = body(num_layers, mode)
        self.style_count = 2 * int(math.log2(stylegan_size)) - 2

    def forward(self, x):
        x = self.output_pool(self.body(self.input_layer(x)))
        w = self.linear(x.view(-1, 512))
        return w.repeat(self.style_count, 1, 1).permute(1, 0, 2)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with non-default BatchNorm statistics, PReLU slopes and biases.

    Conv weights get a He-like scale so activations stay O(1) through 24+ units.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(shape, scale=1.0, offset=0.0):
        return torch.randn(shape, generator=g) * scale + offset

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(rnd(m.weight.shape, 1.0 / math.sqrt(fan_in)))
            if m.bias is not None:
                m.bias.copy_(rnd(m.bias.shape, 0.1))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(rnd(m.weight.shape, 0.1, 1.0))
            m.bias.copy_(rnd(m.bias.shape, 0.1))
            m.running_mean.copy_(rnd(m.running_mean.shape, 0.1))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
            m.num_batches_tracked.fill_(1234)
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.4)
        elif isinstance(m, EqualLinear):
            m.weight.copy_(rnd(m.weight.shape))
            m.bias.copy_(rnd(m.bias.shape, 0.1))
    return module
