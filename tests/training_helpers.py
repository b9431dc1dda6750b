"""Shared pieces of the training tests: a small encoder with the e4e interface and tiny configs.

The real Encoder4Editing (IR-SE50 + 512-wide style blocks, >120M parameters at any input size) takes
minutes per step on 2 CPU cores; the training-system tests (sharding, resume, NaN handling, R1) need an
encoder with the same interface and the same moving parts — BatchNorm in train mode, w_0 + masked deltas
(e4e_jax.models.encoder.stage_mask) — not the same size.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from e4e_jax.models.encoder import stage_mask
from e4e_jax.training import networks, presets


class SmallEncoder(nn.Module):
    """conv-BN-lrelu x2 -> mean pool -> Dense(n_styles * 512); e4e: w_0 + Δ_i masked by the stage."""

    n_styles: int
    mode: str = "e4e"
    dtype: object = jnp.float32
    width: int = 8

    @nn.compact
    def __call__(self, x, progressive_stage=None, train: bool = False):
        h = x.astype(self.dtype)
        for i in range(2):
            h = nn.Conv(self.width, (3, 3), strides=(2, 2), dtype=self.dtype, name=f"conv{i}")(h)
            h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                             name=f"bn{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        h = jnp.mean(h, axis=(1, 2))
        s = nn.Dense(self.n_styles * 512, dtype=self.dtype, name="head")(h).reshape(-1, self.n_styles, 512)
        s = s.astype(jnp.float32)
        if self.mode == "psp":
            return s
        keep = stage_mask(self.n_styles, progressive_stage).at[0].set(False)
        return s[:, :1] + jnp.where(keep[None, :, None], s, 0.0)


networks.ENCODERS.setdefault(
    "small_test", lambda n_styles, mode, dtype, **kw: SmallEncoder(n_styles=n_styles, mode=mode, dtype=dtype, **kw))


def small_config(**overrides):
    """The tiny preset shrunk further for tests: 8x8 generator (4 codes), small encoder, every loss on
    except LPIPS (random LPIPS needs >= 32 px inputs); progressive stages and R1 every few steps."""
    c = presets.tiny()
    c.generator.random_init = dict(size=8, channels=(16, 16), style_dim=512, n_mlp=2, seed=0)
    c.data.image_size = (8, 8)
    c.output_size = (8, 8)
    c.encoder.arch = "small_test"
    c.encoder.kwargs = ml_collections.ConfigDict()  # tiny's IR-SE sizes do not apply to SmallEncoder
    c.lpips_lambda = 0.0
    c.batch_size = 8
    c.progressive_start = 1
    c.progressive_step_every = 1
    c.d_reg_every = 2
    c.w_pool_size = 4
    c.learning_rate = 1e-3
    c.max_steps = 6
    c.board_interval = 1
    c.image_interval = 1000
    c.val_interval = 1000
    c.save_interval = 3
    c.max_val_batches = 1
    c.data.num_eval_samples = 8
    c.data.prefetch = 1
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c
