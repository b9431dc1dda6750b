"""StyleGAN2 building blocks as pure functions and small Flax modules (NHWC).

Numerics follow rosinality's PyTorch port used by official e4e: equalized learning rate (raw weights
stored, scaled at run time), fused bias + leaky-ReLU (slope 0.2, gain √2), upfirdn2d with a
normalised separable FIR kernel, and modulated convolutions with demodulation.

Two mathematically equal paths compute a modulated convolution (docs/architecture.md, "Numerics"):
  * ``grouped``    – per-sample weights, the batch folded into channels, one grouped convolution
                     (``feature_group_count=B``), as the official code does;
  * ``activation`` – scale the input by the style, convolve with the shared weight, scale the
                     output by the demodulation coefficients (no per-sample weights at all).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from e4e_jax import choices

LRELU_SLOPE = 0.2  # StyleGAN2's (fused) leaky ReLU and the latent discriminator's
TORCH_LRELU_SLOPE = 0.01  # torch's nn.LeakyReLU() default: the encoder's style blocks
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
PIXELNORM_EPS = 1e-8
MODULATION_PATHS = choices.MODULATION_PATHS
# How the ×2 up-sampling conv (stride-2 transposed conv, then the FIR blur) is computed:
#   'transpose' – a conv over the zero-dilated input (lhs_dilation), then the blur: the official order;
#   'subpixel'  – both folded into one dense conv with 4× output channels at the input resolution,
#                 then a depth-to-space shuffle (same maths; no dilated conv, no separate blur pass).
UPSAMPLE_IMPLS = ("transpose", "subpixel")

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")  # lax.conv_general_dilated layouts of every conv here


# ----------------------------------------------------------------------------- activations


def fused_leaky_relu(x: jax.Array, bias: jax.Array, clamp: Optional[float] = None) -> jax.Array:
    """leaky_relu(x + bias, 0.2) · √2, optionally clamped to ±clamp (NVlabs conv_clamp).

    x: (..., C); bias: (C,).
    """
    x = x + bias.astype(x.dtype)
    x = jnp.where(x >= 0, x, x * LRELU_SLOPE) * jnp.asarray(LRELU_GAIN, x.dtype)
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    return x


def pixel_norm(x: jax.Array) -> jax.Array:
    """x · rsqrt(mean(x², -1) + 1e-8); x: (B, D)."""
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + PIXELNORM_EPS)


def equal_linear(x, weight, bias, lr_mul: float = 1.0, activation: bool = False, precision=None):
    """Equalized-lr dense layer. x: (B, in); weight: (in, out) raw; bias: (out,) raw."""
    scale = lr_mul / math.sqrt(weight.shape[0])
    y = jnp.dot(x, weight * scale, precision=precision)
    if activation:
        return fused_leaky_relu(y, bias * lr_mul)
    return y + bias * lr_mul


class EqualLinear(nn.Module):
    """rosinality's EqualLinear: y = x @ (W · lr_mul/√in) + b · lr_mul, then (activation) the fused
    leaky ReLU. (B, in) -> (B, features).

    Params: 'weight' (in, features), raw as stored by torch (transposed); 'bias' (features,); both float32.
    The scaled weight, the bias and x are cast to `dtype` (the compute type) before the product.
    """

    features: int
    lr_mul: float = 1.0
    activation: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_dim = x.shape[-1]
        w = self.param("weight", nn.initializers.normal(1.0 / self.lr_mul), (in_dim, self.features), jnp.float32)
        b = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        scale = self.lr_mul / math.sqrt(in_dim)
        y = jnp.dot(x.astype(self.dtype), (w * scale).astype(self.dtype), precision=self.precision)
        bias = (b * self.lr_mul).astype(self.dtype)
        return fused_leaky_relu(y, bias) if self.activation else y + bias


# ----------------------------------------------------------------------------- encoder normalisation


def torch_batch_norm(train: bool, axis_name: Optional[str], dtype: Any, name: str) -> nn.BatchNorm:
    """torch.nn.BatchNorm2d's defaults as a flax BatchNorm (the encoders' backbones: IR-SE, ResNet-34).

    eps 1e-5; torch momentum 0.1 is flax momentum 0.9; train=True uses batch statistics (averaged over
    `axis_name` when given) and updates 'batch_stats', else the running statistics. Params stay float32.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


# ----------------------------------------------------------------------------- FIR filtering


def fir_taps(kernel: Sequence[float]) -> tuple[float, ...]:
    """Normalised 1-D taps whose outer product is rosinality's `make_kernel(kernel)`."""
    total = float(sum(kernel))
    return tuple(float(k) / total for k in kernel)


def _fir_1d(x: jax.Array, taps: Sequence[float], axis: int) -> jax.Array:
    """Valid 1-D convolution along `axis` by shift-and-add (true convolution: taps reversed).

    A shifted-slice sum fuses into one elementwise kernel under XLA and was ~15× faster than a
    depthwise convolution on GPU (docs/architecture.md, "Numerics").
    """
    k = len(taps)
    n_out = x.shape[axis] - k + 1
    out = None
    for j, t in enumerate(reversed(taps)):
        term = lax.slice_in_dim(x, j, j + n_out, axis=axis) * jnp.asarray(t, x.dtype)
        out = term if out is None else out + term
    return out


def upfirdn2d(
    x: jax.Array, taps: Sequence[float], up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), gain: float = 1.0
) -> jax.Array:
    """Upsample (zero insertion), pad, FIR filter (separable), downsample. x: (B, H, W, C).

    Matches the official op: upsampling keeps the trailing up−1 zeros, `pad=(p0, p1)` applies to
    both spatial axes (negative values crop), the 2-D kernel is outer(taps, taps) · gain.
    """
    p0, p1 = pad
    cfg = [(0, 0, 0), (p0, p1 + up - 1, up - 1), (p0, p1 + up - 1, up - 1), (0, 0, 0)]
    x = lax.pad(x, jnp.zeros((), x.dtype), cfg)
    taps = [t * math.sqrt(gain) for t in taps]
    x = _fir_1d(_fir_1d(x, taps, axis=1), taps, axis=2)
    if down > 1:
        x = x[:, ::down, ::down, :]
    return x


def blur(x: jax.Array, taps: Sequence[float], pad: tuple[int, int], gain: float = 1.0) -> jax.Array:
    """Rosinality `Blur`: upfirdn2d without resampling."""
    return upfirdn2d(x, taps, pad=pad, gain=gain)


def upsample2d(x: jax.Array, taps: Sequence[float], factor: int = 2) -> jax.Array:
    """Rosinality `Upsample` (ToRGB skip path): ×factor with the FIR kernel · factor².

    Computed polyphase (`_fir_up_1d` per axis): the same sums as upfirdn2d over the zero-stuffed
    input without the zero terms. x: (B, H, W, C) -> (B, factor·H, factor·W, C).
    """
    p = len(taps) - factor
    pad0 = (p + 1) // 2 + factor - 1
    taps = [t * factor for t in taps]  # gain factor² split over the two axes
    return _fir_up_1d(_fir_up_1d(x, taps, factor, pad0, axis=1), taps, factor, pad0, axis=2)


def _fir_up_1d(x: jax.Array, taps: Sequence[float], up: int, pad0: int, axis: int) -> jax.Array:
    """Along `axis`: zero-insert ×up, pad `pad0` in front, valid FIR with `taps` (true convolution),
    keeping up·n outputs — computed per output phase r from the input directly.

    Output Y = up·t + r sums rt[j]·x[(Y + j − pad0)/up] over the j where that index is whole
    (rt = reversed taps), i.e. taps at input offsets d = (r + j − pad0)/up from t.
    """
    n = x.shape[axis]
    rt = list(reversed(taps))
    phases = [[((r + j - pad0) // up, rt[j]) for j in range(len(rt)) if (r + j - pad0) % up == 0] for r in range(up)]
    offsets = [d for ph in phases for d, _ in ph]
    lo, hi = max(0, -min(offsets)), max(0, max(offsets))
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (lo, hi, 0)
    xp = lax.pad(x, jnp.zeros((), x.dtype), cfg)
    outs = []
    for ph in phases:  # a phase's offsets are consecutive: a valid FIR over its window of xp
        if not ph:
            outs.append(jnp.zeros_like(lax.slice_in_dim(xp, 0, n, axis=axis)))
            continue
        window = lax.slice_in_dim(xp, lo + ph[0][0], lo + ph[-1][0] + n, axis=axis)
        outs.append(_fir_1d(window, [c for _, c in reversed(ph)], axis))
    y = jnp.stack(outs, axis=axis + 1)  # (..., n, up, ...) -> interleave the phases
    return y.reshape(x.shape[:axis] + (n * up,) + x.shape[axis + 1 :])


# ----------------------------------------------------------------------------- modulated conv


def _conv(x, w, padding, groups=1, lhs_dilation=(1, 1), precision=None):
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=[(padding, padding)] * 2,
        lhs_dilation=lhs_dilation,
        dimension_numbers=DIMENSION_NUMBERS,
        feature_group_count=groups,
        precision=precision,
    )


def _conv_or_transpose(x, w, up: bool, groups: int, precision):
    """3×3 'same' conv, or rosinality's stride-2 transposed conv (output 2H+1) when `up`.

    The transposed conv is a conv over the zero-dilated input with the spatially flipped kernel.
    """
    k = w.shape[0]
    if up:
        return _conv(x, w[::-1, ::-1], k - 1, groups, lhs_dilation=(2, 2), precision=precision)
    return _conv(x, w, k // 2, groups, precision=precision)


def up_blur_pad(kernel_size: int, n_taps: int, factor: int = 2) -> tuple[int, int]:
    """Padding of the blur that follows rosinality's transposed conv (output then 2H×2W)."""
    p = (n_taps - factor) - (kernel_size - 1)
    return (p + 1) // 2 + factor - 1, p // 2 + 1


def _subpixel_phase_matrices(kernel_size: int, taps: Sequence[float], gain: float) -> tuple[np.ndarray, int]:
    """B[r][d + off, j]: weight of conv tap j reaching output phase r from input offset d.

    Derivation: out[n] = Σ_j W[j]·x[(n − j)/2] (transposed conv, stride 2) and
    final[Y] = Σ_k g·b[L−1−k]·out[Y + k − pad0] (blur). With Y = 2t + r and input index t + d,
    the constraint is 2d = r + k − pad0 − j. Returns (B (2, D, K), off) with D taps at offsets
    −off … D−1−off.
    """
    n_taps, pad0 = len(taps), up_blur_pad(kernel_size, len(taps))[0]
    b = np.asarray(taps, np.float64) * math.sqrt(gain)
    entries = {}
    for r in range(2):
        for j in range(kernel_size):
            for k in range(n_taps):
                twice_d = r + k - pad0 - j
                if twice_d % 2 == 0:
                    entries[(r, twice_d // 2, j)] = entries.get((r, twice_d // 2, j), 0.0) + b[n_taps - 1 - k]
    ds = [d for (_, d, _) in entries]
    off, n_d = -min(ds), max(ds) - min(ds) + 1
    mats = np.zeros((2, n_d, kernel_size))
    for (r, d, j), v in entries.items():
        mats[r, d + off, j] = v
    return mats, off


def subpixel_up_kernel(
    weight: jax.Array, taps: Sequence[float], gain: float = 4.0
) -> tuple[jax.Array, tuple[int, int]]:
    """Fold (stride-2 transposed conv with `weight`, then the ×2 blur) into one dense conv.

    weight: (..., K, K, Cin, Cout) (leading batch dims allowed). Returns the kernel
    (..., D, D, Cin, 4·Cout) whose output channels are ordered (row phase, column phase, Cout), and
    the conv padding (lo, hi) for both spatial axes.
    """
    k = weight.shape[-4]
    mats, off = _subpixel_phase_matrices(k, taps, gain)
    m = jnp.asarray(mats, weight.dtype)
    comp = jnp.einsum("rdj,sek,...jkio->...deirso", m, m, weight, precision=lax.Precision.HIGHEST)
    shape = comp.shape
    kernel = comp.reshape(shape[:-3] + (4 * shape[-1],))
    return kernel, (off, mats.shape[1] - 1 - off)


def depth_to_space2(y: jax.Array, cout: int) -> jax.Array:
    """(B, H, W, 2·2·Cout) with channels (row phase, col phase, c) → (B, 2H, 2W, Cout)."""
    b, h, w, _ = y.shape
    y = y.reshape(b, h, w, 2, 2, cout)
    return jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, cout)


def modulated_conv2d(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    *,
    demodulate: bool = True,
    up: bool = False,
    path: str = "grouped",
    precision=None,
    up_impl: str = "transpose",
    blur_taps: Sequence[float] = (0.125, 0.375, 0.375, 0.125),
) -> jax.Array:
    """Modulated (and demodulated) convolution.

    Args:
      x: (B, H, W, Cin) activations (compute dtype).
      weight: (k, k, Cin, Cout) effective weight (equalized-lr scale already applied), float32.
      styles: (B, Cin) per-sample channel scales, float32.
      up: ×2 up-sampling conv. With up_impl 'transpose' the output is the transposed conv's
        (B, 2H+1, 2W+1, Cout) and the caller blurs it; with 'subpixel' the blur (`blur_taps`,
        gain 4) is folded in and the output is the final (B, 2H, 2W, Cout).
      path: 'grouped' or 'activation' (same maths, see module docstring).
    Returns (B, H', W', Cout) in x.dtype.
    """
    b, h, w_, cin = x.shape
    k, cout = weight.shape[0], weight.shape[-1]
    dtype = x.dtype
    if up and up_impl == "subpixel":
        return _modulated_subpixel_up(x, weight, styles, demodulate, path, precision, blur_taps)
    if up_impl not in UPSAMPLE_IMPLS:
        raise ValueError(f"unknown up-sampling implementation {up_impl!r}; expected one of {UPSAMPLE_IMPLS}")
    if path == "grouped":
        wmod = weight[None] * styles[:, None, None, :, None]  # (B, k, k, Cin, Cout)
        if demodulate:
            d = lax.rsqrt(jnp.sum(jnp.square(wmod), axis=(1, 2, 3)) + DEMOD_EPS)  # (B, Cout)
            wmod = wmod * d[:, None, None, None, :]
        xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w_, b * cin)
        wg = jnp.transpose(wmod, (1, 2, 3, 0, 4)).reshape(k, k, cin, b * cout).astype(dtype)
        y = _conv_or_transpose(xg, wg, up, b, precision)
        ho, wo = y.shape[1], y.shape[2]
        return jnp.transpose(y.reshape(ho, wo, b, cout), (2, 0, 1, 3))
    if path == "activation":
        if k == 1 and not up:
            return _modulated_matmul(x, weight[0, 0], styles, demodulate, precision)
        y = _conv_or_transpose(x * styles[:, None, None, :].astype(dtype), weight.astype(dtype), up, 1, precision)
        if demodulate:
            y = y * _demod(weight, styles, precision)[:, None, None, :].astype(dtype)
        return y
    raise ValueError(f"unknown modulation path {path!r}; expected one of {MODULATION_PATHS}")


def _modulated_matmul(x: jax.Array, weight: jax.Array, styles: jax.Array, demodulate: bool, precision) -> jax.Array:
    """1×1 modulated conv (ToRGB) as a per-sample matmul with the modulated (Cin, Cout) weight.

    x: (B, H, W, Cin); weight: (Cin, Cout); styles: (B, Cin) -> (B, H, W, Cout) in x.dtype. The
    weights are tiny, so modulating them instead of x saves the pass that writes x·s over the whole
    activation (the largest elementwise cost of the 1024² generator in the kernel profile).
    """
    wmod = weight[None] * styles[:, :, None]  # (B, Cin, Cout), float32
    if demodulate:
        wmod = wmod * _demod(weight[None, None], styles, precision)[:, None, :]
    return jnp.einsum("bhwc,bco->bhwo", x, wmod.astype(x.dtype), precision=precision)


def _demod(weight: jax.Array, styles: jax.Array, precision) -> jax.Array:
    """(B, Cout) demodulation coefficients of `weight` (k, k, Cin, Cout) modulated by `styles`."""
    wsq = jnp.sum(jnp.square(weight), axis=(0, 1))
    return lax.rsqrt(jnp.dot(jnp.square(styles), wsq, precision=precision) + DEMOD_EPS)


def _modulated_subpixel_up(x, weight, styles, demodulate, path, precision, blur_taps):
    """Up-sampling modulated conv as one dense conv at the input resolution + depth-to-space."""
    b, h, w_, cin = x.shape
    cout, dtype = weight.shape[-1], x.dtype
    d = _demod(weight, styles, precision) if demodulate else None  # (B, Cout): commutes with the blur.
    if path == "grouped":
        wmod = weight[None] * styles[:, None, None, :, None]
        if d is not None:
            wmod = wmod * d[:, None, None, None, :]
        kern, (lo, hi) = subpixel_up_kernel(wmod, blur_taps)  # (B, D, D, Cin, 4Cout)
        n_d = kern.shape[1]
        xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w_, b * cin)
        kg = jnp.transpose(kern, (1, 2, 3, 0, 4)).reshape(n_d, n_d, cin, b * 4 * cout).astype(dtype)
        y = lax.conv_general_dilated(
            xg,
            kg,
            (1, 1),
            [(lo, hi)] * 2,
            dimension_numbers=DIMENSION_NUMBERS,
            feature_group_count=b,
            precision=precision,
        )
        y = jnp.transpose(y.reshape(h, w_, b, 4 * cout), (2, 0, 1, 3))
        return depth_to_space2(y, cout)
    if path == "activation":
        kern, (lo, hi) = subpixel_up_kernel(weight, blur_taps)
        y = lax.conv_general_dilated(
            x * styles[:, None, None, :].astype(dtype),
            kern.astype(dtype),
            (1, 1),
            [(lo, hi)] * 2,
            dimension_numbers=DIMENSION_NUMBERS,
            precision=precision,
        )
        y = depth_to_space2(y, cout)
        return y if d is None else y * d[:, None, None, :].astype(dtype)
    raise ValueError(f"unknown modulation path {path!r}; expected one of {MODULATION_PATHS}")
