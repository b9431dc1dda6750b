"""e4e training (docs/architecture.md, "Data path of a training step"): train state, Ranger/Adam
optimizers, progressive schedule, the jitted train step (encoder + latent discriminator with lazy R1),
and the loop (metric writers, orbax checkpoints).

Entry point: `e4e_jax.training.train_and_evaluate(config, workdir, resume=False) -> dict`.
"""

from __future__ import annotations


def train_and_evaluate(config, workdir, resume: bool = False, max_steps=None):
    """See e4e_jax.training.loop.train_and_evaluate (imported lazily: JAX start-up is slow)."""
    from e4e_jax.training.loop import train_and_evaluate as _run

    return _run(config, workdir, resume=resume, max_steps=max_steps)
