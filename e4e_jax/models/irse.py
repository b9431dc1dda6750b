"""IR / IR-SE ResNet backbone (Deng et al., ArcFace) as used by pSp/e4e and by the ArcFace identity net.

NHWC throughout. The layer structure follows the official PyTorch code (TreB1eN's InsightFace port, copied
into pSp/e4e):

    input_layer: Conv3x3(Cin->64, no bias) -> BatchNorm -> PReLU(64)
    body_i (bottleneck_IR[_SE]):
        shortcut = x[:, ::s, ::s]                     if in == depth   (torch MaxPool2d(1, s))
                 = BN(Conv1x1(in->depth, stride s))    otherwise
        res      = BN -> Conv3x3(in->depth) -> PReLU -> Conv3x3(depth->depth, stride s) -> BN [-> SE]
        out      = res + shortcut

BatchNorm uses the stored running statistics unless `train=True` (then batch statistics and an update of
the 'batch_stats' collection). Note: flax updates the running variance with the biased batch variance,
torch with the unbiased one; this only matters for training from scratch.

Non-official sizes (small encoders for toy runs): `widths` (the four stage depths, official
(64, 128, 256, 512)) and `units` (units per stage) of IRSEBackbone; None = the official network for
`num_layers`, with the same parameter tree and numerics. The input layer has widths[0] channels and the SE
bottleneck keeps reduction 16 (at least one channel).

Parameter tree (torch name -> ours, see tools/convert_weights/irse.py for the full mapping):
    input_layer.{0,1,2}        -> input_layer/{conv, bn, prelu}
    body.{i}.shortcut_layer.*  -> body_{i}/{shortcut_conv, shortcut_bn}
    body.{i}.res_layer.{0..5}  -> body_{i}/{bn1, conv1, prelu, conv2, bn2, se/{fc1, fc2}}
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from e4e_jax.models.layers import torch_batch_norm

Dtype = Any

# Official stage depths and units per stage (`get_blocks`); the first unit of each stage has stride 2.
WIDTHS = (64, 128, 256, 512)
UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
# The depth of a body of n units (24 -> 50, 49 -> 100, 50 -> 152), to recognise a checkpoint's backbone.
NUM_LAYERS_OF_UNITS = {sum(units): num_layers for num_layers, units in UNITS.items()}


def _four_positive(name: str, value) -> tuple[int, ...]:
    value = tuple(int(v) for v in value)
    if len(value) != 4 or min(value) < 1:
        raise ValueError(f"{name} must be four positive ints (one per stage), got {value}")
    return value


def resolve_sizes(num_layers: int, widths=None, units=None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, units) of the four stages; None = official (`units` overrides `num_layers`)."""
    widths = WIDTHS if widths is None else _four_positive("widths", widths)
    if units is None:
        if num_layers not in UNITS:
            raise ValueError(f"num_layers must be one of {sorted(UNITS)}, got {num_layers}")
        units = UNITS[num_layers]
    return widths, _four_positive("units", units)


def unit_specs(num_layers: int, widths=None, units=None) -> list[tuple[int, int, int]]:
    """(in_channel, depth, stride) of every bottleneck unit, in body order (official `get_blocks`).
    The first stage's input is the input layer's widths[0] channels."""
    widths, units = resolve_sizes(num_layers, widths, units)
    specs = []
    for in_c, depth, n in zip((widths[0],) + widths[:-1], widths, units):
        specs.append((in_c, depth, 2))
        specs.extend((depth, depth, 1) for _ in range(n - 1))
    return specs


def _conv(features: int, k: int, stride: int, *, use_bias: bool, dtype, precision, name: str) -> nn.Conv:
    # Explicit symmetric padding k//2 matches torch's `padding=1`; flax 'SAME' pads (0, 1) at stride 2.
    p = k // 2
    return nn.Conv(
        features,
        (k, k),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        precision=precision,
        name=name,
    )


def _bn(train: bool, axis_name: str | None, dtype, name: str) -> nn.BatchNorm:
    return torch_batch_norm(train, axis_name, dtype, name)


class PReLU(nn.Module):
    """Per-channel PReLU: max(x, 0) + alpha * min(x, 0). Param 'alpha': (C,), torch init 0.25."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
        return jnp.where(x >= 0, x, alpha.astype(self.dtype) * x)


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(mean_hw(x))))), 1x1 convs without bias."""

    channels: int
    reduction: int = 16
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(self.dtype)
        # max(1, .): narrow toy networks keep a one-channel bottleneck (official widths divide by 16).
        s = _conv(
            max(1, self.channels // self.reduction),
            1,
            1,
            use_bias=False,
            dtype=self.dtype,
            precision=self.precision,
            name="fc1",
        )(s)
        s = nn.relu(s)
        s = _conv(self.channels, 1, 1, use_bias=False, dtype=self.dtype, precision=self.precision, name="fc2")(s)
        return x * nn.sigmoid(s)


class BottleneckIR(nn.Module):
    """One IR (use_se=False) or IR-SE (use_se=True) unit. (B, H, W, in) -> (B, H/s, W/s, depth)."""

    in_channel: int
    depth: int
    stride: int
    use_se: bool = True
    dtype: Dtype = jnp.float32
    precision: Any = None
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, precision=self.precision)
        if self.in_channel == self.depth:
            shortcut = x[:, :: self.stride, :: self.stride, :]  # MaxPool2d(kernel 1, stride s)
        else:
            shortcut = _conv(self.depth, 1, self.stride, use_bias=False, name="shortcut_conv", **kw)(x)
            shortcut = _bn(train, self.axis_name, self.dtype, "shortcut_bn")(shortcut)
        r = _bn(train, self.axis_name, self.dtype, "bn1")(x)
        r = _conv(self.depth, 3, 1, use_bias=False, name="conv1", **kw)(r)
        r = PReLU(dtype=self.dtype, name="prelu")(r)
        r = _conv(self.depth, 3, self.stride, use_bias=False, name="conv2", **kw)(r)
        r = _bn(train, self.axis_name, self.dtype, "bn2")(r)
        if self.use_se:
            r = SEModule(self.depth, 16, name="se", **kw)(r)
        return r + shortcut


class InputLayer(nn.Module):
    """Conv3x3(Cin->features, no bias) -> BatchNorm -> PReLU (official features 64)."""

    features: int = 64
    dtype: Dtype = jnp.float32
    precision: Any = None
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _conv(self.features, 3, 1, use_bias=False, dtype=self.dtype, precision=self.precision, name="conv")(x)
        x = _bn(train, self.axis_name, self.dtype, "bn")(x)
        return PReLU(dtype=self.dtype, name="prelu")(x)


class IRSEBackbone(nn.Module):
    """input_layer + body of the IR / IR-SE ResNet (no output head).

    Attributes:
      num_layers: 50, 100 or 152.
      mode: 'ir' or 'ir_se'.
      dtype: compute dtype (params stay float32).
      precision: lax precision of convs (tests use 'highest').
      axis_name: mapped axis over which training-mode BatchNorm averages statistics (None: per device).
      widths: the four stage depths; None = official (64, 128, 256, 512). The input layer has widths[0].
      units: units per stage; None = official for `num_layers` (50: (3, 4, 14, 3)); overrides num_layers.

    __call__(x, train=False, taps=()):
      x: (B, H, W, Cin) images. Returns (y, feats): y the output of the last unit
      (B, H/16, W/16, widths[3]) and feats the outputs of the units listed in `taps` (body indices), in
      the order given. For IR-SE50 the e4e taps are (6, 20, 23): 128ch H/4, 256ch H/8, 512ch H/16.
    """

    num_layers: int = 50
    mode: str = "ir_se"
    dtype: Dtype = jnp.float32
    precision: Any = None
    axis_name: str | None = None
    widths: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, taps: Sequence[int] = ()):
        if self.mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {self.mode!r}")
        specs = unit_specs(self.num_layers, self.widths, self.units)
        bad = [t for t in taps if not 0 <= t < len(specs)]
        if bad:
            raise ValueError(f"taps {bad} out of range for this IR backbone ({len(specs)} units)")
        x = x.astype(self.dtype)
        x = InputLayer(
            specs[0][0], dtype=self.dtype, precision=self.precision, axis_name=self.axis_name, name="input_layer"
        )(x, train)
        feats = {}
        for i, (in_c, depth, stride) in enumerate(specs):
            x = BottleneckIR(
                in_c,
                depth,
                stride,
                use_se=self.mode == "ir_se",
                dtype=self.dtype,
                precision=self.precision,
                axis_name=self.axis_name,
                name=f"body_{i}",
            )(x, train)
            if i in taps:
                feats[i] = x
        return x, [feats[t] for t in taps]
