"""Editability losses of e4e (paper Eq. 1-3, 5-7) and the discriminator's R1 penalty.

Kept here until `e4e_jax/losses.py` (distortion terms) lands; then appended to it.
Conventions follow the official coach (omertov/encoder4editing, training/coach.py):

  Eq. 1  L_d-reg = Σ_{i=1..stage} mean_b ||w_i − w_0||_2          (`delta_norm` = 2; official computes it
                                                                   on the codes after latent_avg is added)
  Eq. 2  L_adv^D = E[softplus(−D(w_real))] + E[softplus(D(w_fake))] + γ/2 · E||∇_w D(w_real)||²
  Eq. 3  L_adv^E = mean over discriminated layers i of E[softplus(−D(w_i))]
  Eq. 5  L_dist  = λ_l2 L_2 + λ_lpips L_lpips + λ_sim L_sim
  Eq. 6  L_edit  = λ_d-reg L_d-reg + λ_adv L_adv^E
  Eq. 7  L       = L_dist + λ_edit L_edit                          (official: λ_edit = 1)
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp


def _safe_l2_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """||x||_2 along `axis` with gradient 0 (torch's subgradient) instead of NaN at x = 0."""
    s = jnp.sum(jnp.square(x), axis=axis)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def delta_reg_loss(codes: jax.Array, active: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """Eq. 1. codes: (B, n, D) W+ codes; active: (n,) bool, which deltas are trained (index 0 ignored;
    default all). Returns (total scalar, per-delta (n,) values with 0 where inactive and at i = 0)."""
    deltas = codes[:, 1:] - codes[:, :1]                      # (B, n-1, D): w_i − w_0
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


def discriminator_adv_loss(real_logits: jax.Array, fake_logits: jax.Array
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
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


def editability_loss(d_reg: Optional[jax.Array], adv: Optional[jax.Array], lambda_d_reg: float,
                     lambda_adv: float) -> jax.Array:
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
