"""Image resampling exactly as torch does it, on NHWC arrays: the one home of every resize in the package.

Each resize is separable: a (n_out, n_in) weight matrix per axis, built once on the host in numpy and
applied with two einsums (or a gather for nearest), so it is jit-able, differentiable and matches torch
to float32 round-off.

    adaptive_avg_pool2d              torch.nn.AdaptiveAvgPool2d (pSp's face_pool, IDLoss's pool to 112)
    interpolate_nearest              F.interpolate(mode='nearest') (MocoLoss's resize to 224)
    upsample_bilinear_align_corners  F.interpolate(mode='bilinear', align_corners=True) (the encoder's FPN)
    resize_bilinear                  F.interpolate(mode='bilinear', align_corners=False) (FID Inception's 299)
    pool_and_crop                    pSp's face_pool to 256x256, then a row crop (cars): what the losses,
                                     the synthetic training data and the metrics compare
    resize_area_or_linear            saved reconstructions at a smaller size (`invert --image-size`)
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

FACE_POOL_SIZE = (256, 256)  # pSp face_pool: every loss and metric compares 256x256 images


# ----------------------------------------------------------------------------------- adaptive average
def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging matrix of torch's AdaptiveAvgPool along one axis.

    Bin i covers [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out)), so bins overlap when n_in/n_out is not
    an integer (e.g. 188 -> 112).
    """
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        s, e = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, s:e] = 1.0 / (e - s)
    return m


def adaptive_avg_pool2d(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d(size) on NHWC: (B, H, W, C) -> (B, size[0], size[1], C)."""
    b, h, w, c = x.shape
    if (h, w) == tuple(size):
        return x
    if h % size[0] == 0 and w % size[1] == 0:  # equal bins (1024 -> 256): a reshape-mean, exact and cheap
        return x.reshape(b, size[0], h // size[0], size[1], w // size[1], c).mean(axis=(2, 4))
    ph = jnp.asarray(adaptive_pool_matrix(x.shape[1], size[0]))
    pw = jnp.asarray(adaptive_pool_matrix(x.shape[2], size[1]))
    hi = jax.lax.Precision.HIGHEST  # exact-ish averaging even where f32 matmuls default to TF32
    x = jnp.einsum("oh,bhwc->bowc", ph, x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", pw, x, precision=hi)


def pool_and_crop(
    images: jax.Array, size: tuple[int, int] = FACE_POOL_SIZE, rows: Optional[tuple[int, int]] = None
) -> jax.Array:
    """Generator output (B, S, S, C) -> the frame losses and metrics compare: adaptive-average-pooled to
    `size` (pSp face_pool), then rows[0]:rows[1] kept when `rows` is given (cars: (32, 224) of 256).
    Returns (B, h, size[1], C)."""
    images = adaptive_avg_pool2d(images, tuple(size))
    if rows is not None:
        images = images[:, rows[0] : rows[1]]
    return images


def resize_area_or_linear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, size[0], size[1], C): an area average for an integer shrink factor (the
    equal-bins AdaptiveAvgPool2d, what face_pool does for the losses), otherwise antialiased bilinear
    (`jax.image.resize`; no torch counterpart)."""
    b, h, w, c = images.shape
    if h % size[0] == 0 and w % size[1] == 0:
        return adaptive_avg_pool2d(images, size)
    return jax.image.resize(images, (b, size[0], size[1], c), method="linear", antialias=True)


# ------------------------------------------------------------------------------------------- nearest
def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of torch's F.interpolate(mode='nearest', size=n_out) along one axis.

    torch computes them in float32: min(floor(i · (float(n_in) / n_out)), n_in - 1).
    """
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def interpolate_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """F.interpolate(x, size, mode='nearest') on NHWC: (B, H, W, C) -> (B, size[0], size[1], C)."""
    x = jnp.take(x, jnp.asarray(nearest_indices(x.shape[1], size[0])), axis=1)
    return jnp.take(x, jnp.asarray(nearest_indices(x.shape[2], size[1])), axis=2)


# ------------------------------------------------------------------------------------------ bilinear
def align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix of torch's bilinear resize with align_corners=True."""
    a = np.zeros((n_out, n_in), np.float64)
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        src = i * scale
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        a[i, i0] += 1.0 - lam
        a[i, i1] += lam
    return a.astype(np.float32)


def upsample_bilinear_align_corners(x, size: tuple[int, int], precision=None):
    """Resize (B, H, W, C) to (B, size[0], size[1], C) exactly like
    `F.interpolate(mode='bilinear', align_corners=True)` (separable: rows, then columns); the weights
    take x's dtype."""
    ah = jnp.asarray(align_corners_matrix(size[0], x.shape[1]), x.dtype)
    aw = jnp.asarray(align_corners_matrix(size[1], x.shape[2]), x.dtype)
    x = jnp.einsum("oh,bhwc->bowc", ah, x, precision=precision)
    return jnp.einsum("pw,bowc->bopc", aw, x, precision=precision)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's bilinear F.interpolate (align_corners=False, antialias=False)
    along one axis: src = (dst + 0.5) * n_in / n_out - 0.5, clamped at 0; neighbours x0, min(x0 + 1, n_in - 1)."""
    scale = np.float32(n_in) / np.float32(n_out)  # torch computes the scale in float32 ...
    # ... and the source index with one fused multiply-add, rounded once to float32.
    src = np.maximum(((np.arange(n_out) + 0.5) * np.float64(scale) - 0.5).astype(np.float32), np.float32(0))
    x0 = np.floor(src).astype(np.int64)
    x1 = np.minimum(x0 + 1, n_in - 1)
    l1 = (src - x0.astype(np.float32)).astype(np.float64)
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), x0), 1.0 - l1)
    np.add.at(m, (np.arange(n_out), x1), l1)
    return m.astype(np.float32)


def resize_bilinear(x: jax.Array, size: tuple[int, int], precision: Any = jax.lax.Precision.HIGHEST) -> jax.Array:
    """torch F.interpolate(mode='bilinear', align_corners=False) on NHWC: (B, H, W, C) -> (B, h, w, C)."""
    if x.shape[1:3] == tuple(size):
        return x  # torch's weights are then the identity
    mh = jnp.asarray(bilinear_matrix(x.shape[1], size[0]))
    mw = jnp.asarray(bilinear_matrix(x.shape[2], size[1]))
    x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=precision)
    return jnp.einsum("pw,bowc->bopc", mw, x, precision=precision)
