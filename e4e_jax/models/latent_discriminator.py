"""The latent-code discriminator D_W of e4e (paper §4.2, official `models/discriminator.py`).

Architecture (official `LatentCodesDiscriminator(512, 4)`): a plain MLP on one 512-d code,

    mlp.0 Linear(512, 512) -> LeakyReLU(0.2) -> mlp.2 Linear(512, 512) -> LeakyReLU(0.2)
    -> mlp.4 Linear(512, 512) -> LeakyReLU(0.2) -> mlp.6 Linear(512, 1)

i.e. torch `nn.Linear` layers (no equalized learning rate, no √2 gain), initialised as torch does
(weight and bias ~ U(-1/√fan_in, 1/√fan_in)). It scores each code separately: any leading axes are
batch axes, so a W+ tensor (B, n, 512) gives (B, n, 1).

Parameter tree (torch name -> ours): mlp.{2i}.weight (out, in) -> mlp_{2i}/kernel (in, out);
mlp.{2i}.bias -> mlp_{2i}/bias.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.layers import LRELU_SLOPE


def _torch_linear_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LatentCodesDiscriminator(nn.Module):
    """D_W: (..., style_dim) codes -> (..., 1) logits.

    Attributes:
      style_dim: code width (official: 512; its last layer is hard-wired to 512 inputs).
      n_mlp: number of Linear layers (official: 4).
      dtype: compute dtype (params stay float32).
      precision: lax precision of the matmuls (tests use 'highest').
    """

    style_dim: int = 512
    n_mlp: int = 4
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, w: jax.Array) -> jax.Array:
        if w.shape[-1] != self.style_dim:
            raise ValueError(f"LatentCodesDiscriminator(style_dim={self.style_dim}) got codes of shape {w.shape}")
        if self.n_mlp < 1:
            raise ValueError(f"n_mlp must be >= 1, got {self.n_mlp}")
        # torch's default Linear init: kaiming_uniform(a=√5) = U(±1/√fan_in), bias U(±1/√fan_in).
        kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        x = w.astype(self.dtype)
        for i in range(self.n_mlp):
            last = i == self.n_mlp - 1
            x = nn.Dense(
                1 if last else self.style_dim,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                precision=self.precision,
                kernel_init=kernel_init,
                bias_init=_torch_linear_bias_init(x.shape[-1]),
                name=f"mlp_{2 * i}",
            )(x)
            if not last:
                x = nn.leaky_relu(x, LRELU_SLOPE)
        return x.astype(jnp.float32)


def params_from_state_dict(state_dict: Mapping[str, Any], n_mlp: int = 4) -> dict:
    """Map an official `discriminator_state_dict` (numpy arrays) onto our params.

    Every missing or unexpected key is an error naming the key.
    """
    expected = {f"mlp.{2 * i}.{p}" for i in range(n_mlp) for p in ("weight", "bias")}
    extra = sorted(set(state_dict) - expected)
    missing = sorted(expected - set(state_dict))
    if missing or extra:
        raise ValueError(
            f"latent discriminator state dict: missing keys {missing}, unexpected keys {extra} "
            f"(expected LatentCodesDiscriminator(512, {n_mlp}) names mlp.0 .. mlp.{2 * n_mlp - 2})"
        )
    params = {}
    for i in range(n_mlp):
        w = np.asarray(state_dict[f"mlp.{2 * i}.weight"], np.float32)
        b = np.asarray(state_dict[f"mlp.{2 * i}.bias"], np.float32)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(
                f"latent discriminator state dict: mlp.{2 * i}.weight {w.shape} / bias {b.shape} "
                f"are not a Linear layer's (out, in) / (out,)"
            )
        params[f"mlp_{2 * i}"] = {"kernel": np.ascontiguousarray(w.T), "bias": b}
    return params
