"""The train state: everything a run needs to continue exactly, as one pytree (orbax saves it whole).

    step                 int32 ()       the official `global_step` of the next update
    rng                  uint32 key data; per-step keys are fold_in(rng, step), so no key is carried
    encoder_params       `optax.LookaheadParams(fast, slow)` under Ranger (plain params under Adam)
    encoder_batch_stats  BatchNorm running statistics of the encoder's backbone
    encoder_opt_state    optax state (Lookahead(RAdam) or Adam)
    disc_params          latent discriminator D_W (always present; untouched when λ_adv = 0)
    disc_opt_state       its Adam state
    real_pool, fake_pool LatentCodesPool contents (official keeps one for real and one for fake codes)

Frozen networks (generator, LPIPS / ID / MoCo nets) and latent_avg are not part of it: they are inputs of
the step, rebuilt or reloaded on resume.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from e4e_jax.training import optim, pool


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    rng: jax.Array
    encoder_params: Any
    encoder_batch_stats: Any
    encoder_opt_state: Any
    disc_params: Any
    disc_opt_state: Any
    real_pool: pool.PoolState
    fake_pool: pool.PoolState


def init_train_state(
    *,
    encoder: nn.Module,
    discriminator: nn.Module,
    encoder_tx: optax.GradientTransformation,
    disc_tx: optax.GradientTransformation,
    optim_name: str,
    seed: int,
    input_shape: tuple[int, int, int, int],
    style_dim: int,
    pool_size: int,
    encoder_variables: dict | None = None,
) -> TrainState:
    """Fresh state. `input_shape` (B, H, W, C) of an encoder batch; `encoder_variables` (params and
    batch_stats) replace the random init when given (e.g. from an e4e bundle, official `--checkpoint_path`).
    """
    root = jax.random.key(seed)
    k_enc, k_disc, k_run = jax.random.split(root, 3)
    if encoder_variables is None:
        encoder_variables = encoder.init(k_enc, jnp.zeros(input_shape, jnp.float32), None, train=False)
    enc_params = optim.wrap_params(optim_name, encoder_variables["params"])
    disc_params = discriminator.init(k_disc, jnp.zeros((1, style_dim), jnp.float32))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(k_run),
        encoder_params=enc_params,
        encoder_batch_stats=encoder_variables.get("batch_stats", {}),
        encoder_opt_state=encoder_tx.init(enc_params),
        disc_params=disc_params,
        disc_opt_state=disc_tx.init(disc_params),
        real_pool=pool.init_pool(pool_size, style_dim),
        fake_pool=pool.init_pool(pool_size, style_dim),
    )


def abstract_state(init_fn: Callable[[], TrainState], sharding) -> TrainState:
    """Shapes/dtypes of `init_fn()` without computing it, each leaf carrying `sharding` (orbax restore target)."""
    shapes = jax.eval_shape(init_fn)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def encoder_variables(state: TrainState) -> dict:
    """{'params', 'batch_stats'} of the encoder as official checkpoints hold them (Lookahead fast weights)."""
    return {"params": optim.fast_params(state.encoder_params), "batch_stats": state.encoder_batch_stats}


def param_count(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def fingerprint(state: TrainState) -> str:
    """sha256 (hex) of every leaf's path, dtype, shape and bytes as this process holds it (its first local
    replica): equal on two processes exactly when their replicated states are bit-identical."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = np.asarray(leaf.addressable_shards[0].data if isinstance(leaf, jax.Array) else leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
