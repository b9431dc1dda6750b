"""The pieces the training benchmarks share: a run's initial state and its jitted step (random weights).

Used by benchmarks/bf16_drift.py and benchmarks/train_curves.py (configs from benchmarks/train_step.py's
`build_config`); nothing here is needed by e4e-jax itself.
"""

from __future__ import annotations

import functools

import jax

from e4e_jax.runtime import sharding
from e4e_jax.training import optim
from e4e_jax.training.state import TrainState, init_train_state
from e4e_jax.training.step import Networks, train_step


def optimizers(config):
    """(encoder optimizer, discriminator optimizer) of a config."""
    return optim.encoder_optimizer(config.optim_name, config.learning_rate), optim.discriminator_optimizer(
        config.w_discriminator_lr
    )


def initial_state(run, config, mesh) -> TrainState:
    """The run's initial train state (seed config.seed), replicated over `mesh`. Parameters are float32
    whatever the compute dtype, so one state serves the float32 and the bfloat16 step alike."""
    enc_tx, disc_tx = optimizers(config)
    h, w = (int(v) for v in config.data.image_size)
    return jax.jit(
        lambda: init_train_state(
            encoder=run.nets.encoder,
            discriminator=run.nets.discriminator,
            encoder_tx=enc_tx,
            disc_tx=disc_tx,
            optim_name=config.optim_name,
            seed=int(config.seed),
            input_shape=(1, h, w, 3),
            style_dim=run.gen_cfg.style_dim,
            pool_size=config.w_pool_size,
        ),
        out_shardings=sharding.replicated(mesh),
    )()


def jitted_step(nets: Networks, run, config, mesh, donate: bool = False):
    """jit(train_step) for `nets` (run.nets or a variant of them) with run's step hyper-parameters:
    (state, frozen, batch) -> (state, metrics), state and frozen replicated, the batch sharded."""
    enc_tx, disc_tx = optimizers(config)
    repl, bsh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(
        functools.partial(train_step, nets, run.step_cfg, enc_tx, disc_tx),
        in_shardings=(repl, repl, bsh),
        out_shardings=(repl, repl),
        donate_argnums=(0,) if donate else (),
    )
