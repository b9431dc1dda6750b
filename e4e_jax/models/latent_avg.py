"""The one estimate of a generator's mean w (official `mean_latent`), used where a checkpoint has none:
by the converters (a generator's w_avg, an e4e bundle's latent_avg) and by the trainer (latent_avg)."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config

W_AVG_SAMPLES = 10_000  # official pSp.__load_latent_avg: decoder.mean_latent(10000)
W_AVG_SEED = 0
CHUNK = 10_000  # z mapped per call: bounds memory for large `n_samples`


def mean_w(
    config: StyleGAN2Config,
    variables: Mapping[str, Any],
    n_samples: int = W_AVG_SAMPLES,
    seed: int = W_AVG_SEED,
    chunk: int = CHUNK,
) -> np.ndarray:
    """Mean of mapping(z) over `n_samples` z ~ N(0, I), drawn `chunk` at a time (each chunk from the next
    split of `jax.random.key(seed)`), in float32. Returns (style_dim,)."""
    if n_samples < 1:
        raise ValueError(f"w_avg needs at least one mapped z sample, got {n_samples}")
    gen = Generator(config)
    mapping = jax.jit(lambda v, z: gen.apply(v, z, method=Generator.map).sum(0))
    total = jnp.zeros((config.style_dim,), jnp.float32)
    key = jax.random.key(seed)
    for start in range(0, n_samples, chunk):
        key, sub = jax.random.split(key)
        z = jax.random.normal(sub, (min(chunk, n_samples - start), config.mapping_in_dim))
        total = total + mapping(variables, z)
    return np.asarray(total / n_samples, np.float32)


def per_layer(mean: np.ndarray, n_styles: int) -> np.ndarray:
    """(n_styles, D) float32: one mean w (D,) repeated for every style layer (official latent_avg layout)."""
    mean = np.asarray(mean, np.float32)
    return np.broadcast_to(mean[None], (n_styles, mean.shape[-1])).copy()


def of_generator(config: StyleGAN2Config, variables: Mapping[str, Any], n_styles: int) -> np.ndarray:
    """(n_styles, D) latent_avg of a generator: its stored w_avg if set, else `mean_w` (official pSp: the
    checkpoint's latent_avg, else decoder.mean_latent over 10,000 samples), repeated per layer."""
    w_avg = np.asarray(variables.get("buffers", {}).get("w_avg", 0.0))
    mean = w_avg if w_avg.ndim == 1 and np.any(w_avg != 0) else mean_w(config, variables)
    return per_layer(mean, n_styles)


def nothing_added(n_styles: int, style_dim: int) -> np.ndarray:
    """(n_styles, D) zeros: the latent_avg of a model whose codes start from nothing (official
    opts.start_from_latent_avg False)."""
    return np.zeros((n_styles, style_dim), np.float32)
