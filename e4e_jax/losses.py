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

Editability losses and totals (paper Eq. 1-3, 5-7; official training/coach.py), see the last section:
    delta_reg_loss, encoder_adv_loss, discriminator_adv_loss, r1_penalty / r1_loss, l2_loss,
    distortion_loss, editability_loss, total_loss
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from e4e_jax.models import arcface as arcface_lib
from e4e_jax.models import resnet as resnet_lib
from e4e_jax.models.lpips import LPIPS
from e4e_jax.models.resampling import adaptive_avg_pool2d, interpolate_nearest

Variables = Mapping[str, Any]

ID_CROP = (slice(35, 223), slice(32, 220))  # rows, cols of the 256x256 image (official "interesting region")
ID_SIZE = 112
MOCO_SIZE = 224


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
def lpips_loss(
    variables: Variables,
    y_hat: jax.Array,
    y: jax.Array,
    net: str = "alex",
    precision: Any = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """e4e's LPIPS loss: the LPIPS v0.1 distance of each pair, averaged over the batch. Returns a float32 scalar.

    variables: an 'lpips' bundle's variables for `net` ('alex' in e4e's configs, or 'vgg').
    y_hat, y: (B, H, W, 3) in [-1, 1]. dtype: compute dtype of the convolutions (the feature
    normalisation, differences and means stay float32).
    """
    return jnp.mean(LPIPS(net=net, precision=precision, dtype=dtype).apply(variables, y_hat, y))


# --------------------------------------------------------------------------------------- ID (ArcFace)
def id_features(variables: Variables, images: jax.Array, precision: Any = None, dtype: Any = jnp.float32) -> jax.Array:
    """IDLoss.extract_feats: crop [35:223, 32:220], adaptive-pool to 112, ArcFace (convolutions in `dtype`).
    (B, 256, 256, 3) -> (B, 512) float32."""
    arch = arcface_lib.architecture_of(variables["params"])
    x = images[:, ID_CROP[0], ID_CROP[1], :]
    x = adaptive_avg_pool2d(x, (arch["input_size"],) * 2)
    return arcface_lib.ArcFace(**arch, precision=precision, dtype=dtype).apply(variables, x)


def id_loss(
    variables: Variables,
    y_hat: jax.Array,
    y: jax.Array,
    x: jax.Array | None = None,
    *,
    with_logs: bool = False,
    precision: Any = None,
    dtype: Any = jnp.float32,
):
    """Identity loss (Eq. of the paper's L_sim on faces): mean_i 1 - <ArcFace(y_hat_i), ArcFace(y_i)>.

    variables: an 'arcface' bundle's variables. y_hat (reconstructions), y (targets), x (encoder inputs,
    only for the logs): (B, 256, 256, 3) in [-1, 1]. f(y) is held constant (no gradient), as officially.
    Returns the loss, or (loss, logs) with with_logs=True: logs = {'diff_target' (B,), and when x is given
    'diff_input' (B,), 'diff_views' (B,), 'sim_improvement' ()} (the official id_logs / sim_improvement).
    dtype: compute dtype of ArcFace's convolutions (embeddings and the loss stay float32).
    """
    return _similarity_loss(lambda im: id_features(variables, im, precision, dtype), y_hat, y, x, with_logs)


# --------------------------------------------------------------------------------------- MoCo
def moco_features(
    variables: Variables, images: jax.Array, precision: Any = None, dtype: Any = jnp.float32
) -> jax.Array:
    """MocoLoss.extract_feats: nearest resize to 224, ResNet-50 pooled features, l2-normalised (eps 1e-12).

    (B, H, W, 3) in [-1, 1] (no ImageNet normalisation, as officially) -> (B, 2048) float32; the
    ResNet's convolutions compute in `dtype`, its pooled features are float32.
    """
    arch = resnet_lib.architecture_of(variables["params"])
    x = interpolate_nearest(images, (MOCO_SIZE, MOCO_SIZE))
    resnet = resnet_lib.ResNet(stage_sizes=tuple(arch["stage_sizes"]), precision=precision, dtype=dtype)
    f = resnet.apply(variables, x)
    # F.normalize: x / max(||x||, 1e-12); the where() keeps the gradient finite for an all-zero vector.
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    norm = jnp.sqrt(jnp.where(sq > 1e-24, sq, 1e-24))
    return f / norm


def moco_loss(
    variables: Variables,
    y_hat: jax.Array,
    y: jax.Array,
    x: jax.Array | None = None,
    *,
    with_logs: bool = False,
    precision: Any = None,
    dtype: Any = jnp.float32,
):
    """MoCo-based similarity loss (e4e's L_sim on non-face domains): mean_i 1 - <f(y_hat_i), f(y_i)>.

    variables: a 'moco' bundle's variables. Images (B, H, W, 3) in [-1, 1]. Returns like `id_loss`;
    dtype: compute dtype of the ResNet's convolutions.
    """
    return _similarity_loss(lambda im: moco_features(variables, im, precision, dtype), y_hat, y, x, with_logs)


# --------------------------------------------------------------------------------------- editability (Eq. 1-3, 5-7)
# Conventions of the official coach (omertov/encoder4editing, training/coach.py):
#   Eq. 1  L_d-reg = Σ_{i=1..stage} mean_b ||w_i − w_0||_2   (delta_norm 2; on the codes after latent_avg is added)
#   Eq. 2  L_adv^D = E[softplus(−D(w_real))] + E[softplus(D(w_fake))] + γ/2 · E||∇_w D(w_real)||²
#   Eq. 3  L_adv^E = mean over discriminated layers i of E[softplus(−D(w_i))]
#   Eq. 5  L_dist  = λ_l2 L_2 + λ_lpips L_lpips + λ_sim L_sim
#   Eq. 6  L_edit  = λ_d-reg L_d-reg + λ_adv L_adv^E
#   Eq. 7  L       = L_dist + λ_edit L_edit                       (official: λ_edit = 1)
def _safe_l2_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """||x||_2 along `axis` with gradient 0 (torch's subgradient) instead of NaN at x = 0."""
    s = jnp.sum(jnp.square(x), axis=axis)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def delta_reg_loss(codes: jax.Array, active: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """Eq. 1. codes: (B, n, D) W+ codes; active: (n,) bool, which deltas are trained (index 0 ignored;
    default all). Returns (total scalar, per-delta (n,) values with 0 where inactive and at i = 0)."""
    deltas = codes[:, 1:] - codes[:, :1]  # (B, n-1, D): w_i − w_0
    per = jnp.mean(_safe_l2_norm(deltas.astype(jnp.float32)), axis=0)  # (n-1,)
    if active is not None:
        per = jnp.where(active[1:], per, 0.0)
    per = jnp.concatenate([jnp.zeros((1,), per.dtype), per])
    return jnp.sum(per), per


def encoder_adv_loss(fake_logits: jax.Array, active: Optional[jax.Array] = None) -> jax.Array:
    """Eq. 3 (non-saturating). fake_logits: (B, n, 1) D scores of every code of the W+ batch;
    active: (n,) bool, the discriminated layers (official: 0..stage when progressive, else all)."""
    per = jnp.mean(jax.nn.softplus(-fake_logits[..., 0]), axis=0)  # (n,)
    if active is None:
        return jnp.mean(per)
    w = active.astype(per.dtype)
    return jnp.sum(per * w) / jnp.sum(w)


def discriminator_adv_loss(real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 2 without R1: E[softplus(−D(real))] + E[softplus(D(fake))]. Returns (loss, parts)."""
    real = jnp.mean(jax.nn.softplus(-real_logits))
    fake = jnp.mean(jax.nn.softplus(fake_logits))
    return real + fake, {"d_real_loss": real, "d_fake_loss": fake}


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real_w: jax.Array) -> jax.Array:
    """E_b ||∇_w D(w)||² at the real codes (B, D), with jax.grad w.r.t. w (official
    `discriminator_r1_loss`: grad of D(w).sum(), squared, summed per sample, batch mean)."""
    grads = jax.grad(lambda w: jnp.sum(d_fn(w)))(real_w)
    return jnp.mean(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1))


def r1_loss(d_fn: Callable[[jax.Array], jax.Array], real_w: jax.Array, gamma: float, every: int = 1) -> jax.Array:
    """γ/2 · E||∇_w D(w)||², times `every` for lazy regularisation (official: r1/2 · penalty · d_reg_every)."""
    return gamma / 2.0 * r1_penalty(d_fn, real_w) * every


def l2_loss(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error over all elements (torch `F.mse_loss`)."""
    return jnp.mean(jnp.square(y_hat.astype(jnp.float32) - y.astype(jnp.float32)))


def weighted_sum(terms: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
    """Σ_k weights[k] · terms[k] over the keys of `terms` (a missing weight is an error)."""
    total = jnp.zeros((), jnp.float32)
    for k, v in terms.items():
        if k not in weights:
            raise KeyError(f"no weight (lambda) configured for loss term {k!r}")
        total = total + weights[k] * v
    return total


def distortion_loss(terms: Mapping[str, jax.Array], lambdas: Mapping[str, float]) -> jax.Array:
    """Eq. 5: λ_l2 L_2 + λ_lpips L_lpips + λ_sim L_sim over the terms present."""
    return weighted_sum(terms, lambdas)


def editability_loss(
    d_reg: Optional[jax.Array], adv: Optional[jax.Array], lambda_d_reg: float, lambda_adv: float
) -> jax.Array:
    """Eq. 6: λ_d-reg L_d-reg + λ_adv L_adv (a None term is switched off)."""
    total = jnp.zeros((), jnp.float32)
    if d_reg is not None:
        total = total + lambda_d_reg * d_reg
    if adv is not None:
        total = total + lambda_adv * adv
    return total


def total_loss(dist: jax.Array, edit: jax.Array, lambda_edit: float = 1.0) -> jax.Array:
    """Eq. 7: L = L_dist + λ_edit L_edit."""
    return dist + lambda_edit * edit
