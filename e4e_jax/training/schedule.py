"""Progressive training of the deltas (paper §4.1; official scripts/train.py `setup_progressive_steps`
and coach `check_for_progressive_training_update`).

With `progressive_start` = s and `progressive_step_every` = e the official run trains
    stage 0 (w_0 only)          for steps [0, s)
    stage i (deltas 1..i)       from step s + (i-1)·e on, up to stage n_styles − 1 (all deltas).
The stage is a pure function of the step, so a resumed run lands in the right stage by construction.
Without progressive training (start None) every delta is trained from step 0 ("inference" stage) and the
delta regulariser is off, as in the official coach.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp


def progressive_stage(step, n_styles: int, start: Optional[int], every: int = 2000):
    """Number of active deltas at `step` (python int or traced int32 -> same kind).

    start None: n_styles − 1 (all deltas). Otherwise 0 before `start`, then +1 every `every` steps,
    capped at n_styles − 1.
    """
    last = n_styles - 1
    if start is None:
        return last if isinstance(step, int) else jnp.full_like(jnp.asarray(step, jnp.int32), last)
    if every < 1 or start < 0:
        raise ValueError(f"progressive schedule needs start >= 0 and every >= 1, got start={start}, every={every}")
    if isinstance(step, int):
        return 0 if step < start else min(1 + (step - start) // every, last)
    step = jnp.asarray(step, jnp.int32)
    return jnp.where(step < start, 0, jnp.minimum(1 + (step - start) // every, last)).astype(jnp.int32)


def stage_boundaries(n_styles: int, start: Optional[int], every: int = 2000) -> list[int]:
    """Official `opts.progressive_steps`: the step at which each stage 0..n_styles−1 begins (None: [])."""
    if start is None:
        return []
    return [0] + [start + i * every for i in range(n_styles - 1)]


def active_layers(stage, n_styles: int):
    """(n_styles,) bool: layers 0..stage (the deltas in use, and the codes the discriminator sees)."""
    return jnp.arange(n_styles) <= jnp.asarray(stage)
