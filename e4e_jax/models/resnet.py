"""torchvision-layout ResNets: the Bottleneck ResNet-50 of MoCo-v2 (`ResNet`) and the BasicBlock ResNet-34
backbone of pSp / ReStyle's ResNet encoders (`ResNet34Backbone`, at the end).

NHWC, BatchNorm in inference mode (running statistics; the network is a frozen feature extractor):

    conv1 7x7/2 (no bias) -> bn1 -> relu -> maxpool 3/2 pad 1
    layer{1..4}: Bottleneck x stage_sizes, width 64·2^l, expansion 4; the stride (2 in layers 2-4) sits on
                 the 3x3 conv (torchvision "v1.5"); the first block of each layer has a 1x1 conv + BN
                 downsample shortcut
    global average pool -> (B, 2048) features
    optional MoCo head: 'mlp' fc.0 (2048->2048) -> relu -> fc.2 (2048->dim), or 'linear' fc (2048->dim)

Parameter tree (torch name -> ours; conv kernels (kh, kw, in, out), BN weight/bias -> scale/bias and
running_mean/var -> batch_stats mean/var):
    conv1, bn1                               -> conv1, bn1
    layer{l}.{i}.conv{j} / bn{j}             -> layer{l}_{i}/conv{j} / bn{j}
    layer{l}.{i}.downsample.0 / .1           -> layer{l}_{i}/downsample_conv / downsample_bn
    fc.0 / fc.2 (mlp) or fc (linear)         -> head/fc_0 / fc_2 or head/fc  (Dense kernel (in, out))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from e4e_jax.models.irse import PReLU
from e4e_jax.models.layers import torch_batch_norm

RESNET50_STAGES = (3, 4, 6, 3)
RESNET34_STAGES = (3, 4, 6, 3)  # the same block counts, of BasicBlocks
STEM_WIDTH, STEM_KERNEL = 64, 7  # conv1: 7x7, 64 channels
EXPANSION = 4  # a Bottleneck's output has EXPANSION x its width


def stage_width(l: int) -> int:
    """Bottleneck width of layer l + 1 (l = 0..3): 64, 128, 256, 512."""
    return STEM_WIDTH * 2**l


def _conv(features: int, k: int, stride: int, precision, dtype, name: str) -> nn.Conv:
    p = k // 2  # torch pads k//2 symmetrically (flax 'SAME' would pad (0, 1) at stride 2).
    return nn.Conv(
        features,
        (k, k),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=False,
        precision=precision,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _bn(dtype, name: str, train: bool = False, axis_name: str | None = None) -> nn.BatchNorm:
    return torch_batch_norm(train, axis_name, dtype, name)


class Bottleneck(nn.Module):
    """(B, H, W, in) -> (B, H/s, W/s, EXPANSION·width)."""

    width: int
    stride: int = 1
    downsample: bool = False
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(precision=self.precision, dtype=self.dtype)
        out = nn.relu(_bn(self.dtype, "bn1")(_conv(self.width, 1, 1, name="conv1", **kw)(x)))
        out = nn.relu(_bn(self.dtype, "bn2")(_conv(self.width, 3, self.stride, name="conv2", **kw)(out)))
        out = _bn(self.dtype, "bn3")(_conv(EXPANSION * self.width, 1, 1, name="conv3", **kw)(out))
        if self.downsample:
            x = _conv(EXPANSION * self.width, 1, self.stride, name="downsample_conv", **kw)(x)
            x = _bn(self.dtype, "downsample_bn")(x)
        return nn.relu(out + x)


class ResNet(nn.Module):
    """torchvision ResNet (Bottleneck) trunk returning pooled features, optionally a MoCo head.

    Attributes:
      stage_sizes: blocks per layer; (3, 4, 6, 3) is ResNet-50.
      head: None (features only), 'mlp' (MoCo-v2: fc.0, relu, fc.2) or 'linear' (MoCo-v1 / classifier fc).
      head_dims: output sizes of the head's dense layers ((2048, 128) for MoCo-v2 'mlp', (128,) 'linear').
      precision: lax precision of convs and dense layers.

    __call__(x, with_head=False): x (B, H, W, 3) -> (B, 2048) pooled features, or the head's output.
    """

    stage_sizes: Sequence[int] = RESNET50_STAGES
    head: str | None = None
    head_dims: Sequence[int] = ()
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, with_head: bool = False):
        kw = dict(precision=self.precision, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = nn.relu(_bn(self.dtype, "bn1")(_conv(STEM_WIDTH, STEM_KERNEL, 2, name="conv1", **kw)(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # -inf padding, as torch
        for l, n in enumerate(self.stage_sizes):
            for i in range(n):
                x = Bottleneck(
                    stage_width(l),
                    stride=2 if (l > 0 and i == 0) else 1,
                    downsample=i == 0,
                    name=f"layer{l + 1}_{i}",
                    **kw,
                )(x)
        feats = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        if not with_head:
            return feats
        if self.head is None:
            raise ValueError("this ResNet has no head (head=None); call it with with_head=False")
        return ProjectionHead(self.head, tuple(self.head_dims), self.precision, name="head")(feats)


class ProjectionHead(nn.Module):
    """MoCo projection: 'mlp' = fc_0 -> relu -> fc_2; 'linear' = fc. (B, 2048) -> (B, head_dims[-1])."""

    kind: str
    dims: Sequence[int]
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        if self.kind == "mlp":
            x = nn.relu(nn.Dense(self.dims[0], precision=self.precision, name="fc_0")(x))
            return nn.Dense(self.dims[1], precision=self.precision, name="fc_2")(x)
        if self.kind == "linear":
            return nn.Dense(self.dims[0], precision=self.precision, name="fc")(x)
        raise ValueError(f"head must be 'mlp' or 'linear', got {self.kind!r}")


def architecture_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """stage_sizes / head / head_dims of ResNet `params` (the 'params' collection), from their names."""
    sizes = []
    for l in range(1, 5):
        n = sum(1 for k in params if str(k).startswith(f"layer{l}_"))
        if n == 0:
            raise ValueError(f"ResNet params have no layer{l}_* blocks; not a torchvision-layout ResNet")
        sizes.append(n)
    head = params.get("head")
    if head is None:
        return {"stage_sizes": sizes, "head": None, "head_dims": []}
    if "fc_0" in head:
        return {
            "stage_sizes": sizes,
            "head": "mlp",
            "head_dims": [int(head["fc_0"]["kernel"].shape[1]), int(head["fc_2"]["kernel"].shape[1])],
        }
    return {"stage_sizes": sizes, "head": "linear", "head_dims": [int(head["fc"]["kernel"].shape[1])]}


# ----------------------------------------------------------------------------------- ResNet-34 (BasicBlock)
class BasicBlock(nn.Module):
    """torchvision BasicBlock (expansion 1): relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), both convs
    3x3 (the stride on conv1); the shortcut is x, or a 1x1 conv + BN (`downsample`) where the stride or the
    width changes. (B, H, W, in) -> (B, H/s, W/s, width)."""

    width: int
    stride: int = 1
    downsample: bool = False
    precision: Any = None
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(precision=self.precision, dtype=self.dtype)

        def bn(name):
            return _bn(self.dtype, name, train, self.axis_name)

        out = nn.relu(bn("bn1")(_conv(self.width, 3, self.stride, name="conv1", **kw)(x)))
        out = bn("bn2")(_conv(self.width, 3, 1, name="conv2", **kw)(out))
        if self.downsample:
            x = bn("downsample_bn")(_conv(self.width, 1, self.stride, name="downsample_conv", **kw)(x))
        return nn.relu(out + x)


def basic_block_specs(stage_sizes: Sequence[int] = RESNET34_STAGES) -> list[tuple[int, int, bool]]:
    """(width, stride, downsample) of every BasicBlock in body order (torchvision `_make_layer`: stride 2 on
    the first block of layers 2-4, a downsample where the stride or the width changes)."""
    specs, cin = [], STEM_WIDTH
    for l, n in enumerate(stage_sizes):
        width = stage_width(l)
        for i in range(n):
            stride = 2 if (l > 0 and i == 0) else 1
            specs.append((width, stride, stride != 1 or cin != width))
            cin = width
    return specs


class ResNet34Backbone(nn.Module):
    """The ResNet-34 backbone of pSp / ReStyle's ResNet encoders (official `ResNetBackboneEncoder`,
    `ResNetProgressiveBackboneEncoder`, `ResNetGradualStyleEncoder`): conv1 7x7/2 (Cin -> 64, no bias),
    bn1, a PReLU(64) (official attribute `relu`), no max-pool, then torchvision resnet34's layer1..layer4
    flattened into one body of 16 BasicBlocks.

    Parameter tree (torch name -> ours): conv1 / bn1 / relu (PReLU weight) -> conv1 / bn1 / prelu (alpha);
    body.{i}.conv{1,2} / bn{1,2} / downsample.{0,1} -> body_{i}/conv{1,2} / bn{1,2} / downsample_{conv,bn}.

    __call__(x, train=False): x (B, H, W, Cin) -> (B, H/16, W/16, 512) (ceil halving; 256x256 -> 16x16).
    BatchNorm: running statistics unless `train` (then batch statistics over `axis_name` when given).
    """

    stage_sizes: Sequence[int] = RESNET34_STAGES
    precision: Any = None
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(precision=self.precision, dtype=self.dtype)
        x = _conv(STEM_WIDTH, STEM_KERNEL, 2, name="conv1", **kw)(x.astype(self.dtype))
        x = PReLU(dtype=self.dtype, name="prelu")(_bn(self.dtype, "bn1", train, self.axis_name)(x))
        for i, (width, stride, downsample) in enumerate(basic_block_specs(self.stage_sizes)):
            x = BasicBlock(width, stride, downsample, axis_name=self.axis_name, name=f"body_{i}", **kw)(x, train)
        return x
