"""PyTorch references of the perceptual / similarity networks and of e4e's losses built on them.

Written for the parity tests from the published architectures (torchvision AlexNet/VGG16/ResNet-50, LPIPS
v0.1, MoCo-v2, ArcFace IR-SE50) with the module and parameter names of the official code, so that
`state_dict()` has the official keys:
  torchvision   features.{n}.weight, conv1.weight, layer1.0.downsample.1.running_mean, fc.weight, ...
  lpips         lin{k}.model.1.weight, scaling_layer.shift, net.slice{s}.{n}.weight
  MoCo-v2       module.encoder_q.*, module.encoder_k.*, module.queue, module.queue_ptr
  ArcFace       input_layer.*, body.*, output_layer.{0,3,4}.*
No torchvision is needed (it is not installed); the layer lists are written out here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LPIPS_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


# ---------------------------------------------------------------------------------------------- backbones
def alexnet_features() -> nn.Sequential:
    """torchvision `alexnet().features` (indices 0..12)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
    )


def vgg16_features() -> nn.Sequential:
    """torchvision `vgg16().features` (cfg 'D', indices 0..30)."""
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


class TorchvisionFeatures(nn.Module):
    """Holds `features` so that state_dict() has torchvision's `features.{n}.*` keys. A tiny stand-in
    `classifier` (torchvision's is 58M+ parameters) checks that converters skip it."""

    def __init__(self, net: str):
        super().__init__()
        self.features = alexnet_features() if net == "alex" else vgg16_features()
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(4, 3))


# The lpips package's slices of `features` (pretrained_networks.alexnet / vgg16).
_SLICES = {"alex": (0, 2, 5, 8, 10, 12), "vgg": (0, 4, 9, 16, 23, 30)}


class _Slices(nn.Module):
    def __init__(self, features: nn.Sequential, net: str):
        super().__init__()
        b = _SLICES[net]
        for s in range(5):
            sl = nn.Sequential()
            for i in range(b[s], b[s + 1]):
                sl.add_module(str(i), features[i])
            setattr(self, f"slice{s + 1}", sl)

    def forward(self, x):
        outs = []
        for s in range(5):
            x = getattr(self, f"slice{s + 1}")(x)
            outs.append(x)
        return outs


class NetLinLayer(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, 1, 0, bias=False))


class ScalingLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x):
        return (x - self.shift) / self.scale


class LPIPSRef(nn.Module):
    """lpips.LPIPS(net, version='0.1'): forward(x, y) -> (B, 1, 1, 1) distances; inputs NCHW in [-1, 1]."""

    def __init__(self, net: str, features: nn.Sequential):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = _Slices(features, net)
        for k, c in enumerate(LPIPS_CHANNELS[net]):
            setattr(self, f"lin{k}", NetLinLayer(c))

    @staticmethod
    def normalize(x, eps=1e-10):
        return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)

    def forward(self, x, y, per_layer=False):
        fx, fy = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        res = [
            getattr(self, f"lin{k}").model((self.normalize(a) - self.normalize(b)) ** 2).mean([2, 3], keepdim=True)
            for k, (a, b) in enumerate(zip(fx, fy))
        ]
        return res if per_layer else sum(res[1:], res[0])


def e4e_lpips_loss(ref: LPIPSRef, y_hat, y):
    """e4e's criteria.lpips.LPIPS: sum of every layer's spatial means over the batch, / B."""
    return ref(y_hat, y).sum() / y_hat.shape[0]


# ---------------------------------------------------------------------------------------------- ResNet-50
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3x3 (v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
            if downsample
            else None
        )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNetTV(nn.Module):
    """torchvision resnet50 (Bottleneck, [3, 4, 6, 3]); `fc` replaceable by MoCo's MLP."""

    def __init__(self, stage_sizes=(3, 4, 6, 3), num_classes=128):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for l, n in enumerate(stage_sizes):
            width = 64 * 2**l
            blocks = []
            for i in range(n):
                blocks.append(Bottleneck(cin, width, 2 if (l > 0 and i == 0) else 1, i == 0))
                cin = width * 4
            setattr(self, f"layer{l + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class MoCo(nn.Module):
    """MoCo-v2 (mlp=True): encoder_q/encoder_k with fc = Linear(2048, 2048), ReLU, Linear(2048, dim)."""

    def __init__(self, dim=128, K=64):
        super().__init__()
        self.encoder_q, self.encoder_k = ResNetTV(num_classes=dim), ResNetTV(num_classes=dim)
        for enc in (self.encoder_q, self.encoder_k):
            enc.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), enc.fc)
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


class DDPWrapper(nn.Module):
    """Stands in for DistributedDataParallel: its state_dict() prefixes every key with 'module.'."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def moco_feature_net(moco: MoCo) -> nn.Sequential:
    """e4e's MocoLoss model: resnet50 with encoder_q's weights, all children but `fc`."""
    return nn.Sequential(*list(moco.encoder_q.children())[:-1]).eval()


def moco_extract_feats(net: nn.Sequential, x):
    x = F.interpolate(x, size=224)  # nearest
    return F.normalize(net(x), dim=1).reshape(x.shape[0], -1)


def e4e_moco_loss(net, y_hat, y, x):
    """e4e's MocoLoss.forward(y_hat, y, x): (loss, sim_improvement, sim_logs)."""
    return _e4e_similarity(lambda im: moco_extract_feats(net, im), y_hat, y, x)


def _e4e_similarity(extract, y_hat, y, x):
    """The loop shared by IDLoss / MocoLoss.forward: mean of 1 - <f(y_hat), f(y)>, f(y) detached."""
    xf, yf, yhf = extract(x), extract(y).detach(), extract(y_hat)
    n = x.shape[0]
    loss, sim, logs = 0, 0.0, []
    for i in range(n):
        dt, di, dv = yhf[i].dot(yf[i]), yhf[i].dot(xf[i]), yf[i].dot(xf[i])
        logs.append({"diff_target": dt.item(), "diff_input": di.item(), "diff_views": dv.item()})
        loss = loss + 1 - dt
        sim += dt.item() - dv.item()
    return loss / n, sim / n, logs


# ---------------------------------------------------------------------------------------------- ArcFace
class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class ArcFaceBackbone(nn.Module):
    """model_irse.Backbone(input_size=112, num_layers, mode, drop_ratio, affine=True); forward -> l2-normed."""

    def __init__(self, num_layers=50, mode="ir_se", drop_ratio=0.6):
        super().__init__()
        from tests.refs.psp_encoders import IRSEBody  # the shared IR-SE reference (input_layer + body)

        body = IRSEBody(num_layers, mode)
        self.input_layer, self.body = body.input_layer, body.body
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            Flatten(),
            nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512, affine=True),
        )

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        return torch.div(x, torch.norm(x, 2, 1, True))  # l2_norm: no eps


def id_extract_feats(facenet, x):
    x = x[:, :, 35:223, 32:220]
    return facenet(F.adaptive_avg_pool2d(x, (112, 112)))


def e4e_id_loss(facenet, y_hat, y, x):
    """e4e's IDLoss.forward(y_hat, y, x): (loss, sim_improvement, id_logs)."""
    return _e4e_similarity(lambda im: id_extract_feats(facenet, im), y_hat, y, x)


# ---------------------------------------------------------------------------------------------- weights
@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, bn_gain: float = 1.0) -> nn.Module:
    """Random weights with He-like scales and non-default biases, BatchNorm statistics and PReLU slopes.

    bn_gain scales the BN weights of residual branches' last BN (ResNet bn3) to keep 16 blocks stable.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(shape, scale=1.0, offset=0.0):
        return torch.randn(shape, generator=g) * scale + offset

    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(rnd(m.weight.shape, math.sqrt(2.0 / fan_in)))
            if m.bias is not None:
                m.bias.copy_(rnd(m.bias.shape, 0.1))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            gain = bn_gain if name.endswith("bn3") else 1.0
            if m.affine:
                m.weight.copy_(rnd(m.weight.shape, 0.1 * gain, gain))
                m.bias.copy_(rnd(m.bias.shape, 0.1))
            m.running_mean.copy_(rnd(m.running_mean.shape, 0.1))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
            m.num_batches_tracked.fill_(1234)
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.4)
    return module


@torch.no_grad()
def calibrate_bn_(
    module: nn.Module, images: torch.Tensor, bias_shift: float = 0.0, var_floor: float = 0.1
) -> nn.Module:
    """Set every BatchNorm's running statistics from one forward pass over `images` (as training would),
    after shifting the BN biases by `bias_shift`. A random ResNet with such statistics and slightly
    negative biases gives sparse, image-dependent pooled features (cosine between different images well
    below 1), so that similarity losses built on it are not trivially ~0."""
    bns = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for m in bns:
        m.bias.add_(bias_shift)
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the stats of this one batch
    module.train()
    module(images)
    for m in bns:
        m.momentum = 0.1
        m.num_batches_tracked.fill_(1234)
        # Floor the variances: a channel that is ~constant on the batch would otherwise be divided by
        # sqrt(eps) and amplify float rounding ~300x (fp32 results then disagree even with fp64 torch).
        m.running_var.clamp_(min=var_floor)
    return module.eval()


def smooth_images(seed: int, n: int, size: int, cells: int = 4) -> torch.Tensor:
    """(n, 3, size, size) images in [-1, 1]: random cells x cells colour fields, bilinearly upsampled, plus
    10% pixel noise. The noise keeps neighbouring pixels distinct: flat regions would create exact ties
    in max-pooling, where torch and XLA route the (equally valid) gradient to different inputs."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, cells, cells, generator=g) * 2 - 1
    smooth = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return 0.9 * smooth + 0.1 * (torch.rand(n, 3, size, size, generator=g) * 2 - 1)


# ---------------------------------------------------------------------------------------------- checks
def reference_loss_and_grad(loss_fn, net, y_hat, y, x):
    """Run an e4e loss (`e4e_moco_loss` / `e4e_id_loss`) and backprop to y_hat.

    Returns (loss: float, sim_improvement: float, logs: list of dicts, d loss / d y_hat as NHWC numpy)."""
    yt = y_hat.detach().clone().requires_grad_(True)
    loss, sim, logs = loss_fn(net, yt, y, x)
    loss.backward()
    return loss.item(), sim, logs, yt.grad.numpy().transpose(0, 2, 3, 1)


def relative_l2(a, b) -> float:
    """||a - b|| / ||b|| over all entries."""
    return float(np.linalg.norm((np.asarray(a, np.float64) - b).ravel()) / np.linalg.norm(np.ravel(b)))


def assert_gradient_close(grad, ref, rtol_l2: float) -> float:
    """Check an fp32 input gradient of a deep ReLU/PReLU network against PyTorch's (relative L2 error).

    Such gradients are discontinuous at the scale of float rounding: a unit whose pre-activation lies
    within rounding of its kink flips side between implementations and moves the input gradient. Measured
    on the test networks: perturbing y_hat by 1e-6 changes PyTorch's *float64* gradient by 2e-3..5e-3
    (ArcFace IR-SE50) and ~1.5e-2 (ResNet-50) relative L2. So gradients are compared in relative L2 with
    a tolerance a little above that floor; an actual error (a missing term, a wrong resampling or
    stop-gradient) shows up as O(1). Returns the measured error.
    """
    grad = np.asarray(grad)
    assert grad.shape == ref.shape and np.isfinite(grad).all()
    assert np.abs(ref).max() > 0
    err = relative_l2(grad, ref)
    assert err <= rtol_l2, (err, rtol_l2)
    return err
