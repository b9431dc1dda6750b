"""StyleGAN2 building blocks as pure functions and small Flax modules (NHWC).

Numerics follow rosinality's PyTorch port used by official e4e: equalized learning rate (raw weights
stored, scaled at run time), fused bias + leaky-ReLU (slope 0.2, gain √2), upfirdn2d with a
normalised separable FIR kernel, and modulated convolutions with demodulation.

Two mathematically equal paths compute a modulated convolution (DESIGN.md §2, §9):
  * ``grouped``    – per-sample weights, the batch folded into channels, one grouped convolution
                     (``feature_group_count=B``), as the official code does;
  * ``activation`` – scale the input by the style, convolve with the shared weight, scale the
                     output by the demodulation coefficients (no per-sample weights at all).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
PIXELNORM_EPS = 1e-8
MODULATION_PATHS = ("grouped", "activation")

_DN = ("NHWC", "HWIO", "NHWC")


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


# ----------------------------------------------------------------------------- FIR filtering

def fir_taps(kernel: Sequence[float]) -> tuple[float, ...]:
    """Normalised 1-D taps whose outer product is rosinality's `make_kernel(kernel)`."""
    total = float(sum(kernel))
    return tuple(float(k) / total for k in kernel)


def _fir_1d(x: jax.Array, taps: Sequence[float], axis: int) -> jax.Array:
    """Valid 1-D convolution along `axis` by shift-and-add (true convolution: taps reversed).

    A shifted-slice sum fuses into one elementwise kernel under XLA and was ~15× faster than a
    depthwise convolution on GPU (DESIGN.md §9).
    """
    k = len(taps)
    n_out = x.shape[axis] - k + 1
    out = None
    for j, t in enumerate(reversed(taps)):
        term = lax.slice_in_dim(x, j, j + n_out, axis=axis) * jnp.asarray(t, x.dtype)
        out = term if out is None else out + term
    return out


def upfirdn2d(x: jax.Array, taps: Sequence[float], up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), gain: float = 1.0) -> jax.Array:
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
    """Rosinality `Upsample` (ToRGB skip path): ×factor with the FIR kernel · factor²."""
    p = len(taps) - factor
    return upfirdn2d(x, taps, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), gain=factor ** 2)


# ----------------------------------------------------------------------------- modulated conv

def _conv(x, w, padding, groups=1, lhs_dilation=(1, 1), precision=None):
    return lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding=[(padding, padding)] * 2, lhs_dilation=lhs_dilation,
        dimension_numbers=_DN, feature_group_count=groups, precision=precision)


def _conv_or_transpose(x, w, up: bool, groups: int, precision):
    """3×3 'same' conv, or rosinality's stride-2 transposed conv (output 2H+1) when `up`.

    The transposed conv is a conv over the zero-dilated input with the spatially flipped kernel.
    """
    k = w.shape[0]
    if up:
        return _conv(x, w[::-1, ::-1], k - 1, groups, lhs_dilation=(2, 2), precision=precision)
    return _conv(x, w, k // 2, groups, precision=precision)


def modulated_conv2d(x: jax.Array, weight: jax.Array, styles: jax.Array, *, demodulate: bool = True,
                     up: bool = False, path: str = "grouped", precision=None) -> jax.Array:
    """Modulated (and demodulated) convolution.

    Args:
      x: (B, H, W, Cin) activations (compute dtype).
      weight: (k, k, Cin, Cout) effective weight (equalized-lr scale already applied), float32.
      styles: (B, Cin) per-sample channel scales, float32.
      up: transposed stride-2 conv (output (B, 2H+1, 2W+1, Cout); the caller blurs it).
      path: 'grouped' or 'activation' (same maths, see module docstring).
    Returns (B, H', W', Cout) in x.dtype.
    """
    b, h, w_, cin = x.shape
    k, cout = weight.shape[0], weight.shape[-1]
    dtype = x.dtype
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
        y = _conv_or_transpose(x * styles[:, None, None, :].astype(dtype), weight.astype(dtype), up, 1, precision)
        if demodulate:
            wsq = jnp.sum(jnp.square(weight), axis=(0, 1))  # (Cin, Cout)
            d = lax.rsqrt(jnp.dot(jnp.square(styles), wsq, precision=precision) + DEMOD_EPS)  # (B, Cout)
            y = y * d[:, None, None, :].astype(dtype)
        return y
    raise ValueError(f"unknown modulation path {path!r}; expected one of {MODULATION_PATHS}")
