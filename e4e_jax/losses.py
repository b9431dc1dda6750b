"""Losses of e4e (Tov et al. 2021), one function each, named after them.

Images are NHWC float arrays in [-1, 1]. Network weights come in as the `variables` of their bundle
({'params', 'batch_stats'?}); architecture hyper-parameters are read from the variables' shapes, so every
loss is a pure function of (variables, images), jit-able and differentiable w.r.t. the images.

Perceptual / similarity losses (the official criteria/*):
    lpips_loss   criteria/lpips: LPIPS(y_hat, y) summed over layers, mean over the batch
    id_loss      criteria/id_loss.IDLoss: ArcFace on the crop [35:223, 32:220] pooled to 112x112,
                 mean over the batch of 1 - <f(y_hat), f(y)>, f(y) held constant
    moco_loss    criteria/moco_loss.MocoLoss: nearest resize to 224, ResNet-50 pooled features (no
                 ImageNet normalisation), l2-normalised, mean over the batch of 1 - <f(y_hat), f(y)>
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.models import arcface as arcface_lib
from e4e_jax.models import resnet as resnet_lib
from e4e_jax.models.lpips import LPIPS

Variables = Mapping[str, Any]

ID_CROP = (slice(35, 223), slice(32, 220))  # rows, cols of the 256x256 image (official "interesting region")
ID_SIZE = 112
MOCO_SIZE = 224


# --------------------------------------------------------------------------------------- resampling
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
    ph = jnp.asarray(adaptive_pool_matrix(x.shape[1], size[0]))
    pw = jnp.asarray(adaptive_pool_matrix(x.shape[2], size[1]))
    hi = jax.lax.Precision.HIGHEST  # exact-ish averaging even where f32 matmuls default to TF32
    x = jnp.einsum("oh,bhwc->bowc", ph, x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", pw, x, precision=hi)


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


def _rowwise_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(a * b, axis=-1)


def _similarity_loss(feats, y_hat, y, x, with_logs: bool):
    """Shared tail of IDLoss / MocoLoss: mean(1 - <f(y_hat), f(y)>) with f(y) detached, + official logs."""
    fy = jax.lax.stop_gradient(feats(y))
    fyh = feats(y_hat)
    diff_target = _rowwise_dot(fyh, fy)
    loss = jnp.mean(1.0 - diff_target)
    if not with_logs:
        return loss
    logs = {"diff_target": jax.lax.stop_gradient(diff_target)}
    if x is not None:
        fx = jax.lax.stop_gradient(feats(x))
        logs["diff_input"] = jax.lax.stop_gradient(_rowwise_dot(fyh, fx))
        logs["diff_views"] = _rowwise_dot(fy, fx)
        logs["sim_improvement"] = jnp.mean(logs["diff_target"] - logs["diff_views"])
    return loss, logs


# --------------------------------------------------------------------------------------- LPIPS
def lpips_loss(variables: Variables, y_hat: jax.Array, y: jax.Array, net: str = "alex",
               precision: Any = None) -> jax.Array:
    """e4e's LPIPS loss: the LPIPS v0.1 distance of each pair, averaged over the batch. Returns a scalar.

    variables: an 'lpips' bundle's variables for `net` ('alex' in e4e's configs, or 'vgg').
    y_hat, y: (B, H, W, 3) in [-1, 1].
    """
    return jnp.mean(LPIPS(net=net, precision=precision).apply(variables, y_hat, y))


# --------------------------------------------------------------------------------------- ID (ArcFace)
def id_features(variables: Variables, images: jax.Array, precision: Any = None) -> jax.Array:
    """IDLoss.extract_feats: crop [35:223, 32:220], adaptive-pool to 112, ArcFace. (B, 256, 256, 3) -> (B, 512)."""
    arch = arcface_lib.architecture_of(variables["params"])
    x = images[:, ID_CROP[0], ID_CROP[1], :]
    x = adaptive_avg_pool2d(x, (arch["input_size"],) * 2)
    return arcface_lib.ArcFace(**arch, precision=precision).apply(variables, x)


def id_loss(variables: Variables, y_hat: jax.Array, y: jax.Array, x: jax.Array | None = None, *,
            with_logs: bool = False, precision: Any = None):
    """Identity loss (Eq. of the paper's L_sim on faces): mean_i 1 - <ArcFace(y_hat_i), ArcFace(y_i)>.

    variables: an 'arcface' bundle's variables. y_hat (reconstructions), y (targets), x (encoder inputs,
    only for the logs): (B, 256, 256, 3) in [-1, 1]. f(y) is held constant (no gradient), as officially.
    Returns the loss, or (loss, logs) with with_logs=True: logs = {'diff_target' (B,), and when x is given
    'diff_input' (B,), 'diff_views' (B,), 'sim_improvement' ()} (the official id_logs / sim_improvement).
    """
    return _similarity_loss(lambda im: id_features(variables, im, precision), y_hat, y, x, with_logs)


# --------------------------------------------------------------------------------------- MoCo
def moco_features(variables: Variables, images: jax.Array, precision: Any = None) -> jax.Array:
    """MocoLoss.extract_feats: nearest resize to 224, ResNet-50 pooled features, l2-normalised (eps 1e-12).

    (B, H, W, 3) in [-1, 1] (no ImageNet normalisation, as officially) -> (B, 2048).
    """
    arch = resnet_lib.architecture_of(variables["params"])
    x = interpolate_nearest(images, (MOCO_SIZE, MOCO_SIZE))
    f = resnet_lib.ResNet(stage_sizes=tuple(arch["stage_sizes"]), precision=precision).apply(variables, x)
    # F.normalize: x / max(||x||, 1e-12); the where() keeps the gradient finite for an all-zero vector.
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    norm = jnp.sqrt(jnp.where(sq > 1e-24, sq, 1e-24))
    return f / norm


def moco_loss(variables: Variables, y_hat: jax.Array, y: jax.Array, x: jax.Array | None = None, *,
              with_logs: bool = False, precision: Any = None):
    """MoCo-based similarity loss (e4e's L_sim on non-face domains): mean_i 1 - <f(y_hat_i), f(y_i)>.

    variables: a 'moco' bundle's variables. Images (B, H, W, 3) in [-1, 1]. Returns like `id_loss`.
    """
    return _similarity_loss(lambda im: moco_features(variables, im, precision), y_hat, y, x, with_logs)
