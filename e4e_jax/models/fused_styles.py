"""Inference-time fusion of the GradualStyleBlocks that read the same feature map.

The e4e encoder runs one GradualStyleBlock per style (18 at 1024²): 3 read c3, 4 read p2 and 11 read p1,
each a stack of 3x3 stride-2 convs of `C` channels, LeakyReLU(0.01) and an EqualLinear. Run one by one,
the blocks of a level read their shared input once each and issue many small kernels. Here the blocks
of a level run together on the same parameters (no new weights, same maths, float sums reordered):

  conv 0:     one dense conv C -> n*C (the n kernels concatenated on the output axis): the shared map is
              read once and the largest conv of each block (it runs at the highest resolution) becomes
              one wide GEMM;
  conv j > 0: per block on its C channels (small maps; a grouped conv, feature_group_count=n, would make
              it one launch: not measured), except the last one, whose output is 1x1: from a map of at most
              2x2 only its kernel's centre taps reach the output, so all n blocks run it as one batched
              matmul (as convs, cuDNN ran 18 tiny launches in float32 on a slow NCHW FFMA kernel);
  linear:     one batched matmul 'bnc,ncd->bnd'.

`fused_style_blocks` is a pure function of the 'styles_{i}' parameter trees of `Encoder4Editing`
(see encoder.py for their layout); the encoder calls it when `fuse_style_blocks=True` (inference).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
from jax import lax

from e4e_jax.models.layers import DIMENSION_NUMBERS, TORCH_LRELU_SLOPE  # the slope of GradualStyleBlock

Dtype = Any


def _n_convs(block_params: dict) -> int:
    return sum(k.startswith("convs_") for k in block_params)


def _conv_s2(x, kernel, bias, precision):
    """3x3 stride-2 conv (pad 1) + bias + LeakyReLU(0.01), as GradualStyleBlock's nn.Conv + nn.leaky_relu."""
    x = (
        lax.conv_general_dilated(
            x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DIMENSION_NUMBERS, precision=precision
        )
        + bias
    )
    return _leaky_relu(x)


def _leaky_relu(x):
    return jnp.where(x >= 0, x, TORCH_LRELU_SLOPE * x)


def _tail_as_matmul(parts, kernels, biases, dtype, precision):
    """n stride-2 3x3 convs (pad 1) whose output is 1x1, as one batched matmul.

    parts: n maps (B, H, W, C) with H, W <= 2; kernels: n (3, 3, C, Cout); biases: n (Cout,).
    Output row/column 0 reads input rows/columns -1..1 (pad 1), so kernel taps [1:1+H, 1:1+W] meet the
    map and the rest meet padding. Returns n maps (B, 1, 1, Cout) after bias + LeakyReLU(0.01).
    """
    b, h, w, c = parts[0].shape
    x = jnp.stack([p.reshape(b, h * w * c) for p in parts])  # (n, B, HWC)
    k = jnp.stack([kk[1 : 1 + h, 1 : 1 + w].reshape(h * w * c, -1) for kk in kernels]).astype(dtype)
    y = jnp.einsum("nbk,nko->nbo", x, k, precision=precision) + jnp.stack(biases).astype(dtype)[:, None]
    y = _leaky_relu(y)
    return [y[g].reshape(b, 1, 1, -1) for g in range(len(parts))]


def fused_level(blocks: Sequence[dict], x, dtype: Dtype = jnp.float32, precision: Any = None):
    """Run n GradualStyleBlocks with the same conv count on the same map as one stack.

    blocks: n parameter trees {'convs_{j}': {'kernel' (3,3,C,C), 'bias' (C,)}, 'linear': {'weight' (C,D),
    'bias' (D,)}}; x: (B, H, W, C). Returns (B, n, D) in `dtype`, equal (up to float rounding) to
    stacking the blocks' outputs.
    """
    n = len(blocks)
    depth = _n_convs(blocks[0])
    if any(_n_convs(b) != depth for b in blocks):
        raise ValueError("fused style blocks of one level must have the same number of convs")
    x = x.astype(dtype)

    if depth:
        kernel = jnp.concatenate([b["convs_0"]["kernel"] for b in blocks], axis=-1).astype(dtype)
        bias = jnp.concatenate([b["convs_0"]["bias"] for b in blocks]).astype(dtype)
        x = _conv_s2(x, kernel, bias, precision)
    if depth > 1:
        c = x.shape[-1] // n
        parts = [x[..., g * c : (g + 1) * c] for g in range(n)]
        for j in range(1, depth):
            name = f"convs_{j}"
            if max(parts[0].shape[1:3]) <= 2:
                parts = _tail_as_matmul(
                    parts, [b[name]["kernel"] for b in blocks], [b[name]["bias"] for b in blocks], dtype, precision
                )
                continue
            parts = [
                _conv_s2(xg, b[name]["kernel"].astype(dtype), b[name]["bias"].astype(dtype), precision)
                for xg, b in zip(parts, blocks)
            ]
        x = jnp.concatenate(parts, axis=-1)
    if x.shape[1:3] != (1, 1):
        raise ValueError(
            f"fused style blocks left a {x.shape[1]}x{x.shape[2]} map; the input image is too "
            f"large for this encoder (official inputs: 256x256, cars 192x256)"
        )
    c = x.shape[-1] // n
    x = x.reshape(x.shape[0], n, c)
    weight = jnp.stack([b["linear"]["weight"] for b in blocks]) * (1.0 / math.sqrt(c))  # EqualLinear, lr_mul 1
    bias = jnp.stack([b["linear"]["bias"] for b in blocks])
    return jnp.einsum("bnc,ncd->bnd", x, weight.astype(dtype), precision=precision) + bias.astype(dtype)


def fused_style_blocks(
    params: dict, feats: Sequence, levels: Sequence[int], dtype: Dtype = jnp.float32, precision: Any = None
):
    """All styles of the encoder: params holds 'styles_{i}' for i < len(levels); levels[i] indexes `feats`
    (0: c3, 1: p2, 2: p1). Returns (B, n_styles, D) float32, styles in order."""
    out = [None] * len(levels)
    for level in sorted(set(levels)):
        idx = [i for i, lv in enumerate(levels) if lv == level]
        y = fused_level([params[f"styles_{i}"] for i in idx], feats[level], dtype, precision)
        for k, i in enumerate(idx):
            out[i] = y[:, k].astype(jnp.float32)
    return jnp.stack(out, axis=1)
