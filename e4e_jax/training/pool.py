"""Functional LatentCodesPool (official models/latent_codes_pool.py): a history of past codes for D_W.

Official semantics, reproduced item by item in batch order (a `lax.scan`):
  * pool size 0: return the input unchanged.
  * each input item is one code (D,) (the caller picks one layer of a W+ code first, see `select_layers`);
  * while the pool holds fewer than `size` codes: store the code and return it;
  * once full: with probability 1/2 return a uniformly chosen stored code and put the new one in its
    place; otherwise return the new code.
Python's `random` is replaced by jax.random with an explicit key, so the pool is part of the train state
(and of checkpoints) and a resumed run draws the same choices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PoolState(NamedTuple):
    codes: jax.Array  # (size, D) float32; rows >= count are unused
    count: jax.Array  # int32 scalar: number of stored codes (<= size)


def init_pool(size: int, dim: int) -> PoolState:
    return PoolState(jnp.zeros((size, dim), jnp.float32), jnp.zeros((), jnp.int32))


def select_layers(codes: jax.Array, n_sel, key: jax.Array) -> jax.Array:
    """(B, n, D) W+ codes -> (B, D): for each item one of its first `n_sel` layers, uniformly (official
    pool query on a (k, D) item: `random.randint(0, k - 1)`). `n_sel` may be traced."""
    pick = jax.random.randint(key, (codes.shape[0],), 0, n_sel)
    return jnp.take_along_axis(codes, pick[:, None, None], axis=1)[:, 0]


def query(pool: PoolState, codes: jax.Array, key: jax.Array) -> tuple[jax.Array, PoolState]:
    """codes: (B, D) -> ((B, D) codes for the discriminator, new pool)."""
    size = pool.codes.shape[0]
    keys = jax.random.split(key, codes.shape[0])
    codes = codes.astype(jnp.float32)
    if size == 0:
        return codes, pool

    def one(state, item):
        w, k = item
        stored, count = state
        k_coin, k_idx = jax.random.split(jax.random.fold_in(k, 1))
        not_full = count < size
        swap = jax.random.uniform(k_coin) > 0.5
        idx = jax.random.randint(k_idx, (), 0, size)
        old = stored[idx]
        out = jnp.where(not_full, w, jnp.where(swap, old, w))
        write_idx = jnp.where(not_full, count, idx)
        write = not_full | swap
        stored = stored.at[write_idx].set(jnp.where(write, w, stored[write_idx]))
        return PoolState(stored, count + not_full.astype(count.dtype)), out

    pool, out = jax.lax.scan(one, pool, (codes, keys))
    return out, pool
