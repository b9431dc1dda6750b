"""Shared pieces of the training tests: a small encoder with the e4e interface and tiny configs, the
tolerance of "the same update on 1 and on N devices", and a topology-free reader of saved states.

The real Encoder4Editing (IR-SE50 + 512-wide style blocks, >120M parameters at any input size) takes
minutes per step on 2 CPU cores; the training-system tests (sharding, resume, NaN handling, R1) need an
encoder with the same interface and the same moving parts — BatchNorm in train mode, w_0 + masked deltas
(e4e_jax.models.encoder.stage_mask) — not the same size.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from e4e_jax.configs import tiny
from e4e_jax.models.encoder import stage_mask
from e4e_jax.training import networks


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
            h = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=f"bn{i}"
            )(h)
            h = nn.leaky_relu(h, 0.2)
        h = jnp.mean(h, axis=(1, 2))
        s = nn.Dense(self.n_styles * 512, dtype=self.dtype, name="head")(h).reshape(-1, self.n_styles, 512)
        s = s.astype(jnp.float32)
        if self.mode == "psp":
            return s
        keep = stage_mask(self.n_styles, progressive_stage).at[0].set(False)
        return s[:, :1] + jnp.where(keep[None, :, None], s, 0.0)


# The same training steps on 1 and on N devices (or processes) agree to this worst relative difference of any
# state leaf (max |a - b| / max(1, max |a|)); measured 1.2e-7 (1 vs 8 devices, 3 steps), rounding noise only.
ONE_VS_MANY_RTOL = 1e-5


def worst_relative_difference(a, b) -> tuple[float, str]:
    """(max over leaves of max|a - b| / max(1, max|a|), the leaf's path) of two pytrees of one structure."""
    leaves_a, leaves_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b), (len(leaves_a), len(leaves_b))
    worst, where = 0.0, ""
    for (path, x), y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape, jax.tree_util.keystr(path)
        d = float(np.max(np.abs(x - y)) / max(1.0, float(np.max(np.abs(x))))) if x.size else 0.0
        if d > worst:
            worst, where = d, jax.tree_util.keystr(path)
    return worst, where


def read_state(workdir: Path, step: int) -> dict:
    """The train state of checkpoint `step` in `workdir` as nested dicts of numpy arrays, whatever the
    device topology that saved it (1 process × 4 devices, 2 × 2, ...)."""
    import orbax.checkpoint as ocp

    path = Path(workdir) / "checkpoints" / str(step) / "state"
    ckptr = ocp.PyTreeCheckpointer()
    tree = ckptr.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


networks.ENCODERS.setdefault(
    "small_test", lambda n_styles, mode, dtype, **kw: SmallEncoder(n_styles=n_styles, mode=mode, dtype=dtype, **kw)
)


def small_config(**overrides):
    """The tiny preset shrunk further for tests: 8x8 generator (4 codes), small encoder, every loss on
    except LPIPS (random LPIPS needs >= 32 px inputs); progressive stages and R1 every few steps."""
    c = tiny.get_config()
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
