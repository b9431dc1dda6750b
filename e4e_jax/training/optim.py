"""Optimizers of e4e training: Ranger for the encoder, Adam for the latent discriminator.

Official (omertov/encoder4editing training/ranger.py, Ranger 20.4.11, used with its defaults except lr):
  gradient centralization on every weight with more than one dimension (conv and linear weights:
  g − mean(g) over all axes but the output axis), then RAdam (β = (0.95, 0.999), eps 1e-5, rectification
  threshold N_sma > 5), then Lookahead (k = 6, α = 0.5; slow weights start at the initial weights).

Built from optax pieces: `optax.lookahead` (slow weights live in `optax.LookaheadParams`, so the encoder
params of the train state are a (fast, slow) pair; gradients are taken at `.fast`) around
`gradient_centralization() → scale_by_ranger_radam() → scale(−lr)`.

Why not `optax.scale_by_radam`: Ranger adds eps to √v of the *uncorrected* second moment and folds the
bias corrections into the step size, i.e. it divides by √v̂ + eps/√(1−β2^t); optax adds eps to √v̂.
With eps = 1e-5 this differs noticeably in the first steps, so the official update is reproduced here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def gradient_centralization(output_axis: int = -1) -> optax.GradientTransformation:
    """g − mean(g) over every axis but `output_axis`, for leaves with ndim > 1 (Yong et al. 2020).

    Official Ranger centralises torch weights (out, in, ...) over dims 1..; our layouts keep the output
    features last (conv HWIO, dense (in, out)), hence the default `output_axis=-1`.
    """

    def update_fn(updates, state, params=None):
        del params

        def gc(g):
            if g.ndim <= 1:
                return g
            axes = tuple(a for a in range(g.ndim) if a != output_axis % g.ndim)
            return g - jnp.mean(g, axis=axes, keepdims=True)

        return jax.tree.map(gc, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class RangerRAdamState(NamedTuple):
    count: jax.Array  # int32 number of updates taken
    mu: Any
    nu: Any


def first_rectified_step(b2: float, threshold: float) -> int:
    """Smallest t with N_sma(t) > threshold, computed in float64 as official Ranger does (6 for β2 = 0.999).

    N_sma grows monotonically with t, so the branch is simply `t >= first_rectified_step`; deciding it
    statically keeps float32 rounding from flipping the branch near the threshold.
    """
    n_sma_max = 2.0 / (1.0 - b2) - 1.0
    for t in range(1, 1_000_000):
        b2t = b2**t
        if n_sma_max - 2.0 * t * b2t / (1.0 - b2t) > threshold:
            return t
    raise ValueError(f"RAdam with b2={b2} never exceeds threshold {threshold}")


def scale_by_ranger_radam(
    b1: float = 0.95, b2: float = 0.999, eps: float = 1e-5, threshold: float = 5.0
) -> optax.GradientTransformation:
    """RAdam direction exactly as official Ranger computes it (positive; multiply by −lr).

    t ≥ t*:  r_t · m / (√v + eps) · √(1−β2^t) / (1−β1^t),  r_t = √((N−4)(N−2)N_max / ((N_max−4)(N_max−2)N))
    t < t*:  m / (1−β1^t)                                   (bias-corrected momentum SGD)
    """
    t_star = first_rectified_step(b2, threshold)
    n_sma_max = 2.0 / (1.0 - b2) - 1.0
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init_fn(params):
        zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)  # noqa: E731
        return RangerRAdamState(jnp.zeros([], jnp.int32), jax.tree.map(zeros, params), jax.tree.map(zeros, params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
        # 1 − β^t via expm1 keeps the small early-step values accurate in float32.
        one_minus_b1t = -jnp.expm1(t * log_b1)
        one_minus_b2t = -jnp.expm1(t * log_b2)
        n_sma = n_sma_max - 2.0 * t * (1.0 - one_minus_b2t) / one_minus_b2t
        rect = count >= t_star
        n_sma_safe = jnp.where(rect, n_sma, 5.0)  # keeps the unused branch finite
        r = jnp.sqrt(
            one_minus_b2t
            * (n_sma_safe - 4.0)
            / (n_sma_max - 4.0)
            * (n_sma_safe - 2.0)
            / n_sma_safe
            * n_sma_max
            / (n_sma_max - 2.0)
        )
        step_rect = r / one_minus_b1t
        step_plain = 1.0 / one_minus_b1t
        new = jax.tree.map(lambda m, v: jnp.where(rect, step_rect * m / (jnp.sqrt(v) + eps), step_plain * m), mu, nu)
        return new, RangerRAdamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def ranger(
    learning_rate: float,
    *,
    alpha: float = 0.5,
    k: int = 6,
    b1: float = 0.95,
    b2: float = 0.999,
    eps: float = 1e-5,
    threshold: float = 5.0,
    use_gc: bool = True,
) -> optax.GradientTransformation:
    """Ranger = Lookahead(RAdam with gradient centralization). Apply to `optax.LookaheadParams`."""
    inner = [gradient_centralization()] if use_gc else []
    inner += [scale_by_ranger_radam(b1, b2, eps, threshold), optax.scale(-learning_rate)]
    return optax.lookahead(optax.chain(*inner), sync_period=k, slow_step_size=alpha)


def encoder_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """Official `--optim_name`: 'ranger' (default) or 'adam' (torch defaults)."""
    if name == "ranger":
        return ranger(learning_rate)
    if name == "adam":
        return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    raise ValueError(f"optim.name must be 'ranger' or 'adam', got {name!r}")


def discriminator_optimizer(learning_rate: float = 2e-5) -> optax.GradientTransformation:
    """torch.optim.Adam(lr) with its defaults (β = (0.9, 0.999), eps 1e-8): same update as optax.adam."""
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)


def uses_lookahead(name: str) -> bool:
    return name == "ranger"


def wrap_params(name: str, params):
    """Encoder params in the form the optimizer expects (a synced (fast, slow) pair for Ranger)."""
    return optax.LookaheadParams.init_synced(params) if uses_lookahead(name) else params


def fast_params(params):
    """The weights the encoder computes with (Lookahead's fast weights, as official Ranger's `p.data`)."""
    return params.fast if isinstance(params, optax.LookaheadParams) else params
